//! `rekey recipients check`: proves, without any private key, that every
//! encrypted file in the secrets repo is addressed to exactly the policy set.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::ValidityArgs;
use crate::exit::Exit;
use crate::secrets_repo::layout::{self, Metadata};
use crate::secrets_repo::pgp::RecipientCert;
use crate::secrets_repo::store::Store;
use clap::Subcommand;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// Inspect the recipients of the secrets repo's encrypted files.
///
/// `check` lists, for every encrypted file, the key IDs its session keys are
/// addressed to, and exits 1 when a file is not addressed to exactly the
/// encryption subkeys of the certificates in REPO/.rekey/recipients.asc, is
/// not an OpenPGP message, or disagrees with its metadata. No private key is
/// needed.
///
/// Example:
///   rekey recipients check --repo secrets
///   rekey --output json recipients check --repo secrets
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: RecipientsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    /// Check every encrypted file against the recipient policy (exit 1 on a mismatch).
    ///
    /// Example:
    ///   rekey recipients check --repo secrets
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
}

/// Options of `rekey recipients check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The secrets repo (holding .rekey/recipients.asc and registry/).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub validity: ValidityArgs,
}

#[derive(Serialize)]
struct FileReport {
    file: PathBuf,
    key_ids: Vec<String>,
    ok: bool,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct Policy<'a> {
    recipients: &'a [RecipientCert],
    key_ids: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    policy: Policy<'a>,
    files: Vec<FileReport>,
}

/// Runs `rekey recipients ...`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    match args.command {
        RecipientsCommand::Check(args) => check(printer, args),
    }
}

fn check(printer: &Printer, args: CheckArgs) -> anyhow::Result<Exit> {
    printer.require(
        "recipients check",
        &[OutputFormat::Text, OutputFormat::Json, OutputFormat::Junit],
    )?;
    let store = Store::new(&args.repo);
    let policy = store.load_policy(args.validity.validity(), SystemTime::now(), printer)?;
    let dir = store.registry_dir();
    let mut files = Vec::new();
    let mut metas: BTreeMap<String, Metadata> = BTreeMap::new();
    for name in store.secret_names()? {
        match store.read_meta(&name) {
            Ok(Some(meta)) => {
                let mut problems = Vec::new();
                if meta.name != name {
                    problems.push(format!("name: `{}` does not match the file name", meta.name));
                }
                for (v, slot) in meta.versions() {
                    if !store.path(&name, slot).is_file() {
                        problems.push(format!("{} version's file {} is missing", v.state, v.file));
                    }
                }
                if !problems.is_empty() {
                    files.push(FileReport {
                        file: dir.join(layout::meta_file(&name)),
                        key_ids: Vec::new(),
                        ok: false,
                        problems,
                    });
                }
                metas.insert(name, meta);
            }
            Ok(None) => {}
            Err(e) => files.push(FileReport {
                file: dir.join(layout::meta_file(&name)),
                key_ids: Vec::new(),
                ok: false,
                problems: vec![format!("{e:#}")],
            }),
        }
    }
    for file in store.encrypted_files()? {
        let Some((name, slot)) = layout::parse_file_name(&file) else {
            continue;
        };
        let bytes = store.read_file(&name, slot)?;
        let version = metas
            .values()
            .find_map(|m| m.versions().map(|(v, _)| v).find(|v| v.file == file));
        let (key_ids, problems) = layout::check_file(&bytes, version, &policy);
        files.push(FileReport {
            file: dir.join(&file),
            key_ids,
            ok: problems.is_empty(),
            problems,
        });
    }
    files.sort_by(|a, b| a.file.cmp(&b.file));
    let ok = files.iter().all(|f| f.ok);
    match printer.format() {
        OutputFormat::Junit => printer.junit(&junit(&files))?,
        OutputFormat::Json => printer.json(&Report {
            ok,
            policy: Policy {
                recipients: &policy.certs,
                key_ids: policy.key_ids().into_iter().collect(),
            },
            files,
        })?,
        _ => {
            for f in &files {
                if f.ok {
                    printer.line(format_args!("ok      {} ({})", f.file.display(), f.key_ids.join(", ")));
                } else {
                    for p in &f.problems {
                        printer.line(format_args!("PROBLEM {}: {p}", f.file.display()));
                    }
                }
            }
            let bad = files.iter().filter(|f| !f.ok).count();
            printer.status(format_args!(
                "{} checked against {}; {bad} with problems",
                plural(files.len(), "file", "files"),
                plural(policy.key_ids().len(), "policy key", "policy keys")
            ));
        }
    }
    Ok(Exit::problem_if(!ok))
}

/// Returns one JUnit test case per checked file.
fn junit(files: &[FileReport]) -> quick_junit::Report {
    use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("rekey recipients check");
    for f in files {
        let status = if f.ok {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(f.problems.join("; "));
            s
        };
        suite.add_test_case(TestCase::new(f.file.display().to_string(), status));
    }
    let mut report = quick_junit::Report::new("rekey");
    report.add_test_suite(suite);
    report
}
