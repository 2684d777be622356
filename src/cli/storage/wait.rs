//! `rekey storage wait`: poll a cluster until its key matches the source of truth.

use super::*;

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
    let mut cmd = crate::childenv::command(&args.kubectl);
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

pub(super) fn run_wait(printer: &Printer, args: WaitArgs) -> anyhow::Result<Exit> {
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
