//! Source-of-truth records: per account, resource group and region, the
//! IAM API key every cluster there must carry. Read from JSON (one object,
//! an array, or NDJSON) exported from the control plane, or from etcd.

use crate::secret::ApiKey;
use serde_json::Value;
use std::collections::HashMap;

/// Which account, resource group and region a cluster or record belongs to.
/// A `None` part is unknown (it matches any record).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Scope {
    pub account: Option<String>,
    pub resource_group: Option<String>,
    pub region: Option<String>,
}

impl Scope {
    /// Describes the known parts, e.g. `resource group rg1, region us-south`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.account {
            parts.push(format!("account {a}"));
        }
        if let Some(g) = &self.resource_group {
            parts.push(format!("resource group {g}"));
        }
        if let Some(r) = &self.region {
            parts.push(format!("region {r}"));
        }
        if parts.is_empty() {
            "no account, resource group or region known".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// One source-of-truth record.
#[derive(Debug)]
pub struct Record {
    /// Where it came from (`truth.json record 3`, `etcd key /x/y`).
    pub origin: String,
    pub account: String,
    pub resource_group: String,
    pub region: String,
    /// `IAMAPIKey` (`None` when null or empty).
    pub iam_api_key: Option<ApiKey>,
    /// `SLAPIKey` is set (non-empty): a classic infrastructure key.
    pub sl_api_key_set: bool,
}

/// Why records are not usable. Never carries a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TruthError {
    #[error("{origin}: no records")]
    Empty { origin: String },
    #[error("{origin}: not JSON: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: expected a JSON object, found {found}")]
    NotObject { origin: String, found: &'static str },
    #[error("{origin}: field `{field}` is missing or null")]
    Missing { origin: String, field: &'static str },
    #[error("{origin}: field `{field}` is {found}, expected a string or null")]
    WrongType {
        origin: String,
        field: &'static str,
        found: &'static str,
    },
    #[error("{origin}: field `IAMAPIKey` is not usable: {reason}")]
    BadKey { origin: String, reason: String },
    #[error("{second} has the same account, resource group and region as {first} ({scope})")]
    Duplicate {
        first: String,
        second: String,
        scope: String,
    },
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one record from a JSON value.
pub fn parse_record(value: Value, origin: String) -> Result<Record, TruthError> {
    let Value::Object(map) = value else {
        return Err(TruthError::NotObject {
            found: kind(&value),
            origin,
        });
    };
    let string = |field: &'static str| -> Result<Option<&str>, TruthError> {
        match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(TruthError::WrongType {
                origin: origin.clone(),
                field,
                found: kind(other),
            }),
        }
    };
    let required = |field: &'static str| -> Result<String, TruthError> {
        string(field)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| TruthError::Missing {
                origin: origin.clone(),
                field,
            })
    };
    // Type-check the documented fields even when unused, so a broken export is caught.
    for f in ["Name", "SLUser", "RefreshToken", "IAMAPIKeyUUID", "Clusters"] {
        if let Some(v) = map.get(f)
            && !matches!(v, Value::Null | Value::String(_))
        {
            return Err(TruthError::WrongType {
                origin: origin.clone(),
                field: f,
                found: kind(v),
            });
        }
    }
    let account = required("AccountID")?;
    let resource_group = required("ResourceGroupID")?;
    let region = required("Region")?;
    let iam_api_key = match string("IAMAPIKey")?.filter(|s| !s.is_empty()) {
        Some(k) => Some(ApiKey::from_str_checked(k).map_err(|e| TruthError::BadKey {
            origin: origin.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let sl_api_key_set = string("SLAPIKey")?.is_some_and(|s| !s.is_empty());
    Ok(Record {
        origin,
        account,
        resource_group,
        region,
        iam_api_key,
        sl_api_key_set,
    })
}

/// Parses a JSON object, an array of objects, or NDJSON. `source` names the
/// file in messages.
pub fn parse_records(bytes: &[u8], source: &str) -> Result<Vec<Record>, TruthError> {
    let syntax = |e: serde_json::Error| TruthError::Syntax {
        origin: source.to_owned(),
        message: e.to_string(),
    };
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    for v in &mut stream {
        match v.map_err(syntax)? {
            Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    }
    if values.is_empty() {
        return Err(TruthError::Empty {
            origin: source.to_owned(),
        });
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_record(v, format!("{source} record {}", i + 1)))
        .collect()
}

/// Records indexed for lookup by any combination of known scope parts.
pub struct TruthIndex {
    records: Vec<Record>,
    by_scope: HashMap<String, Vec<u32>>,
}

/// The result of looking up a cluster's scope.
pub enum Lookup<'a> {
    Found(&'a Record),
    None,
    Ambiguous(usize),
}

fn key(mask: u8, account: &str, rg: &str, region: &str) -> String {
    fn pick(mask: u8, bit: u8, v: &str) -> &str {
        if mask & bit != 0 { v } else { "\u{1}" }
    }
    format!(
        "{mask}\0{}\0{}\0{}",
        pick(mask, 1, account),
        pick(mask, 2, rg),
        pick(mask, 4, region)
    )
}

impl TruthIndex {
    /// Builds the index; two records for the same scope are an error.
    pub fn new(records: Vec<Record>) -> Result<TruthIndex, TruthError> {
        let mut by_scope: HashMap<String, Vec<u32>> = HashMap::with_capacity(records.len() * 8);
        for (i, r) in records.iter().enumerate() {
            for mask in 0..8u8 {
                let list = by_scope
                    .entry(key(mask, &r.account, &r.resource_group, &r.region))
                    .or_default();
                if mask == 7
                    && let Some(&first) = list.first()
                {
                    return Err(TruthError::Duplicate {
                        first: records[first as usize].origin.clone(),
                        second: r.origin.clone(),
                        scope: format!(
                            "account {}, resource group {}, region {}",
                            r.account, r.resource_group, r.region
                        ),
                    });
                }
                list.push(i as u32);
            }
        }
        Ok(TruthIndex { records, by_scope })
    }

    /// Returns the number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Returns true when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Finds the one record whose scope agrees with every known part of `scope`.
    pub fn lookup(&self, scope: &Scope) -> Lookup<'_> {
        let mut mask = 0;
        for (bit, part) in [(1, &scope.account), (2, &scope.resource_group), (4, &scope.region)] {
            if part.is_some() {
                mask |= bit;
            }
        }
        let k = key(
            mask,
            scope.account.as_deref().unwrap_or(""),
            scope.resource_group.as_deref().unwrap_or(""),
            scope.region.as_deref().unwrap_or(""),
        );
        match self.by_scope.get(&k).map(Vec::as_slice) {
            None | Some([]) => Lookup::None,
            Some([one]) => Lookup::Found(&self.records[*one as usize]),
            Some(many) => Lookup::Ambiguous(many.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(a: &str, g: &str, r: &str, key: &str) -> String {
        format!(
            r#"{{"Region":"{r}","AccountID":"{a}","ResourceGroupID":"{g}","IAMAPIKey":"{key}","SLAPIKey":null,"Extra":1}}"#
        )
    }

    #[test]
    fn reads_object_array_and_ndjson() {
        let one = rec("a", "g", "us-south", "k1");
        assert_eq!(parse_records(one.as_bytes(), "t").unwrap().len(), 1);
        let arr = format!("[{one},{}]", rec("a", "g2", "us-south", "k2"));
        assert_eq!(parse_records(arr.as_bytes(), "t").unwrap().len(), 2);
        let nd = format!("{one}\n{}\n", rec("b", "g", "eu-de", "k3"));
        assert_eq!(parse_records(nd.as_bytes(), "t").unwrap().len(), 2);
    }

    #[test]
    fn rejects_wrong_types_missing_fields_and_empty_input() {
        let e = parse_records(br#"{"Region":5,"AccountID":"a","ResourceGroupID":"g"}"#, "t.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.json record 1: field `Region` is a number, expected a string or null"
        );
        let e = parse_records(br#"{"Region":"r","AccountID":"a"}"#, "t.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.json record 1: field `ResourceGroupID` is missing or null"
        );
        let e = parse_records(
            br#"[{"Region":"r","AccountID":"a","ResourceGroupID":"g","IAMAPIKey":["x"]}]"#,
            "t",
        )
        .unwrap_err();
        assert!(matches!(e, TruthError::WrongType { field: "IAMAPIKey", .. }));
        assert!(matches!(
            parse_records(b"  ", "t").unwrap_err(),
            TruthError::Empty { .. }
        ));
        assert!(matches!(
            parse_records(b"[]", "t").unwrap_err(),
            TruthError::Empty { .. }
        ));
        assert!(matches!(
            parse_records(b"[1]", "t").unwrap_err(),
            TruthError::NotObject { .. }
        ));
        let e = parse_records(
            br#"{"Region":"r","AccountID":"a","ResourceGroupID":"g","IAMAPIKey":"has space"}"#,
            "t",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("has space"));
    }

    #[test]
    fn duplicates_are_rejected_with_both_origins() {
        let arr = format!("[{},{}]", rec("a", "g", "r", "k1"), rec("a", "g", "r", "k2"));
        let recs = parse_records(arr.as_bytes(), "t").unwrap();
        let e = TruthIndex::new(recs).err().unwrap();
        assert_eq!(
            e.to_string(),
            "t record 2 has the same account, resource group and region as t record 1 (account a, resource group g, region r)"
        );
    }

    #[test]
    fn lookup_by_known_parts() {
        let arr = format!("[{},{}]", rec("a", "g1", "r", "k1"), rec("a", "g2", "r", "k2"));
        let idx = TruthIndex::new(parse_records(arr.as_bytes(), "t").unwrap()).unwrap();
        let scope = |g: Option<&str>| Scope {
            account: None,
            resource_group: g.map(Into::into),
            region: Some("r".into()),
        };
        assert!(matches!(idx.lookup(&scope(Some("g2"))), Lookup::Found(r) if r.resource_group == "g2"));
        assert!(matches!(idx.lookup(&scope(None)), Lookup::Ambiguous(2)));
        assert!(matches!(idx.lookup(&scope(Some("g3"))), Lookup::None));
    }
}
