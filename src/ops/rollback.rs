//! Rolling a region back: its previous version becomes current again and
//! the active one becomes previous, in one all-or-nothing write.

use crate::ops::authorship;
use crate::ops::world::{Clock, Events, Git};
use crate::secrets_repo::authorship::{OnDisk, sign_rewrite};
use crate::secrets_repo::layout::{self, Slot};
use crate::secrets_repo::signing::SigningKey;
use crate::secrets_repo::store::{Store, WritePlan};
use anyhow::Context;
use serde::Serialize;

/// Which region to roll back.
#[derive(Debug, Clone)]
pub struct RollbackRequest<'a> {
    pub region: String,
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
    let meta = store.read_meta(&name)?.with_context(|| {
        format!(
            "{}: no secret for region `{}`",
            store.path(&name, Slot::Meta).display(),
            req.region
        )
    })?;
    if meta.previous.is_none() {
        return Err(layout::RepoError::NoPrevious(name).into());
    }
    let active = store.read_file(&name, Slot::Active)?;
    let previous = store.read_file(&name, Slot::Previous)?;
    let disk = OnDisk {
        meta: &meta,
        active: &active,
        previous: Some(&previous),
    };
    authorship::verify_on_disk(store, signers.as_ref(), &disk, now.into())?;
    let (new_meta, new_active, new_previous) = layout::rollback(&meta, &active, &previous)?;
    let mut rewrite = layout::Rewrite {
        meta: new_meta,
        active: Some(new_active),
        previous: Some(new_previous),
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
        commit,
        files,
    })
}
