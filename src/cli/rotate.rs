//! `rekey rotate`: the CI rotation job, end to end. The workflow is
//! `ops::rotate`; this file parses flags, runs the health gate after
//! publishing, and renders the report.

use crate::cli::health::{GateArgs, GateOptions};
use crate::cli::keyarg::KeyArgs;
use crate::cli::netargs::{NetArgs, NetVerifier};
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::ValidityArgs;
use crate::exit::Exit;
use crate::health;
use crate::ops::rotate::{Action, RotateReport, RotateRequest, RotateWorld, rotate};
use crate::ops::world::{GitCli, OsRandom, SystemClock};
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use crate::pullsecret::keyname;
use crate::secrets_repo::git::BranchMove;
use crate::secrets_repo::store::Store;
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Rotate every region's pull secret to a new key, end to end.
///
/// Generates, proves the key pulls from every host, seals into the secrets
/// repo, and optionally commits.
///
/// For each region the new secret is generated in memory, the probe image
/// is pulled from every host with the new key (a failing host blocks that
/// region unless --allow-failing-host names it), and the secret is sealed as
/// `pending` (<NAME>.pending.gpg, never served), then promoted to `current`
/// (moved to <NAME>.gpg); the version it replaces is kept as
/// `previous` for `rekey rollback`. A journal in the repo's git directory
/// (.git/rekey) makes a killed rotation resumable: rerun the same command, or
/// discard it with --abort. Rerunning a finished rotation
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
    #[arg(long, value_name = "DIR", required_unless_present = "abort")]
    pub regions: Option<PathBuf>,
    /// The secrets repo (holding .rekey/recipients.asc).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Read the API key from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["api_key_env", "abort"], conflicts_with = "api_key_env")]
    pub api_key_file: Option<PathBuf>,
    /// Read the API key from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,
    /// The new key's name, ending in its creation date: <service-id>-<env>-<region>-YYYYMMDD.
    #[arg(long, value_name = "NAME", required_unless_present = "abort")]
    pub key_name: Option<String>,
    /// Rotate only this region (repeatable; default: every region).
    #[arg(long = "region", value_name = "NAME")]
    pub regions_selected: Vec<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Commit the changed secrets to the repo's git history.
    #[arg(long)]
    pub commit: bool,
    /// The branch to commit on: created at HEAD when missing; an existing
    /// one only when checked out or when HEAD fast-forwards it (never
    /// dropping its commits; refused otherwise); default: the current branch.
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
    #[command(flatten)]
    pub gate: GateOptions,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    pub signing: Box<crate::cli::pgpargs::SigningKeyArgs>,
    /// Discard an unfinished rotation (the journal in the repo's git
    /// directory): the secrets it sealed or published but did not commit go
    /// back to their committed versions; nothing else is touched.
    #[arg(long, conflicts_with_all = ["regions", "key_name", "api_key_file", "api_key_env", "dry_run", "commit", "regions_selected"])]
    pub abort: bool,
}

impl Args {
    /// Returns the health gate's options, when the gate is asked for.
    fn gate(&self) -> Option<GateArgs> {
        self.health_gate.then(|| self.gate.gate_args())
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    ok: bool,
    #[serde(flatten)]
    report: &'a RotateReport,
    health: Option<&'a health::Report>,
}

/// Runs `rekey rotate`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("rotate", &[OutputFormat::Text, OutputFormat::Json])?;
    if args.abort {
        return run_abort(printer, &args);
    }
    let (Some(regions_dir), Some(key_name)) = (&args.regions, &args.key_name) else {
        bail!("--regions and --key-name are required");
    };
    keyname::validate(key_name).context("--key-name")?;
    keyname::created_on(key_name).context("--key-name")?;
    let catalog = Catalog::load(regions_dir)?;
    let regions = catalog.select(regions_dir, &args.regions_selected)?;
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
    let gate = args.gate();
    if let Some(gate) = &gate {
        gate.prepare(chrono::Utc::now()).context("--health-gate")?;
    }
    let key = KeyArgs {
        api_key_file: args.api_key_file.clone(),
        api_key_env: args.api_key_env.clone(),
    }
    .read()?;
    let signer = args.signing.load(std::time::SystemTime::now())?;
    let request = RotateRequest {
        regions,
        key: &key,
        key_name: key_name.clone(),
        allowed_failing_hosts: allowed,
        image,
        dry_run: args.dry_run,
        commit: args.commit,
        branch: args.branch.clone(),
        validity: args.validity.validity(),
        signer: signer.as_ref(),
    };
    let store = Store::new(&args.repo);
    let world = RotateWorld {
        store: &store,
        git: &GitCli {
            repo: args.repo.clone(),
        },
        verifier: &NetVerifier {
            net: &args.net,
            printer,
        },
        clock: &SystemClock,
        random: &OsRandom,
        events: printer,
    };
    let report = rotate(&request, &world)?;
    let health = match gate.filter(|_| !args.dry_run) {
        None => None,
        Some(gate) => match gate.evaluate(chrono::Utc::now()) {
            Ok(h) => Some(h),
            Err(e) => {
                render(printer, &report, None)?;
                return Err(e.context("the rotation is published, but the health gate could not be evaluated"));
            }
        },
    };
    render(printer, &report, health.as_ref())?;
    Ok(Exit::problem_if(report.blocked()).worst(health.map_or(Exit::Ok, |h| h.exit())))
}

fn run_abort(printer: &Printer, args: &Args) -> anyhow::Result<Exit> {
    let report = crate::ops::rotate::abort(&Store::new(&args.repo), printer)?;
    if printer.format() == OutputFormat::Json {
        printer.json(&report)?;
        return Ok(Exit::Ok);
    }
    match (&report.key_name, &report.key_fingerprint) {
        (Some(name), Some(fp)) => printer.line(format_args!("aborted the rotation to {name} ({fp})")),
        _ => printer.line("no unfinished rotation: nothing to abort"),
    }
    for f in &report.restored {
        printer.line(format_args!("  restored {f} (committed version)"));
    }
    for f in &report.removed {
        printer.line(format_args!("  removed  {f} (not committed)"));
    }
    Ok(Exit::Ok)
}

fn render(printer: &Printer, report: &RotateReport, health: Option<&health::Report>) -> anyhow::Result<()> {
    let ok = !report.blocked() && health.is_none_or(|h| h.verdict == health::Status::Healthy);
    if printer.format() == OutputFormat::Json {
        return printer.json(&Summary { ok, report, health });
    }
    let verb = if report.dry_run { "would rotate" } else { "rotated" };
    for r in &report.regions {
        let old = r.old_key_fingerprint.as_deref().unwrap_or("none");
        match r.action {
            Action::Unchanged => printer.line(format_args!(
                "{:<6} unchanged     already {}",
                r.region, r.new_key_fingerprint
            )),
            Action::Rotate if report.dry_run => {
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
    match (&report.commit, &report.branch, report.branch_move) {
        (Some(c), Some(b), Some(BranchMove::Created)) => {
            printer.status(format_args!("committed {c} on new branch {b}"))
        }
        (Some(c), Some(b), Some(BranchMove::FastForward)) => {
            printer.status(format_args!("fast-forwarded branch {b} and committed {c} on it"))
        }
        (Some(c), Some(b), _) => printer.status(format_args!("committed {c} on branch {b}")),
        (Some(c), None, _) => printer.status(format_args!("committed {c}")),
        (None, ..) => {}
    }
    Ok(())
}
