//! Deciding which previous keys may be retired in IAM: a region's previous
//! key goes once the current key has been published for the grace period
//! (never less than IAM's one-hour token lifetime, since tokens minted from
//! the old key stay valid until they expire), and never while that key is
//! still current in any region.

use crate::exit::Exit;
use crate::ops::world::{Clock, Event, Events, Git};
use crate::secrets_repo::layout::{Metadata, RetiredHow, Rewrite, Version};
use crate::secrets_repo::store::{Lock, Store, WritePlan};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// IAM access tokens live up to an hour, and stay valid after their key is
/// deleted: a grace period shorter than this would cut clusters off early.
pub const MIN_GRACE: Duration = Duration::hours(1);

/// The default grace period between publishing a key and retiring the one it replaced.
pub const DEFAULT_GRACE: Duration = Duration::hours(24);

/// One key version as the secrets repo records it.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub key_name: Option<String>,
    pub key_fingerprint: String,
    /// The key's IAM id (`ApiKey-…`), when rekey created it or recorded it.
    pub iam_key_id: Option<String>,
    /// When this version became current: for the served version, the
    /// latest of when it was sealed, rolled back to, and committed on the
    /// checked-out branch (see [`region_keys`]).
    pub published_at: DateTime<Utc>,
    /// When the key was retired in IAM, if it was, and how (unsigned
    /// metadata: a mark a pull request may have planted).
    pub retired_at: Option<DateTime<Utc>>,
    pub retired_how: Option<RetiredHow>,
}

/// A region's current and previous key.
#[derive(Debug, Clone)]
pub struct RegionKeys {
    pub region: String,
    pub secret: String,
    /// The served version (`<NAME>.gpg`). A pending version, in its own
    /// file and never served, plays no part in retiring the previous key:
    /// promoting it drops that key from the metadata, so holding the
    /// retirement for it would leave the key alive in IAM unrecorded.
    pub current: KeyVersion,
    pub previous: Option<KeyVersion>,
    /// False when the served version is not what HEAD holds (sealed but not
    /// committed, or the repo has no commits or no git at all): it has not
    /// reached the branch clusters are given, so it is not published yet.
    pub committed: bool,
}

/// Why a region's previous key is not retired now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Hold {
    /// The region has no previous version.
    NoPrevious,
    /// The region's served version was pending (metadata schema 1). No
    /// longer produced: a pending version now lives in its own file and the
    /// served one is always current; kept for the reports that name it.
    NotPublished,
    /// The previous key was already retired.
    AlreadyRetired { at: DateTime<Utc> },
    /// The current key has not been published for the grace period yet.
    InGracePeriod { until: DateTime<Utc> },
    /// The previous key is the current key of this region (or the same as this region's current key).
    StillCurrent { current_in: String },
    /// No IAM id is recorded for the previous key, so it cannot be named in IAM.
    NoIamId,
    /// The current version is not committed on the checked-out branch (the
    /// work tree's metadata names another current key than HEAD's): it is
    /// not published, so its grace period has not started.
    NotCommitted,
}

/// What happens to one region's previous key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Retire the key with this IAM id.
    Retire {
        iam_key_id: String,
        key_fingerprint: String,
    },
    /// Recorded as retired, and due by every rule: the retirement is asked
    /// of IAM again (harmless when it is done) without writing anything,
    /// because the record is unsigned metadata and a planted mark must not
    /// keep a live key out of retirement.
    Reconfirm {
        iam_key_id: String,
        key_fingerprint: String,
        at: DateTime<Utc>,
        how: Option<RetiredHow>,
    },
    /// Keep it, for this reason.
    Hold(Hold),
}

/// A region's decision.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub region: String,
    pub secret: String,
    #[serde(flatten)]
    pub decision: Decision,
}

/// Why a retirement plan cannot be made at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "a grace period of {0} is shorter than IAM's one-hour token lifetime: tokens minted from the old key would outlive the check that it is unused"
    )]
    GraceTooShort(String),
}

/// Decides, for each region, whether its previous key is retired at `now`.
pub fn plan(regions: &[RegionKeys], now: DateTime<Utc>, grace: Duration) -> Result<Vec<Planned>, PlanError> {
    if grace < MIN_GRACE {
        return Err(PlanError::GraceTooShort(
            humantime::format_duration(grace.to_std().unwrap_or_default()).to_string(),
        ));
    }
    let mut out = Vec::with_capacity(regions.len());
    for r in regions {
        let decision = decide(r, regions, now, grace);
        out.push(Planned {
            region: r.region.clone(),
            secret: r.secret.clone(),
            decision,
        });
    }
    Ok(out)
}

fn decide(r: &RegionKeys, all: &[RegionKeys], now: DateTime<Utc>, grace: Duration) -> Decision {
    let Some(prev) = &r.previous else {
        return Decision::Hold(Hold::NoPrevious);
    };
    if let Some(other) = all.iter().find(|o| {
        o.current.key_fingerprint == prev.key_fingerprint
            || (prev.iam_key_id.is_some() && o.current.iam_key_id == prev.iam_key_id)
    }) {
        return Decision::Hold(Hold::StillCurrent {
            current_in: other.region.clone(),
        });
    }
    if !r.committed {
        return Decision::Hold(Hold::NotCommitted);
    }
    let until = r.current.published_at + grace;
    if now < until {
        // A key recorded as retired is held like any other: the record is
        // not trusted to say it may be retired early either.
        return Decision::Hold(match prev.retired_at {
            Some(at) => Hold::AlreadyRetired { at },
            None => Hold::InGracePeriod { until },
        });
    }
    match (&prev.iam_key_id, prev.retired_at) {
        (Some(id), None) => Decision::Retire {
            iam_key_id: id.clone(),
            key_fingerprint: prev.key_fingerprint.clone(),
        },
        (Some(id), Some(at)) => Decision::Reconfirm {
            iam_key_id: id.clone(),
            key_fingerprint: prev.key_fingerprint.clone(),
            at,
            how: prev.retired_how,
        },
        (None, Some(at)) => Decision::Hold(Hold::AlreadyRetired { at }),
        (None, None) => Decision::Hold(Hold::NoIamId),
    }
}

impl Hold {
    /// Returns true when the hold needs an operator: a key still current in
    /// another region, or one rekey cannot name in IAM. Waiting out the grace
    /// period, an unfinished or uncommitted rotation or a key already retired do not.
    pub fn needs_attention(&self) -> bool {
        matches!(self, Hold::StillCurrent { .. } | Hold::NoIamId)
    }
}

/// The most commits of HEAD's first-parent history that changed one
/// metadata file walked back to find when its current version arrived.
pub const MAX_HISTORY_WALK: usize = 1000;

/// Reads the regions' current and previous keys from the repo's metadata.
/// The current version counts as published at the latest of: when it was
/// sealed (`rotated_at`), when a rollback restored it, and when it reached
/// the checked-out branch, i.e. the committer time of the oldest commit of
/// HEAD's first-parent history since which the metadata's current key
/// fingerprint has been what it is now (a rotation merged days after it
/// was sealed is published at its merge commit, or at the rotation
/// commit itself after a fast-forward, which leaves no trace of the
/// merge; the walk is bounded by
/// [`MAX_HISTORY_WALK`] commits, beyond which the oldest one seen counts).
/// A current version HEAD does not hold is not published (see
/// [`Hold::NotCommitted`]).
/// Once the repo has allowed signers, a previous key's IAM id counts only
/// when the version's signed statement vouches for it (an unsigned edit
/// must not retarget a deletion); otherwise the whole read is refused.
pub fn region_keys(store: &Store) -> anyhow::Result<Vec<RegionKeys>> {
    let signers = store.read_signers()?;
    let mut out = Vec::new();
    for name in store.secret_names()? {
        let Some(meta) = store.read_meta(&name)? else {
            continue;
        };
        if let Some(signers) = &signers {
            crate::secrets_repo::authorship::ids_vouched(&meta, signers, std::time::SystemTime::now()).map_err(
                |e| anyhow::anyhow!("{name}: {e}: refusing to retire keys by ids the repo's signers did not vouch for"),
            )?;
        }
        let mut keys = from_meta(&meta);
        match committed_since(store.root(), &name, &meta.active.key_fingerprint)? {
            Some(at) => keys.current.published_at = keys.current.published_at.max(at),
            None => keys.committed = false,
        }
        out.push(keys);
    }
    Ok(out)
}

/// Returns when the current version (`fingerprint`) of `name` reached the
/// checked-out branch: the committer time of the oldest of HEAD's
/// first-parent commits since which the metadata's current fingerprint is
/// `fingerprint`. `None` when HEAD does not hold that version (not a git
/// repo, no commits, or the metadata's current version is uncommitted).
fn committed_since(repo: &std::path::Path, name: &str, fingerprint: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    use crate::secrets_repo::{git, store};
    if !git::is_work_tree(repo) || git::rev_parse(repo, "HEAD").is_err() {
        return Ok(None);
    }
    let at_head = store::read_meta_at_revision(repo, "HEAD", name).ok().flatten();
    if at_head.is_none_or(|m| m.active.key_fingerprint != fingerprint) {
        return Ok(None);
    }
    let path = Store::repo_path(name, crate::secrets_repo::layout::Slot::Meta);
    let changes = git::first_parent_changes(repo, "HEAD", &path, MAX_HISTORY_WALK)?;
    let mut since = None;
    for (commit, time) in &changes {
        // A version that cannot be read (an older format, a damaged file)
        // is another version: the walk stops there.
        let same = store::read_meta_at_revision(repo, commit, name)
            .ok()
            .flatten()
            .is_some_and(|m| m.active.key_fingerprint == fingerprint);
        if !same {
            break;
        }
        since = Some(*time);
    }
    let Some(secs) = since.or_else(|| changes.first().map(|c| c.1)) else {
        return Ok(None);
    };
    Ok(DateTime::<Utc>::from_timestamp(secs, 0))
}

fn from_meta(meta: &Metadata) -> RegionKeys {
    let version = |v: &Version| KeyVersion {
        key_name: v.key_name.clone(),
        key_fingerprint: v.key_fingerprint.clone(),
        iam_key_id: v.iam_key_id.clone(),
        published_at: v.rotated_at,
        retired_at: v.retired_at,
        retired_how: v.retired_how,
    };
    let mut current = version(&meta.active);
    // A rollback serves an older version again: it is published anew at
    // the rollback, and the newer key it replaced was served until then,
    // so that key's grace period runs from the rollback, not from when the
    // restored version was first sealed (which would retire it at once).
    if let Some(at) = meta.previous.as_ref().and_then(|p| p.rolled_back_at) {
        current.published_at = current.published_at.max(at);
    }
    RegionKeys {
        region: meta.region.clone(),
        secret: meta.name.clone(),
        current,
        previous: meta.previous.as_ref().map(version),
        committed: true,
    }
}

/// What IAM said to a retirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamRetired {
    /// IAM deleted or disabled the key.
    Done,
    /// IAM does not know the key any more (deleted by someone else): it
    /// cannot authenticate either way.
    AlreadyGone,
}

/// Why IAM did not retire a key. Never carries a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamFailure {
    /// IAM could not be reached or kept failing.
    #[error("{0}")]
    Unreachable(String),
    /// IAM refused (a locked key, no permission, …).
    #[error("{0}")]
    Refused(String),
    /// IAM refused the admin key itself: nothing can be retired with it.
    #[error("{0}")]
    AdminRefused(String),
}

impl IamFailure {
    /// Returns true when no retirement can succeed in this run (exit 2).
    pub fn is_environment(&self) -> bool {
        !matches!(self, IamFailure::Refused(_))
    }
}

/// Retires keys in IAM by id: the narrow interface over `Iam::retire`.
pub trait KeyRetirer {
    /// Deletes or disables the key with IAM id `id`.
    fn retire(&self, id: &str, how: RetiredHow) -> Result<IamRetired, IamFailure>;
}

/// An in-memory IAM (tests): holds keys by id, records retirements.
#[derive(Debug, Default)]
pub struct MemoryIam {
    pub keys: Mutex<BTreeMap<String, Option<RetiredHow>>>,
    pub unreachable: bool,
}

impl MemoryIam {
    /// An IAM holding these key ids, all active.
    pub fn with_keys(ids: &[&str]) -> MemoryIam {
        MemoryIam {
            keys: Mutex::new(ids.iter().map(|i| ((*i).to_owned(), None)).collect()),
            unreachable: false,
        }
    }

    /// Returns how the key `id` was retired (`None` while active or unknown).
    pub fn state(&self, id: &str) -> Option<RetiredHow> {
        self.keys.lock().ok().and_then(|k| k.get(id).copied().flatten())
    }
}

impl KeyRetirer for MemoryIam {
    fn retire(&self, id: &str, how: RetiredHow) -> Result<IamRetired, IamFailure> {
        if self.unreachable {
            return Err(IamFailure::Unreachable("IAM is unreachable (test)".into()));
        }
        let mut keys = self
            .keys
            .lock()
            .map_err(|_| IamFailure::Unreachable("poisoned".into()))?;
        match keys.get_mut(id) {
            Some(Some(RetiredHow::Deleted)) | None => Ok(IamRetired::AlreadyGone),
            Some(state) => {
                *state = Some(how);
                Ok(IamRetired::Done)
            }
        }
    }
}

/// The health gate's answer.
#[derive(Debug, Clone, Serialize)]
pub struct GateVerdict {
    pub healthy: bool,
    /// The verdict's name (`healthy`, `degraded`, `outage`, `no_data`).
    pub verdict: String,
    /// One line per rule that is not healthy.
    pub details: Vec<String>,
}

/// Asks whether the service is healthy enough to retire keys.
pub trait HealthGate {
    /// Evaluates the gate at `now`; an error means no answer could be had.
    fn verdict(&self, now: DateTime<Utc>) -> anyhow::Result<GateVerdict>;
}

/// What `rekey keys retire` asks for.
#[derive(Debug, Clone)]
pub struct RetireRequest {
    /// How long a current key must have been published before its predecessor goes.
    pub grace: Duration,
    /// Delete or disable.
    pub how: RetiredHow,
    /// Only these regions (all when `None`); every region still counts for "still current".
    pub regions: Option<Vec<String>>,
    /// Plan and report only: no IAM call, nothing written.
    pub dry_run: bool,
    /// Commit the metadata it changes.
    pub commit: bool,
    /// The branch to commit on.
    pub branch: Option<String>,
}

/// What happened to one region's previous key.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Retired in IAM and recorded in the metadata.
    Retired {
        iam_key_id: String,
        key_fingerprint: String,
        how: RetiredHow,
        /// True when IAM no longer knew the key (someone deleted it already).
        already_gone: bool,
    },
    /// Would be retired (dry run).
    WouldRetire {
        iam_key_id: String,
        key_fingerprint: String,
        how: RetiredHow,
    },
    /// Due, but the health gate is not healthy: left alone.
    GateClosed {
        iam_key_id: String,
        key_fingerprint: String,
    },
    /// IAM did not retire it.
    Failed {
        iam_key_id: String,
        key_fingerprint: String,
        error: String,
        /// True when IAM was unreachable or refused the admin key (exit 2).
        environment: bool,
    },
    /// Kept, for this reason.
    Held {
        #[serde(flatten)]
        hold: Hold,
        attention: bool,
    },
}

/// One region's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RegionOutcome {
    pub region: String,
    pub secret: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What `rekey keys retire` did.
#[derive(Debug, Clone, Serialize)]
pub struct RetireReport {
    pub ok: bool,
    pub dry_run: bool,
    #[serde(serialize_with = "ser_time")]
    pub at: DateTime<Utc>,
    pub grace_seconds: i64,
    pub gate: Option<GateVerdict>,
    pub regions: Vec<RegionOutcome>,
    /// The files written, relative to the repo root.
    pub written: Vec<String>,
    pub commit: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

impl RetireReport {
    /// Returns the exit code: 2 when IAM could not be reached, 1 when the
    /// gate refused, IAM refused or a hold needs attention, else 0.
    pub fn exit(&self) -> Exit {
        let mut exit = Exit::Ok;
        for r in &self.regions {
            match &r.outcome {
                Outcome::Failed { environment: true, .. } => return Exit::Error,
                Outcome::Failed { .. } | Outcome::GateClosed { .. } => exit = Exit::Problem,
                Outcome::Held { attention: true, .. } => exit = Exit::Problem,
                _ => {}
            }
        }
        exit
    }

    /// Returns the number of keys retired now.
    pub fn retired(&self) -> usize {
        self.regions
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Retired { .. }))
            .count()
    }
}

/// Why the retirement could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("--regions: no secret in the repo for region {0}")]
    UnknownRegion(String),
    #[error("the health gate gave no answer: {0:#}")]
    Gate(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The outside world `retire` works through.
pub struct RetireWorld<'a> {
    pub store: &'a Store,
    pub iam: &'a dyn KeyRetirer,
    pub gate: Option<&'a dyn HealthGate>,
    pub git: &'a dyn Git,
    pub clock: &'a dyn Clock,
    pub events: &'a dyn Events,
}

/// Retires, in each selected region whose current key has been published
/// for the grace period, the previous key in IAM by its recorded id, and
/// records the retirement in the metadata. Nothing is retired when the
/// health gate is not healthy; a key still current anywhere is never retired.
pub fn retire(req: &RetireRequest, world: &RetireWorld<'_>) -> Result<RetireReport, RetireError> {
    let now = world.clock.now();
    if req.grace < MIN_GRACE {
        plan(&[], now, req.grace)?;
    }
    // A dry run reads without the lock; a real run plans under it, so no
    // rotation changes the metadata between the plan and the record.
    let lock = if req.dry_run {
        None
    } else {
        Some(world.store.lock(world.events)?)
    };
    // A branch the commit could not go on is refused before IAM is asked:
    // afterwards it would leave keys retired in IAM with the record of it
    // uncommitted (as rotate refuses it before creating keys).
    if let (Some(branch), true, false) = (&req.branch, req.commit, req.dry_run) {
        world
            .git
            .plan_branch(branch)
            .map_err(|e| RetireError::Other(e.context("--branch")))?;
    }
    let all = region_keys(world.store)?;
    if let Some(selected) = &req.regions {
        for r in selected {
            if !all.iter().any(|k| &k.region == r) {
                return Err(RetireError::UnknownRegion(r.clone()));
            }
        }
    }
    let planned: Vec<Planned> = plan(&all, now, req.grace)?
        .into_iter()
        .filter(|p| req.regions.as_ref().is_none_or(|sel| sel.contains(&p.region)))
        .collect();
    let due = planned
        .iter()
        .any(|p| matches!(p.decision, Decision::Retire { .. } | Decision::Reconfirm { .. }));
    let gate = match (world.gate, due) {
        (Some(g), true) => Some(g.verdict(now).map_err(RetireError::Gate)?),
        _ => None,
    };
    let open = gate.as_ref().is_none_or(|g| g.healthy);
    if let Some(g) = &gate
        && !g.healthy
    {
        world.events.event(Event::Warning(format!(
            "the health gate says {}: no key is retired while the service is not healthy",
            g.verdict
        )));
    }
    let mut regions = Vec::with_capacity(planned.len());
    let mut written = Vec::new();
    for p in planned {
        let outcome = match p.decision {
            Decision::Hold(hold) => Outcome::Held {
                attention: hold.needs_attention(),
                hold,
            },
            Decision::Reconfirm {
                iam_key_id,
                key_fingerprint,
                at,
                how,
            } => {
                let held = Outcome::Held {
                    hold: Hold::AlreadyRetired { at },
                    attention: false,
                };
                if !open || lock.is_none() {
                    held
                } else {
                    match world.iam.retire(&iam_key_id, how.unwrap_or(req.how)) {
                        Ok(_) => held,
                        Err(e) => Outcome::Failed {
                            iam_key_id,
                            key_fingerprint,
                            environment: e.is_environment(),
                            error: format!("recorded as retired, but IAM refused to confirm it: {e}"),
                        },
                    }
                }
            }
            Decision::Retire {
                iam_key_id,
                key_fingerprint,
            } => {
                if !open {
                    Outcome::GateClosed {
                        iam_key_id,
                        key_fingerprint,
                    }
                } else if let Some(lock) = &lock {
                    world.events.event(Event::Status(format!(
                        "{}: retiring the previous key {key_fingerprint} ({iam_key_id}) in IAM: {}",
                        p.region,
                        req.how.name()
                    )));
                    match world.iam.retire(&iam_key_id, req.how) {
                        Ok(done) => {
                            written.extend(record(world.store, lock, &p.secret, &iam_key_id, req.how, now)?);
                            Outcome::Retired {
                                iam_key_id,
                                key_fingerprint,
                                how: req.how,
                                already_gone: done == IamRetired::AlreadyGone,
                            }
                        }
                        Err(e) => Outcome::Failed {
                            iam_key_id,
                            key_fingerprint,
                            environment: e.is_environment(),
                            error: e.to_string(),
                        },
                    }
                } else {
                    Outcome::WouldRetire {
                        iam_key_id,
                        key_fingerprint,
                        how: req.how,
                    }
                }
            }
        };
        regions.push(RegionOutcome {
            region: p.region,
            secret: p.secret,
            outcome,
        });
    }
    let commit = if req.commit && !written.is_empty() {
        let ids: Vec<String> = regions
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Retired { iam_key_id, .. } => Some(format!("{}: {iam_key_id}", r.region)),
                _ => None,
            })
            .collect();
        let message = format!(
            "Retire previous registry keys in IAM ({})\n\n{}\n",
            req.how.name(),
            ids.join("\n")
        );
        world.git.commit(req.branch.as_deref(), &written, &message)?
    } else {
        None
    };
    drop(lock);
    let mut report = RetireReport {
        ok: true,
        dry_run: req.dry_run,
        at: now,
        grace_seconds: req.grace.num_seconds(),
        gate,
        regions,
        written,
        commit,
    };
    report.ok = report.exit() == Exit::Ok;
    Ok(report)
}

/// Records under `lock` that `secret`'s previous key `id` was retired.
fn record(
    store: &Store,
    lock: &Lock,
    secret: &str,
    id: &str,
    how: RetiredHow,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let mut meta = store
        .read_meta(secret)?
        .ok_or_else(|| anyhow::anyhow!("{secret}: its metadata disappeared while retiring its previous key"))?;
    let Some(prev) = meta.previous.as_mut().filter(|p| p.iam_key_id.as_deref() == Some(id)) else {
        anyhow::bail!("{secret}: its previous version changed while retiring key {id}; the retirement is not recorded");
    };
    prev.retired_at = Some(now);
    prev.retired_how = Some(how);
    let mut plan = WritePlan::default();
    lock.stage(
        &mut plan,
        Rewrite {
            meta,
            active: None,
            previous: None,
            pending: None,
        },
    )?;
    lock.apply(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets_repo::layout::State;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn version(fp: &str, id: Option<&str>, published: &str) -> KeyVersion {
        KeyVersion {
            key_name: None,
            key_fingerprint: fp.into(),
            iam_key_id: id.map(str::to_owned),
            published_at: t(published),
            retired_at: None,
            retired_how: None,
        }
    }

    fn region(name: &str, current: KeyVersion, previous: Option<KeyVersion>) -> RegionKeys {
        RegionKeys {
            region: name.into(),
            secret: format!("{}_REGISTRY_PULL_SECRET_64", name.to_uppercase()),
            current,
            previous,
            committed: true,
        }
    }

    #[test]
    fn retires_after_the_grace_period_only() {
        let regions = vec![region(
            "jp",
            version("sha256:new", Some("ApiKey-new"), "2026-11-23T10:00:00Z"),
            Some(version("sha256:old", Some("ApiKey-old"), "2026-08-01T00:00:00Z")),
        )];
        let early = plan(&regions, t("2026-11-24T09:59:59Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            early[0].decision,
            Decision::Hold(Hold::InGracePeriod {
                until: t("2026-11-24T10:00:00Z")
            })
        );
        let late = plan(&regions, t("2026-11-24T10:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            late[0].decision,
            Decision::Retire {
                iam_key_id: "ApiKey-old".into(),
                key_fingerprint: "sha256:old".into()
            }
        );
    }

    #[test]
    fn never_retires_a_key_still_current_somewhere() {
        let regions = vec![
            region(
                "jp",
                version("sha256:new", Some("ApiKey-new"), "2026-11-01T00:00:00Z"),
                Some(version("sha256:shared", Some("ApiKey-shared"), "2026-08-01T00:00:00Z")),
            ),
            region(
                "au",
                version("sha256:shared", Some("ApiKey-shared"), "2026-08-01T00:00:00Z"),
                None,
            ),
        ];
        let p = plan(&regions, t("2026-11-24T00:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            p[0].decision,
            Decision::Hold(Hold::StillCurrent {
                current_in: "au".into()
            })
        );
        assert_eq!(p[1].decision, Decision::Hold(Hold::NoPrevious));
    }

    #[test]
    fn refuses_a_grace_period_shorter_than_a_token_lifetime() {
        assert!(matches!(
            plan(&[], t("2026-11-24T00:00:00Z"), Duration::minutes(59)),
            Err(PlanError::GraceTooShort(_))
        ));
        assert!(plan(&[], t("2026-11-24T00:00:00Z"), MIN_GRACE).is_ok());
    }

    #[test]
    fn holds_keys_without_an_iam_id_or_already_retired() {
        let mut prev = version("sha256:old", None, "2026-08-01T00:00:00Z");
        let regions = vec![region(
            "jp",
            version("sha256:new", None, "2026-11-01T00:00:00Z"),
            Some(prev.clone()),
        )];
        let p = plan(&regions, t("2026-11-24T00:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(p[0].decision, Decision::Hold(Hold::NoIamId));
        prev.retired_at = Some(t("2026-11-10T00:00:00Z"));
        let regions = vec![region(
            "jp",
            version("sha256:new", None, "2026-11-01T00:00:00Z"),
            Some(prev),
        )];
        let p = plan(&regions, t("2026-11-24T00:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            p[0].decision,
            Decision::Hold(Hold::AlreadyRetired {
                at: t("2026-11-10T00:00:00Z")
            })
        );
    }

    mod operation {
        use super::*;
        use crate::ops::world::{FixedClock, GitCli, RecordedEvents};
        use crate::secrets_repo::layout::{Digest, Slot};

        struct Repo {
            dir: tempfile::TempDir,
        }

        fn version(state: State, name: &str, slot: Slot, fp: &str, id: Option<&str>, at: &str) -> Version {
            Version {
                state,
                file: slot.file(name),
                key_name: None,
                key_fingerprint: fp.into(),
                rotated_at: t(at),
                recipients: vec![],
                recipient_key_ids: vec![],
                rekey_version: "0".into(),
                plaintext_digest: Digest::compute(&[1; 32], fp.as_bytes()),
                iam_key_id: id.map(str::to_owned),
                retired_at: None,
                retired_how: None,
                rolled_back_at: None,
                signed: None,
            }
        }

        impl Repo {
            fn new() -> Repo {
                let dir = tempfile::tempdir().unwrap();
                let ok = std::process::Command::new("git")
                    .args(["init", "-q", "-b", "main"])
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                std::fs::create_dir(dir.path().join("registry")).unwrap();
                Repo { dir }
            }

            fn store(&self) -> Store {
                Store::new(self.dir.path())
            }

            /// Writes a region whose current key `cur` (published at `at`) replaced `prev`.
            fn region(&self, region: &str, cur: (&str, &str), prev: Option<(&str, &str)>, at: &str) {
                let name = crate::secrets_repo::layout::secret_name(region);
                let reg = self.dir.path().join("registry");
                std::fs::write(reg.join(Slot::Active.file(&name)), b"x").unwrap();
                let previous = prev.map(|(fp, id)| {
                    std::fs::write(reg.join(Slot::Previous.file(&name)), b"y").unwrap();
                    version(
                        State::Previous,
                        &name,
                        Slot::Previous,
                        fp,
                        Some(id),
                        "2026-08-01T00:00:00Z",
                    )
                });
                let meta = Metadata {
                    schema: crate::secrets_repo::layout::SCHEMA,
                    name: name.clone(),
                    region: region.into(),
                    active: version(State::Current, &name, Slot::Active, cur.0, Some(cur.1), at),
                    previous,
                    pending: None,
                };
                std::fs::write(reg.join(Slot::Meta.file(&name)), meta.render()).unwrap();
                self.commit(at, &format!("rotate {region}"));
            }

            /// Commits everything with committer time `at`.
            fn commit(&self, at: &str, message: &str) {
                self.git(at, &["add", "-A"]);
                self.git(at, &["commit", "-qm", message]);
            }

            /// Runs git in the repo with author and committer time `at`.
            fn git(&self, at: &str, args: &[&str]) {
                let ok = std::process::Command::new("git")
                    .arg("-C")
                    .arg(self.dir.path())
                    .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                    .args(args)
                    .env("GIT_COMMITTER_DATE", at)
                    .env("GIT_AUTHOR_DATE", at)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "git {args:?}");
            }

            fn meta(&self, region: &str) -> Metadata {
                let name = crate::secrets_repo::layout::secret_name(region);
                self.store().read_meta(&name).unwrap().unwrap()
            }

            fn run(
                &self,
                iam: &dyn KeyRetirer,
                gate: Option<&dyn HealthGate>,
                at: &str,
                dry_run: bool,
            ) -> RetireReport {
                let store = self.store();
                let git = GitCli {
                    repo: self.dir.path().to_owned(),
                };
                let events = RecordedEvents::default();
                let clock = FixedClock(t(at));
                let req = RetireRequest {
                    grace: DEFAULT_GRACE,
                    how: RetiredHow::Disabled,
                    regions: None,
                    dry_run,
                    commit: true,
                    branch: None,
                };
                retire(
                    &req,
                    &RetireWorld {
                        store: &store,
                        iam,
                        gate,
                        git: &git,
                        clock: &clock,
                        events: &events,
                    },
                )
                .unwrap()
            }
        }

        struct Gate(bool);
        impl HealthGate for Gate {
            fn verdict(&self, _: DateTime<Utc>) -> anyhow::Result<GateVerdict> {
                Ok(GateVerdict {
                    healthy: self.0,
                    verdict: if self.0 { "healthy" } else { "degraded" }.into(),
                    details: vec![],
                })
            }
        }

        #[test]
        fn retires_after_grace_records_and_commits_once() {
            let repo = Repo::new();
            repo.region(
                "jp",
                ("sha256:jpnew", "ApiKey-jpnew"),
                Some(("sha256:jpold", "ApiKey-jpold")),
                "2026-11-20T00:00:00Z",
            );
            repo.region(
                "au",
                ("sha256:aunew", "ApiKey-aunew"),
                Some(("sha256:auold", "ApiKey-auold")),
                "2026-11-24T00:00:00Z",
            );
            let iam = MemoryIam::with_keys(&["ApiKey-jpold", "ApiKey-auold", "ApiKey-jpnew", "ApiKey-aunew"]);
            let dry = repo.run(&iam, None, "2026-11-24T10:00:00Z", true);
            assert_eq!(dry.exit(), Exit::Ok);
            assert!(dry.written.is_empty());
            assert_eq!(iam.state("ApiKey-jpold"), None, "a dry run calls no IAM");
            let report = repo.run(&iam, None, "2026-11-24T10:00:00Z", false);
            assert_eq!(report.exit(), Exit::Ok);
            assert_eq!(report.retired(), 1);
            assert_eq!(iam.state("ApiKey-jpold"), Some(RetiredHow::Disabled));
            assert_eq!(iam.state("ApiKey-auold"), None, "au is inside its grace period");
            let jp = repo.meta("jp").previous.unwrap();
            assert_eq!(jp.retired_how, Some(RetiredHow::Disabled));
            assert_eq!(jp.retired_at, Some(t("2026-11-24T10:00:00Z")));
            assert_eq!(
                report.written,
                vec!["registry/JP_REGISTRY_PULL_SECRET_64.meta.json".to_owned()]
            );
            assert!(report.commit.is_some());
            let again = repo.run(&iam, None, "2026-11-24T11:00:00Z", false);
            assert_eq!(again.retired(), 0, "already retired");
            assert!(again.commit.is_none());
        }

        #[test]
        fn a_planted_retirement_mark_does_not_keep_a_live_key_out_of_retirement() {
            // The metadata's retirement record is not signed: a pull request
            // marks jp's previous key retired although IAM still has it.
            let repo = Repo::new();
            for (region, at) in [("jp", "2026-11-20T00:00:00Z"), ("au", "2026-11-24T09:00:00Z")] {
                let new = format!("ApiKey-{region}new");
                let old = format!("ApiKey-{region}old");
                repo.region(region, ("sha256:new", &new), Some(("sha256:old", &old)), at);
                let name = crate::secrets_repo::layout::secret_name(region);
                let mut meta = repo.meta(region);
                if let Some(p) = meta.previous.as_mut() {
                    p.retired_at = Some(t("2026-11-21T00:00:00Z"));
                    p.retired_how = Some(RetiredHow::Disabled);
                }
                let path = repo.dir.path().join("registry").join(Slot::Meta.file(&name));
                std::fs::write(path, meta.render()).unwrap();
            }
            let before = repo.meta("jp");
            let iam = MemoryIam::with_keys(&["ApiKey-jpold", "ApiKey-jpnew", "ApiKey-auold", "ApiKey-aunew"]);
            let dry = repo.run(&iam, None, "2026-11-24T10:00:00Z", true);
            assert_eq!(iam.state("ApiKey-jpold"), None, "a dry run calls no IAM");
            assert!(dry.written.is_empty());
            let report = repo.run(&iam, None, "2026-11-24T10:00:00Z", false);
            assert_eq!(report.exit(), Exit::Ok);
            assert_eq!(
                iam.state("ApiKey-jpold"),
                Some(RetiredHow::Disabled),
                "due by every rule: IAM is asked again, whatever the record says"
            );
            assert_eq!(
                iam.state("ApiKey-auold"),
                None,
                "a mark does not make a key inside its grace period due either"
            );
            assert!(
                report.written.is_empty() && report.commit.is_none(),
                "the record is left as it is"
            );
            assert_eq!(repo.meta("jp"), before);
            assert!(matches!(
                report.regions.iter().find(|r| r.region == "jp").unwrap().outcome,
                Outcome::Held {
                    hold: Hold::AlreadyRetired { .. },
                    attention: false
                }
            ));
        }

        fn jp_hold(report: &RetireReport) -> Option<Hold> {
            match &report.regions.iter().find(|r| r.region == "jp")?.outcome {
                Outcome::Held { hold, .. } => Some(hold.clone()),
                _ => None,
            }
        }

        #[test]
        fn the_grace_period_runs_from_the_merge_not_from_sealing() {
            let repo = Repo::new();
            repo.region("jp", ("sha256:jpold", "ApiKey-jpold"), None, "2026-08-01T00:00:00Z");
            // Sealed on a branch on the 20th, merged (--no-ff) on the 23rd.
            repo.git("2026-11-20T00:00:00Z", &["checkout", "-qb", "rotate"]);
            repo.region(
                "jp",
                ("sha256:jpnew", "ApiKey-jpnew"),
                Some(("sha256:jpold", "ApiKey-jpold")),
                "2026-11-20T00:00:00Z",
            );
            repo.git("2026-11-20T00:00:00Z", &["checkout", "-q", "main"]);
            let iam = MemoryIam::with_keys(&["ApiKey-jpold", "ApiKey-jpnew"]);
            let before = repo.run(&iam, None, "2026-11-22T00:00:00Z", true);
            assert_eq!(
                jp_hold(&before),
                Some(Hold::NoPrevious),
                "main still serves the old key"
            );
            repo.git(
                "2026-11-23T00:00:00Z",
                &["merge", "-q", "--no-ff", "-m", "Merge rotate", "rotate"],
            );
            // A later commit that leaves the current key alone does not move it.
            repo.git(
                "2026-11-23T06:00:00Z",
                &["commit", "-q", "--allow-empty", "-m", "other"],
            );
            let early = repo.run(&iam, None, "2026-11-23T02:00:00Z", false);
            assert_eq!(
                jp_hold(&early),
                Some(Hold::InGracePeriod {
                    until: t("2026-11-24T00:00:00Z")
                })
            );
            assert_eq!(iam.state("ApiKey-jpold"), None);
            let late = repo.run(&iam, None, "2026-11-24T01:00:00Z", false);
            assert_eq!(late.retired(), 1);
            assert_eq!(iam.state("ApiKey-jpold"), Some(RetiredHow::Disabled));
        }

        #[test]
        fn an_uncommitted_current_version_is_not_published() {
            let repo = Repo::new();
            repo.region("jp", ("sha256:jpold", "ApiKey-jpold"), None, "2026-08-01T00:00:00Z");
            // Sealed in the work tree, never committed.
            let name = crate::secrets_repo::layout::secret_name("jp");
            let reg = repo.dir.path().join("registry");
            let meta = Metadata {
                previous: Some(version(
                    State::Previous,
                    &name,
                    Slot::Previous,
                    "sha256:jpold",
                    Some("ApiKey-jpold"),
                    "2026-08-01T00:00:00Z",
                )),
                active: version(
                    State::Current,
                    &name,
                    Slot::Active,
                    "sha256:jpnew",
                    Some("ApiKey-jpnew"),
                    "2026-11-01T00:00:00Z",
                ),
                ..repo.meta("jp")
            };
            std::fs::write(reg.join(Slot::Previous.file(&name)), b"y").unwrap();
            std::fs::write(reg.join(Slot::Meta.file(&name)), meta.render()).unwrap();
            let iam = MemoryIam::with_keys(&["ApiKey-jpold", "ApiKey-jpnew"]);
            let report = repo.run(&iam, None, "2026-11-24T00:00:00Z", false);
            assert_eq!(jp_hold(&report), Some(Hold::NotCommitted));
            assert_eq!(report.exit(), Exit::Ok, "waiting for a merge needs no operator");
            assert_eq!(iam.state("ApiKey-jpold"), None);
            // Committed, it is published at the commit.
            repo.commit("2026-11-23T12:00:00Z", "rotate jp");
            let report = repo.run(&iam, None, "2026-11-24T00:00:00Z", false);
            assert_eq!(
                jp_hold(&report),
                Some(Hold::InGracePeriod {
                    until: t("2026-11-24T12:00:00Z")
                })
            );
            // No git at all: nothing is published.
            let plain = tempfile::tempdir().unwrap();
            std::fs::create_dir(plain.path().join("registry")).unwrap();
            for f in [
                "JP_REGISTRY_PULL_SECRET_64.gpg",
                "JP_REGISTRY_PULL_SECRET_64.previous.gpg",
            ] {
                std::fs::write(plain.path().join("registry").join(f), b"x").unwrap();
            }
            std::fs::write(
                plain.path().join("registry").join(Slot::Meta.file(&name)),
                meta.render(),
            )
            .unwrap();
            let keys = region_keys(&Store::new(plain.path())).unwrap();
            assert!(!keys[0].committed);
        }

        #[test]
        fn a_closed_gate_or_a_key_still_current_retires_nothing() {
            let repo = Repo::new();
            repo.region(
                "jp",
                ("sha256:jpnew", "ApiKey-jpnew"),
                Some(("sha256:shared", "ApiKey-shared")),
                "2026-11-20T00:00:00Z",
            );
            repo.region(
                "us",
                ("sha256:usnew", "ApiKey-usnew"),
                Some(("sha256:usold", "ApiKey-usold")),
                "2026-11-20T00:00:00Z",
            );
            repo.region("au", ("sha256:shared", "ApiKey-shared"), None, "2026-08-01T00:00:00Z");
            let iam = MemoryIam::with_keys(&["ApiKey-shared", "ApiKey-usold"]);
            let closed = repo.run(&iam, Some(&Gate(false)), "2026-11-24T10:00:00Z", false);
            assert_eq!(closed.exit(), Exit::Problem);
            assert_eq!(iam.state("ApiKey-usold"), None);
            assert!(closed.written.is_empty());
            let open = repo.run(&iam, Some(&Gate(true)), "2026-11-24T10:00:00Z", false);
            assert_eq!(open.exit(), Exit::Problem, "jp's previous key is au's current key");
            assert_eq!(iam.state("ApiKey-shared"), None);
            assert_eq!(iam.state("ApiKey-usold"), Some(RetiredHow::Disabled));
        }

        #[test]
        fn iam_unreachable_records_nothing_and_exits_2() {
            let repo = Repo::new();
            repo.region(
                "jp",
                ("sha256:jpnew", "ApiKey-jpnew"),
                Some(("sha256:jpold", "ApiKey-jpold")),
                "2026-11-20T00:00:00Z",
            );
            let iam = MemoryIam {
                unreachable: true,
                ..MemoryIam::default()
            };
            let report = repo.run(&iam, None, "2026-11-24T10:00:00Z", false);
            assert_eq!(report.exit(), Exit::Error);
            assert!(report.written.is_empty());
            assert!(repo.meta("jp").previous.unwrap().retired_at.is_none());
        }
    }
}
