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
    /// The provider of every cluster, which decides its key field (default:
    /// the secret's `provider` label, else `[VPC] provider_type`, else the field that is set).
    #[arg(long, value_enum)]
    pub provider: Option<crate::storage::slclient::Provider>,
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

/// How to reach an etcd that serves the source of truth over TLS, with a
/// client certificate and/or a user and password, as production runs it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
    /// The CA certificate (PEM) that signed etcd's server certificate (etcd+https://).
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// The client certificate (PEM) for etcd's client-certificate auth; needs --etcd-key.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// The etcd user for user/password auth; the password comes from --etcd-password-file or --etcd-password-env.
    #[arg(long, value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// Read the etcd user's password from FILE (`-` reads stdin).
    #[arg(
        long,
        value_name = "FILE",
        requires = "etcd_user",
        conflicts_with = "etcd_password_env"
    )]
    pub etcd_password_file: Option<PathBuf>,
    /// Read the etcd user's password from the environment variable NAME.
    #[arg(long, value_name = "NAME", requires = "etcd_user")]
    pub etcd_password_env: Option<String>,
}

impl EtcdArgs {
    fn any(&self) -> bool {
        self.etcd_cacert.is_some() || self.etcd_cert.is_some() || self.etcd_user.is_some()
    }
}

/// Reads a small PEM file (certificates and keys are a few KB).
fn read_pem(path: &Path, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(1024 * 1024 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if bytes.len() > 1024 * 1024 {
        bail!("{what} {}: larger than 1 MiB, not a PEM file", path.display());
    }
    Ok(bytes)
}

/// Loads and indexes the source of truth from a file or etcd.
fn load_truth(source: &str, etcd_args: &EtcdArgs) -> anyhow::Result<TruthIndex> {
    let records = if etcd::is_etcd(source) {
        let url = etcd::parse_url(source)?;
        let client = etcd_client(&url, etcd_args)?;
        fetch_etcd(&url, client, etcd_args).with_context(|| format!("reading source of truth from {source}"))?
    } else {
        if etcd_args.any() {
            bail!("--etcd-* options apply to an etcd source of truth (--truth etcd+https://HOST:PORT/PREFIX)");
        }
        let bytes = Zeroizing::new(read_bounded(Path::new(source), MAX_TRUTH_FILE)?);
        truth::parse_records(&bytes, source)?
    };
    Ok(TruthIndex::new(records)?)
}

/// The largest truth file read: a record is about 1 KB; a million of them fit.
const MAX_TRUTH_FILE: u64 = 1024 * 1024 * 1024;

/// Reads a file of at most `limit` bytes; a larger one is an error, never an allocation abort.
pub(super) fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{}: larger than the limit of {} MiB", path.display(), limit >> 20);
    }
    Ok(bytes)
}

fn etcd_client(url: &etcd::EtcdUrl, args: &EtcdArgs) -> anyhow::Result<reqwest::Client> {
    let tls = url.endpoint.starts_with("https://");
    if !tls && (args.etcd_cacert.is_some() || args.etcd_cert.is_some()) {
        bail!("--etcd-cacert and --etcd-cert need a TLS address: etcd+https://HOST:PORT/PREFIX");
    }
    let loopback = ["http://127.", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|p| url.endpoint.starts_with(p));
    if !tls && !loopback && args.etcd_user.is_some() {
        bail!("--etcd-user would send the password in clear text: use etcd+https://HOST:PORT/PREFIX");
    }
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        // The auth token goes with every request: never to another place.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &args.etcd_cacert {
        let pem = read_pem(path, "--etcd-cacert")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--etcd-cacert {}: not a PEM certificate", path.display()))?;
        if certs.is_empty() {
            bail!("--etcd-cacert {}: holds no certificate", path.display());
        }
        builder = builder.tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&args.etcd_cert, &args.etcd_key) {
        let mut pem = read_pem(cert, "--etcd-cert")?;
        pem.push(b'\n');
        pem.extend_from_slice(&read_pem(key, "--etcd-key")?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
            anyhow::anyhow!(
                "--etcd-cert {} / --etcd-key {}: not a PEM certificate and private key",
                cert.display(),
                key.display()
            )
        })?;
        builder = builder.identity(identity);
    }
    builder.build().context("building the etcd client")
}

/// Reads a response body of at most `limit` bytes.
async fn bounded_body(mut resp: reqwest::Response, limit: usize, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {what}"))? {
        if body.len() + chunk.len() > limit {
            bail!("{what}: the answer is larger than the limit of {} MiB", limit >> 20);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn fetch_etcd(url: &etcd::EtcdUrl, client: reqwest::Client, args: &EtcdArgs) -> anyhow::Result<Vec<Record>> {
    let password = match (
        &args.etcd_user,
        SecretSource::from_options(args.etcd_password_file.as_deref(), args.etcd_password_env.as_deref()),
    ) {
        (Some(_), None) => bail!("--etcd-user needs a password: use --etcd-password-file or --etcd-password-env"),
        (Some(_), Some(source)) => {
            let raw = source.read()?;
            let mut text: &[u8] = &raw;
            if let Some(rest) = text.strip_suffix(b"\n") {
                text = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            let text = std::str::from_utf8(text)
                .with_context(|| format!("the etcd password from {} is not UTF-8", source.describe()))?;
            Some(Zeroizing::new(text.to_owned()))
        }
        (None, _) => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let token = match (&args.etcd_user, &password) {
            (Some(user), Some(password)) => {
                let endpoint = format!("{}/v3/auth/authenticate", url.endpoint);
                let resp = client
                    .post(&endpoint)
                    .json(&etcd::authenticate_request(user, password))
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("POST {endpoint}: {}", e.without_url()))?;
                let status = resp.status();
                let body = bounded_body(resp, 1024 * 1024, &endpoint).await?;
                if !status.is_success() {
                    bail!(
                        "POST {endpoint}: HTTP {status}: etcd refused user {} (wrong user or password, or auth not enabled){}",
                        crate::health::printable(user),
                        etcd_error_text(&body)
                    );
                }
                Some(etcd::parse_token(&body)?)
            }
            _ => None,
        };
        let endpoint = format!("{}/v3/kv/range", url.endpoint);
        let mut start = url.prefix.clone();
        let mut records = Vec::new();
        let mut pages = 0usize;
        loop {
            pages += 1;
            if pages > etcd::MAX_PAGES {
                bail!(
                    "POST {endpoint}: more than {} pages of {} keys: refusing to read on (an endpoint answering `more: true` forever?)",
                    etcd::MAX_PAGES,
                    etcd::PAGE_SIZE
                );
            }
            let mut request = client.post(&endpoint).json(&etcd::range_request(&start, &url.prefix, etcd::PAGE_SIZE));
            if let Some(token) = &token {
                let mut value = reqwest::header::HeaderValue::from_str(token)
                    .map_err(|_| anyhow::anyhow!("the etcd token is not a valid HTTP header value"))?;
                value.set_sensitive(true);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let resp = request
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("POST {endpoint}: {}", error_chain(&e.without_url())))?;
            let status = resp.status();
            let body = bounded_body(resp, etcd::MAX_BODY, &format!("POST {endpoint}")).await?;
            if !status.is_success() {
                bail!("POST {endpoint}: HTTP {status}{}", etcd_error_text(&body));
            }
            let page = etcd::parse_response(&body)?;
            let Some(last) = page.kvs.last().map(|(k, _)| k.clone()) else {
                break;
            };
            if last < start {
                bail!("POST {endpoint}: the answer goes backwards (a key before the one asked from)");
            }
            for (k, v) in &page.kvs {
                let v = Zeroizing::new(v.clone());
                let origin = format!("etcd key {}", crate::health::printable(&String::from_utf8_lossy(k)));
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

/// Returns an error and its causes on one line (TLS errors hide in the causes).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Returns `: <message>` from an etcd gateway error body, escaped, or nothing.
fn etcd_error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .map(|m| format!(": {}", crate::health::printable(&m)))
        .unwrap_or_default()
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
                (&mut reader)
                    .take(kube::MAX_YAML as u64 + 1)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {shown}"))?;
                if bytes.len() > kube::MAX_YAML {
                    bail!("{shown}: {}", kube::SecretError::TooLarge);
                }
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
    if let (Some(p), Some(from)) = (r.provider, &r.provider_from) {
        let _ = write!(out, "  provider {} ({from})", p.name());
    }
    out.push('\n');
    if let Some(s) = &r.sdnlb {
        let _ = writeln!(
            out,
            "  sdnlb-config service_apikey: {} {}{}{}",
            s.status,
            fp(s.fingerprint),
            if s.encrypted { " (decrypted)" } else { "" },
            s.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
        );
    }
    if let Some(o) = &r.other_field {
        let _ = writeln!(
            out,
            "  other field {}: {}{}",
            o.field.name(),
            fp(o.fingerprint),
            match o.agrees {
                Some(true) => ", the same key",
                Some(false) => ", a DIFFERENT key",
                None => "",
            }
        );
    }
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
