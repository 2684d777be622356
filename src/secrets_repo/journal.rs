//! Planning a rotation and journaling its progress, so that a rotation
//! killed at any point can be resumed and a finished one rerun harmlessly.
//!
//! A rotation moves each region through planned → verified (or blocked) →
//! sealed (the new version written as `pending`) → published (`current`, the
//! old version kept as `previous`). Every step writes its files atomically
//! and only then records the step in the journal, so a crash between the two
//! repeats a step whose result is already on disk; the repo's plaintext
//! digests make that repeat a no-op.

use crate::secrets_repo::layout::Digest;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The journal schema version written.
pub const SCHEMA: u32 = 1;

/// Where a region stands in a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Planned,
    /// A host failed the pull check: the region is not published.
    Blocked,
    Verified,
    /// The new version is in the repo as `pending`.
    Sealed,
    /// The new version is `current`.
    Published,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Planned => "planned",
            Stage::Blocked => "blocked",
            Stage::Verified => "verified",
            Stage::Sealed => "sealed",
            Stage::Published => "published",
        })
    }
}

/// An unfinished rotation, as recorded in the repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub schema: u32,
    pub key_name: String,
    /// The new key's fingerprint, for people.
    pub key_fingerprint: String,
    /// A salted HMAC of the new key, so that a resume is sure it has the same key.
    pub key_digest: Digest,
    pub started_at: DateTime<Utc>,
    pub regions: BTreeMap<String, Stage>,
}

/// A journal that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{file}: not a rotation journal: {reason}")]
    Bad { file: String, reason: String },
}

impl Journal {
    /// Starts a journal for rotating `regions` to a key.
    pub fn new(
        key_name: &str,
        key_fingerprint: String,
        key_digest: Digest,
        now: DateTime<Utc>,
        regions: &[String],
    ) -> Journal {
        Journal {
            schema: SCHEMA,
            key_name: key_name.to_owned(),
            key_fingerprint,
            key_digest,
            started_at: now,
            regions: regions.iter().map(|r| (r.clone(), Stage::Planned)).collect(),
        }
    }

    /// Parses a journal; `file` names it in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Journal, JournalError> {
        let bad = |reason: String| JournalError::Bad {
            file: file.to_owned(),
            reason,
        };
        let journal: Journal = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if journal.schema != SCHEMA {
            return Err(bad(format!(
                "schema: unsupported version {}, expected {SCHEMA}",
                journal.schema
            )));
        }
        Ok(journal)
    }

    /// Renders the journal as pretty JSON with a trailing newline.
    pub fn render(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Returns true when the journal is for this key name and key.
    pub fn is_for(&self, key_name: &str, key: &[u8]) -> bool {
        self.key_name == key_name && self.key_digest.matches(key)
    }

    /// Returns a region's stage (`Planned` when the journal does not list it).
    pub fn stage(&self, region: &str) -> Stage {
        self.regions.get(region).copied().unwrap_or(Stage::Planned)
    }

    /// Records a region's stage.
    pub fn set(&mut self, region: &str, stage: Stage) {
        self.regions.insert(region.to_owned(), stage);
    }
}

/// The commit message of a rotation: regions, key name and fingerprints, never keys.
pub fn commit_message(key_name: &str, key_fingerprint: &str, rotated: &[(String, Option<String>)]) -> String {
    let names: Vec<&str> = rotated.iter().map(|(r, _)| r.as_str()).collect();
    let mut msg = format!(
        "Rotate registry pull secrets of {} to {key_name}\n\nThe new key {key_name} ({key_fingerprint}) pulled the probe image from every\nhost of these regions before it was sealed:\n\n",
        names.join(", ")
    );
    for (region, old) in rotated {
        let old = old.as_deref().unwrap_or("none");
        msg.push_str(&format!("  {region}: {old} -> {key_fingerprint}\n"));
    }
    msg.push_str("\nThe replaced versions are kept as previous: `rekey rollback` restores them.\n");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_knows_its_key() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let digest = Digest::compute(&[7; 32], b"new-key");
        let mut j = Journal::new(
            "k-20261123",
            "sha256:1a2b3c4d".into(),
            digest,
            now,
            &["jp".into(), "us".into()],
        );
        j.set("jp", Stage::Sealed);
        let back = Journal::parse(&j.render(), "j.json").unwrap();
        assert_eq!(back, j);
        assert_eq!(back.stage("jp"), Stage::Sealed);
        assert_eq!(back.stage("de"), Stage::Planned);
        assert!(back.is_for("k-20261123", b"new-key"));
        assert!(!back.is_for("k-20261123", b"other-key"));
        assert!(!back.is_for("k-20261124", b"new-key"));
        let e = Journal::parse(b"{\"schema\": 1}", "j.json").unwrap_err();
        assert!(e.to_string().starts_with("j.json: not a rotation journal"), "{e}");
    }

    #[test]
    fn commit_message_names_fingerprints_only() {
        let m = commit_message(
            "k-1",
            "sha256:22222222",
            &[("jp".into(), Some("sha256:11111111".into())), ("us".into(), None)],
        );
        assert!(m.starts_with("Rotate registry pull secrets of jp, us to k-1\n"));
        assert!(m.contains("  jp: sha256:11111111 -> sha256:22222222\n"));
        assert!(m.contains("  us: none -> sha256:22222222\n"));
    }
}
