//! Rolling a region back: its previous version becomes current again and
//! the active one becomes previous, in one all-or-nothing write. Explicit
//! and idempotent: rolling back to what is already current changes nothing,
//! and a second rollback never silently restores the newer key.

use crate::ops::authorship;
use crate::ops::world::{Clock, Events, Git};
use crate::secrets_repo::authorship::{OnDisk, sign_rewrite};
use crate::secrets_repo::layout::{self, Slot};
use crate::secrets_repo::signing::SigningKey;
use crate::secrets_repo::store::{Store, WritePlan};
use anyhow::Context;
use serde::Serialize;

/// The version to roll back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTo {
    /// The version kept as previous, unless the current one was itself
    /// restored by a rollback (then nothing changes).
    Previous,
    /// The current or previous version whose key has this name or fingerprint.
    Key(String),
}

impl std::str::FromStr for RollbackTo {
    type Err = String;
    fn from_str(s: &str) -> Result<RollbackTo, String> {
        match s {
            "" => Err("expected `previous`, a key name or a key fingerprint".to_owned()),
            "previous" => Ok(RollbackTo::Previous),
            other => Ok(RollbackTo::Key(other.to_owned())),
        }
    }
}

/// Which region to roll back, and to what.
#[derive(Debug, Clone)]
pub struct RollbackRequest<'a> {
    /// The region, exactly as in the secret's metadata.
    pub region: String,
    pub to: RollbackTo,
    /// Signs the restored version's new statement (required once the repo
    /// has allowed signers).
    pub signer: Option<&'a SigningKey>,
    /// Commit the rolled-back files.
    pub commit: bool,
}

/// A rollback's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub region: String,
    pub secret: String,
    pub current_key_fingerprint: String,
    pub previous_key_fingerprint: String,
    /// False when the target was already current: nothing was written.
    pub changed: bool,
    /// Why nothing changed (with `changed: false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub commit: Option<String>,
    /// The files written (and committed, with `commit`), relative to the repo root.
    pub files: Vec<String>,
}

/// Swaps a region's active and previous versions.
pub fn rollback(
    req: &RollbackRequest<'_>,
    store: &Store,
    git: &dyn Git,
    clock: &dyn Clock,
    events: &dyn Events,
) -> anyhow::Result<RollbackReport> {
    let now = clock.now();
    let signers = authorship::require_signer(store, req.signer)?;
    let lock = store.lock(events)?;
    let name = layout::secret_name(&req.region);
    let meta = store
        .read_meta(&name)?
        .filter(|m| m.region == req.region)
        .ok_or_else(|| unknown_region(store, &req.region))?;
    let Some(prev) = &meta.previous else {
        return Err(layout::RepoError::NoPrevious(name).into());
    };
    let key = |v: &layout::Version| match &v.key_name {
        Some(n) => format!("{n} ({})", v.key_fingerprint),
        None => v.key_fingerprint.clone(),
    };
    let names = |v: &layout::Version, k: &str| v.key_fingerprint == k || v.key_name.as_deref() == Some(k);
    let unchanged = |reason: String| RollbackReport {
        region: req.region.clone(),
        secret: name.clone(),
        current_key_fingerprint: meta.active.key_fingerprint.clone(),
        previous_key_fingerprint: prev.key_fingerprint.clone(),
        changed: false,
        reason: Some(reason),
        commit: None,
        files: Vec::new(),
    };
    match &req.to {
        RollbackTo::Key(k) if names(&meta.active, k) => {
            return Ok(unchanged(format!("{} is already current", key(&meta.active))));
        }
        RollbackTo::Key(k) if !names(prev, k) => {
            anyhow::bail!(
                "--to {k}: region `{}` has no such key: its current key is {} and its previous key is {}",
                req.region,
                key(&meta.active),
                key(prev)
            );
        }
        RollbackTo::Key(_) => {}
        // A previous version that an earlier rollback replaced (marked
        // `rolled_back_at`) is the newer key: restoring it is a roll
        // forward, only on request (`--to`).
        RollbackTo::Previous if prev.rolled_back_at.is_some() => {
            return Ok(unchanged(format!(
                "already rolled back: {} is current; the newer {} is kept as previous (`--to {}` restores it)",
                key(&meta.active),
                key(prev),
                prev.key_fingerprint
            )));
        }
        RollbackTo::Previous => {}
    }
    let active = store.read_file(&name, Slot::Active)?;
    let previous = store.read_file(&name, Slot::Previous)?;
    // A pending version stays as it is: it was never served, and its
    // rotation may still promote it (or `rotate --abort` drop it).
    let pending = match &meta.pending {
        Some(_) => Some(store.read_file(&name, Slot::Pending)?),
        None => None,
    };
    let disk = OnDisk {
        meta: &meta,
        active: &active,
        previous: Some(&previous),
        pending: pending.as_deref(),
    };
    authorship::verify_on_disk(store, signers.as_ref(), &disk, now.into())?;
    let (mut new_meta, new_active, new_previous) = layout::rollback(&meta, &active, &previous)?;
    // Mark the replaced version as rolled back from, unless this restores a
    // version that was itself rolled back from (a roll forward).
    let forward = prev.rolled_back_at.is_some();
    new_meta.active.rolled_back_at = None;
    if let Some(p) = new_meta.previous.as_mut() {
        p.rolled_back_at = (!forward).then_some(now);
    }
    let mut rewrite = layout::Rewrite {
        meta: new_meta,
        active: Some(new_active),
        previous: Some(new_previous),
        pending: None,
    };
    if let Some(key) = req.signer {
        // The restored version gets a new, higher number; `restores` names
        // the number it was published with.
        let restores = meta.previous.as_ref().and_then(layout::Version::statement_version);
        sign_rewrite(&mut rewrite, Some(&disk), restores, key, now).with_context(|| format!("signing {name}"))?;
    }
    let new_meta = rewrite.meta.clone();
    let mut writes = WritePlan::default();
    lock.stage(&mut writes, rewrite)?;
    let files = lock.apply(writes)?;
    let commit = if req.commit {
        let message = format!(
            "Roll back the {} registry pull secret to {}\n\n{} ({}) is current again; {} ({}) is kept as previous.\n",
            req.region,
            new_meta.active.key_fingerprint,
            new_meta.active.key_name.as_deref().unwrap_or("unnamed key"),
            new_meta.active.key_fingerprint,
            meta.active.key_name.as_deref().unwrap_or("unnamed key"),
            meta.active.key_fingerprint,
        );
        git.commit(None, &files, &message)?
    } else {
        None
    };
    Ok(RollbackReport {
        region: req.region.clone(),
        secret: name,
        current_key_fingerprint: new_meta.active.key_fingerprint,
        previous_key_fingerprint: meta.active.key_fingerprint,
        changed: true,
        reason: None,
        commit,
        files,
    })
}

/// The error for a region with no secret, naming the regions that have one.
fn unknown_region(store: &Store, region: &str) -> anyhow::Error {
    let mut known: Vec<String> = store
        .secret_names()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| store.read_meta(n).ok().flatten())
        .map(|m| m.region)
        .collect();
    known.sort();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    anyhow::anyhow!(
        "{}: no secret for region `{region}` (region names are exact; the repo has: {known})",
        store.registry_dir().display()
    )
}
