//! `rekey storage check-log`: the phrases of a successful update job, in order.

use super::*;

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

#[derive(Serialize)]
struct LogOutput<'a> {
    file: &'a Path,
    cluster: &'a str,
    resource_group: Option<&'a str>,
    #[serde(flatten)]
    report: joblog::LogReport,
}

pub(super) fn run_check_log(printer: &Printer, args: CheckLogArgs) -> anyhow::Result<Exit> {
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
