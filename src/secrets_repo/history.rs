//! Enumerates what merging a branch adds to history: the commits of
//! `base..head`, each blob a commit added or changed (once, with the commit
//! and path where it first appeared, and the later commit that removed it),
//! commit messages, and file names (as bytes: non-UTF-8 names are kept).
//!
//! Runs the git CLI like the rest of the git edge. Everything is bounded:
//! more commits or blobs than the limits, or a blob larger than allowed, is
//! an error that says which limit and where, never a silent skip.

use super::git::GitError;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;

/// Bounds on one enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_commits: usize,
    pub max_blobs: usize,
    /// The largest blob read, in bytes.
    pub max_blob_bytes: u64,
    /// The total bytes of all blobs read.
    pub max_total_bytes: u64,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits {
            max_commits: 2000,
            max_blobs: 50_000,
            max_blob_bytes: 16 << 20,
            max_total_bytes: 512 << 20,
        }
    }
}

/// Why a range cannot be enumerated.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{base}..{head} has more than {limit} {what}; scan a smaller range or raise the limit")]
    TooMany {
        base: String,
        head: String,
        what: &'static str,
        limit: usize,
    },
    #[error("{path} (added in commit {commit}) is {size} bytes, more than the {limit}-byte limit for one file")]
    TooLarge {
        path: String,
        commit: String,
        size: u64,
        limit: u64,
    },
    #[error("the blobs of {base}..{head} total more than {limit} bytes")]
    TooMuch { base: String, head: String, limit: u64 },
    #[error("unexpected output from git {what}")]
    Parse { what: &'static str },
}

/// One commit of the range.
#[derive(Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: String,
    pub message: Vec<u8>,
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The message may be a leak: never shown.
        f.debug_struct("Commit")
            .field("id", &self.id)
            .field("message_len", &self.message.len())
            .finish()
    }
}

/// One blob a commit of the range added or changed.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    pub oid: String,
    /// The path where it first appeared, as bytes.
    pub path: Vec<u8>,
    /// The commit where it first appeared.
    pub commit: String,
    /// A later commit of the range that removed or replaced it, when the
    /// head no longer holds it: it stays in history all the same.
    pub removed_in: Option<String>,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents (and the name) may be a leak: never shown.
        f.debug_struct("Blob")
            .field("oid", &self.oid)
            .field("path_len", &self.path.len())
            .field("commit", &self.commit)
            .field("removed_in", &self.removed_in)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A file name a commit of the range added.
#[derive(Clone, PartialEq, Eq)]
pub struct Name {
    pub path: Vec<u8>,
    pub commit: String,
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The name may hold a key: only its length is shown.
        f.debug_struct("Name")
            .field("path_len", &self.path.len())
            .field("commit", &self.commit)
            .finish()
    }
}

/// What `base..head` adds to history.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// Oldest first.
    pub commits: Vec<Commit>,
    pub blobs: Vec<Blob>,
    pub names: Vec<Name>,
}

fn git_error(repo: &Path, args: &[&str], stderr: String) -> GitError {
    GitError {
        repo: repo.to_owned(),
        args: args.join(" "),
        stderr,
    }
}

fn run(repo: &Path, args: &[&str], input: Option<Vec<u8>>) -> Result<Vec<u8>, GitError> {
    tracing::debug!("running git -C {} {}", repo.display(), args.join(" "));
    let mut child = crate::childenv::command("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| git_error(repo, args, e.to_string()))?;
    // Feed stdin from a thread so that a full stdout pipe cannot deadlock us.
    let feeder = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })),
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(|e| git_error(repo, args, e.to_string()))?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    if !out.status.success() {
        return Err(git_error(
            repo,
            args,
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(out.stdout)
}

fn is_zero(oid: &[u8]) -> bool {
    oid.iter().all(|&b| b == b'0')
}

/// Returns the blob IDs of a tree, recursively.
fn tree_blobs(repo: &Path, rev: &str) -> Result<HashSet<Vec<u8>>, GitError> {
    let out = run(repo, &["ls-tree", "-r", "-z", "--full-tree", rev], None)?;
    Ok(out
        .split(|&b| b == 0)
        .filter_map(|entry| {
            // "<mode> blob <oid>\t<path>"
            let meta = entry.split(|&b| b == b'\t').next()?;
            let mut parts = meta.split(|&b| b == b' ');
            let (_, kind, oid) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == b"blob").then(|| oid.to_vec())
        })
        .collect())
}

/// A raw diff record of one commit.
struct RawChange {
    old_oid: Vec<u8>,
    new_oid: Vec<u8>,
    new_mode: Vec<u8>,
    status: u8,
    path: Vec<u8>,
}

/// Parses `git log --raw -z --format=%x01%H` output into commits and their changes.
fn parse_raw(out: &[u8]) -> Result<Vec<(String, Vec<RawChange>)>, HistoryError> {
    let mut commits = Vec::new();
    for chunk in out.split(|&b| b == 1).filter(|c| !c.is_empty()) {
        let mut fields = chunk.split(|&b| b == 0);
        let id = fields.next().ok_or(HistoryError::Parse { what: "log --raw" })?;
        let id = String::from_utf8_lossy(id.trim_ascii()).into_owned();
        let mut changes = Vec::new();
        while let Some(meta) = fields.next() {
            let meta = meta.trim_ascii();
            if meta.is_empty() {
                continue;
            }
            // ":<old mode> <new mode> <old oid> <new oid> <status>"
            let meta = meta
                .strip_prefix(b":")
                .ok_or(HistoryError::Parse { what: "log --raw" })?;
            let parts: Vec<&[u8]> = meta.split(|&b| b == b' ').collect();
            let [_, new_mode, old_oid, new_oid, status] = parts.as_slice() else {
                return Err(HistoryError::Parse { what: "log --raw" });
            };
            let path = fields.next().ok_or(HistoryError::Parse { what: "log --raw" })?;
            changes.push(RawChange {
                old_oid: old_oid.to_vec(),
                new_oid: new_oid.to_vec(),
                new_mode: new_mode.to_vec(),
                status: status.first().copied().unwrap_or(b'M'),
                path: path.to_vec(),
            });
        }
        commits.push((id, changes));
    }
    Ok(commits)
}

/// Enumerates what merging `head` into `base` adds to history.
pub fn enumerate(repo: &Path, base: &str, head: &str, limits: &HistoryLimits) -> Result<Range, HistoryError> {
    let range = format!("{base}..{head}");
    let too_many = |what: &'static str, limit: usize| HistoryError::TooMany {
        base: base.to_owned(),
        head: head.to_owned(),
        what,
        limit,
    };

    // Commit messages, oldest first.
    let log = run(
        repo,
        &[
            "log",
            "--reverse",
            "--topo-order",
            "-z",
            "--format=%H%n%B",
            &range,
            "--",
        ],
        None,
    )?;
    let mut commits = Vec::new();
    for record in log.split(|&b| b == 0).filter(|r| !r.trim_ascii().is_empty()) {
        if commits.len() >= limits.max_commits {
            return Err(too_many("commits", limits.max_commits));
        }
        let record = record.strip_prefix(b"\n").unwrap_or(record);
        let (id, message) = match memchr::memchr(b'\n', record) {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => (record, &b""[..]),
        };
        commits.push(Commit {
            id: String::from_utf8_lossy(id).into_owned(),
            message: message.to_vec(),
        });
    }
    if commits.is_empty() {
        return Ok(Range::default());
    }

    // Each commit's changes; merges against their first parent.
    let raw = run(
        repo,
        &[
            "log",
            "--reverse",
            "--topo-order",
            "--raw",
            "-z",
            "--no-renames",
            "--no-abbrev",
            "--diff-merges=first-parent",
            "--format=%x01%H",
            &range,
            "--",
        ],
        None,
    )?;
    let in_base = tree_blobs(repo, base)?;
    let in_head = tree_blobs(repo, head)?;

    let mut blobs: Vec<Blob> = Vec::new();
    let mut by_oid: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut names: Vec<Name> = Vec::new();
    let mut seen_names: HashSet<Vec<u8>> = HashSet::new();
    for (commit, changes) in parse_raw(&raw)? {
        for c in changes {
            // A later commit that deletes or replaces a blob of the range.
            if matches!(c.status, b'D' | b'M' | b'T')
                && let Some(&i) = by_oid.get(&c.old_oid)
                && blobs[i].removed_in.is_none()
                && !in_head.contains(&c.old_oid)
            {
                blobs[i].removed_in = Some(commit.clone());
            }
            if c.status == b'A' && seen_names.insert(c.path.clone()) {
                names.push(Name {
                    path: c.path.clone(),
                    commit: commit.clone(),
                });
            }
            let new_blob = matches!(c.status, b'A' | b'M' | b'T')
                && !is_zero(&c.new_oid)
                && c.new_mode != b"160000"
                && !in_base.contains(&c.new_oid)
                && !by_oid.contains_key(&c.new_oid);
            if new_blob {
                if blobs.len() >= limits.max_blobs {
                    return Err(too_many("new files", limits.max_blobs));
                }
                by_oid.insert(c.new_oid.clone(), blobs.len());
                blobs.push(Blob {
                    oid: String::from_utf8_lossy(&c.new_oid).into_owned(),
                    path: c.path,
                    commit: commit.clone(),
                    removed_in: None,
                    bytes: Vec::new(),
                });
            }
        }
    }
    if blobs.is_empty() {
        return Ok(Range { commits, blobs, names });
    }

    // Sizes first, so that nothing oversized is read.
    let mut list = Vec::new();
    for b in &blobs {
        list.extend_from_slice(b.oid.as_bytes());
        list.push(b'\n');
    }
    let sizes = run(repo, &["cat-file", "--batch-check=%(objectsize)"], Some(list.clone()))?;
    let mut total = 0u64;
    let mut size_lines = sizes.split(|&b| b == b'\n');
    for b in &blobs {
        let size: u64 = size_lines
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.trim().parse().ok())
            .ok_or(HistoryError::Parse {
                what: "cat-file --batch-check",
            })?;
        if size > limits.max_blob_bytes {
            return Err(HistoryError::TooLarge {
                path: String::from_utf8_lossy(&b.path).into_owned(),
                commit: b.commit.clone(),
                size,
                limit: limits.max_blob_bytes,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(HistoryError::TooMuch {
                base: base.to_owned(),
                head: head.to_owned(),
                limit: limits.max_total_bytes,
            });
        }
    }

    let contents = run(repo, &["cat-file", "--batch"], Some(list))?;
    let mut reader = BufReader::new(contents.as_slice());
    for b in &mut blobs {
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header).map_err(|_| HistoryError::Parse {
            what: "cat-file --batch",
        })?;
        // "<oid> blob <size>\n<contents>\n"
        let size: usize = header
            .trim_ascii()
            .rsplit(|&c| c == b' ')
            .next()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or(HistoryError::Parse {
                what: "cat-file --batch",
            })?;
        let mut bytes = vec![0u8; size];
        reader.read_exact(&mut bytes).map_err(|_| HistoryError::Parse {
            what: "cat-file --batch",
        })?;
        let mut nl = [0u8; 1];
        reader.read_exact(&mut nl).map_err(|_| HistoryError::Parse {
            what: "cat-file --batch",
        })?;
        b.bytes = bytes;
    }
    Ok(Range { commits, blobs, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_raw_log_records_with_byte_paths() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        let out = format!(
            "\x01{c1}\0\n:000000 100644 {zero} {a} A\0dir/n\u{e9}.txt\0:100644 000000 {a} {zero} D\0old\0\x01{c2}\0",
            c1 = "1".repeat(40),
            c2 = "2".repeat(40)
        );
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(b"\n:000000 100644 ");
        bytes.extend_from_slice(zero.as_bytes());
        bytes.extend_from_slice(b" ");
        bytes.extend_from_slice(a.as_bytes());
        bytes.extend_from_slice(b" A\0bad\xffname\0");
        let commits = parse_raw(&bytes).unwrap();
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].1.len(), 2);
        assert_eq!(commits[0].1[0].status, b'A');
        assert_eq!(commits[0].1[0].path, "dir/n\u{e9}.txt".as_bytes());
        assert_eq!(commits[0].1[1].status, b'D');
        assert_eq!(commits[1].1[0].path, b"bad\xffname");
        assert!(parse_raw(b"\x01abc\0:garbage\0x\0").is_err());
    }
}
