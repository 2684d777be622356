//! IBM Cloud IAM's documents as typed values: the token answer, an API key's
//! details, a service ID, and the two error shapes (the token endpoint's
//! `{"errorCode", "errorMessage"}` and the identity API's
//! `{"errors": [{"code", "message_code", "message"}], "status_code", "trace"}`).
//!
//! Every document comes from a server rekey does not control: parse errors
//! never quote it, and text taken from it is escaped before it is shown.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The token endpoint's answer. Only whether a token came back matters:
/// the token itself is held as a secret and never shown.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: secrecy::SecretString,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// An API key as the identity API describes it (`APIKey` in IBM's SDKs).
/// The key's value (`apikey`) is read only on creation, into a secret.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct KeyDetails {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub iam_id: String,
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub crn: String,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// The creation answer: the details plus the new key's value.
#[derive(Deserialize)]
pub struct Created {
    #[serde(flatten)]
    pub details: KeyDetails,
    pub apikey: secrecy::SecretString,
}

/// One page of the identity API's key list (`APIKeyList` in IBM's SDKs):
/// `next` is the URL of the following page (holding `pagetoken`), absent
/// on the last page.
#[derive(Debug, Deserialize)]
pub struct KeyList {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub first: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub apikeys: Vec<KeyDetails>,
}

/// A service ID (`ServiceId` in IBM's SDKs): its `iam_id` owns API keys.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ServiceId {
    pub id: String,
    pub iam_id: String,
    #[serde(default)]
    pub name: String,
}

/// The token endpoint's error document.
#[derive(Debug, Deserialize)]
pub struct TokenError {
    #[serde(rename = "errorCode")]
    pub error_code: Option<String>,
    #[serde(rename = "errorMessage")]
    pub error_message: Option<String>,
}

/// One entry of the identity API's error document.
#[derive(Debug, Deserialize)]
pub struct ApiErrorEntry {
    pub code: Option<String>,
    pub message_code: Option<String>,
    pub message: Option<String>,
}

/// The identity API's error document (`ExceptionResponse`).
#[derive(Debug, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub errors: Vec<ApiErrorEntry>,
    pub trace: Option<String>,
}

/// What an error answer says, whichever shape it came in: IAM's message
/// code (`BXNIM0415E`) and message, escaped for display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorText {
    pub code: Option<String>,
    pub message: Option<String>,
}

impl ErrorText {
    /// Reads either error shape from `body`; anything else gives an empty text.
    pub fn parse(body: &[u8]) -> ErrorText {
        if let Ok(e) = serde_json::from_slice::<TokenError>(body)
            && (e.error_code.is_some() || e.error_message.is_some())
        {
            return ErrorText {
                code: e.error_code.map(|c| escape(&c)),
                message: e.error_message.map(|m| escape(&m)),
            };
        }
        if let Ok(e) = serde_json::from_slice::<ApiError>(body)
            && let Some(first) = e.errors.into_iter().next()
        {
            return ErrorText {
                code: first.message_code.or(first.code).map(|c| escape(&c)),
                message: first.message.map(|m| escape(&m)),
            };
        }
        ErrorText::default()
    }

    /// Returns `BXNIM0415E: Provided API key could not be found.` or what there is.
    pub fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "no error document".to_owned(),
        }
    }
}

/// Escapes control characters and bounds the length of server text.
pub fn escape(text: &str) -> String {
    crate::untrusted::escape_bounded(text, 300)
}

/// IAM writes times as RFC 3339 or as `2021-06-25T10:00+0000`; a time in
/// neither form is treated as unknown rather than failing the whole answer.
fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    Ok(raw.and_then(|s| parse_time(&s)))
}

/// Parses the time forms IAM uses.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_endpoints_error_shape() {
        let body = br#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found.","context":{"requestId":"x"}}"#;
        let e = ErrorText::parse(body);
        assert_eq!(e.code.as_deref(), Some("BXNIM0415E"));
        assert_eq!(e.describe(), "BXNIM0415E: Provided API key could not be found.");
    }

    #[test]
    fn reads_the_identity_apis_error_shape() {
        let body = br#"{"context":{},"status_code":"404","errors":[{"code":"not_found","message_code":"BXNIM0102E","message":"API key not found."}],"trace":"t"}"#;
        let e = ErrorText::parse(body);
        assert_eq!(e.code.as_deref(), Some("BXNIM0102E"));
        assert_eq!(e.message.as_deref(), Some("API key not found."));
    }

    #[test]
    fn escapes_terminal_sequences_in_server_text() {
        let body = br#"{"errorCode":"X\u001b[31m","errorMessage":"a\nb"}"#;
        let e = ErrorText::parse(body);
        assert_eq!(e.describe(), "X\\u{1b}[31m: a\\u{a}b");
    }

    #[test]
    fn anything_else_is_no_error_document() {
        for body in [&b"<html>"[..], b"", b"{}", b"[]", b"null"] {
            assert_eq!(ErrorText::parse(body).describe(), "no error document");
        }
    }

    #[test]
    fn parses_both_time_forms() {
        assert!(parse_time("2021-06-25T10:00+0000").is_some());
        assert!(parse_time("2021-06-25T10:00:00Z").is_some());
        assert!(parse_time("2021-06-25T10:00:00.123+0000").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn key_details_tolerate_missing_and_odd_fields() {
        let d: KeyDetails =
            serde_json::from_str(r#"{"id":"ApiKey-1","name":"n","created_at":"not a time","locked":true,"extra":[1]}"#)
                .unwrap();
        assert_eq!(d.id, "ApiKey-1");
        assert!(d.locked);
        assert!(d.created_at.is_none());
    }
}
