//! Secret values (API keys) that cannot be printed, serialized or logged by
//! accident.
//!
//! `ApiKey` implements neither `Display` nor `Serialize`; its `Debug` shows
//! only the fingerprint. The one way to read the value is
//! [`ApiKey::expose_secret`], so every use is easy to find with grep.

use crate::fingerprint::Fingerprint;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use zeroize::Zeroizing;

/// A validated API key held in memory that is cleared on drop.
#[derive(Clone)]
pub struct ApiKey {
    value: SecretString,
    fingerprint: Fingerprint,
}

/// Why raw bytes are not an acceptable API key. Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is not valid UTF-8")]
    NotUtf8,
    #[error("the key contains whitespace or a control character at byte {position}")]
    BadCharacter { position: usize },
}

impl ApiKey {
    /// Parses an API key as read from a file, stdin or an environment
    /// variable: strips one trailing newline (`\n` or `\r\n`) and rejects an
    /// empty key or one with any other whitespace or control character.
    pub fn parse(raw: Zeroizing<Vec<u8>>) -> Result<ApiKey, KeyError> {
        let mut bytes: &[u8] = &raw;
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)?;
        ApiKey::from_str_checked(text)
    }

    /// Validates a key given as text, without stripping anything.
    pub fn from_str_checked(text: &str) -> Result<ApiKey, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some((position, _)) = text.char_indices().find(|(_, c)| c.is_whitespace() || c.is_control()) {
            return Err(KeyError::BadCharacter { position });
        }
        Ok(ApiKey {
            fingerprint: Fingerprint::of(text.as_bytes()),
            value: SecretString::from(text.to_owned()),
        })
    }

    /// Returns the key's value. Every caller is a place where the secret
    /// leaves its wrapper: keep them few.
    pub fn expose_secret(&self) -> &str {
        self.value.expose_secret()
    }

    /// Returns the key's short fingerprint, safe to show.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Compares two keys in constant time.
    pub fn ct_eq(&self, other: &ApiKey) -> bool {
        use subtle::ConstantTimeEq;
        self.expose_secret()
            .as_bytes()
            .ct_eq(other.expose_secret().as_bytes())
            .into()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ApiKey, KeyError> {
        ApiKey::parse(Zeroizing::new(s.as_bytes().to_vec()))
    }

    #[test]
    fn strips_one_trailing_newline_only() {
        assert_eq!(parse("abc\n").unwrap().expose_secret(), "abc");
        assert_eq!(parse("abc\r\n").unwrap().expose_secret(), "abc");
        assert_eq!(parse("abc\n\n").unwrap_err(), KeyError::BadCharacter { position: 3 });
    }

    #[test]
    fn rejects_empty_and_whitespace() {
        assert_eq!(parse("").unwrap_err(), KeyError::Empty);
        assert_eq!(parse("\n").unwrap_err(), KeyError::Empty);
        assert_eq!(parse("ab c").unwrap_err(), KeyError::BadCharacter { position: 2 });
        assert_eq!(parse("ab\nc").unwrap_err(), KeyError::BadCharacter { position: 2 });
        assert_eq!(parse("\tabc").unwrap_err(), KeyError::BadCharacter { position: 0 });
        assert_eq!(parse("abc\u{7f}").unwrap_err(), KeyError::BadCharacter { position: 3 });
        assert_eq!(
            ApiKey::parse(Zeroizing::new(vec![0xff, 0x41])).unwrap_err(),
            KeyError::NotUtf8
        );
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let key = parse("CANARY-debug-secret").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("CANARY"), "{shown}");
        assert_eq!(shown, format!("ApiKey({})", key.fingerprint()));
    }

    #[test]
    fn constant_time_equality() {
        assert!(parse("a1").unwrap().ct_eq(&parse("a1").unwrap()));
        assert!(!parse("a1").unwrap().ct_eq(&parse("a2").unwrap()));
        assert!(!parse("a1").unwrap().ct_eq(&parse("a12").unwrap()));
    }
}
