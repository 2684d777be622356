//! Sealing generated pull secrets into the secrets repo: each is checked,
//! encrypted to exactly the recipient policy in memory, then all are
//! written or none.
//!
//! `--pending` writes `<NAME>.pending.gpg` only: the served `<NAME>.gpg`
//! stays as it is until sealing the same plaintext as current promotes it.

use crate::ops::authorship;
use crate::ops::world::{Clock, Event, Events, Random};
use crate::pullsecret::dockerconfig;
use crate::secrets_repo::authorship::sign_rewrite;
use crate::secrets_repo::layout::{self, Existing, Plan, SealRequest as SealOne, Slot, State};
use crate::secrets_repo::pgp::Validity;
use crate::secrets_repo::signing::SigningKey;
use crate::secrets_repo::store::{Store, WritePlan};
use crate::untrusted;
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// One generated pull secret to seal.
pub struct Generated {
    /// The region (a-z, 0-9, -).
    pub region: String,
    /// Where it was read from, for messages.
    pub source: PathBuf,
    /// The dockerconfigjson.
    pub plaintext: Zeroizing<Vec<u8>>,
}

/// What to seal.
pub struct SealRequest<'a> {
    pub secrets: Vec<Generated>,
    /// Signs each new version (required once the repo has allowed signers).
    pub signer: Option<&'a SigningKey>,
    /// The key's name to record (not the key).
    pub key_name: Option<String>,
    /// Seal new versions as pending (`<NAME>.pending.gpg`, not served)
    /// instead of current.
    pub pending: bool,
    pub validity: Validity,
}

/// One sealed secret.
#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    pub region: String,
    pub name: String,
    /// The file holding the sealed version: `<NAME>.gpg` when it is
    /// current, `<NAME>.pending.gpg` when it is pending.
    pub file: PathBuf,
    pub changed: bool,
    pub state: State,
    pub key_fingerprint: String,
    /// A pending version this seal replaced by sealing a different key as
    /// current: it is gone from the repo (its key may still live in IAM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_pending: Option<DroppedPending>,
}

/// A pending version a seal dropped, named by what the metadata recorded.
#[derive(Debug, Clone, Serialize)]
pub struct DroppedPending {
    pub key_name: Option<String>,
    pub key_fingerprint: String,
    pub iam_key_id: Option<String>,
}

/// A seal's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SealReport {
    pub secrets: Vec<Sealed>,
    /// How many certificates the secrets are encrypted to.
    pub recipients: usize,
    /// The files written, relative to the repo root.
    pub files: Vec<String>,
}

/// Seals every secret of `req` into the repo, all or nothing.
pub fn seal(
    req: &SealRequest<'_>,
    store: &Store,
    clock: &dyn Clock,
    random: &dyn Random,
    events: &dyn Events,
) -> anyhow::Result<SealReport> {
    let now = clock.now();
    let policy = store.load_policy(req.validity, now.into(), events)?;
    let signers = authorship::require_signer(store, req.signer)?;
    let lock = store.lock(events)?;
    let state = if req.pending { State::Pending } else { State::Current };
    let mut writes = WritePlan::default();
    let mut report = Vec::new();
    for g in &req.secrets {
        let config = dockerconfig::parse(&g.plaintext).with_context(|| format!("reading {}", g.source.display()))?;
        let check = dockerconfig::check(&config, None);
        let fingerprint = match (check.is_ok(), check.key_fingerprint) {
            (true, Some(fp)) => fp,
            _ => anyhow::bail!(
                "{}: not a consistent pull secret (check it with `rekey inspect`): {}",
                g.source.display(),
                check.problems.join("; ")
            ),
        };
        let name = layout::secret_name(&g.region);
        let old = store.read_secret(&name)?;
        if req.pending && old.is_none() {
            anyhow::bail!(
                "{}: {name} has no current version yet, so there is nothing a pending version would wait beside: seal it without --pending",
                g.source.display()
            );
        }
        let one = SealOne {
            name: &name,
            region: &g.region,
            plaintext: &g.plaintext,
            key_name: req.key_name.as_deref(),
            key_fingerprint: fingerprint,
            iam_key_id: None,
            state,
            now,
            salt: random.salt()?,
            signer: req.signer,
        };
        let existing = old.as_ref().map(|s| Existing {
            meta: &s.meta,
            active: &s.active,
            pending: s.pending.as_deref(),
        });
        let mut plan = layout::plan_seal(existing, &one, &policy).with_context(|| format!("sealing {name}"))?;
        if let (Plan::Write(w), Some(key)) = (&mut plan, req.signer) {
            if let Some(old) = &old {
                authorship::verify_on_disk(store, signers.as_ref(), &old.on_disk(), now.into())?;
            }
            sign_rewrite(w, old.as_ref().map(|o| o.on_disk()).as_ref(), None, key, now)
                .with_context(|| format!("signing {name}"))?;
        }
        // Where the plaintext now lives: pending only when it is not
        // (already) the served version.
        let final_meta = match &plan {
            Plan::Write(w) => Some(&w.meta),
            Plan::Unchanged => old.as_ref().map(|s| &s.meta),
        };
        let served = final_meta.is_some_and(|m| m.active.plaintext_digest.matches(&g.plaintext));
        let final_state = if served { State::Current } else { state };
        let slot = if final_state == State::Pending {
            Slot::Pending
        } else {
            Slot::Active
        };
        // A pending version that is neither kept nor promoted (its
        // plaintext is not what is now served or pending) is gone: say so.
        let dropped_pending = match (&plan, old.as_ref()) {
            (Plan::Write(_), Some(o)) => match &o.meta.pending {
                Some(p) if !p.plaintext_digest.matches(&g.plaintext) => {
                    let why = if req.pending {
                        "replaced by a new pending version"
                    } else if o.meta.active.plaintext_digest.matches(&g.plaintext) {
                        "dropped: the current version was sealed again"
                    } else {
                        "dropped: a different key was sealed as current"
                    };
                    // Metadata is repo content: escaped before it is shown.
                    events.event(Event::Warning(format!(
                        "{name}: the pending version (key {}{}) is {why}{}",
                        untrusted::escape(&p.key_fingerprint),
                        p.key_name
                            .as_deref()
                            .map(|n| format!(", {}", untrusted::escape(n)))
                            .unwrap_or_default(),
                        p.iam_key_id
                            .as_deref()
                            .map(|id| format!("; its IAM key {} is not retired by rekey", untrusted::escape(id)))
                            .unwrap_or_default(),
                    )));
                    Some(DroppedPending {
                        key_name: p.key_name.clone(),
                        key_fingerprint: p.key_fingerprint.clone(),
                        iam_key_id: p.iam_key_id.clone(),
                    })
                }
                _ => None,
            },
            _ => None,
        };
        report.push(Sealed {
            dropped_pending,
            region: g.region.clone(),
            file: store.path(&name, slot),
            name: name.clone(),
            changed: matches!(plan, Plan::Write(_)),
            state: final_state,
            key_fingerprint: fingerprint.to_string(),
        });
        if let Plan::Write(w) = plan {
            lock.stage(&mut writes, *w)?;
        }
    }
    // Everything is validated and encrypted: now write, all or nothing.
    let files = lock.apply(writes)?;
    Ok(SealReport {
        secrets: report,
        recipients: policy.certs.len(),
        files,
    })
}
