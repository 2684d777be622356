//! `rekey rollback`: parses flags, runs `ops::rollback`, renders the report.

use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::SigningKeyArgs;
use crate::exit::Exit;
use crate::ops::rollback::{RollbackRequest, RollbackTo, rollback};
use crate::ops::world::{GitCli, SystemClock};
use crate::secrets_repo::store::Store;
use std::path::PathBuf;
use std::time::SystemTime;

/// Make a region's previous pull secret current again, undoing a rotation.
///
/// Makes the previous version current and keeps the replaced one as
/// previous (files and metadata in one atomic step). Idempotent: rolling
/// back to what is already current changes nothing and says so, and a
/// second rollback keeps the older key (restore the newer one with --to).
/// A pending version (<NAME>.pending.gpg) is left as it is. With --commit,
/// exactly the secret's files are committed.
///
/// Example:
///   rekey rollback --repo secrets --region jp
///   rekey rollback --repo secrets --region jp --to iks-registry-prod-jp-20261123
///   rekey rollback --repo secrets --region jp --commit
///   rekey rollback --repo secrets --region jp --signing-key signer.asc
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RollbackArgs {
    /// The secrets repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The region to roll back (exactly as in the repo: `jp`, not `JP`).
    #[arg(long, value_name = "NAME")]
    pub region: String,
    /// What to make current: `previous`, or the current or previous key's
    /// name or fingerprint.
    #[arg(long, value_name = "previous|KEY_NAME|FINGERPRINT", default_value = "previous")]
    pub to: RollbackTo,
    /// Commit the change to the repo's git history.
    #[arg(long)]
    pub commit: bool,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
}

/// Runs `rekey rollback`.
pub fn run(printer: &Printer, args: RollbackArgs) -> anyhow::Result<Exit> {
    printer.require("rollback", &[OutputFormat::Text, OutputFormat::Json])?;
    let signer = args.signing.load(SystemTime::now())?;
    let request = RollbackRequest {
        region: args.region.clone(),
        to: args.to.clone(),
        signer: signer.as_ref(),
        commit: args.commit,
    };
    let git = GitCli {
        repo: args.repo.clone(),
    };
    let report = rollback(&request, &Store::new(&args.repo), &git, &SystemClock, printer)?;
    if printer.format() == OutputFormat::Json {
        printer.json(&report)?;
    } else if let Some(reason) = &report.reason {
        printer.line(format_args!("{:<6} unchanged     {reason}", report.region));
    } else {
        printer.line(format_args!(
            "{:<6} rolled back   {} -> {} (current)",
            report.region, report.previous_key_fingerprint, report.current_key_fingerprint
        ));
    }
    Ok(Exit::Ok)
}
