//! `rekey sign`: signs an existing repo's unsigned secrets after review
//! (the migration to signed secrets), through `ops::sign`.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::SigningKeyArgs;
use crate::exit::Exit;
use crate::ops::sign::{SignRequest, sign};
use crate::ops::world::{GitCli, SystemClock};
use crate::secrets_repo::store::Store;
use std::path::PathBuf;

/// Sign the secrets of an existing repo that have no signed statement.
///
/// The migration to signed secrets: after reviewing the repo, sign what is
/// there. Each encrypted file must be one whole OpenPGP message addressed to
/// exactly the key IDs its metadata lists, and metadata must name only the
/// secret's own files; anything else is refused (exit 2) and nothing is
/// written. Secrets whose statement already verifies are left unchanged; a
/// statement that does not verify is refused. Only metadata is rewritten,
/// all secrets or none. With .rekey/signers.asc, the key must be in it.
///
/// Example:
///   rekey sign --repo secrets --signing-key signer.asc --dry-run
///   rekey sign --repo secrets --signing-key-env REKEY_SIGNING_KEY --commit
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
    /// Print what would be signed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Commit the signed metadata.
    #[arg(long, conflicts_with = "dry_run")]
    pub commit: bool,
}

/// Runs `rekey sign`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("sign", &[OutputFormat::Text, OutputFormat::Json])?;
    let Some(signer) = args.signing.load(std::time::SystemTime::now())? else {
        anyhow::bail!("give the signing key: --signing-key FILE or --signing-key-env NAME");
    };
    let request = SignRequest {
        signer: &signer,
        dry_run: args.dry_run,
        commit: args.commit,
    };
    let git = GitCli {
        repo: args.repo.clone(),
    };
    let report = sign(&request, &Store::new(&args.repo), &git, &SystemClock, printer)?;
    if printer.format() == OutputFormat::Json {
        return printer.json(&report).map(|()| Exit::Ok);
    }
    for s in &report.secrets {
        let version = s.version.map(|v| format!(" (version {v})")).unwrap_or_default();
        printer.line(format_args!("{:<10} {}{version}", s.action, s.name));
    }
    printer.status(format_args!(
        "{} of {} {} by {} (fingerprint {})",
        report.secrets.iter().filter(|s| s.action != "unchanged").count(),
        plural(report.secrets.len(), "secret", "secrets"),
        if report.dry_run { "would be signed" } else { "signed" },
        report.signer_user_id,
        report.signer_fingerprint
    ));
    Ok(Exit::Ok)
}
