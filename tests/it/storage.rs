//! `rekey storage`: envelopes sealed by Python's `cryptography`, Secrets as
//! kubectl prints them, truth from files and a real etcd.

use crate::storage_support::*;
use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

const AUTH: &str = "authentication failed: wrong key, wrong key format, or corrupted ciphertext";

/// One cluster, its truth and its AES key, written to a temp dir.
struct Case {
    tmp: tempfile::TempDir,
    api: Canary,
    aes: Canary,
    secret: PathBuf,
    truth: PathBuf,
    key_file: PathBuf,
}

/// `rekey storage diff --secret <secret> --truth <truth>
/// --decryption-key-file <key_file>`, for more arguments.
fn storage_diff(secret: impl AsRef<OsStr>, truth: impl AsRef<OsStr>, key_file: &Path) -> Rekey {
    rekey()
        .args(["storage", "diff", "--secret"])
        .arg(secret)
        .arg("--truth")
        .arg(truth)
        .arg("--decryption-key-file")
        .arg(key_file)
}

impl Case {
    /// A VPC cluster whose g2_api_key is `stored` (sealed with the AES canary) and truth `api`.
    fn vpc(tag: &str, stored: Option<&str>) -> Case {
        let tmp = tempdir();
        let api = Canary::new(tag);
        let aes = aes_canary(tag);
        let env = seal(aes.key.as_bytes(), stored.unwrap_or(&api.key));
        let secret = write(
            tmp.path(),
            "c1.json",
            secret_json("c1", &vpc_toml(&env, "rg1", "us-south", true)),
        );
        let truth = write_truth(
            tmp.path(),
            "truth.json",
            &[record("acc1", "rg1", "us-south", Some(&api.key), None)],
        );
        let key_file = write(tmp.path(), "aes.key", format!("{}\n", aes.key));
        Case {
            tmp,
            api,
            aes,
            secret,
            truth,
            key_file,
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Rewrites the secret file with `from` replaced by `to`.
    fn edit_secret(&mut self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.secret).unwrap().replace(from, to);
        self.secret = write(self.dir(), "c1.json", text);
    }

    /// `rekey storage diff` with the case's files and `extra` args.
    fn diff(&self, extra: &[&str]) -> Run {
        let run = storage_diff(&self.secret, &self.truth, &self.key_file)
            .args(extra)
            .run();
        self.no_leak(&run);
        run
    }

    fn no_leak(&self, run: &Run) {
        self.api.assert_not_in_run(run);
        self.aes.assert_not_in_run(run);
    }

    /// Rewrites the secret with a new slclient.toml.
    fn set_toml(&mut self, toml: &str) {
        self.secret = write(self.dir(), "c1.json", secret_json("c1", toml));
    }
}

/// Asserts exit 2, the message, and that the run wrote nothing.
#[track_caller]
fn assert_input_error(case: &Case, extra: &[&str], message: &str) {
    let before = snapshot(case.dir());
    let run = case.diff(extra);
    run.code(2).stderr_has(message);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert_eq!(snapshot(case.dir()), before, "a failed run changed files");
}

#[track_caller]
fn one_status(case: &Case, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--output", "json"];
    args.extend_from_slice(extra);
    let run = case.diff(&args);
    let json = run.json();
    let c = cluster(&json, "c1").clone();
    assert_eq!(run.code, if c["status"] == "match" { 0 } else { 1 }, "{}", run.stdout);
    c
}

// ------------------------------------------------------------------ diff: the main paths

#[test]
fn vpc_cluster_matching_the_truth_exits_0_with_fingerprints() {
    let case = Case::vpc("vpcmatch", None);
    let run = case.diff(&["--output", "json"]);
    run.code(0);
    let json = run.json();
    let c = cluster(&json, "c1");
    assert_eq!(c["status"], "match");
    assert_eq!(c["field"], "VPC.g2_api_key");
    assert_eq!(c["key_format"], "raw");
    assert_eq!(c["expected_fingerprint"], fingerprint(case.api.key.as_bytes()));
    assert_eq!(c["actual_fingerprint"], fingerprint(case.api.key.as_bytes()));
    assert_eq!(c["warnings"], serde_json::json!([]));
    assert_eq!(c["scope"]["resource_group"], "rg1");
    assert_eq!(c["scope"]["region"], "us-south");
    assert_eq!(json["summary"]["ok"], true);
    assert_eq!(json["summary"]["statuses"]["match"], 1);
    case.api
        .assert_not_in_tree(case.dir(), std::slice::from_ref(&case.truth));
}

#[test]
fn mismatch_exits_1_and_shows_a_redacted_diff() {
    let stale = Canary::new("stale");
    let case = Case::vpc("mism", Some(&stale.key));
    let run = case.diff(&["--diff"]);
    stale.assert_not_in_run(&run);
    run.code(1).stdout_has("c1  mismatch  field VPC.g2_api_key");
    let old = fingerprint(stale.key.as_bytes());
    let new = fingerprint(case.api.key.as_bytes());
    run.stdout_has(&format!("-  g2_api_key = \"<{old}>\"  # decrypted"));
    run.stdout_has(&format!("+  g2_api_key = \"<{new}>\"  # decrypted"));
    run.stdout_has("1 cluster: 1 mismatch");
    assert!(
        !run.stdout.contains("iam_client_secret = \"bx\""),
        "secret-named fields are redacted"
    );
}

#[test]
fn diff_redacts_secrets_in_inline_tables_arrays_and_multiline_strings() {
    let stale = Canary::new("redstale");
    let inline = Canary::new("redinline");
    let multi = Canary::new("redmulti");
    let listed = Canary::new("redlist");
    let mut case = Case::vpc("redact", Some(&stale.key));
    let env = seal(case.aes.key.as_bytes(), &stale.key);
    let toml = vpc_toml(&env, "rg1", "us-south", true).replace(
        "[Softlayer]",
        &format!(
            "  creds = {{ client_secret = \"{}\", user = \"ops\" }}\n  refresh_tokens = [\"{}\"]\n  password = \"\"\"\n{}\n\"\"\"\n\n[Softlayer]",
            inline.key, listed.key, multi.key
        ),
    );
    case.set_toml(&toml);
    let run = case.diff(&["--diff"]);
    run.code(1).stdout_has("g2_api_key = ");
    for c in [&stale, &inline, &multi, &listed] {
        c.assert_not_in_run(&run);
    }
    // The same for --before/--after.
    let after = write(
        case.dir(),
        "after.json",
        secret_json("c1", &toml.replace("ops", "ops2")),
    );
    let run = rekey()
        .args(["storage", "diff", "--before"])
        .arg(&case.secret)
        .arg("--after")
        .arg(&after)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .run();
    run.code(1)
        .stdout_has("-  user = \"ops\"")
        .stdout_has("+  user = \"ops2\"");
    for c in [&stale, &inline, &multi, &listed] {
        c.assert_not_in_run(&run);
    }
}

#[test]
fn yaml_secret_and_classic_key_with_softlayer_warning() {
    let mut case = Case::vpc("yaml", None);
    let env = seal(case.aes.key.as_bytes(), &case.api.key);
    let sl = Canary::new("slkey");
    case.secret = write(
        case.dir(),
        "c1.yaml",
        secret_yaml("c1", &classic_toml(&env, "us-south", &sl.key)),
    );
    let run = case.diff(&["--output", "json"]);
    sl.assert_not_in_run(&run);
    // Classic: no resource group in the file; the single us-south record is the match.
    let c = cluster(&run.code(0).json(), "c1").clone();
    assert_eq!(c["status"], "match");
    assert_eq!(c["field"], "Bluemix.iam_api_key");
    assert!(c["warnings"][0].as_str().unwrap().contains("softlayer_api_key"), "{c}");
}

#[test]
fn truth_with_slapikey_is_warned_about() {
    let mut case = Case::vpc("slrec", None);
    let sl = Canary::new("slrec");
    case.truth = write_truth(
        case.dir(),
        "truth.json",
        &[record("acc1", "rg1", "us-south", Some(&case.api.key), Some(&sl.key))],
    );
    let run = case.diff(&["--output", "json"]);
    sl.assert_not_in_run(&run);
    let c = cluster(&run.code(0).json(), "c1").clone();
    assert!(c["warnings"][0].as_str().unwrap().contains("SLAPIKey"), "{c}");
}

#[test]
fn fleet_list_reports_every_status_and_a_summary() {
    let tmp = tempdir();
    let aes = aes_canary("fleet");
    let other_aes = [7u8; 32];
    let keys: Vec<Canary> = (0..4).map(|i| Canary::new(&format!("fleet{i}"))).collect();
    let envs = seal_many(&[
        (aes.key.as_bytes(), keys[0].key.as_bytes(), None), // match, rg0
        (aes.key.as_bytes(), keys[3].key.as_bytes(), None), // mismatch, rg1
        (&other_aes, keys[2].key.as_bytes(), None),         // undecryptable, rg2
        (aes.key.as_bytes(), b"whatever-key", None),        // no_truth, rg-none
    ]);
    let items = vec![
        secret_json("m", &vpc_toml(&envs[0], "rg0", "us-south", true)),
        secret_json("x", &vpc_toml(&envs[1], "rg1", "us-south", true)),
        secret_json("u", &vpc_toml(&envs[2], "rg2", "us-south", true)),
        secret_json("n", &vpc_toml(&envs[3], "rg-none", "us-south", true)),
        secret_json("p", &vpc_toml(&keys[1].key, "rg1b", "us-south", false)),
        secret_json(
            "k",
            &vpc_toml("", "rg0", "us-south", true).replace("  g2_api_key = \"\"\n", ""),
        ),
    ];
    let list = write(tmp.path(), "fleet.json", list_json(&items));
    let truth = write_truth(
        tmp.path(),
        "truth.json",
        &[
            record("a", "rg0", "us-south", Some(&keys[0].key), None),
            record("a", "rg1", "us-south", Some(&keys[1].key), None),
            record("a", "rg1b", "us-south", Some(&keys[1].key), None),
            record("a", "rg2", "us-south", Some(&keys[2].key), None),
        ],
    );
    let key_file = write(tmp.path(), "aes.key", &aes.key);
    let run = rekey()
        .args(["storage", "diff", "--output", "json", "--secret"])
        .arg(&list)
        .arg("--truth")
        .arg(&truth)
        .arg("--decryption-key-file")
        .arg(&key_file)
        .run();
    for k in keys.iter().chain([&aes]) {
        k.assert_not_in_run(&run);
    }
    let json = run.code(1).json();
    let status = |id: &str| cluster(&json, id)["status"].as_str().unwrap().to_owned();
    assert_eq!(status("m"), "match");
    assert_eq!(status("x"), "mismatch");
    assert_eq!(status("u"), "undecryptable");
    assert_eq!(cluster(&json, "u")["detail"], AUTH);
    assert_eq!(status("n"), "no_truth");
    assert_eq!(status("p"), "not_encrypted");
    assert_eq!(cluster(&json, "p")["plain_matches"], true);
    assert_eq!(status("k"), "missing_key");
    let ids: Vec<&str> = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m", "x", "u", "n", "p", "k"], "output keeps input order");
    assert_eq!(json["summary"]["clusters"], 6);
    assert_eq!(json["summary"]["ok"], false);
    for s in [
        "match",
        "mismatch",
        "undecryptable",
        "no_truth",
        "not_encrypted",
        "missing_key",
    ] {
        assert_eq!(json["summary"]["statuses"][s], 1, "{s}");
    }
}

#[test]
fn directory_of_secrets_named_by_cluster_id() {
    let tmp = tempdir();
    let aes = aes_canary("dir");
    let api = Canary::new("dir");
    let envs = seal_many(&[
        (aes.key.as_bytes(), api.key.as_bytes(), None),
        (aes.key.as_bytes(), api.key.as_bytes(), None),
    ]);
    let dir = tmp.path().join("fleet");
    // No cluster-id annotation: the file name is the cluster ID.
    let strip = |s: String| s.replace("\"example.com/cluster-id\": \"x\"", "\"other\": \"y\"");
    write(
        &dir,
        "c0ffee01.json",
        strip(secret_json("x", &vpc_toml(&envs[0], "rg1", "us-south", true))),
    );
    write(
        &dir,
        "c0ffee02.yaml",
        secret_yaml("c0ffee02", &vpc_toml(&envs[1], "rg1", "us-south", true)),
    );
    write(&dir, "README.txt", "not a secret");
    let truth = write_truth(
        tmp.path(),
        "truth.json",
        &[record("a", "rg1", "us-south", Some(&api.key), None)],
    );
    let key_file = write(tmp.path(), "aes.key", &aes.key);
    let run = storage_diff(&dir, &truth, &key_file).run();
    api.assert_not_in_run(&run);
    aes.assert_not_in_run(&run);
    run.code(0)
        .stdout_has("c0ffee01  match")
        .stdout_has("c0ffee02  match")
        .stdout_has("2 clusters: 2 match");
}

#[test]
fn scope_flags_pick_the_record_when_the_secret_cannot() {
    let mut case = Case::vpc("scope", None);
    case.truth = write_truth(
        case.dir(),
        "truth.json",
        &[
            record("acc1", "rg1", "us-south", Some(&case.api.key), None),
            record("acc2", "rg1", "us-south", Some("other-key"), None),
        ],
    );
    let c = one_status(&case, &[]);
    assert_eq!(c["status"], "no_truth");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("2 source-of-truth records match"),
        "{c}"
    );
    let c = one_status(&case, &["--account", "acc1"]);
    assert_eq!(c["status"], "match");
    assert_eq!(c["truth"], format!("{} record 1", case.truth.display()));
}

#[test]
fn every_key_encoding_opens_and_auto_reports_which() {
    use sha2::Digest;
    let api = Canary::new("enc");
    let aes16 = b"0123456789abcdef";
    let aes24 = b"0123456789abcdef01234567";
    let pass = "correct horse battery staple";
    let hexkey = [0x5au8; 32];
    let b64key = [0xa5u8; 24];
    let sha = sha2::Sha256::digest(pass.as_bytes());
    let cases: Vec<(Vec<u8>, String, &str)> = vec![
        (aes16.to_vec(), String::from_utf8(aes16.to_vec()).unwrap(), "raw"),
        (aes24.to_vec(), String::from_utf8(aes24.to_vec()).unwrap(), "raw"),
        (hexkey.to_vec(), hex::encode(hexkey), "hex"),
        (b64key.to_vec(), STANDARD.encode(b64key), "base64"),
        (sha.to_vec(), pass.to_owned(), "sha256"),
    ];
    let items: Vec<SealItem> = cases
        .iter()
        .map(|(k, _, _)| (k.as_slice(), api.key.as_bytes(), None))
        .collect();
    let envs = seal_many(&items);
    for ((_, text, format), env) in cases.iter().zip(&envs) {
        let tmp = tempdir();
        let secret = write(
            tmp.path(),
            "c1.json",
            secret_json("c1", &vpc_toml(env, "rg1", "us-south", true)),
        );
        let truth = write_truth(
            tmp.path(),
            "t.json",
            &[record("a", "rg1", "us-south", Some(&api.key), None)],
        );
        for flag in ["auto", format] {
            let run = rekey()
                .args(["storage", "diff", "--output", "json", "--key-format", flag, "--secret"])
                .arg(&secret)
                .arg("--truth")
                .arg(&truth)
                .arg("--decryption-key-env")
                .arg("REKEY_TEST_AES")
                .env("REKEY_TEST_AES", text)
                .run();
            api.assert_not_in_run(&run);
            Canary::with_value(text).assert_not_in_run(&run);
            let json = run.code(0).json();
            assert_eq!(cluster(&json, "c1")["key_format"], *format, "{flag} for {format}");
        }
    }
}

// ------------------------------------------------------------------ bad envelopes: per-cluster status

fn with_envelope(tag: &str, envelope: impl FnOnce(&Case) -> String) -> serde_json::Value {
    let mut case = Case::vpc(tag, None);
    let env = envelope(&case);
    case.set_toml(&vpc_toml(&env, "rg1", "us-south", true));
    one_status(&case, &[])
}

#[test]
fn envelope_that_is_not_base64_is_undecryptable() {
    let c = with_envelope("envb64", |_| "not*base64*at*all".to_owned());
    assert_eq!(c["status"], "undecryptable");
    assert_eq!(c["detail"], "malformed envelope: not valid standard base64");
}

#[test]
fn envelope_shorter_than_28_bytes_is_undecryptable() {
    let c = with_envelope("short", |_| STANDARD.encode([1u8; 27]));
    assert_eq!(c["status"], "undecryptable");
    assert_eq!(
        c["detail"],
        "malformed envelope: 27 bytes, shorter than nonce and tag (28 bytes)"
    );
    let c = with_envelope("short28", |_| STANDARD.encode([1u8; 28]));
    assert_eq!(c["detail"], AUTH);
}

fn flipped(case: &Case, at: impl Fn(usize) -> usize) -> String {
    let env = seal(case.aes.key.as_bytes(), &case.api.key);
    let mut raw = STANDARD.decode(env).unwrap();
    let i = at(raw.len());
    raw[i] ^= 0x01;
    STANDARD.encode(raw)
}

#[test]
fn flipped_bit_in_nonce_is_undecryptable_with_the_one_message() {
    let c = with_envelope("fnonce", |case| flipped(case, |_| 3));
    assert_eq!(
        (c["status"].as_str(), c["detail"].as_str()),
        (Some("undecryptable"), Some(AUTH))
    );
    assert_eq!(c["actual_fingerprint"], serde_json::Value::Null);
}

#[test]
fn flipped_bit_in_ciphertext_is_undecryptable_with_the_one_message() {
    let c = with_envelope("fct", |case| flipped(case, |_| 14));
    assert_eq!(
        (c["status"].as_str(), c["detail"].as_str()),
        (Some("undecryptable"), Some(AUTH))
    );
}

#[test]
fn flipped_bit_in_tag_is_undecryptable_with_the_one_message() {
    let c = with_envelope("ftag", |case| flipped(case, |n| n - 1));
    assert_eq!(
        (c["status"].as_str(), c["detail"].as_str()),
        (Some("undecryptable"), Some(AUTH))
    );
}

#[test]
fn wrong_key_is_undecryptable_with_the_one_message() {
    let c = with_envelope("wrongkey", |case| seal(&[9u8; 32], &case.api.key));
    assert_eq!(
        (c["status"].as_str(), c["detail"].as_str()),
        (Some("undecryptable"), Some(AUTH))
    );
    // The wrong format is not told apart from a wrong key either.
    let case = Case::vpc("wrongfmt", None);
    let c = one_status(&case, &["--key-format", "sha256"]);
    assert_eq!(
        (c["status"].as_str(), c["detail"].as_str()),
        (Some("undecryptable"), Some(AUTH))
    );
}

// ------------------------------------------------------------------ bad input: exit 2, nothing written

#[test]
fn raw_keys_of_15_31_and_33_bytes_are_rejected() {
    let mut case = Case::vpc("keylen", None);
    for n in [15usize, 31, 33] {
        case.key_file = write(case.dir(), "aes.key", "k".repeat(n));
        assert_input_error(
            &case,
            &["--key-format", "raw"],
            &format!("a raw key is {n} bytes; AES-GCM needs 16, 24 or 32"),
        );
    }
}

#[test]
fn hex_key_of_63_digits_is_rejected() {
    let mut case = Case::vpc("hex63", None);
    case.key_file = write(case.dir(), "aes.key", "a".repeat(63));
    assert_input_error(
        &case,
        &["--key-format", "hex"],
        "a hex key has 63 hex digits; AES-GCM needs 32, 48 or 64",
    );
}

#[test]
fn base64_key_that_is_not_base64_is_rejected() {
    let mut case = Case::vpc("keyb64", None);
    case.key_file = write(case.dir(), "aes.key", "***");
    assert_input_error(
        &case,
        &["--key-format", "base64"],
        "the base64 key is not valid standard base64",
    );
}

#[test]
fn empty_decryption_key_is_rejected() {
    let mut case = Case::vpc("keyempty", None);
    case.key_file = write(case.dir(), "aes.key", "\n");
    assert_input_error(&case, &[], "the decryption key is empty");
}

#[test]
fn secret_data_that_is_not_base64_is_rejected() {
    let mut case = Case::vpc("datab64", None);
    case.secret = write(case.dir(), "c1.json", secret_json_raw("c1", "%%%not-base64%%%"));
    assert_input_error(
        &case,
        &[],
        "c1.json: cluster c1: field `data.slclient.toml` is not valid base64",
    );
}

#[test]
fn toml_that_does_not_parse_is_rejected_without_echoing_it() {
    let mut case = Case::vpc("badtoml", None);
    // A plain key on a broken line: the parser's quote of the line must not reach the user.
    case.set_toml(&format!("[VPC\n  g2_api_key = \"{}\"\n", case.api.key));
    assert_input_error(&case, &[], "c1.json: cluster c1: slclient.toml does not parse as TOML");
}

#[test]
fn toml_field_of_the_wrong_type_is_rejected() {
    let mut case = Case::vpc("tomltype", None);
    case.set_toml("[VPC]\n  g2_api_key = 12\n");
    assert_input_error(&case, &[], "field `VPC.g2_api_key` has type integer, expected string");
}

#[test]
fn secret_of_the_wrong_kind_is_rejected() {
    let mut case = Case::vpc("kind", None);
    case.edit_secret("\"Secret\"", "\"ConfigMap\"");
    assert_input_error(&case, &[], "field `kind` is \"ConfigMap\", expected \"Secret\"");
}

#[test]
fn secret_of_the_wrong_name_is_rejected() {
    let mut case = Case::vpc("name", None);
    case.edit_secret("storage-secret-store", "all-icr-io");
    assert_input_error(
        &case,
        &[],
        "field `metadata.name` is \"all-icr-io\", expected \"storage-secret-store\"",
    );
}

#[test]
fn secret_that_is_not_json_or_yaml_is_rejected() {
    let mut case = Case::vpc("syntax", None);
    case.secret = write(case.dir(), "c1.json", "{\"kind\": \"Secret\", ");
    assert_input_error(&case, &[], "c1.json: not JSON: unexpected end of input");
    case.secret = write(case.dir(), "c1.yaml", "kind: [Secret\n");
    assert_input_error(&case, &[], "c1.yaml: not JSON or YAML");
    // In a List, the broken item is named.
    let good = secret_json("c1", &vpc_toml("x", "rg1", "us-south", true));
    case.secret = write(case.dir(), "list.json", list_json(&[good, "{\"kind\": 5}".to_owned()]));
    assert_input_error(&case, &[], "list.json: item 1: not JSON: invalid type: integer `5`");
}

#[test]
fn truth_with_wrong_types_is_rejected_naming_the_field() {
    let mut case = Case::vpc("truthtype", None);
    let mut rec = record("acc1", "rg1", "us-south", Some(&case.api.key), None);
    rec["ResourceGroupID"] = serde_json::json!(42);
    case.truth = write_truth(case.dir(), "truth.json", &[rec]);
    assert_input_error(
        &case,
        &[],
        &format!(
            "{} record 1: field `ResourceGroupID` is a number, expected a string or null",
            case.truth.display()
        ),
    );
    let mut rec = record("acc1", "rg1", "us-south", Some(&case.api.key), None);
    rec["IAMAPIKey"] = serde_json::json!({"v": 1});
    case.truth = write_truth(case.dir(), "truth.json", &[rec]);
    assert_input_error(&case, &[], "field `IAMAPIKey` is an object, expected a string or null");
}

#[test]
fn duplicate_truth_records_for_one_scope_are_rejected() {
    let mut case = Case::vpc("dup", None);
    let r = record("acc1", "rg1", "us-south", Some(&case.api.key), None);
    case.truth = write_truth(case.dir(), "truth.json", &[r.clone(), r]);
    let t = case.truth.display().to_string();
    assert_input_error(
        &case,
        &[],
        &format!("{t} record 2 has the same account, resource group and region as {t} record 1"),
    );
}

#[test]
fn ndjson_truth_is_read() {
    let mut case = Case::vpc("ndjson", None);
    let a = record("acc0", "rg0", "eu-de", Some("k0"), None);
    let b = record("acc1", "rg1", "us-south", Some(&case.api.key), None);
    case.truth = write(case.dir(), "truth.ndjson", format!("{a}\n{b}\n"));
    assert_eq!(one_status(&case, &[])["status"], "match");
}

#[test]
fn empty_inputs_are_rejected() {
    let mut case = Case::vpc("empty", None);
    let good_secret = case.secret.clone();
    case.secret = write(case.dir(), "empty.json", "");
    assert_input_error(&case, &[], "the input is empty");
    case.secret = write(case.dir(), "list.json", list_json(&[]));
    assert_input_error(&case, &[], "the List has no items");
    case.secret = good_secret;
    case.truth = write(case.dir(), "truth.json", " \n");
    assert_input_error(&case, &[], "truth.json: no records");
    case.truth = write(case.dir(), "truth.json", "[]");
    assert_input_error(&case, &[], "truth.json: no records");
}

// ------------------------------------------------------------------ before/after and --reveal

#[test]
fn before_and_after_snapshots_prove_the_key_changed() {
    let case = Case::vpc("snap", None);
    let new = Canary::new("snapnew");
    let env = seal(case.aes.key.as_bytes(), &new.key);
    let after = write(
        case.dir(),
        "after.json",
        secret_json("c1", &vpc_toml(&env, "rg1", "us-south", true)),
    );
    let run = rekey()
        .args(["storage", "diff", "--before"])
        .arg(&case.secret)
        .arg("--after")
        .arg(&after)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .run();
    case.no_leak(&run);
    new.assert_not_in_run(&run);
    run.code(0)
        .stdout_has(&format!(
            "-  g2_api_key = \"<{}>\"",
            fingerprint(case.api.key.as_bytes())
        ))
        .stdout_has(&format!("+  g2_api_key = \"<{}>\"", fingerprint(new.key.as_bytes())))
        .stdout_has("key changed");
    // The same key re-encrypted (new nonce) is not a change.
    let again = seal(case.aes.key.as_bytes(), &case.api.key);
    let same = write(
        case.dir(),
        "same.json",
        secret_json("c1", &vpc_toml(&again, "rg1", "us-south", true)),
    );
    let run = rekey()
        .args(["storage", "diff", "--output", "json", "--before"])
        .arg(&case.secret)
        .arg("--after")
        .arg(&same)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .run();
    case.no_leak(&run);
    let json = run.code(1).json();
    assert_eq!(json["key_changed"], false);
    assert_eq!(json["diff"], "");
}

#[test]
fn reveal_is_ignored_when_stdout_is_not_a_terminal() {
    let stale = Canary::new("reveal");
    let case = Case::vpc("reveal", Some(&stale.key));
    let run = case.diff(&["--diff", "--reveal"]);
    stale.assert_not_in_run(&run);
    run.code(1)
        .stderr_has("warning: --reveal ignored: stdout is not a terminal");
}

// ------------------------------------------------------------------ etcd

#[test]
fn truth_from_a_real_etcd() {
    let etcd = etcd();
    let prefix = format!("truth-{}", unique_hex());
    let case = Case::vpc("etcd", None);
    etcd.put(
        &format!("/{prefix}/acc1/rg1/us-south"),
        &record("acc1", "rg1", "us-south", Some(&case.api.key), None).to_string(),
    );
    etcd.put(
        &format!("/{prefix}/acc1/rg9/eu-de"),
        &record("acc1", "rg9", "eu-de", Some("x"), None).to_string(),
    );
    // A key beside the prefix that must not be read.
    etcd.put(
        &format!("/{prefix}x/dup"),
        &record("acc1", "rg1", "us-south", Some("y"), None).to_string(),
    );
    let run = rekey()
        .args(["storage", "diff", "--output", "json", "--secret"])
        .arg(&case.secret)
        .arg("--truth")
        .arg(etcd.url(&prefix))
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .run();
    case.no_leak(&run);
    let json = run.code(0).json();
    assert_eq!(
        cluster(&json, "c1")["truth"],
        format!("etcd key /{prefix}/acc1/rg1/us-south")
    );
}

#[test]
fn etcd_record_with_wrong_types_is_rejected() {
    let etcd = etcd();
    let prefix = format!("bad-{}", unique_hex());
    let case = Case::vpc("etcdbad", None);
    let mut rec = record("acc1", "rg1", "us-south", Some(&case.api.key), None);
    rec["Region"] = serde_json::json!(true);
    etcd.put(&format!("/{prefix}/r"), &rec.to_string());
    let run = storage_diff(&case.secret, etcd.url(&prefix), &case.key_file).run();
    case.no_leak(&run);
    run.code(2).stderr_has(&format!(
        "etcd key /{prefix}/r: field `Region` is a boolean, expected a string or null"
    ));
    let run = storage_diff(&case.secret, etcd.url("nothing-here"), &case.key_file).run();
    run.code(2).stderr_has("no keys under prefix /nothing-here/");
}

// ------------------------------------------------------------------ which key field is the cluster's

/// What a key field holds in [`two_fields`].
#[derive(Clone, Copy)]
enum Holds<'a> {
    Empty,
    /// The case's truth key.
    Truth,
    Other(&'a str),
}

/// A case whose `[VPC] g2_api_key` and `[Bluemix] iam_api_key` hold what is said.
fn two_fields(tag: &str, vpc_key: Holds, bluemix_key: Holds, provider_type: &str) -> Case {
    let mut case = Case::vpc(tag, None);
    let truth = case.api.key.clone();
    let seal_or_empty = |k: Holds| match k {
        Holds::Empty => String::new(),
        Holds::Truth => seal(case.aes.key.as_bytes(), &truth),
        Holds::Other(k) => seal(case.aes.key.as_bytes(), k),
    };
    let toml = vpc_toml(&seal_or_empty(vpc_key), "rg1", "us-south", true)
        .replace(
            "iam_api_key = \"\"",
            &format!("iam_api_key = \"{}\"", seal_or_empty(bluemix_key)),
        )
        .replace(
            "provider_type = \"g2\"",
            &format!("provider_type = \"{provider_type}\""),
        );
    case.set_toml(&toml);
    case
}

#[test]
fn the_key_field_follows_the_provider_not_which_field_is_set() {
    let stale = Canary::new("provstale");
    // A classic cluster (provider label) whose stale VPC field is also set: the Bluemix field is its key.
    let mut case = two_fields("provclassic", Holds::Other(&stale.key), Holds::Truth, "");
    case.edit_secret(
        "\"example.com/cluster-id\": \"c1\"",
        "\"example.com/cluster-id\": \"c1\", \"example.com/provider\": \"classic\"",
    );
    let c = one_status(&case, &[]);
    stale.assert_not_in_run(&case.diff(&[]));
    assert_eq!(c["status"], "match", "{c}");
    assert_eq!(c["field"], "Bluemix.iam_api_key");
    assert_eq!(c["provider"], "classic");
    assert_eq!(c["provider_from"], "label provider=classic");
    assert_eq!(c["other_field"]["field"], "VPC.g2_api_key");
    assert_eq!(c["other_field"]["agrees"], false);
    assert_eq!(c["other_field"]["fingerprint"], fingerprint(stale.key.as_bytes()));
    let warning = c["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("the two key fields disagree: [Bluemix] iam_api_key (this cluster's) has "),
        "{warning}"
    );
    assert!(
        warning.contains(&fingerprint(case.api.key.as_bytes())) && warning.contains(&fingerprint(stale.key.as_bytes())),
        "{warning}"
    );
    case.diff(&[])
        .code(0)
        .stdout_has("provider classic (label provider=classic)")
        .stdout_has(&format!(
            "other field VPC.g2_api_key: {}, a DIFFERENT key",
            fingerprint(stale.key.as_bytes())
        ));
}

#[test]
fn a_vpc_cluster_without_its_vpc_key_is_missing_key_even_if_bluemix_is_set() {
    let case = two_fields("provvpc", Holds::Empty, Holds::Truth, "g2");
    let key = case.api.key.clone();
    let c = one_status(&case, &[]);
    assert_eq!(c["status"], "missing_key", "{c}");
    assert_eq!(c["provider"], "vpc");
    let detail = c["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        format!(
            "a vpc cluster ([VPC] provider_type = \"g2\") has no [VPC] g2_api_key; [Bluemix] iam_api_key is set (fingerprint {}), but it is not this cluster's key field",
            fingerprint(key.as_bytes())
        )
    );
    // --provider overrides what the secret says.
    let c = one_status(&case, &["--provider", "classic"]);
    assert_eq!(c["status"], "match", "{c}");
    assert_eq!(c["provider_from"], "--provider");
}

#[test]
fn without_a_provider_the_set_field_is_used_and_said_so() {
    let case = two_fields("provnone", Holds::Truth, Holds::Empty, "");
    let c = one_status(&case, &[]);
    assert_eq!(c["status"], "match");
    assert_eq!(c["provider"], serde_json::Value::Null);
    assert_eq!(c["provider_from"], "none told; [VPC] g2_api_key is the key field set");
}

/// `kubectl get secret sdnlb-config -n kube-system -o json` with `[SDNLB] service_apikey = value`.
fn sdnlb_json(value: &str, encryption: Option<bool>) -> String {
    let toml = format!(
        "[SDNLB]\ncluster_crn = \"crn:v1:bluemix:public:containers-kubernetes:us-south:a/acc1:c1::\"\nservice_apikey = \"{value}\"\n{}",
        encryption.map(|e| format!("encryption = {e}\n")).unwrap_or_default()
    );
    format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"sdnlb-config","namespace":"kube-system"}},"data":{{"sdnlb.toml":"{}"}},"type":"Opaque"}}"#,
        STANDARD.encode(toml)
    )
}

#[test]
fn the_sdnlb_config_key_of_a_vpc_cluster_is_verified_too() {
    let case = Case::vpc("sdnlb", None);
    let sealed = seal(case.aes.key.as_bytes(), &case.api.key);
    let enc = write(case.dir(), "sdnlb.json", sdnlb_json(&sealed, Some(true)));
    let path = enc.display().to_string();
    let c = one_status(&case, &["--sdnlb-config", &path]);
    assert_eq!(c["status"], "match", "{c}");
    assert_eq!(c["sdnlb"]["status"], "match");
    assert_eq!(c["sdnlb"]["encrypted"], true);
    assert_eq!(c["sdnlb"]["fingerprint"], fingerprint(case.api.key.as_bytes()));
    // A plain value is compared as it is, and said to be plain.
    let plain = write(case.dir(), "sdnlb-plain.json", sdnlb_json(&case.api.key, None));
    let c = one_status(&case, &["--sdnlb-config", plain.to_str().unwrap()]);
    assert_eq!(c["sdnlb"]["status"], "match");
    assert_eq!(c["sdnlb"]["encrypted"], false);
    case.diff(&["--sdnlb-config", plain.to_str().unwrap()])
        .code(0)
        .stdout_has(&format!(
            "sdnlb-config service_apikey: match {}",
            fingerprint(case.api.key.as_bytes())
        ));
}

#[test]
fn a_stale_sdnlb_config_key_fails_the_cluster() {
    let stale = Canary::new("sdnlbold");
    let case = Case::vpc("sdnlbstale", None);
    let sealed = seal(case.aes.key.as_bytes(), &stale.key);
    let path = write(case.dir(), "sdnlb.json", sdnlb_json(&sealed, Some(true)));
    let run = case.diff(&["--output", "json", "--sdnlb-config", path.to_str().unwrap()]);
    stale.assert_not_in_run(&run);
    let json = run.code(1).json();
    let c = cluster(&json, "c1");
    assert_eq!(c["status"], "mismatch");
    assert_eq!(
        c["detail"],
        "the storage secret matches, but kube-system/sdnlb-config's service_apikey is mismatch"
    );
    assert_eq!(c["sdnlb"]["fingerprint"], fingerprint(stale.key.as_bytes()));
    // encryption = true with a value the key does not open.
    let path = write(
        case.dir(),
        "sdnlb-bad.json",
        sdnlb_json("bm90IGFuIGVudmVsb3BlIGF0IGFsbA==", Some(true)),
    );
    let c = one_status(&case, &["--sdnlb-config", path.to_str().unwrap()]);
    assert_eq!(c["sdnlb"]["status"], "undecryptable");
}

#[test]
fn sdnlb_config_is_for_one_vpc_cluster() {
    let mut case = Case::vpc("sdnlbclassic", None);
    let env = seal(case.aes.key.as_bytes(), &case.api.key.clone());
    case.set_toml(&classic_toml(&env, "us-south", ""));
    let path = write(case.dir(), "sdnlb.json", sdnlb_json("x", None));
    let c = one_status(
        &case,
        &["--sdnlb-config", path.to_str().unwrap(), "--provider", "classic"],
    );
    assert_eq!(c["sdnlb"]["status"], "not_applicable", "{c}");
    assert_eq!(c["status"], "match");
    let other = write(
        case.dir(),
        "wrong.json",
        sdnlb_json("x", None).replace("sdnlb-config", "other"),
    );
    case.diff(&["--sdnlb-config", other.to_str().unwrap()])
        .code(2)
        .stderr_has("wrong.json: field `metadata.name` is \"other\", expected \"sdnlb-config\"");
    let two = write(
        case.dir(),
        "two.json",
        list_json(&[
            std::fs::read_to_string(&case.secret).unwrap(),
            std::fs::read_to_string(&case.secret).unwrap(),
        ]),
    );
    let run = storage_diff(&two, &case.truth, &case.key_file)
        .arg("--sdnlb-config")
        .arg(&path)
        .run();
    run.code(2)
        .stderr_has("--sdnlb-config is one cluster's Secret, but --secret held 2 clusters");
}

// ------------------------------------------------------------------ etcd as production runs it

/// `storage diff` of a VPC cluster holding the TLS etcd's key, with `extra` args.
fn diff_against_etcd_tls(tag: &str, extra: &[&str]) -> (Case, Run) {
    let e = etcd_tls();
    let mut case = Case::vpc(tag, None);
    let env = seal(case.aes.key.as_bytes(), &e.api_key);
    case.set_toml(&vpc_toml(&env, "rg1", "us-south", true));
    let run = rekey()
        .args(["storage", "diff", "--output", "json", "--secret"])
        .arg(&case.secret)
        .arg("--truth")
        .arg(e.url())
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .args(extra)
        .env("ETCD_PW", ETCD_PASSWORD)
        .run();
    let canary = Canary::with_value(&e.api_key);
    canary.assert_not_in_run(&run);
    Canary::with_value(ETCD_PASSWORD).assert_not_in_run(&run);
    (case, run)
}

fn tls_args(e: &EtcdTls) -> Vec<String> {
    vec![
        "--etcd-cacert".into(),
        e.cacert.display().to_string(),
        "--etcd-cert".into(),
        e.cert.display().to_string(),
        "--etcd-key".into(),
        e.key.display().to_string(),
    ]
}

#[test]
fn truth_from_etcd_over_tls_with_client_certificate_and_password_auth() {
    let e = etcd_tls();
    let mut args = tls_args(e);
    args.extend([
        "--etcd-user".into(),
        "rekey".into(),
        "--etcd-password-env".into(),
        "ETCD_PW".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_case, run) = diff_against_etcd_tls("etcdtls", &args);
    let json = run.code(0).json();
    assert_eq!(cluster(&json, "c1")["status"], "match");
    assert_eq!(
        cluster(&json, "c1")["truth"],
        "etcd key /secure-truth/acc1/rg1/us-south"
    );
    // The password from a file works the same.
    let pw = write(&e.dir, "pw", format!("{ETCD_PASSWORD}\n"));
    let mut args = tls_args(e);
    args.extend([
        "--etcd-user".into(),
        "rekey".into(),
        "--etcd-password-file".into(),
        pw.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    diff_against_etcd_tls("etcdtlsfile", &args).1.code(0);
}

#[test]
fn etcd_with_auth_enabled_refuses_a_wrong_password_or_no_user() {
    let e = etcd_tls();
    let mut args = tls_args(e);
    args.extend([
        "--etcd-user".into(),
        "rekey".into(),
        "--etcd-password-env".into(),
        "WRONG_PW".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = rekey()
        .args([
            "storage",
            "diff",
            "--secret",
            "/dev/null",
            "--decryption-key-env",
            "X",
            "--truth",
        ])
        .arg(e.url())
        .args(&args)
        .env("WRONG_PW", "not-the-password")
        .env("X", "0123456789abcdef0123456789abcdef")
        .run();
    run.code(2)
        .stderr_has("etcd refused user rekey")
        .stderr_has("etcdserver: authentication failed, invalid user ID or password");
    let args = tls_args(e);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_case, run) = diff_against_etcd_tls("etcdnouser", &args);
    run.code(2).stderr_has("reading source of truth from etcd+https://");
    let (_case, run) = diff_against_etcd_tls("etcdnopw", &[&args[..], &["--etcd-user", "rekey"]].concat());
    run.code(2).stderr_has("--etcd-user needs a password");
}

#[test]
fn etcd_over_tls_needs_the_client_certificate_and_the_right_ca() {
    let e = etcd_tls();
    let pw: [&str; 4] = ["--etcd-user", "rekey", "--etcd-password-env", "ETCD_PW"];
    // No client certificate: etcd's client-cert auth refuses the handshake.
    let cacert = e.cacert.display().to_string();
    let (_case, run) = diff_against_etcd_tls("etcdnocert", &[&["--etcd-cacert", &cacert][..], &pw].concat());
    run.code(2)
        .stderr_has(&format!("POST https://127.0.0.1:{}/v3/auth/authenticate", e.port));
    // A CA that did not sign etcd's certificate.
    let mut args = tls_args(e);
    args[1] = e.other_ca.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_case, run) = diff_against_etcd_tls("etcdotherca", &[&args[..], &pw].concat());
    run.code(2).stderr_has("POST https://127.0.0.1:");
    // TLS options without a TLS address are a usage error.
    let run = rekey()
        .args([
            "storage",
            "diff",
            "--secret",
            "/dev/null",
            "--decryption-key-env",
            "X",
            "--truth",
            "etcd://127.0.0.1:1/p",
            "--etcd-cacert",
        ])
        .arg(&e.cacert)
        .env("X", "0123456789abcdef0123456789abcdef")
        .run();
    run.code(2)
        .stderr_has("--etcd-cacert and --etcd-cert need a TLS address");
    let run = rekey()
        .args([
            "storage",
            "diff",
            "--secret",
            "/dev/null",
            "--decryption-key-env",
            "X",
            "--truth",
            "t.json",
            "--etcd-cacert",
        ])
        .arg(&e.cacert)
        .env("X", "0123456789abcdef0123456789abcdef")
        .run();
    run.code(2)
        .stderr_has("--etcd-* options apply to an etcd source of truth");
}

#[test]
fn etcd_endless_more_pages_are_cut_at_the_page_limit() {
    use crate::health_support::{hostile, respond};
    let rec = record("acc1", "rg1", "us-south", Some("k"), None).to_string();
    let (port, log) = hostile(move |req, s| {
        let asked: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let key = asked["key"].as_str().unwrap_or("").to_owned();
        let body = serde_json::json!({"kvs": [{"key": key, "value": STANDARD.encode(&rec)}], "more": true});
        respond(
            s,
            "200 OK",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    });
    let case = Case::vpc("etcdmore", None);
    let run = storage_diff(&case.secret, format!("etcd://127.0.0.1:{port}/truth"), &case.key_file).run();
    run.code(2).stderr_has("more than 1000 pages of 1000 keys");
    assert_eq!(log.lock().unwrap().len(), 1000, "page 1001 is never asked for");
}

#[test]
fn etcd_endless_answer_is_cut_at_the_size_limit() {
    use crate::health_support::{endless, hostile};
    let (port, _) = hostile(|_, s| endless(s, "application/json", br#"{"kvs":[{"key":"L2E=","value":""#, b"QUFB"));
    let case = Case::vpc("etcdendless", None);
    let run = storage_diff(&case.secret, format!("etcd://127.0.0.1:{port}/truth"), &case.key_file).run();
    run.code(2).stderr_has("the answer is larger than the limit of 64 MiB");
}

// ------------------------------------------------------------------ wait

/// A fake kubectl that prints `before` for the first `flip_after` calls, then `after`,
/// and records its arguments.
fn fake_kubectl(dir: &Path, before: &str, after: &str, flip_after: u32) -> PathBuf {
    let before = write(dir, "before.json", before);
    let after = write(dir, "after.json", after);
    let count = dir.join("count");
    let args = dir.join("args");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{args}'\nn=$(cat '{count}' 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > '{count}'\nif [ $n -le {flip_after} ]; then cat '{before}'; else cat '{after}'; fi\n",
        args = args.display(),
        count = count.display(),
        before = before.display(),
        after = after.display()
    );
    let path = write(dir, "kubectl", script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn wait_polls_until_the_key_arrives() {
    let stale = Canary::new("waitold");
    let case = Case::vpc("wait", None);
    let old_env = seal(case.aes.key.as_bytes(), &stale.key);
    let old = secret_json("c1", &vpc_toml(&old_env, "rg1", "us-south", true));
    let new = std::fs::read_to_string(&case.secret).unwrap();
    let kubectl = fake_kubectl(case.dir(), &old, &new, 2);
    let run = rekey()
        .args([
            "storage",
            "wait",
            "--output",
            "json",
            "--interval",
            "50ms",
            "--timeout",
            "1h",
            "--context",
            "ctx1",
        ])
        .arg("--truth")
        .arg(&case.truth)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .arg("--kubectl")
        .arg(&kubectl)
        .run();
    case.no_leak(&run);
    stale.assert_not_in_run(&run);
    let json = run.code(0).json();
    assert_eq!(json["rounds"], 3);
    assert_eq!(json["matched"], true);
    assert_eq!(json["clusters"][0]["attempts"], 3);
    assert_eq!(json["clusters"][0]["state"], "match");
    assert_eq!(json["clusters"][0]["report"]["status"], "match");
    run.stderr_has("attempt 1: c1  mismatch")
        .stderr_has("attempt 3: c1  match");
    assert!(
        !run.stderr.contains("attempt 2:"),
        "unchanged states are not repeated: {}",
        run.stderr
    );
    let args = std::fs::read_to_string(case.dir().join("args")).unwrap();
    assert_eq!(
        args.lines().next(),
        Some("--context ctx1 get secret storage-secret-store -n kube-system -o json")
    );
}

#[test]
fn wait_gives_up_at_the_timeout_with_exit_1() {
    let stale = Canary::new("waitto");
    let case = Case::vpc("waitto", None);
    let old_env = seal(case.aes.key.as_bytes(), &stale.key);
    let old = secret_json("c1", &vpc_toml(&old_env, "rg1", "us-south", true));
    let kubectl = fake_kubectl(case.dir(), &old, &old, 1000);
    let run = rekey()
        .args(["storage", "wait", "--interval", "20ms", "--timeout", "100ms"])
        .arg("--truth")
        .arg(&case.truth)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .arg("--kubectl")
        .arg(&kubectl)
        .run();
    case.no_leak(&run);
    stale.assert_not_in_run(&run);
    run.code(1)
        .stdout_has("c1  mismatch")
        .stdout_has("timed out after 100ms")
        .stdout_has("0 of 1 match; still stale: c1");
}

#[test]
fn wait_with_a_missing_kubectl_stops_at_once_with_exit_2() {
    let case = Case::vpc("waitnokc", None);
    let run = rekey()
        .args(["storage", "wait", "--interval", "20ms", "--timeout", "1h", "--kubectl"])
        .arg(case.dir().join("no-such-kubectl"))
        .arg("--truth")
        .arg(&case.truth)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .run();
    case.no_leak(&run);
    run.code(2)
        .stdout_has("error: running")
        .stdout_has("stopped: a permanent error that waiting cannot cure");
}

/// A kubectl stand-in that answers per `--context`: `DIR/CTX.before` for the
/// first `DIR/CTX.flip` calls, then `DIR/CTX.after`; or, when `DIR/CTX.err`
/// exists, prints it to stderr and fails. Logs each call's start and end.
fn region_kubectl(dir: &Path, sleep: &str) -> PathBuf {
    let script = format!(
        r#"#!/bin/sh
ctx="$2"
d='{dir}'
echo "start $ctx $(date +%s%N)" >> "$d/calls"
n=$(cat "$d/$ctx.count" 2>/dev/null || echo 0)
n=$((n+1))
echo $n > "$d/$ctx.count"
sleep {sleep}
echo "end $ctx $(date +%s%N)" >> "$d/calls"
if [ -f "$d/$ctx.err" ]; then cat "$d/$ctx.err" >&2; exit 1; fi
if [ ! -f "$d/$ctx.flip" ]; then echo "error: context \"$ctx\" does not exist" >&2; exit 1; fi
if [ $n -le $(cat "$d/$ctx.flip") ]; then cat "$d/$ctx.before"; else cat "$d/$ctx.after"; fi
"#,
        dir = dir.display()
    );
    let path = write(dir, "kubectl", script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A region of clusters in one resource group, each behind its own context.
struct Region {
    case: Case,
    stale: Canary,
    kubectl: PathBuf,
}

impl Region {
    fn new(tag: &str, sleep: &str) -> Region {
        let case = Case::vpc(tag, None);
        let stale = Canary::new(&format!("{tag}old"));
        let kubectl = region_kubectl(case.dir(), sleep);
        Region { case, stale, kubectl }
    }

    /// Context `ctx` serves cluster `cluster`, stale for `flip` polls, then current.
    fn cluster(&self, ctx: &str, cluster: &str, flip: u32) {
        let dir = self.case.dir();
        let old = seal(self.case.aes.key.as_bytes(), &self.stale.key);
        let new = seal(self.case.aes.key.as_bytes(), &self.case.api.key);
        write(
            dir,
            &format!("{ctx}.before"),
            secret_json(cluster, &vpc_toml(&old, "rg1", "us-south", true)),
        );
        write(
            dir,
            &format!("{ctx}.after"),
            secret_json(cluster, &vpc_toml(&new, "rg1", "us-south", true)),
        );
        write(dir, &format!("{ctx}.flip"), flip.to_string());
    }

    fn wait(&self, extra: &[&str]) -> Run {
        let run = rekey()
            .args(["storage", "wait", "--interval", "50ms"])
            .arg("--truth")
            .arg(&self.case.truth)
            .arg("--decryption-key-file")
            .arg(&self.case.key_file)
            .arg("--kubectl")
            .arg(&self.kubectl)
            .args(extra)
            .run();
        self.case.no_leak(&run);
        self.stale.assert_not_in_run(&run);
        run
    }

    /// The most kubectl calls that ran at the same time.
    fn max_overlap(&self) -> usize {
        let calls = std::fs::read_to_string(self.case.dir().join("calls")).unwrap();
        let mut events: Vec<(u128, i32)> = calls
            .lines()
            .map(|l| {
                let parts: Vec<&str> = l.split(' ').collect();
                (parts[2].parse().unwrap(), if parts[0] == "start" { 1 } else { -1 })
            })
            .collect();
        events.sort_by_key(|(t, d)| (*t, *d));
        let (mut now, mut most) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            most = most.max(now);
        }
        most as usize
    }
}

#[test]
fn wait_for_a_region_polls_every_context_concurrently_within_the_bound() {
    let region = Region::new("waitregion", "0.3");
    let names = ["ca", "cb", "cc", "cd", "ce", "cf"];
    for (i, n) in names.iter().enumerate() {
        region.cluster(&format!("ctx-{n}"), &format!("cluster-{n}"), (i % 3) as u32);
    }
    let file = write(
        region.case.dir(),
        "contexts.txt",
        "# us-south, resource group rg1\nctx-cb\nctx-cc\n\nctx-cd  # a comment\nctx-ce\nctx-cf\nctx-ca\n",
    );
    let run = region.wait(&[
        "--context",
        "ctx-ca",
        "--contexts-file",
        file.to_str().unwrap(),
        "--concurrency",
        "3",
        "--timeout",
        "1h",
    ]);
    run.code(0).stdout_has("all 6 clusters match after 3 rounds");
    for n in names {
        run.stdout_has(&format!("cluster-{n}  match"));
    }
    let most = region.max_overlap();
    assert!(
        (2..=3).contains(&most),
        "at most --concurrency 3 at once, and more than one: {most}"
    );
    let json = region.wait(&["--context", "ctx-ca", "--output", "json"]);
    assert_eq!(json.code(0).json()["clusters"][0]["context"], "ctx-ca");
}

#[test]
fn wait_for_a_region_times_out_listing_the_stale_clusters() {
    let region = Region::new("waitstale", "0");
    region.cluster("ctx-a", "cluster-a", 0);
    region.cluster("ctx-b", "cluster-b", 1000);
    region.cluster("ctx-c", "cluster-c", 1000);
    let run = region.wait(&[
        "--context",
        "ctx-a",
        "--context",
        "ctx-b",
        "--context",
        "ctx-c",
        "--timeout",
        "300ms",
    ]);
    run.code(1)
        .stdout_has("cluster-a  match")
        .stdout_has("cluster-b  mismatch")
        .stdout_has("1 of 3 match; still stale: cluster-b, cluster-c");
    let json = region.wait(&[
        "--context",
        "ctx-a",
        "--context",
        "ctx-b",
        "--timeout",
        "100ms",
        "--output",
        "json",
    ]);
    let json = json.code(1).json();
    assert_eq!(json["stale"], serde_json::json!(["cluster-b"]));
    assert_eq!(json["clusters"][1]["state"], "stale");
}

#[test]
fn wait_stops_at_once_on_a_permanent_error() {
    for (err, shown) in [
        (None, "error: context \"ctx-nope\" does not exist"),
        (
            Some(
                "Error from server (Forbidden): secrets \"storage-secret-store\" is forbidden: User \"ops\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\"",
            ),
            "(Forbidden)",
        ),
        (
            Some("Error from server (NotFound): secrets \"storage-secret-store\" not found"),
            "(NotFound)",
        ),
    ] {
        let region = Region::new("waitperm", "0");
        region.cluster("ctx-a", "cluster-a", 1000);
        if let Some(err) = err {
            region.cluster("ctx-nope", "cluster-x", 0);
            write(region.case.dir(), "ctx-nope.err", err);
        }
        let started = std::time::Instant::now();
        let run = region.wait(&["--context", "ctx-a", "--context", "ctx-nope", "--timeout", "1h"]);
        run.code(2)
            .stdout_has("ctx-nope  error: ")
            .stdout_has(shown)
            .stdout_has(
                "stopped: a permanent error that waiting cannot cure; 0 of 2 match; not matching: cluster-a, ctx-nope",
            );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "not polled for the timeout"
        );
        let calls = std::fs::read_to_string(region.case.dir().join("ctx-nope.count")).unwrap();
        assert_eq!(calls.trim(), "1", "a permanent error is not polled again");
    }
}

#[test]
fn wait_rejects_bad_context_lists() {
    let region = Region::new("waitbad", "0");
    let empty = write(region.case.dir(), "none.txt", "# nothing\n\n");
    region
        .wait(&["--contexts-file", empty.to_str().unwrap()])
        .code(2)
        .stderr_has("lists no contexts");
    region
        .wait(&["--context", "a", "--context", "b", "--cluster", "c1"])
        .code(2)
        .stderr_has("--cluster names one cluster");
    let bad = write(region.case.dir(), "bad.txt", "ok\n--kubeconfig=/tmp/x\n");
    region
        .wait(&["--contexts-file", bad.to_str().unwrap()])
        .code(2)
        .stderr_has("bad.txt line 2: `--kubeconfig=/tmp/x` is not a context name");
}

// ------------------------------------------------------------------ check-log

const PHRASES: [&str; 5] = [
    "Successfully populated secret information from network.toml",
    "Updating the cluster secret",
    "Storage Encryption is enabled.  Encrypting Bluemix.IAMAPIKey",
    "Successfully Uploaded config to cluster updater within 5s with StatusCode: 200",
    "About to send the credential Audit event for cluster secret update",
];

fn job_log(skip: Option<usize>) -> String {
    let mut s =
        String::from("2026-11-23T10:00:00Z INFO cluster_secret_update start cluster=c0ffee resourceGroup=rg77\n");
    for (i, p) in PHRASES.iter().enumerate() {
        if Some(i) != skip {
            s.push_str(&format!("2026-11-23T10:00:0{i}Z INFO {p}\n"));
        }
    }
    s
}

fn check_log(log: &str, args: &[&str]) -> Run {
    let tmp = tempdir();
    let path = write(tmp.path(), "job.log", log);
    rekey().args(["storage", "check-log"]).arg(&path).args(args).run()
}

fn check_log_json(log: &str, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let run = check_log(log, &all);
    let json = run.json();
    (run, json)
}

#[test]
fn check_log_accepts_a_complete_log_and_prints_what_it_names() {
    let run = check_log(&job_log(None), &["--cluster", "c0ffee", "--resource-group", "rg77"]);
    run.code(0)
        .stdout_has("logged: cluster ID c0ffee; resource group rg77; StatusCode 200; time 2026-11-23T10:00:04Z")
        .stdout_has("ok: all 5 phrases in order, no error after them; names cluster c0ffee and resource group rg77");
    assert!(run.stdout.ends_with('\n'));
    let (run, json) = check_log_json(&job_log(None), &["--cluster", "c0ffee"]);
    run.code(0);
    assert_eq!(json["logged"]["cluster_ids"], serde_json::json!(["c0ffee"]));
    assert_eq!(json["logged"]["status_code"], 200);
    assert_eq!(json["logged"]["time"], "2026-11-23T10:00:04Z");
}

#[test]
fn check_log_looks_for_each_phrase_on_its_own() {
    let (run, json) = check_log_json(&job_log(Some(3)), &["--cluster", "c0ffee"]);
    run.code(1);
    assert_eq!(json["ok"], false);
    assert_eq!(
        json["problems"],
        serde_json::json!([format!("phrase 4 missing: \"{}\"", PHRASES[3])])
    );
    assert_eq!(json["phrases"][2]["line"], 4);
    assert_eq!(json["phrases"][4]["line"], 5, "the missing phrase hides not the next");
}

#[test]
fn check_log_counts_all_five_phrases_on_one_line() {
    let log = format!("2026-11-23T10:00:00Z cluster=c0ffee {}\n", PHRASES.join(" "));
    check_log(&log, &["--cluster", "c0ffee"])
        .code(0)
        .stdout_has("ok: all 5 phrases in order");
}

#[test]
fn check_log_reports_out_of_order_phrases() {
    let mut lines: Vec<String> = PHRASES.iter().map(|p| format!("INFO {p}")).collect();
    lines.swap(2, 3);
    let log = format!("cluster=c0ffee\n{}\n", lines.join("\n"));
    check_log(&log, &["--cluster", "c0ffee"])
        .code(1)
        .stdout_has("problem: out of order: phrase 4 (line 4) comes before phrase 3 (line 5)");
}

#[test]
fn check_log_matches_the_cluster_and_resource_group_as_whole_tokens() {
    let log = job_log(None)
        .replace("cluster=c0ffee", "cluster=c0ffee123")
        .replace("rg77", "rg778");
    check_log(&log, &["--cluster", "c0ffee12", "--resource-group", "rg77"])
        .code(1)
        .stdout_has("problem: the log does not name cluster c0ffee12 (it names c0ffee123)")
        .stdout_has("problem: the log does not name resource group rg77 (it names rg778)");
    check_log(&job_log(None), &["--cluster", "deadbeef"])
        .code(1)
        .stdout_has("problem: the log does not name cluster deadbeef");
}

#[test]
fn check_log_fails_on_an_error_after_the_phrases_and_quotes_it() {
    for (bad, shown) in [
        (
            "2026-11-23T10:00:05Z ERROR failed to send the audit event",
            "ERROR failed to send the audit event",
        ),
        ("panic: runtime error: invalid memory address", "panic: runtime error"),
        (
            "2026-11-23T10:00:06Z INFO retried upload, StatusCode: 503",
            "StatusCode: 503",
        ),
    ] {
        let log = format!("{}{bad}\n", job_log(None));
        let run = check_log(&log, &["--cluster", "c0ffee"]);
        run.code(1).stdout_has("problem: error at line 7: ").stdout_has(shown);
    }
    // Terminal escapes in a quoted line are shown escaped.
    let log = format!("{}ERROR \u{1b}]0;owned\u{7}\n", job_log(None));
    let run = check_log(&log, &["--cluster", "c0ffee"]);
    run.code(1).stdout_has("ERROR \\u{1b}]0;owned\\u{7}");
    assert!(!run.stdout.contains('\u{1b}'));
}

#[test]
fn check_log_judges_the_last_of_several_runs() {
    let failed = format!(
        "2026-11-23T09:00:00Z INFO cluster_secret_update start cluster=c0ffee resourceGroup=rg77\n{}\n{}\nERROR upload: StatusCode: 500\n",
        PHRASES[0], PHRASES[1]
    );
    // A failed run, then a good one: ok.
    let (run, json) = check_log_json(&format!("{failed}{}", job_log(None)), &["--cluster", "c0ffee"]);
    run.code(0);
    assert_eq!(json["runs"], 2);
    assert_eq!(json["run_starts_at"], 5);
    // A good run, then a failed one: the failure is what counts.
    let run = check_log(&format!("{}{failed}", job_log(None)), &["--cluster", "c0ffee"]);
    run.code(1)
        .stdout_has("the log holds 2 runs; judging the last, from line 7")
        .stdout_has("problem: phrase 3 missing")
        .stdout_has("problem: error at line 10: ERROR upload: StatusCode: 500");
}

#[test]
fn check_log_of_an_empty_or_missing_file_is_an_error() {
    let tmp = tempdir();
    let log = write(tmp.path(), "job.log", "");
    rekey()
        .args(["storage", "check-log"])
        .arg(&log)
        .args(["--cluster", "c0ffee"])
        .run()
        .code(2)
        .stderr_has("the log is empty");
    rekey()
        .args(["storage", "check-log"])
        .arg(tmp.path().join("nope.log"))
        .args(["--cluster", "c0ffee"])
        .run()
        .code(2)
        .stderr_has("error: reading");
}

#[test]
fn parser_errors_do_not_quote_secret_values() {
    let mut case = Case::vpc("quote", None);
    // `data` as a string instead of a map: serde would quote the value in its message.
    let text = format!(
        "{{\"kind\": \"Secret\", \"metadata\": {{\"name\": \"storage-secret-store\"}}, \"data\": \"{}\"}}",
        case.api.key
    );
    case.secret = write(case.dir(), "c1.json", text);
    assert_input_error(&case, &[], "invalid type: string \"…\", expected a map");
    let yaml = format!(
        "kind: Secret\nmetadata:\n  name: storage-secret-store\ndata: {}\n",
        case.api.key
    );
    case.secret = write(case.dir(), "c1.yaml", yaml);
    assert_input_error(&case, &[], "not JSON or YAML");
}

#[test]
fn reveal_shows_values_only_on_a_terminal() {
    // util-linux `script` gives rekey a pseudo-terminal as stdout.
    let stale = Canary::new("revealtty");
    let case = Case::vpc("revealtty", Some(&stale.key));
    let cmd = format!(
        "{} storage diff --diff --reveal --secret {} --truth {} --decryption-key-file {}",
        env!("CARGO_BIN_EXE_rekey"),
        case.secret.display(),
        case.truth.display(),
        case.key_file.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("-  g2_api_key = \"{}\"", stale.key)), "{text}");
    assert!(
        text.contains(&format!("+  g2_api_key = \"{}\"", case.api.key)),
        "{text}"
    );
    assert!(!text.contains("--reveal ignored"), "{text}");
}

#[test]
fn yaml_list_on_stdin() {
    let case = Case::vpc("yamlstdin", None);
    let env = seal(case.aes.key.as_bytes(), &case.api.key);
    let item = secret_yaml("c9", &vpc_toml(&env, "rg1", "us-south", true));
    let indented: String = item.lines().map(|l| format!("  {l}\n")).collect();
    let list = format!("apiVersion: v1\nkind: List\nitems:\n-{}", &indented[1..]);
    let run = rekey()
        .args(["storage", "diff", "--output", "json", "--secret", "-", "--truth"])
        .arg(&case.truth)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .stdin(list)
        .run();
    case.no_leak(&run);
    let json = run.code(0).json();
    assert_eq!(cluster(&json, "c9")["status"], "match");
}

// ------------------------------------------------------------------ hostile input is bounded

fn diff_of(case: &Case, secret: &Path) -> Run {
    let run = storage_diff(secret, &case.truth, &case.key_file).run();
    case.no_leak(&run);
    run
}

#[test]
fn deeply_nested_yaml_is_refused_before_parsing() {
    let case = Case::vpc("yamldeep", None);
    // 400 KB of nested flow mappings took serde_yaml_ng minutes.
    let depth = 400 * 1024 / 5;
    let flow = format!("kind: Secret\ndata: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth));
    let path = write(case.dir(), "deep.yaml", &flow);
    let started = std::time::Instant::now();
    diff_of(&case, &path)
        .code(2)
        .stderr_has("deep.yaml: YAML nested deeper than 32 levels (line 2): refused before parsing");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let block: String = (0..2000).map(|i| format!("{}a:\n", " ".repeat(i + 2))).collect();
    let path = write(case.dir(), "block.yaml", format!("kind: Secret\ndata:\n{block}"));
    diff_of(&case, &path)
        .code(2)
        .stderr_has("YAML nested deeper than 32 levels");
}

/// Makes a sparse file of `size` bytes that starts with `head` (no disk is used for the rest).
fn sparse(dir: &Path, name: &str, head: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &f, head.as_bytes()).unwrap();
    f.set_len(size).unwrap();
    path
}

#[test]
fn a_3_gb_secret_is_a_clear_error_not_an_allocation_abort() {
    let case = Case::vpc("huge", None);
    const GB3: u64 = 3 * 1024 * 1024 * 1024;
    let json = sparse(
        case.dir(),
        "huge.json",
        "{\"kind\":\"Secret\",\"data\":{\"slclient.toml\":\"",
        GB3,
    );
    diff_of(&case, &json)
        .code(2)
        .stderr_has("huge.json: the document is larger than the limit of 64 MiB");
    let list = sparse(
        case.dir(),
        "huge-list.json",
        "{\"kind\":\"List\",\"items\":[{\"kind\":\"Secret\",\"data\":{\"slclient.toml\":\"",
        GB3,
    );
    diff_of(&case, &list)
        .code(2)
        .stderr_has("huge-list.json: items[0] is larger than the limit of 64 MiB");
    let yaml = sparse(case.dir(), "huge.yaml", "kind: Secret\ndata:\n  slclient.toml: ", GB3);
    diff_of(&case, &yaml)
        .code(2)
        .stderr_has("huge.yaml: YAML input larger than the limit of 128 MiB");
}

#[test]
fn an_endless_secret_on_stdin_is_cut_at_the_limit() {
    let case = Case::vpc("endless", None);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["storage", "diff", "--secret", "-", "--truth"])
        .arg(&case.truth)
        .arg("--decryption-key-file")
        .arg(&case.key_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(b"{\"kind\":\"Secret\",\"data\":{\"slclient.toml\":\"");
        let chunk = vec![b'A'; 1 << 20];
        // Up to 3 GB, until rekey stops reading.
        for _ in 0..3072 {
            if stdin.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stdin: the document is larger than the limit of 64 MiB"),
        "{stderr}"
    );
    assert!(writer.join().unwrap(), "rekey stopped reading long before 3 GB");
}

#[test]
fn an_oversized_slclient_toml_is_refused() {
    let mut case = Case::vpc("bigtoml", None);
    let big = format!("[Bluemix]\n{}", "# filler line\n".repeat(100_000));
    case.set_toml(&big);
    diff_of(&case, &case.secret.clone())
        .code(2)
        .stderr_has("cluster c1: field `data.slclient.toml` is larger than the limit of 1 MiB");
}
