//! `rekey check`: pre-merge verification of a pull request to the secrets repo.

use crate::cli::netargs::{NetArgs, config_targets};
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::SecretKeyArgs;
use crate::exit::Exit;
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::dockerconfig;
use crate::pullsecret::image::ImageRef;
use crate::registry::Class;
use crate::secrets_repo::git::{self, ChangeKind};
use crate::secrets_repo::layout::{self, Metadata};
use crate::secrets_repo::leakscan::{self, Allowlist};
use crate::secrets_repo::pgp::{self, Validity};
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// The allowlist read from the head revision when --allowlist is not given.
pub const ALLOWLIST_FILE: &str = ".rekey/leak-allowlist.toml";

/// Check a pull request to the secrets repo before it merges.
///
/// Without a key: every changed secret file is an OpenPGP message addressed
/// to exactly the recipient policy (.rekey/recipients.asc at HEAD), its
/// metadata changed with it and agrees, the layout holds, and no changed
/// file holds a plain-text secret (dockerconfigjson passwords and auths,
/// API-key-shaped values, private key blocks, also inside base64; waive
/// known fixtures in .rekey/leak-allowlist.toml by fingerprint). With --key:
/// each changed secret is decrypted and checked as `rekey inspect` does, and
/// a redacted summary shows which regions rotated (old -> new key
/// fingerprint) and which hosts were added or removed. --verify-pull also
/// pulls the probe image with each changed secret. One JUnit test case per
/// check. Exits 1 when a check fails.
///
/// Example:
///   rekey check --repo . --base origin/main --head HEAD
///   rekey check --repo . --base origin/main --head HEAD --key ci-key.asc \
///       --passphrase-env CI_KEY_PASSPHRASE --regions regions --output junit
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo (a git work tree or bare repo).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The revision the pull request merges into.
    #[arg(long, value_name = "REV")]
    pub base: String,
    /// The pull request's revision.
    #[arg(long, value_name = "REV")]
    pub head: String,
    /// A secret key that can decrypt the secrets, to check their contents.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Read the secret key's passphrase from FILE (`-` reads stdin).
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "passphrase_env")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the secret key's passphrase from the environment variable NAME.
    #[arg(long, value_name = "NAME", requires = "key")]
    pub passphrase_env: Option<String>,
    /// The region catalog, to check that each secret covers exactly its region's hosts.
    #[arg(long, value_name = "DIR", requires = "key")]
    pub regions: Option<PathBuf>,
    /// The leak allowlist (default: .rekey/leak-allowlist.toml at the head, if present).
    #[arg(long, value_name = "FILE")]
    pub allowlist: Option<PathBuf>,
    /// Also pull the probe image with each changed secret (needs --key).
    #[arg(long, requires = "key")]
    pub verify_pull: bool,
    /// The image to pull with --verify-pull.
    #[arg(long, value_name = "REPO:TAG", default_value = crate::pullsecret::catalog::DEFAULT_PROBE_IMAGE)]
    pub image: String,
    #[command(flatten)]
    pub net: NetArgs,
}

/// One check's verdict: a JUnit test case.
#[derive(Debug, Serialize)]
struct CheckResult {
    kind: &'static str,
    target: String,
    ok: bool,
    detail: String,
}

/// A secret the pull request changes, with what changed (fingerprints only).
#[derive(Debug, Serialize)]
struct SecretChange {
    secret: String,
    region: Option<String>,
    change: &'static str,
    old_key_fingerprint: Option<String>,
    new_key_fingerprint: Option<String>,
    hosts_added: Vec<String>,
    hosts_removed: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    base: &'a str,
    head: &'a str,
    checks: &'a [CheckResult],
    changes: &'a [SecretChange],
}

struct Ctx {
    repo: PathBuf,
    base: String,
    head: String,
    results: Vec<CheckResult>,
}

impl Ctx {
    fn record(&mut self, kind: &'static str, target: impl Into<String>, problems: Vec<String>, ok_detail: &str) {
        let ok = problems.is_empty();
        let detail = if ok { ok_detail.to_owned() } else { problems.join("; ") };
        self.results.push(CheckResult {
            kind,
            target: target.into(),
            ok,
            detail,
        });
    }

    fn at_head(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(git::show(&self.repo, &self.head, path)?)
    }

    fn at_base(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(git::show(&self.repo, &self.base, path)?)
    }
}

/// Splits `registry/<NAME>.gpg|.previous.gpg|.meta.json` into the secret name.
fn secret_of(path: &str) -> Option<(String, &'static str)> {
    let file = path.strip_prefix(&format!("{}/", layout::REGISTRY_DIR))?;
    if file.contains('/') {
        return None;
    }
    for (suffix, kind) in [
        (".previous.gpg", "previous"),
        (".meta.json", "meta"),
        (".gpg", "active"),
    ] {
        if let Some(name) = file.strip_suffix(suffix) {
            return Some((name.to_owned(), kind));
        }
    }
    None
}

/// Runs `rekey check`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("check", &[OutputFormat::Text, OutputFormat::Json, OutputFormat::Junit])?;
    let image = ImageRef::parse(&args.image).map_err(|e| anyhow::anyhow!("--image `{}` {e}", args.image))?;
    if args.verify_pull {
        args.net.client()?;
    }
    let base = git::rev_parse(&args.repo, &args.base).context("--base")?;
    let head = git::rev_parse(&args.repo, &args.head).context("--head")?;
    let keys = match &args.key {
        Some(key) => Some(
            SecretKeyArgs {
                key: key.clone(),
                passphrase_file: args.passphrase_file.clone(),
                passphrase_env: args.passphrase_env.clone(),
            }
            .load()?,
        ),
        None => None,
    };
    let catalog = match &args.regions {
        Some(dir) => Some(Catalog::load(dir)?),
        None => None,
    };
    let now = SystemTime::now();
    let mut ctx = Ctx {
        repo: args.repo.clone(),
        base,
        head,
        results: Vec::new(),
    };
    let allowlist = match &args.allowlist {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Allowlist::parse(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?
        }
        None => match ctx.at_head(ALLOWLIST_FILE)? {
            Some(bytes) => Allowlist::parse(
                &format!("{ALLOWLIST_FILE} at {}", args.head),
                &String::from_utf8_lossy(&bytes),
            )
            .map_err(anyhow::Error::msg)?,
            None => Allowlist::default(),
        },
    };
    let changes = git::changed_files(&ctx.repo, &ctx.base, &ctx.head)?;

    // The recipient policy at the head.
    let policy = match ctx.at_head(layout::RECIPIENTS_FILE)? {
        None => Err(format!("{} is missing at the head", layout::RECIPIENTS_FILE)),
        Some(bytes) => pgp::parse_certs(&bytes, layout::RECIPIENTS_FILE)
            .and_then(|certs| {
                pgp::check_recipients(
                    &certs,
                    now,
                    Validity {
                        min: None,
                        warn: Duration::from_secs(30 * 86400),
                    },
                )
            })
            .map_err(|e| e.to_string()),
    };
    let policy_changed = changes.iter().any(|c| c.path == layout::RECIPIENTS_FILE);
    if policy_changed || policy.is_err() {
        let problems = policy.as_ref().err().cloned().into_iter().collect();
        ctx.record(
            "policy",
            layout::RECIPIENTS_FILE,
            problems,
            "the recipient policy is usable",
        );
    }

    // Every changed file: no plain-text secret; registry files keep the layout.
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    for change in changes.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        let Some(bytes) = ctx.at_head(&change.path)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let problems: Vec<String> = leakscan::scan(&change.path, &text, &[])
            .into_iter()
            .filter(|f| !allowlist.allows(f))
            .map(|f| {
                let via = if f.encoding.is_empty() {
                    String::new()
                } else {
                    format!(" inside {}", f.encoding.join(" inside "))
                };
                format!("line {}: {} {}{via}", f.line, f.rule.name(), f.fingerprint)
            })
            .collect();
        ctx.record("leak", &change.path, problems, "no plain-text secret");
        if change.path.starts_with(&format!("{}/", layout::REGISTRY_DIR)) {
            match secret_of(&change.path) {
                Some((name, _)) => {
                    secrets.insert(name);
                }
                None => ctx.record(
                    "layout",
                    &change.path,
                    vec![format!(
                        "{}/ holds only <NAME>.gpg, <NAME>.previous.gpg and <NAME>.meta.json",
                        layout::REGISTRY_DIR
                    )],
                    "",
                ),
            }
        }
    }
    for change in changes.iter().filter(|c| c.kind == ChangeKind::Deleted) {
        if let Some((name, _)) = secret_of(&change.path) {
            secrets.insert(name);
        }
    }

    // Each changed secret: addressed to the policy, metadata consistent, contents sound.
    let mut summary = Vec::new();
    for name in &secrets {
        let meta_path = format!("{}/{}", layout::REGISTRY_DIR, layout::meta_file(name));
        let changed = |suffix: &str| {
            let path = format!("{}/{name}{suffix}", layout::REGISTRY_DIR);
            changes.iter().any(|c| c.path == path)
        };
        let head_meta = match ctx.at_head(&meta_path)? {
            None => {
                let deleted = ctx
                    .at_head(&format!("{}/{}", layout::REGISTRY_DIR, layout::active_file(name)))?
                    .is_none();
                let problems = if deleted {
                    Vec::new()
                } else {
                    vec!["the secret has no metadata file".to_owned()]
                };
                ctx.record(
                    "metadata",
                    &meta_path,
                    problems,
                    "the secret was removed with its metadata",
                );
                summary.push(SecretChange {
                    secret: name.clone(),
                    region: None,
                    change: "removed",
                    old_key_fingerprint: None,
                    new_key_fingerprint: None,
                    hosts_added: Vec::new(),
                    hosts_removed: Vec::new(),
                });
                continue;
            }
            Some(bytes) => match Metadata::parse(&bytes, &meta_path) {
                Ok(meta) => meta,
                Err(e) => {
                    ctx.record("metadata", &meta_path, vec![e.to_string()], "");
                    continue;
                }
            },
        };
        let mut meta_problems = Vec::new();
        if (changed(".gpg") || changed(".previous.gpg")) && !changed(".meta.json") {
            meta_problems.push("an encrypted file changed but its metadata did not".to_owned());
        }
        if head_meta.name != *name {
            meta_problems.push(format!(
                "field `name` is `{}`, the file is named for `{name}`",
                head_meta.name
            ));
        }
        let versions = [Some(&head_meta.active), head_meta.previous.as_ref()];
        for version in versions.into_iter().flatten() {
            let path = format!("{}/{}", layout::REGISTRY_DIR, version.file);
            match (ctx.at_head(&path)?, &policy) {
                (None, _) => meta_problems.push(format!("`{}` names {path}, which does not exist", version.state)),
                (Some(bytes), Ok(policy)) => {
                    let (_, problems) = layout::check_file(&bytes, Some(version), policy);
                    ctx.record(
                        "recipients",
                        &path,
                        problems,
                        "addressed to exactly the recipient policy",
                    );
                }
                (Some(_), Err(_)) => ctx.record("recipients", &path, vec!["no usable recipient policy".to_owned()], ""),
            }
        }
        ctx.record(
            "metadata",
            &meta_path,
            meta_problems,
            "consistent with the encrypted files",
        );

        let base_meta = ctx
            .at_base(&meta_path)?
            .and_then(|b| Metadata::parse(&b, &meta_path).ok());
        let mut change = SecretChange {
            secret: name.clone(),
            region: Some(head_meta.region.clone()),
            change: match &base_meta {
                None => "added",
                Some(b) if b.active.key_fingerprint != head_meta.active.key_fingerprint => "rotated",
                Some(_) => "changed",
            },
            old_key_fingerprint: base_meta.as_ref().map(|b| b.active.key_fingerprint.clone()),
            new_key_fingerprint: Some(head_meta.active.key_fingerprint.clone()),
            hosts_added: Vec::new(),
            hosts_removed: Vec::new(),
        };
        if let Some(keys) = &keys {
            let active_path = format!("{}/{}", layout::REGISTRY_DIR, head_meta.active.file);
            let region = catalog.as_ref().and_then(|c| c.get(&head_meta.region));
            let mut problems = Vec::new();
            if catalog.is_some() && region.is_none() {
                problems.push(format!("region `{}` is not in the catalog", head_meta.region));
            }
            let head_plain = match ctx.at_head(&active_path)? {
                Some(bytes) => match pgp::open(&bytes, keys, now) {
                    Ok(plain) => Some(plain),
                    Err(e) => {
                        problems.push(format!("cannot decrypt: {e}"));
                        None
                    }
                },
                None => None,
            };
            if let Some(plain) = &head_plain {
                problems.extend(secret_problems(plain, &head_meta, region));
                let base_plain = base_meta
                    .as_ref()
                    .and_then(|b| {
                        ctx.at_base(&format!("{}/{}", layout::REGISTRY_DIR, b.active.file))
                            .ok()
                            .flatten()
                    })
                    .and_then(|bytes| pgp::open(&bytes, keys, now).ok());
                let (added, removed) = host_changes(base_plain.as_ref().map(|p| p.as_slice()), plain);
                change.hosts_added = added;
                change.hosts_removed = removed;
                if args.verify_pull {
                    pull_checks(printer, &args, &mut ctx, name, plain, &image)?;
                }
            }
            ctx.record("secret", &active_path, problems, "consistent pull secret");
        }
        summary.push(change);
    }
    if ctx.results.is_empty() {
        ctx.record("changes", "diff", Vec::new(), "the pull request changes no file");
    }
    print(printer, &ctx, &summary)?;
    Ok(Exit::problem_if(ctx.results.iter().any(|r| !r.ok)))
}

/// Checks a decrypted secret as `rekey inspect` does, against its metadata and region.
fn secret_problems(plain: &[u8], meta: &Metadata, region: Option<&crate::pullsecret::catalog::Region>) -> Vec<String> {
    let mut problems = Vec::new();
    if !meta.active.plaintext_digest.matches(plain) {
        problems.push("the plaintext does not match the digest in the metadata".to_owned());
    }
    match dockerconfig::parse(plain) {
        Err(e) => problems.push(e.to_string()),
        Ok(config) => {
            let report = dockerconfig::check(&config, region);
            problems.extend(report.problems.iter().cloned());
            for h in &report.hosts {
                problems.extend(h.problems.iter().map(|p| format!("{}: {p}", h.host)));
            }
            if let Some(fp) = report.key_fingerprint
                && fp.to_string() != meta.active.key_fingerprint
            {
                problems.push(format!(
                    "the secret carries key {fp}, the metadata says {}",
                    meta.active.key_fingerprint
                ));
            }
        }
    }
    problems
}

fn hosts_of(plain: &[u8]) -> BTreeSet<String> {
    dockerconfig::parse(plain)
        .map(|c| c.auths.into_keys().collect())
        .unwrap_or_default()
}

fn host_changes(base: Option<&[u8]>, head: &[u8]) -> (Vec<String>, Vec<String>) {
    let head = hosts_of(head);
    let base = base.map(hosts_of).unwrap_or_default();
    (
        head.difference(&base).cloned().collect(),
        base.difference(&head).cloned().collect(),
    )
}

/// Pulls the probe image from every host of a decrypted secret with its own credentials.
fn pull_checks(
    printer: &Printer,
    args: &Args,
    ctx: &mut Ctx,
    name: &str,
    plain: &Zeroizing<Vec<u8>>,
    image: &ImageRef,
) -> anyhow::Result<()> {
    // A secret that cannot be parsed is already reported by its `secret` check.
    let Ok(config) = dockerconfig::parse(plain) else {
        return Ok(());
    };
    let targets = match config_targets(&config, name, image, name) {
        Ok(targets) => targets,
        Err(e) => {
            ctx.record("pull", name, vec![format!("{e:#}")], "");
            return Ok(());
        }
    };
    for r in args.net.check(printer, targets)? {
        let problems = if r.class == Class::Ok {
            Vec::new()
        } else {
            vec![format!("{}: {}", r.class, r.detail)]
        };
        ctx.record("pull", format!("{name} {}", r.host), problems, "pulls the probe image");
    }
    Ok(())
}

fn print(printer: &Printer, ctx: &Ctx, summary: &[SecretChange]) -> anyhow::Result<()> {
    let ok = ctx.results.iter().all(|r| r.ok);
    match printer.format() {
        OutputFormat::Json => printer.json(&Report {
            ok,
            base: &ctx.base,
            head: &ctx.head,
            checks: &ctx.results,
            changes: summary,
        }),
        OutputFormat::Junit => printer.junit(&junit(&ctx.results)),
        OutputFormat::Text | OutputFormat::Openmetrics => {
            for r in &ctx.results {
                let verdict = if r.ok { "ok  " } else { "FAIL" };
                printer.line(format_args!("{verdict}  {:<10} {}  {}", r.kind, r.target, r.detail));
            }
            for c in summary {
                let old = c.old_key_fingerprint.as_deref().unwrap_or("none");
                let new = c.new_key_fingerprint.as_deref().unwrap_or("none");
                let mut line = format!(
                    "{:<8} {} ({}): {old} -> {new}",
                    c.change,
                    c.secret,
                    c.region.as_deref().unwrap_or("-")
                );
                if !c.hosts_added.is_empty() {
                    line.push_str(&format!(", hosts added: {}", c.hosts_added.join(", ")));
                }
                if !c.hosts_removed.is_empty() {
                    line.push_str(&format!(", hosts removed: {}", c.hosts_removed.join(", ")));
                }
                printer.line(line);
            }
            let failed = ctx.results.iter().filter(|r| !r.ok).count();
            printer.status(format_args!("{} checks, {failed} failed", ctx.results.len()));
            Ok(())
        }
    }
}

fn junit(results: &[CheckResult]) -> quick_junit::Report {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for r in results {
        let status = if r.ok {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type(r.kind);
            s.set_message(r.detail.clone());
            s
        };
        let mut case = TestCase::new(r.target.clone(), status);
        case.set_classname(format!("check.{}", r.kind));
        suites
            .entry(r.kind)
            .or_insert_with(|| TestSuite::new(format!("rekey check {}", r.kind)))
            .add_test_case(case);
    }
    let mut report = Report::new("rekey check");
    report.add_test_suites(suites.into_values());
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_come_from_the_layout() {
        assert_eq!(secret_of("registry/JP_X_64.gpg"), Some(("JP_X_64".into(), "active")));
        assert_eq!(
            secret_of("registry/JP_X_64.previous.gpg"),
            Some(("JP_X_64".into(), "previous"))
        );
        assert_eq!(
            secret_of("registry/JP_X_64.meta.json"),
            Some(("JP_X_64".into(), "meta"))
        );
        assert_eq!(secret_of("registry/jp.dockerconfigjson"), None);
        assert_eq!(secret_of("registry/sub/a.gpg"), None);
        assert_eq!(secret_of("README.md"), None);
    }

    #[test]
    fn host_changes_compare_host_sets() {
        let a = br#"{"auths":{"a.io":{},"b.io":{}}}"#;
        let b = br#"{"auths":{"b.io":{},"c.io":{}}}"#;
        assert_eq!(
            host_changes(Some(a), b),
            (vec!["c.io".to_owned()], vec!["a.io".to_owned()])
        );
        assert_eq!(host_changes(None, b).0.len(), 2);
    }
}
