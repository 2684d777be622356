//! The `kube-system/sdnlb-config` Secret of a VPC cluster: its
//! `data["sdnlb.toml"]` holds `[SDNLB] service_apikey`, an API key the VPC
//! load balancer service uses, which must be the cluster's IAM key too.

use crate::storage::kube::{self, RawSecret};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// The Secret's name and namespace.
pub const SECRET_NAME: &str = "sdnlb-config";
/// The data key holding the TOML file.
pub const DATA_KEY: &str = "sdnlb.toml";
/// The largest Secret file read (the real one is under 2 KB).
pub const MAX_FILE: usize = 1024 * 1024;

/// What rekey needs from `sdnlb.toml`.
pub struct Sdnlb {
    /// `[SDNLB] service_apikey` (empty: not set).
    pub service_apikey: Zeroizing<String>,
    /// `[SDNLB] encryption`, when present.
    pub encryption: Option<bool>,
}

impl std::fmt::Debug for Sdnlb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sdnlb")
            .field("service_apikey_set", &!self.service_apikey.is_empty())
            .field("encryption", &self.encryption)
            .finish()
    }
}

/// Why an sdnlb-config Secret is not usable. Never quotes a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdnlbError {
    #[error("larger than the limit of 1 MiB")]
    TooLarge,
    #[error(transparent)]
    Secret(#[from] kube::SecretError),
    #[error("field `metadata.name` is {0:?}, expected \"sdnlb-config\"")]
    WrongName(String),
    #[error("field `metadata.namespace` is {0:?}, expected \"kube-system\"")]
    WrongNamespace(String),
    #[error("field `data.sdnlb.toml` is missing")]
    NoData,
    #[error("field `data.sdnlb.toml` is not valid base64")]
    Base64,
    #[error("sdnlb.toml does not parse as TOML: {0}")]
    Toml(String),
    #[error("sdnlb.toml: field `{0}` has the wrong type")]
    WrongType(&'static str),
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(rename = "SDNLB")]
    sdnlb: Option<Section>,
}

#[derive(serde::Deserialize)]
struct Section {
    service_apikey: Option<toml::Value>,
    encryption: Option<toml::Value>,
}

/// Parses the Secret as `kubectl get secret sdnlb-config -n kube-system -o json` (or `-o yaml`) prints it.
pub fn parse(bytes: &[u8]) -> Result<Sdnlb, SdnlbError> {
    if bytes.len() > MAX_FILE {
        return Err(SdnlbError::TooLarge);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let raw: RawSecret = match first {
        None => return Err(kube::SecretError::Empty.into()),
        Some(b'{') => {
            serde_json::from_slice(bytes).map_err(|e| kube::SecretError::Syntax(kube::scrub(&e.to_string())))?
        }
        Some(_) => {
            kube::check_yaml_depth(bytes)?;
            serde_yaml_ng::from_slice(bytes).map_err(|e| kube::SecretError::Syntax(kube::scrub(&e.to_string())))?
        }
    };
    match raw.kind.as_deref() {
        Some("Secret") => {}
        Some(other) => return Err(kube::SecretError::WrongKind(other.to_owned()).into()),
        None => return Err(kube::SecretError::NoKind.into()),
    }
    let name = raw.metadata.name.as_deref().unwrap_or("");
    if name != SECRET_NAME {
        return Err(SdnlbError::WrongName(name.to_owned()));
    }
    if let Some(ns) = raw.metadata.namespace.as_deref()
        && ns != kube::NAMESPACE
    {
        return Err(SdnlbError::WrongNamespace(ns.to_owned()));
    }
    let data = Zeroizing::new(
        raw.data
            .and_then(|mut d| d.remove(DATA_KEY))
            .ok_or(SdnlbError::NoData)?,
    );
    let text = Zeroizing::new(STANDARD.decode(data.trim()).map_err(|_| SdnlbError::Base64)?);
    let text = std::str::from_utf8(&text).map_err(|_| SdnlbError::Toml("not UTF-8".to_owned()))?;
    let file: File = toml::from_str(text).map_err(|e| SdnlbError::Toml(e.message().to_owned()))?;
    let section = file.sdnlb;
    let service_apikey = match section.as_ref().and_then(|s| s.service_apikey.as_ref()) {
        None => Zeroizing::new(String::new()),
        Some(toml::Value::String(v)) => Zeroizing::new(v.clone()),
        Some(_) => return Err(SdnlbError::WrongType("SDNLB.service_apikey")),
    };
    let encryption = match section.as_ref().and_then(|s| s.encryption.as_ref()) {
        None => None,
        Some(toml::Value::Boolean(b)) => Some(*b),
        Some(_) => return Err(SdnlbError::WrongType("SDNLB.encryption")),
    };
    Ok(Sdnlb {
        service_apikey,
        encryption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(toml: &str) -> String {
        format!(
            r#"{{"kind":"Secret","metadata":{{"name":"sdnlb-config","namespace":"kube-system"}},"data":{{"sdnlb.toml":"{}"}}}}"#,
            STANDARD.encode(toml)
        )
    }

    #[test]
    fn reads_the_service_apikey() {
        let s = parse(secret("[SDNLB]\ncluster_crn = \"crn:v1\"\nservice_apikey = \"K\"\n").as_bytes()).unwrap();
        assert_eq!(s.service_apikey.as_str(), "K");
        assert_eq!(s.encryption, None);
        let s = parse(secret("[SDNLB]\nservice_apikey = \"K\"\nencryption = true\n").as_bytes()).unwrap();
        assert_eq!(s.encryption, Some(true));
    }

    #[test]
    fn errors_name_the_field_and_never_the_value() {
        let e = parse(secret("[SDNLB]\nservice_apikey = 5\n").as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sdnlb.toml: field `SDNLB.service_apikey` has the wrong type"
        );
        let e = parse(secret("[SDNLB\nservice_apikey = \"SECRETVALUE\"").as_bytes()).unwrap_err();
        assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
        let other = secret("").replace("sdnlb-config", "storage-secret-store");
        assert_eq!(
            parse(other.as_bytes()).unwrap_err().to_string(),
            "field `metadata.name` is \"storage-secret-store\", expected \"sdnlb-config\""
        );
        assert_eq!(parse(b" ").unwrap_err().to_string(), "the input is empty");
    }
}
