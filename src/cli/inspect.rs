//! `rekey inspect`: check dockerconfigjson pull secrets for consistency.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::exit::Exit;
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::dockerconfig::{self, Report};
use crate::pullsecret::manifest;
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

/// Check pull secrets for the inconsistencies that break pulls.
///
/// Each `auth` must match its username and password, every host must carry
/// the same key, the key must have no stray whitespace and (with --region)
/// the hosts must be exactly the region's.
///
/// Reads raw dockerconfigjson files or Kubernetes Secret manifests (JSON or
/// YAML). Shows keys only as fingerprints. Exits 1 on any inconsistency.
///
/// Example:
///   rekey inspect out/jp.dockerconfigjson
///   rekey inspect --regions regions --region jp out/jp.secret.yaml
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The region catalog directory, to check hosts against a region.
    #[arg(long, value_name = "DIR", requires = "region")]
    pub regions: Option<PathBuf>,
    /// The region whose hosts the files must cover exactly.
    #[arg(long, value_name = "NAME", requires = "regions")]
    pub region: Option<String>,
}

#[derive(Serialize)]
struct FileReport {
    file: PathBuf,
    ok: bool,
    #[serde(flatten)]
    report: Report,
}

#[derive(Serialize)]
struct Summary {
    ok: bool,
    files: Vec<FileReport>,
}

/// Runs `rekey inspect`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("inspect", &[OutputFormat::Text, OutputFormat::Json])?;
    let catalog = match &args.regions {
        Some(dir) => Some(Catalog::load(dir)?),
        None => None,
    };
    let region = match (&catalog, &args.region, &args.regions) {
        (Some(c), Some(name), Some(dir)) => Some(c.select(dir, std::slice::from_ref(name))?[0].clone()),
        _ => None,
    };
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = zeroize::Zeroizing::new(bytes);
        let json = manifest::extract_dockerconfigjson(&bytes).with_context(|| format!("reading {}", path.display()))?;
        let config = dockerconfig::parse(&json).with_context(|| format!("reading {}", path.display()))?;
        let report = dockerconfig::check(&config, region.as_ref());
        files.push(FileReport {
            file: path.clone(),
            ok: report.is_ok(),
            report,
        });
    }
    let ok = files.iter().all(|f| f.ok);
    match printer.format() {
        OutputFormat::Json => printer.json(&Summary { ok, files })?,
        _ => print_text(printer, &files),
    }
    Ok(Exit::problem_if(!ok))
}

fn print_text(printer: &Printer, files: &[FileReport]) {
    for f in files {
        let r = &f.report;
        let key = r
            .key_fingerprint
            .map_or_else(|| "inconsistent".to_owned(), |fp| fp.to_string());
        let problems = r.problems.len() + r.hosts.iter().map(|h| h.problems.len()).sum::<usize>();
        let verdict = if f.ok {
            "ok".to_owned()
        } else {
            plural(problems, "problem", "problems")
        };
        printer.line(format_args!(
            "{}: {verdict}, {}, key {key}",
            f.file.display(),
            plural(r.hosts.len(), "host", "hosts")
        ));
        let width = r.hosts.iter().map(|h| h.host.len()).max().unwrap_or(0);
        for h in &r.hosts {
            let fp = h.key_fingerprint.map_or_else(|| "-".to_owned(), |fp| fp.to_string());
            let user = h.username.as_deref().unwrap_or("-");
            if h.problems.is_empty() {
                printer.line(format_args!("  ok    {:<width$}  {user}  {fp}", h.host));
            }
            for p in &h.problems {
                printer.line(format_args!("  FAIL  {:<width$}  {user}  {fp}  {p}", h.host));
            }
        }
        for p in &r.problems {
            printer.line(format_args!("  FAIL  {p}"));
        }
    }
}
