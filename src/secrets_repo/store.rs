//! The secrets repo on disk, and the one place that enforces its trust
//! boundary: the repo's content is data, never instructions.
//!
//! - **Pinned paths.** Every file read or written is derived from a secret's
//!   name (`registry/<NAME>.gpg`, `<NAME>.previous.gpg`,
//!   `<NAME>.pending.gpg`, `<NAME>.meta.json`, names of `A-Z0-9_` only), never taken from metadata: metadata whose
//!   `file` fields name anything else is refused. Files are opened without
//!   following symbolic links and must be regular files of a bounded size;
//!   `registry/` and `.rekey/` must be real directories.
//! - **State outside the work tree.** The lock, the rotation journal and the
//!   redo log of multi-file writes live in `<git dir>/rekey/`: per clone,
//!   never committed, out of reach of a pull request. A repo that is not the
//!   top of a git work tree is refused for writing. Files at the old places
//!   (`.rekey/journal.json`, `.rekey/writes.json`) are never read.
//! - **The redo log is validated before it is acted on**: only renames of
//!   rekey's own temporaries in `registry/` to pinned secret files there,
//!   and removals of pending files there (`<NAME>.pending.gpg`, dropped
//!   when a pending version is promoted or abandoned).
//! - **Commit exactly what was written**: [`Lock::apply`] returns the files
//!   it wrote; commands commit those. A `registry/` holding files rekey does
//!   not know is refused before anything is written.

use crate::fsx::{self, WriteSet};
use crate::ops::world::{Event, Events};
use crate::secrets_repo::git;
use crate::secrets_repo::journal::Journal;
use crate::secrets_repo::layout::{self, Metadata, Rewrite, Slot};
use crate::secrets_repo::pgp::{self, RecipientSet, Validity};
use crate::secrets_repo::signing::AllowedSigners;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory under the repo's git directory that holds rekey's state.
pub const STATE_DIR: &str = "rekey";
/// The rotation journal, in the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// The redo log of a multi-file write in progress, in the state directory.
pub const WRITE_LOG_FILE: &str = "writes.json";
/// The largest secret file or metadata file rekey reads.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The largest recipient policy keyring rekey reads.
pub const MAX_POLICY_BYTES: u64 = 4 << 20;
/// The largest journal rekey reads.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 20;

/// A secret as the repo holds it: its metadata and the active version's bytes.
#[derive(Debug, Clone)]
pub struct Stored {
    pub meta: Metadata,
    pub active: Vec<u8>,
    /// The previous version's bytes, when the metadata has one.
    pub previous: Option<Vec<u8>>,
    /// The pending version's bytes (`<NAME>.pending.gpg`), when the metadata has one.
    pub pending: Option<Vec<u8>>,
}

impl Stored {
    /// The secret as the signing code sees it.
    pub fn on_disk(&self) -> crate::secrets_repo::authorship::OnDisk<'_> {
        crate::secrets_repo::authorship::OnDisk {
            meta: &self.meta,
            active: &self.active,
            previous: self.previous.as_deref(),
            pending: self.pending.as_deref(),
        }
    }
}

/// A secrets repo on disk. Reading needs nothing but the directory; writing
/// needs the [`Lock`].
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store for the repo at `root` (the operator's `--repo`).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The repo's root directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the registry pull secrets.
    pub fn registry_dir(&self) -> PathBuf {
        self.root.join(layout::REGISTRY_DIR)
    }

    /// The path of `name`'s file in `slot` (for messages and reports).
    pub fn path(&self, name: &str, slot: Slot) -> PathBuf {
        self.registry_dir().join(slot.file(name))
    }

    /// The path of `name`'s file in `slot` relative to the repo root, as git names it.
    pub fn repo_path(name: &str, slot: Slot) -> String {
        format!("{}/{}", layout::REGISTRY_DIR, slot.file(name))
    }

    /// Fails unless `dir` (under the root) is missing or a real directory.
    fn check_dir(&self, dir: &Path) -> anyhow::Result<bool> {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_dir() => Ok(true),
            Ok(_) => bail!(
                "{}: is not a directory (rekey does not follow links in the repo)",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
        }
    }

    /// Reads a file of the repo at a pinned path: `None` when it is missing.
    fn read_pinned(&self, path: &Path, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(parent) = path.parent() {
            self.check_dir(parent)?;
        }
        fsx::read_regular(path, max).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => anyhow::anyhow!("{}: {e}", path.display()),
            _ => anyhow::Error::new(e).context(format!("reading {}", path.display())),
        })
    }

    /// Reads the recipient policy keyring (`.rekey/recipients.asc`).
    pub fn read_policy(&self) -> anyhow::Result<Vec<u8>> {
        let file = self.root.join(layout::RECIPIENTS_FILE);
        self.read_pinned(&file, MAX_POLICY_BYTES)?.with_context(|| {
            format!(
                "{} is missing: put the policy keyring there (gpg --export --armor ... > {})",
                file.display(),
                layout::RECIPIENTS_FILE
            )
        })
    }

    /// Reads the allowed signers (`.rekey/signers.asc`): `None` when the
    /// repo has none (secrets may be unsigned).
    pub fn read_signers(&self) -> anyhow::Result<Option<AllowedSigners>> {
        let file = self.root.join(layout::SIGNERS_FILE);
        let Some(bytes) = self.read_pinned(&file, MAX_POLICY_BYTES)? else {
            return Ok(None);
        };
        Ok(Some(AllowedSigners::parse(&bytes, &file.display().to_string())?))
    }

    /// Reads and checks the recipient policy at `now`; warns through
    /// `events` about certificates that expire within the warning window.
    pub fn load_policy(
        &self,
        validity: Validity,
        now: SystemTime,
        events: &dyn Events,
    ) -> anyhow::Result<RecipientSet> {
        let bytes = self.read_policy()?;
        let file = self.root.join(layout::RECIPIENTS_FILE);
        let certs = pgp::parse_certs(&bytes, &file.display().to_string())?;
        let set = pgp::check_recipients(&certs, now, validity).context("checking the recipients")?;
        tracing::info!(
            "recipient policy {}: {}, keys {}",
            file.display(),
            crate::words::plural(set.certs.len(), "certificate", "certificates"),
            set.key_ids().into_iter().collect::<Vec<_>>().join(", ")
        );
        for c in &set.expiring_soon {
            if let Some(exp) = c.expires {
                events.event(Event::Warning(format!(
                    "recipient certificate {} expires at {}",
                    c.name,
                    pgp::show_time(exp)
                )));
            }
        }
        Ok(set)
    }

    /// Reads `name`'s metadata, if it exists; metadata naming any file but
    /// the pinned ones is refused.
    pub fn read_meta(&self, name: &str) -> anyhow::Result<Option<Metadata>> {
        check_name(name)?;
        let path = self.path(name, Slot::Meta);
        let Some(bytes) = self.read_pinned(&path, MAX_FILE_BYTES)? else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let meta = Metadata::parse(&bytes, &shown)?;
        meta.check_pinned(name, &shown)?;
        Ok(Some(meta))
    }

    /// Reads `name`'s encrypted file in `slot`, which must exist.
    pub fn read_file(&self, name: &str, slot: Slot) -> anyhow::Result<Vec<u8>> {
        check_name(name)?;
        let path = self.path(name, slot);
        self.read_pinned(&path, MAX_FILE_BYTES)?.with_context(|| {
            format!(
                "reading {}: the metadata describes it, but it is missing",
                path.display()
            )
        })
    }

    /// Reads `name`'s metadata and active version, if the secret exists.
    pub fn read_secret(&self, name: &str) -> anyhow::Result<Option<Stored>> {
        match self.read_meta(name)? {
            Some(meta) => {
                let active = self.read_file(name, Slot::Active)?;
                let previous = match &meta.previous {
                    Some(_) => Some(self.read_file(name, Slot::Previous)?),
                    None => None,
                };
                let pending = match &meta.pending {
                    Some(_) => Some(self.read_file(name, Slot::Pending)?),
                    None => None,
                };
                Ok(Some(Stored {
                    meta,
                    active,
                    previous,
                    pending,
                }))
            }
            None => Ok(None),
        }
    }

    /// Returns the file names in `registry/`, sorted (none when it is missing).
    fn registry_entries(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.registry_dir();
        if !self.check_dir(&dir)? {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Returns the names of the secrets that have a metadata file, sorted.
    pub fn secret_names(&self) -> anyhow::Result<Vec<String>> {
        let names: Vec<String> = self
            .registry_entries()?
            .iter()
            .filter_map(|f| layout::parse_file_name(f))
            .filter(|(_, slot)| *slot == Slot::Meta)
            .map(|(name, _)| name)
            .collect();
        tracing::info!(
            "{} holds {}{}{}",
            self.registry_dir().display(),
            crate::words::plural(names.len(), "secret", "secrets"),
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        );
        Ok(names)
    }

    /// Returns the `.gpg` files in `registry/` at pinned names, sorted.
    pub fn encrypted_files(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .registry_entries()?
            .into_iter()
            .filter(|f| layout::parse_file_name(f).is_some_and(|(_, slot)| slot != Slot::Meta))
            .collect())
    }

    /// Returns the entries of `registry/` that rekey does not know: anything
    /// but `<NAME>.gpg`, `<NAME>.previous.gpg`, `<NAME>.pending.gpg` and
    /// `<NAME>.meta.json` of a secret that has metadata, and rekey's own
    /// temporaries.
    pub fn unknown_files(&self) -> anyhow::Result<Vec<String>> {
        let entries = self.registry_entries()?;
        let secrets = self.secret_names()?;
        Ok(entries
            .into_iter()
            .filter(|f| !fsx::TEMP_PREFIXES.iter().any(|p| f.starts_with(p)))
            .filter(|f| !layout::parse_file_name(f).is_some_and(|(name, _)| secrets.contains(&name)))
            .collect())
    }

    /// Fails, listing them, when `registry/` holds files rekey does not know.
    pub fn refuse_unknown_files(&self) -> anyhow::Result<()> {
        let unknown = self.unknown_files()?;
        if !unknown.is_empty() {
            bail!(
                "{} holds files rekey does not know: {}; rekey writes and commits only <NAME>.gpg, <NAME>.previous.gpg, <NAME>.pending.gpg and <NAME>.meta.json: move the others out of the repo",
                self.registry_dir().display(),
                unknown.join(", ")
            );
        }
        Ok(())
    }

    /// Returns rekey's state directory for this clone, `<git dir>/rekey`,
    /// whether or not it exists yet. Fails when the repo is not the top of a
    /// git work tree.
    pub fn state_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = git::git_dir(&self.root).map_err(|e| {
            anyhow::anyhow!(
                "{} is not the top of a git work tree ({}): rekey keeps its lock, journal and redo log in the repo's git directory (<git dir>/{STATE_DIR}); run `git init` there, or point --repo at the clone's top",
                self.root.display(),
                e.stderr
            )
        })?;
        Ok(dir.join(STATE_DIR))
    }

    /// Reads the journal of an unfinished rotation, without the lock (for a
    /// dry run): `None` when there is none or the repo has no git directory.
    pub fn peek_journal(&self) -> anyhow::Result<Option<Journal>> {
        match self.state_dir() {
            Ok(dir) => read_journal(&dir),
            Err(_) => Ok(None),
        }
    }

    /// Takes the lock for a command that writes, or, for a dry run that
    /// writes nothing, only refuses a `registry/` holding unknown files (as
    /// the real run would).
    pub fn lock_unless_dry_run(&self, dry_run: bool, events: &dyn Events) -> anyhow::Result<Option<Lock>> {
        if dry_run {
            self.refuse_unknown_files()?;
            Ok(None)
        } else {
            self.lock(events).map(Some)
        }
    }

    /// Takes the repo's write lock (failing when another rekey holds it for
    /// two seconds), then finishes what a killed rekey left half done: validates and
    /// rolls forward the redo log, removes stray temporaries. Finally refuses
    /// a `registry/` holding files rekey does not know. Reports through
    /// `events` how many writes it finished.
    pub fn lock(&self, events: &dyn Events) -> anyhow::Result<Lock> {
        let state = self.state_dir()?;
        ensure_private_dir(&state)?;
        let handle = fsx::lock_dir(&state).map_err(|e| match e {
            fsx::LockError::Busy(_) => anyhow::anyhow!(
                "another rekey is writing to {} (it holds a lock on {})",
                self.root.display(),
                state.display()
            ),
            other => anyhow::Error::new(other),
        })?;
        let lock = Lock {
            store: self.clone(),
            state,
            _handle: handle,
        };
        tracing::debug!("holding the write lock on {}", lock.state.display());
        let rolled = lock.recover()?;
        if rolled > 0 {
            events.event(Event::Status(format!(
                "finished {} of an interrupted run",
                crate::words::plural(rolled, "file write", "file writes")
            )));
        }
        self.refuse_unknown_files()?;
        Ok(lock)
    }
}

/// Reads the file at `path` (relative to the repo root) as committed at
/// `rev`, with the same rules as the work tree: it must be a regular,
/// non-executable file (git mode 100644) of at most `max` bytes; a symbolic
/// link, an executable or a directory is an error naming the path. `None`
/// when `rev` has no such path. For reading a pull request's content.
pub fn read_at_revision(repo: &Path, rev: &str, path: &str, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(entry) = git::tree_entry(repo, rev, path)? else {
        return Ok(None);
    };
    let why = match (entry.kind.as_str(), entry.mode.as_str()) {
        ("blob", "100644") => None,
        ("blob", "120000") => Some("is a symbolic link (rekey does not follow links in the repo)".to_owned()),
        ("blob", "100755") => Some("is executable".to_owned()),
        _ => Some("is not a regular file".to_owned()),
    };
    if let Some(why) = why {
        bail!("{path} at {rev}: {why}");
    }
    if entry.size.is_none_or(|s| s > max) {
        bail!("{path} at {rev}: is larger than {max} bytes");
    }
    let bytes = git::blob(repo, &entry.oid)?;
    if bytes.len() as u64 > max {
        bail!("{path} at {rev}: is larger than {max} bytes");
    }
    tracing::debug!("read {path} at {rev} ({} bytes)", bytes.len());
    Ok(Some(bytes))
}

/// Reads `name`'s metadata as committed at `rev` (pinned like [`Store::read_meta`]).
pub fn read_meta_at_revision(repo: &Path, rev: &str, name: &str) -> anyhow::Result<Option<Metadata>> {
    check_name(name)?;
    let path = Store::repo_path(name, Slot::Meta);
    let Some(bytes) = read_at_revision(repo, rev, &path, MAX_FILE_BYTES)? else {
        return Ok(None);
    };
    let shown = format!("{path} at {rev}");
    let meta = Metadata::parse(&bytes, &shown)?;
    meta.check_pinned(name, &shown)?;
    Ok(Some(meta))
}

/// Reads `name`'s encrypted file in `slot` as committed at `rev`.
pub fn read_file_at_revision(repo: &Path, rev: &str, name: &str, slot: Slot) -> anyhow::Result<Option<Vec<u8>>> {
    check_name(name)?;
    read_at_revision(repo, rev, &Store::repo_path(name, slot), MAX_FILE_BYTES)
}

/// Fails unless `name` is a secret name that can only name files in `registry/`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if !layout::is_secret_name(name) {
        bail!(
            "`{}` is not a secret name: use 1 to 128 of A-Z, 0-9 and _",
            name.escape_debug()
        );
    }
    Ok(())
}

/// Creates `dir` 0700 if missing; it must be a real directory.
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    fsx::ensure_dir(dir).with_context(|| format!("{} is not writable", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!("{}: is not a directory", dir.display());
    }
    Ok(())
}

fn read_journal(state: &Path) -> anyhow::Result<Option<Journal>> {
    let path = state.join(JOURNAL_FILE);
    let bytes = fsx::read_regular(&path, MAX_JOURNAL_BYTES).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => anyhow::anyhow!("{}: {e}", path.display()),
        _ => anyhow::Error::new(e).context(format!("reading {}", path.display())),
    })?;
    match bytes {
        Some(b) => Ok(Some(Journal::parse(&b, &path.display().to_string())?)),
        None => Ok(None),
    }
}

/// Checks one rename of a redo log (relative to the repo root): a temporary
/// of rekey's in `registry/` onto a pinned secret file in `registry/`.
pub fn check_rename(tmp: &Path, target: &Path) -> Result<(), String> {
    // The exact spelling `registry/<file>`: no `.`, `..`, doubled or trailing slashes.
    fn in_registry(p: &Path) -> Option<String> {
        let text = p.to_str()?;
        let file = text.strip_prefix(layout::REGISTRY_DIR)?.strip_prefix('/')?;
        let plain = !file.is_empty() && !file.contains('/') && file != "." && file != "..";
        plain.then(|| file.to_owned())
    }
    let tmp_ok = in_registry(tmp).is_some_and(|f| {
        f.strip_prefix(".rekey-tmp-")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
    });
    let target_ok = in_registry(target).is_some_and(|f| layout::parse_file_name(&f).is_some());
    if tmp_ok && target_ok {
        Ok(())
    } else {
        Err(format!(
            "renames {:?} to {:?}, which is not one of rekey's temporaries in registry/ onto a secret file there",
            tmp.display().to_string(),
            target.display().to_string()
        ))
    }
}

/// Checks one removal of a redo log (relative to the repo root): only a
/// pending file (`registry/<NAME>.pending.gpg`), the one file rekey removes
/// as part of a write (promoting or dropping a pending version).
pub fn check_removal(target: &Path) -> Result<(), String> {
    let pending = target
        .to_str()
        .and_then(|t| t.strip_prefix(layout::REGISTRY_DIR)?.strip_prefix('/'))
        .filter(|f| !f.contains('/'))
        .and_then(layout::parse_file_name)
        .is_some_and(|(_, slot)| slot == Slot::Pending);
    if pending {
        Ok(())
    } else {
        Err(format!(
            "removes {:?}, which is not a pending file (registry/<NAME>.pending.gpg)",
            target.display().to_string()
        ))
    }
}

/// Files staged for one all-or-nothing write into `registry/`.
#[derive(Default)]
pub struct WritePlan {
    set: WriteSet,
}

impl WritePlan {
    /// Returns true when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// The exclusive right to write to a secrets repo, held until dropped.
pub struct Lock {
    store: Store,
    state: PathBuf,
    _handle: fsx::DirLock,
}

impl Lock {
    /// The state directory (`<git dir>/rekey`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    fn log(&self) -> PathBuf {
        self.state.join(WRITE_LOG_FILE)
    }

    /// Rolls a validated redo log forward and removes stray temporaries in
    /// `registry/` and the state directory. Returns the files renamed.
    fn recover(&self) -> anyhow::Result<usize> {
        let log = self.log();
        let mut done = 0;
        if let Some(redo) = fsx::read_log(&log).map_err(|e| {
            let reason = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
            anyhow::anyhow!(
                "{}: not a redo log rekey wrote ({reason}); nothing was renamed",
                log.display()
            )
        })? {
            let checks = redo
                .renames
                .iter()
                .map(|(tmp, target)| check_rename(tmp, target))
                .chain(redo.removals.iter().map(|r| check_removal(r)));
            for (i, check) in checks.enumerate() {
                if let Err(why) = check {
                    bail!(
                        "{}: entry {} {why}; nothing was renamed. rekey writes this file itself: remove it only if you know why it is there",
                        log.display(),
                        i + 1
                    );
                }
            }
            self.store.check_dir(&self.store.registry_dir())?;
            done = fsx::finish_log(&log, self.store.root(), &redo)?;
        }
        fsx::remove_strays(&self.store.registry_dir())?;
        fsx::remove_strays(&self.state)?;
        Ok(done)
    }

    /// Reads the journal of an unfinished rotation.
    pub fn read_journal(&self) -> anyhow::Result<Option<Journal>> {
        read_journal(&self.state)
    }

    /// Writes the journal atomically.
    pub fn write_journal(&self, journal: &Journal) -> anyhow::Result<()> {
        fsx::write_atomic(&self.journal_path(), &journal.render(), fsx::PUBLIC_MODE)?;
        Ok(())
    }

    /// Removes the journal (a finished rotation).
    pub fn remove_journal(&self) -> anyhow::Result<()> {
        let path = self.journal_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// The journal's path.
    pub fn journal_path(&self) -> PathBuf {
        self.state.join(JOURNAL_FILE)
    }

    /// Stages a secret's rewritten files (the active, previous and pending
    /// versions when they change, and the metadata) at the paths pinned by
    /// its name. When the metadata has no pending version, an existing
    /// `<NAME>.pending.gpg` is removed in the same write.
    pub fn stage(&self, plan: &mut WritePlan, rewrite: Rewrite) -> anyhow::Result<()> {
        let Rewrite {
            meta,
            active,
            previous,
            pending,
        } = rewrite;
        let name = meta.name.clone();
        check_name(&name)?;
        meta.check_pinned(&name, &self.store.path(&name, Slot::Meta).display().to_string())?;
        let dir = self.store.registry_dir();
        if !self.store.check_dir(&dir)? {
            ensure_private_dir(&dir)?;
        }
        if let Some(bytes) = active {
            plan.set
                .stage(&self.store.path(&name, Slot::Active), &bytes, fsx::PUBLIC_MODE)?;
        }
        if let (Some(_), Some(bytes)) = (&meta.previous, previous) {
            plan.set
                .stage(&self.store.path(&name, Slot::Previous), &bytes, fsx::PUBLIC_MODE)?;
        }
        let pending_path = self.store.path(&name, Slot::Pending);
        match (&meta.pending, pending) {
            (Some(_), Some(bytes)) => plan.set.stage(&pending_path, &bytes, fsx::PUBLIC_MODE)?,
            (Some(_), None) => {}
            (None, _) => {
                if std::fs::symlink_metadata(&pending_path).is_ok() {
                    plan.set.remove(&pending_path);
                }
            }
        }
        plan.set
            .stage(&self.store.path(&name, Slot::Meta), &meta.render(), fsx::PUBLIC_MODE)?;
        Ok(())
    }

    /// Writes every staged file or none, even across a crash (through the
    /// redo log). Returns the files written, relative to the repo root.
    pub fn apply(&self, plan: WritePlan) -> anyhow::Result<Vec<String>> {
        if plan.set.is_empty() {
            return Ok(Vec::new());
        }
        let written = plan.set.commit_logged(&self.log(), self.store.root())?;
        Ok(written.iter().map(|p| p.display().to_string()).collect())
    }

    /// Like [`Lock::apply`], but stops after `steps` renames and removals,
    /// leaving the redo log, as a crash there would (for tests of recovery).
    #[cfg(test)]
    pub(crate) fn apply_crashing(&self, plan: WritePlan, steps: usize) -> anyhow::Result<()> {
        plan.set.commit_logged_crashing(&self.log(), self.store.root(), steps)?;
        Ok(())
    }

    /// Returns the files of `name` that exist, relative to the repo root
    /// (what a commit of that secret holds), and a pending file HEAD has
    /// that a promotion removed (so that the commit records the removal).
    pub fn secret_files(&self, name: &str) -> anyhow::Result<Vec<String>> {
        check_name(name)?;
        let mut out = Vec::new();
        for slot in Slot::ALL {
            let path = self.store.path(name, slot);
            let repo_path = Store::repo_path(name, slot);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file())
                || (slot == Slot::Pending
                    && git::tree_entry(self.store.root(), "HEAD", &repo_path).is_ok_and(|e| e.is_some()))
            {
                out.push(repo_path);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::world::{NoEvents, RecordedEvents};
    use std::os::unix::fs::PermissionsExt;

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    fn repo() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        git(tmp.path(), &["init", "-q"]);
        std::fs::create_dir(tmp.path().join("registry")).unwrap();
        let store = Store::new(tmp.path());
        (tmp, store)
    }

    #[test]
    fn state_lives_in_the_git_dir_and_a_plain_dir_is_refused() {
        let (tmp, store) = repo();
        let lock = store.lock(&NoEvents).unwrap();
        assert_eq!(
            std::fs::canonicalize(lock.state_dir()).unwrap(),
            std::fs::canonicalize(tmp.path().join(".git/rekey")).unwrap()
        );
        let mode = std::fs::metadata(lock.state_dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A second writer is refused while the first holds the lock.
        let err = store.lock(&NoEvents).err().unwrap().to_string();
        assert!(err.contains("another rekey is writing to"), "{err}");
        drop(lock);
        store.lock(&NoEvents).unwrap();
        let plain = tempfile::tempdir().unwrap();
        let err = Store::new(plain.path()).lock(&NoEvents).err().unwrap().to_string();
        assert!(err.contains("is not the top of a git work tree"), "{err}");
        assert_eq!(std::fs::read_dir(plain.path()).unwrap().count(), 0, "nothing written");
    }

    #[test]
    fn a_redo_log_is_validated_before_anything_is_renamed() {
        let (tmp, store) = repo();
        let state = tmp.path().join(".git/rekey");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(tmp.path().join("registry/.rekey-tmp-abc"), b"new").unwrap();
        std::fs::write(tmp.path().join(".rekey-hook"), b"#!/bin/sh").unwrap();
        for hostile in [
            r#"{"renames": [], "removals": ["registry/JP.gpg"]}"#,
            r#"{"renames": [], "removals": ["registry/JP.meta.json"]}"#,
            r#"{"renames": [], "removals": [".git/config"]}"#,
            r#"{"renames": [], "removals": ["registry/../JP.pending.gpg"]}"#,
            r#"{"renames": [], "removals": ["registry/sub/JP.pending.gpg"]}"#,
            r#"{"renames": [["registry/.rekey-tmp-abc", "registry/JP.gpg"]], "removals": ["/tmp/JP.pending.gpg"]}"#,
            r#"[[".rekey-hook", ".git/hooks/post-commit"]]"#,
            r#"[["registry/.rekey-tmp-abc/", "registry/JP.gpg"]]"#,
            r#"[["registry//.rekey-tmp-abc", "registry/JP.gpg"]]"#,
            r#"[["registry/.rekey-tmp-abc", "./registry/JP.gpg"]]"#,
            r#"[["registry/.rekey-tmp-abc", "registry/../x.gpg"]]"#,
            r#"[["registry/.rekey-tmp-abc", "/tmp/X.gpg"]]"#,
            r#"[["registry/.rekey-tmp-abc", "registry/notes.txt"]]"#,
            r#"[["registry/JP.gpg", "registry/US.gpg"]]"#,
            "not json",
        ] {
            std::fs::write(state.join(WRITE_LOG_FILE), hostile).unwrap();
            let err = store.lock(&NoEvents).err().unwrap().to_string();
            assert!(err.contains("nothing was renamed"), "{hostile}: {err}");
            assert!(tmp.path().join("registry/.rekey-tmp-abc").exists(), "{hostile}");
            assert!(!tmp.path().join(".git/hooks/post-commit").exists());
        }
        // rekey's own log is rolled forward, a promotion's removal of the
        // pending file included.
        std::fs::write(
            state.join(WRITE_LOG_FILE),
            r#"{"renames": [["registry/.rekey-tmp-abc", "registry/JP.gpg"]], "removals": ["registry/JP.pending.gpg"]}"#,
        )
        .unwrap();
        std::fs::write(tmp.path().join("registry/JP.meta.json"), b"{}").unwrap();
        std::fs::write(tmp.path().join("registry/JP.pending.gpg"), b"new").unwrap();
        let events = RecordedEvents::default();
        store.lock(&events).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("registry/JP.gpg")).unwrap(), b"new");
        assert!(!tmp.path().join("registry/JP.pending.gpg").exists());
        assert!(!state.join(WRITE_LOG_FILE).exists());
        assert_eq!(events.events().len(), 1);
    }

    /// Property: whatever bytes a redo log holds (mutations of a real one),
    /// parsing never panics and every rename that passes validation is one
    /// of rekey's temporaries in `registry/` onto a pinned file there.
    #[test]
    fn no_mutated_redo_log_passes_with_a_rename_outside_registry() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("writes.json");
        let seeds: [&[u8]; 4] = [
            br#"[["registry/.rekey-tmp-aB3","registry/JP_X.gpg"],["registry/.rekey-tmp-Zz9","registry/JP_X.meta.json"]]"#,
            br#"{"renames":[["registry/.rekey-tmp-aB3","registry/JP_X.gpg"]],"removals":["registry/JP_X.pending.gpg"]}"#,
            br#"[["registry/.rekey-tmp-q","registry/US.previous.gpg"]]"#,
            br#"[[".rekey/hook",".git/hooks/post-commit"]]"#,
        ];
        let alphabet = b"./\"[]_-,xX09registy\0\n";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for i in 0..2000 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => bytes.truncate(at.max(1)),
                }
            }
            std::fs::write(&log, &bytes).unwrap();
            let Ok(Some(redo)) = fsx::read_log(&log) else {
                continue;
            };
            let renames = redo.renames;
            if renames.iter().all(|(t, g)| check_rename(t, g).is_ok())
                && redo.removals.iter().all(|r| check_removal(r).is_ok())
            {
                for removed in &redo.removals {
                    let file = removed.to_str().unwrap().strip_prefix("registry/").unwrap();
                    assert_eq!(layout::parse_file_name(file).unwrap().1, Slot::Pending, "{file}");
                }
                accepted += 1;
                for (tmp, target) in &renames {
                    let (tmp, target) = (tmp.to_string_lossy(), target.to_string_lossy());
                    assert!(
                        tmp.starts_with("registry/.rekey-tmp-") && !tmp[9..].contains('/'),
                        "{tmp}"
                    );
                    let file = target.strip_prefix("registry/").unwrap();
                    assert!(layout::parse_file_name(file).is_some(), "{target}");
                }
            }
        }
        assert!(accepted > 0, "the seeds themselves pass");
    }

    #[test]
    fn reads_at_a_revision_are_pinned_too() {
        let (tmp, _) = repo();
        let d = tmp.path();
        let reg = d.join("registry");
        std::fs::write(reg.join("JP.gpg"), b"sealed").unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", reg.join("US.gpg")).unwrap();
        std::fs::write(reg.join("DE.gpg"), b"#!/bin/sh").unwrap();
        std::fs::set_permissions(reg.join("DE.gpg"), std::fs::Permissions::from_mode(0o755)).unwrap();
        git(d, &["add", "."]);
        git(d, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]);
        assert_eq!(
            read_file_at_revision(d, "HEAD", "JP", Slot::Active).unwrap().unwrap(),
            b"sealed"
        );
        assert_eq!(read_file_at_revision(d, "HEAD", "UK", Slot::Active).unwrap(), None);
        let err = read_file_at_revision(d, "HEAD", "US", Slot::Active)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "registry/US.gpg at HEAD: is a symbolic link (rekey does not follow links in the repo)"
        );
        let err = read_file_at_revision(d, "HEAD", "DE", Slot::Active)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("is executable"), "{err}");
        let err = read_at_revision(d, "HEAD", "registry", 10).unwrap_err().to_string();
        assert!(err.ends_with("is not a regular file"), "{err}");
        let err = read_at_revision(d, "HEAD", "registry/JP.gpg", 3)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("is larger than 3 bytes"), "{err}");
        assert!(read_file_at_revision(d, "HEAD", "../x", Slot::Active).is_err());
    }

    #[test]
    fn reads_follow_no_links_and_refuse_unknown_files() {
        let (tmp, store) = repo();
        let reg = tmp.path().join("registry");
        std::os::unix::fs::symlink("/proc/self/environ", reg.join("JP.gpg")).unwrap();
        let err = store.read_file("JP", Slot::Active).unwrap_err().to_string();
        assert!(err.contains("registry/JP.gpg: is a symbolic link"), "{err}");
        std::fs::remove_file(reg.join("JP.gpg")).unwrap();
        std::fs::create_dir(reg.join("JP.gpg")).unwrap();
        let err = store.read_file("JP", Slot::Active).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        std::fs::remove_dir(reg.join("JP.gpg")).unwrap();
        std::fs::write(reg.join("JP.gpg"), vec![0u8; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let err = store.read_file("JP", Slot::Active).unwrap_err().to_string();
        assert!(err.contains("is larger than"), "{err}");
        assert!(store.read_file("../x", Slot::Active).is_err());
        // JP.gpg has no metadata; notes.txt is not rekey's.
        std::fs::write(reg.join("notes.txt"), b"plain").unwrap();
        std::fs::write(reg.join(".rekey-tmp-x"), b"").unwrap();
        assert_eq!(store.unknown_files().unwrap(), ["JP.gpg", "notes.txt"]);
        let err = store.lock(&NoEvents).err().unwrap().to_string();
        assert!(
            err.contains("holds files rekey does not know: JP.gpg, notes.txt"),
            "{err}"
        );
        // The stray temporary went with the recovery.
        assert!(!reg.join(".rekey-tmp-x").exists());
        // A registry/ that is a link is refused.
        std::fs::remove_dir_all(&reg).unwrap();
        std::os::unix::fs::symlink("/etc", &reg).unwrap();
        let err = store.read_meta("JP").unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
