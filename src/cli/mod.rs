//! The command-line layer: clap definitions, one file per command, and the
//! only place that reads files, the environment and the terminal for the core.

pub mod audit;
pub mod audit_iam;
pub mod check;
pub mod check_render;
pub mod completions;
pub mod decrypt;
pub mod duration;
pub mod encrypt;
pub mod generate;
pub mod health;
pub mod iamargs;
pub mod init;
pub mod inspect;
pub mod keyarg;
pub mod keys;
pub mod man;
pub mod netargs;
pub mod output;
pub mod pgpargs;
pub mod recipients;
pub mod reencrypt;
pub mod regionkeys;
pub mod rollback;
pub mod rotate;
pub mod seal;
pub mod secret_input;
pub mod sign;
pub mod storage;
pub mod verify;

use crate::exit::Exit;
use clap::{Parser, Subcommand};
use output::{OutputFormat, Printer};
use std::process::ExitCode;

/// Rotates and verifies registry and storage credentials.
///
/// rekey generates per-region pull secrets, encrypts them for the secrets
/// repo, proves a key pulls from every registry host, and compares clusters'
/// storage secrets with the source of truth. Keys are read from files, stdin
/// or environment variables, never from the command line.
///
/// Exit codes: 0 all verified, 1 a verification found a problem, 2 a usage,
/// input or environment error.
#[derive(Debug, Parser)]
#[command(name = "rekey", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Write the result as text, JSON, JUnit XML (commands that verify) or
    /// OpenMetrics (`audit`).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text, help_heading = "Global options")]
    pub output: OutputFormat,
    /// Print no status lines or progress on stderr.
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// Log what is done on stderr (-vv for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
}

impl Command {
    /// Returns the command's name as typed and the output formats it
    /// writes, so that every command refuses an unsupported `--output` the
    /// same way, before it reads anything.
    pub fn formats(&self) -> (&'static str, &'static [OutputFormat]) {
        use OutputFormat::{Json, Junit, Openmetrics, Text};
        match self {
            Command::Generate(_) => ("generate", &[Text, Json]),
            Command::Inspect(_) => ("inspect", &[Text, Json]),
            Command::Encrypt(_) => ("encrypt", &[Text, Json]),
            Command::Decrypt(_) => ("decrypt", &[Text]),
            Command::Seal(_) => ("seal", &[Text, Json]),
            Command::Recipients(_) => ("recipients check", &[Text, Json, Junit]),
            Command::Reencrypt(_) => ("reencrypt", &[Text, Json]),
            Command::Verify(_) => ("verify", &[Text, Json, Junit]),
            Command::Rotate(_) => ("rotate", &[Text, Json]),
            Command::Rollback(_) => ("rollback", &[Text, Json]),
            Command::Check(_) => ("check", &[Text, Json, Junit]),
            Command::Audit(_) => ("audit", &[Text, Json, Openmetrics]),
            Command::Health(_) => ("health", &[Text, Json]),
            Command::Storage(_) => ("storage", &[Text, Json]),
            Command::Init(_) => ("init", &[Text, Json]),
            Command::Keys(_) => ("keys", &[Text, Json]),
            Command::Completions(_) => ("completions", &[Text]),
            Command::Man(_) => ("man", &[Text]),
            Command::Sign(_) => ("sign", &[Text, Json]),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Generate(generate::Args),
    Inspect(inspect::Args),
    Encrypt(encrypt::Args),
    Decrypt(decrypt::Args),
    Seal(seal::Args),
    Recipients(recipients::Args),
    Reencrypt(reencrypt::Args),
    Verify(verify::Args),
    Rotate(rotate::Args),
    Rollback(rollback::RollbackArgs),
    Check(check::Args),
    Audit(audit::Args),
    Health(health::Args),
    Storage(storage::Args),
    Init(init::Args),
    Keys(keys::Args),
    Completions(completions::Args),
    Man(man::Args),
    Sign(sign::Args),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap uses 2 for usage errors and 0 for --help and --version.
            return ExitCode::from(if e.use_stderr() { Exit::Error.code() } else { 0 });
        }
    };
    init_logging(cli.global.verbose);
    let printer = Printer::new(cli.global.output, cli.global.quiet);
    let (name, formats) = cli.command.formats();
    if let Err(err) = printer.require(name, formats) {
        printer.error(&err);
        return Exit::Error.into();
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(&printer, args),
        Command::Inspect(args) => inspect::run(&printer, args),
        Command::Encrypt(args) => encrypt::run(&printer, args),
        Command::Decrypt(args) => decrypt::run(&printer, args),
        Command::Seal(args) => seal::run(&printer, args),
        Command::Recipients(args) => recipients::run(&printer, args),
        Command::Reencrypt(args) => reencrypt::run(&printer, args),
        Command::Verify(args) => verify::run(&printer, args),
        Command::Rotate(args) => rotate::run(&printer, args),
        Command::Rollback(args) => rollback::run(&printer, args),
        Command::Check(args) => check::run(&printer, args),
        Command::Audit(args) => audit::run(&printer, args),
        Command::Health(args) => health::run(&printer, args),
        Command::Init(args) => init::run(&printer, args),
        Command::Keys(args) => keys::run(&printer, args),
        Command::Completions(args) => completions::run(&printer, args),
        Command::Man(args) => man::run(&printer, args),
        Command::Storage(args) => storage::run(&printer, args),
        Command::Sign(args) => sign::run(&printer, args),
    };
    match result {
        Ok(exit) => match printer.take_stdout_error() {
            // The work is done but its result did not reach stdout.
            Some(e) => {
                printer.error(&anyhow::anyhow!("writing the result to stdout: {e}"));
                Exit::Error.into()
            }
            None => exit.into(),
        },
        Err(err) => {
            printer.error(&err);
            Exit::Error.into()
        }
    }
}

/// Returns the log filter for `-v` counted `verbose` times: rekey's own
/// warnings by default, what it does with `-v` (files written, commits),
/// with `-vv` also what it reads and runs (files, git, IAM requests), and
/// with `-vvv` the dependencies' debug logs too. `REKEY_LOG` overrides it.
fn log_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "rekey=warn",
        1 => "rekey=info",
        2 => "rekey=debug",
        _ => "debug,rekey=trace",
    }
}

fn init_logging(verbose: u8) {
    let default = log_filter(verbose);
    let filter = tracing_subscriber::EnvFilter::try_from_env("REKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::stderr_color())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn each_v_adds_a_log_level_and_dependencies_stay_quiet_below_three() {
        assert_eq!(log_filter(0), "rekey=warn");
        assert_eq!(log_filter(1), "rekey=info");
        assert_eq!(log_filter(2), "rekey=debug");
        assert!(log_filter(3).starts_with("debug,"));
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_shows_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub.get_long_about().map(|s| s.to_string()).unwrap_or_default();
            assert!(
                help.contains("Example"),
                "`rekey {}` help has no example",
                sub.get_name()
            );
        }
    }
}
