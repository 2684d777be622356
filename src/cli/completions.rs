//! `rekey completions`: shell completion scripts.

use crate::cli::Cli;
use crate::cli::output::{OutputFormat, Printer};
use crate::exit::Exit;
use clap::CommandFactory;

/// Print a shell completion script.
///
/// Example:
///   rekey completions bash > /etc/bash_completion.d/rekey
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the completion script to stdout.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("completions", &[OutputFormat::Text])?;
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "rekey", &mut script);
    printer.raw(&script)?;
    Ok(Exit::Ok)
}
