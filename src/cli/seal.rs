//! `rekey seal`: writes generated pull secrets into the secrets repo.

use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::{self, ValidityArgs};
use crate::cli::repo_io;
use crate::exit::Exit;
use crate::fsx::{self, WriteSet};
use crate::pullsecret::dockerconfig;
use crate::secrets_repo::layout::{self, Existing, Plan, SealRequest, State};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use std::time::SystemTime;

/// Encrypt the region pull secrets made by `rekey generate` into a secrets repo.
///
/// Reads GENERATED_DIR/<region>.dockerconfigjson and writes, for each region,
/// registry/<REGION>_REGISTRY_PULL_SECRET_64.gpg (encrypted to exactly the
/// certificates in REPO/.rekey/recipients.asc) and its .meta.json. A secret
/// whose plaintext and recipients are unchanged is not rewritten; the version
/// it replaces is kept as <NAME>.previous.gpg for rollback. All files are
/// written or none.
///
/// Example:
///   rekey generate --regions regions --api-key-file key.txt --out out
///   rekey seal --repo secrets --in out --key-name iks-registry-prod-jp-20261123
///   rekey seal --repo secrets --in out --pending
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo (holding .rekey/recipients.asc).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The directory `rekey generate` wrote (<region>.dockerconfigjson files).
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// The API key's name to record in the metadata (not the key).
    #[arg(long, value_name = "NAME")]
    pub key_name: Option<String>,
    /// Record new versions as pending instead of current.
    #[arg(long)]
    pub pending: bool,
    #[command(flatten)]
    pub validity: ValidityArgs,
}

#[derive(Serialize)]
struct Sealed {
    region: String,
    name: String,
    file: PathBuf,
    changed: bool,
    state: State,
    key_fingerprint: String,
}

/// Runs `rekey seal`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("seal", &[OutputFormat::Text, OutputFormat::Json])?;
    if let Some(name) = &args.key_name
        && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        anyhow::bail!("--key-name: must be non-empty without whitespace or control characters");
    }
    let now_sys = SystemTime::now();
    let now = chrono::DateTime::<chrono::Utc>::from(now_sys);
    let policy = repo_io::load_policy(printer, &args.repo, &args.validity, now_sys)?;
    let _lock = repo_io::lock_and_recover(printer, &args.repo)?;
    let regions = generated_regions(&args.input)?;
    if regions.is_empty() {
        anyhow::bail!("{}: no <region>.dockerconfigjson files", args.input.display());
    }
    let dir = repo_io::registry_dir(&args.repo);
    let state = if args.pending { State::Pending } else { State::Current };
    let mut plans = Vec::new();
    let mut report = Vec::new();
    for (region, path) in regions {
        let plaintext = pgpargs::read_plaintext(&path)?;
        let config = dockerconfig::parse(&plaintext).with_context(|| format!("reading {}", path.display()))?;
        let check = dockerconfig::check(&config, None);
        let fingerprint = match (check.is_ok(), check.key_fingerprint) {
            (true, Some(fp)) => fp,
            _ => anyhow::bail!(
                "{}: not a consistent pull secret (check it with `rekey inspect`): {}",
                path.display(),
                check.problems.join("; ")
            ),
        };
        let name = layout::secret_name(&region);
        let meta = repo_io::read_meta(&dir, &name)?;
        let active = match &meta {
            Some(m) => Some(repo_io::read(&dir, &m.active.file)?),
            None => None,
        };
        let existing = match (&meta, &active) {
            (Some(meta), Some(active)) => Some(Existing { meta, active }),
            _ => None,
        };
        let req = SealRequest {
            name: &name,
            region: &region,
            plaintext: &plaintext,
            key_name: args.key_name.as_deref(),
            key_fingerprint: fingerprint,
            state,
            now,
            salt: repo_io::random_salt()?,
        };
        let plan = layout::plan_seal(existing, &req, &policy).with_context(|| format!("sealing {name}"))?;
        let changed = matches!(plan, Plan::Write(_));
        let final_state = match &plan {
            Plan::Write(w) => w.meta.active.state,
            Plan::Unchanged => meta.as_ref().map(|m| m.active.state).unwrap_or(state),
        };
        report.push(Sealed {
            region,
            file: dir.join(layout::active_file(&name)),
            name: name.clone(),
            changed,
            state: final_state,
            key_fingerprint: fingerprint.to_string(),
        });
        plans.push((name, plan));
    }
    // Everything is validated and encrypted in memory: now write, all or nothing.
    let mut writes = WriteSet::new();
    if plans.iter().any(|(_, p)| matches!(p, Plan::Write(_))) {
        fsx::ensure_dir(&dir).with_context(|| format!("{} is not writable", dir.display()))?;
    }
    for (_, plan) in plans {
        if let Plan::Write(w) = plan {
            repo_io::stage_rewrite(&mut writes, &dir, *w)?;
        }
    }
    writes.commit_logged(&repo_io::write_log(&args.repo))?;
    match printer.format() {
        OutputFormat::Json => printer.json(&serde_json::json!({ "secrets": report }))?,
        _ => {
            for s in &report {
                printer.line(format_args!(
                    "{:<6} {} {} ({}, key {})",
                    s.region,
                    s.file.display(),
                    if s.changed { "sealed" } else { "unchanged" },
                    s.state,
                    s.key_fingerprint
                ));
            }
            let changed = report.iter().filter(|s| s.changed).count();
            printer.status(format_args!(
                "sealed {changed} of {} secrets to {} recipients",
                report.len(),
                policy.certs.len()
            ));
        }
    }
    Ok(Exit::Ok)
}

/// Returns (region, path) for each `<region>.dockerconfigjson`, sorted.
fn generated_regions(dir: &std::path::Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(region) = file.strip_suffix(".dockerconfigjson") else {
            continue;
        };
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            anyhow::bail!("{}: region name `{region}` is not a-z, 0-9, -", entry.path().display());
        }
        out.push((region.to_owned(), entry.path()));
    }
    out.sort();
    Ok(out)
}
