//! Building and checking `kubernetes.io/dockerconfigjson` pull secrets.
//!
//! [`render`] writes the JSON byte for byte as kubectl does (Go's
//! `json.Marshal`); [`parse`] and [`check`] read one back and find every
//! inconsistency an operator would otherwise find by hand.

use crate::fingerprint::Fingerprint;
use crate::pullsecret::catalog::Region;
use crate::pullsecret::gojson::push_string;
use crate::pullsecret::host::Host;
use crate::secret::ApiKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Renders the dockerconfigjson for `hosts`, all carrying `key`.
///
/// The result matches kubectl's `.dockerconfigjson`: compact, hosts sorted by
/// bytes, fields in the order username, password, email, auth, empty fields
/// omitted, Go's string escaping.
pub fn render(hosts: &[Host], username: &str, key: &ApiKey, email: Option<&str>) -> Zeroizing<String> {
    let mut sorted: Vec<&Host> = hosts.iter().collect();
    sorted.sort_by(|a, b| a.as_str().as_bytes().cmp(b.as_str().as_bytes()));
    sorted.dedup();
    let auth = {
        let userpass = Zeroizing::new(format!("{username}:{}", key.expose_secret()));
        Zeroizing::new(STANDARD.encode(userpass.as_bytes()))
    };
    let mut out = Zeroizing::new(String::with_capacity(
        64 + sorted.len() * (96 + 3 * key.expose_secret().len()),
    ));
    out.push_str("{\"auths\":{");
    for (i, host) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(&mut out, host.as_str());
        out.push_str(":{");
        let mut first = true;
        let mut field = |out: &mut String, name: &str, value: &str| {
            if value.is_empty() {
                return;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_string(out, name);
            out.push(':');
            push_string(out, value);
        };
        field(&mut out, "username", username);
        field(&mut out, "password", key.expose_secret());
        field(&mut out, "email", email.unwrap_or(""));
        field(&mut out, "auth", &auth);
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// One host's entry as read from a dockerconfigjson.
#[derive(Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub auth: Option<SecretString>,
}

/// Why an entry gives no credential to authenticate with. Names fields,
/// never values (they are keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("has neither username and password nor auth")]
    Missing,
    #[error("has an `auth` that is not valid base64")]
    AuthBase64,
    #[error("has an `auth` that is not UTF-8")]
    AuthUtf8,
    #[error("has an `auth` that does not decode to username:password")]
    AuthShape,
    #[error("has an `auth` carrying another key than its `password` (Docker and containerd use `auth`)")]
    PasswordDisagrees,
    #[error("has an `auth` naming another user than its `username` (Docker and containerd use `auth`)")]
    UsernameDisagrees,
    #[error("has an empty password")]
    EmptyPassword,
}

impl Entry {
    /// Returns the username and password Docker, containerd and skopeo
    /// authenticate with: `auth` when present, else `username` and
    /// `password`. An entry whose `auth` disagrees with its `username` or
    /// `password` is an error: which one counts depends on the client.
    pub fn credential(&self) -> Result<(String, SecretString), CredentialError> {
        let auth = self.auth.as_ref().map(|a| a.expose_secret()).filter(|a| !a.is_empty());
        let password = self.password.as_ref().filter(|p| !p.expose_secret().is_empty());
        let username = self.username.as_deref().filter(|u| !u.is_empty());
        let Some(auth) = auth else {
            return match (username, password) {
                (Some(u), Some(p)) => Ok((u.to_owned(), p.clone())),
                (_, None) if self.password.is_some() => Err(CredentialError::EmptyPassword),
                _ => Err(CredentialError::Missing),
            };
        };
        let decoded = Zeroizing::new(STANDARD.decode(auth.trim()).map_err(|_| CredentialError::AuthBase64)?);
        let text = std::str::from_utf8(&decoded).map_err(|_| CredentialError::AuthUtf8)?;
        let (user, pass) = text.split_once(':').ok_or(CredentialError::AuthShape)?;
        if pass.is_empty() {
            return Err(CredentialError::EmptyPassword);
        }
        if password.is_some_and(|p| p.expose_secret() != pass) {
            return Err(CredentialError::PasswordDisagrees);
        }
        if username.is_some_and(|u| u != user) {
            return Err(CredentialError::UsernameDisagrees);
        }
        Ok((user.to_owned(), SecretString::from(pass.to_owned())))
    }
}

/// A dockerconfigjson as read from a file.
#[derive(Deserialize)]
pub struct DockerConfig {
    pub auths: BTreeMap<String, Entry>,
}

/// Why bytes are not a dockerconfigjson. Says where, never what: serde's own
/// messages quote the offending value, which may be a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dockerconfigjson: {kind} at line {line} column {column}")]
pub struct ParseError {
    pub kind: &'static str,
    pub line: usize,
    pub column: usize,
}

/// Parses dockerconfigjson bytes.
pub fn parse(bytes: &[u8]) -> Result<DockerConfig, ParseError> {
    serde_json::from_slice(bytes).map_err(|e| ParseError {
        kind: match e.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "JSON syntax error",
            serde_json::error::Category::Data => "a field of the wrong type or a missing `auths`",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: e.line(),
        column: e.column(),
    })
}

/// What [`check`] found for one host.
#[derive(Debug, serde::Serialize)]
pub struct HostFinding {
    pub host: String,
    pub username: Option<String>,
    /// Fingerprint of the key in `password` (or in `auth` when `password` is absent).
    pub key_fingerprint: Option<Fingerprint>,
    /// Problems with this host's entry; empty when it is consistent.
    pub problems: Vec<String>,
}

/// What [`check`] found for a whole pull secret.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub hosts: Vec<HostFinding>,
    /// The key's fingerprint, when every host carries the same key.
    pub key_fingerprint: Option<Fingerprint>,
    /// Problems that concern the secret as a whole.
    pub problems: Vec<String>,
}

impl Report {
    /// Returns true when neither the secret nor any host has a problem.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.hosts.iter().all(|h| h.problems.is_empty())
    }
}

/// Checks that each entry is self-consistent, that every host carries the
/// same key, and (with `region`) that the hosts are exactly the region's.
pub fn check(config: &DockerConfig, region: Option<&Region>) -> Report {
    let mut hosts = Vec::with_capacity(config.auths.len());
    for (name, entry) in &config.auths {
        hosts.push(check_entry(name, entry, region));
    }
    let mut problems = Vec::new();
    if config.auths.is_empty() {
        problems.push("`auths` lists no hosts".to_owned());
    }
    let mut keys: BTreeMap<Fingerprint, usize> = BTreeMap::new();
    for h in &hosts {
        if let Some(fp) = h.key_fingerprint {
            *keys.entry(fp).or_default() += 1;
        }
    }
    if keys.len() > 1 {
        let list: Vec<String> = keys
            .iter()
            .map(|(fp, n)| format!("{fp} ({n} {})", if *n == 1 { "host" } else { "hosts" }))
            .collect();
        problems.push(format!(
            "hosts carry {} different keys: {}",
            keys.len(),
            list.join(", ")
        ));
    }
    if let Some(region) = region {
        let missing: Vec<&str> = region
            .hosts
            .iter()
            .map(Host::as_str)
            .filter(|h| !config.auths.contains_key(*h))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "region `{}` hosts missing: {}",
                region.name,
                missing.join(", ")
            ));
        }
        let extra: Vec<&str> = config
            .auths
            .keys()
            .map(String::as_str)
            .filter(|h| !region.hosts.iter().any(|r| r.as_str() == *h))
            .collect();
        if !extra.is_empty() {
            problems.push(format!("hosts not in region `{}`: {}", region.name, extra.join(", ")));
        }
    }
    let key_fingerprint = if keys.len() == 1 {
        keys.keys().next().copied()
    } else {
        None
    };
    Report {
        hosts,
        key_fingerprint,
        problems,
    }
}

/// Shows a user name only when it is one a catalog expects (`iamapikey` or
/// the region's); any other value is shown as a fingerprint, because a
/// secret with username and password swapped carries the key there.
fn shown_user(value: &str, region: Option<&Region>) -> String {
    if value == crate::pullsecret::catalog::DEFAULT_USERNAME || region.is_some_and(|r| r.username == value) {
        value.to_owned()
    } else {
        format!("(a value with fingerprint {})", Fingerprint::of(value.as_bytes()))
    }
}

fn check_entry(host: &str, entry: &Entry, region: Option<&Region>) -> HostFinding {
    let mut problems = Vec::new();
    if let Err(e) = Host::parse(host) {
        problems.push(format!("host name {e}"));
    }
    let username = entry.username.as_deref().filter(|u| !u.is_empty());
    if username.is_none() {
        problems.push("`username` is missing".to_owned());
    }
    if let (Some(region), Some(u)) = (region, username)
        && u != region.username
    {
        problems.push(format!(
            "`username` is {}, region `{}` uses `{}`",
            shown_user(u, Some(region)),
            region.name,
            region.username
        ));
    }
    let password = entry
        .password
        .as_ref()
        .map(|p| p.expose_secret())
        .filter(|p| !p.is_empty());
    match password {
        None => problems.push("`password` is missing".to_owned()),
        Some(p) => {
            if let Err(e) = ApiKey::from_str_checked(p) {
                problems.push(format!("`password`: {e}"));
            }
        }
    }
    let mut auth_password_fp = None;
    match entry.auth.as_ref().map(|a| a.expose_secret()).filter(|a| !a.is_empty()) {
        None => problems.push("`auth` is missing".to_owned()),
        Some(auth) => match STANDARD.decode(auth) {
            Err(_) => problems.push("`auth` is not valid standard base64 (with padding)".to_owned()),
            Ok(decoded) => {
                let decoded = Zeroizing::new(decoded);
                match std::str::from_utf8(&decoded).ok().and_then(|s| s.split_once(':')) {
                    None => problems.push("`auth` does not decode to `username:password`".to_owned()),
                    Some((auth_user, auth_pass)) => {
                        if Some(auth_user) != username {
                            problems.push(format!(
                                "`auth` names user {}, `username` is {}",
                                shown_user(auth_user, region),
                                username.map_or_else(|| "missing".to_owned(), |u| shown_user(u, region))
                            ));
                        }
                        let fp = Fingerprint::of(auth_pass.as_bytes());
                        auth_password_fp = Some(fp);
                        if let Some(p) = password
                            && p != auth_pass
                        {
                            problems.push(format!(
                                "`auth` carries key {fp}, `password` is key {}",
                                Fingerprint::of(p.as_bytes())
                            ));
                        }
                    }
                }
            }
        },
    }
    let key_fingerprint = password.map(|p| Fingerprint::of(p.as_bytes())).or(auth_password_fp);
    HostFinding {
        host: host.to_owned(),
        username: username.map(|u| shown_user(u, region)),
        key_fingerprint,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ApiKey {
        ApiKey::from_str_checked(s).unwrap()
    }

    fn hosts(names: &[&str]) -> Vec<Host> {
        names.iter().map(|h| Host::parse(h).unwrap()).collect()
    }

    #[test]
    fn renders_like_kubectl() {
        let out = render(&hosts(&["us.icr.io"]), "iamapikey", &key("k<&>"), None);
        assert_eq!(
            out.as_str(),
            r#"{"auths":{"us.icr.io":{"username":"iamapikey","password":"k\u003c\u0026\u003e","auth":"aWFtYXBpa2V5Oms8Jj4="}}}"#
        );
        let out = render(&hosts(&["b.io", "a.io"]), "u", &key("p"), Some("e@x"));
        assert_eq!(
            out.as_str(),
            r#"{"auths":{"a.io":{"username":"u","password":"p","email":"e@x","auth":"dTpw"},"b.io":{"username":"u","password":"p","email":"e@x","auth":"dTpw"}}}"#
        );
    }

    #[test]
    fn a_rendered_secret_checks_clean() {
        let out = render(&hosts(&["a.io", "b.io:5000"]), "iamapikey", &key("secret-1"), None);
        let report = check(&parse(out.as_bytes()).unwrap(), None);
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.key_fingerprint, Some(Fingerprint::of(b"secret-1")));
    }

    #[test]
    fn parse_errors_never_quote_values() {
        let Err(e) = parse(br#"{"auths": "hunter2-secret"}"#) else {
            panic!("parsed")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!((e.line, e.kind), (1, "a field of the wrong type or a missing `auths`"));
        assert!(matches!(
            parse(b"{"),
            Err(ParseError {
                kind: "unexpected end",
                ..
            })
        ));
    }

    #[test]
    fn finds_inconsistent_entries() {
        let json = r#"{"auths":{
            "a.io":{"username":"iamapikey","password":"k1","auth":"aWFtYXBpa2V5OmsyCg=="},
            "b.io":{"username":"iamapikey","password":"k2 ","auth":"!!"},
            "c.io":{"username":"iamapikey","password":"k3","auth":"aWFtYXBpa2V5Oms="}}}"#;
        let report = check(&parse(json.as_bytes()).unwrap(), None);
        assert!(!report.is_ok());
        let a = &report.hosts[0].problems;
        assert!(a.iter().any(|p| p.contains("`auth` carries key")), "{a:?}");
        let b = &report.hosts[1].problems;
        assert!(b.iter().any(|p| p.contains("whitespace")), "{b:?}");
        assert!(b.iter().any(|p| p.contains("not valid standard base64")), "{b:?}");
        assert!(
            report.problems.iter().any(|p| p.contains("3 different keys")),
            "{:?}",
            report.problems
        );
    }

    fn cred(json: &str) -> Result<(String, String), CredentialError> {
        let config = parse(json.as_bytes()).unwrap();
        let entry = config.auths.values().next().unwrap();
        entry.credential().map(|(u, p)| (u, p.expose_secret().to_owned()))
    }

    #[test]
    fn credential_uses_auth_as_docker_does() {
        // auth = base64("iamapikey:k2")
        let both = r#"{"auths":{"a.io":{"username":"iamapikey","password":"k2","auth":"aWFtYXBpa2V5OmsyCg=="}}}"#;
        assert_eq!(cred(both), Err(CredentialError::PasswordDisagrees), "k2 vs k2\n");
        let auth_only = r#"{"auths":{"a.io":{"auth":"aWFtYXBpa2V5Oms="}}}"#;
        assert_eq!(cred(auth_only), Ok(("iamapikey".into(), "k".into())));
        let agree = r#"{"auths":{"a.io":{"username":"iamapikey","password":"k","auth":"aWFtYXBpa2V5Oms="}}}"#;
        assert_eq!(cred(agree), Ok(("iamapikey".into(), "k".into())));
        let other_key = r#"{"auths":{"a.io":{"username":"iamapikey","password":"k1","auth":"aWFtYXBpa2V5Oms="}}}"#;
        assert_eq!(cred(other_key), Err(CredentialError::PasswordDisagrees));
        let other_user = r#"{"auths":{"a.io":{"username":"bob","password":"k","auth":"aWFtYXBpa2V5Oms="}}}"#;
        assert_eq!(cred(other_user), Err(CredentialError::UsernameDisagrees));
        let no_auth = r#"{"auths":{"a.io":{"username":"u","password":"p"}}}"#;
        assert_eq!(cred(no_auth), Ok(("u".into(), "p".into())));
        assert_eq!(cred(r#"{"auths":{"a.io":{}}}"#), Err(CredentialError::Missing));
        assert_eq!(
            cred(r#"{"auths":{"a.io":{"auth":"!!"}}}"#),
            Err(CredentialError::AuthBase64)
        );
        assert_eq!(
            cred(r#"{"auths":{"a.io":{"auth":"dXNlcg=="}}}"#),
            Err(CredentialError::AuthShape)
        );
        assert_eq!(
            cred(r#"{"auths":{"a.io":{"auth":"dTo="}}}"#),
            Err(CredentialError::EmptyPassword)
        );
        let e = cred(other_key).unwrap_err().to_string();
        assert!(!e.contains("k1"), "{e}");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const VALID: &str = r#"{"auths":{"jp.icr.io":{"username":"iamapikey","password":"k","email":"e@x","auth":"aWFtYXBpa2V5Oms="},"b.io":{"auth":"dTpw"}}}"#;

        fn read(bytes: &[u8]) {
            if let Ok(config) = parse(bytes) {
                for entry in config.auths.values() {
                    let _ = entry.credential();
                }
                let _ = check(&config, None);
            }
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                read(&bytes);
            }

            #[test]
            fn mutated_configs_never_panic(at in 0..VALID.len(), byte in any::<u8>()) {
                let mut bytes = VALID.as_bytes().to_vec();
                bytes[at] = byte;
                read(&bytes);
            }
        }

        #[test]
        fn every_truncation_and_bit_flip_is_ok_or_a_clean_error() {
            let valid = VALID.as_bytes();
            for end in 0..=valid.len() {
                read(&valid[..end]);
            }
            for at in 0..valid.len() {
                for bit in 0..8 {
                    let mut bytes = valid.to_vec();
                    bytes[at] ^= 1 << bit;
                    read(&bytes);
                }
            }
        }
    }
}
