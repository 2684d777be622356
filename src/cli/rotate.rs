//! `rekey rotate` and `rekey rollback`: the CI rotation job, end to end.

use crate::cli::health::GateArgs;
use crate::cli::keyarg::KeyArgs;
use crate::cli::netargs::{NetArgs, region_targets};
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::ValidityArgs;
use crate::cli::repo_io;
use crate::exit::Exit;
use crate::fsx::{self, WriteSet};
use crate::health;
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::dockerconfig;
use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use crate::pullsecret::keyname;
use crate::registry::{Class, HostResult};
use crate::secrets_repo::git;
use crate::secrets_repo::journal::{self, Journal, Stage};
use crate::secrets_repo::layout::{self, Digest, Existing, Metadata, Plan, SealRequest, State};
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Rotate every region's pull secret to a new key, end to end.
///
/// Generates, proves the key pulls from every host, seals into the secrets
/// repo, and optionally commits.
///
/// For each region the new secret is generated in memory, the probe image
/// is pulled from every host with the new key (a failing host blocks that
/// region unless --allow-failing-host names it), and the secret is sealed as
/// `pending`, then made `current`; the version it replaces is kept as
/// `previous` for `rekey rollback`. A journal in REPO/.rekey makes a killed
/// rotation resumable: rerun the same command. Rerunning a finished rotation
/// changes nothing. Exits 1 when a region was blocked.
///
/// Example:
///   rekey rotate --regions regions --repo secrets --api-key-env NEW_KEY \
///       --key-name iks-registry-prod-jp-20261123 --commit --branch rotate-20261123
///   rekey rotate --regions regions --repo secrets --api-key-file key.txt \
///       --key-name iks-registry-prod-jp-20261123 --region jp --dry-run
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The region catalog directory (one TOML file per region).
    #[arg(long, value_name = "DIR")]
    pub regions: PathBuf,
    /// The secrets repo (holding .rekey/recipients.asc).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The new key's name, ending in its creation date: <service-id>-<env>-<region>-YYYYMMDD.
    #[arg(long, value_name = "NAME")]
    pub key_name: String,
    /// Rotate only this region (repeatable; default: every region).
    #[arg(long = "region", value_name = "NAME")]
    pub regions_selected: Vec<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Commit the changed secrets to the repo's git history.
    #[arg(long)]
    pub commit: bool,
    /// The branch to commit on (created from HEAD, or moved to it); default: the current branch.
    #[arg(long, value_name = "BRANCH", requires = "commit")]
    pub branch: Option<String>,
    /// Publish even if this host cannot pull (repeatable); it is still reported.
    #[arg(long, value_name = "HOST")]
    pub allow_failing_host: Vec<String>,
    /// The image to pull (default: each region's probe_image).
    #[arg(long, value_name = "REPO:TAG")]
    pub image: Option<String>,
    /// After publishing, gate on the auth health signals (see `rekey health`); needs --prometheus.
    #[arg(long, requires = "prometheus")]
    pub health_gate: bool,
    /// The Prometheus the health gate queries.
    #[arg(long, value_name = "URL", requires = "health_gate")]
    pub prometheus: Option<String>,
    /// The health gate's rules file (default: the built-in rules).
    #[arg(long, value_name = "FILE", requires = "health_gate")]
    pub health_rules: Option<PathBuf>,
    /// How far back the health gate looks.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub health_window: String,
    /// Evaluate the health gate at this time (RFC 3339) instead of now, e.g. to replay an incident.
    #[arg(long, value_name = "TIME", requires = "health_gate")]
    pub health_at: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub validity: ValidityArgs,
}

impl Args {
    /// Returns the health gate's options, when the gate is asked for.
    fn gate(&self) -> Option<GateArgs> {
        self.health_gate.then(|| GateArgs {
            prometheus: self.prometheus.clone(),
            rules: self.health_rules.clone(),
            window: self.health_window.clone(),
            at: self.health_at.clone(),
            timeout: "30s".to_owned(),
            token_file: None,
            token_env: None,
        })
    }
}

/// What the rotation does, or did, to one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    /// The region already carries the new key.
    Unchanged,
    /// The region gets the new key.
    Rotate,
    /// A host could not pull: the region keeps its old key.
    Blocked,
}

#[derive(Serialize)]
struct RegionReport {
    region: String,
    secret: String,
    action: Action,
    stage: Option<Stage>,
    old_key_fingerprint: Option<String>,
    new_key_fingerprint: String,
    hosts_ok: usize,
    hosts: usize,
    failing_hosts: Vec<HostResult>,
}

#[derive(Serialize)]
struct Summary<'a> {
    ok: bool,
    dry_run: bool,
    key_name: &'a str,
    key_fingerprint: String,
    commit: Option<String>,
    regions: &'a [RegionReport],
    health: Option<&'a health::Report>,
}

fn journal_path(repo_dir: &Path) -> PathBuf {
    repo_dir.join(journal::JOURNAL_FILE)
}

fn write_journal(repo_dir: &Path, journal: &Journal) -> anyhow::Result<()> {
    fsx::write_atomic(&journal_path(repo_dir), &journal.render(), fsx::PUBLIC_MODE)?;
    Ok(())
}

/// Reads a secret's metadata and active file.
fn existing(dir: &Path, name: &str) -> anyhow::Result<Option<(Metadata, Vec<u8>)>> {
    match repo_io::read_meta(dir, name)? {
        Some(meta) => {
            let active = repo_io::read(dir, &meta.active.file)?;
            Ok(Some((meta, active)))
        }
        None => Ok(None),
    }
}

/// Runs `rekey rotate`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("rotate", &[OutputFormat::Text, OutputFormat::Json])?;
    keyname::validate(&args.key_name).context("--key-name")?;
    keyname::created_on(&args.key_name).context("--key-name")?;
    let catalog = Catalog::load(&args.regions)?;
    let regions = catalog.select(&args.regions, &args.regions_selected)?;
    let mut allowed = BTreeSet::new();
    for raw in &args.allow_failing_host {
        let host = Host::parse(raw).map_err(|e| anyhow::anyhow!("--allow-failing-host `{raw}` {e}"))?;
        if !regions.iter().any(|r| r.hosts.contains(&host)) {
            bail!("--allow-failing-host `{raw}` is not a host of the regions being rotated");
        }
        allowed.insert(host.to_string());
    }
    let image = match &args.image {
        Some(raw) => Some(ImageRef::parse(raw).map_err(|e| anyhow::anyhow!("--image `{raw}` {e}"))?),
        None => None,
    };
    args.net.client()?;
    if let Some(gate) = args.gate() {
        gate.prepare(chrono::Utc::now()).context("--health-gate")?;
    }
    let key = args.key.read()?;
    let fingerprint = key.fingerprint().to_string();
    let now_sys = SystemTime::now();
    let now = chrono::DateTime::<chrono::Utc>::from(now_sys);
    let policy = repo_io::load_policy(printer, &args.repo, &args.validity, now_sys)?;
    let dir = repo_io::registry_dir(&args.repo);
    let _lock = if args.dry_run {
        None
    } else {
        Some(repo_io::lock_and_recover(printer, &args.repo)?)
    };
    let jpath = journal_path(&args.repo);
    let mut journal = match std::fs::read(&jpath) {
        Ok(bytes) => Some(Journal::parse(&bytes, &jpath.display().to_string())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", jpath.display())),
    };
    if let Some(j) = &journal
        && !j.is_for(&args.key_name, key.expose_secret().as_bytes())
    {
        bail!(
            "{}: a rotation to {} ({}) started at {} is unfinished: rerun it with that key to finish it, or delete the journal to abandon it",
            jpath.display(),
            j.key_name,
            j.key_fingerprint,
            j.started_at.to_rfc3339()
        );
    }

    // Plan: which regions change.
    let mut plans = Vec::with_capacity(regions.len());
    for region in &regions {
        let plaintext = dockerconfig::render(&region.hosts, &region.username, &key, region.email.as_deref());
        let name = layout::secret_name(&region.name);
        let old = existing(&dir, &name)?;
        let unchanged = old.as_ref().is_some_and(|(m, _)| {
            m.active.state == State::Current
                && m.active.plaintext_digest.matches(plaintext.as_bytes())
                && m.active.recipient_key_ids == policy.key_ids().into_iter().collect::<Vec<_>>()
        });
        let report = RegionReport {
            region: region.name.clone(),
            secret: name,
            action: if unchanged { Action::Unchanged } else { Action::Rotate },
            stage: journal.as_ref().map(|j| j.stage(&region.name)).filter(|_| !unchanged),
            old_key_fingerprint: old.as_ref().map(|(m, _)| {
                if unchanged {
                    m.previous
                        .as_ref()
                        .map_or_else(String::new, |p| p.key_fingerprint.clone())
                } else {
                    m.active.key_fingerprint.clone()
                }
            }),
            new_key_fingerprint: fingerprint.clone(),
            hosts_ok: 0,
            hosts: region.hosts.len(),
            failing_hosts: Vec::new(),
        };
        plans.push((region, plaintext, report));
    }
    if args.dry_run {
        let reports: Vec<RegionReport> = plans.into_iter().map(|(_, _, r)| r).collect();
        print_summary(printer, &args, &fingerprint, None, &reports, None)?;
        return Ok(Exit::Ok);
    }

    let rotating: Vec<String> = plans
        .iter()
        .filter(|(_, _, r)| r.action == Action::Rotate)
        .map(|(r, _, _)| r.name.clone())
        .collect();
    let mut journal = match journal.take() {
        Some(j) => j,
        None => {
            let salt = repo_io::random_salt()?;
            let digest = Digest::compute(&salt, key.expose_secret().as_bytes());
            Journal::new(&args.key_name, fingerprint.clone(), digest, now, &rotating)
        }
    };
    if !rotating.is_empty() {
        write_journal(&args.repo, &journal)?;
    }

    // Verify the regions not verified by an earlier, interrupted run.
    let to_verify: Vec<&crate::pullsecret::catalog::Region> = plans
        .iter()
        .filter(|(r, _, rep)| rep.action == Action::Rotate && journal.stage(&r.name) <= Stage::Blocked)
        .map(|(r, _, _)| **r)
        .collect();
    let results = if to_verify.is_empty() {
        Vec::new()
    } else {
        printer.status(format_args!(
            "verifying {} regions with key {fingerprint}",
            to_verify.len()
        ));
        args.net
            .check(printer, region_targets(to_verify.iter().copied(), &key, image.as_ref()))?
    };
    for (region, _, report) in plans.iter_mut() {
        let mine: Vec<&HostResult> = results.iter().filter(|h| h.region == region.name).collect();
        if mine.is_empty() {
            if report.action == Action::Rotate {
                report.hosts_ok = report.hosts;
            }
            continue;
        }
        report.hosts_ok = mine.iter().filter(|h| h.class == Class::Ok).count();
        report.failing_hosts = mine
            .iter()
            .filter(|h| h.class != Class::Ok)
            .map(|h| (*h).clone())
            .collect();
        let blocking = report.failing_hosts.iter().any(|h| !allowed.contains(&h.host));
        let stage = if blocking { Stage::Blocked } else { Stage::Verified };
        if blocking {
            report.action = Action::Blocked;
        }
        journal.set(&region.name, stage);
        report.stage = Some(stage);
    }
    if !results.is_empty() {
        write_journal(&args.repo, &journal)?;
    }

    // Seal each verified region as pending, then make it current.
    for (region, plaintext, report) in plans.iter_mut() {
        if report.action != Action::Rotate {
            continue;
        }
        for target in [State::Pending, State::Current] {
            let old = existing(&dir, &report.secret)?;
            let req = SealRequest {
                name: &report.secret,
                region: &region.name,
                plaintext: plaintext.as_bytes(),
                key_name: Some(&args.key_name),
                key_fingerprint: key.fingerprint(),
                state: target,
                now,
                salt: repo_io::random_salt()?,
            };
            let existing = old.as_ref().map(|(meta, active)| Existing { meta, active });
            let plan =
                layout::plan_seal(existing, &req, &policy).with_context(|| format!("sealing {}", report.secret))?;
            if let Plan::Write(w) = plan {
                fsx::ensure_dir(&dir).with_context(|| format!("{} is not writable", dir.display()))?;
                let mut set = WriteSet::new();
                repo_io::stage_rewrite(&mut set, &dir, *w)?;
                set.commit_logged(&repo_io::write_log(&args.repo))?;
            }
            let stage = if target == State::Pending {
                Stage::Sealed
            } else {
                Stage::Published
            };
            journal.set(&region.name, stage);
            report.stage = Some(stage);
            write_journal(&args.repo, &journal)?;
        }
    }

    let published: Vec<(String, Option<String>)> = plans
        .iter()
        .filter(|(_, _, r)| r.action == Action::Rotate)
        .map(|(r, _, rep)| (r.name.clone(), rep.old_key_fingerprint.clone()))
        .collect();
    let commit = if args.commit && !published.is_empty() {
        let message = journal::commit_message(&args.key_name, &fingerprint, &published);
        git::commit(
            &args.repo,
            args.branch.as_deref(),
            &[layout::REGISTRY_DIR.to_owned()],
            &message,
        )?
    } else {
        None
    };
    match std::fs::remove_file(&jpath) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", jpath.display())),
    }
    let reports: Vec<RegionReport> = plans.into_iter().map(|(_, _, r)| r).collect();
    let blocked = Exit::problem_if(reports.iter().any(|r| r.action == Action::Blocked));
    let health = match args.gate() {
        None => None,
        Some(gate) => match gate.evaluate(chrono::Utc::now()) {
            Ok(report) => Some(report),
            Err(e) => {
                print_summary(printer, &args, &fingerprint, commit, &reports, None)?;
                return Err(e.context("the rotation is published, but the health gate could not be evaluated"));
            }
        },
    };
    print_summary(printer, &args, &fingerprint, commit, &reports, health.as_ref())?;
    Ok(blocked.worst(health.map_or(Exit::Ok, |h| h.exit())))
}

fn print_summary(
    printer: &Printer,
    args: &Args,
    fingerprint: &str,
    commit: Option<String>,
    reports: &[RegionReport],
    health: Option<&health::Report>,
) -> anyhow::Result<()> {
    let ok = reports.iter().all(|r| r.action != Action::Blocked)
        && health.is_none_or(|h| h.verdict == health::Status::Healthy);
    if printer.format() == OutputFormat::Json {
        return printer.json(&Summary {
            ok,
            dry_run: args.dry_run,
            key_name: &args.key_name,
            key_fingerprint: fingerprint.to_owned(),
            commit,
            regions: reports,
            health,
        });
    }
    let verb = if args.dry_run { "would rotate" } else { "rotated" };
    for r in reports {
        let old = r.old_key_fingerprint.as_deref().unwrap_or("none");
        match r.action {
            Action::Unchanged => printer.line(format_args!(
                "{:<6} unchanged     already {}",
                r.region, r.new_key_fingerprint
            )),
            Action::Rotate if args.dry_run => {
                let resume = r.stage.map(|s| format!(" (resuming after {s})")).unwrap_or_default();
                printer.line(format_args!(
                    "{:<6} {verb}  {old} -> {}, {} hosts{resume}",
                    r.region, r.new_key_fingerprint, r.hosts
                ))
            }
            Action::Rotate => printer.line(format_args!(
                "{:<6} {verb}       {old} -> {} ({}/{} hosts pull)",
                r.region, r.new_key_fingerprint, r.hosts_ok, r.hosts
            )),
            Action::Blocked => printer.line(format_args!(
                "{:<6} BLOCKED       keeps {old}: {}/{} hosts pull",
                r.region, r.hosts_ok, r.hosts
            )),
        }
        for h in &r.failing_hosts {
            let allowed = if r.action == Action::Blocked { "" } else { " (allowed)" };
            printer.line(format_args!("         {} {}: {}{allowed}", h.class, h.host, h.detail));
        }
    }
    if let Some(h) = health {
        printer.line(format_args!("health {}", h.verdict));
        for incident in h.incidents() {
            printer.line(format_args!("         open an incident: {incident}"));
        }
        for e in h.escalations() {
            printer.line(format_args!("         escalate: {e}"));
        }
    }
    if let Some(c) = &commit {
        printer.status(format_args!("committed {c}"));
    }
    Ok(())
}

/// Make a region's previous pull secret current again, undoing a rotation.
///
/// Swaps the active and previous versions of the region's secret (files and
/// metadata) in one atomic step; running it twice swaps them back.
///
/// Example:
///   rekey rollback --repo secrets --region jp
///   rekey rollback --repo secrets --region jp --commit
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RollbackArgs {
    /// The secrets repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The region to roll back.
    #[arg(long, value_name = "NAME")]
    pub region: String,
    /// Commit the change to the repo's git history.
    #[arg(long)]
    pub commit: bool,
}

/// Runs `rekey rollback`.
pub fn rollback(printer: &Printer, args: RollbackArgs) -> anyhow::Result<Exit> {
    printer.require("rollback", &[OutputFormat::Text, OutputFormat::Json])?;
    let dir = repo_io::registry_dir(&args.repo);
    let _lock = repo_io::lock_and_recover(printer, &args.repo)?;
    let name = layout::secret_name(&args.region);
    let meta = repo_io::read_meta(&dir, &name)?.with_context(|| {
        format!(
            "{}: no secret for region `{}`",
            dir.join(layout::meta_file(&name)).display(),
            args.region
        )
    })?;
    let prev = meta
        .previous
        .as_ref()
        .context(layout::RepoError::NoPrevious(name.clone()))?;
    let active = repo_io::read(&dir, &meta.active.file)?;
    let previous = repo_io::read(&dir, &prev.file)?;
    let (new_meta, new_active, new_previous) = layout::rollback(&meta, &active, &previous)?;
    let mut set = WriteSet::new();
    let rewrite = layout::Rewrite {
        meta: new_meta.clone(),
        active: Some(new_active),
        previous: Some(new_previous),
    };
    repo_io::stage_rewrite(&mut set, &dir, rewrite)?;
    set.commit_logged(&repo_io::write_log(&args.repo))?;
    let commit = if args.commit {
        let message = format!(
            "Roll back the {} registry pull secret to {}\n\n{} ({}) is current again; {} ({}) is kept as previous.\n",
            args.region,
            new_meta.active.key_fingerprint,
            new_meta.active.key_name.as_deref().unwrap_or("unnamed key"),
            new_meta.active.key_fingerprint,
            meta.active.key_name.as_deref().unwrap_or("unnamed key"),
            meta.active.key_fingerprint,
        );
        git::commit(&args.repo, None, &[layout::REGISTRY_DIR.to_owned()], &message)?
    } else {
        None
    };
    if printer.format() == OutputFormat::Json {
        printer.json(&serde_json::json!({
            "region": args.region,
            "secret": name,
            "current_key_fingerprint": new_meta.active.key_fingerprint,
            "previous_key_fingerprint": meta.active.key_fingerprint,
            "commit": commit,
        }))?;
    } else {
        printer.line(format_args!(
            "{:<6} rolled back   {} -> {} (current)",
            args.region, meta.active.key_fingerprint, new_meta.active.key_fingerprint
        ));
    }
    Ok(Exit::Ok)
}
