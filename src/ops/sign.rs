//! Signing an existing repo (the migration to signed secrets): after a
//! review, each secret without a valid statement gets one over the files as
//! they are, once they are checked against their metadata. Metadata only is
//! rewritten, all secrets or none.

use crate::ops::authorship;
use crate::ops::world::{Clock, Events, Git};
use crate::secrets_repo::authorship::{self as signed, OnDisk};
use crate::secrets_repo::layout::{Rewrite, Slot, Version};
use crate::secrets_repo::pgp;
use crate::secrets_repo::signing::{AllowedSigners, SigningKey};
use crate::secrets_repo::store::{Store, WritePlan};
use anyhow::{Context, bail};
use serde::Serialize;

/// What to sign with.
pub struct SignRequest<'a> {
    pub signer: &'a SigningKey,
    /// Plan only: write nothing.
    pub dry_run: bool,
    /// Commit the signed metadata.
    pub commit: bool,
}

/// What happened to one secret.
#[derive(Debug, Clone, Serialize)]
pub struct SignedSecret {
    pub name: String,
    /// `signed`, `would sign` or `unchanged` (its statement already verifies).
    pub action: &'static str,
    /// The statement's version number (new or existing).
    pub version: Option<u64>,
}

/// A signing run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SignReport {
    pub dry_run: bool,
    pub signer_user_id: String,
    pub signer_fingerprint: String,
    pub secrets: Vec<SignedSecret>,
    pub files: Vec<String>,
    pub commit: Option<String>,
}

/// Checks that an encrypted file is one whole message addressed to exactly
/// the key IDs its metadata lists: what the signer vouches for.
fn check_matches(store: &Store, name: &str, slot: Slot, bytes: &[u8], v: &Version) -> anyhow::Result<()> {
    let path = store.path(name, slot);
    let shape = pgp::validate_message(bytes).with_context(|| format!("{}: not signed", path.display()))?;
    let mut ids = shape.key_ids;
    ids.sort();
    ids.dedup();
    if ids != v.recipient_key_ids {
        bail!(
            "{}: addressed to [{}] but its metadata lists [{}]: not signed (fix or re-seal it first)",
            path.display(),
            ids.join(", "),
            v.recipient_key_ids.join(", ")
        );
    }
    Ok(())
}

/// Signs every secret whose statement does not verify.
pub fn sign(
    req: &SignRequest<'_>,
    store: &Store,
    git: &dyn Git,
    clock: &dyn Clock,
    events: &dyn Events,
) -> anyhow::Result<SignReport> {
    let now = clock.now();
    let allowed = authorship::require_signer(store, Some(req.signer))?;
    // Without signers.asc, what is already signed is judged against the signer alone.
    let judge = allowed.unwrap_or_else(|| {
        AllowedSigners::parse(
            &sequoia_openpgp::serialize::SerializeInto::to_vec(req.signer.cert()).unwrap_or_default(),
            "the signing key",
        )
        .unwrap_or_else(|_| AllowedSigners::none())
    });
    let lock = store.lock_unless_dry_run(req.dry_run, events)?;
    let mut writes = WritePlan::default();
    let mut secrets = Vec::new();
    for name in store.secret_names()? {
        let Some(meta) = store.read_meta(&name)? else {
            continue;
        };
        let active = store.read_file(&name, Slot::Active)?;
        let previous = match &meta.previous {
            Some(_) => Some(store.read_file(&name, Slot::Previous)?),
            None => None,
        };
        let pending = match &meta.pending {
            Some(_) => Some(store.read_file(&name, Slot::Pending)?),
            None => None,
        };
        if meta.active.signed.is_some() {
            match signed::verify(
                &meta,
                &active,
                previous.as_deref(),
                pending.as_deref(),
                &judge,
                now.into(),
            ) {
                Ok((st, _)) => {
                    secrets.push(SignedSecret {
                        name,
                        action: "unchanged",
                        version: Some(st.version),
                    });
                    continue;
                }
                Err(e) => bail!(
                    "{}: its signed statement does not verify ({e}): review the secret and restore or re-seal it; rekey sign signs only unsigned secrets",
                    store.path(&name, Slot::Meta).display()
                ),
            }
        }
        check_matches(store, &name, Slot::Active, &active, &meta.active)?;
        if let (Some(v), Some(bytes)) = (&meta.previous, &previous) {
            check_matches(store, &name, Slot::Previous, bytes, v)?;
        }
        if let (Some(v), Some(bytes)) = (&meta.pending, &pending) {
            check_matches(store, &name, Slot::Pending, bytes, v)?;
        }
        let disk = OnDisk {
            meta: &meta,
            active: &active,
            previous: previous.as_deref(),
            pending: pending.as_deref(),
        };
        let mut rewrite = Rewrite {
            meta: meta.clone(),
            active: None,
            previous: None,
            pending: None,
        };
        signed::sign_rewrite(&mut rewrite, Some(&disk), None, req.signer, now)
            .with_context(|| format!("signing {name}"))?;
        let version = rewrite.meta.active.statement_version();
        if let Some(lock) = &lock {
            lock.stage(&mut writes, rewrite)?;
        }
        secrets.push(SignedSecret {
            name,
            action: if req.dry_run { "would sign" } else { "signed" },
            version,
        });
    }
    let files = match &lock {
        Some(lock) => lock.apply(writes)?,
        None => Vec::new(),
    };
    let commit = if req.commit && !files.is_empty() {
        let message = format!(
            "Sign {} by {}\n\nEach secret's metadata now carries a statement signed by {} (fingerprint {}), made after review with `rekey sign`.\n",
            crate::words::plural(files.len(), "secret", "secrets"),
            req.signer.name().user_id,
            req.signer.name().user_id,
            req.signer.name().fingerprint
        );
        git.commit(None, &files, &message)?
    } else {
        None
    };
    Ok(SignReport {
        dry_run: req.dry_run,
        signer_user_id: req.signer.name().user_id.clone(),
        signer_fingerprint: req.signer.name().fingerprint.clone(),
        secrets,
        files,
        commit,
    })
}
