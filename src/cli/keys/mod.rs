//! `rekey keys`: the service-ID API keys in IBM Cloud IAM, one per region.

pub mod check;
pub mod retire;

use crate::cli::output::Printer;
use crate::exit::Exit;

/// Work with the regions' API keys in IBM Cloud IAM.
///
/// Example:
///   rekey keys check --regions regions --api-keys-dir keys --iam-api-key-env IAM_ADMIN_KEY
///   rekey keys check --regions regions --repo secrets --key operator.sec.asc
///   rekey keys retire --repo secrets --iam-api-key-env IAM_ADMIN_KEY --commit
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    Check(check::Args),
    Retire(retire::Args),
}

/// Runs `rekey keys`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    match args.command {
        KeysCommand::Check(a) => check::run(printer, a),
        KeysCommand::Retire(a) => retire::run(printer, a),
    }
}
