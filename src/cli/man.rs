//! `rekey man`: man pages generated from the command-line definitions, so
//! they never drift from `--help`.

use crate::cli::Cli;
use crate::cli::output::{OutputFormat, Printer};
use crate::exit::Exit;
use crate::fsx::{self, WriteSet};
use anyhow::Context;
use clap::CommandFactory;
use std::path::PathBuf;

/// Write man pages for rekey and every subcommand.
///
/// Writes rekey.1 and one page per subcommand (rekey-rotate.1,
/// rekey-storage-diff.1, ...) into DIR, all or nothing.
///
/// Example:
///   rekey man --out-dir /usr/local/share/man/man1
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Renders the page of `cmd` and of each of its subcommands, depth first.
fn render(cmd: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let cmd = cmd.clone().name(name.to_owned()).display_name(name.to_owned());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("rendering the man page of {name}"))?;
    pages.push((format!("{name}.1"), page));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        render(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

/// Runs `rekey man`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("man", &[OutputFormat::Text])?;
    let mut root = Cli::command();
    root.build();
    let mut pages = Vec::new();
    render(&root, "rekey", &mut pages)?;
    fsx::ensure_dir(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut set = WriteSet::new();
    for (name, bytes) in &pages {
        set.stage(&args.out_dir.join(name), bytes, fsx::PUBLIC_MODE)?;
    }
    set.commit()?;
    let n = pages.len();
    printer.line(format_args!("wrote {n} man pages to {}", args.out_dir.display()));
    Ok(Exit::Ok)
}
