//! `rekey health`: the auth health gate, against a live Prometheus or saved
//! responses. A command that gates on it (`rotate --health-gate`, `keys
//! retire --health-gate`) flattens [`GateOptions`] into its own options and
//! calls `GateOptions::gate_args().evaluate(now)`.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::secret_input::SecretSource;
use crate::exit::Exit;
use crate::fsx::{self, WriteSet};
use crate::health::{self, Query, QueryKind, Report, Rules, Source, Status};
use crate::secret::ApiKey;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Read the auth health signals in Prometheus and give a verdict.
///
/// Says what an on-call engineer would conclude: healthy, degraded or
/// outage, whom to escalate to, and whether to open an incident.
///
/// Evaluates each rule (default: the built-in rules/health.toml) over the
/// window ending at --at (default: now):
///   redhat-auth       primary (jwt) / fallback (token) auth: healthy,
///                     degraded (jwt fails, token works: no incident) or
///                     outage (both fail: open an incident)
///   iam-5xx           IAM 5xx split into identity and access management,
///                     each with its escalation target
///   auth-key-refresh  any index with 4 or more refresh failures within 3m
///
/// A rule whose metric has no series gets the verdict `no_data` (or healthy,
/// when the rule says absence means no failures); the other rules' verdicts
/// are printed all the same.
///
/// Exits 0 when healthy, 1 when degraded, an outage or no_data, 2 when the
/// answer cannot be had (Prometheus unreachable, a malformed response, a bad
/// rules file): never "healthy" by default.
///
/// With --watch, evaluates every --interval and prints each change of a
/// verdict, until --until is reached (exit 0) or --timeout passes (exit as
/// the last verdict).
///
/// Example:
///   rekey health --prometheus http://127.0.0.1:9090
///   rekey health --prometheus http://127.0.0.1:9090 --watch --until healthy --timeout 30m
///   rekey health --prometheus http://127.0.0.1:9090 --at 2026-11-23T12:00:00Z \
///       --window 2h --output json --save-responses saved
///   rekey health --from-file saved/*.json --at 2026-11-23T12:00:00Z
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub gate: GateArgs,
    /// Evaluate saved Prometheus API responses instead of querying a server:
    /// one file per query, named `<query>.json` (as --save-responses writes them).
    #[arg(long = "from-file", value_name = "FILE", num_args = 1.., conflicts_with_all = ["prometheus", "save_responses"])]
    pub from_file: Vec<PathBuf>,
    /// Also write each response to DIR/<query>.json (for --from-file).
    #[arg(long, value_name = "DIR", conflicts_with = "watch")]
    pub save_responses: Option<PathBuf>,
    /// Keep evaluating (at the current time) and print each change of verdict.
    #[arg(long, conflicts_with_all = ["from_file", "at"])]
    pub watch: bool,
    /// With --watch: time between evaluations.
    #[arg(long, value_name = "DURATION", default_value = "1m", requires = "watch", value_parser = crate::cli::duration::parse)]
    pub interval: Duration,
    /// With --watch: stop (exit 0) once the overall verdict is this.
    #[arg(long, value_name = "VERDICT", requires = "watch")]
    pub until: Option<UntilVerdict>,
    /// With --watch: stop after this long.
    #[arg(long = "timeout", value_name = "DURATION", default_value = "30m", requires = "watch", value_parser = crate::cli::duration::parse)]
    pub watch_timeout: Duration,
}

/// The verdict `--watch --until` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UntilVerdict {
    /// Every rule healthy.
    Healthy,
}

/// The options of the health gate, shared with commands that gate on it.
#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// The Prometheus server's base URL (`http://host:9090`, or with a path prefix).
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// The rules file (default: the built-in rules/health.toml).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// How far back from --at to look.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::cli::duration::text)]
    pub window: String,
    /// Evaluate at this time (RFC 3339, e.g. 2026-11-23T12:00:00Z; default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Give up on a Prometheus request after this long.
    #[arg(long = "query-timeout", value_name = "DURATION", default_value = "30s", value_parser = crate::cli::duration::text)]
    pub timeout: String,
    /// Send `Authorization: Bearer` with the token read from FILE (`-` reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Send `Authorization: Bearer` with the token from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
}

/// The health gate's options as another command (a rotation, a key
/// retirement) takes them: `#[command(flatten)] gate: GateOptions`, then
/// [`GateOptions::gate_args`] when the gate is asked for. The flags carry a
/// `health-` prefix so they do not collide with the command's own.
#[derive(Debug, Clone, clap::Args)]
pub struct GateOptions {
    /// The Prometheus the health gate queries.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// The health gate's rules file (default: the built-in rules).
    #[arg(long, value_name = "FILE")]
    pub health_rules: Option<PathBuf>,
    /// How far back the health gate looks.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::cli::duration::text)]
    pub health_window: String,
    /// Evaluate the health gate at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub health_at: Option<String>,
    /// Give up on a Prometheus request of the health gate after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::duration::text)]
    pub health_timeout: String,
    /// The health gate's bearer token, read from FILE (`-` reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "health_token_env")]
    pub health_token_file: Option<PathBuf>,
    /// The health gate's bearer token, from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub health_token_env: Option<String>,
}

impl GateOptions {
    /// Returns the gate's options in the form [`GateArgs::evaluate`] takes.
    pub fn gate_args(&self) -> GateArgs {
        GateArgs {
            prometheus: self.prometheus.clone(),
            rules: self.health_rules.clone(),
            window: self.health_window.clone(),
            at: self.health_at.clone(),
            timeout: self.health_timeout.clone(),
            token_file: self.health_token_file.clone(),
            token_env: self.health_token_env.clone(),
        }
    }
}

/// The largest rules file read (the shipped one is a few KB).
const MAX_RULES_FILE: usize = 1024 * 1024;

/// Reads at most `limit` bytes of a file; a larger file is an error, never an allocation.
fn read_bounded(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        anyhow::bail!("larger than the limit of {} MiB", limit >> 20);
    }
    Ok(bytes)
}

/// The longest window accepted: beyond any Prometheus retention in use.
const MAX_WINDOW: Duration = Duration::from_secs(366 * 86400);

/// The gate's inputs, read and checked.
pub struct Gate {
    pub rules: Rules,
    pub at: DateTime<Utc>,
    pub window: Duration,
}

impl GateArgs {
    /// Reads the rules and checks the times; `now` is used when --at is absent.
    pub fn prepare(&self, now: DateTime<Utc>) -> anyhow::Result<Gate> {
        let rules = match &self.rules {
            None => Rules::defaults()?,
            Some(path) => {
                let bytes =
                    read_bounded(path, MAX_RULES_FILE).with_context(|| format!("reading rules {}", path.display()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("reading rules {}: not UTF-8", path.display()))?;
                Rules::parse(&text, &path.display().to_string())?
            }
        };
        // The token is read when Prometheus is asked; its source is checked
        // now, so that a gate after a rotation cannot fail for a typo.
        if let Some(name) = &self.token_env
            && std::env::var_os(name).is_none()
        {
            anyhow::bail!("the bearer token's environment variable {name} is not set");
        }
        if let Some(path) = &self.token_file
            && path.as_os_str() != "-"
            && !path.is_file()
        {
            anyhow::bail!("the bearer token file {} does not exist", path.display());
        }
        let window = health::rules::parse_duration(&self.window).map_err(|p| anyhow::anyhow!("--window: {p}"))?;
        if window > MAX_WINDOW {
            anyhow::bail!("--window: `{}` is longer than the limit of 366 days", self.window);
        }
        let at = match &self.at {
            None => now,
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    anyhow::anyhow!("--at: `{text}` is not an RFC 3339 time ({e}), e.g. 2026-11-23T12:00:00Z")
                })?
                .with_timezone(&Utc),
        };
        Ok(Gate { rules, at, window })
    }

    /// Returns the Prometheus source these options describe.
    pub fn http_source(&self) -> anyhow::Result<HttpSource> {
        let url = self
            .prometheus
            .as_deref()
            .context("no Prometheus given: use --prometheus URL")?;
        let timeout = health::rules::parse_duration(&self.timeout).map_err(|p| anyhow::anyhow!("--timeout: {p}"))?;
        let token = match SecretSource::from_options(self.token_file.as_deref(), self.token_env.as_deref()) {
            None => None,
            Some(source) => {
                let raw = source.read()?;
                Some(
                    ApiKey::parse(raw)
                        .with_context(|| format!("bearer token from {} is not usable", source.describe()))?,
                )
            }
        };
        HttpSource::new(url, token, timeout)
    }

    /// Runs the gate against --prometheus: what `rotate --health-gate` calls
    /// after publishing. `now` is the caller's clock reading.
    pub fn evaluate(&self, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let gate = self.prepare(now)?;
        let source = self.http_source()?;
        Ok(health::evaluate(&gate.rules, &source, gate.at, gate.window)?)
    }
}

/// Queries a live Prometheus over its HTTP API.
pub struct HttpSource {
    base: Url,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    token: Option<ApiKey>,
}

impl HttpSource {
    /// Returns a source for the server at `url`.
    pub fn new(url: &str, token: Option<ApiKey>, timeout: Duration) -> anyhow::Result<HttpSource> {
        let base = Url::parse(url).map_err(|e| anyhow::anyhow!("--prometheus: `{url}` is not a URL ({e})"))?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("--prometheus: `{url}` is not an http or https URL");
        }
        if !base.username().is_empty() || base.password().is_some() {
            anyhow::bail!(
                "--prometheus: the URL carries credentials, which the command line would show to every user; use --token-file or --token-env"
            );
        }
        if base.query().is_some() || base.fragment().is_some() {
            anyhow::bail!("--prometheus: `{url}` has a query or fragment; give the server's base URL");
        }
        // Never hand the bearer token to another origin: reqwest drops
        // `Authorization` on a change of host or port, not of scheme, so
        // a redirect to another scheme, host or port is refused outright.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else if same_origin {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .user_agent(concat!("rekey/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        Ok(HttpSource {
            base,
            client,
            runtime,
            token,
        })
    }

    fn endpoint(&self, name: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["api", "v1", name]);
        }
        url
    }
}

fn unix(t: &DateTime<Utc>) -> String {
    format!("{}.{:03}", t.timestamp(), t.timestamp_subsec_millis())
}

/// A failed request: the endpoint (without the query string) and why.
#[derive(Debug, thiserror::Error)]
#[error("{what} {url}")]
struct RequestError {
    what: &'static str,
    url: String,
    #[source]
    source: Option<reqwest::Error>,
}

impl Source for HttpSource {
    fn fetch(&self, query: &Query) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let (endpoint, params) = match &query.kind {
            QueryKind::Instant { time } => ("query", vec![("query", query.promql.clone()), ("time", unix(time))]),
            QueryKind::Range { start, end, step } => (
                "query_range",
                vec![
                    ("query", query.promql.clone()),
                    ("start", unix(start)),
                    ("end", unix(end)),
                    ("step", format!("{}", step.as_secs())),
                ],
            ),
        };
        let url = self.endpoint(endpoint);
        let shown = url.to_string();
        let fail = |what: &'static str, e: reqwest::Error| RequestError {
            what,
            url: shown.clone(),
            source: Some(e.without_url()),
        };
        tracing::debug!(query = %query.name, promql = %query.promql, "GET {shown}");
        let mut request = self.client.get(url.clone()).query(&params);
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| "the bearer token is not a valid HTTP header value")?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let (status, body) = self.runtime.block_on(async {
            let mut response = request.send().await.map_err(|e| fail("requesting", e))?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| fail("reading the response of", e))? {
                if body.len() + chunk.len() > health::prom::MAX_BODY {
                    return Err(RequestError {
                        what: "the answer is larger than the limit of 16 MiB from",
                        url: shown.clone(),
                        source: None,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, RequestError>((status, body))
        })?;
        if status.is_redirection() {
            return Err(Box::new(RequestError {
                what: "redirected to another origin (scheme, host or port), which is not followed: the bearer token stays with",
                url: format!("{shown} (HTTP {status})"),
                source: None,
            }));
        }
        // Prometheus answers errors (bad query, timeout) with a JSON body
        // that names them; pass it on. Anything else is not Prometheus.
        if !status.is_success() {
            let is_api_error = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("error"));
            if !is_api_error {
                return Err(Box::new(RequestError {
                    what: match status.as_u16() {
                        401 | 403 => "not authorized (HTTP 401/403) by",
                        404 => "not found (HTTP 404): is this Prometheus?",
                        _ => "HTTP error from",
                    },
                    url: format!("{shown} (HTTP {status})"),
                    source: None,
                }));
            }
        }
        Ok(body)
    }
}

/// Answers queries from saved response files named `<query>.json`.
pub struct FileSource {
    files: BTreeMap<String, PathBuf>,
}

impl FileSource {
    /// Maps files to the queries the rules need; every query must have
    /// exactly one file and every file must answer a query.
    pub fn new(files: &[PathBuf], queries: &[Query]) -> anyhow::Result<FileSource> {
        let names: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
        let mut map = BTreeMap::new();
        for path in files {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(name) = file_name.strip_suffix(".json").filter(|n| names.contains(n)) else {
                anyhow::bail!(
                    "--from-file {}: the file name does not name a query of the rules; expected <query>.json with a query among: {}",
                    path.display(),
                    names.join(", ")
                );
            };
            if let Some(first) = map.insert(name.to_owned(), path.clone()) {
                anyhow::bail!(
                    "--from-file: query `{name}` is answered twice: {} and {}",
                    first.display(),
                    path.display()
                );
            }
        }
        let missing: Vec<&str> = names.iter().copied().filter(|n| !map.contains_key(*n)).collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "--from-file: no saved response for {} (expected files named <query>.json)",
                missing.join(", ")
            );
        }
        Ok(FileSource { files: map })
    }
}

impl Source for FileSource {
    fn fetch(&self, query: &Query) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let path = self
            .files
            .get(&query.name)
            .ok_or_else(|| format!("no saved response for query `{}`", query.name))?;
        read_bounded(path, health::prom::MAX_BODY)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Into::into)
    }
}

/// Passes queries on and keeps every response body, to save them later.
struct Recording<'a> {
    inner: &'a dyn Source,
    bodies: RefCell<Vec<(String, Vec<u8>)>>,
}

impl Source for Recording<'_> {
    fn fetch(&self, query: &Query) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let body = self.inner.fetch(query)?;
        self.bodies.borrow_mut().push((query.name.clone(), body.clone()));
        Ok(body)
    }
}

/// Runs `rekey health`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("health", &[OutputFormat::Text, OutputFormat::Json])?;
    let gate = args.gate.prepare(Utc::now())?;
    if args.watch {
        return watch(printer, &args, &gate);
    }
    let report = if args.from_file.is_empty() {
        if args.gate.prometheus.is_none() {
            anyhow::bail!("no Prometheus given: use --prometheus URL, or --from-file FILE... for saved responses");
        }
        if let Some(dir) = &args.save_responses {
            fsx::ensure_dir(dir).with_context(|| format!("directory {} is not writable", dir.display()))?;
        }
        let http = args.gate.http_source()?;
        let recording = Recording {
            inner: &http,
            bodies: RefCell::new(Vec::new()),
        };
        let report = health::evaluate(&gate.rules, &recording, gate.at, gate.window)?;
        if let Some(dir) = &args.save_responses {
            save(dir, recording.bodies.into_inner())?;
        }
        printer.status(format_args!(
            "queried {} for {}",
            http.base,
            plural(gate.rules.rules.len(), "rule", "rules")
        ));
        report
    } else {
        let queries = health::evaluate::all_queries(&gate.rules, gate.at, gate.window);
        let source = FileSource::new(&args.from_file, &queries)?;
        health::evaluate(&gate.rules, &source, gate.at, gate.window)?
    };
    match printer.format() {
        OutputFormat::Json => printer.json(&report)?,
        _ => print_text(printer, &report),
    }
    Ok(report.exit())
}

/// One change of a verdict seen by `--watch`.
#[derive(serde::Serialize)]
struct Change<'a> {
    #[serde(serialize_with = "ser_time")]
    at: DateTime<Utc>,
    rule: &'a str,
    status: String,
    summary: &'a str,
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Evaluates until --until is reached or --timeout passes, printing each change.
fn watch(printer: &Printer, args: &Args, gate: &Gate) -> anyhow::Result<Exit> {
    if args.gate.prometheus.is_none() {
        anyhow::bail!("--watch needs --prometheus URL");
    }
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be more than 0");
    }
    let http = args.gate.http_source()?;
    let start = std::time::Instant::now();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut last_verdict: Option<String> = None;
    loop {
        let now = Utc::now();
        let result = health::evaluate(&gate.rules, &http, now, gate.window);
        let mut changes: Vec<(String, String, String)> = Vec::new();
        let exit = match &result {
            Ok(report) => {
                for rule in &report.rules {
                    let status = rule.status.to_string();
                    if seen.get(&rule.name) != Some(&status) {
                        seen.insert(rule.name.clone(), status.clone());
                        changes.push((rule.name.clone(), status, rule.summary.clone()));
                    }
                }
                let verdict = report.verdict.to_string();
                if last_verdict.as_ref() != Some(&verdict) {
                    last_verdict = Some(verdict.clone());
                    changes.push(("verdict".to_owned(), verdict, String::new()));
                }
                Some(report.exit())
            }
            Err(e) => {
                let text = health_error_text(e);
                if seen.get("error") != Some(&text) {
                    seen.insert("error".to_owned(), text.clone());
                    changes.push(("error".to_owned(), "unanswered".to_owned(), text));
                }
                None
            }
        };
        if result.is_ok() {
            seen.remove("error");
        }
        for (rule, status, summary) in &changes {
            match printer.format() {
                OutputFormat::Json => printer.line(serde_json::to_string(&Change {
                    at: now,
                    rule,
                    status: status.clone(),
                    summary,
                })?),
                _ => {
                    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    if summary.is_empty() {
                        printer.line(format_args!("{at}  {rule}: {}", status.to_uppercase()));
                    } else {
                        printer.line(health::printable(&format!(
                            "{at}  {rule}  {}  {summary}",
                            status.to_uppercase()
                        )));
                    }
                }
            }
        }
        if let (Some(UntilVerdict::Healthy), Ok(report)) = (args.until, &result)
            && report.verdict == Status::Healthy
        {
            return Ok(Exit::Ok);
        }
        let elapsed = start.elapsed();
        if elapsed
            .checked_add(args.interval)
            .is_none_or(|next| next > args.watch_timeout)
        {
            if args.until.is_some() {
                printer.status(format_args!(
                    "timed out after {}: the verdict is still {}",
                    humantime::format_duration(args.watch_timeout),
                    last_verdict.as_deref().unwrap_or("unknown")
                ));
            }
            return match (result, exit) {
                (Err(e), _) => Err(e.into()),
                (Ok(_), Some(exit)) => Ok(if args.until.is_some() {
                    Exit::problem_if(true)
                } else {
                    exit
                }),
                (Ok(_), None) => Ok(Exit::problem_if(true)),
            };
        }
        std::thread::sleep(args.interval);
    }
}

/// Returns the error's message with its causes, for a watch line.
fn health_error_text(e: &health::HealthError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn save(dir: &Path, bodies: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let mut set = WriteSet::new();
    for (name, body) in &bodies {
        set.stage(&dir.join(format!("{name}.json")), body, fsx::PUBLIC_MODE)?;
    }
    set.commit()?;
    Ok(())
}

fn print_text(printer: &Printer, report: &Report) {
    let width = report.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for rule in &report.rules {
        // Label values and summaries come from the server: escaped.
        printer.line(health::printable(&format!(
            "{:<width$}  {:<8}  {}",
            rule.name,
            rule.status.to_string().to_uppercase(),
            rule.summary
        )));
        if let Some(title) = &rule.incident {
            printer.line(format_args!("{:<width$}  incident: {title}", ""));
        }
        for e in &rule.escalations {
            printer.line(health::printable(&format!("{:<width$}  escalate: {e}", "")));
        }
    }
    let what = match report.verdict {
        Status::Healthy => "healthy",
        Status::NoData => "no_data: a rule's metric has no series, so it cannot tell",
        Status::Degraded => "degraded: a rule found a problem; no incident",
        Status::Outage => "OUTAGE: open an incident",
    };
    printer.line(format_args!(
        "verdict: {what} (window {} ending {})",
        report.window,
        report.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let plain = HttpSource::new("http://127.0.0.1:9090", None, Duration::from_secs(5)).unwrap();
        assert_eq!(plain.endpoint("query").as_str(), "http://127.0.0.1:9090/api/v1/query");
        let prefixed = HttpSource::new("https://prom.example/monitoring/", None, Duration::from_secs(5)).unwrap();
        assert_eq!(
            prefixed.endpoint("query_range").as_str(),
            "https://prom.example/monitoring/api/v1/query_range"
        );
    }

    #[test]
    fn times_are_unix_seconds_with_milliseconds() {
        let t = DateTime::from_timestamp_millis(1_795_381_200_250).unwrap();
        assert_eq!(unix(&t), "1795381200.250");
    }

    #[test]
    fn saved_files_are_matched_to_queries_by_name() {
        let rules = Rules::defaults().unwrap();
        let queries = health::evaluate::all_queries(&rules, Utc::now(), Duration::from_secs(3600));
        let files: Vec<PathBuf> = queries
            .iter()
            .map(|q| PathBuf::from(format!("d/{}.json", q.name)))
            .collect();
        let source = FileSource::new(&files, &queries).unwrap();
        assert_eq!(source.files.len(), 10);
        let mut twice = files.clone();
        twice.push(PathBuf::from("e/iam-5xx.total.json"));
        let err = FileSource::new(&twice, &queries).err().unwrap().to_string();
        assert_eq!(
            err,
            "--from-file: query `iam-5xx.total` is answered twice: d/iam-5xx.total.json and e/iam-5xx.total.json"
        );
    }
}
