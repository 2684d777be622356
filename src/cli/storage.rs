//! `rekey storage`: does the IAM key inside each cluster's
//! `storage-secret-store` equal the source of truth? `diff` for one cluster
//! or a fleet, `wait` for a reset to arrive, `check-log` for update job logs.

use crate::cli::output::{OutputFormat, Printer};
use crate::cli::secret_input::SecretSource;
use crate::exit::Exit;
use crate::fingerprint::Fingerprint;
use crate::storage::envelope::{DecryptionKey, KeyFormat};
use crate::storage::kube::{self, Item, RawSecret, StorageSecret};
use crate::storage::truth::{self, Record, Scope, TruthIndex};
use crate::storage::verify::{self, ClusterReport, Options, Status};
use crate::storage::{etcd, joblog, redact, split};
use anyhow::{Context, bail};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Verify the IAM key in clusters' storage secrets against the source of truth.
///
/// Example:
///   rekey storage diff --secret secret.json --truth truth.json --decryption-key-file aes.key
///   rekey storage wait --truth truth.json --decryption-key-env STORAGE_AES_KEY --context my-cluster
///   rekey storage check-log job.log --cluster c0ffee --resource-group 1a2b
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: StorageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    Diff(DiffArgs),
    Wait(WaitArgs),
    CheckLog(CheckLogArgs),
}

/// Where to read the AES key that opens the envelopes, and how it is encoded.
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptionKeyArgs {
    /// Read the decryption key from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE", conflicts_with = "decryption_key_env")]
    pub decryption_key_file: Option<PathBuf>,
    /// Read the decryption key from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub decryption_key_env: Option<String>,
    /// How the key string encodes the AES key; auto tries raw, hex, base64,
    /// sha256 in that order and reports which opened each envelope.
    #[arg(long, value_enum, default_value_t = KeyFormat::Auto)]
    pub key_format: KeyFormat,
}

impl DecryptionKeyArgs {
    fn read(&self) -> anyhow::Result<Option<DecryptionKey>> {
        let Some(source) =
            SecretSource::from_options(self.decryption_key_file.as_deref(), self.decryption_key_env.as_deref())
        else {
            return Ok(None);
        };
        let raw = source.read()?;
        let mut text: &[u8] = &raw;
        if let Some(rest) = text.strip_suffix(b"\n") {
            text = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        let key = DecryptionKey::new(text, self.key_format)
            .with_context(|| format!("decryption key from {} is not usable", source.describe()))?;
        Ok(Some(key))
    }
}

/// The parts of a cluster's scope the secret cannot tell.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// The account ID of every cluster (overrides the secret's labels).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// The resource group ID of every cluster (overrides `[VPC] g2_resource_group_id`).
    #[arg(long, value_name = "ID")]
    pub resource_group: Option<String>,
    /// The region of every cluster (overrides the one in the endpoint URLs).
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        Scope {
            account: self.account.clone(),
            resource_group: self.resource_group.clone(),
            region: self.region.clone(),
        }
    }
}

/// Compare the key in storage secrets with the source of truth, or two snapshots of a secret.
///
/// --secret takes `kubectl get secret storage-secret-store -n kube-system -o json`
/// (or -o yaml), a `kind: List` of many, or a directory of such files named by
/// cluster ID (`-` reads stdin). Each cluster is matched to the one truth record
/// of its account, resource group and region: the account from a label or
/// annotation `account-id`, the resource group from `[VPC] g2_resource_group_id`,
/// the region from the first label of `containers_api_route` or
/// `g2_riaas_endpoint_url`; --account, --resource-group and --region override.
///
/// Status per cluster: match, mismatch, not_encrypted, undecryptable,
/// missing_key, no_truth. Exit 0 when every cluster matches, 1 otherwise.
/// --before/--after diff two snapshots of one secret, redacted; exit 0 when
/// the key changed, 1 when it did not.
///
/// Example:
///   kubectl get secret storage-secret-store -n kube-system -o json > c0ffee.json
///   rekey storage diff --secret c0ffee.json --truth truth.json --decryption-key-file aes.key --diff
///   rekey storage diff --secret fleet/ --truth etcd://127.0.0.1:2379/truth \
///       --decryption-key-env STORAGE_AES_KEY --key-format hex --output json
///   rekey storage diff --before old.json --after new.json --decryption-key-file aes.key
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DiffArgs {
    /// The secret(s): a file (JSON or YAML Secret, or a List), a directory of them, or `-`.
    #[arg(long, value_name = "PATH", required_unless_present = "before", conflicts_with_all = ["before", "after"])]
    pub secret: Option<PathBuf>,
    /// The source of truth: a JSON file (object, array or NDJSON) or etcd://HOST:PORT/PREFIX.
    #[arg(long, value_name = "PATH|URL", required_unless_present = "before")]
    pub truth: Option<String>,
    #[command(flatten)]
    pub key: DecryptionKeyArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Show a redacted diff of slclient.toml against the expected one for clusters that do not match.
    #[arg(long)]
    pub diff: bool,
    /// The secret before a reset (diff two snapshots).
    #[arg(long, value_name = "FILE", requires = "after")]
    pub before: Option<PathBuf>,
    /// The secret after a reset.
    #[arg(long, value_name = "FILE", requires = "before")]
    pub after: Option<PathBuf>,
    /// Show values instead of fingerprints in diffs (only when stdout is a terminal).
    #[arg(long)]
    pub reveal: bool,
}

/// Poll a cluster's storage secret until its key matches the source of truth.
///
/// Runs `kubectl [--context C] get secret storage-secret-store -n kube-system -o json`
/// every --interval until the key matches or --timeout passes (the runbook
/// allows 30 minutes for an update to reach clusters). Exit 0 on a match,
/// 1 on timeout.
///
/// Example:
///   rekey storage wait --truth truth.json --decryption-key-file aes.key \
///       --context prod-c0ffee --interval 30s --timeout 30m
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct WaitArgs {
    /// The source of truth: a JSON file or etcd://HOST:PORT/PREFIX.
    #[arg(long, value_name = "PATH|URL")]
    pub truth: String,
    #[command(flatten)]
    pub key: DecryptionKeyArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// The kubeconfig context, passed to kubectl.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubectl program to run.
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    pub kubectl: PathBuf,
    /// The name shown for the cluster (default: the context, or what the secret tells).
    #[arg(long, value_name = "ID")]
    pub cluster: Option<String>,
    /// Time between polls.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Check a `cluster_secret_update` job log for the five phrases of a successful update.
///
/// The phrases must appear in order, and the log must name the cluster (and
/// the resource group, when given). Reports the first one missing; exit 1 if any is.
///
/// Example:
///   rekey storage check-log job.log --cluster c0ffee --resource-group 1a2b3c
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CheckLogArgs {
    /// The job log.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The cluster ID the log must name.
    #[arg(long, value_name = "ID")]
    pub cluster: String,
    /// The resource group ID the log must name.
    #[arg(long, value_name = "ID")]
    pub resource_group: Option<String>,
}

/// Runs `rekey storage`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    match args.command {
        StorageCommand::Diff(a) => run_diff(printer, a),
        StorageCommand::Wait(a) => run_wait(printer, a),
        StorageCommand::CheckLog(a) => run_check_log(printer, a),
    }
}

// ---------------------------------------------------------------- truth

/// Loads and indexes the source of truth from a file or etcd.
fn load_truth(source: &str) -> anyhow::Result<TruthIndex> {
    let records = if source.starts_with("etcd://") {
        let url = etcd::parse_url(source)?;
        fetch_etcd(&url).with_context(|| format!("reading source of truth from {source}"))?
    } else {
        let bytes = Zeroizing::new(std::fs::read(source).with_context(|| format!("reading {source}"))?);
        truth::parse_records(&bytes, source)?
    };
    Ok(TruthIndex::new(records)?)
}

fn fetch_etcd(url: &etcd::EtcdUrl) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let endpoint = format!("{}/v3/kv/range", url.endpoint);
        let mut start = url.prefix.clone();
        let mut records = Vec::new();
        loop {
            let resp = client
                .post(&endpoint)
                .json(&etcd::range_request(&start, &url.prefix, 1000))
                .send()
                .await
                .with_context(|| format!("POST {endpoint}"))?;
            let status = resp.status();
            let body = Zeroizing::new(resp.bytes().await?.to_vec());
            if !status.is_success() {
                bail!("POST {endpoint}: HTTP {status}");
            }
            let page = etcd::parse_response(&body)?;
            let Some(last) = page.kvs.last().map(|(k, _)| k.clone()) else {
                break;
            };
            for (k, v) in &page.kvs {
                let v = Zeroizing::new(v.clone());
                let origin = format!("etcd key {}", String::from_utf8_lossy(k));
                let value: serde_json::Value = serde_json::from_slice(&v).map_err(|e| truth::TruthError::Syntax {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
                records.push(truth::parse_record(value, origin)?);
            }
            if !page.more {
                break;
            }
            start = etcd::next_start(&last);
        }
        if records.is_empty() {
            return Err(etcd::EtcdError::Empty(String::from_utf8_lossy(&url.prefix).into_owned()).into());
        }
        Ok(records)
    })
}

// ---------------------------------------------------------------- reading secrets

/// Secrets handed to verification in batches of this many.
const BATCH: usize = 4096;

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())));
    }
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
}

/// Skips leading whitespace and returns the first byte, without consuming it.
fn peek(r: &mut dyn BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        if let Some(p) = buf.iter().position(|b| !b.is_ascii_whitespace()) {
            let b = buf[p];
            r.consume(p);
            return Ok(Some(b));
        }
        let n = buf.len();
        r.consume(n);
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty() && s != "-")
        .unwrap_or_else(|| "stdin".to_owned())
}

/// Lists the files of `--secret`: the path itself, or a directory's
/// `.json`/`.yaml`/`.yml` files in name order.
fn secret_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.as_os_str() != "-" && path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let p = entry.with_context(|| format!("reading {}", path.display()))?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if p.is_file() && matches!(ext, "json" | "yaml" | "yml") {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            bail!("{}: no .json, .yaml or .yml files", path.display());
        }
        Ok(files)
    } else {
        Ok(vec![path.to_owned()])
    }
}

/// Where a Secret came from, for cluster names and messages.
struct Origin {
    /// The file name without extension: the cluster ID when the Secret does not name one.
    name: String,
    /// The file as shown in messages.
    shown: String,
}

/// A Secret read but not yet parsed (JSON: parsed on the pool) or already checked (YAML).
enum Pending {
    Raw {
        origin: Arc<Origin>,
        item: Item,
        bytes: Zeroizing<Vec<u8>>,
    },
    Ready(StorageSecret, Arc<Origin>),
}

/// Checks a Secret and names its cluster.
fn check(origin: &Origin, item: Item, raw: RawSecret) -> anyhow::Result<StorageSecret> {
    let fallback = || match item {
        Item::Single => origin.name.clone(),
        Item::Listed(i) => format!("{}[{i}]", origin.name),
    };
    raw.check(fallback).map_err(|e| match item {
        Item::Single => anyhow::anyhow!("{}: {e}", origin.shown),
        Item::Listed(i) => anyhow::anyhow!("{}: item {i}: {e}", origin.shown),
    })
}

impl Pending {
    /// Parses (if still raw) and checks the Secret; returns it with where it came from.
    fn prepare(self) -> anyhow::Result<(StorageSecret, Arc<Origin>)> {
        match self {
            Pending::Ready(s, origin) => Ok((s, origin)),
            Pending::Raw { origin, item, bytes } => {
                let raw: RawSecret = serde_json::from_slice(&bytes).map_err(|e| {
                    let e = kube::scrub(&e.to_string());
                    match item {
                        Item::Single => anyhow::anyhow!("{}: not JSON or YAML: {e}", origin.shown),
                        Item::Listed(i) => anyhow::anyhow!("{}: item {i}: not JSON: {e}", origin.shown),
                    }
                })?;
                Ok((check(&origin, item, raw)?, origin))
            }
        }
    }
}

/// The top of a JSON document once its items were split off.
#[derive(serde::Deserialize)]
struct JsonTop {
    kind: Option<String>,
}

/// Reads every Secret of `path` (file or directory) and hands it to `sink`.
/// JSON is split into items as a stream (parsed later, on the pool); YAML is
/// read whole and checked here.
fn read_secrets(path: &Path, sink: &mut dyn FnMut(Pending) -> anyhow::Result<()>) -> anyhow::Result<usize> {
    let mut count = 0usize;
    for file in secret_files(path)? {
        let origin = Arc::new(Origin {
            name: stem(&file),
            shown: if file.as_os_str() == "-" {
                "stdin".to_owned()
            } else {
                file.display().to_string()
            },
        });
        let shown = &origin.shown;
        let mut reader = open_input(&file)?;
        let first = peek(&mut *reader).with_context(|| format!("reading {shown}"))?;
        match first {
            None => bail!("{shown}: {}", kube::SecretError::Empty),
            Some(b'{') => {
                let skeleton = split::split(reader, &mut |i, bytes| {
                    count += 1;
                    sink(Pending::Raw {
                        origin: origin.clone(),
                        item: Item::Listed(i),
                        bytes: Zeroizing::new(bytes),
                    })
                })
                .map_err(|e| match e {
                    split::SplitError::Sink(e) => e,
                    other => anyhow::anyhow!("{shown}: {other}"),
                })?;
                match skeleton.items {
                    None => {
                        count += 1;
                        sink(Pending::Raw {
                            origin: origin.clone(),
                            item: Item::Single,
                            bytes: Zeroizing::new(skeleton.bytes),
                        })?;
                    }
                    Some(n) => {
                        let top: JsonTop = serde_json::from_slice(&skeleton.bytes)
                            .map_err(|e| anyhow::anyhow!("{shown}: not JSON: {}", kube::scrub(&e.to_string())))?;
                        match top.kind.as_deref() {
                            Some("List") | Some("SecretList") => {}
                            Some(k) => bail!("{shown}: {}", kube::SecretError::WrongKind(k.to_owned())),
                            None => bail!("{shown}: {}", kube::SecretError::NoKind),
                        }
                        if n == 0 {
                            bail!("{shown}: {}", kube::SecretError::EmptyList);
                        }
                    }
                }
            }
            Some(_) => {
                let mut bytes = Zeroizing::new(Vec::new());
                reader
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {shown}"))?;
                let result = kube::read_yaml(&bytes, &mut |item, raw| {
                    count += 1;
                    sink(Pending::Ready(check(&origin, item, raw)?, origin.clone()))
                });
                match result {
                    Ok(()) => {}
                    Err(kube::ReadError::Sink(e)) => return Err(e),
                    Err(e) => bail!("{shown}: {e}"),
                }
            }
        }
    }
    Ok(count)
}

// ---------------------------------------------------------------- diff

#[derive(Default, Serialize)]
struct Summary {
    clusters: usize,
    ok: bool,
    statuses: BTreeMap<&'static str, usize>,
    warnings: usize,
}

impl Summary {
    fn add(&mut self, r: &ClusterReport) {
        self.clusters += 1;
        *self.statuses.entry(r.status.name()).or_default() += 1;
        if !r.warnings.is_empty() {
            self.warnings += 1;
        }
    }

    fn text(&self) -> String {
        let parts: Vec<String> = Status::ALL
            .iter()
            .filter_map(|s| self.statuses.get(s.name()).map(|n| format!("{n} {}", s.name())))
            .collect();
        let noun = if self.clusters == 1 { "cluster" } else { "clusters" };
        format!("{} {noun}: {}", self.clusters, parts.join(", "))
    }
}

fn fp(f: Option<Fingerprint>) -> String {
    f.map_or_else(|| "-".to_owned(), |f| f.to_string())
}

fn render_text(out: &mut String, r: &ClusterReport) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{}  {}  field {}  actual {}  expected {}",
        r.cluster,
        r.status.name(),
        r.field.map_or("-", |f| f.name()),
        fp(r.actual_fingerprint),
        fp(r.expected_fingerprint)
    );
    if let Some(k) = r.key_format {
        let _ = write!(out, "  key format {}", k.name());
    }
    out.push('\n');
    if let Some(d) = &r.detail {
        let _ = writeln!(out, "  {d}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    if let Some(d) = &r.diff {
        for line in d.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}

fn reveal_allowed(printer: &Printer, asked: bool) -> bool {
    if !asked {
        return false;
    }
    if std::io::stdout().is_terminal() {
        return true;
    }
    printer.warn("--reveal ignored: stdout is not a terminal; showing fingerprints");
    false
}

fn run_diff(printer: &Printer, args: DiffArgs) -> anyhow::Result<Exit> {
    printer.require("storage diff", &[OutputFormat::Text, OutputFormat::Json])?;
    if let (Some(before), Some(after)) = (&args.before, &args.after) {
        return run_snapshots(printer, &args, before, after);
    }
    let (Some(secret_path), Some(truth_source)) = (&args.secret, &args.truth) else {
        bail!("give --secret and --truth, or --before and --after");
    };
    if args.key.decryption_key_file.is_none() && args.key.decryption_key_env.is_none() {
        bail!("no decryption key: use --decryption-key-file or --decryption-key-env");
    }
    let truth = load_truth(truth_source)?;
    let key = args.key.read()?;
    let reveal = reveal_allowed(printer, args.reveal);
    let opts = Options {
        scope: args.scope.scope(),
        diff: args.diff,
        reveal,
    };
    let json = printer.format() == OutputFormat::Json;
    let mut summary = Summary::default();
    let mut first = true;

    // A reader thread parses Secrets into batches while the pool verifies the previous one.
    let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Vec<Pending>>>(2);
    let verified = std::thread::scope(|s| -> anyhow::Result<()> {
        // Owned here so that an early return drops it and unblocks the reader.
        let rx = rx;
        s.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let result = read_secrets(secret_path, &mut |secret| {
                batch.push(secret);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.send(Ok(full)).map_err(|_| anyhow::anyhow!("stopped"))?;
                }
                Ok(())
            });
            let _ = match result {
                Ok(_) => tx.send(Ok(batch)),
                Err(e) => tx.send(Err(e)),
            };
        });
        for batch in rx.iter() {
            let batch = batch?;
            let reports: Vec<ClusterReport> = batch
                .into_par_iter()
                .map(|pending| {
                    let (secret, origin) = pending.prepare()?;
                    verify::verify(&secret, &truth, key.as_ref(), &opts)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", origin.shown))
                })
                .collect::<anyhow::Result<_>>()?;
            let mut out = String::with_capacity(reports.len() * 256);
            // The JSON opens with the first verified batch, so an input error
            // in it leaves stdout empty rather than half a document.
            if json && first {
                out.push_str("{\"clusters\": [");
            }
            for r in &reports {
                summary.add(r);
                if json {
                    out.push_str(if first { "\n  " } else { ",\n  " });
                    out.push_str(&serde_json::to_string(r)?);
                } else {
                    render_text(&mut out, r);
                }
                first = false;
            }
            printer.raw(out.as_bytes())?;
        }
        Ok(())
    });
    verified?;
    summary.ok = summary.clusters > 0 && summary.statuses.get("match") == Some(&summary.clusters);
    if json {
        let s = serde_json::to_string(&summary)?;
        let open = if first { "{\"clusters\": [" } else { "" };
        printer.raw(format!("{open}\n],\n\"summary\": {s}}}\n").as_bytes())?;
    } else {
        printer.line(summary.text());
    }
    Ok(Exit::problem_if(!summary.ok))
}

/// One snapshot of a secret for `--before/--after`.
struct Snapshot {
    client: crate::storage::slclient::SlClient,
    plain: Option<Zeroizing<Vec<u8>>>,
    field: Option<crate::storage::slclient::KeyField>,
}

fn read_one(path: &Path, key: Option<&DecryptionKey>) -> anyhow::Result<Snapshot> {
    let mut secrets = Vec::new();
    read_secrets(path, &mut |p| {
        secrets.push(p.prepare()?.0);
        Ok(())
    })?;
    if secrets.len() != 1 {
        bail!(
            "{}: holds {} secrets; --before and --after take one each",
            path.display(),
            secrets.len()
        );
    }
    let secret = secrets.remove(0);
    let client = verify::decode(&secret).with_context(|| format!("reading {}", path.display()))?;
    let opened = verify::open_key(&client, key);
    let (field, plain) = match opened {
        None => (None, None),
        Some(o) => match o.plain {
            Ok((p, _)) => (Some(o.field), Some(p)),
            Err(e) if key.is_none() => bail!(
                "{}: {} is encrypted: give --decryption-key-file or --decryption-key-env ({e})",
                path.display(),
                o.field.name()
            ),
            Err(e) => bail!("{}: {}: {e}", path.display(), o.field.name()),
        },
    };
    Ok(Snapshot { client, plain, field })
}

#[derive(Serialize)]
struct SnapshotReport {
    before: PathBuf,
    after: PathBuf,
    field_before: Option<&'static str>,
    field_after: Option<&'static str>,
    before_fingerprint: Option<Fingerprint>,
    after_fingerprint: Option<Fingerprint>,
    key_changed: bool,
    diff: String,
}

fn run_snapshots(printer: &Printer, args: &DiffArgs, before: &Path, after: &Path) -> anyhow::Result<Exit> {
    let key = args.key.read()?;
    let reveal = reveal_allowed(printer, args.reveal);
    let a = read_one(before, key.as_ref())?;
    let b = read_one(after, key.as_ref())?;
    let ra = redact::render(&a.client, a.field, a.plain.as_deref().map(Vec::as_slice), reveal);
    let rb = redact::render(&b.client, b.field, b.plain.as_deref().map(Vec::as_slice), reveal);
    let diff = redact::unified(&ra, &rb, &before.display().to_string(), &after.display().to_string());
    let fa = a.plain.as_ref().map(|p| Fingerprint::of(p));
    let fb = b.plain.as_ref().map(|p| Fingerprint::of(p));
    let key_changed = match (&a.plain, &b.plain) {
        (Some(x), Some(y)) => {
            use subtle::ConstantTimeEq;
            !bool::from(x.as_slice().ct_eq(y.as_slice()))
        }
        (None, None) => false,
        _ => true,
    };
    let report = SnapshotReport {
        before: before.to_owned(),
        after: after.to_owned(),
        field_before: a.field.map(|f| f.name()),
        field_after: b.field.map(|f| f.name()),
        before_fingerprint: fa,
        after_fingerprint: fb,
        key_changed,
        diff,
    };
    match printer.format() {
        OutputFormat::Json => printer.json(&report)?,
        _ => {
            printer.raw(report.diff.as_bytes())?;
            printer.line(format_args!(
                "key {}: {} -> {}",
                if key_changed { "changed" } else { "unchanged" },
                fp(fa),
                fp(fb)
            ));
        }
    }
    Ok(Exit::problem_if(!key_changed))
}

// ---------------------------------------------------------------- wait

#[derive(Serialize)]
struct WaitReport {
    attempts: u32,
    elapsed_seconds: u64,
    matched: bool,
    last_error: Option<String>,
    cluster: Option<ClusterReport>,
}

/// Runs kubectl once and verifies what it printed.
fn poll_once(
    args: &WaitArgs,
    truth: &TruthIndex,
    key: Option<&DecryptionKey>,
    opts: &Options,
) -> Result<ClusterReport, String> {
    let mut cmd = std::process::Command::new(&args.kubectl);
    if let Some(ctx) = &args.context {
        cmd.arg("--context").arg(ctx);
    }
    cmd.args(["get", "secret", kube::SECRET_NAME, "-n", kube::NAMESPACE, "-o", "json"]);
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", args.kubectl.display()))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        return Err(format!(
            "{} exited with {}: {first}",
            args.kubectl.display(),
            out.status
        ));
    }
    let mut secrets = Vec::new();
    let fallback = args
        .cluster
        .clone()
        .or_else(|| args.context.clone())
        .unwrap_or_else(|| "cluster".into());
    kube::read_json::<_, std::convert::Infallible>(stdout.as_slice(), &mut |_, raw| {
        secrets.push(raw);
        Ok(())
    })
    .map_err(|e| format!("kubectl output: {e}"))?;
    let raw = secrets.pop().ok_or("kubectl printed no secret")?;
    let mut secret = raw
        .check(|| fallback.clone())
        .map_err(|e| format!("kubectl output: {e}"))?;
    if let Some(c) = &args.cluster {
        secret.cluster = c.clone();
    }
    verify::verify(&secret, truth, key, opts).map_err(|e| e.to_string())
}

fn run_wait(printer: &Printer, args: WaitArgs) -> anyhow::Result<Exit> {
    printer.require("storage wait", &[OutputFormat::Text, OutputFormat::Json])?;
    if args.key.decryption_key_file.is_none() && args.key.decryption_key_env.is_none() {
        bail!("no decryption key: use --decryption-key-file or --decryption-key-env");
    }
    if args.interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    let truth = load_truth(&args.truth)?;
    let key = args.key.read()?;
    let opts = Options {
        scope: args.scope.scope(),
        ..Options::default()
    };
    let start = Instant::now();
    let bar = printer.interactive().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    });
    let mut attempts = 0u32;
    let (last, last_error) = loop {
        attempts += 1;
        let result = poll_once(&args, &truth, key.as_ref(), &opts);
        let elapsed = start.elapsed();
        let line = match &result {
            Ok(r) => format!(
                "attempt {attempts}: {} {} (actual {}, expected {}), {} of {} elapsed",
                r.cluster,
                r.status.name(),
                fp(r.actual_fingerprint),
                fp(r.expected_fingerprint),
                humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                humantime::format_duration(args.timeout)
            ),
            Err(e) => format!(
                "attempt {attempts}: {e}, {} of {} elapsed",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                humantime::format_duration(args.timeout)
            ),
        };
        match &bar {
            Some(pb) => pb.set_message(line),
            None => printer.status(line),
        }
        let matched = matches!(&result, Ok(r) if r.status == Status::Match);
        if matched
            || elapsed
                .checked_add(args.interval)
                .is_none_or(|next| next > args.timeout)
        {
            break match result {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            };
        }
        std::thread::sleep(args.interval);
    };
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let matched = last.as_ref().is_some_and(|r| r.status == Status::Match);
    let report = WaitReport {
        attempts,
        elapsed_seconds: start.elapsed().as_secs(),
        matched,
        last_error,
        cluster: last,
    };
    match printer.format() {
        OutputFormat::Json => printer.json(&report)?,
        _ => {
            let mut out = String::new();
            if let Some(r) = &report.cluster {
                render_text(&mut out, r);
            }
            printer.raw(out.as_bytes())?;
            if matched {
                printer.line(format_args!("matched after {attempts} attempts"));
            } else {
                printer.line(format_args!(
                    "timed out after {attempts} attempts ({}): the key does not match yet{}",
                    humantime::format_duration(args.timeout),
                    report
                        .last_error
                        .as_deref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(Exit::problem_if(!matched))
}

// ---------------------------------------------------------------- check-log

#[derive(Serialize)]
struct LogOutput<'a> {
    file: &'a Path,
    cluster: &'a str,
    resource_group: Option<&'a str>,
    #[serde(flatten)]
    report: joblog::LogReport,
}

fn run_check_log(printer: &Printer, args: CheckLogArgs) -> anyhow::Result<Exit> {
    printer.require("storage check-log", &[OutputFormat::Text, OutputFormat::Json])?;
    if args.cluster.trim().is_empty() {
        bail!("--cluster is empty");
    }
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{}: the log is empty", args.file.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let report = joblog::check(&text, &args.cluster, args.resource_group.as_deref());
    let ok = report.ok;
    match printer.format() {
        OutputFormat::Json => printer.json(&LogOutput {
            file: &args.file,
            cluster: &args.cluster,
            resource_group: args.resource_group.as_deref(),
            report,
        })?,
        _ => {
            for (i, p) in report.phrases.iter().enumerate() {
                match p.line {
                    Some(l) => printer.line(format_args!("{}. line {l}: {}", i + 1, p.phrase)),
                    None => printer.line(format_args!("{}. missing: {}", i + 1, p.phrase)),
                }
            }
            match &report.first_missing {
                None => printer.line(format_args!(
                    "ok: all {} phrases in order; names cluster {}{}",
                    joblog::PHRASES.len(),
                    args.cluster,
                    args.resource_group
                        .as_deref()
                        .map(|g| format!(" and resource group {g}"))
                        .unwrap_or_default()
                )),
                Some(m) => printer.line(format_args!("problem: {m}")),
            }
        }
    }
    Ok(Exit::problem_if(!ok))
}
