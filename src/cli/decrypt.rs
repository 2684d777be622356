//! `rekey decrypt`: opens rekey's and GnuPG's messages, never writing partial plain text.

use crate::cli::output::OutputFormat;
use crate::cli::output::Printer;
use crate::cli::pgpargs::SecretKeyArgs;
use crate::exit::Exit;
use crate::fsx;
use crate::secrets_repo::pgp;
use anyhow::Context;
use std::path::PathBuf;
use std::time::SystemTime;

/// Decrypt an OpenPGP message with a secret key.
///
/// The whole message is decrypted and its integrity checked before anything
/// is written: a corrupted, truncated or tampered message writes nothing.
/// The plain text is written atomically with mode 0600, or to stdout only
/// when asked with `-o -`. A passphrase comes from a file or an environment
/// variable, never the command line.
///
/// Example:
///   gpg --export-secret-keys --armor ops@example.com > ops.key
///   rekey decrypt --key ops.key --passphrase-env OPS_PASSPHRASE jp.gpg -o jp.dockerconfigjson
///   rekey decrypt --key ops.key jp.gpg -o -
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub key: SecretKeyArgs,
    /// Where to write the plain text (`-` writes it to stdout).
    #[arg(long, value_name = "FILE")]
    pub out_file: PathBuf,
    /// The encrypted file (armored or binary).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
}

/// Runs `rekey decrypt`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("decrypt", &[OutputFormat::Text])?;
    let message = std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let keys = args.key.load()?;
    let plaintext = pgp::open(&message, &keys, SystemTime::now())
        .with_context(|| format!("decrypting {}", args.input.display()))?;
    if args.out_file.as_os_str() == "-" {
        printer.raw(&plaintext)?;
    } else {
        fsx::write_atomic(&args.out_file, &plaintext, fsx::SECRET_MODE)?;
        printer.status(format_args!(
            "decrypted {} -> {} ({} bytes)",
            args.input.display(),
            args.out_file.display(),
            plaintext.len()
        ));
    }
    Ok(Exit::Ok)
}
