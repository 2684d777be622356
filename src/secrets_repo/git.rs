//! The git edge: the few git operations rekey needs, run through the git CLI
//! so that the user's configuration, hooks and credentials apply as usual.

use std::path::{Path, PathBuf};

/// A git command that failed, with git's own message.
#[derive(Debug, thiserror::Error)]
#[error("git {args} failed in {}: {stderr}", repo.display())]
pub struct GitError {
    pub repo: PathBuf,
    pub args: String,
    pub stderr: String,
}

/// How a file changed between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// A file that changed between two revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
}

fn run(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    // Arguments are revisions, paths and messages, never a secret (secrets
    // reach git only as file contents).
    tracing::debug!("running git -C {} {}", repo.display(), args.join(" "));
    let out = crate::childenv::command("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| GitError {
            repo: repo.to_owned(),
            args: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(GitError {
            repo: repo.to_owned(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Returns the full commit ID that `rev` names.
pub fn rev_parse(repo: &Path, rev: &str) -> Result<String, GitError> {
    let spec = format!("{rev}^{{commit}}");
    let out = run(repo, &["rev-parse", "--verify", "--quiet", &spec]).map_err(|mut e| {
        if e.stderr.is_empty() {
            e.stderr = format!("`{rev}` is not a commit");
        }
        e
    })?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Lists the files that differ between `base` and `head` (renames as delete plus add).
pub fn changed_files(repo: &Path, base: &str, head: &str) -> Result<Vec<Change>, GitError> {
    let out = run(repo, &["diff", "--name-status", "--no-renames", "-z", base, head, "--"])?;
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut changes = Vec::new();
    while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
        let kind = match status.first() {
            Some(b'A') => ChangeKind::Added,
            Some(b'D') => ChangeKind::Deleted,
            _ => ChangeKind::Modified,
        };
        changes.push(Change {
            kind,
            path: String::from_utf8_lossy(path).into_owned(),
        });
    }
    Ok(changes)
}

/// Returns a file's contents at `rev`, or `None` when it does not exist there.
pub fn show(repo: &Path, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
    let spec = format!("{rev}:{path}");
    if run(repo, &["cat-file", "-e", &spec]).is_err() {
        return Ok(None);
    }
    run(repo, &["cat-file", "blob", &spec]).map(Some)
}

/// Lists the files tracked at `rev`.
pub fn ls_tree(repo: &Path, rev: &str) -> Result<Vec<String>, GitError> {
    let out = run(repo, &["ls-tree", "-r", "-z", "--name-only", rev])?;
    Ok(out
        .split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect())
}

/// One entry of a tree at a revision, as `git ls-tree --long` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The git file mode: `100644` a file, `100755` an executable, `120000` a symbolic link, `040000` a tree.
    pub mode: String,
    /// `blob`, `tree` or `commit`.
    pub kind: String,
    pub oid: String,
    /// The blob's size (`None` for trees and submodules).
    pub size: Option<u64>,
}

/// Returns the entry at `path` in `rev`'s tree, or `None` when there is none.
pub fn tree_entry(repo: &Path, rev: &str, path: &str) -> Result<Option<TreeEntry>, GitError> {
    let out = run(repo, &["ls-tree", "-z", "--long", "--full-tree", rev, "--", path])?;
    for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let text = String::from_utf8_lossy(record);
        let Some((meta, name)) = text.split_once('\t') else {
            continue;
        };
        if name != path {
            continue;
        }
        let mut fields = meta.split_whitespace();
        if let (Some(mode), Some(kind), Some(oid), Some(size)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        {
            return Ok(Some(TreeEntry {
                mode: mode.to_owned(),
                kind: kind.to_owned(),
                oid: oid.to_owned(),
                size: size.parse().ok(),
            }));
        }
    }
    Ok(None)
}

/// Returns the contents of the blob `oid`.
pub fn blob(repo: &Path, oid: &str) -> Result<Vec<u8>, GitError> {
    run(repo, &["cat-file", "blob", oid])
}

/// Returns true when `dir` is inside a git work tree.
pub fn is_work_tree(dir: &Path) -> bool {
    run(dir, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|o| o.starts_with(b"true"))
}

/// Returns the git directory of the work tree whose top level is `repo`
/// (`git rev-parse --absolute-git-dir`; per work tree for linked work
/// trees). Fails when `repo` is not the top of a git work tree.
pub fn git_dir(repo: &Path) -> Result<PathBuf, GitError> {
    let out = run(
        repo,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--absolute-git-dir",
        ],
    )?;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let (Some(top), Some(dir)) = (lines.next(), lines.next()) else {
        return Err(GitError {
            repo: repo.to_owned(),
            args: "rev-parse --show-toplevel --absolute-git-dir".to_owned(),
            stderr: "not a work tree".to_owned(),
        });
    };
    let same = match (std::fs::canonicalize(top), std::fs::canonicalize(repo)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return Err(GitError {
            repo: repo.to_owned(),
            args: "rev-parse --show-toplevel".to_owned(),
            stderr: format!("the directory is inside the work tree {top}, not its top level"),
        });
    }
    Ok(PathBuf::from(dir))
}

/// Makes `dir` a new git repository whose first branch is `main`.
pub fn init(dir: &Path) -> Result<(), GitError> {
    run(dir, &["-c", "init.defaultBranch=main", "init", "--quiet"]).map(|_| ())
}

/// How committing on a branch moves it; never by dropping a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchMove {
    /// The branch did not exist: it is created at HEAD.
    Created,
    /// The branch is checked out: the commit goes on it.
    CheckedOut,
    /// The branch is an ancestor of HEAD: it fast-forwards to HEAD, then
    /// gets the commit.
    FastForward,
}

impl std::fmt::Display for BranchMove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BranchMove::Created => "created",
            BranchMove::CheckedOut => "committed on",
            BranchMove::FastForward => "fast-forwarded",
        })
    }
}

/// Decides how a commit can go on `branch` without dropping any of its
/// commits: create it, use it checked out, or fast-forward it from an
/// ancestor of HEAD. Refuses (an error, nothing changed) a branch that has
/// commits HEAD does not have, and a name git does not accept.
pub fn plan_branch(repo: &Path, branch: &str) -> Result<BranchMove, GitError> {
    let refuse = |why: String| GitError {
        repo: repo.to_owned(),
        args: format!("commit on branch {branch}"),
        stderr: why,
    };
    if run(repo, &["check-ref-format", "--branch", branch]).is_err() || branch.starts_with('-') {
        return Err(refuse(format!("`{branch}` is not a valid branch name")));
    }
    let current = run(repo, &["symbolic-ref", "--quiet", "--short", "HEAD"]).unwrap_or_default();
    if String::from_utf8_lossy(&current).trim() == branch {
        return Ok(BranchMove::CheckedOut);
    }
    let refname = format!("refs/heads/{branch}");
    let Ok(tip) = rev_parse(repo, &refname) else {
        return Ok(BranchMove::Created);
    };
    let head = rev_parse(repo, "HEAD")?;
    if run(repo, &["merge-base", "--is-ancestor", &tip, &head]).is_ok() {
        return Ok(BranchMove::FastForward);
    }
    Err(refuse(format!(
        "branch `{branch}` exists at {tip} with commits that HEAD ({head}) does not have; \
         committing there would drop them: check `{branch}` out (or merge it into HEAD) and rerun, \
         or choose another --branch"
    )))
}

/// Commits exactly `paths` (files relative to the repo) on `branch` when
/// given, moving to it as [`plan_branch`] decides (created at HEAD, already
/// checked out, or fast-forwarded to HEAD; a branch with commits HEAD lacks
/// is refused); nothing else in the work tree or the index is committed.
/// Uses the configured identity, or `rekey <rekey@localhost>` when none is
/// set. Returns the new commit ID, or `None` when none of `paths` changed.
pub fn commit(repo: &Path, branch: Option<&str>, paths: &[String], message: &str) -> Result<Option<String>, GitError> {
    if let Some(branch) = branch {
        let refname = format!("refs/heads/{branch}");
        match plan_branch(repo, branch)? {
            BranchMove::CheckedOut => {}
            // `-b` fails, rather than moves, a branch made since the plan.
            BranchMove::Created => {
                run(repo, &["checkout", "--quiet", "-b", branch])?;
                tracing::info!("created branch {branch} at HEAD");
            }
            BranchMove::FastForward => {
                // Compare-and-swap from the tip just checked, then switch
                // HEAD to it: HEAD's commit, index and work tree stay.
                let tip = rev_parse(repo, &refname)?;
                let head = rev_parse(repo, "HEAD")?;
                run(repo, &["update-ref", &refname, &head, &tip])?;
                run(repo, &["symbolic-ref", "HEAD", &refname])?;
                tracing::info!("fast-forwarded branch {branch} from {tip} to {head}");
            }
        }
    }
    if paths.is_empty() {
        return Ok(None);
    }
    // Literal pathspecs: a path is a file name, never a pattern.
    let specs: Vec<String> = paths.iter().map(|p| format!(":(literal){p}")).collect();
    let mut add = vec!["add", "--all", "--"];
    add.extend(specs.iter().map(String::as_str));
    run(repo, &add)?;
    let mut diff = vec!["diff", "--cached", "--quiet", "--"];
    diff.extend(specs.iter().map(String::as_str));
    if run(repo, &diff).is_ok() {
        return Ok(None);
    }
    let has_identity = run(repo, &["config", "user.email"]).is_ok();
    let mut args: Vec<&str> = Vec::new();
    if !has_identity {
        args.extend(["-c", "user.name=rekey", "-c", "user.email=rekey@localhost"]);
    }
    args.extend(["commit", "--quiet", "--no-verify", "-m", message, "--only", "--"]);
    args.extend(specs.iter().map(String::as_str));
    run(repo, &args)?;
    let id = rev_parse(repo, "HEAD")?;
    tracing::info!(
        "committed {id} in {} ({} changed)",
        repo.display(),
        crate::words::plural(paths.len(), "path", "paths")
    );
    Ok(Some(id))
}

/// Lists, newest first, the commits of `rev`'s first-parent history that
/// changed `path` against their first parent (a merge counts when it
/// brought the change in), each with its committer time in seconds since
/// the epoch; at most `max` of them.
pub fn first_parent_changes(repo: &Path, rev: &str, path: &str, max: usize) -> Result<Vec<(String, i64)>, GitError> {
    let limit = format!("--max-count={max}");
    let spec = format!(":(literal){path}");
    let out = run(
        repo,
        &[
            "log",
            "--first-parent",
            "--no-renames",
            &limit,
            "--format=%H %ct",
            rev,
            "--",
            &spec,
        ],
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let (id, t) = l.split_once(' ')?;
            Some((id.to_owned(), t.trim().parse().ok()?))
        })
        .collect())
}

/// A file that changed between two revisions, with its git file modes
/// (`0o100644` regular, `0o100755` executable, `0o120000` symlink,
/// `0o160000` submodule; `None` where the file does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    pub kind: ChangeKind,
    pub path: String,
    pub old_mode: Option<u32>,
    pub new_mode: Option<u32>,
}

/// Lists the files that differ between `base` and `head` with their modes
/// (`git diff --raw`; renames as delete plus add).
pub fn changed_modes(repo: &Path, base: &str, head: &str) -> Result<Vec<ModeChange>, GitError> {
    let out = run(
        repo,
        &["diff", "--raw", "-z", "--no-renames", "--no-abbrev", base, head, "--"],
    )?;
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut changes = Vec::new();
    while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
        // `:<old mode> <new mode> <old sha> <new sha> <status>`
        let meta = String::from_utf8_lossy(meta);
        let mut parts = meta.trim_start_matches(':').split(' ');
        let mode = |m: Option<&str>| m.and_then(|m| u32::from_str_radix(m, 8).ok()).filter(|&m| m != 0);
        let old_mode = mode(parts.next());
        let new_mode = mode(parts.next());
        let kind = match parts.nth(2).and_then(|s| s.bytes().next()) {
            Some(b'A') => ChangeKind::Added,
            Some(b'D') => ChangeKind::Deleted,
            _ => ChangeKind::Modified,
        };
        changes.push(ModeChange {
            kind,
            path: String::from_utf8_lossy(path).into_owned(),
            old_mode,
            new_mode,
        });
    }
    Ok(changes)
}

/// Returns the size in bytes of a file at `rev`, or `None` when it does not exist there.
pub fn blob_size(repo: &Path, rev: &str, path: &str) -> Result<Option<u64>, GitError> {
    let spec = format!("{rev}:{path}");
    if run(repo, &["cat-file", "-e", &spec]).is_err() {
        return Ok(None);
    }
    let out = run(repo, &["cat-file", "-s", &spec])?;
    Ok(String::from_utf8_lossy(&out).trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let mut full = vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ];
        full.extend(args);
        run(dir, &full).unwrap();
    }

    #[test]
    fn lists_changes_and_shows_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        std::fs::write(d.join("a"), "1").unwrap();
        std::fs::write(d.join("b"), "1").unwrap();
        git(d, &["add", "."]);
        git(d, &["commit", "-qm", "one"]);
        let base = rev_parse(d, "HEAD").unwrap();
        std::fs::write(d.join("a"), "2").unwrap();
        std::fs::remove_file(d.join("b")).unwrap();
        std::fs::write(d.join("c d"), "3").unwrap();
        std::fs::write(d.join("staged"), "not mine").unwrap();
        git(d, &["add", "staged"]);
        let head = commit(d, Some("rotate"), &["a".into(), "b".into(), "c d".into()], "two")
            .unwrap()
            .unwrap();
        let changes = changed_files(d, &base, &head).unwrap();
        let got: Vec<(ChangeKind, &str)> = changes.iter().map(|c| (c.kind, c.path.as_str())).collect();
        assert_eq!(
            got,
            [
                (ChangeKind::Modified, "a"),
                (ChangeKind::Deleted, "b"),
                (ChangeKind::Added, "c d")
            ]
        );
        assert_eq!(show(d, &base, "b").unwrap().unwrap(), b"1");
        assert_eq!(show(d, &head, "b").unwrap(), None);
        // Only the named files: the file staged by someone else is not committed.
        assert_eq!(blob_size(d, &base, "b").unwrap(), Some(1));
        assert_eq!(blob_size(d, &head, "b").unwrap(), None);
        assert_eq!(ls_tree(d, &head).unwrap(), ["a", "c d"]);
        assert!(
            rev_parse(d, "nope")
                .unwrap_err()
                .to_string()
                .contains("`nope` is not a commit")
        );
        let modes = changed_modes(d, &base, &head).unwrap();
        assert_eq!(modes.len(), 3);
        assert_eq!((modes[0].old_mode, modes[0].new_mode), (Some(0o100644), Some(0o100644)));
        assert_eq!((modes[1].kind, modes[1].new_mode), (ChangeKind::Deleted, None));
        assert_eq!((modes[2].kind, modes[2].old_mode), (ChangeKind::Added, None));
        assert_eq!(commit(d, None, &["a".into()], "nothing").unwrap(), None);
        assert!(is_work_tree(d));
        assert_eq!(
            std::fs::canonicalize(git_dir(d).unwrap()).unwrap(),
            std::fs::canonicalize(d.join(".git")).unwrap()
        );
        std::fs::create_dir(d.join("sub")).unwrap();
        let err = git_dir(&d.join("sub")).unwrap_err().to_string();
        assert!(err.contains("not its top level"), "{err}");
        let plain = tempfile::tempdir().unwrap();
        assert!(git_dir(plain.path()).is_err());
    }
}
