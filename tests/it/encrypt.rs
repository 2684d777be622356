//! `rekey encrypt` / `rekey decrypt` against real GnuPG: each decrypts the
//! other's output, every recipient policy case is refused by name, and bad
//! messages write nothing.

use crate::pgp_support::*;
use crate::support::*;
use std::path::{Path, PathBuf};

/// A temp dir with a canary plaintext file in it.
struct Case {
    tmp: tempfile::TempDir,
    canary: Canary,
    plain: PathBuf,
}

impl Case {
    fn new(tag: &str) -> Case {
        let tmp = tempdir();
        let canary = Canary::new(tag);
        let plain = write(
            tmp.path(),
            "in/secret.dockerconfigjson",
            format!("{{\"k\":\"{}\"}}", canary.key),
        );
        Case { tmp, canary, plain }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Encrypts the plaintext to `recipients` with rekey, expecting success.
    fn encrypt(&self, recipients: &[PathBuf], out: &str) -> PathBuf {
        let out = self.path(out);
        let mut cmd = rekey().arg("encrypt");
        for r in recipients {
            cmd = cmd.arg("--recipients").arg(r);
        }
        let run = cmd.arg(&self.plain).arg("--out-file").arg(&out).run();
        run.code(0);
        self.canary.assert_not_in_run(&run);
        out
    }

    /// Asserts the canary is only in the plaintext and in `allowed` files.
    fn assert_contained(&self, allowed: &[PathBuf]) {
        let mut all = vec![self.plain.clone()];
        all.extend_from_slice(allowed);
        self.canary.assert_not_in_tree(self.tmp.path(), &all);
    }
}

fn pubkey(who: &str) -> PathBuf {
    keys().file(&format!("{who}.pub"))
}

fn seckey(who: &str) -> PathBuf {
    keys().file(&format!("{who}.sec"))
}

#[test]
fn gpg_decrypts_rekey_output_for_every_certificate_in_a_keyring() {
    let case = Case::new("enc-gpg");
    let out = case.encrypt(&[keys().file("team.pub"), pubkey("carol")], "secret.gpg");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("-----BEGIN PGP MESSAGE-----"), "{text}");
    assert_eq!(mode(&out), 0o644);
    let want = std::fs::read(&case.plain).unwrap();
    for who in ["alice", "bob", "carol"] {
        assert_eq!(gpg_decrypt(&seckey(who), &out), want, "{who}");
    }
    // gpg sees SEIPDv1 with MDC and no compression layer.
    let home = GpgHome::new();
    home.import(&seckey("alice"));
    let packets =
        String::from_utf8(home.run(&["--passphrase", "", "--list-packets", &out.display().to_string()])).unwrap();
    assert!(packets.contains("mdc_method: 2"), "{packets}");
    assert!(!packets.contains("compressed packet"), "{packets}");
    assert!(packets.contains(":literal data packet:"), "{packets}");
    for who in ["alice", "bob", "carol"] {
        assert!(
            packets.contains(&keys().subkey_id(who)),
            "{who} not addressed:\n{packets}"
        );
    }
    case.assert_contained(&[]);
}

#[test]
fn rekey_decrypts_gpg_output_to_a_0600_file() {
    let case = Case::new("dec-gpg");
    let msg = case.path("from-gpg.asc");
    gpg_encrypt(&pubkey("alice"), &keys().fingerprint("alice"), &case.plain, &msg);
    let out = case.path("plain/secret.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let run = rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(seckey("alice"))
        .arg(&msg)
        .arg("--out-file")
        .arg(&out)
        .run();
    run.code(0);
    case.canary.assert_not_in_run(&run);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&case.plain).unwrap());
    assert_eq!(mode(&out), 0o600);
    case.assert_contained(&[out]);
}

#[test]
fn decrypt_writes_to_stdout_only_when_asked() {
    let case = Case::new("dec-stdout");
    let msg = case.encrypt(&[pubkey("bob")], "m.gpg");
    let run = rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(seckey("bob"))
        .arg(&msg)
        .arg("--out-file")
        .arg("-")
        .run();
    run.code(0);
    assert_eq!(run.stdout.as_bytes(), std::fs::read(&case.plain).unwrap());
    // Without -o the command refuses to run.
    let run = rekey().arg("decrypt").arg("--key").arg(seckey("bob")).arg(&msg).run();
    run.code(2);
    assert!(run.stdout.is_empty());
}

#[test]
fn encrypt_out_dir_writes_every_input() {
    let case = Case::new("enc-many");
    let second = write(case.tmp.path(), "in/other.dockerconfigjson", "{}");
    let dir = case.path("sealed");
    let run = rekey()
        .args(["--output", "json", "encrypt", "--recipients"])
        .arg(pubkey("alice"))
        .arg("--out-dir")
        .arg(&dir)
        .arg(&case.plain)
        .arg(&second)
        .run();
    run.code(0);
    let json = run.json();
    assert_eq!(json["files"].as_array().unwrap().len(), 2);
    assert_eq!(json["recipients"][0]["fingerprint"], keys().fingerprint("alice"));
    let a = dir.join("secret.dockerconfigjson.gpg");
    assert_eq!(gpg_decrypt(&seckey("alice"), &a), std::fs::read(&case.plain).unwrap());
    assert_eq!(
        gpg_decrypt(&seckey("alice"), &dir.join("other.dockerconfigjson.gpg")),
        b"{}"
    );
    case.assert_contained(&[]);
}

#[test]
fn passphrase_protected_key_decrypts_with_passphrase_file_or_env() {
    let case = Case::new("dec-pass");
    let msg = case.encrypt(&[pubkey("locked")], "m.gpg");
    let pass = write(case.tmp.path(), "pass.txt", "correct horse\n");
    let out = case.path("a.json");
    rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(seckey("locked"))
        .arg("--passphrase-file")
        .arg(&pass)
        .arg(&msg)
        .arg("--out-file")
        .arg(&out)
        .run()
        .code(0);
    let out2 = case.path("b.json");
    rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(seckey("locked"))
        .args(["--passphrase-env", "RK_TEST_PASS"])
        .env("RK_TEST_PASS", "correct horse")
        .arg(&msg)
        .arg("--out-file")
        .arg(&out2)
        .run()
        .code(0);
    let want = std::fs::read(&case.plain).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), want);
    assert_eq!(std::fs::read(&out2).unwrap(), want);
}

#[test]
fn recipient_expiring_within_warn_window_is_warned_about() {
    let case = Case::new("enc-soon");
    let out = case.path("m.gpg");
    let run = rekey()
        .arg("encrypt")
        .arg("--recipients")
        .arg(pubkey("soon"))
        .arg(&case.plain)
        .arg("--out-file")
        .arg(&out)
        .run();
    run.code(0);
    run.stderr_has(&format!(
        "warning: recipient certificate {} (soon <soon@example.com>) expires at",
        keys().fingerprint("soon")
    ));
    assert!(out.exists());
}

// ---- bad input: message, exit 2, nothing written ----

/// Runs `rekey encrypt` with these recipient files and asserts the refusal.
#[track_caller]
fn assert_encrypt_refused(recipients: &[PathBuf], extra: &[&str], message: &str) {
    let case = Case::new("enc-bad");
    let before = snapshot(case.tmp.path());
    let mut cmd = rekey().arg("encrypt");
    for r in recipients {
        cmd = cmd.arg("--recipients").arg(r);
    }
    let run = cmd
        .args(extra)
        .arg(&case.plain)
        .arg("--out-file")
        .arg(case.path("out.gpg"))
        .run();
    run.code(2);
    run.stderr_has(message);
    case.canary.assert_not_in_run(&run);
    assert_eq!(snapshot(case.tmp.path()), before, "nothing may be written");
}

fn named(who: &str) -> String {
    format!("certificate {} ({who} <{who}@example.com>)", keys().fingerprint(who))
}

#[test]
fn recipient_expired_is_refused_by_name() {
    assert_encrypt_refused(
        &[pubkey("alice"), pubkey("expired")],
        &[],
        &format!("{} expired at 2020-01-02", named("expired")),
    );
}

#[test]
fn recipient_revoked_is_refused_by_name() {
    assert_encrypt_refused(&[pubkey("revoked")], &[], &format!("{} is revoked", named("revoked")));
}

#[test]
fn recipient_signing_only_is_refused_by_name() {
    assert_encrypt_refused(
        &[pubkey("signer")],
        &[],
        &format!("{} has no usable encryption subkey", named("signer")),
    );
}

#[test]
fn recipient_sha1_only_self_signatures_is_refused_by_name() {
    assert_encrypt_refused(
        &[pubkey("sha1")],
        &[],
        &format!("{} is rejected by the OpenPGP standard policy", named("sha1")),
    );
    assert_encrypt_refused(&[pubkey("sha1")], &[], "SHA1");
}

#[test]
fn recipient_secret_key_material_is_refused_by_name() {
    assert_encrypt_refused(
        &[seckey("alice")],
        &[],
        &format!("{} holds secret key material", named("alice")),
    );
}

#[test]
fn recipient_unparseable_armor_is_refused_with_file_name() {
    let tmp = tempdir();
    let mut text = std::fs::read_to_string(pubkey("alice")).unwrap();
    let mid = text.len() / 2;
    text.replace_range(mid..mid + 8, "!!!!????");
    let bad = write(tmp.path(), "broken.asc", text);
    assert_encrypt_refused(
        std::slice::from_ref(&bad),
        &[],
        &format!("{}: not an OpenPGP certificate or keyring", bad.display()),
    );
}

#[test]
fn recipient_file_without_certificates_is_an_empty_set() {
    let tmp = tempdir();
    let empty = write(tmp.path(), "empty.asc", "");
    assert_encrypt_refused(
        std::slice::from_ref(&empty),
        &[],
        &format!("{}: holds no OpenPGP certificate", empty.display()),
    );
}

#[test]
fn recipient_expiring_before_min_validity_is_refused_by_name() {
    assert_encrypt_refused(
        &[pubkey("soon")],
        &["--min-validity", "30d"],
        &format!("{} expires at", named("soon")),
    );
}

/// Runs `rekey decrypt` of `message` and asserts the refusal: exit 2, the
/// message, no plain text on stdout or on disk.
#[track_caller]
fn assert_decrypt_refused(case: &Case, key: &Path, extra: &[&str], message: &Path, want: &str) {
    let before = snapshot(case.tmp.path());
    for out in [case.path("out.json"), PathBuf::from("-")] {
        let run = rekey()
            .arg("decrypt")
            .arg("--key")
            .arg(key)
            .args(extra)
            .arg(message)
            .arg("--out-file")
            .arg(&out)
            .run();
        run.code(2);
        run.stderr_has(want);
        assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
        case.canary.assert_not_in_run(&run);
        assert_eq!(snapshot(case.tmp.path()), before, "nothing may be written");
    }
}

/// Returns the binary (dearmored) form of an armored message.
fn dearmor(armored: &Path) -> Vec<u8> {
    let home = GpgHome::new();
    home.run(&["--dearmor", "--output", "-", &armored.display().to_string()])
}

#[test]
fn decrypt_corrupted_armor_fails() {
    let case = Case::new("dec-armor");
    let msg = case.encrypt(&[pubkey("alice")], "m.gpg");
    let text = std::fs::read_to_string(&msg)
        .unwrap()
        .replace("-----BEGIN PGP MESSAGE-----\n\n", "-----BEGIN PGP MESSAGE-----\n\n%%%%");
    std::fs::write(&msg, text).unwrap();
    assert_decrypt_refused(&case, &seckey("alice"), &[], &msg, "not an encrypted OpenPGP message");
}

#[test]
fn decrypt_truncated_message_fails() {
    let case = Case::new("dec-trunc");
    let msg = case.encrypt(&[pubkey("alice")], "m.gpg");
    let mut binary = dearmor(&msg);
    binary.truncate(binary.len() - 10);
    let cut = write(case.tmp.path(), "cut.gpg", binary);
    assert_decrypt_refused(&case, &seckey("alice"), &[], &cut, "the packet is truncated");
}

#[test]
fn decrypt_tampered_ciphertext_fails_without_partial_plaintext() {
    let case = Case::new("dec-tamper");
    let msg = case.encrypt(&[pubkey("alice")], "m.gpg");
    let mut binary = dearmor(&msg);
    let n = binary.len();
    // A byte of the encrypted literal data: decryption works, the MDC does not match.
    binary[n - 30] ^= 0x01;
    let bad = write(case.tmp.path(), "tampered.gpg", binary);
    // gpg agrees that this message is bad.
    let home = GpgHome::new();
    home.import(&seckey("alice"));
    assert!(!home.decrypt(&bad).0, "gpg accepted the tampered message");
    assert_decrypt_refused(&case, &seckey("alice"), &[], &bad, "decrypting failed");
}

#[test]
fn decrypt_with_wrong_secret_key_fails_naming_the_key_ids() {
    let case = Case::new("dec-wrong");
    let msg = case.encrypt(&[pubkey("alice")], "m.gpg");
    assert_decrypt_refused(
        &case,
        &seckey("bob"),
        &[],
        &msg,
        &format!("addressed to key IDs {}", keys().subkey_id("alice")),
    );
}

#[test]
fn decrypt_with_passphrase_protected_key_without_passphrase_source_fails() {
    let case = Case::new("dec-nopass");
    let msg = case.encrypt(&[pubkey("locked")], "m.gpg");
    assert_decrypt_refused(
        &case,
        &seckey("locked"),
        &[],
        &msg,
        &format!(
            "secret key {} (locked <locked@example.com>) is protected by a passphrase: give --passphrase-file or --passphrase-env",
            keys().fingerprint("locked")
        ),
    );
}

#[test]
fn decrypt_with_wrong_passphrase_fails() {
    let case = Case::new("dec-badpass");
    let msg = case.encrypt(&[pubkey("locked")], "m.gpg");
    assert_decrypt_refused(
        &case,
        &seckey("locked"),
        &["--passphrase-env", "PATH"],
        &msg,
        "the passphrase does not unlock it",
    );
}

#[test]
fn gpg_decrypts_rekey_output_for_a_certificate_advertising_seipdv2() {
    use sequoia_openpgp::cert::{CertBuilder, Preferences};
    use sequoia_openpgp::policy::StandardPolicy;
    use sequoia_openpgp::serialize::SerializeInto;
    // sequoia's certificates advertise SEIPDv2 (AEAD), which GnuPG 2.2 cannot read.
    let (cert, _) = CertBuilder::general_purpose(Some("v2 <v2@example.com>"))
        .generate()
        .unwrap();
    let features = cert
        .with_policy(&StandardPolicy::new(), None)
        .unwrap()
        .features()
        .unwrap();
    assert!(features.supports_seipdv2());
    let case = Case::new("enc-seipdv2");
    let public = write(case.tmp.path(), "v2.pub", cert.armored().to_vec().unwrap());
    let secret = write(case.tmp.path(), "v2.sec", cert.as_tsk().armored().to_vec().unwrap());
    let out = case.encrypt(&[public], "m.gpg");
    assert_eq!(gpg_decrypt(&secret, &out), std::fs::read(&case.plain).unwrap());
    case.assert_contained(&[]);
}
