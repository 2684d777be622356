//! The etcd v3 JSON gateway's wire format for reading source-of-truth
//! records under a prefix (`POST /v3/kv/range`). Values in, values out: the
//! HTTP call itself is made by the cli layer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// A parsed `etcd://HOST:PORT/PREFIX` (plain HTTP) or
/// `etcd+https://HOST:PORT/PREFIX` (TLS) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoint: String,
    /// The key prefix: `/PREFIX/` (leading and trailing `/` added).
    pub prefix: Vec<u8>,
}

/// Why an etcd address or answer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("`{0}` is not an etcd://HOST:PORT/PREFIX or etcd+https://HOST:PORT/PREFIX address")]
    Url(String),
    #[error("the etcd answer is not a range response: {0}")]
    Response(String),
    #[error("the etcd answer is not an authenticate response (no token)")]
    NoToken,
    #[error("etcd key {0}: not valid base64")]
    Base64(String),
    #[error("no keys under prefix {0}")]
    Empty(String),
}

/// The most keys asked for per page.
pub const PAGE_SIZE: u32 = 1000;
/// The most pages read: a million records, far beyond any account's
/// resource groups; an endpoint answering `more: true` forever stops here.
pub const MAX_PAGES: usize = 1000;
/// The largest answer body read from etcd (a page of 1000 records).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Returns true for a source of truth that names etcd.
pub fn is_etcd(source: &str) -> bool {
    source.starts_with("etcd://") || source.starts_with("etcd+https://") || source.starts_with("etcd+http://")
}

/// Parses `etcd://HOST:PORT/PREFIX` or `etcd+https://HOST:PORT/PREFIX`.
pub fn parse_url(text: &str) -> Result<EtcdUrl, EtcdError> {
    let bad = || EtcdError::Url(text.to_owned());
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("etcd+https://") {
        ("https", rest)
    } else if let Some(rest) = text.strip_prefix("etcd+http://") {
        ("http", rest)
    } else {
        ("http", text.strip_prefix("etcd://").ok_or_else(bad)?)
    };
    let (hostport, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() || host.contains(['@', '?', '#']) {
        return Err(bad());
    }
    // The prefix is a directory: `/truth` reads `/truth/...`, not `/truthx`.
    let mut prefix = format!("/{path}");
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(EtcdUrl {
        endpoint: format!("{scheme}://{host}:{port}"),
        prefix: prefix.into_bytes(),
    })
}

/// Returns the smallest key after every key that starts with `prefix`.
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Returns the JSON body of a range request from `start` to the prefix's end.
pub fn range_request(start: &[u8], prefix: &[u8], limit: u32) -> serde_json::Value {
    serde_json::json!({
        "key": STANDARD.encode(start),
        "range_end": STANDARD.encode(range_end(prefix)),
        "limit": limit.to_string(),
    })
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<Kv>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
}

/// One page of a range answer: (key, value) pairs and whether more follow.
pub struct Page {
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
    pub more: bool,
}

/// Decodes a range answer.
pub fn parse_response(body: &[u8]) -> Result<Page, EtcdError> {
    let r: RangeResponse =
        serde_json::from_slice(body).map_err(|e| EtcdError::Response(crate::storage::kube::scrub(&e.to_string())))?;
    let mut kvs = Vec::with_capacity(r.kvs.len());
    for kv in r.kvs {
        let key = STANDARD
            .decode(&kv.key)
            .map_err(|_| EtcdError::Base64(kv.key.clone()))?;
        let value = STANDARD
            .decode(&kv.value)
            .map_err(|_| EtcdError::Base64(String::from_utf8_lossy(&key).into_owned()))?;
        kvs.push((key, value));
    }
    Ok(Page { kvs, more: r.more })
}

#[derive(Deserialize)]
struct AuthResponse {
    token: Option<String>,
}

/// Returns the body of `POST /v3/auth/authenticate`.
pub fn authenticate_request(name: &str, password: &str) -> serde_json::Value {
    serde_json::json!({ "name": name, "password": password })
}

/// Returns the token of an authenticate answer.
pub fn parse_token(body: &[u8]) -> Result<zeroize::Zeroizing<String>, EtcdError> {
    let r: AuthResponse = serde_json::from_slice(body).map_err(|_| EtcdError::NoToken)?;
    match r.token {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(zeroize::Zeroizing::new(t)),
        _ => Err(EtcdError::NoToken),
    }
}

/// Returns the key to continue a range after `last`.
pub fn next_start(last: &[u8]) -> Vec<u8> {
    let mut k = last.to_vec();
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let u = parse_url("etcd://127.0.0.1:2379/truth/us-south").unwrap();
        assert_eq!(u.endpoint, "http://127.0.0.1:2379");
        assert_eq!(u.prefix, b"/truth/us-south/");
        assert_eq!(parse_url("etcd://h:1").unwrap().prefix, b"/");
        assert!(parse_url("http://x:1/p").is_err());
        assert!(parse_url("etcd://x/p").is_err());
        assert!(parse_url("etcd://u@x:1/p").is_err());
        let tls = parse_url("etcd+https://etcd.example:2379/truth").unwrap();
        assert_eq!(tls.endpoint, "https://etcd.example:2379");
        assert_eq!(tls.prefix, b"/truth/");
        assert!(is_etcd("etcd+https://x:1/p") && is_etcd("etcd://x:1/p") && !is_etcd("truth.json"));
    }

    #[test]
    fn range_end_increments_the_last_byte() {
        assert_eq!(range_end(b"/a"), b"/b");
        assert_eq!(range_end(&[b'a', 0xff]), b"b");
        assert_eq!(range_end(&[0xff]), vec![0]);
    }

    #[test]
    fn decodes_responses() {
        let body = br#"{"header":{},"kvs":[{"key":"L2E=","value":"e30="}],"count":"1"}"#;
        let p = parse_response(body).unwrap();
        assert_eq!(p.kvs, vec![(b"/a".to_vec(), b"{}".to_vec())]);
        assert!(!p.more);
        assert!(parse_response(b"5").is_err());
    }

    #[test]
    fn tokens_are_read_from_authenticate_answers() {
        assert_eq!(&*parse_token(br#"{"header":{},"token":"abc.123"}"#).unwrap(), "abc.123");
        assert!(parse_token(br#"{"header":{}}"#).is_err());
        assert!(parse_token(br#"{"token":"a\nb"}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
    }
}
