//! `rekey seal`: reads the generated pull secrets, runs `ops::seal`,
//! renders the report.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::{self, SigningKeyArgs, ValidityArgs};
use crate::exit::Exit;
use crate::ops::seal::{Generated, SealRequest, seal};
use crate::ops::world::{OsRandom, SystemClock};
use crate::secrets_repo::store::Store;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Encrypt the region pull secrets made by `rekey generate` into a secrets repo.
///
/// Reads GENERATED_DIR/<region>.dockerconfigjson and writes, for each region,
/// registry/<REGION>_REGISTRY_PULL_SECRET_64.gpg (encrypted to exactly the
/// certificates in REPO/.rekey/recipients.asc) and its .meta.json. A secret
/// whose plaintext and recipients are unchanged is not rewritten; the version
/// it replaces is kept as <NAME>.previous.gpg for rollback. All files are
/// written or none. REPO must be the top of a git work tree: rekey keeps its
/// lock and redo log in the git directory.
///
/// With --pending, the new version goes to <NAME>.pending.gpg only: the
/// served <NAME>.gpg and <NAME>.previous.gpg stay byte for byte. Sealing the
/// same plaintext again without --pending promotes it (it moves to
/// <NAME>.gpg, the current version to <NAME>.previous.gpg); sealing another
/// plaintext without --pending replaces the current version and drops the
/// pending one.
///
/// Example:
///   rekey generate --regions regions --api-key-file key.txt --out out
///   rekey seal --repo secrets --in out --key-name iks-registry-prod-jp-20261123
///   rekey seal --repo secrets --in out --pending
///   rekey seal --repo secrets --in out --signing-key signer.asc
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
    /// Seal new versions as pending, into <NAME>.pending.gpg (never served
    /// until promoted), instead of current.
    #[arg(long)]
    pub pending: bool,
    #[command(flatten)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
}

/// Runs `rekey seal`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("seal", &[OutputFormat::Text, OutputFormat::Json])?;
    if let Some(name) = &args.key_name
        && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        anyhow::bail!("--key-name: must be non-empty without whitespace or control characters");
    }
    let mut secrets = Vec::new();
    for (region, source) in generated_regions(&args.input)? {
        let plaintext = pgpargs::read_plaintext(&source)?;
        secrets.push(Generated {
            region,
            source,
            plaintext,
        });
    }
    if secrets.is_empty() {
        anyhow::bail!("{}: no <region>.dockerconfigjson files", args.input.display());
    }
    let signer = args.signing.load(std::time::SystemTime::now())?;
    let request = SealRequest {
        secrets,
        signer: signer.as_ref(),
        key_name: args.key_name.clone(),
        pending: args.pending,
        validity: args.validity.validity(),
    };
    let report = seal(&request, &Store::new(&args.repo), &SystemClock, &OsRandom, printer)?;
    if printer.format() == OutputFormat::Json {
        return printer.json(&report).map(|()| Exit::Ok);
    }
    for s in &report.secrets {
        printer.line(format_args!(
            "{:<6} {} {} ({}, key {})",
            s.region,
            s.file.display(),
            if s.changed { "sealed" } else { "unchanged" },
            s.state,
            s.key_fingerprint
        ));
    }
    let changed = report.secrets.iter().filter(|s| s.changed).count();
    printer.status(format_args!(
        "sealed {changed} of {} to {}",
        plural(report.secrets.len(), "secret", "secrets"),
        plural(report.recipients, "recipient", "recipients")
    ));
    Ok(Exit::Ok)
}

/// Returns (region, path) for each `<region>.dockerconfigjson`, sorted.
fn generated_regions(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
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
