//! `rekey reencrypt`: after the recipient policy changes, re-encrypt every
//! secret in the repo to the new set, all files or none.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::{SecretKeyArgs, SigningKeyArgs, ValidityArgs};
use crate::exit::Exit;
use crate::ops::reencrypt::{ItemAction, ReencryptRequest, reencrypt};
use crate::ops::world::SystemClock;
use crate::secrets_repo::store::Store;
use std::path::PathBuf;

/// Re-encrypt every secret in the repo to the current recipient policy.
///
/// Run after someone joins or leaves (after editing
/// REPO/.rekey/recipients.asc). Each secret (and its previous version) is
/// decrypted with --key, checked against its metadata digest, and encrypted
/// to exactly the policy set. Files already addressed to the policy set are
/// not rewritten. With --dry-run the plan is printed and nothing is written;
/// otherwise all files change or none. REPO must be the top of a git work
/// tree: rekey keeps its lock and redo log in the git directory.
///
/// Example:
///   gpg --export --armor ops@example.com new@example.com > secrets/.rekey/recipients.asc
///   rekey reencrypt --repo secrets --key ops.key --dry-run
///   rekey reencrypt --repo secrets --key ops.key --passphrase-env OPS_PASSPHRASE
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo (holding .rekey/recipients.asc and registry/).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    /// Print what would be re-encrypted; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
}

/// Runs `rekey reencrypt`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("reencrypt", &[OutputFormat::Text, OutputFormat::Json])?;
    let keys = args.key.load()?;
    let signer = args.signing.load(std::time::SystemTime::now())?;
    let request = ReencryptRequest {
        keys: &keys,
        signer: signer.as_ref(),
        dry_run: args.dry_run,
        validity: args.validity.validity(),
    };
    let report = reencrypt(&request, &Store::new(&args.repo), &SystemClock, printer)?;
    if printer.format() == OutputFormat::Json {
        return printer.json(&report).map(|()| Exit::Ok);
    }
    for item in &report.secrets {
        let files: Vec<String> = item.files.iter().map(|f| f.display().to_string()).collect();
        printer.line(format_args!("{:<17} {} ({})", item.action, item.name, files.join(", ")));
    }
    let changed = report
        .secrets
        .iter()
        .filter(|i| i.action != ItemAction::Unchanged)
        .count();
    let (verb, note) = if args.dry_run {
        ("would re-encrypt", " (dry run: nothing written)")
    } else {
        ("re-encrypted", "")
    };
    printer.status(format_args!(
        "{verb} {changed} of {} to {}{note}",
        plural(report.secrets.len(), "secret", "secrets"),
        plural(report.recipients.len(), "recipient", "recipients")
    ));
    Ok(Exit::Ok)
}
