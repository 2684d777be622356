//! The rotation: for each region, render the new pull secret in memory,
//! prove the key pulls from every host, seal it as `pending`, then make it
//! `current` (the replaced version kept as `previous`), journaling each
//! step so that a killed rotation resumes where it stopped, and commit
//! exactly the files of the rotated regions.

use crate::ops::authorship;
use crate::ops::world::{Clock, Event, Events, Git, Random, Verifier};
use crate::pullsecret::catalog::Region;
use crate::pullsecret::dockerconfig;
use crate::pullsecret::image::ImageRef;
use crate::registry::{Credential, HostResult, Target};
use crate::secret::ApiKey;
use crate::secrets_repo::authorship::sign_rewrite;
use crate::secrets_repo::git::BranchMove;
use crate::secrets_repo::journal::{self, Journal, Stage};
use crate::secrets_repo::layout::{self, Digest, Existing, Plan, SealRequest, State};
use crate::secrets_repo::pgp::Validity;
use crate::secrets_repo::signing::SigningKey;
use crate::secrets_repo::store::{self, Store, WritePlan};
use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Serialize;
use std::collections::BTreeSet;

/// What to rotate, and how.
pub struct RotateRequest<'a> {
    /// The regions to rotate (validated catalog entries).
    pub regions: Vec<&'a Region>,
    /// The new key.
    pub key: &'a ApiKey,
    /// The new key's name (validated: it ends in its creation date).
    pub key_name: String,
    /// Hosts that may fail the pull check without blocking their region.
    pub allowed_failing_hosts: BTreeSet<String>,
    /// The image to pull instead of each region's probe image.
    pub image: Option<ImageRef>,
    /// Plan only: read, write nothing, verify nothing.
    pub dry_run: bool,
    /// Commit the rotated regions' files.
    pub commit: bool,
    /// The branch to commit on.
    pub branch: Option<String>,
    /// How long recipient certificates must stay valid.
    pub validity: Validity,
    /// Signs each new version (required once the repo has allowed signers).
    pub signer: Option<&'a SigningKey>,
}

/// The outside world a rotation touches.
pub struct RotateWorld<'a> {
    pub store: &'a Store,
    pub git: &'a dyn Git,
    pub verifier: &'a dyn Verifier,
    pub clock: &'a dyn Clock,
    pub random: &'a dyn Random,
    pub events: &'a dyn Events,
}

/// What the rotation does, or did, to one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The region already carries the new key.
    Unchanged,
    /// The region gets the new key.
    Rotate,
    /// A host could not pull: the region keeps its old key.
    Blocked,
}

/// One region's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    pub region: String,
    pub secret: String,
    pub action: Action,
    pub stage: Option<Stage>,
    pub old_key_fingerprint: Option<String>,
    pub new_key_fingerprint: String,
    pub hosts_ok: usize,
    pub hosts: usize,
    pub failing_hosts: Vec<HostResult>,
}

/// A rotation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub dry_run: bool,
    pub key_name: String,
    pub key_fingerprint: String,
    pub commit: Option<String>,
    /// The branch committed on (`--branch`), and how it moved.
    pub branch: Option<String>,
    pub branch_move: Option<BranchMove>,
    /// The files committed, relative to the repo root.
    pub committed_files: Vec<String>,
    pub regions: Vec<RegionReport>,
}

impl RotateReport {
    /// Returns true when a host blocked a region.
    pub fn blocked(&self) -> bool {
        self.regions.iter().any(|r| r.action == Action::Blocked)
    }
}

/// Returns one pull-check target per host of each region, all with `key`.
pub fn region_targets<'a>(
    regions: impl IntoIterator<Item = &'a Region>,
    key: &ApiKey,
    image: Option<&ImageRef>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for region in regions {
        for host in &region.hosts {
            targets.push(Target {
                region: region.name.clone(),
                host: host.clone(),
                image: image.cloned().unwrap_or_else(|| region.probe_image.clone()),
                credential: Credential {
                    username: region.username.clone(),
                    password: SecretString::from(key.expose_secret().to_owned()),
                },
            });
        }
    }
    targets
}

struct Planned<'a> {
    region: &'a Region,
    plaintext: zeroize::Zeroizing<String>,
    report: RegionReport,
}

/// Runs a rotation (or plans it, with `dry_run`).
pub fn rotate(req: &RotateRequest<'_>, w: &RotateWorld<'_>) -> anyhow::Result<RotateReport> {
    let fingerprint = req.key.fingerprint().to_string();
    let now = w.clock.now();
    let policy = w.store.load_policy(req.validity, now.into(), w.events)?;
    let signers = authorship::require_signer(w.store, req.signer)?;
    let lock = w.store.lock_unless_dry_run(req.dry_run, w.events)?;
    let journal = match &lock {
        Some(l) => l.read_journal()?,
        None => w.store.peek_journal()?,
    };
    if let Some(j) = &journal
        && !j.is_for(&req.key_name, req.key.expose_secret().as_bytes())
    {
        let path = w.store.state_dir()?.join(store::JOURNAL_FILE);
        bail!(
            "{}: a rotation to {} ({}) started at {} is unfinished: rerun it with that key to finish it, or discard it with `rekey rotate --repo REPO --abort`",
            path.display(),
            j.key_name,
            j.key_fingerprint,
            j.started_at.to_rfc3339()
        );
    }
    let key_ids: Vec<String> = policy.key_ids().into_iter().collect();

    // Plan: which regions change.
    let mut plans = Vec::with_capacity(req.regions.len());
    for region in &req.regions {
        let plaintext = dockerconfig::render(&region.hosts, &region.username, req.key, region.email.as_deref());
        let name = layout::secret_name(&region.name);
        let old = w.store.read_secret(&name)?;
        let unchanged = old.as_ref().is_some_and(|s| {
            s.meta.active.state == State::Current
                && s.meta.active.plaintext_digest.matches(plaintext.as_bytes())
                && s.meta.active.recipient_key_ids == key_ids
        });
        if let Some(old) = old.as_ref().filter(|_| !unchanged) {
            // Checked before anything is verified or written: the version
            // that becomes `previous` must come from an allowed signer.
            authorship::verify_on_disk(w.store, signers.as_ref(), &old.on_disk(), now.into())?;
        }
        let old_key_fingerprint = old.as_ref().map(|s| {
            if unchanged {
                s.meta
                    .previous
                    .as_ref()
                    .map_or_else(String::new, |p| p.key_fingerprint.clone())
            } else {
                s.meta.active.key_fingerprint.clone()
            }
        });
        plans.push(Planned {
            region,
            plaintext,
            report: RegionReport {
                region: region.name.clone(),
                secret: name,
                action: if unchanged { Action::Unchanged } else { Action::Rotate },
                stage: journal.as_ref().map(|j| j.stage(&region.name)).filter(|_| !unchanged),
                old_key_fingerprint,
                new_key_fingerprint: fingerprint.clone(),
                hosts_ok: 0,
                hosts: region.hosts.len(),
                failing_hosts: Vec::new(),
            },
        });
    }
    // A branch the commit could only reach by dropping commits is refused
    // now, before anything is written.
    let branch_move = match (&req.branch, req.commit) {
        (Some(branch), true) => Some(w.git.plan_branch(branch).context("--branch")?),
        _ => None,
    };
    let report = |plans: Vec<Planned<'_>>, commit: Option<String>, committed_files| RotateReport {
        dry_run: req.dry_run,
        key_name: req.key_name.clone(),
        key_fingerprint: fingerprint.clone(),
        branch: req.branch.clone().filter(|_| commit.is_some()),
        branch_move: branch_move.filter(|_| commit.is_some()),
        commit,
        committed_files,
        regions: plans.into_iter().map(|p| p.report).collect(),
    };
    let Some(lock) = lock else {
        return Ok(report(plans, None, Vec::new()));
    };

    let rotating: Vec<String> = plans
        .iter()
        .filter(|p| p.report.action == Action::Rotate)
        .map(|p| p.region.name.clone())
        .collect();
    // Regions an interrupted run already published: they are committed with this run's.
    let resumed: BTreeSet<String> = journal
        .as_ref()
        .map(|j| {
            j.regions
                .iter()
                .filter(|(_, s)| **s == Stage::Published)
                .map(|(r, _)| r.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut journal = match journal {
        Some(j) => j,
        None => {
            let digest = Digest::compute(&w.random.salt()?, req.key.expose_secret().as_bytes());
            Journal::new(&req.key_name, fingerprint.clone(), digest, now, &rotating)
        }
    };
    if !rotating.is_empty() {
        lock.write_journal(&journal)?;
    }

    // Verify the regions not verified by an earlier, interrupted run.
    let to_verify: Vec<&Region> = plans
        .iter()
        .filter(|p| p.report.action == Action::Rotate && journal.stage(&p.region.name) <= Stage::Blocked)
        .map(|p| p.region)
        .collect();
    let results = if to_verify.is_empty() {
        Vec::new()
    } else {
        w.events.event(Event::Status(format!(
            "verifying {} regions with key {fingerprint}",
            to_verify.len()
        )));
        w.verifier
            .verify(region_targets(to_verify.iter().copied(), req.key, req.image.as_ref()))?
    };
    for p in plans.iter_mut() {
        let report = &mut p.report;
        let mine: Vec<&HostResult> = results.iter().filter(|h| h.region == p.region.name).collect();
        if mine.is_empty() {
            if report.action == Action::Rotate {
                report.hosts_ok = report.hosts;
            }
            continue;
        }
        report.hosts_ok = mine.iter().filter(|h| h.passed()).count();
        report.failing_hosts = mine.iter().filter(|h| !h.passed()).map(|h| (*h).clone()).collect();
        let blocking = report
            .failing_hosts
            .iter()
            .any(|h| !req.allowed_failing_hosts.contains(&h.host));
        let stage = if blocking { Stage::Blocked } else { Stage::Verified };
        if blocking {
            report.action = Action::Blocked;
        }
        journal.set(&p.region.name, stage);
        report.stage = Some(stage);
    }
    if !results.is_empty() {
        lock.write_journal(&journal)?;
    }

    // Seal each verified region as pending, then make it current.
    for p in plans.iter_mut() {
        if p.report.action != Action::Rotate {
            continue;
        }
        for target in [State::Pending, State::Current] {
            let old = w.store.read_secret(&p.report.secret)?;
            let seal = SealRequest {
                name: &p.report.secret,
                region: &p.region.name,
                plaintext: p.plaintext.as_bytes(),
                key_name: Some(&req.key_name),
                key_fingerprint: req.key.fingerprint(),
                iam_key_id: None,
                state: target,
                now,
                salt: w.random.salt()?,
                signer: req.signer,
            };
            let existing = old.as_ref().map(|s| Existing {
                meta: &s.meta,
                active: &s.active,
                pending: s.pending.as_deref(),
            });
            let mut plan =
                layout::plan_seal(existing, &seal, &policy).with_context(|| format!("sealing {}", p.report.secret))?;
            if let (Plan::Write(rewrite), Some(key)) = (&mut plan, req.signer) {
                if let Some(old) = &old {
                    authorship::verify_on_disk(w.store, signers.as_ref(), &old.on_disk(), now.into())?;
                }
                sign_rewrite(rewrite, old.as_ref().map(|o| o.on_disk()).as_ref(), None, key, now)
                    .with_context(|| format!("signing {}", p.report.secret))?;
            }
            if let Plan::Write(rewrite) = plan {
                let mut writes = WritePlan::default();
                lock.stage(&mut writes, *rewrite)?;
                lock.apply(writes)?;
            }
            let stage = if target == State::Pending {
                Stage::Sealed
            } else {
                Stage::Published
            };
            journal.set(&p.region.name, stage);
            p.report.stage = Some(stage);
            lock.write_journal(&journal)?;
        }
    }

    let is_published = |p: &Planned<'_>| {
        p.report.action == Action::Rotate || (p.report.action == Action::Unchanged && resumed.contains(&p.region.name))
    };
    let published: Vec<(String, Option<String>)> = plans
        .iter()
        .filter(|p| is_published(p))
        .map(|p| (p.region.name.clone(), p.report.old_key_fingerprint.clone()))
        .collect();
    let mut files = Vec::new();
    let commit = if req.commit && !published.is_empty() {
        for p in plans.iter().filter(|p| is_published(p)) {
            files.extend(lock.secret_files(&p.report.secret)?);
        }
        let message = journal::commit_message(&req.key_name, &fingerprint, &published);
        w.git.commit(req.branch.as_deref(), &files, &message)?
    } else {
        None
    };
    lock.remove_journal()?;
    Ok(report(plans, commit, files))
}

/// What `rotate --abort` did.
#[derive(Debug, Clone, Serialize)]
pub struct AbortReport {
    /// False when there was no unfinished rotation.
    pub aborted: bool,
    pub key_name: Option<String>,
    pub key_fingerprint: Option<String>,
    /// Files put back to their committed versions, relative to the repo root.
    pub restored: Vec<String>,
    /// Files the rotation created that HEAD does not have, removed.
    pub removed: Vec<String>,
}

/// Discards an unfinished rotation: the secrets of regions it sealed or
/// published (but did not commit) go back to their versions at HEAD,
/// through the store (atomically, per secret); files it created are
/// removed; then the journal goes. Nothing else in the work tree is
/// touched. Without a journal, does nothing.
pub fn abort(store: &Store, events: &dyn Events) -> anyhow::Result<AbortReport> {
    let lock = store.lock(events)?;
    let Some(journal) = lock.read_journal()? else {
        return Ok(AbortReport {
            aborted: false,
            key_name: None,
            key_fingerprint: None,
            restored: Vec::new(),
            removed: Vec::new(),
        });
    };
    let mut restored = Vec::new();
    let mut removed = Vec::new();
    for (region, stage) in &journal.regions {
        if *stage < Stage::Sealed {
            continue;
        }
        let name = layout::secret_name(region);
        let root = store.root();
        let head_meta = store::read_meta_at_revision(root, "HEAD", &name)?;
        let mut keep: Vec<layout::Slot> = Vec::new();
        if let Some(meta) = head_meta {
            let active = store::read_file_at_revision(root, "HEAD", &name, layout::Slot::Active)?
                .with_context(|| format!("{name}: its metadata at HEAD names a file HEAD does not have"))?;
            let previous = match meta.previous {
                Some(_) => Some(
                    store::read_file_at_revision(root, "HEAD", &name, layout::Slot::Previous)?.with_context(|| {
                        format!("{name}: its metadata at HEAD names a previous file HEAD does not have")
                    })?,
                ),
                None => None,
            };
            // A pending version committed at HEAD comes back too; one the
            // rotation sealed goes (in the same write, through the store).
            let pending = match meta.pending {
                Some(_) => Some(
                    store::read_file_at_revision(root, "HEAD", &name, layout::Slot::Pending)?.with_context(|| {
                        format!("{name}: its metadata at HEAD names a pending file HEAD does not have")
                    })?,
                ),
                None => None,
            };
            keep.push(layout::Slot::Meta);
            keep.push(layout::Slot::Active);
            if previous.is_some() {
                keep.push(layout::Slot::Previous);
            }
            let head_pending = pending.is_some();
            if head_pending || store.path(&name, layout::Slot::Pending).exists() {
                keep.push(layout::Slot::Pending);
            }
            let mut writes = WritePlan::default();
            lock.stage(
                &mut writes,
                layout::Rewrite {
                    meta,
                    active: Some(active),
                    previous,
                    pending,
                },
            )?;
            let pending_path = Store::repo_path(&name, layout::Slot::Pending);
            for file in lock.apply(writes)? {
                if file == pending_path && !head_pending {
                    removed.push(file);
                } else {
                    restored.push(file);
                }
            }
        }
        for slot in layout::Slot::ALL {
            if keep.contains(&slot) {
                continue;
            }
            let path = store.path(&name, slot);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file()) {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                removed.push(Store::repo_path(&name, slot));
            }
        }
    }
    lock.remove_journal()?;
    Ok(AbortReport {
        aborted: true,
        key_name: Some(journal.key_name),
        key_fingerprint: Some(journal.key_fingerprint),
        restored,
        removed,
    })
}
