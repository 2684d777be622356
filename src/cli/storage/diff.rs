//! `rekey storage diff`: one cluster, a fleet, or two snapshots of a secret.

use super::*;

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
    /// The source of truth: a JSON file (object, array or NDJSON) or etcd://HOST:PORT/PREFIX (etcd+https:// for TLS).
    #[arg(long, value_name = "PATH|URL", required_unless_present = "before")]
    pub truth: Option<String>,
    #[command(flatten)]
    pub key: DecryptionKeyArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The cluster's `kubectl get secret sdnlb-config -n kube-system -o json` (VPC
    /// clusters): its [SDNLB] service_apikey must be the truth's key too; --secret must hold one cluster.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["before", "after"])]
    pub sdnlb_config: Option<PathBuf>,
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

pub(super) fn run_diff(printer: &Printer, args: DiffArgs) -> anyhow::Result<Exit> {
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
    let truth = load_truth(truth_source, &args.etcd)?;
    let key = args.key.read()?;
    let reveal = reveal_allowed(printer, args.reveal);
    let opts = Options {
        scope: args.scope.scope(),
        diff: args.diff,
        reveal,
        provider: args.scope.provider,
        sdnlb: match &args.sdnlb_config {
            None => None,
            Some(path) => {
                let bytes = Zeroizing::new(read_bounded(path, crate::storage::sdnlb::MAX_FILE as u64)?);
                let parsed =
                    crate::storage::sdnlb::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Some(Arc::new(parsed))
            }
        },
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
    if args.sdnlb_config.is_some() && summary.clusters != 1 {
        bail!(
            "--sdnlb-config is one cluster's Secret, but --secret held {} clusters",
            summary.clusters
        );
    }
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
