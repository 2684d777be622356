//! Property tests for the parsers of untrusted storage input: any bytes give
//! a value or an error, never a panic, and well-formed input round-trips.

use crate::storage::slclient::{KeyField, SlClient};
use crate::storage::{kube, split, truth};
use proptest::prelude::*;

/// A TOML basic string holding `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn slclient_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SlClient::parse(&bytes);
    }

    #[test]
    fn slclient_text_like_input_never_panics(text in "[\\[\\]a-zA-Z_=\" \\n.{}#,0-9']{0,300}") {
        let _ = SlClient::parse(text.as_bytes());
    }

    #[test]
    fn slclient_reads_both_fields_and_the_provider(
        g2 in "[ -~]{0,40}",
        iam in "[ -~]{0,40}",
        provider in "[a-z0-9-]{0,8}",
        enc in any::<bool>(),
        junk in "[a-z_]{1,10}",
    ) {
        let text = format!(
            "[Bluemix]\n{junk}_x = 1\niam_api_key = {}\nencryption = {enc}\n[VPC]\ng2_api_key = {}\nprovider_type = {}\n",
            toml_str(&iam), toml_str(&g2), toml_str(&provider)
        );
        let c = SlClient::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(c.field(KeyField::Vpc).map(|(v, _)| v.to_string()), (!g2.is_empty()).then(|| g2.clone()));
        prop_assert_eq!(c.field(KeyField::Bluemix).map(|(v, e)| (v.to_string(), e)), (!iam.is_empty()).then(|| (iam.clone(), enc)));
        prop_assert_eq!(c.provider_type.clone(), (!provider.is_empty()).then(|| provider.clone()));
        let expected_key = if !g2.is_empty() { Some(KeyField::Vpc) } else if !iam.is_empty() { Some(KeyField::Bluemix) } else { None };
        prop_assert_eq!(c.key.as_ref().map(|(f, _)| *f), expected_key);
    }

    #[test]
    fn split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), cap in 1usize..64) {
        let reader = std::io::BufReader::with_capacity(cap, bytes.as_slice());
        let _ = split::split(reader, &mut |_, _| Ok::<(), ()>(()));
    }

    #[test]
    fn split_returns_every_item_of_a_list(
        items in proptest::collection::vec(
            proptest::collection::btree_map("[a-z\"\\\\{}\\[\\]]{1,6}", "[ -~]{0,12}", 0..4),
            0..6,
        ),
        extra in "[a-z]{1,6}",
        cap in 1usize..32,
        items_first in any::<bool>(),
    ) {
        let values: Vec<serde_json::Value> = items.iter().map(|m| serde_json::json!(m)).collect();
        let list = if items_first {
            serde_json::json!({"items": values, "kind": "List", extra.clone(): {"items": [1, 2]}})
        } else {
            serde_json::json!({"kind": "List", extra.clone(): [{"items": 3}], "items": values})
        };
        let text = serde_json::to_string_pretty(&list).unwrap();
        let mut got = Vec::new();
        let reader = std::io::BufReader::with_capacity(cap, text.as_bytes());
        let skeleton = split::split(reader, &mut |i, bytes| {
            got.push((i, bytes));
            Ok::<(), ()>(())
        })
        .unwrap();
        prop_assert_eq!(skeleton.items, Some(values.len()));
        prop_assert_eq!(got.len(), values.len());
        for (n, ((i, bytes), want)) in got.iter().zip(&values).enumerate() {
            prop_assert_eq!(*i, n);
            let parsed: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            prop_assert_eq!(&parsed, want);
        }
        let top: serde_json::Value = serde_json::from_slice(&skeleton.bytes).unwrap();
        prop_assert_eq!(&top["items"], &serde_json::json!([]));
        prop_assert_eq!(&top["kind"], "List");
    }

    #[test]
    fn truth_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = truth::parse_records(&bytes, "t.json");
    }

    #[test]
    fn truth_records_round_trip(
        records in proptest::collection::vec(
            ("[a-z0-9-]{1,12}", "[a-f0-9]{1,12}", "[a-f0-9]{1,12}", proptest::option::of("[!-~]{1,40}")),
            1..5,
        ),
        ndjson in any::<bool>(),
    ) {
        let values: Vec<serde_json::Value> = records
            .iter()
            .map(|(region, account, rg, key)| serde_json::json!({
                "Region": region, "AccountID": account, "ResourceGroupID": rg,
                "IAMAPIKey": key, "SLAPIKey": null, "Clusters": "{}", "Extra": [1, {"x": 2}],
            }))
            .collect();
        let text = if ndjson {
            values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
        } else {
            serde_json::to_string(&values).unwrap()
        };
        let parsed = truth::parse_records(text.as_bytes(), "t.json").unwrap();
        prop_assert_eq!(parsed.len(), records.len());
        for (r, (region, account, rg, key)) in parsed.iter().zip(&records) {
            prop_assert_eq!(&r.region, region);
            prop_assert_eq!(&r.account, account);
            prop_assert_eq!(&r.resource_group, rg);
            prop_assert_eq!(r.iam_api_key.as_ref().map(|k| k.expose_secret().to_owned()), key.clone());
        }
    }

    #[test]
    fn yaml_depth_check_and_reader_never_panic(text in "[\\[\\]{}:\\- a-z'\"#|>\\n]{0,400}") {
        let _ = kube::check_yaml_depth(text.as_bytes());
        let _ = kube::read_yaml(text.as_bytes(), &mut |_, _| Ok::<(), ()>(()));
    }

    #[test]
    fn yaml_nesting_beyond_the_bound_is_always_refused(depth in 33usize..200, flow in any::<bool>()) {
        let text = if flow {
            format!("kind: Secret\ndata: {}1{}\n", "[".repeat(depth), "]".repeat(depth))
        } else {
            (0..depth).map(|i| format!("{}a:\n", " ".repeat(i))).collect()
        };
        prop_assert!(kube::check_yaml_depth(text.as_bytes()).is_err());
    }
}
