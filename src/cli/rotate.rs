//! `rekey rotate`: the CI rotation job, end to end. The workflow is
//! `ops::rotate`; this file parses flags, runs the health gate after
//! publishing, and renders the report.

use crate::cli::health::{GateArgs, GateOptions};
use crate::cli::iamargs::{AdminKeyArgs, IamArgs};
use crate::cli::netargs::{NetArgs, NetVerifier};
use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::ValidityArgs;
use crate::cli::regionkeys::RegionKeyArgs;
use crate::exit::Exit;
use crate::health;
use crate::iam::{self, Iam, KeyStatus, Retire, wire::ServiceId};
use crate::ops::rotate::{
    Action, CreatedOutcome, KeyIam, NewKeys, RegionKey, RotateReport, RotateRequest, RotateWorld, rotate,
};
use crate::ops::world::{Clock, GitCli, OsRandom, SystemClock};
use crate::pullsecret::catalog::{Catalog, Region};
use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use crate::pullsecret::keyname;
use crate::secret::ApiKey;
use crate::secrets_repo::git::BranchMove;
use crate::secrets_repo::store::Store;
use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Rotate every region's pull secret to a new key, end to end.
///
/// Generates, proves each region's key pulls from every host, seals into the
/// secrets repo, and optionally commits.
///
/// Each region gets its own key (the runbook keeps one key per region):
/// --api-keys-dir DIR (DIR/<region>.key), --api-key-file REGION=FILE or
/// --api-key-env REGION=NAME; a key without REGION= serves every region
/// without a key of its own. With --create-keys --service-id ID, rekey
/// creates the keys in IAM itself (with the admin key of
/// --iam-api-key-file/--iam-api-key-env), holds them only in memory, and
/// deletes the ones it could not publish. Key names come from
/// --key-name-template (default: the runbook's
/// iks-armada-master-registry-access-read-only-prod-{code}-{date}; also
/// {region}, and {service}, the service ID's name, with --service-id) or
/// --key-name (one key shared by every region rotated); {date} is today, UTC.
/// A name that does not carry its region's key code is refused.
///
/// For each region the new secret is generated in memory; with --iam-check
/// (implied by --create-keys and by --iam-url) each key is
/// exchanged for an IAM token first, and a key IAM refuses blocks its region,
/// reported by class (invalid, disabled, locked, expired; IAM unreachable
/// exits 2); then the probe image is pulled from every host with the region's
/// key (a failing host blocks that region unless --allow-failing-host names
/// it), and the secret is sealed as `pending` (<NAME>.pending.gpg, never
/// served), then promoted to `current` (moved to <NAME>.gpg); the version it
/// replaces is kept as `previous` for `rekey rollback`. A journal
/// in the repo's git directory (.git/rekey) makes a killed rotation
/// resumable: rerun the same command, or discard it with --abort. A killed
/// --create-keys run cannot be resumed (IAM does not keep key values): --abort
/// discards it and, given the admin key, deletes the keys it created, finding
/// a key whose creation got no answer by the run's marker in its description.
/// Rerunning a finished rotation changes nothing. Exits 1 when a region was
/// blocked.
///
/// Example:
///   rekey rotate --regions regions --repo secrets --create-keys \
///       --service-id ServiceId-1234 --iam-api-key-env REKEY_IAM_API_KEY \
///       --commit --branch rotate-20261124
///   rekey rotate --regions regions --repo secrets --api-keys-dir keys/ --iam-check --dry-run
///   rekey rotate --regions regions --repo secrets --api-key-env NEW_KEY --region jp \
///       --key-name iks-armada-master-registry-access-read-only-prod-ap-north-20261124
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The region catalog directory (one TOML file per region).
    #[arg(long, value_name = "DIR", required_unless_present = "abort")]
    pub regions: Option<PathBuf>,
    /// The secrets repo (holding .rekey/recipients.asc).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub keys: Box<RegionKeyArgs>,
    /// The new key's name, when every region rotated shares one key; it must
    /// carry the region's key code before its date (-<code>-YYYYMMDD).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["key_name_template", "create_keys"])]
    pub key_name: Option<String>,
    /// Each region's key name: placeholders {region}, {code}, {date} (today,
    /// UTC, YYYYMMDD) and {service} (needs --service-id); must end in -{date}.
    /// Default: iks-armada-master-registry-access-read-only-prod-{code}-{date}.
    #[arg(long, value_name = "TEMPLATE")]
    pub key_name_template: Option<String>,
    /// Create each region's key in IAM (needs --service-id and the IAM admin key).
    #[arg(long, requires = "service_id")]
    pub create_keys: bool,
    /// The service ID the registry keys belong to (`ServiceId-…`).
    #[arg(long, value_name = "ID")]
    pub service_id: Option<String>,
    /// Exchange every new key for an IAM token before verifying; a key IAM
    /// refuses blocks its region.
    #[arg(long)]
    pub iam_check: bool,
    #[command(flatten)]
    pub iam: Box<IamArgs>,
    #[command(flatten)]
    pub admin: Box<AdminKeyArgs>,
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
    /// back to their committed versions; nothing else is touched. Keys a
    /// killed --create-keys run created in IAM are deleted when the IAM admin
    /// key is given, listed otherwise; a key whose creation got no answer is
    /// looked up among the service ID's keys by its name and the run's marker
    /// in its description (without the admin key: the name and marker are
    /// printed to look for).
    #[arg(long, conflicts_with_all = ["regions", "key_name", "key_name_template", "api_key_file", "api_key_env", "api_keys_dir", "create_keys", "dry_run", "commit", "regions_selected"])]
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

/// IAM as the rotation uses it, over the IAM client.
struct CliIam {
    client: Iam,
    admin_token: Option<SecretString>,
    service: Option<ServiceId>,
    runtime: tokio::runtime::Runtime,
}

impl CliIam {
    fn admin(&self) -> anyhow::Result<&SecretString> {
        self.admin_token
            .as_ref()
            .context("managing keys in IAM needs the admin key (--iam-api-key-file or --iam-api-key-env)")
    }
}

impl KeyIam for CliIam {
    fn check(&self, key: &ApiKey) -> KeyStatus {
        self.runtime.block_on(iam::classify(
            &self.client,
            key,
            self.admin_token.as_ref(),
            chrono::Utc::now(),
        ))
    }

    fn create(&self, region: &Region, name: &str) -> anyhow::Result<(ApiKey, String)> {
        let description = format!(
            "Registry pull key of region {}, created by rekey rotate --create-keys",
            region.name
        );
        self.create_described(region, name, &description)
    }

    fn create_described(&self, _region: &Region, name: &str, description: &str) -> anyhow::Result<(ApiKey, String)> {
        let token = self.admin()?;
        let service = self.service.as_ref().context("creating keys needs --service-id")?;
        let (details, key) = self
            .runtime
            .block_on(self.client.create(token, &service.iam_id, name, description))?;
        Ok((key, details.id))
    }

    fn created_nothing(&self, e: &anyhow::Error) -> bool {
        crate::ops::rotate::creation_refused(e)
    }

    fn owner_iam_id(&self) -> Option<String> {
        self.service.as_ref().map(|s| s.iam_id.clone())
    }

    fn delete(&self, id: &str) -> anyhow::Result<()> {
        let token = self.admin()?;
        self.runtime.block_on(self.client.retire(token, id, Retire::Delete))?;
        Ok(())
    }
}

/// Connects to IAM: the client, the admin key's token when one is given, and
/// the service ID when `service_id` is given.
fn connect(
    iam: &IamArgs,
    admin: &AdminKeyArgs,
    ca_certs: &[PathBuf],
    service_id: Option<&str>,
) -> anyhow::Result<CliIam> {
    let client = iam.client(ca_certs)?;
    let admin = admin.read()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let admin_token = match &admin {
        Some(k) => Some(runtime.block_on(client.token(k)).context("the IAM admin key")?),
        None => None,
    };
    let service = match service_id {
        Some(id) => {
            let token = admin_token
                .as_ref()
                .context("--service-id needs the IAM admin key (--iam-api-key-file or --iam-api-key-env)")?;
            Some(
                runtime
                    .block_on(client.service_id(token, id))
                    .with_context(|| format!("looking up --service-id {id}"))?,
            )
        }
        None => None,
    };
    Ok(CliIam {
        client,
        admin_token,
        service,
        runtime,
    })
}

/// Returns each region's key name: `--key-name` for every region, or the
/// template filled in per region. Every name is checked: characters, date
/// suffix, and the region's key code (when the catalog gives one).
fn key_names(
    args: &Args,
    regions: &[&Region],
    date: chrono::NaiveDate,
    service: Option<&str>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut names = BTreeMap::new();
    for region in regions {
        let (name, flag) = match &args.key_name {
            Some(n) => (n.clone(), "--key-name"),
            None => {
                let template = args.key_name_template.as_deref().unwrap_or(keyname::DEFAULT_TEMPLATE);
                let fill = keyname::Fill {
                    region: &region.name,
                    code: region.key_code.as_deref(),
                    date,
                    service,
                };
                let name = keyname::fill(template, &fill).map_err(|e| {
                    let hint = if args.key_name_template.is_none() {
                        " (the default template; give --key-name-template or --key-name)"
                    } else {
                        ""
                    };
                    anyhow::anyhow!("--key-name-template: {e}{hint}")
                })?;
                (name, "--key-name-template")
            }
        };
        keyname::validate(&name).context(flag)?;
        keyname::created_on(&name).context(flag)?;
        if let Some(code) = &region.key_code {
            keyname::check_code(&name, &region.name, code).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
        names.insert(region.name.clone(), name);
    }
    Ok(names)
}

/// Runs `rekey rotate`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("rotate", &[OutputFormat::Text, OutputFormat::Json])?;
    if args.abort {
        return run_abort(printer, &args);
    }
    let Some(regions_dir) = &args.regions else {
        bail!("--regions is required");
    };
    let catalog = Catalog::load(regions_dir)?;
    let regions = catalog.select(regions_dir, &args.regions_selected)?;
    if args.create_keys && !args.keys.is_empty() {
        bail!("--create-keys creates the keys: give no --api-keys-dir, --api-key-file or --api-key-env");
    }
    if !args.create_keys && args.keys.is_empty() {
        bail!("give the new keys (--api-keys-dir, --api-key-file or --api-key-env), or --create-keys");
    }
    let template_needs_service = args
        .key_name_template
        .as_deref()
        .is_some_and(|t| t.contains("{service}"));
    if template_needs_service && args.service_id.is_none() {
        bail!("--key-name-template uses {{service}}, the service ID's name in IAM: give --service-id");
    }
    let today = SystemClock.now().date_naive();
    // Names that need no IAM are checked before anything is read or asked.
    let early_names = if template_needs_service {
        None
    } else {
        Some(key_names(&args, &regions, today, None)?)
    };
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
    let iam_check = args.iam_check || args.create_keys || args.iam.given();
    let given = if args.create_keys {
        None
    } else {
        Some(args.keys.read(&regions)?)
    };
    let signer = args.signing.load(std::time::SystemTime::now())?;
    let iam = if iam_check || args.service_id.is_some() {
        Some(connect(
            &args.iam,
            &args.admin,
            &args.net.ca_cert,
            args.service_id.as_deref(),
        )?)
    } else {
        None
    };
    let names = match early_names {
        Some(n) => n,
        None => key_names(
            &args,
            &regions,
            today,
            iam.as_ref().and_then(|i| i.service.as_ref()).map(|s| s.name.as_str()),
        )?,
    };
    let keys = match given {
        None => NewKeys::Create(names),
        Some(given) => {
            if args.key_name.is_some() {
                let fps: BTreeSet<String> = given.values().map(|k| k.fingerprint().to_string()).collect();
                if fps.len() > 1 {
                    bail!(
                        "--key-name names one key, but the regions rotated have {} different keys: name them with --key-name-template",
                        fps.len()
                    );
                }
            }
            let mut keys = BTreeMap::new();
            for (region, key) in given {
                let key_name = names
                    .get(&region)
                    .cloned()
                    .with_context(|| format!("no key name for region {region}"))?;
                keys.insert(
                    region,
                    RegionKey {
                        key,
                        key_name,
                        iam_key_id: None,
                    },
                );
            }
            NewKeys::Given(keys)
        }
    };
    let request = RotateRequest {
        regions,
        keys,
        iam_check,
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
        iam: iam.as_ref().map(|i| i as &dyn KeyIam),
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
    let leftover = if report.leftover_keys().is_empty() {
        Exit::Ok
    } else {
        Exit::Error
    };
    Ok(Exit::problem_if(report.blocked())
        .worst(health.map_or(Exit::Ok, |h| h.exit()))
        .worst(leftover))
}

/// What `--abort` did to the keys a killed `--create-keys` run created.
#[derive(Serialize)]
struct AbortedKey<'a> {
    region: &'a str,
    key_name: &'a str,
    iam_key_id: &'a str,
    deleted: bool,
    detail: Option<String>,
}

/// What `--abort` found in IAM for a creation that got no answer.
#[derive(Serialize)]
struct OrphanSearch<'a> {
    region: &'a str,
    key_name: &'a str,
    marker: &'a str,
    /// False when IAM was not asked (no admin key) or could not be listed.
    searched: bool,
    /// The keys found with this name and marker, and deleted.
    deleted: Vec<String>,
    /// Keys found whose deletion failed.
    left: Vec<String>,
    detail: Option<String>,
}

impl OrphanSearch<'_> {
    fn resolved(&self) -> bool {
        self.searched && self.left.is_empty()
    }
}

#[derive(Serialize)]
struct AbortSummary<'a> {
    #[serde(flatten)]
    report: &'a crate::ops::rotate::AbortReport,
    keys: Vec<AbortedKey<'a>>,
    orphans: Vec<OrphanSearch<'a>>,
}

/// Finds in IAM the keys of creations that got no answer (by owner, name
/// and the marker in their description) and deletes them.
fn find_orphans<'a>(
    iam: Option<&CliIam>,
    no_iam: &str,
    intents: &'a [crate::secrets_repo::journal::CreationIntent],
) -> Vec<OrphanSearch<'a>> {
    let mut listed: BTreeMap<&str, Result<Vec<iam::KeyDetails>, String>> = BTreeMap::new();
    let mut out = Vec::new();
    for intent in intents {
        let mut search = OrphanSearch {
            region: &intent.region,
            key_name: &intent.key_name,
            marker: &intent.marker,
            searched: false,
            deleted: Vec::new(),
            left: Vec::new(),
            detail: None,
        };
        let Some(iam) = iam else {
            search.detail = Some(no_iam.to_owned());
            out.push(search);
            continue;
        };
        let keys = listed.entry(intent.owner_iam_id.as_str()).or_insert_with(|| {
            if intent.owner_iam_id.is_empty() {
                return Err("the journal does not say which service ID the key was created for".to_owned());
            }
            let token = iam.admin().map_err(|e| format!("{e:#}"))?;
            iam.runtime
                .block_on(iam.client.list_keys(token, &intent.owner_iam_id))
                .map_err(|e| e.to_string())
        });
        match keys {
            Err(e) => search.detail = Some(e.clone()),
            Ok(keys) => {
                search.searched = true;
                // IAM was asked for the service ID's keys only; a key of
                // another identity in the answer is not touched, whatever it says.
                for k in keys
                    .iter()
                    .filter(|k| k.iam_id == intent.owner_iam_id && intent.matches(&k.name, k.description.as_deref()))
                {
                    if !crate::secrets_repo::layout::is_iam_key_id(&k.id) {
                        search.left.push("(an id that is not an IAM API key id)".to_owned());
                        continue;
                    }
                    match iam.delete(&k.id) {
                        Ok(()) => search.deleted.push(k.id.clone()),
                        Err(e) => {
                            search.left.push(k.id.clone());
                            search.detail = Some(format!("{e:#}"));
                        }
                    }
                }
            }
        }
        out.push(search);
    }
    out
}

fn run_abort(printer: &Printer, args: &Args) -> anyhow::Result<Exit> {
    let report = crate::ops::rotate::abort(&Store::new(&args.repo), printer)?;
    let mut keys = Vec::new();
    let mut iam = None;
    let mut no_iam = "no IAM admin key given";
    if !report.created_keys.is_empty() || !report.unanswered.is_empty() {
        iam = match args.admin.read()? {
            Some(_) => match connect(&args.iam, &args.admin, &args.net.ca_cert, None) {
                Ok(iam) => Some(iam),
                Err(e) => {
                    printer.status(format_args!("could not reach IAM to delete the created keys: {e:#}"));
                    no_iam = "IAM could not be reached";
                    None
                }
            },
            None => None,
        };
        for c in &report.created_keys {
            let (deleted, detail) = match &iam {
                Some(iam) => match iam.delete(&c.iam_key_id) {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(format!("{e:#}"))),
                },
                None => (false, Some(no_iam.to_owned())),
            };
            keys.push(AbortedKey {
                region: &c.region,
                key_name: &c.key_name,
                iam_key_id: &c.iam_key_id,
                deleted,
                detail,
            });
        }
    }
    let orphans = find_orphans(iam.as_ref(), no_iam, &report.unanswered);
    let left = keys.iter().any(|k| !k.deleted) || orphans.iter().any(|o| !o.resolved());
    let exit = if left { Exit::Problem } else { Exit::Ok };
    if printer.format() == OutputFormat::Json {
        printer.json(&AbortSummary {
            report: &report,
            keys,
            orphans,
        })?;
        return Ok(exit);
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
    for k in &keys {
        if k.deleted {
            printer.line(format_args!(
                "  deleted  IAM key {} ({}, region {})",
                k.iam_key_id, k.key_name, k.region
            ));
        } else {
            printer.line(format_args!(
                "  LEFT     IAM key {} ({}, region {}): delete it in IAM ({})",
                k.iam_key_id,
                k.key_name,
                k.region,
                k.detail.as_deref().unwrap_or_default()
            ));
        }
    }
    for o in &orphans {
        for id in &o.deleted {
            printer.line(format_args!(
                "  deleted  IAM key {id} ({}, region {}, marker {}): its creation got no answer",
                o.key_name, o.region, o.marker
            ));
        }
        if o.searched && o.deleted.is_empty() && o.left.is_empty() {
            printer.line(format_args!(
                "  checked  IAM holds no key {} with marker {} (region {}): its creation never happened",
                o.key_name, o.marker, o.region
            ));
        }
        for id in &o.left {
            printer.line(format_args!(
                "  LEFT     IAM key {id} ({}, region {}, marker {}): delete it in IAM ({})",
                o.key_name,
                o.region,
                o.marker,
                o.detail.as_deref().unwrap_or_default()
            ));
        }
        if !o.searched {
            printer.line(format_args!(
                "  LOOK FOR IAM key named {} whose description holds marker {} (region {}): its creation got no answer; delete it in IAM if it exists ({})",
                o.key_name,
                o.marker,
                o.region,
                o.detail.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(exit)
}

fn render(printer: &Printer, report: &RotateReport, health: Option<&health::Report>) -> anyhow::Result<()> {
    let ok = !report.blocked()
        && report.leftover_keys().is_empty()
        && health.is_none_or(|h| h.verdict == health::Status::Healthy);
    if printer.format() == OutputFormat::Json {
        return printer.json(&Summary { ok, report, health });
    }
    let verb = if report.dry_run { "would rotate" } else { "rotated" };
    for r in &report.regions {
        let old = r.old_key_fingerprint.as_deref().unwrap_or("none");
        let name = &r.key_name;
        match r.action {
            Action::Unchanged => printer.line(format_args!(
                "{:<6} unchanged     already {name} ({})",
                r.region, r.new_key_fingerprint
            )),
            Action::Rotate if report.dry_run => {
                let resume = r.stage.map(|s| format!(" (resuming after {s})")).unwrap_or_default();
                printer.line(format_args!(
                    "{:<6} {verb}  {old} -> {name} ({}), {}{resume}",
                    r.region,
                    r.new_key_fingerprint,
                    plural(r.hosts, "host", "hosts")
                ))
            }
            Action::Rotate => printer.line(format_args!(
                "{:<6} {verb}       {old} -> {name} ({}) ({}/{} hosts pull)",
                r.region, r.new_key_fingerprint, r.hosts_ok, r.hosts
            )),
            Action::Blocked => match &r.iam {
                Some(iam) => printer.line(format_args!(
                    "{:<6} BLOCKED       keeps {old}: IAM says {name} ({}) is {}: {}",
                    r.region,
                    r.new_key_fingerprint,
                    iam.class.name(),
                    iam.detail
                )),
                None => printer.line(format_args!(
                    "{:<6} BLOCKED       keeps {old}: {}/{} hosts pull",
                    r.region, r.hosts_ok, r.hosts
                )),
            },
        }
        for h in &r.failing_hosts {
            let allowed = if r.action == Action::Blocked { "" } else { " (allowed)" };
            printer.line(format_args!("         {} {}: {}{allowed}", h.class, h.host, h.detail));
        }
    }
    for c in &report.created_keys {
        let what = match c.outcome {
            CreatedOutcome::Published => "created",
            CreatedOutcome::Deleted => "deleted (not published)",
            CreatedOutcome::DeleteFailed => "NOT PUBLISHED, deleting it failed: delete it in IAM",
        };
        printer.line(format_args!(
            "iam    {} {} ({}): {what}",
            c.region, c.key_name, c.iam_key_id
        ));
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
