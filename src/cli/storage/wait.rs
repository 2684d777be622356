//! `rekey storage wait`: poll the clusters of a region until their keys
//! match the source of truth, as the runbook waits after a reset.

use super::*;
use crate::cli::output::plural;

/// Poll clusters' storage secrets until their keys match the source of truth.
///
/// For each --context (repeatable, or one per line of --contexts-file; none:
/// kubectl's current context), runs `kubectl --context C get secret
/// storage-secret-store -n kube-system -o json` every --interval, at most
/// --concurrency clusters at a time, until every key matches or --timeout
/// passes (the runbook allows 30 minutes for an update to reach the
/// clusters of a region and resource group). Prints a status line when a
/// cluster's state changes, then one line per cluster and a summary.
///
/// Exit 0 when all match, 1 on timeout (the clusters still stale are
/// listed), 2 at once on a permanent error: an unknown context, access
/// forbidden, the secret does not exist, kubectl missing.
///
/// Example:
///   rekey storage wait --truth truth.json --decryption-key-file aes.key \
///       --contexts-file us-south-rg1.txt --interval 30s --timeout 30m
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct WaitArgs {
    /// The source of truth: a JSON file or etcd://HOST:PORT/PREFIX (etcd+https:// for TLS).
    #[arg(long, value_name = "PATH|URL")]
    pub truth: String,
    #[command(flatten)]
    pub key: DecryptionKeyArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// A kubeconfig context to wait for (repeatable).
    #[arg(long, value_name = "NAME")]
    pub context: Vec<String>,
    /// A file listing contexts, one per line (`#` comments and blank lines ignored).
    #[arg(long, value_name = "FILE")]
    pub contexts_file: Option<PathBuf>,
    /// How many clusters to poll at the same time (`--parallel` is an
    /// older name for it, still accepted).
    #[arg(long, alias = "parallel", value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// The kubectl program to run.
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    pub kubectl: PathBuf,
    /// The name shown for the cluster (one context only; default: the context, or what the secret tells).
    #[arg(long, value_name = "ID")]
    pub cluster: Option<String>,
    /// Time between polls.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::cli::duration::parse)]
    pub interval: Duration,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = crate::cli::duration::parse)]
    pub timeout: Duration,
}

/// The most contexts one wait takes (a region has hundreds of clusters, not more).
const MAX_CONTEXTS: usize = 10_000;
/// The largest contexts file read.
const MAX_CONTEXTS_FILE: u64 = 4 * 1024 * 1024;
/// The most kubectl may print for one secret.
const MAX_KUBECTL_OUTPUT: usize = 16 * 1024 * 1024;

/// Where one cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum State {
    /// The key matches the truth.
    Match,
    /// Not yet: a different key, or an error that may pass.
    Stale,
    /// An error that polling will not cure.
    Error,
}

#[derive(Serialize)]
struct ClusterWait {
    /// The context, or null for kubectl's current one.
    context: Option<String>,
    state: State,
    attempts: u32,
    last_error: Option<String>,
    report: Option<ClusterReport>,
}

impl ClusterWait {
    fn name(&self) -> String {
        self.report
            .as_ref()
            .map(|r| r.cluster.clone())
            .or_else(|| self.context.clone())
            .unwrap_or_else(|| "(current context)".to_owned())
    }

    /// One line: what the cluster's state is now.
    fn line(&self) -> String {
        match (&self.report, &self.last_error) {
            (_, Some(e)) if self.state == State::Error => format!("{}  error: {e}", self.name()),
            (Some(r), _) => format!(
                "{}  {} (actual {}, expected {})",
                r.cluster,
                r.status.name(),
                fp(r.actual_fingerprint),
                fp(r.expected_fingerprint)
            ),
            (None, Some(e)) => format!("{}  not yet: {e}", self.name()),
            (None, None) => format!("{}  not polled", self.name()),
        }
    }
}

#[derive(Serialize)]
struct WaitReport {
    elapsed_seconds: u64,
    rounds: u32,
    matched: bool,
    /// The clusters not matching when the wait ended.
    stale: Vec<String>,
    clusters: Vec<ClusterWait>,
}

/// What one poll found.
enum Poll {
    Report(Box<ClusterReport>),
    /// May pass: keep polling.
    Transient(String),
    /// Will not pass: stop.
    Permanent(String),
}

/// Returns true when kubectl's error says polling cannot help.
fn is_permanent(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    (s.contains("context") && (s.contains("does not exist") || s.contains("no context exists")))
        || s.contains("(forbidden)")
        || s.contains(" is forbidden")
        || s.contains("(notfound)")
        || (s.contains("secrets \"") && s.contains("not found"))
        || s.contains("(unauthorized)")
}

/// Runs kubectl once for `context` and verifies what it printed.
fn poll_once(
    args: &WaitArgs,
    context: Option<&str>,
    truth: &TruthIndex,
    key: Option<&DecryptionKey>,
    opts: &Options,
) -> Poll {
    let mut cmd = crate::childenv::command(&args.kubectl);
    if let Some(ctx) = context {
        cmd.arg("--context").arg(ctx);
    }
    cmd.args(["get", "secret", kube::SECRET_NAME, "-n", kube::NAMESPACE, "-o", "json"]);
    cmd.stdin(std::process::Stdio::null());
    tracing::debug!(
        "running {} {}",
        args.kubectl.display(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Poll::Permanent(format!("running {}: {e}", args.kubectl.display()));
        }
        Err(e) => return Poll::Transient(format!("running {}: {e}", args.kubectl.display())),
    };
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = crate::health::printable(err.lines().next().unwrap_or("").trim());
        let message = format!("{} exited with {}: {first}", args.kubectl.display(), out.status);
        return if is_permanent(&err) {
            Poll::Permanent(message)
        } else {
            Poll::Transient(message)
        };
    }
    if stdout.len() > MAX_KUBECTL_OUTPUT {
        return Poll::Permanent(format!("kubectl printed more than {} MiB", MAX_KUBECTL_OUTPUT >> 20));
    }
    let mut secrets = Vec::new();
    let fallback = args
        .cluster
        .clone()
        .or_else(|| context.map(str::to_owned))
        .unwrap_or_else(|| "cluster".into());
    if let Err(e) = kube::read_json::<_, std::convert::Infallible>(stdout.as_slice(), &mut |_, raw| {
        secrets.push(raw);
        Ok(())
    }) {
        return Poll::Transient(format!("kubectl output: {e}"));
    }
    let Some(raw) = secrets.pop() else {
        return Poll::Transient("kubectl printed no secret".to_owned());
    };
    let mut secret = match raw.check(|| fallback.clone()) {
        Ok(s) => s,
        Err(e) => return Poll::Transient(format!("kubectl output: {e}")),
    };
    if let Some(c) = &args.cluster {
        secret.cluster = c.clone();
    }
    match verify::verify(&secret, truth, key, opts) {
        Ok(r) => Poll::Report(Box::new(r)),
        Err(e) => Poll::Transient(e.to_string()),
    }
}

/// Reads the contexts of --context and --contexts-file, in order, without duplicates.
fn contexts(args: &WaitArgs) -> anyhow::Result<Vec<Option<String>>> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |c: &str, origin: &dyn Fn() -> String| -> anyhow::Result<()> {
        if c.is_empty() || c.chars().any(|ch| ch.is_control() || ch.is_whitespace()) || c.starts_with('-') {
            bail!("{}: `{}` is not a context name", origin(), crate::health::printable(c));
        }
        if !out.iter().any(|o| o == c) {
            out.push(c.to_owned());
        }
        Ok(())
    };
    for c in &args.context {
        add(c, &|| "--context".to_owned())?;
    }
    if let Some(path) = &args.contexts_file {
        let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_CONTEXTS_FILE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        if text.len() as u64 > MAX_CONTEXTS_FILE {
            bail!("{}: larger than the limit of 4 MiB", path.display());
        }
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                add(line, &|| format!("{} line {}", path.display(), i + 1))?;
            }
        }
        if out.is_empty() {
            bail!("{}: lists no contexts", path.display());
        }
    }
    if out.len() > MAX_CONTEXTS {
        bail!("{} contexts: more than the limit of {MAX_CONTEXTS}", out.len());
    }
    if out.len() > 1 && args.cluster.is_some() {
        bail!("--cluster names one cluster; it cannot be used with several contexts");
    }
    Ok(if out.is_empty() {
        vec![None]
    } else {
        out.into_iter().map(Some).collect()
    })
}

pub(super) fn run_wait(printer: &Printer, args: WaitArgs) -> anyhow::Result<Exit> {
    printer.require("storage wait", &[OutputFormat::Text, OutputFormat::Json])?;
    if args.key.decryption_key_file.is_none() && args.key.decryption_key_env.is_none() {
        bail!("no decryption key: use --decryption-key-file or --decryption-key-env");
    }
    if args.interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    let targets = contexts(&args)?;
    let truth = load_truth(&args.truth, &args.etcd)?;
    let key = args.key.read()?;
    let opts = Options {
        scope: args.scope.scope(),
        provider: args.scope.provider,
        ..Options::default()
    };
    let start = Instant::now();
    let mut clusters: Vec<ClusterWait> = targets
        .into_iter()
        .map(|context| ClusterWait {
            context,
            state: State::Stale,
            attempts: 0,
            last_error: None,
            report: None,
        })
        .collect();
    let total = clusters.len();
    let mut rounds = 0u32;
    let permanent = loop {
        rounds += 1;
        let pending: Vec<usize> = (0..clusters.len())
            .filter(|i| clusters[*i].state == State::Stale)
            .collect();
        let results = poll_all(&args, &clusters, &pending, &truth, key.as_ref(), &opts);
        let elapsed = start.elapsed();
        for (i, poll) in pending.into_iter().zip(results) {
            let c = &mut clusters[i];
            c.attempts += 1;
            let before = c.line();
            match poll {
                Poll::Report(r) => {
                    c.state = if r.status == Status::Match {
                        State::Match
                    } else {
                        State::Stale
                    };
                    c.last_error = None;
                    c.report = Some(*r);
                }
                Poll::Transient(e) => c.last_error = Some(e),
                Poll::Permanent(e) => {
                    c.state = State::Error;
                    c.last_error = Some(e);
                }
            }
            let now = c.line();
            if now != before || c.attempts == 1 {
                printer.status(format_args!(
                    "[{}] attempt {}: {now}",
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                    c.attempts
                ));
            }
        }
        if clusters.iter().any(|c| c.state == State::Error) {
            break true;
        }
        if clusters.iter().all(|c| c.state == State::Match)
            || elapsed
                .checked_add(args.interval)
                .is_none_or(|next| next > args.timeout)
        {
            break false;
        }
        std::thread::sleep(args.interval);
    };
    let matched = clusters.iter().all(|c| c.state == State::Match);
    let stale: Vec<String> = clusters
        .iter()
        .filter(|c| c.state != State::Match)
        .map(ClusterWait::name)
        .collect();
    let elapsed = start.elapsed();
    let report = WaitReport {
        elapsed_seconds: elapsed.as_secs(),
        rounds,
        matched,
        stale: stale.clone(),
        clusters,
    };
    match printer.format() {
        OutputFormat::Json => printer.json(&report)?,
        _ => {
            let mut out = String::new();
            for c in &report.clusters {
                match &c.report {
                    Some(r) if c.state != State::Error => render_text(&mut out, r),
                    _ => {
                        out.push_str(&c.line());
                        out.push('\n');
                    }
                }
                if let (Some(e), State::Stale, Some(_)) = (&c.last_error, c.state, &c.report) {
                    out.push_str(&format!("  last error: {e}\n"));
                }
            }
            printer.raw(out.as_bytes())?;
            let matching = total - stale.len();
            if matched {
                printer.line(format_args!(
                    "{} after {} ({})",
                    if total == 1 {
                        "the 1 cluster matches".to_owned()
                    } else {
                        format!("all {total} clusters match")
                    },
                    plural(rounds as usize, "round", "rounds"),
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                ));
            } else if permanent {
                printer.line(format_args!(
                    "stopped: a permanent error that waiting cannot cure; {matching} of {total} match; not matching: {}",
                    stale.join(", ")
                ));
            } else {
                printer.line(format_args!(
                    "timed out after {} ({}): {matching} of {total} match; still stale: {}",
                    humantime::format_duration(args.timeout),
                    plural(rounds as usize, "round", "rounds"),
                    stale.join(", ")
                ));
            }
        }
    }
    Ok(if permanent {
        Exit::Error
    } else {
        Exit::problem_if(!matched)
    })
}

/// Polls the clusters at `pending`, at most --concurrency at a time; returns
/// their results in the same order.
fn poll_all(
    args: &WaitArgs,
    clusters: &[ClusterWait],
    pending: &[usize],
    truth: &TruthIndex,
    key: Option<&DecryptionKey>,
    opts: &Options,
) -> Vec<Poll> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Poll>>> =
        std::sync::Mutex::new((0..pending.len()).map(|_| None).collect());
    let workers = usize::from(args.concurrency).min(pending.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = pending.get(j) else { break };
                    let poll = poll_once(args, clusters[i].context.as_deref(), truth, key, opts);
                    if let Ok(mut r) = results.lock() {
                        r[j] = Some(poll);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.unwrap_or_else(|| Poll::Transient("not polled".to_owned())))
        .collect()
}

// ---------------------------------------------------------------- check-log
