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

mod check_log;
mod diff;
mod wait;

pub use check_log::CheckLogArgs;
use check_log::run_check_log;
pub use diff::DiffArgs;
use diff::run_diff;
pub use wait::WaitArgs;
use wait::run_wait;

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

pub(super) fn fp(f: Option<Fingerprint>) -> String {
    f.map_or_else(|| "-".to_owned(), |f| f.to_string())
}

pub(super) fn render_text(out: &mut String, r: &ClusterReport) {
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
