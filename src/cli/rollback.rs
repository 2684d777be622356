//! `rekey rollback`: parses flags, runs `ops::rollback`, renders the report.

use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::SigningKeyArgs;
use crate::exit::Exit;
use crate::ops::rollback::{RollbackRequest, rollback};
use crate::ops::world::{GitCli, SystemClock};
use crate::secrets_repo::store::Store;
use std::path::PathBuf;
use std::time::SystemTime;

/// Make a region's previous pull secret current again, undoing a rotation.
///
/// Swaps the active and previous versions of the region's secret (files and
/// metadata) in one atomic step; running it twice swaps them back. With
/// --commit, exactly the secret's files are committed.
///
/// Example:
///   rekey rollback --repo secrets --region jp
///   rekey rollback --repo secrets --region jp --commit
///   rekey rollback --repo secrets --region jp --signing-key signer.asc
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RollbackArgs {
    /// The secrets repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The region to roll back.
    #[arg(long, value_name = "NAME")]
    pub region: String,
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
        signer: signer.as_ref(),
        commit: args.commit,
    };
    let git = GitCli {
        repo: args.repo.clone(),
    };
    let report = rollback(&request, &Store::new(&args.repo), &git, &SystemClock, printer)?;
    if printer.format() == OutputFormat::Json {
        printer.json(&report)?;
    } else {
        printer.line(format_args!(
            "{:<6} rolled back   {} -> {} (current)",
            report.region, report.previous_key_fingerprint, report.current_key_fingerprint
        ));
    }
    Ok(Exit::Ok)
}
