//! Planning a rotation and journaling its progress, so that a rotation
//! killed at any point can be resumed and a finished one rerun harmlessly.
//!
//! A rotation moves each region through planned → verified (or blocked) →
//! sealed (the new version written as `pending`) → published (`current`, the
//! old version kept as `previous`). Every step writes its files atomically
//! and only then records the step in the journal, so a crash between the two
//! repeats a step whose result is already on disk; the repo's plaintext
//! digests make that repeat a no-op.
//!
//! Each region may get its own key: the journal records, per region, the
//! key's name, fingerprint, a salted digest (so that a resume is sure it has
//! the same key) and its IAM id. Keys a `--create-keys` run created in IAM
//! are listed too (ids only: IAM does not keep the values), so that a killed
//! run's keys can be found and deleted by `rotate --abort`. Before each
//! creation the run records its intent (region, key name, the run's random
//! marker, which it also puts into the key's IAM description): a run killed
//! after IAM created a key but before its id was recorded leaves an intent
//! without an id, and `rotate --abort` finds the key in IAM by its marker.

use crate::secrets_repo::layout::Digest;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The journal schema version written.
pub const SCHEMA: u32 = 2;

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

/// One region of an unfinished rotation: its stage and its new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    pub stage: Stage,
    pub key_name: String,
    /// The new key's fingerprint, for people.
    pub key_fingerprint: String,
    /// A salted HMAC of the new key, so that a resume is sure it has the same key.
    pub key_digest: Digest,
    /// The new key's IAM id, when known.
    #[serde(default)]
    pub iam_key_id: Option<String>,
}

/// A key a `--create-keys` run created in IAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedKey {
    pub region: String,
    pub key_name: String,
    pub iam_key_id: String,
    /// True once the run deleted it again (its region was not published).
    #[serde(default)]
    pub deleted: bool,
}

/// A key a `--create-keys` run is about to create in IAM, recorded before
/// IAM is asked: until the key's id is recorded (and the intent dropped),
/// IAM may hold a key nobody recorded, found by its name and the marker in
/// its description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreationIntent {
    pub region: String,
    pub key_name: String,
    /// The run's random marker, carried in the key's IAM description.
    pub marker: String,
    /// The description the key is created with.
    pub description: String,
    /// The IAM id of the service ID the key is created for (whose keys are listed to find it).
    pub owner_iam_id: String,
    pub at: DateTime<Utc>,
}

impl CreationIntent {
    /// Returns the description a key created under `marker` for `region` carries.
    pub fn describe(marker: &str, region: &str) -> String {
        format!("rekey rotation {marker} region {region}")
    }

    /// Returns true when an IAM key with this name and description is the
    /// one this intent may have created.
    pub fn matches(&self, name: &str, description: Option<&str>) -> bool {
        name == self.key_name && description.is_some_and(|d| d.split_whitespace().any(|w| w == self.marker))
    }
}

/// An unfinished rotation, as recorded in the repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub schema: u32,
    pub started_at: DateTime<Utc>,
    pub regions: BTreeMap<String, RegionEntry>,
    /// Keys this rotation created in IAM (`--create-keys`).
    #[serde(default)]
    pub created: Vec<CreatedKey>,
    /// Creations asked of IAM whose key id is not recorded yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<CreationIntent>,
    /// The schema of an older rekey's journal this was read from: such a
    /// rotation can only be discarded (`--abort`), not resumed.
    #[serde(skip)]
    pub legacy_schema: Option<u32>,
}

/// The journal of rekey versions that rotated every region to one key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalV1 {
    #[allow(dead_code)]
    schema: u32,
    key_name: String,
    key_fingerprint: String,
    key_digest: Digest,
    started_at: DateTime<Utc>,
    regions: BTreeMap<String, Stage>,
}

#[derive(Deserialize)]
struct SchemaOnly {
    schema: u32,
}

/// A journal that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{file}: not a rotation journal: {reason}")]
    Bad { file: String, reason: String },
}

impl Journal {
    /// Starts an empty journal.
    pub fn new(now: DateTime<Utc>) -> Journal {
        Journal {
            schema: SCHEMA,
            started_at: now,
            regions: BTreeMap::new(),
            created: Vec::new(),
            intents: Vec::new(),
            legacy_schema: None,
        }
    }

    /// Records that `region` is to be rotated to a key (stage `Planned`).
    pub fn plan(
        &mut self,
        region: &str,
        key_name: &str,
        key_fingerprint: String,
        key_digest: Digest,
        iam_key_id: Option<String>,
    ) {
        self.regions.insert(
            region.to_owned(),
            RegionEntry {
                stage: Stage::Planned,
                key_name: key_name.to_owned(),
                key_fingerprint,
                key_digest,
                iam_key_id,
            },
        );
    }

    /// Parses a journal; `file` names it in errors. A journal of an older
    /// schema (one key for every region) is read for `--abort` only: its
    /// `legacy_schema` is set.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Journal, JournalError> {
        let bad = |reason: String| JournalError::Bad {
            file: file.to_owned(),
            reason,
        };
        let probe: SchemaOnly = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        match probe.schema {
            SCHEMA => serde_json::from_slice(bytes).map_err(|e| bad(e.to_string())),
            1 => {
                let old: JournalV1 = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
                let regions = old
                    .regions
                    .into_iter()
                    .map(|(r, stage)| {
                        let entry = RegionEntry {
                            stage,
                            key_name: old.key_name.clone(),
                            key_fingerprint: old.key_fingerprint.clone(),
                            key_digest: old.key_digest.clone(),
                            iam_key_id: None,
                        };
                        (r, entry)
                    })
                    .collect();
                Ok(Journal {
                    schema: SCHEMA,
                    started_at: old.started_at,
                    regions,
                    created: Vec::new(),
                    intents: Vec::new(),
                    legacy_schema: Some(1),
                })
            }
            other => Err(bad(format!("schema: unsupported version {other}, expected {SCHEMA}"))),
        }
    }

    /// Renders the journal as pretty JSON with a trailing newline.
    pub fn render(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Returns true when the journal's entry for `region` (if any) is for
    /// this key name and key.
    pub fn is_for(&self, region: &str, key_name: &str, key: &[u8]) -> bool {
        self.regions
            .get(region)
            .is_none_or(|e| e.key_name == key_name && e.key_digest.matches(key))
    }

    /// Returns a region's stage (`Planned` when the journal does not list it).
    pub fn stage(&self, region: &str) -> Stage {
        self.regions.get(region).map_or(Stage::Planned, |e| e.stage)
    }

    /// Records a region's stage (a region the journal does not list is ignored).
    pub fn set(&mut self, region: &str, stage: Stage) {
        if let Some(e) = self.regions.get_mut(region) {
            e.stage = stage;
        }
    }

    /// The distinct key names, in order, for messages.
    pub fn key_names(&self) -> String {
        let names: std::collections::BTreeSet<&str> = self.regions.values().map(|e| e.key_name.as_str()).collect();
        names.into_iter().collect::<Vec<_>>().join(", ")
    }

    /// The distinct key fingerprints, in order, for messages.
    pub fn key_fingerprints(&self) -> String {
        let fps: std::collections::BTreeSet<&str> = self.regions.values().map(|e| e.key_fingerprint.as_str()).collect();
        fps.into_iter().collect::<Vec<_>>().join(", ")
    }

    /// The keys created in IAM and not deleted again.
    pub fn undeleted_created(&self) -> Vec<&CreatedKey> {
        self.created.iter().filter(|c| !c.deleted).collect()
    }
}

/// One rotated region as the commit message lists it.
pub struct Rotated {
    pub region: String,
    pub key_name: String,
    pub key_fingerprint: String,
    pub old_key_fingerprint: Option<String>,
}

/// The commit message of a rotation: regions, key names and fingerprints, never keys.
pub fn commit_message(rotated: &[Rotated]) -> String {
    let regions: Vec<&str> = rotated.iter().map(|r| r.region.as_str()).collect();
    let names: std::collections::BTreeSet<&str> = rotated.iter().map(|r| r.key_name.as_str()).collect();
    let subject = if names.len() == 1 {
        format!(
            "Rotate registry pull secrets of {} to {}",
            regions.join(", "),
            names.iter().next().copied().unwrap_or_default()
        )
    } else {
        format!(
            "Rotate registry pull secrets of {} to new per-region keys",
            regions.join(", ")
        )
    };
    let mut msg = format!(
        "{subject}\n\nEach region's new key pulled the probe image from every host of its region\nbefore it was sealed:\n\n"
    );
    for r in rotated {
        let old = r.old_key_fingerprint.as_deref().unwrap_or("none");
        msg.push_str(&format!(
            "  {}: {} ({old} -> {})\n",
            r.region, r.key_name, r.key_fingerprint
        ));
    }
    msg.push_str("\nThe replaced versions are kept as previous: `rekey rollback` restores them.\n");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn journal_round_trips_and_knows_each_regions_key() {
        let mut j = Journal::new(now());
        j.plan(
            "jp",
            "k-ap-north-20261123",
            "sha256:1a2b3c4d".into(),
            Digest::compute(&[7; 32], b"jp-key"),
            Some("ApiKey-1".into()),
        );
        j.plan(
            "us",
            "k-us-east-20261123",
            "sha256:5e6f7a8b".into(),
            Digest::compute(&[8; 32], b"us-key"),
            None,
        );
        j.set("jp", Stage::Sealed);
        j.created.push(CreatedKey {
            region: "jp".into(),
            key_name: "k-ap-north-20261123".into(),
            iam_key_id: "ApiKey-1".into(),
            deleted: false,
        });
        let back = Journal::parse(&j.render(), "j.json").unwrap();
        assert_eq!(back, j);
        assert_eq!(back.stage("jp"), Stage::Sealed);
        assert_eq!(back.stage("us"), Stage::Planned);
        assert_eq!(back.stage("de"), Stage::Planned);
        assert!(back.is_for("jp", "k-ap-north-20261123", b"jp-key"));
        assert!(!back.is_for("jp", "k-ap-north-20261123", b"us-key"));
        assert!(!back.is_for("us", "k-ap-north-20261123", b"us-key"));
        assert!(
            back.is_for("de", "anything", b"any"),
            "a region the journal does not list"
        );
        assert_eq!(back.undeleted_created().len(), 1);
        let mut k = j.clone();
        k.intents.push(CreationIntent {
            region: "us".into(),
            key_name: "k-us-east-20261123".into(),
            marker: "rk-0011aabb".into(),
            description: CreationIntent::describe("rk-0011aabb", "us"),
            owner_iam_id: "iam-ServiceId-1".into(),
            at: now(),
        });
        assert_eq!(Journal::parse(&k.render(), "j.json").unwrap(), k);
        assert!(
            !String::from_utf8(j.render()).unwrap().contains("intents"),
            "no intents, no field"
        );
        assert!(!String::from_utf8(j.render()).unwrap().contains("jp-key"));
        let e = Journal::parse(b"{\"schema\": 2}", "j.json").unwrap_err();
        assert!(e.to_string().starts_with("j.json: not a rotation journal"), "{e}");
        let e = Journal::parse(b"{\"schema\": 9}", "j.json").unwrap_err();
        assert!(e.to_string().contains("unsupported version 9"), "{e}");
    }

    #[test]
    fn an_intent_matches_its_name_and_marker_only() {
        let i = CreationIntent {
            region: "jp".into(),
            key_name: "k-ap-north-20261123".into(),
            marker: "rk-0011aabb".into(),
            description: CreationIntent::describe("rk-0011aabb", "jp"),
            owner_iam_id: "iam-ServiceId-1".into(),
            at: now(),
        };
        assert!(i.matches("k-ap-north-20261123", Some(&i.description)));
        assert!(!i.matches("k-ap-north-20261123", Some("rekey rotation rk-0011aabbcc region jp")));
        assert!(!i.matches("k-ap-north-20261123", None));
        assert!(!i.matches("k-ap-north-20261124", Some(&i.description)));
    }

    #[test]
    fn an_old_schema_journal_is_read_for_abort_only() {
        let digest = Digest::compute(&[7; 32], b"k");
        let v1 = serde_json::json!({
            "schema": 1, "key_name": "k-20261122", "key_fingerprint": "sha256:00000000",
            "key_digest": digest, "started_at": "2026-11-22T10:00:00Z",
            "regions": {"jp": "sealed", "us": "verified"},
        });
        let j = Journal::parse(v1.to_string().as_bytes(), "j.json").unwrap();
        assert_eq!(j.legacy_schema, Some(1));
        assert_eq!(j.stage("jp"), Stage::Sealed);
        assert_eq!(j.key_names(), "k-20261122");
        assert!(j.is_for("us", "k-20261122", b"k"));
    }

    #[test]
    fn commit_message_names_each_regions_key_and_fingerprints_only() {
        let m = commit_message(&[
            Rotated {
                region: "jp".into(),
                key_name: "k-ap-north-1".into(),
                key_fingerprint: "sha256:22222222".into(),
                old_key_fingerprint: Some("sha256:11111111".into()),
            },
            Rotated {
                region: "us".into(),
                key_name: "k-us-east-1".into(),
                key_fingerprint: "sha256:33333333".into(),
                old_key_fingerprint: None,
            },
        ]);
        assert!(
            m.starts_with("Rotate registry pull secrets of jp, us to new per-region keys\n"),
            "{m}"
        );
        assert!(
            m.contains("  jp: k-ap-north-1 (sha256:11111111 -> sha256:22222222)\n"),
            "{m}"
        );
        assert!(m.contains("  us: k-us-east-1 (none -> sha256:33333333)\n"), "{m}");
        let one = commit_message(&[Rotated {
            region: "jp".into(),
            key_name: "k-1".into(),
            key_fingerprint: "sha256:22222222".into(),
            old_key_fingerprint: None,
        }]);
        assert!(one.starts_with("Rotate registry pull secrets of jp to k-1\n"), "{one}");
    }
}
