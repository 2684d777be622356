//! `rekey init`: makes a secrets repo ready to use, so that `rekey init`
//! plus `rekey rotate` is all a new team needs.

use crate::cli::output::{OutputFormat, Printer, plural};
use crate::cli::pgpargs::ValidityArgs;
use crate::exit::Exit;
use crate::fsx::{self, WriteSet};
use crate::pullsecret::catalog::Catalog;
use crate::secrets_repo::{git, pgp};
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The files `init` writes, relative to the repo: policy, ignore rules,
/// CI definitions and a README for the repo's users.
const RECIPIENTS: &str = ".rekey/recipients.asc";
const SIGNERS: &str = ".rekey/signers.asc";

/// The CI definitions shipped with rekey, copied into the new repo.
const CI_FILES: &[(&str, &str)] = &[
    (
        ".github/workflows/rekey-check.yml",
        include_str!("../../ci/github/secrets-pr-check.yml"),
    ),
    (
        ".github/workflows/rekey-rotation.yml",
        include_str!("../../ci/github/rotation.yml"),
    ),
    ("ci/rekey-job", include_str!("../../ci/rekey-job")),
];

/// The region catalog shipped with rekey (the runbook's regions), written
/// to `regions/` unless `--regions` names another.
const SHIPPED_REGIONS: &[(&str, &str)] = &[
    ("au.toml", include_str!("../../regions/au.toml")),
    ("de.toml", include_str!("../../regions/de.toml")),
    ("fr2.toml", include_str!("../../regions/fr2.toml")),
    ("jp.toml", include_str!("../../regions/jp.toml")),
    ("uk.toml", include_str!("../../regions/uk.toml")),
    ("us.toml", include_str!("../../regions/us.toml")),
];

/// Where the region catalog lives in a secrets repo (what the CI jobs read).
const REGIONS_DIR: &str = "regions";

const GITIGNORE: &str = "\
# Written by `rekey init`. Plain-text secrets never belong in this repo:
# rekey's own state lives under .git/rekey/, and these are the usual places
# plain-text outputs land while an operator works.
*.dockerconfigjson
*.plain
*.key
*.key.txt
/out/
/keys/
# Temporaries of an interrupted write (removed by the next run).
.rekey-tmp-*
.rekey-bak-*
";

const REPO_README: &str = "\
# Secrets repo

Registry pull secrets for every region, encrypted with OpenPGP and managed
by `rekey`. Nobody edits files under `registry/` by hand.

| path | what it is |
|---|---|
| `registry/<NAME>.gpg` | the current pull secret of a region (what the build tool ships) |
| `registry/<NAME>.previous.gpg` | the version it replaced, kept for `rekey rollback` |
| `registry/<NAME>.pending.gpg` | a new version sealed but not yet promoted (never shipped); only during a rotation |
| `registry/<NAME>.meta.json` | metadata: key name and fingerprint, recipients, rotation times |
| `.rekey/recipients.asc` | who can decrypt: every file is encrypted to exactly these certificates |
| `.rekey/signers.asc` | who may publish a secret: its signature must be by one of these |
| `regions/` | the region catalog: each region's registry hosts, key code and probe image |
| `.github/workflows/` | the rotation job and the pre-merge check (`rekey check`) |

Day to day:

- Rotate: `rekey rotate --regions regions --repo . --api-keys-dir keys --commit --branch rotate-YYYYMMDD`
- Check a pull request: `rekey check --repo . --base origin/main --head HEAD`
- Audit key ages: `rekey audit --repo .`
- Undo a rotation of one region: `rekey rollback --repo . --region jp`

Changes to `.rekey/` change who can read or publish secrets: they need the
same review as a change of access rights, and `rekey check` lists who is
added or removed.
";

/// Make a directory a secrets repo ready for `rekey rotate` and `rekey check`.
///
/// Writes .rekey/recipients.asc (who can decrypt; checked against the
/// recipient policy) and, with --signers, .rekey/signers.asc (who may
/// publish), a .gitignore that keeps plain-text outputs out of git, the CI
/// workflows (.github/workflows/ and ci/rekey-job), the region catalog
/// (regions/: the one shipped with rekey, or a copy of --regions), and a
/// README for the repo's users. Runs `git init` when DIR is not a git work tree, and with
/// --commit commits what it wrote. Refuses a directory that already holds
/// any of these files: init never overwrites.
///
/// Example:
///   rekey init secrets --recipients team.asc --signers release-signers.asc --commit
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The directory to set up (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The recipients' certificates (an armored keyring).
    #[arg(long, value_name = "FILE")]
    pub recipients: PathBuf,
    /// The certificates allowed to sign secrets (an armored keyring).
    #[arg(long, value_name = "FILE")]
    pub signers: Option<PathBuf>,
    /// Copy this region catalog into regions/ (default: the catalog shipped
    /// with rekey, the runbook's six regions).
    #[arg(long, value_name = "DIR")]
    pub regions: Option<PathBuf>,
    /// Pin the CI workflows to this rekey release tag (v1.2.3) or commit SHA
    /// (default: they read the repository variable REKEY_REF).
    #[arg(long, value_name = "REF")]
    pub rekey_ref: Option<String>,
    /// Commit the new files.
    #[arg(long)]
    pub commit: bool,
    #[command(flatten)]
    pub validity: ValidityArgs,
}

#[derive(Serialize)]
struct Report {
    dir: PathBuf,
    git_initialised: bool,
    files: Vec<String>,
    recipients: Vec<String>,
    signers: Vec<String>,
    commit: Option<String>,
}

/// Returns true for a release tag (`v1.2.3`, optionally `-rc.1`) or a full commit SHA.
fn valid_ref(r: &str) -> bool {
    let sha = r.len() == 40 && r.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let tag = r.strip_prefix('v').is_some_and(|v| {
        let core = v.split_once('-').map_or(v, |(c, _)| c);
        let parts: Vec<&str> = core.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    sha || tag
}

/// Reads a keyring and returns its bytes and the certificates' names.
fn keyring(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<sequoia_openpgp::Cert>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = pgp::parse_certs(&bytes, &path.display().to_string())?;
    Ok((bytes, certs))
}

/// Returns the catalog files to write under `regions/`: the files of
/// `dir`, once they parse as a catalog, or the shipped catalog.
fn catalog_files(dir: Option<&Path>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let Some(dir) = dir else {
        return Ok(SHIPPED_REGIONS
            .iter()
            .map(|(name, text)| ((*name).to_owned(), text.as_bytes().to_vec()))
            .collect());
    };
    // The same files Catalog::load reads: every *.toml of the directory.
    Catalog::load(dir).with_context(|| format!("--regions {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push((name.to_owned(), bytes));
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `rekey init`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("init", &[OutputFormat::Text, OutputFormat::Json])?;
    if let Some(r) = &args.rekey_ref
        && !valid_ref(r)
    {
        bail!(
            "--rekey-ref `{r}`: use a release tag such as v1.2.3 or a full 40-hex commit SHA, so CI installs exactly that rekey"
        );
    }
    let now = SystemTime::now();
    let (recipients_bytes, recipient_certs) = keyring(&args.recipients)?;
    let set = pgp::check_recipients(&recipient_certs, now, args.validity.validity())
        .with_context(|| format!("--recipients {}", args.recipients.display()))?;
    let recipients: Vec<String> = set.certs.iter().map(|c| c.name.to_string()).collect();
    let signers_in = match &args.signers {
        Some(p) => Some(keyring(p)?),
        None => None,
    };
    let signers: Vec<String> = signers_in
        .as_ref()
        .map(|(_, certs)| certs.iter().map(|c| pgp::CertName::of(c).to_string()).collect())
        .unwrap_or_default();

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (RECIPIENTS.to_owned(), recipients_bytes),
        (".gitignore".to_owned(), GITIGNORE.as_bytes().to_vec()),
        ("README.md".to_owned(), REPO_README.as_bytes().to_vec()),
    ];
    if let Some((bytes, _)) = signers_in {
        files.push((SIGNERS.to_owned(), bytes));
    }
    for (path, text) in CI_FILES {
        let text = match &args.rekey_ref {
            Some(r) => text.replace("${{ vars.REKEY_REF }}", r),
            None => (*text).to_owned(),
        };
        files.push(((*path).to_owned(), text.into_bytes()));
    }
    for (name, bytes) in catalog_files(args.regions.as_deref())? {
        files.push((format!("{REGIONS_DIR}/{name}"), bytes));
    }
    let existing: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| std::fs::symlink_metadata(args.dir.join(p)).is_ok())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already holds {}: rekey init never overwrites; remove them or set the repo up by hand",
            args.dir.display(),
            existing.join(", ")
        );
    }

    // Every directory the files go in must be a real directory (or not
    // exist yet): a file or a link there is refused before anything is
    // written, `git init` included.
    let mut parents: Vec<PathBuf> = vec![args.dir.clone()];
    for (path, _) in &files {
        let mut p = Path::new(path);
        while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            parents.push(args.dir.join(parent));
            p = parent;
        }
    }
    parents.sort();
    parents.dedup();
    for dir in &parents {
        if let Ok(m) = std::fs::symlink_metadata(dir)
            && !m.is_dir()
        {
            bail!(
                "{} exists and is not a directory: rekey init writes files under it; move it aside first",
                dir.display()
            );
        }
    }

    fsx::ensure_dir(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let git_initialised = !git::is_work_tree(&args.dir);
    if git_initialised {
        git::init(&args.dir).with_context(|| format!("git init {}", args.dir.display()))?;
    }
    let mut set = WriteSet::new();
    for (path, bytes) in &files {
        let full = args.dir.join(path);
        if let Some(parent) = full.parent() {
            fsx::ensure_dir(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        set.stage(&full, bytes, fsx::PUBLIC_MODE)?;
    }
    set.commit()?;
    let names: Vec<String> = files.into_iter().map(|(p, _)| p).collect();
    let commit = if args.commit {
        git::commit(&args.dir, None, &names, "rekey init: set up the secrets repo\n\nRecipient policy, ignore rules, CI workflows and a README for the repo's users.")
            .context("committing the new files")?
    } else {
        None
    };
    let report = Report {
        dir: args.dir.clone(),
        git_initialised,
        files: names,
        recipients,
        signers,
        commit,
    };
    match printer.format() {
        OutputFormat::Json => printer.json(&report)?,
        _ => {
            let n = report.files.len();
            printer.line(format_args!(
                "set up {} ({})",
                report.dir.display(),
                plural(n, "file", "files")
            ));
            for f in &report.files {
                printer.line(format_args!("  {f}"));
            }
            let r = report.recipients.len();
            printer.line(format_args!(
                "{r} {}: {}",
                if r == 1 { "recipient" } else { "recipients" },
                report.recipients.join("; ")
            ));
            if !report.signers.is_empty() {
                printer.line(format_args!("signers: {}", report.signers.join("; ")));
            }
            match &report.commit {
                Some(c) => printer.line(format_args!("committed {c}")),
                None => printer.line("not committed: review the files, then commit them (or rerun with --commit)"),
            }
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_is_every_file_of_regions_and_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions");
        let on_disk = catalog_files(Some(&dir)).unwrap();
        let shipped = catalog_files(None).unwrap();
        assert_eq!(shipped, on_disk, "SHIPPED_REGIONS must list every file of regions/");
    }

    #[test]
    fn release_refs_are_tags_or_full_shas() {
        assert!(valid_ref("v1.2.3") && valid_ref("v1.2.3-rc.1") && valid_ref(&"a".repeat(40)));
        assert!(!valid_ref("main") && !valid_ref("v1.2") && !valid_ref(&"a".repeat(39)));
    }
}
