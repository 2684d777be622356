//! IBM Cloud IAM: proving a service-ID API key is valid before anything is
//! verified or sealed, describing keys, and creating and retiring them.
//!
//! The client ([`client`]) speaks IAM's public API; [`classify`] turns what
//! IAM says of a key into one class an operator can act on. A key's class is
//! decided from structured answers (the token exchange, then the key's
//! details when an admin token is at hand), not from message text alone.

pub mod client;
pub mod wire;

pub use client::{Exchange, Iam, IamError, Retire, Settings};
pub use wire::KeyDetails;

use crate::secret::ApiKey;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;

/// IAM's message code for "Provided API key could not be found".
pub const NOT_FOUND: &str = "BXNIM0415E";

/// What IAM says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyClass {
    /// IAM issues tokens for it.
    Valid,
    /// IAM does not know it (deleted, mistyped, or never created).
    Invalid,
    /// It exists but is disabled: it cannot authenticate.
    Disabled,
    /// IAM refused it and reports it locked.
    Locked,
    /// It exists but its expiry has passed.
    Expired,
    /// IAM could not be reached or kept failing: nothing is known.
    IamUnreachable,
}

impl KeyClass {
    /// Returns the class's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            KeyClass::Valid => "valid",
            KeyClass::Invalid => "invalid",
            KeyClass::Disabled => "disabled",
            KeyClass::Locked => "locked",
            KeyClass::Expired => "expired",
            KeyClass::IamUnreachable => "iam_unreachable",
        }
    }
}

/// A key's class with what IAM said, safe to print (no key, no token).
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub class: KeyClass,
    /// IAM's words: its message code and message, or why IAM was not reached.
    pub detail: String,
    /// The key's details when IAM gave them.
    pub details: Option<KeyDetails>,
}

/// Classifies `key`: exchanges it for a token and, when an `admin` token is
/// given (or the exchange succeeded), reads its details.
pub async fn classify(iam: &Iam, key: &ApiKey, admin: Option<&SecretString>, now: DateTime<Utc>) -> KeyStatus {
    let exchange = match iam.exchange(key).await {
        Ok(x) => x,
        Err(e) => {
            return KeyStatus {
                class: if e.is_unreachable() {
                    KeyClass::IamUnreachable
                } else {
                    KeyClass::Invalid
                },
                detail: e.to_string(),
                details: None,
            };
        }
    };
    match exchange {
        Exchange::Token(own) => {
            let token = admin.unwrap_or(&own);
            let details = iam.details(token, key).await.ok().flatten();
            let detail = match &details {
                Some(d) if d.locked => "IAM issued a token; the key is locked against changes".to_owned(),
                _ => "IAM issued a token".to_owned(),
            };
            KeyStatus {
                class: KeyClass::Valid,
                detail,
                details,
            }
        }
        Exchange::Refused { status, text } => {
            let details = match admin {
                Some(token) => match iam.details(token, key).await {
                    Ok(d) => d,
                    Err(e) if e.is_unreachable() => {
                        return KeyStatus {
                            class: KeyClass::IamUnreachable,
                            detail: e.to_string(),
                            details: None,
                        };
                    }
                    Err(_) => None,
                },
                None => None,
            };
            let class = refused_class(&text, details.as_ref(), now);
            KeyStatus {
                class,
                detail: format!("IAM refused the key (HTTP {status}): {}", text.describe()),
                details,
            }
        }
    }
}

/// Decides why IAM refused a key: from its details when they are known,
/// else from IAM's message.
fn refused_class(text: &wire::ErrorText, details: Option<&KeyDetails>, now: DateTime<Utc>) -> KeyClass {
    if let Some(d) = details {
        if d.disabled {
            return KeyClass::Disabled;
        }
        if d.expires_at
            .as_deref()
            .and_then(wire::parse_time)
            .is_some_and(|t| t <= now)
        {
            return KeyClass::Expired;
        }
        if d.locked {
            return KeyClass::Locked;
        }
    }
    let message = text.message.as_deref().unwrap_or_default().to_ascii_lowercase();
    if text.code.as_deref() == Some(NOT_FOUND) {
        KeyClass::Invalid
    } else if message.contains("disabled") {
        KeyClass::Disabled
    } else if message.contains("expired") {
        KeyClass::Expired
    } else if message.contains("locked") {
        KeyClass::Locked
    } else {
        KeyClass::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::ErrorText;

    fn details(disabled: bool, locked: bool, expires_at: Option<&str>) -> KeyDetails {
        KeyDetails {
            id: "ApiKey-1".into(),
            name: "k".into(),
            iam_id: "iam-ServiceId-1".into(),
            account_id: String::new(),
            crn: String::new(),
            locked,
            disabled,
            created_at: None,
            expires_at: expires_at.map(str::to_owned),
            description: None,
        }
    }

    fn now() -> DateTime<Utc> {
        wire::parse_time("2026-11-24T10:00:00Z").unwrap()
    }

    #[test]
    fn details_decide_the_class_before_the_message() {
        let text = ErrorText {
            code: Some(NOT_FOUND.into()),
            message: Some("Provided API key could not be found.".into()),
        };
        assert_eq!(
            refused_class(&text, Some(&details(true, false, None)), now()),
            KeyClass::Disabled
        );
        assert_eq!(
            refused_class(
                &text,
                Some(&details(false, false, Some("2026-01-01T00:00+0000"))),
                now()
            ),
            KeyClass::Expired
        );
        assert_eq!(
            refused_class(&text, Some(&details(false, true, None)), now()),
            KeyClass::Locked
        );
        assert_eq!(refused_class(&text, None, now()), KeyClass::Invalid);
    }

    #[test]
    fn a_future_expiry_is_not_expired() {
        let text = ErrorText::default();
        assert_eq!(
            refused_class(
                &text,
                Some(&details(false, false, Some("2027-01-01T00:00+0000"))),
                now()
            ),
            KeyClass::Invalid
        );
    }

    #[test]
    fn messages_decide_without_details() {
        let t = |m: &str| ErrorText {
            code: Some("BXNIM9999E".into()),
            message: Some(m.into()),
        };
        assert_eq!(
            refused_class(&t("The API key is disabled."), None, now()),
            KeyClass::Disabled
        );
        assert_eq!(
            refused_class(&t("The API key has expired."), None, now()),
            KeyClass::Expired
        );
        assert_eq!(refused_class(&t("Something else."), None, now()), KeyClass::Invalid);
    }
}
