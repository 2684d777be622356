//! `rekey decrypt`: opens rekey's and GnuPG's messages, never writing partial plain text.

use crate::cli::output::OutputFormat;
use crate::cli::output::Printer;
use crate::cli::pgpargs::{self, SecretKeyArgs};
use crate::exit::Exit;
use crate::fsx;
use crate::secrets_repo::pgp;
use crate::secrets_repo::signing::{AllowedSigners, SignError};
use anyhow::Context;
use std::path::PathBuf;
use std::time::SystemTime;

/// Decrypt an OpenPGP message with a secret key.
///
/// The whole message is decrypted and its integrity checked before anything
/// is written: a corrupted, truncated or tampered message writes nothing.
/// The plain text is written atomically with mode 0600, or to stdout only
/// when asked with `-o -`. A passphrase comes from a file or an environment
/// variable, never the command line. Messages and plain text are limited to
/// 1 MiB (a compressed message is decompressed only that far).
///
/// With `--signers`, the message must be signed (inside the encryption) by
/// one of the certificates in FILE; otherwise nothing is written and the
/// exit code is 1.
///
/// Example:
///   gpg --export-secret-keys --armor ops@example.com > ops.key
///   rekey decrypt --key ops.key --passphrase-env OPS_PASSPHRASE jp.gpg -o jp.dockerconfigjson
///   rekey decrypt --key ops.key --signers .rekey/signers.asc jp.gpg -o -
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub key: SecretKeyArgs,
    /// Require a good inner signature by a certificate in FILE (e.g. `.rekey/signers.asc`).
    #[arg(long, value_name = "FILE")]
    pub signers: Option<PathBuf>,
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
    let message = pgpargs::read_bounded(&args.input, pgp::MAX_MESSAGE_BYTES)?;
    let keys = args.key.load()?;
    let signers = match &args.signers {
        Some(path) => pgpargs::load_signers(path)?,
        None => AllowedSigners::none(),
    };
    let opened = pgp::open_verified(&message, &keys, &signers, SystemTime::now())
        .with_context(|| format!("decrypting {}", args.input.display()))?;
    let input = args.input.display();
    match (&opened.signature, &args.signers) {
        (Some(Ok(signer)), _) => printer.status(format_args!("{input}: good signature from {signer}")),
        (None, Some(_)) => {
            printer.warn(format_args!("{input}: {}; nothing written", SignError::NoSignature));
            return Ok(Exit::Problem);
        }
        (Some(Err(e)), Some(_)) => {
            printer.warn(format_args!("{input}: {e}; nothing written"));
            return Ok(Exit::Problem);
        }
        (Some(Err(e)), None) => printer.status(format_args!(
            "{input}: signed, not verified ({e}; give --signers to verify)"
        )),
        (None, None) => {}
    }
    if args.out_file.as_os_str() == "-" {
        printer.raw(&opened.plaintext)?;
    } else {
        let dir = match args.out_file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let _lock = fsx::prepare_output_dir(&dir)?;
        fsx::write_atomic(&args.out_file, &opened.plaintext, fsx::SECRET_MODE)?;
        printer.status(format_args!(
            "decrypted {} -> {} ({} bytes)",
            args.input.display(),
            args.out_file.display(),
            opened.plaintext.len()
        ));
    }
    Ok(Exit::Ok)
}
