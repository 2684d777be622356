//! `rekey keys retire`: retires the previous key of each region in IAM once
//! its replacement has been published for the grace period.

use crate::cli::health::GateOptions;
use crate::cli::iamargs::IamAccess;
use crate::cli::output::{OutputFormat, Printer};
use crate::exit::Exit;
use crate::health::Status;
use crate::iam::{Iam, IamError, Retire};
use crate::ops::retire::{
    self, GateVerdict, HealthGate, IamFailure, IamRetired, KeyRetirer, Outcome, RetireReport, RetireRequest,
    RetireWorld,
};
use crate::ops::world::{FixedClock, GitCli};
use crate::pullsecret::catalog::Catalog;
use crate::secret::ApiKey;
use crate::secrets_repo::layout::RetiredHow;
use crate::secrets_repo::store::Store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

/// Retire each region's previous API key in IBM Cloud IAM.
///
/// For each region whose current key was published at least --after ago,
/// disables (default) or deletes (--delete) the previous
/// key in IAM by the IAM id recorded in the metadata, and records when and
/// how in the metadata (atomically, under the repo's lock; committed with
/// --commit). The grace period is never less than 1h, IAM's token lifetime:
/// tokens minted from the old key outlive the key by up to an hour.
///
/// A version is published at the latest of: when it was sealed
/// (rotated_at), when a rollback restored it, and when it reached the
/// checked-out branch (the committer time of the oldest commit in HEAD's
/// first-parent history since which the metadata's current key is this
/// one; a rotation merged days after sealing is published at its merge
/// commit; a fast-forward makes no merge commit, so merge rotations with
/// one, as GitHub's merge and rebase buttons do, or the grace period runs
/// from the rotation commit).
/// A current version not committed on the branch is not published.
///
/// A previous key that is still the current key of any region is never
/// retired. With --health-gate, nothing is retired unless the health gate
/// (rekey health, same rules) says healthy.
///
/// Exits 0 when done or nothing is due, 1 when the health gate refused, IAM
/// refused a retirement, or a region needs attention (its previous key is
/// still current elsewhere, or has no recorded IAM id), 2 on bad input or
/// when IAM is unreachable or refuses the admin key.
///
/// Example:
///   rekey keys retire --repo secrets --iam-api-key-env REKEY_IAM_API_KEY --commit
///   rekey keys retire --repo secrets --after 48h --delete --dry-run
///   rekey keys retire --repo secrets --iam-api-key-env REKEY_IAM_API_KEY \
///       --health-gate --prometheus http://prometheus:9090
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The region catalog: retire only in its regions (with --region, only those).
    #[arg(long, value_name = "DIR")]
    pub regions: Option<PathBuf>,
    /// Retire only in this region (repeatable; default: every region in the repo).
    #[arg(long = "region", value_name = "NAME")]
    pub regions_selected: Vec<String>,
    /// The grace period: how long the current key must have been published, i.e.
    /// committed on the checked-out branch and sealed (at least 1h).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::cli::duration::parse)]
    pub after: Duration,
    /// Evaluate at this time (RFC 3339; default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Delete the previous keys (default: disable them, which can be undone in IAM).
    #[arg(long, conflicts_with = "disable")]
    pub delete: bool,
    /// Disable the previous keys (the default).
    #[arg(long)]
    pub disable: bool,
    /// Retire nothing unless the health gate is healthy (needs --prometheus).
    #[arg(long, requires = "prometheus")]
    pub health_gate: bool,
    #[command(flatten)]
    pub gate: GateOptions,
    /// Show what would be retired; call no IAM, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Commit the metadata it changes.
    #[arg(long)]
    pub commit: bool,
    /// The branch to commit on (created from HEAD, or moved to it); default: the current branch.
    #[arg(long, value_name = "BRANCH", requires = "commit")]
    pub branch: Option<String>,
    #[command(flatten)]
    pub iam: IamAccess,
}

/// Parses `--at`, or returns now.
pub fn parse_at(at: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match at {
        None => Ok(Utc::now()),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| anyhow::anyhow!("--at: `{text}` is not an RFC 3339 time ({e}), e.g. 2026-11-23T12:00:00Z")),
    }
}

/// The real IAM, with the admin key exchanged for a token on first use.
pub struct CliRetirer {
    iam: Iam,
    admin: ApiKey,
    runtime: tokio::runtime::Runtime,
    token: RefCell<Option<Result<SecretString, IamFailure>>>,
}

impl CliRetirer {
    /// A retirer calling `iam` with `admin`.
    pub fn new(iam: Iam, admin: ApiKey) -> anyhow::Result<CliRetirer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(CliRetirer {
            iam,
            admin,
            runtime,
            token: RefCell::new(None),
        })
    }

    fn token(&self) -> Result<SecretString, IamFailure> {
        if let Some(t) = self.token.borrow().as_ref() {
            return t.clone();
        }
        let got = self.runtime.block_on(self.iam.token(&self.admin)).map_err(|e| match e {
            IamError::Unreachable { .. } => IamFailure::Unreachable(e.to_string()),
            other => IamFailure::AdminRefused(format!("the IAM admin key: {other}")),
        });
        *self.token.borrow_mut() = Some(got.clone());
        got
    }
}

impl KeyRetirer for CliRetirer {
    fn retire(&self, id: &str, how: RetiredHow) -> Result<IamRetired, IamFailure> {
        let token = self.token()?;
        let how = match how {
            RetiredHow::Deleted => Retire::Delete,
            RetiredHow::Disabled => Retire::Disable,
        };
        match self.runtime.block_on(self.iam.retire(&token, id, how)) {
            Ok(()) => Ok(IamRetired::Done),
            Err(IamError::Refused { status: 404, .. }) => Ok(IamRetired::AlreadyGone),
            Err(e @ IamError::Unreachable { .. }) => Err(IamFailure::Unreachable(e.to_string())),
            Err(e) => Err(IamFailure::Refused(e.to_string())),
        }
    }
}

/// A dry run without an admin key: never asked, refuses if it were.
struct NoAdminKey;

impl KeyRetirer for NoAdminKey {
    fn retire(&self, _: &str, _: RetiredHow) -> Result<IamRetired, IamFailure> {
        Err(IamFailure::AdminRefused("no IAM admin key was given".to_owned()))
    }
}

/// The health gate of `rekey health`, through Prometheus.
pub struct CliGate<'a>(pub &'a GateOptions);

impl HealthGate for CliGate<'_> {
    fn verdict(&self, now: DateTime<Utc>) -> anyhow::Result<GateVerdict> {
        let report = self.0.gate_args().evaluate(now)?;
        let name = |s: Status| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        Ok(GateVerdict {
            healthy: report.verdict == Status::Healthy,
            verdict: name(report.verdict),
            details: report
                .rules
                .iter()
                .filter(|r| r.status != Status::Healthy)
                .map(|r| format!("{}: {} ({})", r.name, name(r.status), r.summary))
                .collect(),
        })
    }
}

/// Runs `rekey keys retire`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("keys retire", &[OutputFormat::Text, OutputFormat::Json])?;
    let now = parse_at(args.at.as_deref())?;
    let grace = chrono::Duration::from_std(args.after).context("--after is too long")?;
    let regions = match &args.regions {
        Some(dir) => {
            let catalog = Catalog::load(dir)?;
            Some(
                catalog
                    .select(dir, &args.regions_selected)?
                    .iter()
                    .map(|r| r.name.clone())
                    .collect(),
            )
        }
        None if args.regions_selected.is_empty() => None,
        None => Some(args.regions_selected.clone()),
    };
    let client = args.iam.client()?;
    let admin = args.iam.admin.read()?;
    let admin = match admin {
        Some(k) => Some(k),
        None if args.dry_run => None,
        None => anyhow::bail!(
            "retiring keys needs the IAM admin key: give --iam-api-key-env NAME or --iam-api-key-file FILE (or --dry-run)"
        ),
    };
    let retirer: Box<dyn KeyRetirer> = match admin {
        Some(admin) => Box::new(CliRetirer::new(client, admin)?),
        None => Box::new(NoAdminKey),
    };
    let gate = CliGate(&args.gate);
    let store = Store::new(&args.repo);
    let git = GitCli {
        repo: args.repo.clone(),
    };
    let req = RetireRequest {
        grace,
        how: if args.delete {
            RetiredHow::Deleted
        } else {
            RetiredHow::Disabled
        },
        regions,
        dry_run: args.dry_run,
        commit: args.commit,
        branch: args.branch.clone(),
    };
    let report = retire::retire(
        &req,
        &RetireWorld {
            store: &store,
            iam: retirer.as_ref(),
            gate: args.health_gate.then_some(&gate as &dyn HealthGate),
            git: &git,
            clock: &FixedClock(now),
            events: printer,
        },
    )?;
    match printer.format() {
        OutputFormat::Json => printer.json(&report)?,
        _ => render_text(printer, &report),
    }
    Ok(report.exit())
}

fn render_text(printer: &Printer, report: &RetireReport) {
    if let Some(g) = &report.gate {
        printer.line(format_args!("health gate: {}", g.verdict));
        for d in &g.details {
            printer.line(format_args!("  {d}"));
        }
    }
    for r in &report.regions {
        let what = match &r.outcome {
            Outcome::Retired {
                iam_key_id,
                key_fingerprint,
                how,
                already_gone,
            } => format!(
                "retired    {key_fingerprint} {iam_key_id} ({}{})",
                how.name(),
                if *already_gone { "; IAM no longer knew it" } else { "" }
            ),
            Outcome::WouldRetire {
                iam_key_id,
                key_fingerprint,
                how,
            } => format!("would retire {key_fingerprint} {iam_key_id} ({})", how.name()),
            Outcome::GateClosed {
                iam_key_id,
                key_fingerprint,
            } => format!("refused    {key_fingerprint} {iam_key_id}: the health gate is not healthy"),
            Outcome::Failed {
                iam_key_id,
                key_fingerprint,
                error,
                ..
            } => format!("failed     {key_fingerprint} {iam_key_id}: {error}"),
            Outcome::Held { hold, .. } => format!("held       {}", describe(hold)),
        };
        printer.line(format_args!("{:<6} {what}", r.region));
    }
    let n = report.retired();
    if report.dry_run {
        printer.line("dry run: nothing retired, nothing written");
    } else {
        printer.line(format_args!("{n} {} retired", if n == 1 { "key" } else { "keys" }));
    }
    if let Some(c) = &report.commit {
        printer.status(format_args!("committed {c}"));
    }
}

fn describe(hold: &retire::Hold) -> String {
    use retire::Hold;
    let show = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match hold {
        Hold::NoPrevious => "no previous key".to_owned(),
        Hold::NotPublished => "the current key is still pending: the rotation is not finished".to_owned(),
        Hold::AlreadyRetired { at } => format!("the previous key was retired at {}", show(at)),
        Hold::InGracePeriod { until } => format!("in the grace period until {}", show(until)),
        Hold::StillCurrent { current_in } => format!("the previous key is still current in {current_in}: not retired"),
        Hold::NotCommitted => {
            "the current key is not committed on the checked-out branch: not published yet, so its grace period has not started".to_owned()
        }
        Hold::NoIamId => {
            "no IAM id is recorded for the previous key: retire it in IAM by hand, or record its id".to_owned()
        }
    }
}
