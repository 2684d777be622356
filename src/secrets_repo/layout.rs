//! The secrets repo: where each encrypted secret lives, what its metadata
//! says, and how a secret moves through the rotation states.
//!
//! Layout (relative to the repo root):
//!
//! ```text
//! .rekey/recipients.asc                        the recipient policy: every file is encrypted to exactly these
//! registry/<NAME>.gpg                          the current version: the one the build tool serves
//! registry/<NAME>.previous.gpg                 the version it replaced (state previous), kept for rollback
//! registry/<NAME>.pending.gpg                  a version sealed but not yet promoted (state pending), if any
//! registry/<NAME>.meta.json                    metadata of the versions
//! ```
//!
//! A pending version is never served: it stays in `<NAME>.pending.gpg`
//! until sealing the same plaintext as current promotes it (its file moves
//! to `<NAME>.gpg`, the current one to `<NAME>.previous.gpg`, and the
//! pending file goes, in one write). Metadata schema 2 added `pending`;
//! schema 1 files (no `pending`, the active version possibly pending) are
//! read as long as their active version is current.
//!
//! `<NAME>` is the build environment variable the secret becomes, e.g.
//! `JP_REGISTRY_PULL_SECRET_64` (the build tool base64-encodes `_64`
//! variables). Functions here work on values: the cli reads and writes the
//! files, and passes the time and the random salt.
//!
//! Stable diffs: the metadata keeps an HMAC-SHA256 of the plaintext under a
//! random per-version salt (never a bare hash of a secret). Sealing the same
//! plaintext to the same recipients again leaves every file as it is.

use crate::fingerprint::Fingerprint;
use crate::secrets_repo::pgp::{self, PgpError, RecipientSet};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The recipient policy keyring, relative to the repo root.
pub const RECIPIENTS_FILE: &str = ".rekey/recipients.asc";
/// The allowed signers keyring, relative to the repo root: once it exists,
/// every secret must carry a statement signed by one of these certificates.
pub const SIGNERS_FILE: &str = ".rekey/signers.asc";
/// The directory holding registry pull secrets, relative to the repo root.
pub const REGISTRY_DIR: &str = "registry";
/// The metadata schema version written (2: `pending` may be present).
pub const SCHEMA: u32 = 2;
/// The oldest metadata schema read (1: no `pending`).
pub const MIN_SCHEMA: u32 = 1;

/// Why a repo operation cannot proceed. Never carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{file}: {reason}")]
    BadMetadata { file: String, reason: String },
    #[error("{0}: no previous version to roll back to")]
    NoPrevious(String),
    #[error("{0}: has no pending version")]
    NotPending(String),
    #[error(
        "{0}: has no current version: seal its first version as current (a pending version needs a current one it does not replace yet)"
    )]
    NoCurrent(String),
    #[error("{name}: the decrypted plaintext does not match the digest in the metadata")]
    DigestMismatch { name: String },
    #[error(transparent)]
    Pgp(#[from] PgpError),
}

/// Where a version stands in a rotation (after AWS Secrets Manager's staging labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Written, not yet verified in use; a later rotation step promotes it.
    Pending,
    /// In use.
    Current,
    /// Replaced, kept so that a rotation can be rolled back.
    Previous,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Pending => "pending",
            State::Current => "current",
            State::Previous => "previous",
        })
    }
}

/// A keyed digest of a plaintext: HMAC-SHA256 under a random salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    /// Always `hmac-sha256`.
    pub algorithm: String,
    /// The 32-byte salt (the HMAC key), hex.
    pub salt: String,
    /// The HMAC of the plaintext, hex.
    pub value: String,
}

impl Digest {
    /// Returns the digest of `plaintext` under `salt`.
    pub fn compute(salt: &[u8; 32], plaintext: &[u8]) -> Digest {
        Digest {
            algorithm: "hmac-sha256".to_owned(),
            salt: hex::encode(salt),
            value: hex::encode(hmac(salt, plaintext)),
        }
    }

    /// Returns true when `plaintext` has this digest (constant-time compare).
    pub fn matches(&self, plaintext: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let (Ok(salt), Ok(value)) = (hex::decode(&self.salt), hex::decode(&self.value)) else {
            return false;
        };
        self.algorithm == "hmac-sha256" && hmac(&salt, plaintext).as_slice().ct_eq(&value).into()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// One encrypted version of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub state: State,
    /// The encrypted file, relative to the metadata file's directory.
    pub file: String,
    /// The API key's name (e.g. `iks-...-prod-ap-north-20210625`), if given.
    pub key_name: Option<String>,
    /// The API key's fingerprint (`sha256:1a2b3c4d`), never the key.
    pub key_fingerprint: String,
    pub rotated_at: DateTime<Utc>,
    /// Fingerprints of the recipient certificates, sorted.
    pub recipients: Vec<String>,
    /// Key IDs the file's session keys are addressed to, sorted.
    pub recipient_key_ids: Vec<String>,
    pub rekey_version: String,
    pub plaintext_digest: Digest,
    /// The key's IAM id (`ApiKey-…`), never the key; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_key_id: Option<String>,
    /// When rekey retired the key in IAM (`rekey keys retire`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<DateTime<Utc>>,
    /// How it was retired: `deleted` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_how: Option<RetiredHow>,
    /// When a rollback replaced this (newer) version by the one before it:
    /// a later `rollback` to "previous" leaves it as previous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// The signed statement about this version and its detached signature
    /// (absent in an unsigned repo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
}

/// How a key was retired in IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetiredHow {
    /// Deleted: gone for good.
    Deleted,
    /// Disabled: kept, but it cannot authenticate.
    Disabled,
}

impl RetiredHow {
    /// Returns the word as written in the metadata.
    pub fn name(self) -> &'static str {
        match self {
            RetiredHow::Deleted => "deleted",
            RetiredHow::Disabled => "disabled",
        }
    }
}

/// Returns true when `id` looks like an IAM API key id (`ApiKey-` and up to
/// 120 of `A-Za-z0-9-`): what metadata may name in IAM, nothing else.
pub fn is_iam_key_id(id: &str) -> bool {
    id.strip_prefix("ApiKey-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 120 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

fn check_iam_fields(v: &Version, field: &str) -> Result<(), String> {
    if let Some(id) = &v.iam_key_id
        && !is_iam_key_id(id)
    {
        return Err(format!(
            "{field}.iam_key_id: not an IAM API key id (ApiKey- and letters, digits, dashes)"
        ));
    }
    if v.retired_at.is_some() != v.retired_how.is_some() {
        return Err(format!(
            "{field}.retired_at and {field}.retired_how: give both or neither"
        ));
    }
    Ok(())
}

/// A canonical statement (see `signing::Statement`) and its armored
/// detached OpenPGP signature, as stored in a version's metadata. The
/// statement's bytes are exactly the UTF-8 of `statement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub statement: String,
    pub signature: String,
}

impl Version {
    /// Returns the version number its statement claims, if it has a
    /// parseable one (unverified: for numbering and display only).
    pub fn statement_version(&self) -> Option<u64> {
        let s = self.signed.as_ref()?;
        crate::secrets_repo::signing::Statement::parse(s.statement.as_bytes())
            .ok()
            .map(|st| st.version)
    }
}

/// The metadata file of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub schema: u32,
    /// The environment variable name, e.g. `JP_REGISTRY_PULL_SECRET_64`.
    pub name: String,
    pub region: String,
    /// The version in `<NAME>.gpg`: always current (the one served).
    pub active: Version,
    /// The version in `<NAME>.previous.gpg`, if any.
    pub previous: Option<Version>,
    /// The version in `<NAME>.pending.gpg`, if any: sealed, not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Version>,
}

impl Metadata {
    /// Parses a metadata file; errors name the file and the field.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Metadata, RepoError> {
        let bad = |reason: String| RepoError::BadMetadata {
            file: file.to_owned(),
            reason,
        };
        let meta: Metadata = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if !(MIN_SCHEMA..=SCHEMA).contains(&meta.schema) {
            return Err(bad(format!(
                "schema: unsupported version {}, expected {MIN_SCHEMA} to {SCHEMA}",
                meta.schema
            )));
        }
        if meta.schema < 2 && meta.pending.is_some() {
            return Err(bad("pending: needs schema 2".to_owned()));
        }
        match meta.active.state {
            State::Current => {}
            State::Pending => {
                return Err(bad(format!(
                    "active.state: is pending, but {} is the file the build tool serves and must hold the current version; a pending version belongs in {} (`rekey seal --pending`). Restore {} and this file from the commit before the pending seal (git checkout), then seal again",
                    active_file(&meta.name),
                    pending_file(&meta.name),
                    active_file(&meta.name)
                )));
            }
            State::Previous => return Err(bad("active.state: must be current".to_owned())),
        }
        if let Some(p) = &meta.previous
            && p.state != State::Previous
        {
            return Err(bad("previous.state: must be previous".to_owned()));
        }
        if let Some(p) = &meta.pending
            && p.state != State::Pending
        {
            return Err(bad("pending.state: must be pending".to_owned()));
        }
        check_iam_fields(&meta.active, "active").map_err(bad)?;
        if let Some(p) = &meta.previous {
            check_iam_fields(p, "previous").map_err(bad)?;
        }
        if let Some(p) = &meta.pending {
            check_iam_fields(p, "pending").map_err(bad)?;
        }
        // Only a previous version can have been retired or rolled back
        // from; on the served or the pending version these unsigned fields
        // would ride along into `previous` and later stop `keys retire`
        // (an "already retired" key that IAM still accepts).
        if meta.active.retired_at.is_some() || meta.active.retired_how.is_some() {
            return Err(bad(
                "active.retired_at: the served version's key cannot have been retired in IAM (only a previous version's can)"
                    .to_owned(),
            ));
        }
        if let Some(p) = &meta.pending {
            for (set, f) in [
                (p.retired_at.is_some() || p.retired_how.is_some(), "retired_at"),
                (p.rolled_back_at.is_some(), "rolled_back_at"),
            ] {
                if set {
                    return Err(bad(format!(
                        "pending.{f}: a version that was never served cannot have been retired or rolled back from"
                    )));
                }
            }
        }
        Ok(meta)
    }

    /// Returns each version it describes with its slot: active, then
    /// previous and pending when present.
    pub fn versions(&self) -> impl Iterator<Item = (&Version, Slot)> {
        std::iter::once((&self.active, Slot::Active))
            .chain(self.previous.as_ref().map(|p| (p, Slot::Previous)))
            .chain(self.pending.as_ref().map(|p| (p, Slot::Pending)))
    }

    /// Returns the highest version number any of its statements claims (0
    /// when none is signed): a new statement's number is one more.
    pub fn latest_version(&self) -> u64 {
        let active = self.active.statement_version().unwrap_or(0);
        let previous = self.previous.as_ref().and_then(Version::statement_version).unwrap_or(0);
        let pending = self.pending.as_ref().and_then(Version::statement_version).unwrap_or(0);
        active.max(previous).max(pending)
    }

    /// Renders the metadata as pretty JSON with a trailing newline.
    pub fn render(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Checks that metadata read from `<name>.meta.json` (`file` in errors)
    /// describes `name` and names only its pinned files: rekey derives every
    /// path from the secret's name, so a `file` field that says anything
    /// else (another file, a path outside the repo) is refused, never followed.
    pub fn check_pinned(&self, name: &str, file: &str) -> Result<(), RepoError> {
        let bad = |reason: String| RepoError::BadMetadata {
            file: file.to_owned(),
            reason,
        };
        if self.name != name {
            return Err(bad(format!("name: must be {name}, the name in the file name")));
        }
        if self.active.file != active_file(name) {
            return Err(bad(format!(
                "active.file: must be {} (rekey reads only the file named after the secret)",
                active_file(name)
            )));
        }
        if let Some(p) = &self.previous
            && p.file != previous_file(name)
        {
            return Err(bad(format!(
                "previous.file: must be {} (rekey reads only the file named after the secret)",
                previous_file(name)
            )));
        }
        if let Some(p) = &self.pending
            && p.file != pending_file(name)
        {
            return Err(bad(format!(
                "pending.file: must be {} (rekey reads only the file named after the secret)",
                pending_file(name)
            )));
        }
        Ok(())
    }
}

/// One of the files of a secret, each at a path pinned by the secret's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `<NAME>.gpg`
    Active,
    /// `<NAME>.previous.gpg`
    Previous,
    /// `<NAME>.pending.gpg`
    Pending,
    /// `<NAME>.meta.json`
    Meta,
}

impl Slot {
    /// Every slot.
    pub const ALL: [Slot; 4] = [Slot::Active, Slot::Previous, Slot::Pending, Slot::Meta];

    /// Returns the file name of `name`'s file in this slot.
    pub fn file(self, name: &str) -> String {
        match self {
            Slot::Active => active_file(name),
            Slot::Previous => previous_file(name),
            Slot::Pending => pending_file(name),
            Slot::Meta => meta_file(name),
        }
    }
}

/// Returns true when `name` is a secret name rekey accepts: 1 to 128 of
/// `A-Z`, `0-9` and `_`, so a name can never spell a path.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Returns the secret and slot a file name in `registry/` is pinned to, or
/// `None` when it is no file rekey knows.
pub fn parse_file_name(file: &str) -> Option<(String, Slot)> {
    let (stem, slot) = if let Some(stem) = file.strip_suffix(".previous.gpg") {
        (stem, Slot::Previous)
    } else if let Some(stem) = file.strip_suffix(".pending.gpg") {
        (stem, Slot::Pending)
    } else if let Some(stem) = file.strip_suffix(".meta.json") {
        (stem, Slot::Meta)
    } else {
        (file.strip_suffix(".gpg")?, Slot::Active)
    };
    is_secret_name(stem).then(|| (stem.to_owned(), slot))
}

/// Returns the environment variable name for a region's pull secret.
pub fn secret_name(region: &str) -> String {
    format!(
        "{}_REGISTRY_PULL_SECRET_64",
        region.to_ascii_uppercase().replace('-', "_")
    )
}

/// Returns the active file name (`<NAME>.gpg`).
pub fn active_file(name: &str) -> String {
    format!("{name}.gpg")
}

/// Returns the previous version's file name (`<NAME>.previous.gpg`).
pub fn previous_file(name: &str) -> String {
    format!("{name}.previous.gpg")
}

/// Returns the pending version's file name (`<NAME>.pending.gpg`).
pub fn pending_file(name: &str) -> String {
    format!("{name}.pending.gpg")
}

/// Returns the metadata file name (`<NAME>.meta.json`).
pub fn meta_file(name: &str) -> String {
    format!("{name}.meta.json")
}

/// What sealing a secret asks for.
pub struct SealRequest<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub plaintext: &'a [u8],
    pub key_name: Option<&'a str>,
    pub key_fingerprint: Fingerprint,
    /// The key's id in IAM, when known (recorded, never the key).
    pub iam_key_id: Option<&'a str>,
    /// `Pending` or `Current`.
    pub state: State,
    pub now: DateTime<Utc>,
    /// A fresh random salt for the plaintext digest.
    pub salt: [u8; 32],
    /// Signs the new version inside its encryption, when given.
    pub signer: Option<&'a crate::secrets_repo::signing::SigningKey>,
}

/// The secret as it is in the repo.
pub struct Existing<'a> {
    pub meta: &'a Metadata,
    /// The active version's encrypted bytes.
    pub active: &'a [u8],
    /// The pending version's encrypted bytes, when the metadata has one.
    pub pending: Option<&'a [u8]>,
}

/// The files to write for one secret (names come from the metadata).
#[derive(Debug)]
pub struct Rewrite {
    pub meta: Metadata,
    /// New contents of the active file, if it changes.
    pub active: Option<Vec<u8>>,
    /// New contents of the previous file, if it changes.
    pub previous: Option<Vec<u8>>,
    /// New contents of the pending file, if it changes. When `meta.pending`
    /// is `None`, the pending file is removed (in the same write).
    pub pending: Option<Vec<u8>>,
}

/// What to write for one secret.
#[derive(Debug)]
pub enum Plan {
    /// Same plaintext, same recipients, same state: write nothing.
    Unchanged,
    /// Write these files.
    Write(Box<Rewrite>),
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Plans sealing `req` into the repo, given what is there.
///
/// The same plaintext to the same recipients in the same place is not
/// rewritten. As `Pending`, a new plaintext goes to `<NAME>.pending.gpg`
/// only (replacing an older pending version, which was never served);
/// `<NAME>.gpg` and `<NAME>.previous.gpg` stay byte for byte. As
/// `Current`, the plaintext of the pending version promotes it: its file
/// moves to `<NAME>.gpg` as is (re-encrypted only when it is not addressed
/// to `recipients`), the current version becomes previous, the pending
/// file goes. Any other plaintext as `Current` replaces the current version
/// and drops a pending one (sealing as current decides what is served). A
/// secret with no current version has no pending step: `Pending` plans
/// nothing for it ([`Plan::Unchanged`]); seal it as current.
pub fn plan_seal(
    existing: Option<Existing<'_>>,
    req: &SealRequest<'_>,
    recipients: &RecipientSet,
) -> Result<Plan, RepoError> {
    let key_ids: Vec<String> = recipients.key_ids().into_iter().collect();
    let fingerprints = recipients.fingerprints();
    let addressed = |v: &Version| v.recipient_key_ids == key_ids && v.recipients == fingerprints;
    let fresh = |v: &Version| addressed(v) && v.plaintext_digest.matches(req.plaintext);
    let seal = || match req.signer {
        Some(key) => pgp::seal_signed(req.plaintext, recipients, key, req.now.into()),
        None => pgp::seal(req.plaintext, recipients),
    };
    let new_version = |state: State, file: String| Version {
        state,
        file,
        key_name: req.key_name.map(str::to_owned),
        key_fingerprint: req.key_fingerprint.to_string(),
        rotated_at: req.now,
        recipients: fingerprints.clone(),
        recipient_key_ids: key_ids.clone(),
        rekey_version: env!("CARGO_PKG_VERSION").to_owned(),
        plaintext_digest: Digest::compute(&req.salt, req.plaintext),
        iam_key_id: req.iam_key_id.map(str::to_owned),
        retired_at: None,
        retired_how: None,
        rolled_back_at: None,
        signed: None,
    };
    let Some(ex) = existing else {
        if req.state == State::Pending {
            return Ok(Plan::Unchanged);
        }
        return Ok(Plan::Write(Box::new(Rewrite {
            meta: Metadata {
                schema: SCHEMA,
                name: req.name.to_owned(),
                region: req.region.to_owned(),
                active: new_version(State::Current, active_file(req.name)),
                previous: None,
                pending: None,
            },
            active: Some(seal()?),
            previous: None,
            pending: None,
        })));
    };
    let mut meta = ex.meta.clone();
    meta.schema = SCHEMA;
    // The served version stays, but the set of files beside it changes: its
    // statement (which hashes them all) no longer holds. A signing caller
    // signs a new one (`authorship::sign_rewrite`).
    meta.active.signed = None;
    let demoted = || {
        let mut p = ex.meta.active.clone();
        p.state = State::Previous;
        p.file = previous_file(req.name);
        p
    };
    if req.state == State::Pending {
        let same_pending = ex.meta.pending.as_ref().is_some_and(&fresh) && ex.pending.is_some();
        if fresh(&ex.meta.active) || same_pending {
            return Ok(Plan::Unchanged);
        }
        meta.pending = Some(new_version(State::Pending, pending_file(req.name)));
        return Ok(Plan::Write(Box::new(Rewrite {
            meta,
            active: None,
            previous: None,
            pending: Some(seal()?),
        })));
    }
    if fresh(&ex.meta.active) {
        if ex.meta.pending.is_none() {
            return Ok(Plan::Unchanged);
        }
        // Settled on the current version: the pending one is dropped.
        meta.pending = None;
        return Ok(Plan::Write(Box::new(Rewrite {
            meta,
            active: None,
            previous: None,
            pending: None,
        })));
    }
    let (active, bytes) = match &ex.meta.pending {
        Some(p) if p.plaintext_digest.matches(req.plaintext) => {
            // Promotion: the pending version, as sealed, becomes current.
            let mut v = p.clone();
            v.state = State::Current;
            v.file = active_file(req.name);
            v.signed = None;
            // No statement vouches for the pending version's own fields
            // (only for its file's hash), so what names the key comes from
            // the caller, who holds the plaintext that matched its digest.
            v.key_fingerprint = req.key_fingerprint.to_string();
            if let Some(name) = req.key_name {
                v.key_name = Some(name.to_owned());
            }
            v.iam_key_id = req.iam_key_id.map(str::to_owned);
            v.retired_at = None;
            v.retired_how = None;
            v.rolled_back_at = None;
            let bytes = match ex.pending {
                Some(b) if addressed(p) => b.to_vec(),
                _ => {
                    v.recipients = fingerprints.clone();
                    v.recipient_key_ids = key_ids.clone();
                    seal()?
                }
            };
            (v, bytes)
        }
        _ => (new_version(State::Current, active_file(req.name)), seal()?),
    };
    meta.active = active;
    meta.previous = Some(demoted());
    meta.pending = None;
    Ok(Plan::Write(Box::new(Rewrite {
        meta,
        active: Some(bytes),
        previous: Some(ex.active.to_vec()),
        pending: None,
    })))
}

/// Rolls back: the previous version becomes current and the active one
/// becomes previous. Returns the metadata and the new (active, previous)
/// file contents, swapped from the given ones. A pending version is left
/// as it is (it was never served, and still awaits its promotion).
pub fn rollback(meta: &Metadata, active: &[u8], previous: &[u8]) -> Result<(Metadata, Vec<u8>, Vec<u8>), RepoError> {
    let Some(prev) = &meta.previous else {
        return Err(RepoError::NoPrevious(meta.name.clone()));
    };
    if let (Some(at), Some(how)) = (prev.retired_at, prev.retired_how) {
        return Err(RepoError::BadMetadata {
            file: meta_file(&meta.name),
            reason: format!(
                "previous: its key was {} in IAM at {}; rolling back would publish a key that cannot authenticate",
                how.name(),
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        });
    }
    let mut new_active = prev.clone();
    new_active.state = State::Current;
    new_active.file = active_file(&meta.name);
    let mut new_previous = meta.active.clone();
    new_previous.state = State::Previous;
    new_previous.file = previous_file(&meta.name);
    let meta = Metadata {
        active: new_active,
        previous: Some(new_previous),
        ..meta.clone()
    };
    Ok((meta, previous.to_vec(), active.to_vec()))
}

/// Plans re-encrypting a secret's versions to `recipients`. `plain_active`
/// and `previous`/`pending` (the key IDs each file is addressed to and its
/// plaintext) are the decrypted versions; each must match its metadata
/// digest. Returns `None` when all are already addressed to exactly
/// `recipients` (as `addressed_*` shows) and the metadata agrees;
/// otherwise rewrites only the versions that are not (the other files are
/// left as they are: `None` in the [`Rewrite`]).
pub fn plan_reencrypt(
    meta: &Metadata,
    addressed_active: &[String],
    plain_active: &[u8],
    previous: Option<(&[String], &[u8])>,
    pending: Option<(&[String], &[u8])>,
    recipients: &RecipientSet,
    signer: Option<(&crate::secrets_repo::signing::SigningKey, std::time::SystemTime)>,
) -> Result<Option<Rewrite>, RepoError> {
    let key_ids: Vec<String> = recipients.key_ids().into_iter().collect();
    let fingerprints = recipients.fingerprints();
    let up_to_date = |v: &Version, addressed: &[String]| {
        v.recipient_key_ids == key_ids && v.recipients == fingerprints && sorted(addressed.to_vec()) == key_ids
    };
    let mismatch = || RepoError::DigestMismatch {
        name: meta.name.clone(),
    };
    if !meta.active.plaintext_digest.matches(plain_active) {
        return Err(mismatch());
    }
    // Each file on its own: one already addressed to the policy (and so
    // described) is kept byte for byte.
    let active_fresh = up_to_date(&meta.active, addressed_active);
    let mut previous_fresh = true;
    if let (Some(pv), Some((addressed, plain))) = (&meta.previous, previous) {
        if !pv.plaintext_digest.matches(plain) {
            return Err(mismatch());
        }
        previous_fresh = up_to_date(pv, addressed);
    }
    let mut pending_fresh = true;
    if let (Some(pv), Some((addressed, plain))) = (&meta.pending, pending) {
        if !pv.plaintext_digest.matches(plain) {
            return Err(mismatch());
        }
        pending_fresh = up_to_date(pv, addressed);
    }
    if active_fresh && previous_fresh && pending_fresh {
        return Ok(None);
    }
    let mut meta = meta.clone();
    let seal = |plain: &[u8]| match signer {
        Some((key, now)) => pgp::seal_signed(plain, recipients, key, now),
        None => pgp::seal(plain, recipients),
    };
    let active = if active_fresh {
        None
    } else {
        meta.active.recipients = fingerprints.clone();
        meta.active.recipient_key_ids = key_ids.clone();
        Some(seal(plain_active)?)
    };
    let previous = match (&mut meta.previous, previous) {
        (Some(pv), Some((_, plain))) if !previous_fresh => {
            pv.recipients = fingerprints.clone();
            pv.recipient_key_ids = key_ids.clone();
            Some(seal(plain)?)
        }
        _ => None,
    };
    let pending = match (&mut meta.pending, pending) {
        (Some(pv), Some((_, plain))) if !pending_fresh => {
            pv.recipients = fingerprints;
            pv.recipient_key_ids = key_ids;
            Some(seal(plain)?)
        }
        _ => None,
    };
    Ok(Some(Rewrite {
        meta,
        active,
        previous,
        pending,
    }))
}

/// Checks one encrypted file of a secret against the policy and metadata;
/// returns the key IDs it is addressed to (if readable) and its problems.
pub fn check_file(bytes: &[u8], version: Option<&Version>, recipients: &RecipientSet) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let key_ids: Vec<String> = recipients.key_ids().into_iter().collect();
    let addressed = match pgp::addressed_key_ids(bytes) {
        Ok(ids) => sorted(ids),
        Err(e) => {
            problems.push(e.to_string());
            if version.is_none() {
                problems.push("no metadata describes this file".to_owned());
            }
            return (Vec::new(), problems);
        }
    };
    if addressed != key_ids {
        // Name certificates by user ID and fingerprint, not only subkey IDs.
        let name = |k: &String| match recipients.certs.iter().find(|c| c.key_ids.contains(k)) {
            Some(c) => format!("{} (fingerprint {}, key ID {k})", c.name.user_id, c.name.fingerprint),
            None => format!("key ID {k} (no certificate in the policy)"),
        };
        let missing: Vec<String> = key_ids.iter().filter(|k| !addressed.contains(k)).map(name).collect();
        let extra: Vec<String> = addressed.iter().filter(|k| !key_ids.contains(k)).map(name).collect();
        problems.push(format!(
            "not addressed to exactly the policy set: missing [{}], not in policy [{}]",
            missing.join(", "),
            extra.join(", ")
        ));
    }
    match version {
        None => problems.push("no metadata describes this file".to_owned()),
        Some(v) => {
            if v.recipient_key_ids != addressed {
                problems.push(format!(
                    "metadata lists key IDs [{}] but the file is addressed to [{}]",
                    v.recipient_key_ids.join(", "),
                    addressed.join(", ")
                ));
            }
            if v.recipients != recipients.fingerprints() {
                problems.push(format!(
                    "metadata lists recipients [{}] but the policy holds [{}]",
                    v.recipients.join(", "),
                    recipients.fingerprints().join(", ")
                ));
            }
        }
    }
    (addressed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::CertBuilder;
    use std::time::{Duration, SystemTime};

    fn recipients(n: usize) -> RecipientSet {
        let certs: Vec<_> = (0..n)
            .map(|i| {
                CertBuilder::general_purpose(Some(format!("r{i} <r{i}@example.com>")))
                    .generate()
                    .unwrap()
                    .0
                    .strip_secret_key_material()
            })
            .collect();
        pgp::check_recipients(
            &certs,
            SystemTime::now(),
            pgp::Validity {
                min: None,
                warn: Duration::ZERO,
            },
        )
        .unwrap()
    }

    fn req<'a>(plaintext: &'a [u8], state: State) -> SealRequest<'a> {
        SealRequest {
            name: "JP_REGISTRY_PULL_SECRET_64",
            region: "jp",
            plaintext,
            key_name: Some("k-20260101"),
            key_fingerprint: Fingerprint::of(b"k"),
            iam_key_id: None,
            state,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            salt: [7; 32],
            signer: None,
        }
    }

    fn ex<'a>(meta: &'a Metadata, active: &'a [u8], pending: Option<&'a [u8]>) -> Existing<'a> {
        Existing { meta, active, pending }
    }

    fn written(plan: Plan) -> (Metadata, Option<Vec<u8>>, Option<Vec<u8>>) {
        match plan {
            Plan::Write(w) => (w.meta, w.active, w.previous),
            Plan::Unchanged => panic!("expected a write"),
        }
    }

    #[test]
    fn file_names_are_pinned_to_secret_names() {
        assert_eq!(
            parse_file_name("JP_X.previous.gpg"),
            Some(("JP_X".to_owned(), Slot::Previous))
        );
        assert_eq!(parse_file_name("JP_X.gpg"), Some(("JP_X".to_owned(), Slot::Active)));
        assert_eq!(parse_file_name("JP_X.meta.json"), Some(("JP_X".to_owned(), Slot::Meta)));
        assert_eq!(
            parse_file_name("JP_X.pending.gpg"),
            Some(("JP_X".to_owned(), Slot::Pending))
        );
        for slot in Slot::ALL {
            assert_eq!(parse_file_name(&slot.file("JP_X")), Some(("JP_X".to_owned(), slot)));
        }
        for bad in [
            "notes.txt",
            ".gpg",
            "../X.gpg",
            "jp.gpg",
            "A B.gpg",
            ".rekey-tmp-x",
            "X.gpg.bak",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert!(!is_secret_name(&"A".repeat(129)));
    }

    #[test]
    fn metadata_naming_another_file_is_refused() {
        let set = recipients(1);
        let (meta, _, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        meta.check_pinned("JP_REGISTRY_PULL_SECRET_64", "m.json").unwrap();
        let err = meta.check_pinned("US_REGISTRY_PULL_SECRET_64", "m.json").unwrap_err();
        assert!(err.to_string().starts_with("m.json: name: must be US_"), "{err}");
        for hostile in [
            "/proc/self/environ",
            "../../x",
            "JP_REGISTRY_PULL_SECRET_64.previous.gpg",
        ] {
            let mut m = meta.clone();
            m.active.file = hostile.to_owned();
            let err = m.check_pinned("JP_REGISTRY_PULL_SECRET_64", "m.json").unwrap_err();
            assert!(
                err.to_string()
                    .contains("active.file: must be JP_REGISTRY_PULL_SECRET_64.gpg"),
                "{err}"
            );
        }
    }

    #[test]
    fn names_follow_the_build_variable_convention() {
        assert_eq!(secret_name("jp"), "JP_REGISTRY_PULL_SECRET_64");
        assert_eq!(secret_name("us-east"), "US_EAST_REGISTRY_PULL_SECRET_64");
    }

    #[test]
    fn digest_is_salted_and_matches_only_its_plaintext() {
        let a = Digest::compute(&[1; 32], b"secret");
        let b = Digest::compute(&[2; 32], b"secret");
        assert_ne!(a.value, b.value);
        assert!(a.matches(b"secret"));
        assert!(!a.matches(b"secret2"));
    }

    #[test]
    fn reseal_of_same_plaintext_and_recipients_is_unchanged() {
        let set = recipients(1);
        let (meta, active, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let active = active.unwrap();
        assert!(matches!(
            plan_seal(Some(ex(&meta, &active, None)), &req(b"one", State::Current), &set).unwrap(),
            Plan::Unchanged
        ));
        // Sealing the served plaintext as pending is nothing to do either.
        assert!(matches!(
            plan_seal(Some(ex(&meta, &active, None)), &req(b"one", State::Pending), &set).unwrap(),
            Plan::Unchanged
        ));
        // Other recipients: rewritten.
        assert!(matches!(
            plan_seal(
                Some(ex(&meta, &active, None)),
                &req(b"one", State::Current),
                &recipients(2)
            )
            .unwrap(),
            Plan::Write(_)
        ));
    }

    fn write(plan: Plan) -> Rewrite {
        match plan {
            Plan::Write(w) => *w,
            Plan::Unchanged => panic!("expected a write"),
        }
    }

    #[test]
    fn a_pending_seal_writes_only_the_pending_file() {
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let w = write(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Pending), &set).unwrap());
        // `<NAME>.gpg` and `<NAME>.previous.gpg` are not written at all.
        assert!(w.active.is_none() && w.previous.is_none());
        let mut unsigned = m1.active.clone();
        unsigned.signed = None;
        assert_eq!(w.meta.active, unsigned, "the served version is unchanged");
        assert_eq!(w.meta.previous, None);
        let p = w.meta.pending.clone().unwrap();
        assert_eq!(p.state, State::Pending);
        assert_eq!(p.file, "JP_REGISTRY_PULL_SECRET_64.pending.gpg");
        assert!(p.plaintext_digest.matches(b"two"));
        assert_eq!(w.meta.schema, SCHEMA);
        let pending = w.pending.clone().unwrap();
        let back = Metadata::parse(&w.meta.render(), "m.json").unwrap();
        back.check_pinned("JP_REGISTRY_PULL_SECRET_64", "m.json").unwrap();
        // The same pending plaintext again: nothing to do.
        assert!(matches!(
            plan_seal(
                Some(ex(&w.meta, &a1, Some(&pending))),
                &req(b"two", State::Pending),
                &set
            )
            .unwrap(),
            Plan::Unchanged
        ));
        // A statement over the old set of files is not carried over.
        let mut signed = m1.clone();
        signed.active.signed = Some(Signed {
            statement: "s".into(),
            signature: "sig".into(),
        });
        let w = write(plan_seal(Some(ex(&signed, &a1, None)), &req(b"two", State::Pending), &set).unwrap());
        assert_eq!(w.meta.active.signed, None);
        // No current version yet: no pending step.
        assert!(matches!(
            plan_seal(None, &req(b"two", State::Pending), &set).unwrap(),
            Plan::Unchanged
        ));
    }

    #[test]
    fn promotion_moves_the_pending_file_and_keeps_the_current_as_previous() {
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let w = write(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Pending), &set).unwrap());
        let (m2, pending) = (w.meta, w.pending.unwrap());
        let mut later = req(b"two", State::Current);
        later.now = DateTime::from_timestamp(1_800_000_500, 0).unwrap();
        let w = write(plan_seal(Some(ex(&m2, &a1, Some(&pending))), &later, &set).unwrap());
        assert_eq!(w.active.as_deref(), Some(pending.as_slice()), "moved byte for byte");
        assert_eq!(w.previous.as_deref(), Some(a1.as_slice()));
        assert!(w.pending.is_none() && w.meta.pending.is_none(), "the pending file goes");
        assert_eq!(w.meta.active.state, State::Current);
        assert_eq!(w.meta.active.file, "JP_REGISTRY_PULL_SECRET_64.gpg");
        assert_eq!(w.meta.active.rotated_at, m2.pending.as_ref().unwrap().rotated_at);
        let prev = w.meta.previous.clone().unwrap();
        assert_eq!(prev.state, State::Previous);
        assert!(prev.plaintext_digest.matches(b"one"));
        // Then it rolls back like any current version.
        let (m4, a4, p4) = rollback(&w.meta, &pending, &a1).unwrap();
        assert_eq!(a4, a1);
        assert_eq!(p4, pending);
        assert!(m4.active.plaintext_digest.matches(b"one"));
        // A pending file addressed to other recipients is re-encrypted on promotion.
        let other = recipients(2);
        let w = write(plan_seal(Some(ex(&m2, &a1, Some(&pending))), &later, &other).unwrap());
        assert_ne!(w.active.as_deref(), Some(pending.as_slice()));
        assert_eq!(w.meta.active.recipients, other.fingerprints());
    }

    #[test]
    fn promotion_names_the_key_from_the_caller_not_from_the_unsigned_pending_fields() {
        // A statement hashes the pending file but vouches for none of the
        // pending version's fields: a PR may have edited them.
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let w = write(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Pending), &set).unwrap());
        let (mut m2, pending) = (w.meta, w.pending.unwrap());
        if let Some(p) = m2.pending.as_mut() {
            p.iam_key_id = Some("ApiKey-someone-elses".to_owned());
            p.key_fingerprint = "sha256:00000000".to_owned();
            p.key_name = Some("forged-20200101".to_owned());
        }
        let mut promote = req(b"two", State::Current);
        promote.iam_key_id = Some("ApiKey-mine");
        let w = write(plan_seal(Some(ex(&m2, &a1, Some(&pending))), &promote, &set).unwrap());
        assert_eq!(w.meta.active.iam_key_id.as_deref(), Some("ApiKey-mine"));
        assert_eq!(w.meta.active.key_fingerprint, Fingerprint::of(b"k").to_string());
        assert_eq!(w.meta.active.key_name.as_deref(), Some("k-20260101"));
        // Without an id from the caller, the pending one is not trusted either.
        let w = write(plan_seal(Some(ex(&m2, &a1, Some(&pending))), &req(b"two", State::Current), &set).unwrap());
        assert_eq!(w.meta.active.iam_key_id, None);
    }

    #[test]
    fn sealing_current_settles_a_pending_version() {
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let w = write(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Pending), &set).unwrap());
        let (m2, pending) = (w.meta, w.pending.unwrap());
        // The served plaintext as current: the pending version is dropped, nothing else written.
        let w = write(plan_seal(Some(ex(&m2, &a1, Some(&pending))), &req(b"one", State::Current), &set).unwrap());
        assert!(w.active.is_none() && w.previous.is_none() && w.pending.is_none());
        assert!(w.meta.pending.is_none());
        assert_eq!(w.meta.active.plaintext_digest, m1.active.plaintext_digest);
        // A third plaintext as current: it is served, the current one is previous, the pending one dropped.
        let w = write(plan_seal(Some(ex(&m2, &a1, Some(&pending))), &req(b"three", State::Current), &set).unwrap());
        assert!(w.meta.active.plaintext_digest.matches(b"three"));
        assert!(w.meta.previous.unwrap().plaintext_digest.matches(b"one"));
        assert!(w.meta.pending.is_none());
        assert_eq!(w.previous.as_deref(), Some(a1.as_slice()));
    }

    #[test]
    fn replacing_a_pending_version_keeps_the_served_files() {
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let (m2, a2, _) = written(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Current), &set).unwrap());
        let a2 = a2.unwrap();
        let w = write(plan_seal(Some(ex(&m2, &a2, None)), &req(b"three", State::Pending), &set).unwrap());
        let p3 = w.pending.unwrap();
        let w = write(plan_seal(Some(ex(&w.meta, &a2, Some(&p3))), &req(b"four", State::Pending), &set).unwrap());
        assert!(
            w.active.is_none() && w.previous.is_none(),
            "served and previous files stay as they are"
        );
        assert!(w.meta.previous.unwrap().plaintext_digest.matches(b"one"));
        assert!(w.meta.pending.unwrap().plaintext_digest.matches(b"four"));
        assert_ne!(
            w.pending.unwrap(),
            p3,
            "the old pending version (never served) is replaced"
        );
    }

    #[test]
    fn metadata_with_a_pending_active_version_is_refused() {
        let set = recipients(1);
        let (meta, _, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        // A schema 1 file (what older rekey wrote) still reads.
        let v1 = String::from_utf8(meta.render())
            .unwrap()
            .replace("\"schema\": 2", "\"schema\": 1");
        assert_eq!(Metadata::parse(v1.as_bytes(), "m.json").unwrap().schema, 1);
        // But not when `<NAME>.gpg` holds a pending version.
        let bad = v1.replace("\"current\"", "\"pending\"");
        let err = Metadata::parse(bad.as_bytes(), "m.json").unwrap_err().to_string();
        assert!(err.contains("m.json: active.state: is pending"), "{err}");
        assert!(err.contains("JP_REGISTRY_PULL_SECRET_64.pending.gpg"), "{err}");
        // A pending version in schema 1, in the wrong state or at another file: refused.
        let mut m = meta.clone();
        let mut p = m.active.clone();
        p.state = State::Pending;
        p.file = pending_file(&m.name);
        m.pending = Some(p);
        m.schema = 1;
        let err = Metadata::parse(&m.render(), "m.json").unwrap_err().to_string();
        assert!(err.contains("pending: needs schema 2"), "{err}");
        m.schema = 2;
        Metadata::parse(&m.render(), "m.json").unwrap();
        m.pending.as_mut().unwrap().state = State::Current;
        let err = Metadata::parse(&m.render(), "m.json").unwrap_err().to_string();
        assert!(err.contains("pending.state: must be pending"), "{err}");
        m.pending.as_mut().unwrap().state = State::Pending;
        m.pending.as_mut().unwrap().file = active_file(&m.name);
        let err = m.check_pinned(&meta.name, "m.json").unwrap_err().to_string();
        assert!(
            err.contains("pending.file: must be JP_REGISTRY_PULL_SECRET_64.pending.gpg"),
            "{err}"
        );
    }

    #[test]
    fn reencrypt_covers_the_pending_version() {
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let w = write(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Pending), &set).unwrap());
        let ids = |b: &[u8]| pgp::addressed_key_ids(b).unwrap();
        let p = w.pending.unwrap();
        let (ai, pi) = (ids(&a1), ids(&p));
        assert!(
            plan_reencrypt(&w.meta, &ai, b"one", None, Some((&pi, b"two")), &set, None)
                .unwrap()
                .is_none()
        );
        let other = recipients(2);
        let rw = plan_reencrypt(&w.meta, &ai, b"one", None, Some((&pi, b"two")), &other, None)
            .unwrap()
            .unwrap();
        assert!(rw.active.is_some() && rw.pending.is_some());
        assert_eq!(rw.meta.pending.unwrap().recipients, other.fingerprints());
        let err = plan_reencrypt(&w.meta, &ai, b"one", None, Some((&pi, b"xx")), &other, None).unwrap_err();
        assert!(matches!(err, RepoError::DigestMismatch { .. }));
    }

    #[test]
    fn metadata_round_trips_and_rejects_bad_fields() {
        let set = recipients(1);
        let (meta, _, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let bytes = meta.render();
        assert_eq!(Metadata::parse(&bytes, "m.json").unwrap(), meta);
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("one"));
        let bad = text.replace("\"current\"", "\"previous\"");
        let err = Metadata::parse(bad.as_bytes(), "m.json").unwrap_err().to_string();
        assert!(err.contains("m.json: active.state"), "{err}");
        let err = Metadata::parse(b"{}", "m.json").unwrap_err().to_string();
        assert!(err.starts_with("m.json: missing field"), "{err}");
    }

    #[test]
    fn iam_fields_are_optional_round_trip_and_are_checked() {
        let set = recipients(1);
        let (mut meta, _, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let old = String::from_utf8(meta.render()).unwrap();
        assert!(!old.contains("iam_key_id") && !old.contains("retired"), "{old}");
        meta.active.iam_key_id = Some("ApiKey-0a1b2c3d-4e5f".into());
        let mut retired = meta.active.clone();
        retired.state = State::Previous;
        retired.file = previous_file(&meta.name);
        retired.iam_key_id = Some("ApiKey-00".into());
        retired.retired_at = Some(Utc::now());
        retired.retired_how = Some(RetiredHow::Disabled);
        meta.previous = Some(retired);
        let text = String::from_utf8(meta.render()).unwrap();
        assert!(text.contains("\"retired_how\": \"disabled\""), "{text}");
        let back = Metadata::parse(text.as_bytes(), "m.json").unwrap();
        assert_eq!(back.active.iam_key_id.as_deref(), Some("ApiKey-0a1b2c3d-4e5f"));
        let bad = text.replace("ApiKey-0a1b2c3d-4e5f", "../../etc/passwd");
        let err = Metadata::parse(bad.as_bytes(), "m.json").unwrap_err().to_string();
        assert!(err.contains("m.json: active.iam_key_id"), "{err}");
        meta.previous.as_mut().unwrap().retired_how = None;
        let err = Metadata::parse(&meta.render(), "m.json").unwrap_err().to_string();
        assert!(err.contains("give both or neither"), "{err}");
        // Only a previous version may say it was retired or rolled back from.
        let mut served = meta.clone();
        served.previous = None;
        served.active.retired_at = Some(Utc::now());
        served.active.retired_how = Some(RetiredHow::Deleted);
        let err = Metadata::parse(&served.render(), "m.json").unwrap_err().to_string();
        assert!(err.contains("m.json: active.retired_at"), "{err}");
        let mut pending = meta.active.clone();
        pending.state = State::Pending;
        pending.file = pending_file(&meta.name);
        pending.rolled_back_at = Some(Utc::now());
        let mut planted = meta.clone();
        planted.previous = None;
        planted.pending = Some(pending);
        let err = Metadata::parse(&planted.render(), "m.json").unwrap_err().to_string();
        assert!(err.contains("m.json: pending.rolled_back_at"), "{err}");
        assert!(is_iam_key_id("ApiKey-abc"));
        assert!(!is_iam_key_id("ApiKey-"));
        assert!(!is_iam_key_id("ApiKey-a/b"));
    }

    #[test]
    fn rollback_to_a_retired_key_is_refused() {
        let set = recipients(1);
        let (m1, a1, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let a1 = a1.unwrap();
        let (mut m2, a2, _) = written(plan_seal(Some(ex(&m1, &a1, None)), &req(b"two", State::Current), &set).unwrap());
        let prev = m2.previous.as_mut().unwrap();
        prev.retired_at = Some(Utc::now());
        prev.retired_how = Some(RetiredHow::Deleted);
        let err = rollback(&m2, &a2.unwrap(), &a1).unwrap_err().to_string();
        assert!(err.contains("deleted in IAM"), "{err}");
    }

    #[test]
    fn check_file_reports_policy_and_metadata_mismatches() {
        let set = recipients(2);
        let (meta, active, _) = written(plan_seal(None, &req(b"one", State::Current), &set).unwrap());
        let active = active.unwrap();
        let (ids, problems) = check_file(&active, Some(&meta.active), &set);
        assert_eq!(ids.len(), 2);
        assert!(problems.is_empty(), "{problems:?}");
        let other = recipients(1);
        let (_, problems) = check_file(&active, Some(&meta.active), &other);
        assert!(
            problems.iter().any(|p| p.contains("not addressed to exactly")),
            "{problems:?}"
        );
        let (_, problems) = check_file(b"not pgp", None, &set);
        assert!(problems[0].contains("not an encrypted OpenPGP message"), "{problems:?}");
    }
}
