//! Shared test harness: run the binary, snapshot directories, and check that
//! canary secrets never leak into output or files not meant to hold them.

#![allow(dead_code)]

pub use crate::base_support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (for `regions/`, `fixtures/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command line for the `rekey` binary under test.
pub struct Rekey {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

/// What a finished run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Starts a `rekey` command line, with a clean, deterministic environment.
pub fn rekey() -> Rekey {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
    cmd.env_remove("REKEY_LOG").env("NO_COLOR", "1").env("CI", "true");
    Rekey { cmd, stdin: None }
}

impl Rekey {
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Rekey {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Rekey
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Rekey {
        self.cmd.env(k, v);
        self
    }

    /// Runs rekey under this umask (e.g. 0 to prove modes do not depend on it).
    pub fn umask(mut self, mask: u32) -> Rekey {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask(2) is async-signal-safe and touches no memory.
        unsafe {
            self.cmd.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
        self
    }

    pub fn env_remove(mut self, k: &str) -> Rekey {
        self.cmd.env_remove(k);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Rekey {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Rekey {
        self.stdin = Some(bytes.into());
        self
    }

    /// Starts the command with no input and its output discarded.
    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.cmd.spawn().expect("spawning rekey")
    }

    /// Runs to completion and captures everything.
    pub fn run(mut self) -> Run {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self.cmd.spawn().expect("spawning rekey");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&bytes).unwrap();
        }
        let out = child.wait_with_output().expect("waiting for rekey");
        Run {
            code: out.status.code().expect("rekey was killed by a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output on failure.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Run {
        assert_eq!(
            self.code, want,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A unique secret value that must never show up where it does not belong.
pub struct Canary {
    pub key: String,
}

impl Canary {
    /// Returns a fresh canary key, tagged for the test that uses it.
    pub fn new(tag: &str) -> Canary {
        Canary {
            key: format!("rkcanary-{tag}-{}-Zq9", unique_hex()),
        }
    }

    /// Returns a canary with exactly this value (for awkward keys).
    pub fn with_value(key: &str) -> Canary {
        Canary { key: key.to_owned() }
    }

    /// Every form in which the key could leak: as is, JSON-escaped, and in
    /// base64 at each of the three alignments (alone or after `iamapikey:`).
    pub fn needles(&self) -> Vec<Vec<u8>> {
        let mut needles = vec![self.key.as_bytes().to_vec()];
        let escaped = serde_json::to_string(&self.key).unwrap();
        needles.push(escaped.trim_matches('"').as_bytes().to_vec());
        for pad in 0..3 {
            let mut bytes = vec![b'x'; pad];
            bytes.extend_from_slice(self.key.as_bytes());
            let enc = STANDARD.encode(&bytes);
            let start = if pad == 0 { 0 } else { 4 };
            let end = enc.len().saturating_sub(4);
            if end > start + 8 {
                needles.push(enc.as_bytes()[start..end].to_vec());
            }
        }
        needles.push(STANDARD.encode(format!("iamapikey:{}", self.key)).into_bytes());
        needles
    }

    /// Returns true when `haystack` holds the key in any form.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.needles()
            .iter()
            .any(|n| haystack.windows(n.len()).any(|w| w == n.as_slice()))
    }

    /// Asserts that the run's stdout and stderr do not hold the key.
    #[track_caller]
    pub fn assert_not_in_run(&self, run: &Run) {
        assert!(
            !self.found_in(run.stdout.as_bytes()),
            "canary leaked to stdout:\n{}",
            run.stdout
        );
        assert!(
            !self.found_in(run.stderr.as_bytes()),
            "canary leaked to stderr:\n{}",
            run.stderr
        );
    }

    /// Asserts that no file under `dir` holds the key, except the `allowed` ones.
    #[track_caller]
    pub fn assert_not_in_tree(&self, dir: &Path, allowed: &[PathBuf]) {
        for (path, bytes) in snapshot(dir) {
            let full = dir.join(&path);
            if allowed.iter().any(|a| a == &full) {
                continue;
            }
            assert!(!self.found_in(&bytes), "canary leaked into {}", full.display());
        }
    }
}

/// Returns every regular file under `dir` (relative path and contents).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &path, out);
            } else if ft.is_file() {
                out.insert(
                    path.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Returns a temporary directory removed at the end of the test.
/// Returns a directory for a peer shared by the whole test binary (a static
/// fixture is never dropped, so its directory is never removed by a
/// `TempDir`): `<target tmp>/<prefix>-<pid>`, after removing the directories
/// of test processes that are gone.
pub fn fixture_dir(prefix: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&root).unwrap();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(&format!("{prefix}-"))
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("rekey-test-").tempdir().unwrap()
}

/// Returns the file mode bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o777
}

/// Returns true when `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs git in `dir` with a fixed identity; panics unless it succeeds. Returns stdout.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, args, &[])
}

/// Runs git in `dir` with author and committer time `at` (any form git
/// reads in `GIT_COMMITTER_DATE`); returns stdout.
#[track_caller]
pub fn git_at(dir: &Path, at: &str, args: &[&str]) -> String {
    git_with(dir, args, &[("GIT_COMMITTER_DATE", at), ("GIT_AUTHOR_DATE", at)])
}

#[track_caller]
fn git_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `rekey generate` of `regions` (every region of the catalog when empty)
/// from the catalog directory `regions_dir` into `out`, with `key` passed in
/// the environment variable `K` (never on the command line).
pub fn generate_cmd(regions_dir: &Path, regions: &[&str], key: &str, out: &Path) -> Rekey {
    rekey()
        .arg("generate")
        .arg("--regions")
        .arg(regions_dir)
        .args(regions.iter().flat_map(|r| ["--region", r]))
        .args(["--api-key-env", "K", "--out"])
        .arg(out)
        .env("K", key)
}

/// No further arguments, for [`seal_key`].
pub const NO_ARGS: [&str; 0] = [];

/// Generates the pull secrets of `regions` (every region of the catalog when
/// empty) from the catalog directory `regions_dir` with `key`, passed in the
/// environment variable `K` (never on the command line), into a fresh
/// temporary directory; then runs `rekey seal --repo <repo> --in <that
/// directory>` with `--key-name <key_name>` when given and `seal_args`
/// (signing, `--pending` …). Generating must succeed; returns seal's run.
/// The generated plain text is removed before returning.
pub fn seal_key<I, S>(
    repo: &Path,
    regions_dir: &Path,
    regions: &[&str],
    key: &str,
    key_name: Option<&str>,
    seal_args: I,
) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let gen_dir = tempdir();
    generate_cmd(regions_dir, regions, key, gen_dir.path()).run().code(0);
    let mut seal = rekey()
        .arg("seal")
        .arg("--repo")
        .arg(repo)
        .arg("--in")
        .arg(gen_dir.path());
    if let Some(name) = key_name {
        seal = seal.args(["--key-name", name]);
    }
    seal.args(seal_args).run()
}

/// The public keys of the test keys `who` (see `pgp_support::keys`), one
/// after another, as a recipients or signers file holds them.
pub fn public_ring(who: &[&str]) -> Vec<u8> {
    let mut ring = Vec::new();
    for w in who {
        ring.extend(std::fs::read(crate::pgp_support::keys().file(&format!("{w}.pub"))).unwrap());
    }
    ring
}

/// Makes `repo` a secrets repo: `.rekey/recipients.asc` allows the test
/// keys `recipients`, in a fresh git repository on `main`.
pub fn init_secrets_repo(repo: &Path, recipients: &[&str]) {
    write(repo, ".rekey/recipients.asc", public_ring(recipients));
    git(repo, &["init", "-q", "-b", "main"]);
}

/// Stages everything in `repo`'s work tree and commits it; returns the commit id.
pub fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// `rekey check --repo <repo> --base <base> --head <head>`, for more arguments.
pub fn check_cmd(repo: &Path, base: &str, head: &str) -> Rekey {
    rekey()
        .arg("check")
        .arg("--repo")
        .arg(repo)
        .args(["--base", base, "--head", head])
}

/// The failing checks of a `check --output json` run: (kind, target, detail).
pub fn failing_checks(run: &Run) -> Vec<(String, String, String)> {
    run.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_owned(),
                c["target"].as_str().unwrap().to_owned(),
                c["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A pull request that rotates a key, as `check` meets it: a temp dir whose
/// `repo/` is a secrets repo, the key sealed at `main` (`old`) and the one
/// the pull request brings (`new`). The check tests wrap it with their seals.
pub struct KeyPr {
    pub tmp: tempfile::TempDir,
    pub old: Canary,
    pub new: Canary,
}

impl KeyPr {
    /// Fresh keys tagged `tag` and an empty secrets repo on `main` for the
    /// test keys `recipients`; seal the old key, then [`KeyPr::open`].
    pub fn new(tag: &str, recipients: &[&str]) -> KeyPr {
        let pr = KeyPr {
            tmp: tempdir(),
            old: Canary::new(&format!("{tag}-old")),
            new: Canary::new(&format!("{tag}-new")),
        };
        init_secrets_repo(&pr.repo(), recipients);
        pr
    }

    /// Commits the work tree as `main`'s "old key" and checks out branch `pr`.
    pub fn open(&self) {
        self.commit("old key");
        git(&self.repo(), &["checkout", "-qb", "pr"]);
    }

    pub fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    pub fn commit(&self, message: &str) -> String {
        commit_all(&self.repo(), message)
    }

    /// `rekey check` of `pr` against `main` with `extra`; neither key shows.
    pub fn check(&self, extra: &[&str]) -> Run {
        let run = check_cmd(&self.repo(), "main", "pr").args(extra).run();
        self.old.assert_not_in_run(&run);
        self.new.assert_not_in_run(&run);
        run
    }
}

/// Writes an executable `rekey-wrapper` into `dir`: it records the
/// arguments it gets in `argv` (one per line), then runs rekey with them
/// followed by `extra` (shell words: the options a CI system would add).
pub fn rekey_wrapper(dir: &Path, argv: &Path, extra: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = write(
        dir,
        "rekey-wrapper",
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexec '{}' \"$@\" {extra}\n",
            argv.display(),
            env!("CARGO_BIN_EXE_rekey")
        ),
    );
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// The `Content-Length` of an HTTP message head (0 when absent or unreadable).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
}

/// The runbook's regions and their key codes (`...-prod-<code>-YYYYMMDD`).
pub const RUNBOOK_CODES: [(&str, &str); 6] = [
    ("au", "ap-south"),
    ("de", "eu-central"),
    ("fr2", "eu-fr2"),
    ("jp", "ap-north"),
    ("uk", "uk-south"),
    ("us", "us-east"),
];

/// `ci/rekey-job rotate` on `repo` with the catalog `regions`, running the
/// rekey `wrapper` (see [`rekey_wrapper`]) as a git identity would.
pub fn rekey_job_rotate(wrapper: &Path, repo: &Path, regions: &Path) -> Command {
    let mut cmd = Command::new(repo_root().join("ci/rekey-job"));
    cmd.arg("rotate")
        .env("REKEY", wrapper)
        .env("REKEY_REPO", repo)
        .env("REKEY_REGIONS", regions)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com");
    cmd
}

/// `--signing-key FILE` for the test key `who` (see `pgp_support::keys`).
pub fn signing_args(who: &str) -> Vec<String> {
    vec![
        "--signing-key".to_owned(),
        crate::pgp_support::keys()
            .file(&format!("{who}.sec"))
            .display()
            .to_string(),
    ]
}
