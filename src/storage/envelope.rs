//! The AES-GCM envelope the Go control-plane service puts around keys in a
//! cluster's storage secret, and the decryption key operators are handed.
//!
//! Envelope: standard base64 (padded) of `nonce (12) || ciphertext || tag (16)`,
//! as Go's `gcm.Seal(nonce, nonce, plaintext, nil)` lays it out. The key is a
//! string in one of a few encodings; [`KeyFormat::Auto`] tries a fixed list in
//! a fixed order and reports which one opened the envelope.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, U12>;

/// Length of the nonce at the front of an envelope.
pub const NONCE_LEN: usize = 12;
/// Length of the tag at the end of an envelope.
pub const TAG_LEN: usize = 16;

/// The one message shown when an envelope does not authenticate: a wrong
/// key, a wrong key format and a corrupted ciphertext cannot be told apart.
pub const AUTH_FAILED: &str = "authentication failed: wrong key, wrong key format, or corrupted ciphertext";

/// How the decryption key string encodes the AES key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    /// The string's bytes are the key (16, 24 or 32 characters).
    Raw,
    /// 32, 48 or 64 hex digits.
    Hex,
    /// Standard base64 of 16, 24 or 32 bytes.
    Base64,
    /// SHA-256 of the string, taken as a passphrase (a 32-byte key).
    Sha256,
    /// Try raw, hex, base64, sha256 in that order; report which one opened.
    Auto,
}

impl KeyFormat {
    /// Returns the name used on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            KeyFormat::Raw => "raw",
            KeyFormat::Hex => "hex",
            KeyFormat::Base64 => "base64",
            KeyFormat::Sha256 => "sha256",
            KeyFormat::Auto => "auto",
        }
    }
}

/// Why a decryption key string is not usable in the format asked for.
/// Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the decryption key is empty")]
    Empty,
    #[error("a raw key is {0} bytes; AES-GCM needs 16, 24 or 32")]
    RawLength(usize),
    #[error("a hex key has {0} hex digits; AES-GCM needs 32, 48 or 64")]
    HexLength(usize),
    #[error("the hex key has a character that is not a hex digit at position {0}")]
    HexDigit(usize),
    #[error("the base64 key is not valid standard base64")]
    Base64Syntax,
    #[error("the base64 key decodes to {0} bytes; AES-GCM needs 16, 24 or 32")]
    Base64Length(usize),
}

/// Why an envelope did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("malformed envelope: not valid standard base64")]
    Base64,
    #[error("malformed envelope: {0} bytes, shorter than nonce and tag (28 bytes)")]
    TooShort(usize),
    #[error("{AUTH_FAILED}")]
    Authentication,
}

enum Cipher {
    A128(Box<Aes128Gcm>),
    A192(Box<Aes192Gcm>),
    A256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &[u8]) -> Option<Cipher> {
        match key.len() {
            16 => Aes128Gcm::new_from_slice(key).ok().map(|c| Cipher::A128(Box::new(c))),
            24 => Aes192Gcm::new_from_slice(key).ok().map(|c| Cipher::A192(Box::new(c))),
            32 => Aes256Gcm::new_from_slice(key).ok().map(|c| Cipher::A256(Box::new(c))),
            _ => None,
        }
    }

    fn open(&self, nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        match self {
            Cipher::A128(c) => c.decrypt(nonce, sealed).ok(),
            Cipher::A192(c) => c.decrypt(nonce, sealed).ok(),
            Cipher::A256(c) => c.decrypt(nonce, sealed).ok(),
        }
    }
}

/// A decryption key ready to open envelopes: one prepared cipher per
/// encoding that applies (one for an explicit format, up to four for auto).
pub struct DecryptionKey {
    candidates: Vec<(KeyFormat, Cipher)>,
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let formats: Vec<&str> = self.candidates.iter().map(|(k, _)| k.name()).collect();
        write!(f, "DecryptionKey({})", formats.join(","))
    }
}

fn decode_raw(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    match text.len() {
        16 | 24 | 32 => Ok(Zeroizing::new(text.to_vec())),
        n => Err(KeyError::RawLength(n)),
    }
}

fn decode_hex(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if let Some(pos) = text.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(KeyError::HexDigit(pos));
    }
    match text.len() {
        32 | 48 | 64 => {
            let mut out = Zeroizing::new(vec![0u8; text.len() / 2]);
            hex::decode_to_slice(text, &mut out).map_err(|_| KeyError::HexDigit(0))?;
            Ok(out)
        }
        n => Err(KeyError::HexLength(n)),
    }
}

fn decode_base64(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyError::Base64Syntax)?);
    match bytes.len() {
        16 | 24 | 32 => Ok(bytes),
        n => Err(KeyError::Base64Length(n)),
    }
}

fn decode_sha256(text: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(Sha256::digest(text).to_vec())
}

fn decode(format: KeyFormat, text: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    match format {
        KeyFormat::Raw => decode_raw(text),
        KeyFormat::Hex => decode_hex(text),
        KeyFormat::Base64 => decode_base64(text),
        KeyFormat::Sha256 | KeyFormat::Auto => Ok(decode_sha256(text)),
    }
}

impl DecryptionKey {
    /// Prepares the key string `text` (one trailing newline already removed
    /// by the caller) in `format`. With `Auto`, every encoding that applies
    /// is kept, in the order raw, hex, base64, sha256.
    pub fn new(text: &[u8], format: KeyFormat) -> Result<DecryptionKey, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let formats: &[KeyFormat] = match format {
            KeyFormat::Auto => &[KeyFormat::Raw, KeyFormat::Hex, KeyFormat::Base64, KeyFormat::Sha256],
            _ => std::slice::from_ref(&format),
        };
        let mut candidates = Vec::new();
        for &f in formats {
            match decode(f, text) {
                Ok(key) => {
                    if let Some(c) = Cipher::new(&key) {
                        candidates.push((f, c));
                    }
                }
                Err(e) if format != KeyFormat::Auto => return Err(e),
                Err(_) => {}
            }
        }
        Ok(DecryptionKey { candidates })
    }

    /// Returns the encodings this key is tried in, in order.
    pub fn formats(&self) -> Vec<KeyFormat> {
        self.candidates.iter().map(|(f, _)| *f).collect()
    }

    /// Opens an envelope; returns the plaintext and the encoding that opened it.
    pub fn open(&self, envelope: &str) -> Result<(Zeroizing<Vec<u8>>, KeyFormat), OpenError> {
        let bytes = STANDARD.decode(envelope.trim()).map_err(|_| OpenError::Base64)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::TooShort(bytes.len()));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        for (format, cipher) in &self.candidates {
            if let Some(plain) = cipher.open(nonce, sealed) {
                return Ok((Zeroizing::new(plain), *format));
            }
        }
        Err(OpenError::Authentication)
    }
}

/// Seals `plaintext` as the Go service does, for round-trip unit tests only:
/// verification never seals, and the integration tests and the benchmark
/// seal with an independent implementation (`fixtures/storage/seal.py`).
#[cfg(test)]
fn seal_for_tests(key: &[u8], nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> Option<String> {
    let nonce_ga = Nonce::<U12>::from_slice(nonce);
    let sealed = match Cipher::new(key)? {
        Cipher::A128(c) => c.encrypt(nonce_ga, plaintext).ok()?,
        Cipher::A192(c) => c.encrypt(nonce_ga, plaintext).ok()?,
        Cipher::A256(c) => c.encrypt(nonce_ga, plaintext).ok()?,
    };
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Some(STANDARD.encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY32: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// Known answers from Python's `cryptography` (fixtures/storage/seal.py),
    /// not from rekey: (key, envelope) for the plaintext `ApiKey-known-answer`.
    const KNOWN: [(&[u8], &str); 2] = [
        (
            b"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
            "AAECAwQFBgcICQoLK62dZWGpqx4t9CTkSaRmK4+LyDgqyqNp91HH+7CtjrzcC6g=",
        ),
        (
            b"0123456789abcdef",
            "CwoJCAcGBQQDAgEAwFekwt+EEQohfyBmyAKlu9cy6bzcbiehyRH4NjJ2TGB3gUY=",
        ),
    ];

    #[test]
    fn opens_envelopes_sealed_by_python() {
        for (key, env) in KNOWN {
            let dk = DecryptionKey::new(key, KeyFormat::Raw).unwrap();
            assert_eq!(dk.open(env).unwrap().0.as_slice(), b"ApiKey-known-answer");
        }
        let nonce: [u8; 12] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            seal_for_tests(KNOWN[0].0, &nonce, b"ApiKey-known-answer").unwrap(),
            KNOWN[0].1
        );
    }

    #[test]
    fn round_trip_in_each_key_size() {
        for key in [&KEY32[..16], &KEY32[..24], KEY32] {
            let env = seal_for_tests(key, &[7; 12], b"secret-value").unwrap();
            let dk = DecryptionKey::new(key, KeyFormat::Raw).unwrap();
            let (plain, f) = dk.open(&env).unwrap();
            assert_eq!(plain.as_slice(), b"secret-value");
            assert_eq!(f, KeyFormat::Raw);
        }
    }

    #[test]
    fn auto_reports_the_encoding_that_opened() {
        let key = [0x11u8; 32];
        let env = seal_for_tests(&key, &[1; 12], b"v").unwrap();
        let hex_text = hex::encode(key);
        let dk = DecryptionKey::new(hex_text.as_bytes(), KeyFormat::Auto).unwrap();
        assert_eq!(dk.formats(), vec![KeyFormat::Hex, KeyFormat::Sha256]);
        assert_eq!(dk.open(&env).unwrap().1, KeyFormat::Hex);
        let b64 = STANDARD.encode(key);
        let dk = DecryptionKey::new(b64.as_bytes(), KeyFormat::Auto).unwrap();
        assert_eq!(dk.open(&env).unwrap().1, KeyFormat::Base64);
        let pass = b"correct horse battery staple";
        let env = seal_for_tests(&Sha256::digest(pass), &[1; 12], b"v").unwrap();
        let dk = DecryptionKey::new(pass, KeyFormat::Auto).unwrap();
        assert_eq!(dk.open(&env).unwrap().1, KeyFormat::Sha256);
    }

    #[test]
    fn rejects_bad_keys_in_explicit_formats() {
        assert_eq!(DecryptionKey::new(b"", KeyFormat::Auto).unwrap_err(), KeyError::Empty);
        assert_eq!(
            DecryptionKey::new(&[b'a'; 15], KeyFormat::Raw).unwrap_err(),
            KeyError::RawLength(15)
        );
        assert_eq!(
            DecryptionKey::new(&[b'a'; 63], KeyFormat::Hex).unwrap_err(),
            KeyError::HexLength(63)
        );
        assert_eq!(
            DecryptionKey::new(b"zz", KeyFormat::Hex).unwrap_err(),
            KeyError::HexDigit(0)
        );
        assert_eq!(
            DecryptionKey::new(b"%%%%", KeyFormat::Base64).unwrap_err(),
            KeyError::Base64Syntax
        );
        assert_eq!(
            DecryptionKey::new(b"YWJj", KeyFormat::Base64).unwrap_err(),
            KeyError::Base64Length(3)
        );
    }

    #[test]
    fn malformed_envelopes_are_told_apart_from_auth_failures() {
        let dk = DecryptionKey::new(KEY32, KeyFormat::Raw).unwrap();
        assert_eq!(dk.open("not base64!").unwrap_err(), OpenError::Base64);
        assert_eq!(
            dk.open(&STANDARD.encode([0u8; 27])).unwrap_err(),
            OpenError::TooShort(27)
        );
        assert_eq!(
            dk.open(&STANDARD.encode([0u8; 28])).unwrap_err(),
            OpenError::Authentication
        );
        let env = seal_for_tests(KEY32, &[7; 12], b"x").unwrap();
        let mut raw = STANDARD.decode(&env).unwrap();
        for i in [0, 12, raw.len() - 1] {
            raw[i] ^= 1;
            assert_eq!(dk.open(&STANDARD.encode(&raw)).unwrap_err(), OpenError::Authentication);
            raw[i] ^= 1;
        }
        assert_eq!(OpenError::Authentication.to_string(), AUTH_FAILED);
    }
}
