//! `rekey health`: the auth health gate, against a live Prometheus or saved
//! responses. [`GateArgs`] and [`GateArgs::evaluate`] are what a rotation's
//! `--health-gate` flattens into its own options and calls.

use crate::cli::output::{OutputFormat, Printer};
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
/// Exits 0 when healthy, 1 when degraded or worse, 2 when the answer cannot
/// be had (Prometheus unreachable, a malformed response, a metric with no
/// series, a bad rules file): never "healthy" by default.
///
/// Example:
///   rekey health --prometheus http://127.0.0.1:9090
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
    #[arg(long, value_name = "DIR")]
    pub save_responses: Option<PathBuf>,
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
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub window: String,
    /// Evaluate at this time (RFC 3339, e.g. 2026-11-23T12:00:00Z; default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Give up on a Prometheus request after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: String,
    /// Send `Authorization: Bearer` with the token read from FILE (`-` reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Send `Authorization: Bearer` with the token from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
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
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading rules {}", path.display()))?;
                Rules::parse(&text, &path.display().to_string())?
            }
        };
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
        let client = reqwest::Client::builder()
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
            let response = request.send().await.map_err(|e| fail("requesting", e))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| fail("reading the response of", e))?;
            Ok::<_, RequestError>((status, body))
        })?;
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
        Ok(body.to_vec())
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
        std::fs::read(path)
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
            "queried {} for {} rules",
            http.base,
            gate.rules.rules.len()
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
        printer.line(format_args!(
            "{:<width$}  {:<8}  {}",
            rule.name,
            rule.status.to_string().to_uppercase(),
            rule.summary
        ));
        if let Some(title) = &rule.incident {
            printer.line(format_args!("{:<width$}  incident: {title}", ""));
        }
        for e in &rule.escalations {
            printer.line(format_args!("{:<width$}  escalate: {e}", ""));
        }
    }
    let what = match report.verdict {
        Status::Healthy => "healthy",
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
        assert_eq!(source.files.len(), 9);
        let mut twice = files.clone();
        twice.push(PathBuf::from("e/iam-5xx.total.json"));
        let err = FileSource::new(&twice, &queries).err().unwrap().to_string();
        assert_eq!(
            err,
            "--from-file: query `iam-5xx.total` is answered twice: d/iam-5xx.total.json and e/iam-5xx.total.json"
        );
    }
}
