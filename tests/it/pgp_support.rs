//! Real GnuPG for the OpenPGP tests: test keys generated once per test
//! binary with `gpg --quick-gen-key`, and throwaway GnuPG homes that decrypt
//! and encrypt as an operator would.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Exported test keys (armored files), made by real gpg.
pub struct Keys {
    pub dir: PathBuf,
}

impl Keys {
    /// Returns the path of an exported file, e.g. `alice.pub` or `alice.sec`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Returns the primary fingerprint of a generated key.
    pub fn fingerprint(&self, who: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{who}.fpr")))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Returns the encryption subkey's key ID of a generated key.
    pub fn subkey_id(&self, who: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{who}.subkeyid")))
            .unwrap()
            .trim()
            .to_owned()
    }
}

static KEYS: OnceLock<Keys> = OnceLock::new();

/// A GnuPG home in a temporary directory; its agent is stopped on drop.
pub struct GpgHome {
    pub dir: tempfile::TempDir,
}

impl GpgHome {
    pub fn new() -> GpgHome {
        let dir = tempfile::Builder::new().prefix("rk-gpg-").tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        GpgHome { dir }
    }

    /// Returns a gpg command line for this home, batch mode, empty passphrase.
    pub fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir")
            .arg(self.dir.path())
            .args(["--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback"])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs gpg with `args` and returns stdout; panics with stderr on failure.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = self
            .gpg()
            .args(args)
            .output()
            .expect("gpg must be installed (script/setup)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Imports a key file.
    pub fn import(&self, file: &Path) {
        self.run(&["--passphrase", "", "--import", &file.display().to_string()]);
    }

    /// Returns the status of `gpg --decrypt` and its stdout.
    pub fn decrypt(&self, file: &Path) -> (bool, Vec<u8>, String) {
        let out = self
            .gpg()
            .args(["--passphrase", "", "--decrypt"])
            .arg(file)
            .output()
            .unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Decrypts `file` with real gpg holding only `secret_key`; panics unless gpg succeeds.
#[track_caller]
pub fn gpg_decrypt(secret_key: &Path, file: &Path) -> Vec<u8> {
    let home = GpgHome::new();
    home.import(secret_key);
    let (ok, out, err) = home.decrypt(file);
    assert!(ok, "gpg --decrypt {}: {err}", file.display());
    out
}

/// Encrypts `plaintext` with real gpg to the certificate in `public_key`.
pub fn gpg_encrypt(public_key: &Path, fingerprint: &str, plaintext: &Path, out: &Path) {
    let home = GpgHome::new();
    home.import(public_key);
    home.run(&[
        "--trust-model",
        "always",
        "--armor",
        "--output",
        &out.display().to_string(),
        "--recipient",
        fingerprint,
        "--encrypt",
        &plaintext.display().to_string(),
    ]);
}

/// Returns the test keys, generating them with gpg on first use.
pub fn keys() -> &'static Keys {
    KEYS.get_or_init(generate)
}

/// How one test key is made: name, algo, usage, expiry, passphrase, extra gpg options.
type KeySpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

fn generate() -> Keys {
    let dir = fixture_dir("pgp-keys");
    let home = GpgHome::new();
    // (name, algo, usage, expire, passphrase, extra options)
    let specs: &[KeySpec] = &[
        ("alice", "future-default", "default", "never", "", &[]),
        ("bob", "future-default", "default", "never", "", &[]),
        ("carol", "future-default", "default", "never", "", &[]),
        ("signer", "ed25519", "sign", "never", "", &[]),
        // Created in 2020 and valid for one day: long expired today.
        (
            "expired",
            "future-default",
            "default",
            "1d",
            "",
            &["--faked-system-time", "20200101T000000"],
        ),
        // Self-signatures made with SHA-1, which StandardPolicy rejects.
        (
            "sha1",
            "rsa2048",
            "default",
            "never",
            "",
            &["--cert-digest-algo", "SHA1"],
        ),
        ("soon", "future-default", "default", "10d", "", &[]),
        ("locked", "future-default", "default", "never", "correct horse", &[]),
        ("revoked", "future-default", "default", "never", "", &[]),
    ];
    for (name, algo, usage, expire, pass, extra) in specs {
        let uid = format!("{name} <{name}@example.com>");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--passphrase", pass, "--quick-gen-key", &uid, algo, usage, expire]);
        home.run(&args);
        let email = format!("{name}@example.com");
        let listing = String::from_utf8(home.run(&["--with-colons", "--list-keys", &email])).unwrap();
        let fpr = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned();
        let subkey = listing
            .lines()
            .find(|l| l.starts_with("sub:"))
            .and_then(|l| l.split(':').nth(4))
            .unwrap_or("")
            .to_owned();
        write(&dir, &format!("{name}.fpr"), &fpr);
        write(&dir, &format!("{name}.subkeyid"), &subkey);
    }
    // Revoke `revoked` with the revocation certificate gpg made for it.
    let fpr = std::fs::read_to_string(dir.join("revoked.fpr")).unwrap();
    let rev = std::fs::read_to_string(home.dir.path().join("openpgp-revocs.d").join(format!("{fpr}.rev"))).unwrap();
    let rev = rev.replace(":-----BEGIN PGP PUBLIC KEY BLOCK", "-----BEGIN PGP PUBLIC KEY BLOCK");
    let rev_file = write(&dir, "revoked.rev", rev);
    home.import(&rev_file);
    for (name, ..) in specs {
        let email = format!("{name}@example.com");
        let public = home.run(&["--armor", "--export", &email]);
        write(&dir, &format!("{name}.pub"), public);
        let pass = if *name == "locked" { "correct horse" } else { "" };
        let secret = home.run(&["--passphrase", pass, "--armor", "--export-secret-keys", &email]);
        write(&dir, &format!("{name}.sec"), secret);
    }
    // A keyring as `gpg --export --armor A B` makes it: several certificates in one block.
    let ring = home.run(&["--armor", "--export", "alice@example.com", "bob@example.com"]);
    write(&dir, "team.pub", ring);
    Keys { dir }
}

/// Encrypts `len` zero bytes with real gpg, compressed with `algo` at
/// level 9, to `public_key`: a compression bomb as an attacker makes it.
pub fn gpg_compression_bomb(public_key: &Path, fingerprint: &str, algo: &str, len: u64, out: &Path) {
    let home = GpgHome::new();
    home.import(public_key);
    let mut child = home
        .gpg()
        .args(["--trust-model", "always", "--compress-algo", algo, "-z", "9"])
        .args(["--recipient", fingerprint, "--output"])
        .arg(out)
        .arg("--encrypt")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            stdin.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
    }
    assert!(child.wait().unwrap().success(), "gpg made no bomb");
}

/// What one measured run of the binary returned and its peak memory.
pub struct Measured {
    pub code: i32,
    pub stderr: String,
    /// The child's peak resident set size, in KiB (from `wait4`).
    pub max_rss_kib: i64,
}

/// Runs `rekey` with `args` and measures its own peak memory with `wait4`
/// (only this child, not other tests' processes).
pub fn rekey_measured(args: &[&std::ffi::OsStr]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("err");
    let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .env_remove("REKEY_LOG")
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a plain wait4 on our own child, into valid out-pointers; the
    // `Child` is never waited on again (dropping it does not wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    drop(child);
    assert!(libc::WIFEXITED(status), "rekey was killed: {status}");
    Measured {
        code: libc::WEXITSTATUS(status),
        stderr: std::fs::read_to_string(err).unwrap(),
        max_rss_kib: usage.ru_maxrss,
    }
}

impl GpgHome {
    /// Runs gpg with `args` and returns (success, stderr); never panics on failure.
    pub fn try_run(&self, args: &[&str]) -> (bool, String) {
        let out = self.gpg().args(args).output().expect("gpg must be installed");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Verifies a detached signature with `gpg --verify SIG DATA`: (success, stderr).
    pub fn verify(&self, sig: &Path, data: &Path) -> (bool, String) {
        self.try_run(&["--verify", &sig.display().to_string(), &data.display().to_string()])
    }

    /// Makes an armored detached signature of `data` with the imported
    /// secret key of `who` (`extra` goes before the command, e.g. a faked time).
    pub fn detach_sign(&self, who: &str, data: &Path, out: &Path, extra: &[&str]) {
        let mut args: Vec<&str> = extra.to_vec();
        let (data, out) = (data.display().to_string(), out.display().to_string());
        args.extend(["--passphrase", "", "--local-user", who, "--armor", "--output", &out]);
        args.extend(["--detach-sign", &data]);
        self.run(&args);
    }

    /// Returns the armored revocation certificate gpg made for `fpr` at key
    /// generation, ready to import.
    pub fn revocation(&self, fpr: &str) -> String {
        let rev = std::fs::read_to_string(self.dir.path().join("openpgp-revocs.d").join(format!("{fpr}.rev"))).unwrap();
        rev.replace(":-----BEGIN PGP PUBLIC KEY BLOCK", "-----BEGIN PGP PUBLIC KEY BLOCK")
    }

    /// Generates a key for `uid` and returns its fingerprint.
    pub fn quick_gen_key(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        self.run(&["--passphrase", "", "--quick-gen-key", uid, algo, usage, expire]);
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])).unwrap();
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned()
    }
}
