//! The rotation: for each region, render the new pull secret in memory,
//! prove the key pulls from every host, seal it as `pending`, then make it
//! `current` (the replaced version kept as `previous`), journaling each
//! step so that a killed rotation resumes where it stopped, and commit
//! exactly the files of the rotated regions.

use crate::iam::{KeyClass, KeyStatus};
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
use std::collections::{BTreeMap, BTreeSet};

/// A region's new key.
pub struct RegionKey {
    pub key: ApiKey,
    /// The key's name (validated: it ends in its creation date).
    pub key_name: String,
    /// The key's IAM id, when known.
    pub iam_key_id: Option<String>,
}

/// Where the new keys come from.
pub enum NewKeys {
    /// Given by the operator: region name → its key (several regions may share one).
    Given(BTreeMap<String, RegionKey>),
    /// Created in IAM by this run: region name → the new key's name.
    Create(BTreeMap<String, String>),
}

/// IAM as a rotation uses it: proving keys valid, creating and deleting keys.
/// Implementations never put a key or token into an error.
pub trait KeyIam {
    /// Exchanges `key` for a token and says what IAM thinks of it.
    fn check(&self, key: &ApiKey) -> KeyStatus;
    /// Creates a key named `name` for `region`; returns it and its IAM id.
    fn create(&self, region: &Region, name: &str) -> anyhow::Result<(ApiKey, String)>;
    /// Deletes the key with IAM id `id`.
    fn delete(&self, id: &str) -> anyhow::Result<()>;
    /// Creates a key named `name` for `region` whose IAM description is
    /// `description` (it carries the run's marker, by which `rotate --abort`
    /// finds a key whose creation answer was lost). An IAM that keeps no
    /// descriptions may ignore it.
    fn create_described(&self, region: &Region, name: &str, description: &str) -> anyhow::Result<(ApiKey, String)> {
        let _ = description;
        self.create(region, name)
    }
    /// Returns the IAM id of the service ID keys are created for, when known:
    /// it is recorded with each creation intent so that `--abort` can list its keys.
    fn owner_iam_id(&self) -> Option<String> {
        None
    }
    /// Returns true when the failed creation `e` certainly created no key
    /// (IAM answered a refusal); false when IAM may hold a key nobody heard
    /// of (no answer, 5xx, an unreadable answer), whose intent then stays in
    /// the journal for `--abort`. The default suits an IAM whose every
    /// failure is an answered refusal (one in memory); a networked IAM
    /// overrides it.
    fn created_nothing(&self, e: &anyhow::Error) -> bool {
        let _ = e;
        true
    }
}

/// Returns true when `e` is IAM's answered refusal of a creation (HTTP 4xx):
/// IAM said no, so no key was created. Anything else (no answer, 5xx, an
/// answer rekey could not read) may hide a created key.
pub fn creation_refused(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<crate::iam::IamError>(),
        Some(crate::iam::IamError::Refused { status: 400..=499, .. })
    )
}

/// What to rotate, and how.
pub struct RotateRequest<'a> {
    /// The regions to rotate (validated catalog entries).
    pub regions: Vec<&'a Region>,
    /// The new keys, one per region.
    pub keys: NewKeys,
    /// Exchange every new key with IAM before verifying (implied by `Create`).
    pub iam_check: bool,
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

impl RotateRequest<'_> {
    fn creates(&self) -> bool {
        matches!(self.keys, NewKeys::Create(_))
    }
}

/// The outside world a rotation touches.
pub struct RotateWorld<'a> {
    pub store: &'a Store,
    pub git: &'a dyn Git,
    pub verifier: &'a dyn Verifier,
    pub clock: &'a dyn Clock,
    pub random: &'a dyn Random,
    pub events: &'a dyn Events,
    /// IAM, for `iam_check` and `NewKeys::Create`.
    pub iam: Option<&'a dyn KeyIam>,
}

/// What the rotation does, or did, to one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The region already carries the new key.
    Unchanged,
    /// The region gets the new key.
    Rotate,
    /// A host could not pull, or IAM refused the key: the region keeps its old key.
    Blocked,
}

/// Why IAM blocked a region: its key's class and IAM's words (no key, no token).
#[derive(Debug, Clone, Serialize)]
pub struct IamRefusal {
    pub class: KeyClass,
    pub detail: String,
}

/// One region's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    pub region: String,
    pub secret: String,
    pub action: Action,
    pub stage: Option<Stage>,
    pub old_key_fingerprint: Option<String>,
    /// The new key's name.
    pub key_name: String,
    pub new_key_fingerprint: String,
    /// The new key's IAM id, when known (created by this run, or reported by `iam_check`).
    pub iam_key_id: Option<String>,
    /// Set when IAM refused the new key: no registry was asked for this region.
    pub iam: Option<IamRefusal>,
    pub hosts_ok: usize,
    pub hosts: usize,
    pub failing_hosts: Vec<HostResult>,
}

/// What became of a key this run created in IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreatedOutcome {
    /// Its region was published with it.
    Published,
    /// Its region was not published: the key was deleted again.
    Deleted,
    /// Its region was not published and deleting it failed: delete it by hand.
    DeleteFailed,
}

/// A key this run created in IAM (its id, never its value).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedReport {
    pub region: String,
    pub key_name: String,
    pub iam_key_id: String,
    pub outcome: CreatedOutcome,
}

/// A rotation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub dry_run: bool,
    /// The new key's name and fingerprint when every region shares one key.
    pub key_name: Option<String>,
    pub key_fingerprint: Option<String>,
    pub commit: Option<String>,
    /// The branch committed on (`--branch`), and how it moved.
    pub branch: Option<String>,
    pub branch_move: Option<BranchMove>,
    /// The files committed, relative to the repo root.
    pub committed_files: Vec<String>,
    pub regions: Vec<RegionReport>,
    /// The keys created in IAM (`--create-keys`).
    pub created_keys: Vec<CreatedReport>,
    /// Previous keys this run dropped from the metadata (replaced by the
    /// key that was current) although rekey never retired them in IAM and
    /// no region uses them: `keys retire` can no longer name them, so they
    /// must be deleted in IAM by hand.
    pub dropped_keys: Vec<DroppedKey>,
}

/// A previous key a rotation dropped from the metadata while it was still
/// alive in IAM as far as rekey knows (its id, never its value).
#[derive(Debug, Clone, Serialize)]
pub struct DroppedKey {
    pub region: String,
    pub key_name: Option<String>,
    pub key_fingerprint: String,
    pub iam_key_id: String,
}

impl RotateReport {
    /// Returns true when a host or IAM blocked a region.
    pub fn blocked(&self) -> bool {
        self.regions.iter().any(|r| r.action == Action::Blocked)
    }

    /// Returns the created keys that are left in IAM unpublished (deleting them failed).
    pub fn leftover_keys(&self) -> Vec<&CreatedReport> {
        self.created_keys
            .iter()
            .filter(|c| c.outcome == CreatedOutcome::DeleteFailed)
            .collect()
    }
}

/// Returns one pull-check target per host of each region, with `key`.
pub fn region_targets<'a>(
    regions: impl IntoIterator<Item = &'a Region>,
    key: &ApiKey,
    image: Option<&ImageRef>,
) -> Vec<Target> {
    regions.into_iter().flat_map(|r| host_targets(r, key, image)).collect()
}

fn host_targets(region: &Region, key: &ApiKey, image: Option<&ImageRef>) -> Vec<Target> {
    region
        .hosts
        .iter()
        .map(|host| Target {
            region: region.name.clone(),
            host: host.clone(),
            image: image.cloned().unwrap_or_else(|| region.probe_image.clone()),
            credential: Credential {
                username: region.username.clone(),
                password: SecretString::from(key.expose_secret().to_owned()),
            },
        })
        .collect()
}

struct Planned<'a> {
    region: &'a Region,
    key: &'a ApiKey,
    key_name: String,
    iam_key_id: Option<String>,
    plaintext: zeroize::Zeroizing<String>,
    report: RegionReport,
}

/// Runs a rotation (or plans it, with `dry_run`).
pub fn rotate(req: &RotateRequest<'_>, w: &RotateWorld<'_>) -> anyhow::Result<RotateReport> {
    let now = w.clock.now();
    let policy = w.store.load_policy(req.validity, now.into(), w.events)?;
    let signers = authorship::require_signer(w.store, req.signer)?;
    let lock = w.store.lock_unless_dry_run(req.dry_run, w.events)?;
    let journal = match &lock {
        Some(l) => l.read_journal()?,
        None => w.store.peek_journal()?,
    };
    let journal_path = || {
        w.store
            .state_dir()
            .map(|d| d.join(store::JOURNAL_FILE).display().to_string())
            .unwrap_or_else(|_| store::JOURNAL_FILE.to_owned())
    };
    if let Some(j) = &journal {
        if let Some(schema) = j.legacy_schema {
            bail!(
                "{}: a rotation to {} ({}) started at {} by an older rekey (journal schema {schema}, one key for every region) is unfinished: finish it with the rekey version that started it, or discard it with `rekey rotate --repo REPO --abort`",
                journal_path(),
                j.key_names(),
                j.key_fingerprints(),
                j.started_at.to_rfc3339()
            );
        }
        if !j.created.is_empty() || !j.intents.is_empty() {
            let ids: Vec<&str> = j.undeleted_created().iter().map(|c| c.iam_key_id.as_str()).collect();
            bail!(
                "{}: a `--create-keys` rotation started at {} stopped after creating keys in IAM; IAM does not keep key values, so it cannot be resumed: discard it with `rekey rotate --repo REPO --abort` (given --iam-api-key-file/--iam-api-key-env it deletes the keys it created that are still in IAM: {}{})",
                journal_path(),
                j.started_at.to_rfc3339(),
                if ids.is_empty() {
                    "none recorded".to_owned()
                } else {
                    ids.join(", ")
                },
                if j.intents.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; and it finds by their marker the keys whose creation got no answer: {}",
                        unanswered(j)
                    )
                }
            );
        }
    }
    let keys = match &req.keys {
        NewKeys::Given(keys) => {
            if let Some(j) = &journal {
                let differs = req.regions.iter().any(|r| match keys.get(&r.name) {
                    Some(k) => !j.is_for(&r.name, &k.key_name, k.key.expose_secret().as_bytes()),
                    None => j.regions.contains_key(&r.name),
                });
                if differs {
                    bail!(
                        "{}: a rotation to {} ({}) started at {} is unfinished: rerun it with the same keys to finish it, or discard it with `rekey rotate --repo REPO --abort`",
                        journal_path(),
                        j.key_names(),
                        j.key_fingerprints(),
                        j.started_at.to_rfc3339()
                    );
                }
            }
            return run(
                req,
                w,
                keys,
                Ctx {
                    lock,
                    journal,
                    now,
                    policy: &policy,
                    signers: signers.as_ref(),
                },
            );
        }
        NewKeys::Create(names) => names,
    };
    if let Some(j) = &journal {
        bail!(
            "{}: a rotation to {} ({}) started at {} is unfinished: finish it first (rerun it with its keys), or discard it with `rekey rotate --repo REPO --abort`",
            journal_path(),
            j.key_names(),
            j.key_fingerprints(),
            j.started_at.to_rfc3339()
        );
    }
    let Some(lock) = lock else {
        return plan_creation(req, w, keys);
    };
    let iam = w.iam.context("creating keys needs IAM")?;
    // Everything that can be refused without IAM is refused before a key exists.
    if let (Some(branch), true) = (&req.branch, req.commit) {
        w.git.plan_branch(branch).context("--branch")?;
    }
    for region in &req.regions {
        if let Some(old) = w.store.read_secret(&layout::secret_name(&region.name))? {
            authorship::verify_on_disk(w.store, signers.as_ref(), &old.on_disk(), now.into())?;
        }
    }
    let mut journal = Journal::new(now);
    let mut created: BTreeMap<String, RegionKey> = BTreeMap::new();
    // The run's marker goes into each key's IAM description and into the
    // journal before IAM is asked: a key whose creation answer never
    // arrives (a kill, a lost connection) is found again by it.
    let marker = format!("rk-{}", hex::encode(&w.random.salt()?[..8]));
    let owner = iam.owner_iam_id().unwrap_or_default();
    for region in &req.regions {
        let name = keys
            .get(&region.name)
            .with_context(|| format!("no key name for region {}", region.name))?;
        let description = journal::CreationIntent::describe(&marker, &region.name);
        journal.intents.push(journal::CreationIntent {
            region: region.name.clone(),
            key_name: name.clone(),
            marker: marker.clone(),
            description: description.clone(),
            owner_iam_id: owner.clone(),
            at: w.clock.now(),
        });
        if let Err(e) = lock.write_journal(&journal) {
            journal.intents.pop();
            let e = e.context(format!(
                "recording the creation of key {name} for region {}",
                region.name
            ));
            return Err(undo_creation(iam, &lock, &mut journal, e));
        }
        w.events.event(Event::Status(format!("creating key {name} in IAM")));
        let made = match iam.create_described(region, name, &description) {
            Err(e) => {
                if iam.created_nothing(&e) {
                    journal.intents.retain(|i| i.region != region.name);
                }
                Err(e)
            }
            // The id goes into the journal, the metadata and the signed
            // statement, and names the key for deletion: an answer that is
            // no IAM key id (a hostile or broken IAM) is refused before it
            // is recorded anywhere, and is not echoed. An IAM that answers
            // so cannot be trusted to list its keys either: the operator
            // deletes it by name and marker.
            Ok((_, id)) if !layout::is_iam_key_id(&id) => {
                journal.intents.retain(|i| i.region != region.name);
                Err(anyhow::anyhow!(
                    "IAM answered the creation of key {name} with an id that is not an IAM API key id (ApiKey- and letters, digits, dashes): delete the key named {name} (marker {marker} in its description) in IAM by hand"
                ))
            }
            Ok((key, id)) => {
                journal.created.push(journal::CreatedKey {
                    region: region.name.clone(),
                    key_name: name.clone(),
                    iam_key_id: id.clone(),
                    deleted: false,
                });
                journal.intents.retain(|i| i.region != region.name);
                w.random.salt().and_then(|salt| {
                    let digest = Digest::compute(&salt, key.expose_secret().as_bytes());
                    journal.plan(
                        &region.name,
                        name,
                        key.fingerprint().to_string(),
                        digest,
                        Some(id.clone()),
                    );
                    lock.write_journal(&journal)?;
                    Ok((key, id))
                })
            }
        };
        match made {
            Ok((key, id)) => {
                created.insert(
                    region.name.clone(),
                    RegionKey {
                        key,
                        key_name: name.clone(),
                        iam_key_id: Some(id),
                    },
                );
            }
            Err(e) => {
                let e = e.context(format!("creating key {name} for region {}", region.name));
                return Err(undo_creation(iam, &lock, &mut journal, e));
            }
        }
    }
    let result = run(
        req,
        w,
        &created,
        Ctx {
            lock: Some(lock),
            journal: Some(journal.clone()),
            now,
            policy: &policy,
            signers: signers.as_ref(),
        },
    );
    match result {
        Ok(mut report) => {
            for c in &journal.created {
                let published = report
                    .regions
                    .iter()
                    .any(|r| r.region == c.region && r.stage == Some(Stage::Published));
                let outcome = if published {
                    CreatedOutcome::Published
                } else {
                    match iam.delete(&c.iam_key_id) {
                        Ok(()) => CreatedOutcome::Deleted,
                        Err(e) => {
                            w.events.event(Event::Status(format!(
                                "deleting unpublished key {} ({}) failed: {e:#}",
                                c.key_name, c.iam_key_id
                            )));
                            CreatedOutcome::DeleteFailed
                        }
                    }
                };
                report.created_keys.push(CreatedReport {
                    region: c.region.clone(),
                    key_name: c.key_name.clone(),
                    iam_key_id: c.iam_key_id.clone(),
                    outcome,
                });
            }
            Ok(report)
        }
        Err(e) => {
            // The lock went with `run`; retake it to record the deletions.
            let lock = w.store.lock(w.events)?;
            let mut journal = lock.read_journal()?.unwrap_or(journal);
            Err(undo_creation(iam, &lock, &mut journal, e))
        }
    }
}

/// Deletes the keys this run created (none was committed), records that in
/// the journal, and returns `e` with what became of them.
fn undo_creation(iam: &dyn KeyIam, lock: &store::Lock, journal: &mut Journal, e: anyhow::Error) -> anyhow::Error {
    let mut failed = Vec::new();
    let mut deleted = 0;
    for c in journal.created.iter_mut().filter(|c| !c.deleted) {
        match iam.delete(&c.iam_key_id) {
            Ok(()) => {
                c.deleted = true;
                deleted += 1;
            }
            Err(d) => failed.push(format!("{} ({}, region {}): {d:#}", c.iam_key_id, c.key_name, c.region)),
        }
    }
    let sealed = journal.regions.values().any(|r| r.stage >= Stage::Sealed);
    let recorded = if !journal.intents.is_empty() {
        // A creation got no answer: the journal keeps its intent for `--abort`.
        lock.write_journal(journal)
    } else if journal.created.is_empty() {
        lock.remove_journal()
    } else if !sealed && failed.is_empty() {
        // Nothing reached the repo and nothing is left in IAM.
        lock.remove_journal()
    } else {
        lock.write_journal(journal)
    };
    let mut msg = format!(
        "the rotation failed after creating keys in IAM: deleted the {} it created",
        crate::words::plural(deleted, "key", "keys")
    );
    if !failed.is_empty() {
        msg.push_str(&format!(
            "; deleting these failed, delete them in IAM: {}",
            failed.join("; ")
        ));
    }
    if !journal.intents.is_empty() {
        msg.push_str(&format!(
            "; IAM may hold keys whose creation got no answer ({}): run `rekey rotate --repo REPO --abort` with the IAM admin key to find them by their marker and delete them",
            unanswered(journal)
        ));
    } else if sealed {
        msg.push_str("; discard the secrets it wrote with `rekey rotate --repo REPO --abort`");
    }
    if let Err(r) = recorded {
        msg.push_str(&format!("; recording this in the journal failed: {r:#}"));
    }
    e.context(msg)
}

/// Names the creations of `journal` that got no answer, for messages:
/// `NAME (region R, marker M in its description), …`.
fn unanswered(journal: &Journal) -> String {
    let list: Vec<String> = journal
        .intents
        .iter()
        .map(|i| {
            format!(
                "{} (region {}, marker {} in its description)",
                i.key_name, i.region, i.marker
            )
        })
        .collect();
    list.join(", ")
}

/// The plan of a `--create-keys` dry run: every region gets a new key.
fn plan_creation(
    req: &RotateRequest<'_>,
    w: &RotateWorld<'_>,
    names: &BTreeMap<String, String>,
) -> anyhow::Result<RotateReport> {
    let mut regions = Vec::new();
    for region in &req.regions {
        let secret = layout::secret_name(&region.name);
        let old = w.store.read_secret(&secret)?;
        regions.push(RegionReport {
            region: region.name.clone(),
            secret,
            action: Action::Rotate,
            stage: None,
            old_key_fingerprint: old.map(|s| s.meta.active.key_fingerprint.clone()),
            key_name: names.get(&region.name).cloned().unwrap_or_default(),
            new_key_fingerprint: "to be created in IAM".to_owned(),
            iam_key_id: None,
            iam: None,
            hosts_ok: 0,
            hosts: region.hosts.len(),
            failing_hosts: Vec::new(),
        });
    }
    Ok(RotateReport {
        dry_run: true,
        key_name: None,
        key_fingerprint: None,
        commit: None,
        branch: None,
        branch_move: None,
        committed_files: Vec::new(),
        regions,
        created_keys: Vec::new(),
        dropped_keys: Vec::new(),
    })
}

/// What `rotate` has prepared before running.
struct Ctx<'p> {
    lock: Option<store::Lock>,
    journal: Option<Journal>,
    now: chrono::DateTime<chrono::Utc>,
    policy: &'p crate::secrets_repo::pgp::RecipientSet,
    signers: Option<&'p crate::secrets_repo::signing::AllowedSigners>,
}

/// The rotation proper, with every region's key at hand.
fn run(
    req: &RotateRequest<'_>,
    w: &RotateWorld<'_>,
    keys: &BTreeMap<String, RegionKey>,
    ctx: Ctx<'_>,
) -> anyhow::Result<RotateReport> {
    let Ctx {
        lock,
        journal,
        now,
        policy,
        signers,
    } = ctx;
    let key_ids: Vec<String> = policy.key_ids().into_iter().collect();

    // Plan: which regions change.
    let mut plans = Vec::with_capacity(req.regions.len());
    for region in &req.regions {
        let k = keys
            .get(&region.name)
            .with_context(|| format!("no key for region {}", region.name))?;
        let plaintext = dockerconfig::render(&region.hosts, &region.username, &k.key, region.email.as_deref());
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
            authorship::verify_on_disk(w.store, signers, &old.on_disk(), now.into())?;
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
        let iam_key_id = k.iam_key_id.clone().or_else(|| {
            journal
                .as_ref()
                .and_then(|j| j.regions.get(&region.name))
                .and_then(|e| e.iam_key_id.clone())
        });
        plans.push(Planned {
            region,
            key: &k.key,
            key_name: k.key_name.clone(),
            iam_key_id: iam_key_id.clone(),
            plaintext,
            report: RegionReport {
                region: region.name.clone(),
                secret: name,
                action: if unchanged { Action::Unchanged } else { Action::Rotate },
                stage: journal.as_ref().map(|j| j.stage(&region.name)).filter(|_| !unchanged),
                old_key_fingerprint,
                key_name: k.key_name.clone(),
                new_key_fingerprint: k.key.fingerprint().to_string(),
                iam_key_id,
                iam: None,
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
    let shared = {
        let fps: BTreeSet<(&str, String)> = plans
            .iter()
            .map(|p| (p.key_name.as_str(), p.report.new_key_fingerprint.clone()))
            .collect();
        match fps.len() {
            1 => fps.into_iter().next().map(|(n, f)| (n.to_owned(), f)),
            _ => None,
        }
    };
    let report = |plans: Vec<Planned<'_>>, commit: Option<String>, committed_files| RotateReport {
        dry_run: req.dry_run,
        key_name: shared.as_ref().map(|(n, _)| n.clone()),
        key_fingerprint: shared.as_ref().map(|(_, f)| f.clone()),
        branch: req.branch.clone().filter(|_| commit.is_some()),
        branch_move: branch_move.filter(|_| commit.is_some()),
        commit,
        committed_files,
        regions: plans.into_iter().map(|p| p.report).collect(),
        created_keys: Vec::new(),
        dropped_keys: Vec::new(),
    };
    let Some(lock) = lock else {
        return Ok(report(plans, None, Vec::new()));
    };

    // Regions an interrupted run already published: they are committed with this run's.
    let resumed: BTreeSet<String> = journal
        .as_ref()
        .map(|j| {
            j.regions
                .iter()
                .filter(|(_, e)| e.stage == Stage::Published)
                .map(|(r, _)| r.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut journal = journal.unwrap_or_else(|| Journal::new(now));
    let mut planned_any = false;
    for p in plans.iter().filter(|p| p.report.action == Action::Rotate) {
        if !journal.regions.contains_key(&p.region.name) {
            let digest = Digest::compute(&w.random.salt()?, p.key.expose_secret().as_bytes());
            journal.plan(
                &p.region.name,
                &p.key_name,
                p.report.new_key_fingerprint.clone(),
                digest,
                p.iam_key_id.clone(),
            );
        }
        planned_any = true;
    }
    if planned_any {
        lock.write_journal(&journal)?;
    }

    let pending = |p: &Planned<'_>, journal: &Journal| {
        p.report.action == Action::Rotate && journal.stage(&p.region.name) <= Stage::Blocked
    };
    // Prove each new key to IAM first: a key IAM refuses blocks its region
    // (reported by class) and no registry is asked with it.
    if req.iam_check || req.creates() {
        let iam = w.iam.context("--iam-check needs IAM")?;
        let mut checked: BTreeMap<String, KeyStatus> = BTreeMap::new();
        for p in plans.iter_mut() {
            if !pending(p, &journal) {
                continue;
            }
            let fp = p.report.new_key_fingerprint.clone();
            if !checked.contains_key(&fp) {
                w.events
                    .event(Event::Status(format!("asking IAM about key {} ({fp})", p.key_name)));
                checked.insert(fp.clone(), iam.check(p.key));
            }
            let Some(status) = checked.get(&fp) else { continue };
            match status.class {
                KeyClass::Valid => {
                    if p.iam_key_id.is_none()
                        && let Some(d) = &status.details
                        && layout::is_iam_key_id(&d.id)
                    {
                        p.iam_key_id = Some(d.id.clone());
                        p.report.iam_key_id = Some(d.id.clone());
                        if let Some(e) = journal.regions.get_mut(&p.region.name) {
                            e.iam_key_id = Some(d.id.clone());
                        }
                    }
                }
                KeyClass::IamUnreachable => {
                    bail!(
                        "IAM could not be asked about key {} ({fp}): {}",
                        p.key_name,
                        status.detail
                    )
                }
                class => {
                    p.report.action = Action::Blocked;
                    p.report.iam = Some(IamRefusal {
                        class,
                        detail: status.detail.clone(),
                    });
                    journal.set(&p.region.name, Stage::Blocked);
                    p.report.stage = Some(Stage::Blocked);
                }
            }
        }
        lock.write_journal(&journal)?;
    }

    // Verify the regions not verified by an earlier, interrupted run.
    let mut targets = Vec::new();
    for p in plans.iter().filter(|p| pending(p, &journal)) {
        targets.extend(host_targets(p.region, p.key, req.image.as_ref()));
    }
    let results = if targets.is_empty() {
        Vec::new()
    } else {
        let n: BTreeSet<&str> = targets.iter().map(|t| t.region.as_str()).collect();
        w.events.event(Event::Status(format!(
            "verifying {} with their new keys",
            crate::words::plural(n.len(), "region", "regions")
        )));
        w.verifier.verify(targets)?
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

    // Keys still current somewhere stay recorded when a region drops them.
    let mut in_use: BTreeSet<String> = BTreeSet::new();
    for name in w.store.secret_names()? {
        if let Some(m) = w.store.read_meta(&name)? {
            in_use.extend(m.active.iam_key_id);
        }
    }
    in_use.extend(plans.iter().filter_map(|p| p.iam_key_id.clone()));
    let mut dropped = Vec::new();

    // Seal each verified region as pending, then make it current.
    for p in plans.iter_mut() {
        if p.report.action != Action::Rotate {
            continue;
        }
        for target in [State::Pending, State::Current] {
            let old = w.store.read_secret(&p.report.secret)?;
            // Making the new key current replaces `previous`: a key there
            // that rekey never retired in IAM leaves the metadata, and with
            // it the only record `keys retire` could act on. Say so.
            if target == State::Current
                && let Some(prev) = old.as_ref().and_then(|o| o.meta.previous.as_ref())
                && let Some(id) = &prev.iam_key_id
                && prev.retired_at.is_none()
                && !in_use.contains(id)
                && old
                    .as_ref()
                    .is_some_and(|o| !o.meta.active.plaintext_digest.matches(p.plaintext.as_bytes()))
            {
                w.events.event(Event::Warning(format!(
                    "{}: the previous key {} ({}, {id}) was never retired in IAM and is no longer recorded after this rotation: `rekey keys retire` cannot reach it any more; delete or disable it in IAM by hand",
                    p.region.name,
                    prev.key_name.as_deref().unwrap_or("(unnamed)"),
                    prev.key_fingerprint
                )));
                dropped.push(DroppedKey {
                    region: p.region.name.clone(),
                    key_name: prev.key_name.clone(),
                    key_fingerprint: prev.key_fingerprint.clone(),
                    iam_key_id: id.clone(),
                });
            }
            let seal = SealRequest {
                name: &p.report.secret,
                region: &p.region.name,
                plaintext: p.plaintext.as_bytes(),
                key_name: Some(&p.key_name),
                key_fingerprint: p.key.fingerprint(),
                iam_key_id: p.iam_key_id.as_deref(),
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
                layout::plan_seal(existing, &seal, policy).with_context(|| format!("sealing {}", p.report.secret))?;
            if let (Plan::Write(rewrite), Some(key)) = (&mut plan, req.signer) {
                if let Some(old) = &old {
                    authorship::verify_on_disk(w.store, signers, &old.on_disk(), now.into())?;
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
    let published: Vec<journal::Rotated> = plans
        .iter()
        .filter(|p| is_published(p))
        .map(|p| journal::Rotated {
            region: p.region.name.clone(),
            key_name: p.key_name.clone(),
            key_fingerprint: p.report.new_key_fingerprint.clone(),
            old_key_fingerprint: p.report.old_key_fingerprint.clone(),
        })
        .collect();
    let mut files = Vec::new();
    let commit = if req.commit && !published.is_empty() {
        for p in plans.iter().filter(|p| is_published(p)) {
            files.extend(lock.secret_files(&p.report.secret)?);
        }
        let message = journal::commit_message(&published);
        w.git.commit(req.branch.as_deref(), &files, &message)?
    } else {
        None
    };
    lock.remove_journal()?;
    let mut report = report(plans, commit, files);
    report.dropped_keys = dropped;
    Ok(report)
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
    /// Keys a `--create-keys` run created in IAM and did not delete (ids only).
    pub created_keys: Vec<journal::CreatedKey>,
    /// Creations a `--create-keys` run asked of IAM without recording an
    /// answer: IAM may hold such a key, found by its name and marker.
    pub unanswered: Vec<journal::CreationIntent>,
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
            created_keys: Vec::new(),
            unanswered: Vec::new(),
        });
    };
    let mut restored = Vec::new();
    let mut removed = Vec::new();
    for (region, entry) in &journal.regions {
        if entry.stage < Stage::Sealed {
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
        key_name: Some(journal.key_names()),
        key_fingerprint: Some(journal.key_fingerprints()),
        restored,
        removed,
        created_keys: journal.undeleted_created().into_iter().cloned().collect(),
        unanswered: journal.intents.clone(),
    })
}
