//! Short, non-reversible fingerprints that let operators compare secrets
//! without seeing them.

use sha2::{Digest, Sha256};
use std::fmt;

/// A short SHA-256 fingerprint of a secret, shown as `sha256:1a2b3c4d`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    /// Returns the fingerprint of `bytes`: the first four bytes of their SHA-256.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        let digest = Sha256::digest(bytes);
        Fingerprint([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256_prefix() {
        // sha256("abc") = ba7816bf...
        assert_eq!(Fingerprint::of(b"abc").to_string(), "sha256:ba7816bf");
    }
}
