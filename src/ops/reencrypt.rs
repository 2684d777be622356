//! Re-encrypting every secret (and its previous version) to the current
//! recipient policy after it changed, all files or none.

use crate::ops::authorship;
use crate::ops::world::{Clock, Events};
use crate::secrets_repo::authorship::{OnDisk, sign_rewrite};
use crate::secrets_repo::layout::{self, Slot};
use crate::secrets_repo::pgp::{self, RecipientCert, SecretKeys, Validity};
use crate::secrets_repo::signing::SigningKey;
use crate::secrets_repo::store::{Store, WritePlan};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

/// What to re-encrypt with.
pub struct ReencryptRequest<'a> {
    /// A recipient's secret keys, to decrypt with.
    pub keys: &'a SecretKeys,
    /// Plan only: write nothing.
    pub dry_run: bool,
    /// Signs the re-encrypted versions (required once the repo has allowed signers).
    pub signer: Option<&'a SigningKey>,
    pub validity: Validity,
}

/// What happened to one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ItemAction {
    #[serde(rename = "unchanged")]
    Unchanged,
    #[serde(rename = "would re-encrypt")]
    WouldReencrypt,
    #[serde(rename = "re-encrypted")]
    Reencrypted,
}

impl std::fmt::Display for ItemAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            ItemAction::Unchanged => "unchanged",
            ItemAction::WouldReencrypt => "would re-encrypt",
            ItemAction::Reencrypted => "re-encrypted",
        })
    }
}

/// One secret's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub action: ItemAction,
}

/// A re-encryption's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ReencryptReport {
    pub dry_run: bool,
    pub recipients: Vec<RecipientCert>,
    pub secrets: Vec<Item>,
    /// The files written, relative to the repo root.
    pub written: Vec<String>,
}

/// Re-encrypts every secret whose files are not addressed to exactly the policy.
pub fn reencrypt(
    req: &ReencryptRequest<'_>,
    store: &Store,
    clock: &dyn Clock,
    events: &dyn Events,
) -> anyhow::Result<ReencryptReport> {
    let at = clock.now();
    let now = at.into();
    let policy = store.load_policy(req.validity, now, events)?;
    let signers = authorship::require_signer(store, req.signer)?;
    let lock = store.lock_unless_dry_run(req.dry_run, events)?;
    let mut writes = WritePlan::default();
    let mut items = Vec::new();
    for name in store.secret_names()? {
        let Some(meta) = store.read_meta(&name)? else {
            continue;
        };
        let open = |slot: Slot| -> anyhow::Result<(Vec<String>, zeroize::Zeroizing<Vec<u8>>)> {
            let path = store.path(&name, slot);
            let bytes = store.read_file(&name, slot)?;
            let ids = pgp::addressed_key_ids(&bytes).with_context(|| format!("reading {}", path.display()))?;
            let plain = pgp::open(&bytes, req.keys, now).with_context(|| format!("decrypting {}", path.display()))?;
            Ok((ids, plain))
        };
        let (active_ids, plain_active) = open(Slot::Active)?;
        let previous = match &meta.previous {
            Some(_) => Some(open(Slot::Previous)?),
            None => None,
        };
        let pending = match &meta.pending {
            Some(_) => Some(open(Slot::Pending)?),
            None => None,
        };
        let plan = layout::plan_reencrypt(
            &meta,
            &active_ids,
            &plain_active,
            previous.as_ref().map(|(ids, p)| (ids.as_slice(), p.as_slice())),
            pending.as_ref().map(|(ids, p)| (ids.as_slice(), p.as_slice())),
            &policy,
            req.signer.map(|k| (k, now)),
        )
        .with_context(|| format!("re-encrypting {name}"))?;
        let plan = match (plan, req.signer) {
            (Some(mut rewrite), Some(key)) => {
                let active = store.read_file(&name, Slot::Active)?;
                let previous = match &meta.previous {
                    Some(_) => Some(store.read_file(&name, Slot::Previous)?),
                    None => None,
                };
                let pending = match &meta.pending {
                    Some(_) => Some(store.read_file(&name, Slot::Pending)?),
                    None => None,
                };
                let disk = OnDisk {
                    meta: &meta,
                    active: &active,
                    previous: previous.as_deref(),
                    pending: pending.as_deref(),
                };
                authorship::verify_on_disk(store, signers.as_ref(), &disk, now)?;
                sign_rewrite(&mut rewrite, Some(&disk), None, key, at).with_context(|| format!("signing {name}"))?;
                Some(rewrite)
            }
            (plan, _) => plan,
        };
        // The files (re-)encrypted: only those not addressed to the policy.
        let mut files = Vec::new();
        if plan.as_ref().is_none_or(|r| r.active.is_some()) {
            files.push(store.path(&name, Slot::Active));
        }
        if meta.previous.is_some() && plan.as_ref().is_none_or(|r| r.previous.is_some()) {
            files.push(store.path(&name, Slot::Previous));
        }
        if meta.pending.is_some() && plan.as_ref().is_none_or(|r| r.pending.is_some()) {
            files.push(store.path(&name, Slot::Pending));
        }
        let action = match (plan, &lock) {
            (None, _) => ItemAction::Unchanged,
            (Some(_), None) => ItemAction::WouldReencrypt,
            (Some(rewrite), Some(lock)) => {
                lock.stage(&mut writes, rewrite)?;
                ItemAction::Reencrypted
            }
        };
        items.push(Item { name, files, action });
    }
    let written = match &lock {
        Some(lock) => lock.apply(writes)?,
        None => Vec::new(),
    };
    Ok(ReencryptReport {
        dry_run: req.dry_run,
        recipients: policy.certs,
        secrets: items,
        written,
    })
}
