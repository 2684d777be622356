//! `rekey storage check-log`: a job log read as the runbook's engineer reads it.

use super::*;

/// Check a `cluster_secret_update` job log for the five phrases of a successful update.
///
/// Each phrase is looked for on its own and must come in order; the log must
/// name the cluster (and the resource group, when given) as whole tokens; an
/// error line after the update began (ERROR, an error level, panic, a
/// StatusCode other than 200) fails the check and is quoted. A log holding
/// several runs is judged on the last one. Prints the cluster ID, resource
/// group, status code and time the log names; exit 1 on any problem.
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

/// The largest job log read: far above a job's few hundred lines.
const MAX_LOG: u64 = 64 * 1024 * 1024;

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
    let bytes = read_bounded(&args.file, MAX_LOG)?;
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
            if report.runs > 1 {
                printer.line(format_args!(
                    "the log holds {} runs; judging the last, from line {}",
                    report.runs, report.run_starts_at
                ));
            }
            for (i, p) in report.phrases.iter().enumerate() {
                match p.line {
                    Some(l) => printer.line(format_args!("{}. line {l}: {}", i + 1, p.phrase)),
                    None => printer.line(format_args!("{}. missing: {}", i + 1, p.phrase)),
                }
            }
            let shown = |v: &[String]| {
                if v.is_empty() {
                    "(none)".to_owned()
                } else {
                    v.join(", ")
                }
            };
            printer.line(format_args!(
                "logged: cluster ID {}; resource group {}; StatusCode {}; time {}",
                shown(&report.logged.cluster_ids),
                shown(&report.logged.resource_groups),
                report.logged.status_code.map_or("(none)".to_owned(), |c| c.to_string()),
                report.logged.time.as_deref().unwrap_or("(none)")
            ));
            if report.problems.is_empty() {
                printer.line(format_args!(
                    "ok: all {} phrases in order, no error after them; names cluster {}{}",
                    joblog::PHRASES.len(),
                    args.cluster,
                    args.resource_group
                        .as_deref()
                        .map(|g| format!(" and resource group {g}"))
                        .unwrap_or_default()
                ));
            }
            for p in &report.problems {
                printer.line(format_args!("problem: {p}"));
            }
        }
    }
    Ok(Exit::problem_if(!ok))
}
