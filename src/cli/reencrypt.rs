//! `rekey reencrypt`: after the recipient policy changes, re-encrypt every
//! secret in the repo to the new set, all files or none.

use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::{SecretKeyArgs, ValidityArgs};
use crate::cli::repo_io;
use crate::exit::Exit;
use crate::fsx::WriteSet;
use crate::secrets_repo::layout;
use crate::secrets_repo::pgp;
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use std::time::SystemTime;

/// Re-encrypt every secret in the repo to the current recipient policy.
///
/// Run after someone joins or leaves (after editing
/// REPO/.rekey/recipients.asc). Each secret (and its previous version) is
/// decrypted with --key, checked against its metadata digest, and encrypted
/// to exactly the policy set. Files already addressed to the policy set are
/// not rewritten. With --dry-run the plan is printed and nothing is written;
/// otherwise all files change or none.
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
}

#[derive(Serialize)]
struct Item {
    name: String,
    files: Vec<PathBuf>,
    action: &'static str,
}

/// Runs `rekey reencrypt`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("reencrypt", &[OutputFormat::Text, OutputFormat::Json])?;
    let now = SystemTime::now();
    let policy = repo_io::load_policy(printer, &args.repo, &args.validity, now)?;
    let keys = args.key.load()?;
    let _lock = if args.dry_run {
        None
    } else {
        Some(repo_io::lock_and_recover(printer, &args.repo)?)
    };
    let dir = repo_io::registry_dir(&args.repo);
    let mut writes = WriteSet::new();
    let mut items = Vec::new();
    for name in repo_io::secret_names(&dir)? {
        let Some(meta) = repo_io::read_meta(&dir, &name)? else {
            continue;
        };
        let active = repo_io::read(&dir, &meta.active.file)?;
        let active_ids = pgp::addressed_key_ids(&active)
            .with_context(|| format!("reading {}", dir.join(&meta.active.file).display()))?;
        let plain_active = pgp::open(&active, &keys, now)
            .with_context(|| format!("decrypting {}", dir.join(&meta.active.file).display()))?;
        let previous = match &meta.previous {
            Some(v) => {
                let bytes = repo_io::read(&dir, &v.file)?;
                let ids = pgp::addressed_key_ids(&bytes)
                    .with_context(|| format!("reading {}", dir.join(&v.file).display()))?;
                let plain = pgp::open(&bytes, &keys, now)
                    .with_context(|| format!("decrypting {}", dir.join(&v.file).display()))?;
                Some((ids, plain))
            }
            None => None,
        };
        let plan = layout::plan_reencrypt(
            &meta,
            &active_ids,
            &plain_active,
            previous.as_ref().map(|(ids, p)| (ids.as_slice(), p.as_slice())),
            &policy,
        )
        .with_context(|| format!("re-encrypting {name}"))?;
        let mut files = vec![dir.join(&meta.active.file)];
        if let Some(v) = &meta.previous {
            files.push(dir.join(&v.file));
        }
        match plan {
            None => items.push(Item {
                name,
                files,
                action: "unchanged",
            }),
            Some(rewrite) => {
                if !args.dry_run {
                    repo_io::stage_rewrite(&mut writes, &dir, rewrite)?;
                }
                items.push(Item {
                    name,
                    files,
                    action: if args.dry_run {
                        "would re-encrypt"
                    } else {
                        "re-encrypted"
                    },
                });
            }
        }
    }
    writes.commit_logged(&repo_io::write_log(&args.repo))?;
    match printer.format() {
        OutputFormat::Json => printer.json(&serde_json::json!({
            "dry_run": args.dry_run,
            "recipients": policy.certs,
            "secrets": items,
        }))?,
        _ => {
            for item in &items {
                let files: Vec<String> = item.files.iter().map(|f| f.display().to_string()).collect();
                printer.line(format_args!("{:<17} {} ({})", item.action, item.name, files.join(", ")));
            }
            let changed = items.iter().filter(|i| i.action != "unchanged").count();
            printer.status(format_args!(
                "{} {changed} of {} secrets to {} recipients{}",
                if args.dry_run {
                    "would re-encrypt"
                } else {
                    "re-encrypted"
                },
                items.len(),
                policy.certs.len(),
                if args.dry_run {
                    " (dry run: nothing written)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(Exit::Ok)
}
