//! Kubernetes `Secret` manifests that carry a dockerconfigjson, written as
//! kubectl writes them and read back from JSON or YAML.

use crate::pullsecret::gojson::push_string;
use crate::untrusted;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The Secret type of a pull secret.
pub const DOCKERCONFIGJSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The data key that holds the dockerconfigjson.
pub const DOCKERCONFIGJSON_KEY: &str = ".dockerconfigjson";

/// Checks a Kubernetes object name (a DNS-1123 subdomain).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid Kubernetes name (lower-case DNS subdomain)"
        ))
    }
}

/// Renders a pull Secret as JSON, laid out as `kubectl ... -o json` does.
pub fn render_json(name: &str, namespace: Option<&str>, dockerconfigjson: &str) -> Zeroizing<String> {
    let data = Zeroizing::new(STANDARD.encode(dockerconfigjson.as_bytes()));
    let mut out = Zeroizing::new(String::new());
    out.push_str("{\n    \"kind\": \"Secret\",\n    \"apiVersion\": \"v1\",\n    \"metadata\": {\n        \"name\": ");
    push_string(&mut out, name);
    if let Some(ns) = namespace {
        out.push_str(",\n        \"namespace\": ");
        push_string(&mut out, ns);
    }
    out.push_str(",\n        \"creationTimestamp\": null\n    },\n    \"data\": {\n        \".dockerconfigjson\": \"");
    out.push_str(&data);
    out.push_str("\"\n    },\n    \"type\": \"kubernetes.io/dockerconfigjson\"\n}\n");
    out
}

/// Renders a pull Secret as YAML, laid out as `kubectl ... -o yaml` does.
pub fn render_yaml(name: &str, namespace: Option<&str>, dockerconfigjson: &str) -> Zeroizing<String> {
    let data = Zeroizing::new(STANDARD.encode(dockerconfigjson.as_bytes()));
    let mut out = Zeroizing::new(String::new());
    out.push_str("apiVersion: v1\ndata:\n  .dockerconfigjson: ");
    out.push_str(&data);
    out.push_str("\nkind: Secret\nmetadata:\n  creationTimestamp: null\n  name: ");
    out.push_str(name);
    out.push('\n');
    if let Some(ns) = namespace {
        out.push_str("  namespace: ");
        out.push_str(ns);
        out.push('\n');
    }
    out.push_str("type: kubernetes.io/dockerconfigjson\n");
    out
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    auths: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "stringData")]
    string_data: Option<BTreeMap<String, String>>,
}

/// Why a file holds no dockerconfigjson.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Syntax(String),
    #[error("neither a dockerconfigjson (no `auths`) nor a Kubernetes Secret")]
    Unrecognized,
    #[error("field `type`: the Secret is of type `{0}`, not `kubernetes.io/dockerconfigjson`")]
    WrongType(String),
    #[error("field `data.{DOCKERCONFIGJSON_KEY}` is missing")]
    MissingData,
    #[error("field `data.{DOCKERCONFIGJSON_KEY}` is not valid base64")]
    Base64,
}

/// Extracts the dockerconfigjson bytes from a raw dockerconfigjson or a
/// Secret manifest in JSON or YAML.
pub fn extract_dockerconfigjson(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let doc: Document = if first == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| ReadError::Syntax(untrusted::json_error(&e)))?
    } else {
        untrusted::check_depth(bytes, untrusted::MAX_DEPTH).map_err(|e| ReadError::Syntax(e.to_string()))?;
        serde_yaml_ng::from_slice(bytes).map_err(|e| ReadError::Syntax(untrusted::yaml_error(&e)))?
    };
    if doc.auths.is_some() {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    if doc.kind.as_deref() != Some("Secret") {
        return Err(ReadError::Unrecognized);
    }
    let ty = doc.ty.unwrap_or_else(|| "Opaque".to_owned());
    if ty != DOCKERCONFIGJSON_TYPE {
        return Err(ReadError::WrongType(ty));
    }
    if let Some(value) = doc.data.as_ref().and_then(|d| d.get(DOCKERCONFIGJSON_KEY)) {
        let value = Zeroizing::new(value.clone());
        return STANDARD
            .decode(value.trim())
            .map(Zeroizing::new)
            .map_err(|_| ReadError::Base64);
    }
    if let Some(value) = doc.string_data.as_ref().and_then(|d| d.get(DOCKERCONFIGJSON_KEY)) {
        return Ok(Zeroizing::new(value.as_bytes().to_vec()));
    }
    Err(ReadError::MissingData)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_layouts() {
        let dcj = r#"{"auths":{"a.io":{"auth":"dTpw"}}}"#;
        for text in [render_json("s", Some("ns"), dcj), render_yaml("s", None, dcj)] {
            let got = extract_dockerconfigjson(text.as_bytes()).unwrap();
            assert_eq!(got.as_slice(), dcj.as_bytes());
        }
        assert_eq!(
            extract_dockerconfigjson(dcj.as_bytes()).unwrap().as_slice(),
            dcj.as_bytes()
        );
    }

    #[test]
    fn rejects_other_documents() {
        let opaque = "kind: Secret\ntype: Opaque\ndata: {}\n";
        assert!(matches!(extract_dockerconfigjson(opaque.as_bytes()), Err(ReadError::WrongType(t)) if t == "Opaque"));
        assert!(matches!(
            extract_dockerconfigjson(b"kind: ConfigMap\n"),
            Err(ReadError::Unrecognized)
        ));
        assert!(matches!(
            extract_dockerconfigjson(b"{\"auths\": "),
            Err(ReadError::Syntax(_))
        ));
        let bad = "kind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: '%%'\n";
        assert!(matches!(
            extract_dockerconfigjson(bad.as_bytes()),
            Err(ReadError::Base64)
        ));
        assert!(validate_name("all-icr-io").is_ok());
        assert!(validate_name("All").is_err());
    }
}
