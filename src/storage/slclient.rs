//! `slclient.toml`, the file inside a cluster's `storage-secret-store`
//! secret: which field holds the cluster's IAM key, whether it is
//! encrypted, and what the file tells about the cluster's scope.
//!
//! Sections and fields may be missing and unknown fields occur; a known
//! field of the wrong type is an error that names the field.

use zeroize::Zeroizing;

/// The field that carries a cluster's IAM API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum KeyField {
    /// `[Bluemix] iam_api_key` (classic clusters).
    #[serde(rename = "Bluemix.iam_api_key")]
    Bluemix,
    /// `[VPC] g2_api_key` (VPC clusters).
    #[serde(rename = "VPC.g2_api_key")]
    Vpc,
}

impl KeyField {
    /// Returns `Section.field`.
    pub fn name(self) -> &'static str {
        match self {
            KeyField::Bluemix => "Bluemix.iam_api_key",
            KeyField::Vpc => "VPC.g2_api_key",
        }
    }

    /// Returns the other key field.
    pub fn other(self) -> KeyField {
        match self {
            KeyField::Bluemix => KeyField::Vpc,
            KeyField::Vpc => KeyField::Bluemix,
        }
    }

    /// Returns the field as written in the file: `[VPC] g2_api_key`.
    pub fn shown(self) -> &'static str {
        match self {
            KeyField::Bluemix => "[Bluemix] iam_api_key",
            KeyField::Vpc => "[VPC] g2_api_key",
        }
    }

    fn section(self) -> &'static str {
        match self {
            KeyField::Bluemix => "Bluemix",
            KeyField::Vpc => "VPC",
        }
    }
}

/// A cluster's infrastructure provider, which decides its key field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Classic infrastructure: the key is `[Bluemix] iam_api_key`.
    Classic,
    /// VPC infrastructure: the key is `[VPC] g2_api_key`.
    Vpc,
}

impl Provider {
    /// Returns the provider a name stands for (`classic`; `vpc`, `g2`,
    /// `gc`, `vpc-gen2`, `vpc-classic`), case-insensitively.
    pub fn from_name(name: &str) -> Option<Provider> {
        match name.trim().to_ascii_lowercase().as_str() {
            "classic" => Some(Provider::Classic),
            "vpc" | "g2" | "gc" | "vpc-gen2" | "vpc-classic" | "vpc_gen2" => Some(Provider::Vpc),
            _ => None,
        }
    }

    /// Returns the field that carries this provider's key.
    pub fn field(self) -> KeyField {
        match self {
            Provider::Classic => KeyField::Bluemix,
            Provider::Vpc => KeyField::Vpc,
        }
    }

    /// Returns `classic` or `vpc`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Classic => "classic",
            Provider::Vpc => "vpc",
        }
    }
}

/// Why `slclient.toml` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("slclient.toml is not valid UTF-8")]
    NotUtf8,
    #[error("slclient.toml does not parse as TOML: {0}")]
    Syntax(String),
    #[error("slclient.toml: `{0}` is not a table")]
    NotATable(String),
    #[error("slclient.toml: field `{field}` has type {found}, expected {expected}")]
    WrongType {
        field: String,
        found: &'static str,
        expected: &'static str,
    },
}

/// What rekey needs from `slclient.toml`.
pub struct SlClient {
    /// The decoded file, kept for the redacted diff.
    pub text: Zeroizing<String>,
    /// The field that holds the key when the provider is not known (the VPC
    /// one when both are set), and its value (encrypted or plain).
    pub key: Option<(KeyField, Zeroizing<String>)>,
    /// The `encryption` flag of the key's section (missing means false).
    pub encrypted: bool,
    /// `[VPC] g2_api_key` (non-empty) and `[VPC] encryption`.
    pub vpc_key: Option<(Zeroizing<String>, bool)>,
    /// `[Bluemix] iam_api_key` (non-empty) and `[Bluemix] encryption`.
    pub bluemix_key: Option<(Zeroizing<String>, bool)>,
    /// `[VPC] provider_type` (non-empty), e.g. `g2`.
    pub provider_type: Option<String>,
    /// `[Softlayer] softlayer_api_key` is set (non-empty).
    pub softlayer_key_set: bool,
    /// `[VPC] g2_resource_group_id`.
    pub resource_group: Option<String>,
    /// The region, from the first label of `[Bluemix] containers_api_route`
    /// or `[VPC] g2_riaas_endpoint_url` (a leading `private.` skipped).
    pub region: Option<String>,
}

impl std::fmt::Debug for SlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlClient")
            .field("key_field", &self.key.as_ref().map(|(k, _)| k.name()))
            .field("encrypted", &self.encrypted)
            .field("provider_type", &self.provider_type)
            .field("vpc_key_set", &self.vpc_key.as_ref().map(|(_, e)| e))
            .field("bluemix_key_set", &self.bluemix_key.as_ref().map(|(_, e)| e))
            .field("resource_group", &self.resource_group)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "string",
        toml::Value::Integer(_) => "integer",
        toml::Value::Float(_) => "float",
        toml::Value::Boolean(_) => "boolean",
        toml::Value::Datetime(_) => "datetime",
        toml::Value::Array(_) => "array",
        toml::Value::Table(_) => "table",
    }
}

fn section<'a>(table: &'a toml::Table, name: &str) -> Result<Option<&'a toml::Table>, ParseError> {
    match table.get(name) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(ParseError::NotATable(name.to_owned())),
    }
}

fn get_str<'a>(table: &'a toml::Table, sec: &str, field: &str) -> Result<Option<&'a str>, ParseError> {
    let Some(s) = section(table, sec)? else { return Ok(None) };
    match s.get(field) {
        None => Ok(None),
        Some(toml::Value::String(v)) => Ok(Some(v)),
        Some(other) => Err(ParseError::WrongType {
            field: format!("{sec}.{field}"),
            found: type_name(other),
            expected: "string",
        }),
    }
}

fn get_bool(table: &toml::Table, sec: &str, field: &str) -> Result<Option<bool>, ParseError> {
    let Some(s) = section(table, sec)? else { return Ok(None) };
    match s.get(field) {
        None => Ok(None),
        Some(toml::Value::Boolean(v)) => Ok(Some(*v)),
        Some(other) => Err(ParseError::WrongType {
            field: format!("{sec}.{field}"),
            found: type_name(other),
            expected: "boolean",
        }),
    }
}

/// Returns the region named by an endpoint URL such as
/// `https://us-south.containers.cloud.ibm.com` or
/// `https://private.eu-de.iaas.cloud.ibm.com`.
pub fn region_of_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    let mut first = labels.next()?;
    if first == "private" || first == "direct" {
        first = labels.next()?;
    }
    // A bare host (`localhost`) or one without a region label tells nothing.
    labels.next()?;
    let ok = !first.is_empty()
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| first.to_owned())
}

/// The fields rekey reads, for the fast path (unknown fields are skipped
/// without building values for them).
#[derive(serde::Deserialize)]
struct Fast {
    #[serde(rename = "Bluemix")]
    bluemix: Option<FastSection>,
    #[serde(rename = "Softlayer")]
    softlayer: Option<FastSection>,
    #[serde(rename = "VPC")]
    vpc: Option<FastSection>,
}

#[derive(serde::Deserialize)]
struct FastSection {
    iam_api_key: Option<String>,
    containers_api_route: Option<String>,
    softlayer_api_key: Option<String>,
    g2_riaas_endpoint_url: Option<String>,
    g2_resource_group_id: Option<String>,
    g2_api_key: Option<String>,
    provider_type: Option<String>,
    encryption: Option<bool>,
}

impl SlClient {
    /// Parses the decoded `slclient.toml`. A typed fast path reads only the
    /// known fields; when it fails, the generic parse names the field at fault.
    pub fn parse(bytes: &[u8]) -> Result<SlClient, ParseError> {
        let text = Zeroizing::new(std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8)?.to_owned());
        match toml::from_str::<Fast>(&text) {
            Ok(fast) => Ok(SlClient::from_fast(text, fast)),
            Err(_) => SlClient::parse_slow(text),
        }
    }

    fn from_fast(text: Zeroizing<String>, mut fast: Fast) -> SlClient {
        let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
        let g2 = fast.vpc.as_mut().and_then(|s| nonempty(s.g2_api_key.take()));
        let iam = fast.bluemix.as_mut().and_then(|s| nonempty(s.iam_api_key.take()));
        let vpc_encrypted = fast.vpc.as_ref().and_then(|s| s.encryption).unwrap_or(false);
        let bluemix_encrypted = fast.bluemix.as_ref().and_then(|s| s.encryption).unwrap_or(false);
        let vpc_key = g2.map(|v| (Zeroizing::new(v), vpc_encrypted));
        let bluemix_key = iam.map(|v| (Zeroizing::new(v), bluemix_encrypted));
        let (key, encrypted) = match (&vpc_key, &bluemix_key) {
            (Some((v, e)), _) => (Some((KeyField::Vpc, v.clone())), *e),
            (None, Some((v, e))) => (Some((KeyField::Bluemix, v.clone())), *e),
            (None, None) => (None, false),
        };
        let provider_type = fast.vpc.as_mut().and_then(|s| nonempty(s.provider_type.take()));
        let softlayer_key_set = fast
            .softlayer
            .as_ref()
            .and_then(|s| s.softlayer_api_key.as_deref())
            .is_some_and(|v| !v.is_empty());
        let resource_group = fast.vpc.as_mut().and_then(|s| nonempty(s.g2_resource_group_id.take()));
        let route = fast.bluemix.as_ref().and_then(|s| s.containers_api_route.as_deref());
        let riaas = fast.vpc.as_ref().and_then(|s| s.g2_riaas_endpoint_url.as_deref());
        let region = route.and_then(region_of_url).or_else(|| riaas.and_then(region_of_url));
        SlClient {
            text,
            key,
            encrypted,
            vpc_key,
            bluemix_key,
            provider_type,
            softlayer_key_set,
            resource_group,
            region,
        }
    }

    fn parse_slow(text: Zeroizing<String>) -> Result<SlClient, ParseError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // The message quotes the offending line, which may hold a key: keep only the reason.
            ParseError::Syntax(e.message().to_owned())
        })?;
        let g2 = get_str(&table, "VPC", "g2_api_key")?.filter(|v| !v.is_empty());
        let iam = get_str(&table, "Bluemix", "iam_api_key")?.filter(|v| !v.is_empty());
        let vpc_encrypted = get_bool(&table, KeyField::Vpc.section(), "encryption")?.unwrap_or(false);
        let bluemix_encrypted = get_bool(&table, KeyField::Bluemix.section(), "encryption")?.unwrap_or(false);
        let vpc_key = g2.map(|v| (Zeroizing::new(v.to_owned()), vpc_encrypted));
        let bluemix_key = iam.map(|v| (Zeroizing::new(v.to_owned()), bluemix_encrypted));
        let (key, encrypted) = match (&vpc_key, &bluemix_key) {
            (Some((v, e)), _) => (Some((KeyField::Vpc, v.clone())), *e),
            (None, Some((v, e))) => (Some((KeyField::Bluemix, v.clone())), *e),
            (None, None) => (None, false),
        };
        let provider_type = get_str(&table, "VPC", "provider_type")?
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let softlayer_key_set = get_str(&table, "Softlayer", "softlayer_api_key")?.is_some_and(|v| !v.is_empty());
        let resource_group = get_str(&table, "VPC", "g2_resource_group_id")?
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let route = get_str(&table, "Bluemix", "containers_api_route")?;
        let riaas = get_str(&table, "VPC", "g2_riaas_endpoint_url")?;
        let region = route.and_then(region_of_url).or_else(|| riaas.and_then(region_of_url));
        // The other known fields are type-checked too, as the fast path does.
        for (sec, field) in [
            ("Bluemix", "encryption"),
            ("Softlayer", "encryption"),
            ("VPC", "encryption"),
        ] {
            get_bool(&table, sec, field)?;
        }
        Ok(SlClient {
            text,
            key,
            encrypted,
            vpc_key,
            bluemix_key,
            provider_type,
            softlayer_key_set,
            resource_group,
            region,
        })
    }

    /// Returns the value of `field` (if set) and its section's `encryption` flag.
    pub fn field(&self, field: KeyField) -> Option<(&Zeroizing<String>, bool)> {
        match field {
            KeyField::Vpc => self.vpc_key.as_ref(),
            KeyField::Bluemix => self.bluemix_key.as_ref(),
        }
        .map(|(v, e)| (v, *e))
    }

    /// Returns the file parsed as a generic table (for rendering diffs).
    pub fn table(&self) -> Option<toml::Table> {
        self.text.parse().ok()
    }
}

/// Returns the string value of `Section.field` in `table`, if it is a string.
pub fn value<'a>(table: &'a toml::Table, section: &str, field: &str) -> Option<&'a str> {
    get_str(table, section, field).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VPC: &str = r#"
[Bluemix]
  iam_api_key = ""
  containers_api_route = "https://us-south.containers.cloud.ibm.com"
  encryption = true
  unknown_field = 3
[Softlayer]
  softlayer_api_key = ""
[VPC]
  g2_riaas_endpoint_url = "https://private.eu-de.iaas.cloud.ibm.com"
  g2_resource_group_id = "rg1"
  g2_api_key = "ENC"
  encryption = true
"#;

    #[test]
    fn finds_the_vpc_key_and_scope() {
        let c = SlClient::parse(VPC.as_bytes()).unwrap();
        let (field, value) = c.key.as_ref().unwrap();
        assert_eq!(*field, KeyField::Vpc);
        assert_eq!(value.as_str(), "ENC");
        assert!(c.encrypted);
        assert!(!c.softlayer_key_set);
        assert_eq!(c.resource_group.as_deref(), Some("rg1"));
        assert_eq!(c.region.as_deref(), Some("us-south"));
    }

    #[test]
    fn classic_key_and_missing_sections() {
        let c = SlClient::parse(b"[Bluemix]\niam_api_key = \"k\"\n[Softlayer]\nsoftlayer_api_key = \"x\"\n").unwrap();
        assert_eq!(c.key.as_ref().unwrap().0, KeyField::Bluemix);
        assert!(!c.encrypted, "a missing encryption flag means plain");
        assert!(c.softlayer_key_set);
        assert_eq!(c.region, None);
        let c = SlClient::parse(b"").unwrap();
        assert!(c.key.is_none());
    }

    #[test]
    fn wrong_types_and_syntax_name_the_field() {
        let e = SlClient::parse(b"[VPC]\ng2_api_key = 5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "slclient.toml: field `VPC.g2_api_key` has type integer, expected string"
        );
        let e = SlClient::parse(b"[VPC]\ng2_api_key = \"x\"\nencryption = \"yes\"\n").unwrap_err();
        assert!(e.to_string().contains("VPC.encryption"), "{e}");
        let e = SlClient::parse(b"VPC = 1\n").unwrap_err();
        assert_eq!(e, ParseError::NotATable("VPC".into()));
        let e = SlClient::parse(b"[VPC\ng2_api_key = \"SECRETVALUE\"").unwrap_err();
        assert!(matches!(e, ParseError::Syntax(_)));
        assert!(!e.to_string().contains("SECRETVALUE"));
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        for text in [VPC, "[Bluemix]\niam_api_key = \"k\"\nencryption = true\n", ""] {
            let fast = SlClient::parse(text.as_bytes()).unwrap();
            let slow = SlClient::parse_slow(Zeroizing::new(text.to_owned())).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
            assert_eq!(
                fast.key.as_ref().map(|k| k.1.clone()),
                slow.key.as_ref().map(|k| k.1.clone())
            );
            assert_eq!(fast.softlayer_key_set, slow.softlayer_key_set);
        }
    }

    #[test]
    fn providers_and_both_key_fields_are_read() {
        assert_eq!(Provider::from_name("G2"), Some(Provider::Vpc));
        assert_eq!(Provider::from_name("classic"), Some(Provider::Classic));
        assert_eq!(Provider::from_name(""), None);
        let c = SlClient::parse(VPC.replace("iam_api_key = \"\"", "iam_api_key = \"B\"").as_bytes()).unwrap();
        assert_eq!(
            c.field(KeyField::Bluemix).map(|(v, e)| (v.as_str(), e)),
            Some(("B", true))
        );
        assert_eq!(
            c.field(KeyField::Vpc).map(|(v, e)| (v.as_str(), e)),
            Some(("ENC", true))
        );
        assert_eq!(c.provider_type, None);
        let c = SlClient::parse(b"[VPC]\nprovider_type = \"g2\"\n").unwrap();
        assert_eq!(c.provider_type.as_deref(), Some("g2"));
        let slow = SlClient::parse_slow(Zeroizing::new("[VPC]\nprovider_type = \"g2\"\nx = 1\n".into())).unwrap();
        assert_eq!(slow.provider_type.as_deref(), Some("g2"));
    }

    #[test]
    fn regions_from_urls() {
        assert_eq!(
            region_of_url("https://jp-tok.containers.cloud.ibm.com/x").as_deref(),
            Some("jp-tok")
        );
        assert_eq!(region_of_url("https://localhost:8080"), None);
        assert_eq!(region_of_url("https://Bad.example.com"), None);
    }
}
