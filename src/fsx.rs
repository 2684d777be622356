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
    sync_dir(parent_of(path)).map_err(err)
}

/// Several files written all together or not at all.
///
/// Contents are staged into temporary files first; only when every one is
/// on disk are they renamed into place. If a rename fails part way, the
/// files already replaced are restored from hard-linked backups.
#[derive(Default)]
pub struct WriteSet {
    staged: Vec<(PathBuf, NamedTempFile)>,
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

    /// Returns the number of staged files.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Returns true when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
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
                Ok(_) => done += 1,
                Err(e) => {
                    failure = Some(WriteError { path, source: e.error });
                    break;
                }
            }
        }
        if let Some(failure) = failure {
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
        sync_parents(backups.iter().map(|(p, _)| p.as_path()))
    }
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

impl WriteSet {
    /// Renames every staged file into place so that even a crash (SIGKILL,
    /// power loss) leaves all of them old or all new once [`recover`] has run.
    ///
    /// The staged temporary files are kept, then a redo log naming each
    /// rename is written atomically to `log`; only then are the renames done
    /// and the log removed. A crash before the log exists leaves the targets
    /// untouched (the temporaries are stray files that `recover` removes); a
    /// crash after it is rolled forward by `recover`.
    pub fn commit_logged(self, log: &Path) -> Result<(), WriteError> {
        let mut renames: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(self.staged.len());
        for (path, tmp) in self.staged {
            let kept = tmp.into_temp_path().keep().map_err(|e| WriteError {
                path: path.clone(),
                source: e.error,
            })?;
            renames.push((kept, path));
        }
        let text = serde_json::to_vec(&renames).map_err(|e| WriteError {
            path: log.to_owned(),
            source: e.into(),
        })?;
        write_atomic(log, &text, PUBLIC_MODE)?;
        roll_forward(&renames)?;
        fs::remove_file(log).map_err(|source| WriteError {
            path: log.to_owned(),
            source,
        })?;
        sync_dir(parent_of(log)).map_err(|source| WriteError {
            path: log.to_owned(),
            source,
        })
    }
}

fn roll_forward(renames: &[(PathBuf, PathBuf)]) -> Result<(), WriteError> {
    for (tmp, target) in renames {
        match fs::rename(tmp, target) {
            Ok(()) => {}
            // Renamed before a crash: nothing left to do for this one.
            Err(e) if e.kind() == io::ErrorKind::NotFound && target.exists() => {}
            Err(source) => {
                return Err(WriteError {
                    path: target.clone(),
                    source,
                });
            }
        }
    }
    sync_parents(renames.iter().map(|(_, t)| t.as_path()))
}

/// Finishes a [`WriteSet::commit_logged`] that a crash interrupted, then
/// removes temporary files left by writes that never reached their log, in
/// each of `dirs`. Returns the number of files rolled forward.
pub fn recover(log: &Path, dirs: &[&Path]) -> Result<usize, WriteError> {
    let err = |path: &Path, source| WriteError {
        path: path.to_owned(),
        source,
    };
    let mut done = 0;
    match fs::read(log) {
        Ok(bytes) => {
            let renames: Vec<(PathBuf, PathBuf)> =
                serde_json::from_slice(&bytes).map_err(|e| err(log, io::Error::new(io::ErrorKind::InvalidData, e)))?;
            done = renames.iter().filter(|(tmp, _)| tmp.exists()).count();
            roll_forward(&renames)?;
            fs::remove_file(log).map_err(|e| err(log, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(log, e)),
    }
    for dir in dirs {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(dir, e)),
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".rekey-tmp-") {
                fs::remove_file(entry.path()).map_err(|e| err(&entry.path(), e))?;
            }
        }
    }
    Ok(done)
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

/// Creates `dir` (and parents) if missing, and checks it is a writable directory.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
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
    fn recover_rolls_a_logged_commit_forward_and_removes_strays() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, log) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("log"));
        fs::write(&a, b"old a").unwrap();
        fs::write(&b, b"old b").unwrap();
        // Simulate a crash after the log and the first rename: stage by hand.
        let ta = dir.path().join(".rekey-tmp-a");
        let tb = dir.path().join(".rekey-tmp-b");
        fs::write(&tb, b"new b").unwrap();
        fs::write(&log, serde_json::to_vec(&[(&ta, &a), (&tb, &b)]).unwrap()).unwrap();
        fs::write(&a, b"new a").unwrap();
        fs::write(dir.path().join(".rekey-tmp-stray"), b"partial").unwrap();
        assert_eq!(recover(&log, &[dir.path()]).unwrap(), 1);
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(recover(&log, &[dir.path()]).unwrap(), 0);
    }

    #[test]
    fn commit_logged_writes_all_and_leaves_no_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut set = WriteSet::new();
        set.stage(&dir.path().join("x"), b"1", SECRET_MODE).unwrap();
        set.stage(&dir.path().join("y"), b"2", PUBLIC_MODE).unwrap();
        set.commit_logged(&log).unwrap();
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
