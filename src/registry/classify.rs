//! The outcome classes of verifying one host, and how transport errors map
//! onto them. Messages built here never carry URLs' credentials or tokens.

use serde::Serialize;
use std::fmt;

/// What verifying one host found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The credential read the probe image, and every digest matched.
    Ok,
    /// The registry or its token server rejected the credential (401).
    BadCredentials,
    /// The credential is valid but may not read the repository.
    NoAccess,
    /// The repository or tag does not exist.
    MissingImage,
    /// The image index has no linux/amd64 manifest.
    PlatformMissing,
    /// A manifest or blob does not hash to its digest (or has the wrong size).
    DigestMismatch,
    /// The host does not speak the registry API v2.
    NotARegistry,
    /// The registry kept answering 429 within the time budget.
    RateLimited,
    /// The registry kept failing (5xx) or answered something unexpected.
    ServerError,
    /// The host name does not resolve.
    Dns,
    /// The TCP connection failed (refused, unreachable, reset).
    Connect,
    /// The TLS handshake failed (unknown CA, wrong name, protocol).
    Tls,
    /// The host did not finish within the time budget.
    Timeout,
    /// The pull also succeeded without the credential (anonymously or with
    /// a wrong one): the check proved nothing about the key.
    CredentialNotRequired,
    /// The reference names something a container runtime cannot pull as an
    /// image: an artifact, an unknown or mismatched media type, schema 1.
    NotAnImage,
}

impl Class {
    /// Returns the class as written in JSON and JUnit (`bad_credentials`).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::BadCredentials => "bad_credentials",
            Class::NoAccess => "no_access",
            Class::MissingImage => "missing_image",
            Class::PlatformMissing => "platform_missing",
            Class::DigestMismatch => "digest_mismatch",
            Class::NotARegistry => "not_a_registry",
            Class::RateLimited => "rate_limited",
            Class::ServerError => "server_error",
            Class::Dns => "dns",
            Class::Connect => "connect",
            Class::Tls => "tls",
            Class::Timeout => "timeout",
            Class::CredentialNotRequired => "credential_not_required",
            Class::NotAnImage => "not_an_image",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host check that stopped: its class and a short human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: Class,
    pub detail: String,
}

impl Failure {
    /// Returns a failure of `class` with `detail`.
    pub fn new(class: Class, detail: impl Into<String>) -> Failure {
        Failure {
            class,
            detail: detail.into(),
        }
    }
}

/// Returns `text` with control characters and bidirectional overrides
/// escaped: registry-controlled strings are printed to terminals, logs and
/// JUnit files.
pub use crate::untrusted::escape as escape_controls;

/// Classifies a transport error from reqwest. The detail is built from the
/// error's causes with the URL removed, so no query string or user info leaks.
pub fn transport(err: reqwest::Error) -> Failure {
    let is_timeout = err.is_timeout();
    let err = err.without_url();
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let text = chain.join(": ").to_ascii_lowercase();
    let detail = chain.last().cloned().unwrap_or_default();
    let class = classify_text(is_timeout, &text);
    Failure::new(class, detail)
}

/// Classifies a transport error from its lower-cased cause chain.
pub fn classify_text(is_timeout: bool, text: &str) -> Class {
    if is_timeout || text.contains("timed out") {
        Class::Timeout
    } else if text.contains("dns error") || text.contains("failed to lookup address") {
        Class::Dns
    } else if text.contains("certificate")
        || text.contains("tls")
        || text.contains("handshake")
        || text.contains("invalid peer")
        || text.contains("alert")
    {
        Class::Tls
    } else {
        Class::Connect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Class::BadCredentials).unwrap(),
            "\"bad_credentials\""
        );
        assert_eq!(
            serde_json::to_string(&Class::NotARegistry).unwrap(),
            "\"not_a_registry\""
        );
        assert_eq!(Class::PlatformMissing.to_string(), "platform_missing");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("a\x1b[31mb\nc\u{202e}d"),
            "a\\u{1b}[31mb\\u{a}c\\u{202e}d"
        );
        assert_eq!(escape_controls("plain ü/amd64"), "plain ü/amd64");
    }

    #[test]
    fn transport_texts_map_to_classes() {
        assert_eq!(
            classify_text(
                false,
                "error sending request: client error (connect): dns error: failed to lookup address information"
            ),
            Class::Dns
        );
        assert_eq!(
            classify_text(false, "client error (connect): invalid peer certificate: unknownissuer"),
            Class::Tls
        );
        assert_eq!(
            classify_text(
                false,
                "client error (connect): tcp connect error: connection refused (os error 111)"
            ),
            Class::Connect
        );
        assert_eq!(classify_text(true, "operation"), Class::Timeout);
    }

    #[tokio::test]
    async fn transport_details_carry_no_url_credentials() {
        let client = reqwest::Client::builder().use_rustls_tls().build().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = client
            .get(format!("https://user:hunter2secret@127.0.0.1:{port}/v2/?token=tok3n"))
            .send()
            .await
            .unwrap_err();
        let f = transport(err);
        assert_eq!(f.class, Class::Connect, "{}", f.detail);
        assert!(
            !f.detail.contains("hunter2secret") && !f.detail.contains("tok3n"),
            "{}",
            f.detail
        );
    }
}
