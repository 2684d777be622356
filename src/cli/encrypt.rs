//! `rekey encrypt`: OpenPGP messages that GnuPG 2.2 decrypts.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::{self, SigningKeyArgs, ValidityArgs};
use crate::exit::Exit;
use crate::fsx::{self, WriteSet};
use crate::secrets_repo::pgp;
use anyhow::Context;
use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;
use std::time::SystemTime;

/// Encrypt files to every certificate in the recipient keyrings.
///
/// Each output is an ASCII-armored OpenPGP message (SEIPDv1 with MDC,
/// AES-256, no compression) addressed to every usable encryption subkey of
/// every recipient, readable with `gpg --decrypt`. Recipients are checked
/// first: expired, revoked, signing-only, policy-rejected (e.g. SHA-1) and
/// secret-key certificates are refused by name. Outputs are written all or
/// none; with --out-dir each INPUT becomes DIR/<file name>.gpg.
/// With --signing-key (or --signing-key-env) each message is signed inside
/// the encryption, and `gpg --decrypt` reports a good signature.
///
/// Example:
///   gpg --export --armor ops@example.com build@example.com > team.asc
///   rekey encrypt --recipients team.asc out/jp.dockerconfigjson -o jp.gpg
///   rekey encrypt --recipients team.asc --min-validity 30d --out-dir sealed out/*.dockerconfigjson
///   rekey encrypt --recipients team.asc --signing-key-env REKEY_SIGNING_KEY out/jp.dockerconfigjson -o jp.gpg
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A certificate or keyring file (armored or binary); repeatable.
    #[arg(long = "recipients", value_name = "FILE", required = true)]
    pub recipients: Vec<PathBuf>,
    #[command(flatten)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
    /// The encrypted file to write (one INPUT only).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "out_dir",
        required_unless_present = "out_dir"
    )]
    pub out_file: Option<PathBuf>,
    /// The directory to write DIR/<name>.gpg into, one per INPUT.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// The plain-text files to encrypt.
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,
}

/// Threads that write and fsync outputs: syncs are I/O-bound, so more than the cores.
const WRITER_THREADS: usize = 16;

#[derive(Serialize)]
struct Written {
    input: PathBuf,
    output: PathBuf,
}

#[derive(Serialize)]
struct Summary<'a> {
    recipients: &'a [pgp::RecipientCert],
    files: Vec<Written>,
}

/// Runs `rekey encrypt`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("encrypt", &[OutputFormat::Text, OutputFormat::Json])?;
    let outputs: Vec<PathBuf> = match (&args.out_file, &args.out_dir) {
        (Some(o), _) => {
            if args.inputs.len() != 1 {
                anyhow::bail!("-o takes one INPUT; use --out-dir for {} inputs", args.inputs.len());
            }
            vec![o.clone()]
        }
        (None, Some(dir)) => {
            let mut outs = Vec::with_capacity(args.inputs.len());
            for input in &args.inputs {
                let name = input
                    .file_name()
                    .with_context(|| format!("{}: not a file name", input.display()))?;
                let mut name = name.to_owned();
                name.push(".gpg");
                outs.push(dir.join(name));
            }
            let mut sorted = outs.clone();
            sorted.sort();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                anyhow::bail!("two inputs would both be written to {}", w[0].display());
            }
            outs
        }
        (None, None) => anyhow::bail!("give -o FILE or --out-dir DIR"),
    };
    let now = SystemTime::now();
    let set = pgpargs::load_recipients(printer, &args.recipients, &args.validity, now)?;
    let signing_key = args.signing.load(now)?;
    let mut plaintexts = Vec::with_capacity(args.inputs.len());
    for input in &args.inputs {
        plaintexts.push(pgpargs::read_plaintext(input)?);
    }
    let sealed: Vec<Vec<u8>> = plaintexts
        .par_iter()
        .zip(args.inputs.par_iter())
        .map(|(p, input)| {
            match &signing_key {
                Some(key) => pgp::seal_signed(p, &set, key, now),
                None => pgp::seal(p, &set),
            }
            .with_context(|| format!("encrypting {}", input.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let out_dir = match (&args.out_dir, &args.out_file) {
        (Some(dir), _) => dir.clone(),
        (None, Some(file)) => match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        },
        (None, None) => PathBuf::from("."),
    };
    let _lock = fsx::prepare_output_dir(&out_dir)?;
    let mut writes = WriteSet::new();
    let files: Vec<(PathBuf, &[u8])> = outputs.iter().cloned().zip(sealed.iter().map(Vec::as_slice)).collect();
    writes.stage_parallel(&files, fsx::PUBLIC_MODE, WRITER_THREADS)?;
    writes.commit()?;
    let files: Vec<Written> = args
        .inputs
        .into_iter()
        .zip(outputs)
        .map(|(input, output)| Written { input, output })
        .collect();
    match printer.format() {
        OutputFormat::Json => printer.json(&Summary {
            recipients: &set.certs,
            files,
        })?,
        _ => {
            for f in &files {
                printer.line(format_args!("{} -> {}", f.input.display(), f.output.display()));
            }
            printer.status(format_args!(
                "encrypted {} to {} ({})",
                plural(files.len(), "file", "files"),
                plural(set.certs.len(), "recipient", "recipients"),
                plural(set.key_ids().len(), "key", "keys")
            ));
            if let Some(key) = &signing_key {
                printer.status(format_args!("signed by {}", key.name()));
            }
        }
    }
    Ok(Exit::Ok)
}
