//! Reading the secrets repo from disk for `seal`, `recipients check` and
//! `reencrypt`: the policy keyring and each secret's metadata and files.

use crate::cli::output::Printer;
use crate::cli::pgpargs::{self, ValidityArgs};
use crate::pgp::RecipientSet;
use crate::repo::{self, Metadata};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Reads and checks the repo's recipient policy (`.rekey/recipients.asc`).
pub fn load_policy(
    printer: &Printer,
    repo_dir: &Path,
    validity: &ValidityArgs,
    now: SystemTime,
) -> anyhow::Result<RecipientSet> {
    let file = repo_dir.join(repo::RECIPIENTS_FILE);
    if !file.is_file() {
        anyhow::bail!(
            "{} is missing: put the policy keyring there (gpg --export --armor ... > {})",
            file.display(),
            repo::RECIPIENTS_FILE
        );
    }
    pgpargs::load_recipients(printer, &[file], validity, now)
}

/// Returns the registry directory of a repo.
pub fn registry_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join(repo::REGISTRY_DIR)
}

/// Reads a secret's metadata, if its file exists.
pub fn read_meta(dir: &Path, name: &str) -> anyhow::Result<Option<Metadata>> {
    let path = dir.join(repo::meta_file(name));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(Metadata::parse(&bytes, &path.display().to_string())?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads a file in the registry directory.
pub fn read(dir: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Returns the secret names that have a metadata file, sorted.
pub fn secret_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".meta.json") {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Returns the `.gpg` file names in the registry directory, sorted.
pub fn encrypted_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".gpg") && !name.starts_with(".rekey-") {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

/// Returns a random 32-byte salt for a plaintext digest.
pub fn random_salt() -> anyhow::Result<[u8; 32]> {
    let mut salt = [0u8; 32];
    sequoia_openpgp::crypto::random(&mut salt).map_err(|e| anyhow::anyhow!("no random numbers for a salt: {e}"))?;
    Ok(salt)
}
