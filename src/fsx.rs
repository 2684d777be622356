//! Atomic file writes: a reader sees the old file or the new one, never a
//! part of either, and a failure leaves existing files untouched.
//!
//! Each file is written to a temporary file in the same directory, flushed
//! with fsync and renamed over the target; the directory is then synced.
//! [`WriteSet`] extends this to several files that must change together.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Mode for files that hold a secret in plain text.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for files that hold nothing secret.
pub const PUBLIC_MODE: u32 = 0o644;

/// An error naming the file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn stage(path: &Path, bytes: &[u8], mode: u32) -> io::Result<NamedTempFile> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".rekey-tmp-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    // The builder's mode is filtered by the umask; set it exactly.
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let tmp = stage(path, bytes, mode).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    sync_dir(parent_of(path)).map_err(err)?;
    tracing::info!("wrote {}", path.display());
    Ok(())
}

/// Several files written all together or not at all.
///
/// Contents are staged into temporary files first; only when every one is
/// on disk are they renamed into place. If a rename fails part way, the
/// files already replaced are restored from hard-linked backups.
#[derive(Default)]
pub struct WriteSet {
    staged: Vec<(PathBuf, NamedTempFile)>,
    /// Files removed once every staged file is in place.
    removals: Vec<PathBuf>,
}

impl WriteSet {
    /// Returns an empty set.
    pub fn new() -> WriteSet {
        WriteSet::default()
    }

    /// Stages `bytes` for `path` with `mode`; nothing is visible yet.
    pub fn stage(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
        let tmp = stage(path, bytes, mode).map_err(|source| WriteError {
            path: path.to_owned(),
            source,
        })?;
        self.staged.push((path.to_owned(), tmp));
        Ok(())
    }

    /// Stages many files at once: they are written and fsynced by `threads`
    /// threads in parallel (the file system batches concurrent syncs), which
    /// makes large batches several times faster. Nothing is visible yet.
    pub fn stage_parallel(&mut self, files: &[(PathBuf, &[u8])], mode: u32, threads: usize) -> Result<(), WriteError> {
        let chunk = files.len().div_ceil(threads.max(1)).max(1);
        let results: Vec<Result<Vec<(PathBuf, NamedTempFile)>, WriteError>> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|c| {
                    s.spawn(move || {
                        c.iter()
                            .map(|(path, bytes)| {
                                stage(path, bytes, mode)
                                    .map(|t| (path.clone(), t))
                                    .map_err(|source| WriteError {
                                        path: path.clone(),
                                        source,
                                    })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(files.chunks(chunk))
                .map(|(h, c)| {
                    h.join().unwrap_or_else(|_| {
                        Err(WriteError {
                            path: c.first().map(|(p, _)| p.clone()).unwrap_or_default(),
                            source: io::Error::other("a writer thread panicked"),
                        })
                    })
                })
                .collect()
        });
        for r in results {
            self.staged.extend(r?);
        }
        Ok(())
    }

    /// Stages the removal of `path`, done after every staged file is in
    /// place (a missing file is already removed). Nothing is removed yet.
    pub fn remove(&mut self, path: &Path) {
        self.removals.push(path.to_owned());
    }

    /// Returns the number of staged files and removals.
    pub fn len(&self) -> usize {
        self.staged.len() + self.removals.len()
    }

    /// Returns true when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty() && self.removals.is_empty()
    }

    /// Renames every staged file into place, or restores the old files.
    pub fn commit(self) -> Result<(), WriteError> {
        // Back up existing targets by hard link, so a failed rename can be undone.
        let mut backups: Vec<(PathBuf, Option<PathBuf>)> = Vec::with_capacity(self.staged.len());
        for (path, _) in &self.staged {
            let backup = match fs::symlink_metadata(path) {
                Ok(_) => {
                    let b = backup_path(path);
                    if let Err(source) = fs::hard_link(path, &b) {
                        cleanup_backups(&backups);
                        return Err(WriteError {
                            path: path.clone(),
                            source,
                        });
                    }
                    Some(b)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    cleanup_backups(&backups);
                    return Err(WriteError {
                        path: path.clone(),
                        source,
                    });
                }
            };
            backups.push((path.clone(), backup));
        }
        let mut done = 0;
        let mut failure = None;
        for (path, tmp) in self.staged {
            match tmp.persist(&path) {
                Ok(_) => {
                    tracing::info!("wrote {}", path.display());
                    done += 1;
                }
                Err(e) => {
                    failure = Some(WriteError { path, source: e.error });
                    break;
                }
            }
        }
        if let Some(failure) = failure {
            tracing::info!(
                "restoring {} after a failed write",
                crate::words::plural(done, "file", "files")
            );
            for (path, backup) in backups.iter().take(done) {
                match backup {
                    Some(b) => {
                        let _ = fs::rename(b, path);
                    }
                    None => {
                        let _ = fs::remove_file(path);
                    }
                }
            }
            cleanup_backups(&backups);
            return Err(failure);
        }
        cleanup_backups(&backups);
        // Removals come last: a failure here leaves every new file in place.
        remove_all(&self.removals)?;
        sync_parents(
            backups
                .iter()
                .map(|(p, _)| p.as_path())
                .chain(self.removals.iter().map(PathBuf::as_path)),
        )
    }
}

/// Removes each file (one already missing is removed).
fn remove_all(paths: &[PathBuf]) -> Result<(), WriteError> {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => tracing::info!("removed {}", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WriteError {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Syncs the directory of each path once, so that renames in it are durable.
fn sync_parents<'a>(paths: impl Iterator<Item = &'a Path>) -> Result<(), WriteError> {
    let mut dirs: Vec<&Path> = paths.map(parent_of).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        sync_dir(dir).map_err(|source| WriteError {
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The prefixes of the temporary files rekey names in a directory it writes:
/// staged contents, hard-linked backups and writability probes. A file with
/// one of them is never a target, so removing it is always safe once no
/// rekey is writing the directory.
pub const TEMP_PREFIXES: [&str; 3] = [".rekey-tmp-", ".rekey-bak-", ".rekey-probe-"];

/// The largest redo log [`read_log`] accepts.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

/// One rename of a redo log: a staged temporary and its target, both
/// relative to the log's base directory.
pub type Rename = (PathBuf, PathBuf);

/// A redo log: renames, then removals, all relative to the log's base
/// directory. Without removals it is written as the bare list of renames
/// (the format before removals existed), so old logs still read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedoLog {
    pub renames: Vec<Rename>,
    pub removals: Vec<PathBuf>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum LogFormat {
    Renames(Vec<Rename>),
    Full {
        renames: Vec<Rename>,
        removals: Vec<PathBuf>,
    },
}

impl RedoLog {
    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        if self.removals.is_empty() {
            serde_json::to_vec(&self.renames)
        } else {
            serde_json::to_vec(&serde_json::json!({
                "renames": self.renames,
                "removals": self.removals,
            }))
        }
    }

    fn decode(bytes: &[u8]) -> serde_json::Result<RedoLog> {
        Ok(match serde_json::from_slice(bytes)? {
            LogFormat::Renames(renames) => RedoLog {
                renames,
                removals: Vec::new(),
            },
            LogFormat::Full { renames, removals } => RedoLog { renames, removals },
        })
    }
}

impl WriteSet {
    /// Renames every staged file into place so that even a crash (SIGKILL,
    /// power loss) leaves all of them old or all new once the log has been
    /// rolled forward ([`read_log`], then [`finish_log`]).
    ///
    /// The staged temporary files are kept, then a redo log naming each
    /// rename (relative to `base`, under which every target must be) is
    /// written atomically to `log`; only then are the renames done and the
    /// log removed. A crash before the log exists leaves the targets
    /// untouched (the temporaries are stray files that [`remove_strays`]
    /// removes); a crash after it is rolled forward by the next run.
    /// Staged removals are in the log too, done after the renames.
    /// Returns the targets and the removed files, relative to `base`.
    pub fn commit_logged(self, log: &Path, base: &Path) -> Result<Vec<PathBuf>, WriteError> {
        let redo = self.write_log(log, base)?;
        finish_log(log, base, &redo)?;
        let RedoLog { renames, removals } = redo;
        Ok(renames.into_iter().map(|(_, target)| target).chain(removals).collect())
    }

    /// Like [`WriteSet::commit_logged`], but stops after `steps` of its
    /// renames and removals, as a crash there would: for tests of recovery.
    #[cfg(test)]
    pub fn commit_logged_crashing(self, log: &Path, base: &Path, steps: usize) -> Result<(), WriteError> {
        let redo = self.write_log(log, base)?;
        let renames = redo.renames.len();
        let partial = RedoLog {
            renames: redo.renames.into_iter().take(steps).collect(),
            removals: redo.removals.into_iter().take(steps.saturating_sub(renames)).collect(),
        };
        roll_forward(base, &partial)
    }

    /// Keeps the staged temporaries and writes the redo log naming them.
    fn write_log(self, log: &Path, base: &Path) -> Result<RedoLog, WriteError> {
        // Temporaries are named by absolute paths while `base` and the
        // targets may be relative (`--repo .`): compare them all absolute.
        let absolute = |p: &Path| {
            std::path::absolute(p).map_err(|source| WriteError {
                path: p.to_owned(),
                source,
            })
        };
        let abs_base = absolute(base)?;
        let relative = |p: &Path| {
            absolute(p)?
                .strip_prefix(&abs_base)
                .map(Path::to_owned)
                .map_err(|_| WriteError {
                    path: p.to_owned(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not under the redo log's base directory"),
                })
        };
        // Every path is checked before any temporary is kept, so a refusal
        // leaves no stray file behind (dropping the set removes them).
        let mut redo = RedoLog::default();
        for (path, tmp) in &self.staged {
            redo.renames.push((relative(tmp.path())?, relative(path)?));
        }
        for path in &self.removals {
            redo.removals.push(relative(path)?);
        }
        for (path, tmp) in self.staged {
            tmp.into_temp_path()
                .keep()
                .map_err(|e| WriteError { path, source: e.error })?;
        }
        let text = redo.encode().map_err(|e| WriteError {
            path: log.to_owned(),
            source: e.into(),
        })?;
        write_atomic(log, &text, PUBLIC_MODE)?;
        tracing::info!(
            "redo log {} names {} and {} to remove",
            log.display(),
            crate::words::plural(redo.renames.len(), "rename", "renames"),
            crate::words::plural(redo.removals.len(), "file", "files")
        );
        Ok(redo)
    }
}

fn roll_forward(base: &Path, redo: &RedoLog) -> Result<(), WriteError> {
    let renames = &redo.renames;
    for (tmp, target) in renames {
        let (tmp, target) = (base.join(tmp), base.join(target));
        match fs::rename(&tmp, &target) {
            Ok(()) => tracing::info!("wrote {} (renamed from {})", target.display(), tmp.display()),
            // Renamed before a crash: nothing left to do for this one.
            Err(e) if e.kind() == io::ErrorKind::NotFound && target.exists() => {}
            Err(source) => return Err(WriteError { path: target, source }),
        }
    }
    let removals: Vec<PathBuf> = redo.removals.iter().map(|r| base.join(r)).collect();
    remove_all(&removals)?;
    let targets: Vec<PathBuf> = renames.iter().map(|(_, t)| base.join(t)).chain(removals).collect();
    sync_parents(targets.iter().map(PathBuf::as_path))
}

/// Reads a redo log that a crash left, without acting on it: `None` when
/// there is none. The log must be a regular file (not a link) of at most
/// [`MAX_LOG_BYTES`]; its renames are relative to the log's base directory.
/// The caller validates every rename and removal before calling [`finish_log`].
pub fn read_log(log: &Path) -> Result<Option<RedoLog>, WriteError> {
    let err = |source| WriteError {
        path: log.to_owned(),
        source,
    };
    let Some(bytes) = read_regular(log, MAX_LOG_BYTES).map_err(err)? else {
        return Ok(None);
    };
    let redo = RedoLog::decode(&bytes).map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    Ok(Some(redo))
}

/// Does the renames and removals of a redo log (those not done before a
/// crash), then removes the log. Returns the number of files renamed or
/// removed.
pub fn finish_log(log: &Path, base: &Path, redo: &RedoLog) -> Result<usize, WriteError> {
    let pending = redo.renames.iter().filter(|(tmp, _)| base.join(tmp).exists()).count()
        + redo
            .removals
            .iter()
            .filter(|r| fs::symlink_metadata(base.join(r)).is_ok())
            .count();
    roll_forward(base, redo)?;
    let err = |source| WriteError {
        path: log.to_owned(),
        source,
    };
    fs::remove_file(log).map_err(err)?;
    sync_dir(parent_of(log)).map_err(err)?;
    tracing::info!("removed redo log {}", log.display());
    Ok(pending)
}

/// Removes the temporary files ([`TEMP_PREFIXES`]) that a killed rekey left
/// in `dir`; returns how many. Call it only while no other rekey writes
/// `dir` (hold the directory's lock). A missing `dir` has none.
pub fn remove_strays(dir: &Path) -> Result<usize, WriteError> {
    let err = |path: &Path, source| WriteError {
        path: path.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| err(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if TEMP_PREFIXES.iter().any(|p| name.starts_with(p)) {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!("removed stray temporary file {}", entry.path().display());
                    removed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(&entry.path(), e)),
            }
        }
    }
    Ok(removed)
}

/// An exclusive lock on a directory (an advisory `flock` on the directory
/// itself, so taking it writes nothing), held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("another rekey is writing to {} (it holds a lock on it)", .0.display())]
    Busy(PathBuf),
    #[error("locking {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Takes the exclusive lock on the directory `dir`, waiting at most
/// [`LOCK_WAIT`] for it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let io_err = |source| LockError::Io {
        path: dir.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(io_err)?;
    // A lock is also held, for an instant, by any process forked while the
    // descriptor was open (until its exec closes it): a few short retries
    // tell that apart from another rekey really writing.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(DirLock { _dir: file }),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(LockError::Busy(dir.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
}

/// How long [`lock_dir`] waits for a busy lock before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readies the directory a command writes its outputs into: creates it
/// (0700), takes its lock, and removes what a killed rekey left there
/// (temporaries holding a new secret, backups holding the old one). Hold
/// the returned lock until the writes are done.
pub fn prepare_output_dir(dir: &Path) -> anyhow::Result<DirLock> {
    use anyhow::Context;
    ensure_dir(dir).with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let lock = lock_dir(dir)?;
    remove_strays(dir)?;
    Ok(lock)
}

/// Reads `path` if it is a regular file of at most `max` bytes: `None` when
/// it does not exist. A symbolic link (not followed), a directory, a FIFO or
/// a device, and a file over `max` are errors (`InvalidData`), so that no
/// read ever leaves the file the caller named or blocks on it.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: the last component is a symbolic link.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "is a symbolic link (rekey does not follow links in the repo)",
            ));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "is not a regular file"));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {max} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {max} bytes"),
        ));
    }
    tracing::debug!("read {} ({} bytes)", path.display(), bytes.len());
    Ok(Some(bytes))
}

fn backup_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".rekey-bak-{}-{name}", std::process::id()))
}

fn cleanup_backups(backups: &[(PathBuf, Option<PathBuf>)]) {
    for (_, backup) in backups {
        if let Some(b) = backup {
            let _ = fs::remove_file(b);
        }
    }
}

/// Mode of the directories rekey creates: they may hold secrets.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and parents) if missing, mode 0700 whatever the umask,
/// and checks it is a writable directory. Existing directories keep their mode.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // The umask can only remove bits, so 0700 stays 0700 even under umask 000.
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    // Probe writability now, so that no work is done for an output that cannot be written.
    let probe = dir.join(format!(".rekey-probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        write_atomic(&path, b"one", SECRET_MODE).unwrap();
        write_atomic(&path, b"two", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left");
    }

    #[test]
    fn a_logged_commit_is_rolled_forward_and_strays_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, log) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("log"));
        fs::write(&a, b"old a").unwrap();
        fs::write(&b, b"old b").unwrap();
        // Simulate a crash after the log and the first rename: stage by hand.
        fs::write(dir.path().join(".rekey-tmp-b"), b"new b").unwrap();
        fs::write(&log, br#"[[".rekey-tmp-a", "a"], [".rekey-tmp-b", "b"]]"#).unwrap();
        fs::write(&a, b"new a").unwrap();
        fs::write(dir.path().join(".rekey-tmp-stray"), b"partial").unwrap();
        fs::write(dir.path().join(".rekey-bak-1-a"), b"old a").unwrap();
        let renames = read_log(&log).unwrap().unwrap();
        assert_eq!(finish_log(&log, dir.path(), &renames).unwrap(), 1);
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        assert_eq!(remove_strays(dir.path()).unwrap(), 2);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(read_log(&log).unwrap().is_none());
    }

    #[test]
    fn a_logged_removal_is_rolled_forward_after_the_renames() {
        let dir = tempfile::tempdir().unwrap();
        let (a, gone, log) = (dir.path().join("a"), dir.path().join("gone"), dir.path().join("log"));
        fs::write(&a, b"old a").unwrap();
        fs::write(&gone, b"to remove").unwrap();
        let mut set = WriteSet::new();
        set.stage(&a, b"new a", PUBLIC_MODE).unwrap();
        set.remove(&gone);
        // A crash after the log and the rename, before the removal.
        set.commit_logged_crashing(&log, dir.path(), 1).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert!(gone.exists());
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains("\"removals\":[\"gone\"]"), "{text}");
        let redo = read_log(&log).unwrap().unwrap();
        assert_eq!(finish_log(&log, dir.path(), &redo).unwrap(), 1);
        assert!(!gone.exists());
        assert!(!log.exists());
        // Without removals the log keeps its original form: a list of renames.
        let mut set = WriteSet::new();
        set.stage(&a, b"newer a", PUBLIC_MODE).unwrap();
        set.commit_logged_crashing(&log, dir.path(), 0).unwrap();
        assert!(fs::read_to_string(&log).unwrap().starts_with("[["));
        let redo = read_log(&log).unwrap().unwrap();
        assert!(redo.removals.is_empty());
        finish_log(&log, dir.path(), &redo).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"newer a");
        // A completed removal is not redone (and a missing file is fine).
        let mut set = WriteSet::new();
        set.remove(&gone);
        assert_eq!(set.commit_logged(&log, dir.path()).unwrap(), [PathBuf::from("gone")]);
    }

    #[test]
    fn read_regular_refuses_links_special_files_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap().unwrap(), b"12345");
        assert!(
            read_regular(&file, 4)
                .unwrap_err()
                .to_string()
                .contains("larger than 4 bytes")
        );
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(
            read_regular(&link, 5)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(
            read_regular(dir.path(), 5)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(
            read_regular(&fifo, 5)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert!(read_regular(&dir.path().join("missing"), 5).unwrap().is_none());
    }

    #[test]
    fn created_directories_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        ensure_dir(&deep).unwrap();
        for d in [dir.path().join("a"), deep] {
            assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, DIR_MODE, "{}", d.display());
        }
        let lock = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(LockError::Busy(_))));
        drop(lock);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn commit_logged_writes_all_and_leaves_no_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut set = WriteSet::new();
        set.stage(&dir.path().join("x"), b"1", SECRET_MODE).unwrap();
        set.stage(&dir.path().join("y"), b"2", PUBLIC_MODE).unwrap();
        let written = set.commit_logged(&log, dir.path()).unwrap();
        assert_eq!(written, [PathBuf::from("x"), PathBuf::from("y")]);
        assert_eq!(fs::read(dir.path().join("y")).unwrap(), b"2");
        assert_eq!(fs::metadata(dir.path().join("x")).unwrap().mode() & 0o777, 0o600);
        assert!(!log.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn stage_parallel_writes_every_file_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(PathBuf, &[u8])> = (0..40)
            .map(|i| (dir.path().join(format!("f{i}")), b"x" as &[u8]))
            .collect();
        let mut set = WriteSet::new();
        set.stage_parallel(&files, SECRET_MODE, 7).unwrap();
        assert_eq!(set.len(), 40);
        set.commit().unwrap();
        for (p, _) in &files {
            assert_eq!(fs::read(p).unwrap(), b"x");
            assert_eq!(fs::metadata(p).unwrap().mode() & 0o777, 0o600);
        }
        // A target in a missing directory fails staging; nothing new appears.
        let mut bad = files.clone();
        bad.push((dir.path().join("missing/f"), b"y"));
        let mut set = WriteSet::new();
        let err = set.stage_parallel(&bad, SECRET_MODE, 3).unwrap_err();
        assert_eq!(err.path, dir.path().join("missing/f"));
        drop(set);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 40, "no temp files left");
    }

    #[test]
    fn write_set_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"old").unwrap();
        // A target that is a non-empty directory cannot be replaced by rename.
        let blocked = dir.path().join("b");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        let mut set = WriteSet::new();
        set.stage(&a, b"new", SECRET_MODE).unwrap();
        set.stage(&blocked, b"new", SECRET_MODE).unwrap();
        let err = set.commit().unwrap_err();
        assert_eq!(err.path, blocked);
        assert_eq!(fs::read(&a).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
