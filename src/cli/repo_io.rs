//! Reading the secrets repo from disk for `seal`, `recipients check` and
//! `reencrypt`: the policy keyring and each secret's metadata and files.

use crate::cli::output::Printer;
use crate::cli::pgpargs::{self, ValidityArgs};
use crate::secrets_repo::layout::{self, Metadata};
use crate::secrets_repo::pgp::RecipientSet;
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
    let file = repo_dir.join(layout::RECIPIENTS_FILE);
    if !file.is_file() {
        anyhow::bail!(
            "{} is missing: put the policy keyring there (gpg --export --armor ... > {})",
            file.display(),
            layout::RECIPIENTS_FILE
        );
    }
    pgpargs::load_recipients(printer, &[file], validity, now)
}

/// Returns the registry directory of a repo.
pub fn registry_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join(layout::REGISTRY_DIR)
}

/// Reads a secret's metadata, if its file exists.
pub fn read_meta(dir: &Path, name: &str) -> anyhow::Result<Option<Metadata>> {
    let path = dir.join(layout::meta_file(name));
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

/// The exclusive right to write to a secrets repo, held until dropped.
pub struct RepoLock {
    _file: std::fs::File,
}

/// Takes the repo's write lock, then finishes or cleans up what a killed
/// rekey left half done (a redo log to roll forward, stray temporaries).
/// Fails at once when another rekey holds the lock.
pub fn lock_and_recover(printer: &Printer, repo_dir: &Path) -> anyhow::Result<RepoLock> {
    // The lock is on the `.rekey` directory itself, so taking it writes nothing.
    let path = repo_dir.join(".rekey");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "another rekey is writing to {} (it holds a lock on {})",
                repo_dir.display(),
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    let log = write_log(repo_dir);
    let dirs = [registry_dir(repo_dir), repo_dir.join(".rekey")];
    let rolled = crate::fsx::recover(&log, &[&dirs[0], &dirs[1]])?;
    if rolled > 0 {
        printer.status(format_args!("finished {rolled} file writes of an interrupted run"));
    }
    Ok(RepoLock { _file: file })
}

/// Returns the path of the repo's redo log for multi-file writes.
pub fn write_log(repo_dir: &Path) -> PathBuf {
    repo_dir.join(layout::WRITE_LOG_FILE)
}

/// Stages a secret's rewritten files (active and previous versions, if they
/// change, and the metadata) under the names its metadata gives them.
pub fn stage_rewrite(set: &mut crate::fsx::WriteSet, dir: &Path, rewrite: layout::Rewrite) -> anyhow::Result<()> {
    let layout::Rewrite { meta, active, previous } = rewrite;
    if let Some(bytes) = active {
        set.stage(&dir.join(&meta.active.file), &bytes, crate::fsx::PUBLIC_MODE)?;
    }
    if let (Some(v), Some(bytes)) = (&meta.previous, previous) {
        set.stage(&dir.join(&v.file), &bytes, crate::fsx::PUBLIC_MODE)?;
    }
    set.stage(
        &dir.join(layout::meta_file(&meta.name)),
        &meta.render(),
        crate::fsx::PUBLIC_MODE,
    )?;
    Ok(())
}
