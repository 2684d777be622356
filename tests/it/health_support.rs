//! A real Prometheus holding one time slot per health scenario, started once
//! per test binary.
//!
//! Each scenario is written as an OpenMetrics file, backfilled with
//! `promtool tsdb create-blocks-from openmetrics`, and served by
//! `prometheus` on 127.0.0.1. Scenario `k` has one hour of samples starting
//! at `BASE + k * 2h` (BASE: an even UTC hour a day ago, so the blocks are
//! well out of the head and never overlap) and is evaluated at the end of
//! that hour with a one-hour window, so scenarios never see each other.
//!
//! The server is started by a keeper thread that lives as long as the test
//! process: `PR_SET_PDEATHSIG` kills the server when that thread (and so the
//! process) dies, even on a panic or a SIGKILL of the test binary.

use crate::support::{content_length, die_with_spawning_thread, free_port};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The health scenarios, each in its own time slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Everything works; a few jwt failures stay below the alert threshold.
    Healthy,
    /// jwt fails every minute, token succeeds.
    JwtFailing,
    /// jwt and token both fail every minute.
    BothFailing,
    /// IAM identity methods answer 5xx.
    IamIdentity5xx,
    /// IAM access-management methods answer 5xx.
    IamAccess5xx,
    /// 4 refresh failures within 3 minutes on one index, 3 on another.
    RefreshBurst,
    /// No samples at all.
    Empty,
    /// IAM identity methods spelled in lower case answer 5xx.
    IamLowercase,
    /// jwt fails every minute; token worked until minute 56, then failed 4 times.
    TokenActivelyFailing,
    /// jwt and token failed every minute for the first 11 minutes, then jwt worked.
    FailuresStopped,
    /// The RedHat auth metric is not scraped at all, while IAM identity calls fail.
    MissingMetric,
}

const ALL: [Scenario; 11] = [
    Scenario::Healthy,
    Scenario::JwtFailing,
    Scenario::BothFailing,
    Scenario::IamIdentity5xx,
    Scenario::IamAccess5xx,
    Scenario::RefreshBurst,
    Scenario::Empty,
    Scenario::IamLowercase,
    Scenario::TokenActivelyFailing,
    Scenario::FailuresStopped,
    Scenario::MissingMetric,
];

const SLOT: i64 = 2 * 3600;
const HOUR: i64 = 3600;
const STEP: i64 = 15;

/// The running Prometheus shared by the tests.
pub struct Prom {
    pub url: String,
    base: i64,
}

static PROM: OnceLock<Result<Prom, String>> = OnceLock::new();

/// Returns the shared Prometheus, starting it on first use.
pub fn prom() -> &'static Prom {
    match PROM.get_or_init(start) {
        Ok(p) => p,
        Err(e) => panic!("starting Prometheus for the health tests: {e}"),
    }
}

impl Prom {
    /// Returns the evaluation time of a scenario, as RFC 3339 for `--at`.
    pub fn at(&self, s: Scenario) -> String {
        let t = self.slot_start(s) + HOUR;
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn slot_start(&self, s: Scenario) -> i64 {
        let k = ALL.iter().position(|x| *x == s).unwrap() as i64;
        self.base + k * SLOT
    }
}

/// One OpenMetrics family: name, type and its series (labels, samples in time order).
struct Family {
    name: &'static str,
    kind: &'static str,
    series: Vec<(String, Vec<(i64, f64)>)>,
}

/// A gauge written once per attempt: one sample of value 1 at each time.
fn attempts(labels: &str, times: impl IntoIterator<Item = i64>) -> (String, Vec<(i64, f64)>) {
    (labels.to_owned(), times.into_iter().map(|t| (t, 1.0)).collect())
}

/// A counter scraped every 15 s over the hour, increased by one at each of `events`.
fn counter(labels: &str, start: i64, events: &[i64]) -> (String, Vec<(i64, f64)>) {
    let samples = (0..=HOUR / STEP)
        .map(|i| {
            let t = start + i * STEP;
            let count = events.iter().filter(|e| start + **e <= t).count();
            (t, count as f64)
        })
        .collect();
    (labels.to_owned(), samples)
}

fn minutes(from: i64, to: i64, every: i64) -> Vec<i64> {
    (from..to).step_by(every as usize).map(|m| m * 60).collect()
}

/// Returns the OpenMetrics text of one scenario.
pub fn openmetrics(s: Scenario, start: i64) -> String {
    let at = |offsets: Vec<i64>| offsets.into_iter().map(move |o| start + o);
    let every_minute = || minutes(0, 60, 1);
    let mut auth = Vec::new();
    match s {
        Scenario::Healthy => {
            auth.push(attempts(r#"method="jwt",status="success""#, at(every_minute())));
            // 9 failures within 15 minutes: below the alert's 10.
            auth.push(attempts(r#"method="jwt",status="failed""#, at(minutes(20, 29, 1))));
            auth.push(attempts(r#"method="token",status="success""#, at(minutes(20, 29, 1))));
        }
        Scenario::JwtFailing => {
            auth.push(attempts(r#"method="jwt",status="failed""#, at(every_minute())));
            auth.push(attempts(r#"method="token",status="success""#, at(every_minute())));
        }
        Scenario::BothFailing => {
            auth.push(attempts(r#"method="jwt",status="failed""#, at(every_minute())));
            auth.push(attempts(r#"method="token",status="failed""#, at(every_minute())));
        }
        Scenario::TokenActivelyFailing => {
            auth.push(attempts(r#"method="jwt",status="failed""#, at(every_minute())));
            auth.push(attempts(r#"method="token",status="success""#, at(minutes(0, 56, 1))));
            auth.push(attempts(r#"method="token",status="failed""#, at(minutes(56, 60, 1))));
        }
        Scenario::FailuresStopped => {
            auth.push(attempts(r#"method="jwt",status="failed""#, at(minutes(0, 11, 1))));
            auth.push(attempts(r#"method="token",status="failed""#, at(minutes(0, 11, 1))));
            auth.push(attempts(r#"method="jwt",status="success""#, at(minutes(11, 60, 1))));
        }
        Scenario::Empty | Scenario::MissingMetric => {}
        _ => auth.push(attempts(r#"method="jwt",status="success""#, at(every_minute()))),
    }
    let mut api = Vec::new();
    if s != Scenario::Empty {
        for method in [
            "iam.NewUserAPIKey",
            "iam.IsUserAPIKeyNotFound",
            "iam.IsAuthorized",
            "iam.CreateUserPolicy",
            "iam.DeleteResourcePolicies",
            "iam.ResourceRoles",
        ] {
            api.push(counter(
                &format!(r#"method="{method}",rc="200""#),
                start,
                &minutes(0, 60, 1),
            ));
        }
        // 5xx from a method that is not an IAM call: never counted.
        api.push(counter(r#"method="etcd.Put",rc="503""#, start, &minutes(0, 60, 1)));
    }
    match s {
        Scenario::IamIdentity5xx => {
            api.push(counter(
                r#"method="iam.NewUserAPIKey",rc="500""#,
                start,
                &minutes(10, 30, 2),
            ));
            api.push(counter(
                r#"method="iam.IsUserAPIKeyNotFound",rc="502""#,
                start,
                &minutes(12, 30, 6),
            ));
            api.push(counter(r#"method="iam.IsAuthorized",rc="500""#, start, &[]));
        }
        Scenario::IamLowercase => {
            api.push(counter(
                r#"method="iam.newuserapikey",rc="500""#,
                start,
                &minutes(10, 30, 2),
            ));
        }
        Scenario::MissingMetric => {
            api.push(counter(
                r#"method="iam.NewUserAPIKey",rc="503""#,
                start,
                &minutes(40, 50, 1),
            ));
        }
        Scenario::IamAccess5xx => {
            api.push(counter(
                r#"method="iam.IsAuthorized",rc="503""#,
                start,
                &minutes(5, 40, 5),
            ));
            api.push(counter(
                r#"method="iam.CreateUserPolicy",rc="500""#,
                start,
                &minutes(6, 9, 1),
            ));
            api.push(counter(r#"method="iam.NewUserAPIKey",rc="500""#, start, &[]));
        }
        _ => {}
    }
    let mut refresh = Vec::new();
    if !matches!(s, Scenario::Empty | Scenario::MissingMetric) {
        refresh.push(counter(r#"index_name="quiet",account_id="a0""#, start, &[]));
    }
    if s == Scenario::RefreshBurst {
        // 4 failures within 90 seconds: a burst.
        refresh.push(counter(
            r#"index_name="logs-eu",account_id="a1""#,
            start,
            &[600, 630, 660, 690],
        ));
        // 3 within 2 minutes, a fourth 20 minutes later: 4 in the hour, never 4 in 3 minutes.
        refresh.push(counter(
            r#"index_name="metrics-us",account_id="a2""#,
            start,
            &[1200, 1260, 1320, 2520],
        ));
    }
    let families = [
        Family {
            name: "armada_kubx_deployer_redhat_auth",
            kind: "gauge",
            series: auth,
        },
        Family {
            // The real metric has no `_total` suffix, which OpenMetrics
            // requires of a counter: declare it untyped.
            name: "api_response_codes",
            kind: "unknown",
            series: api,
        },
        Family {
            name: "auth_key_refresh_failures",
            kind: "counter",
            series: refresh,
        },
    ];
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.series.is_empty()) {
        writeln!(out, "# TYPE {} {}", f.name, f.kind).unwrap();
        let sample_name = if f.kind == "counter" {
            format!("{}_total", f.name)
        } else {
            f.name.to_owned()
        };
        for (labels, samples) in &f.series {
            for (t, v) in samples {
                writeln!(out, "{sample_name}{{{labels}}} {v} {t}").unwrap();
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Returns true when GET `path` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}

/// Removes data directories left by test processes that no longer run.
fn clean_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(pid) = name.parse::<u32>()
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Result<Prom, String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("health-prometheus");
    clean_stale(&root);
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let base = now / SLOT * SLOT - 24 * 3600;
    for (k, s) in ALL.iter().enumerate() {
        if *s == Scenario::Empty {
            continue;
        }
        let file = dir.join(format!("{s:?}.om"));
        std::fs::write(&file, openmetrics(*s, base + k as i64 * SLOT)).map_err(|e| e.to_string())?;
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&data)
            .output()
            .map_err(|e| format!("running promtool (install Debian's prometheus package): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "promtool failed on {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").map_err(|e| e.to_string())?;
    let mut last_err = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        let (config, data, log) = (config.clone(), data.clone(), dir.join("prometheus.log"));
        // The keeper thread forks the server and waits on it for the rest of
        // the process's life; PR_SET_PDEATHSIG is tied to this thread.
        std::thread::spawn(move || {
            let log = match std::fs::File::create(&log) {
                Ok(f) => f,
                Err(e) => return tx.send(Err(e.to_string())),
            };
            let mut cmd = Command::new("prometheus");
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=3650d")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            die_with_spawning_thread(&mut cmd);
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    // Tells the waiting test that the server is gone (e.g. its port was taken).
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    tx.send(Err(format!("prometheus exited: {status}")))
                }
                Err(e) => tx.send(Err(format!("starting prometheus: {e}"))),
            }
        });
        let _pid = rx.recv().map_err(|e| e.to_string())??;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if rx.try_recv().is_ok() {
                break;
            }
            if http_ok(port, "/-/ready") {
                return Ok(Prom {
                    url: format!("http://127.0.0.1:{port}"),
                    base,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last_err = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    }
    Err(format!("prometheus did not become ready; its log:\n{last_err}"))
}

/// A request as a [`hostile`] server saw it: the head (request line and
/// headers) and the body.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

/// The requests a [`hostile`] server received, in order.
pub type SeenLog = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

/// Starts a server on 127.0.0.1 that plays what no real peer does on demand
/// (an endless body, a redirect elsewhere, terminal escapes): `answer` gets
/// each request and writes the raw response. Returns its port and the log
/// of requests. Its thread lives as long as the test binary.
pub fn hostile(
    answer: impl Fn(&Seen, &mut TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
) -> (u16, SeenLog) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: SeenLog = Default::default();
    let seen = log.clone();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (seen, answer) = (seen.clone(), answer.clone());
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => buf.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let length = content_length(&head);
                let mut body = vec![0u8; length.min(1 << 20)];
                if stream.read_exact(&mut body).is_err() {
                    return;
                }
                let request = Seen { head, body };
                seen.lock().unwrap().push(request.clone());
                let _ = answer(&request, &mut stream);
            });
        }
    });
    (port, log)
}

/// Writes a complete HTTP/1.1 response that closes the connection.
pub fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Writes a 200 response whose body never ends (until the client hangs up).
pub fn endless(stream: &mut TcpStream, content_type: &str, start: &[u8], filler: &[u8]) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(start)?;
    let chunk = filler.repeat((64 * 1024 / filler.len().max(1)).max(1));
    loop {
        stream.write_all(&chunk)?;
    }
}
