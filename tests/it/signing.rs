//! Signing primitives against real GnuPG 2.2: gpg verifies rekey's detached
//! statement signatures and its signed-then-encrypted messages, rekey
//! verifies gpg's, and expired or revoked signers are refused by name.
//! The statement and verification API are library calls (the workflows
//! that sign are wired on top); `encrypt --signing-key` and
//! `decrypt --signers` drive the binary.

use crate::pgp_support::*;
use crate::support::*;
use rekey::secrets_repo::signing::{self, AllowedSigners, FileHash, FileRole, SignError, SigningKey, Statement};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn statement() -> Statement {
    Statement {
        secret: "JP_REGISTRY".to_owned(),
        region: "jp".to_owned(),
        version: 3,
        key_name: Some("rekey-jp-20261124".to_owned()),
        key_fingerprint: "sha256:0a1b2c".to_owned(),
        iam_key_id: None,
        rotated_at: chrono::Utc::now(),
        restores: None,
        files: vec![FileHash::of(FileRole::Current, b"-----BEGIN PGP MESSAGE-----\n...")],
    }
}

fn signing_key(who: &str) -> SigningKey {
    let bytes = std::fs::read(keys().file(&format!("{who}.sec"))).unwrap();
    SigningKey::parse(&bytes, &format!("{who}.sec"), None, SystemTime::now()).unwrap()
}

fn allowed(files: &[&Path]) -> AllowedSigners {
    let mut ring = Vec::new();
    for f in files {
        ring.extend(std::fs::read(f).unwrap());
    }
    AllowedSigners::parse(&ring, "signers.asc").unwrap()
}

fn pubkey(who: &str) -> PathBuf {
    keys().file(&format!("{who}.pub"))
}

fn named(who: &str) -> String {
    format!("{who} <{who}@example.com>")
}

/// The test statement, signed by gpg in `home` as `signer` (an email) with
/// `extra` gpg options: (the statement's bytes, the armored signature file).
fn gpg_signed_statement(tmp: &Path, home: &GpgHome, signer: &str, extra: &[&str]) -> (Vec<u8>, PathBuf) {
    let bytes = statement().encode().unwrap();
    let data = write(tmp, "statement", &bytes);
    let sig = tmp.join("statement.asc");
    home.detach_sign(signer, &data, &sig, extra);
    (bytes, sig)
}

/// rekey's verdict on the signature file `sig` of `bytes`, allowing the
/// public key files `signers`, at `now`.
fn verify(
    bytes: &[u8],
    sig: &Path,
    signers: &[&Path],
    now: SystemTime,
) -> Result<(Statement, signing::Signer), SignError> {
    signing::verify_statement(bytes, &std::fs::read(sig).unwrap(), &allowed(signers), now)
}

/// Writes gpg's armored export of the key `fpr` in `home` to `path`.
fn export(home: &GpgHome, fpr: &str, path: &Path) {
    std::fs::write(path, home.run(&["--armor", "--export", fpr])).unwrap();
}

#[test]
fn gpg_verifies_rekeys_detached_statement_signature() {
    let tmp = tempdir();
    let key = signing_key("signer");
    let (bytes, sig) = signing::sign_statement(&statement(), &key, SystemTime::now()).unwrap();
    let data = write(tmp.path(), "statement", &bytes);
    let sig = write(tmp.path(), "statement.asc", &sig);
    let home = GpgHome::new();
    home.import(&pubkey("signer"));
    let (ok, err) = home.verify(&sig, &data);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("Good signature from \"{}\"", named("signer"))),
        "{err}"
    );
    // And gpg sees a change to the statement.
    std::fs::write(
        &data,
        String::from_utf8(bytes).unwrap().replace("version 3", "version 4"),
    )
    .unwrap();
    let (ok, err) = home.verify(&sig, &data);
    assert!(!ok && err.contains("BAD signature"), "{err}");
}

#[test]
fn rekey_verifies_gpg_detached_signatures_and_names_the_signer() {
    let tmp = tempdir();
    let home = GpgHome::new();
    home.import(&keys().file("signer.sec"));
    let (bytes, sig) = gpg_signed_statement(tmp.path(), &home, "signer@example.com", &[]);
    let signers = allowed(&[&pubkey("alice"), &pubkey("signer")]);
    let (st, signer) =
        signing::verify_statement(&bytes, &std::fs::read(&sig).unwrap(), &signers, SystemTime::now()).unwrap();
    assert_eq!(st.version, 3);
    assert_eq!(signer.name.user_id, named("signer"));
    assert_eq!(signer.name.fingerprint, keys().fingerprint("signer"));
    // Binary (unarmored) signatures too.
    let bin = home.run(&["--dearmor", "--output", "-", &sig.display().to_string()]);
    signing::verify_statement(&bytes, &bin, &signers, SystemTime::now()).unwrap();
    // Not in the allowed signers: refused, naming the key.
    let err = verify(&bytes, &sig, &[&pubkey("alice")], SystemTime::now()).unwrap_err();
    assert!(matches!(err, SignError::UnknownSigner { .. }), "{err}");
    assert!(err.to_string().contains(&keys().fingerprint("signer")), "{err}");
}

#[test]
fn gpg_signatures_by_an_expired_signer_are_refused_by_name() {
    // The `expired` key was valid for one day in 2020; gpg signs inside that day.
    let tmp = tempdir();
    let home = GpgHome::new();
    home.import(&keys().file("expired.sec"));
    let (bytes, sig) = gpg_signed_statement(
        tmp.path(),
        &home,
        "expired@example.com",
        &["--faked-system-time", "20200101T120000"],
    );
    let err = verify(&bytes, &sig, &[&pubkey("expired")], SystemTime::now()).unwrap_err();
    assert!(matches!(err, SignError::ExpiredSigner { .. }), "{err}");
    assert!(err.to_string().contains(&named("expired")), "{err}");
    assert!(err.to_string().contains("2020-01-02"), "{err}");
}

#[test]
fn gpg_signatures_by_a_signer_revoked_since_are_refused_by_name() {
    let tmp = tempdir();
    let home = GpgHome::new();
    let fpr = home.quick_gen_key("rv <rv@example.com>", "ed25519", "sign", "never");
    let (bytes, sig) = gpg_signed_statement(tmp.path(), &home, "rv@example.com", &[]);
    let before = tmp.path().join("rv.pub");
    export(&home, &fpr, &before);
    verify(&bytes, &sig, &[&before], SystemTime::now()).unwrap();
    // gpg's own revocation certificate, imported: the same signature is refused.
    let rev = write(tmp.path(), "rv.rev", home.revocation(&fpr));
    home.import(&rev);
    let after = tmp.path().join("rv-revoked.pub");
    export(&home, &fpr, &after);
    let err = verify(&bytes, &sig, &[&after], SystemTime::now()).unwrap_err();
    assert!(matches!(err, SignError::RevokedSigner(_)), "{err}");
    assert!(err.to_string().contains("rv <rv@example.com>"), "{err}");
    assert!(err.to_string().contains(&fpr), "{err}");
}

#[test]
fn gpg_signatures_by_a_signer_whose_expiry_was_shortened_are_refused() {
    // gpg --quick-set-expire, as an operator retiring a key does: a key
    // that expired since signing no longer vouches for anything.
    let tmp = tempdir();
    let home = GpgHome::new();
    let fpr = home.quick_gen_key("sx <sx@example.com>", "ed25519", "sign", "never");
    let (bytes, sig) = gpg_signed_statement(tmp.path(), &home, "sx@example.com", &[]);
    home.run(&["--passphrase", "", "--quick-set-expire", &fpr, "1d"]);
    let exported = tmp.path().join("sx.pub");
    export(&home, &fpr, &exported);
    let in_two_days = SystemTime::now() + std::time::Duration::from_secs(2 * 86400);
    let err = verify(&bytes, &sig, &[&exported], in_two_days).unwrap_err();
    assert!(matches!(err, SignError::ExpiredSigner { .. }), "{err}");
    assert!(err.to_string().contains("sx <sx@example.com>"), "{err}");
}

#[test]
fn signing_keys_gpg_cannot_sign_with_are_refused() {
    for (who, want) in [("expired", "expired at"), ("revoked", "is revoked"), ("sha1", "policy")] {
        let bytes = std::fs::read(keys().file(&format!("{who}.sec"))).unwrap();
        let err = SigningKey::parse(&bytes, "k.sec", None, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains(want), "{who}: {err}");
        assert!(err.to_string().contains(&named(who)), "{who}: {err}");
    }
    let bytes = std::fs::read(keys().file("locked.sec")).unwrap();
    let err = SigningKey::parse(&bytes, "locked.sec", None, SystemTime::now()).unwrap_err();
    assert!(err.to_string().contains("--signing-passphrase-file"), "{err}");
}

/// Encrypts with `rekey encrypt --recipients alice.pub` plus `extra`.
fn rekey_encrypt(tmp: &Path, plain: &Path, extra: &[&str], envs: &[(&str, String)]) -> (Run, PathBuf) {
    let out = tmp.join("m.gpg");
    let mut cmd = rekey()
        .arg("encrypt")
        .arg("--recipients")
        .arg(pubkey("alice"))
        .args(extra)
        .arg(plain)
        .arg("--out-file")
        .arg(&out);
    for (k, v) in envs {
        cmd = cmd.env(k, v);
    }
    (cmd.run(), out)
}

#[test]
fn gpg_reports_a_good_signature_on_rekeys_signed_messages() {
    let tmp = tempdir();
    let canary = Canary::new("signed");
    let plain = write(tmp.path(), "in.json", format!("{{\"k\":\"{}\"}}", canary.key));
    let signer_sec = keys().file("signer.sec").display().to_string();
    let (run, out) = rekey_encrypt(tmp.path(), &plain, &["--signing-key", &signer_sec], &[]);
    run.code(0)
        .stderr_has(&format!("signed by {}", keys().fingerprint("signer")));
    let home = GpgHome::new();
    home.import(&keys().file("alice.sec"));
    home.import(&pubkey("signer"));
    let (ok, text, err) = home.decrypt(&out);
    assert!(ok, "{err}");
    assert_eq!(text, std::fs::read(&plain).unwrap());
    assert!(
        err.contains(&format!("Good signature from \"{}\"", named("signer"))),
        "{err}"
    );
    // The message is SEIPDv1, uncompressed: one-pass signature, literal, signature.
    let packets = String::from_utf8(home.run(&["--list-packets", &out.display().to_string()])).unwrap();
    assert!(!packets.contains("compressed packet"), "{packets}");
    assert!(packets.contains("onepass_sig packet"), "{packets}");
    assert!(packets.contains("mdc_method: 2"), "{packets}");
    // From a CI variable, passphrase-protected: same result, key never printed.
    let locked = std::fs::read_to_string(keys().file("locked.sec")).unwrap();
    let (run, out) = rekey_encrypt(
        tmp.path(),
        &plain,
        &[
            "--signing-key-env",
            "REKEY_SIGNING_KEY",
            "--signing-passphrase-env",
            "SIGNING_PASS",
        ],
        &[
            ("REKEY_SIGNING_KEY", locked.clone()),
            ("SIGNING_PASS", "correct horse".to_owned()),
        ],
    );
    run.code(0);
    assert!(!run.stderr.contains("PRIVATE KEY") && !run.stdout.contains("PRIVATE KEY"));
    assert!(!run.stderr.contains("correct horse"));
    home.import(&pubkey("locked"));
    let (ok, _, err) = home.decrypt(&out);
    assert!(
        ok && err.contains(&format!("Good signature from \"{}\"", named("locked"))),
        "{err}"
    );
    // A wrong passphrase: exit 2, nothing written.
    std::fs::remove_file(&out).unwrap();
    let (run, out) = rekey_encrypt(
        tmp.path(),
        &plain,
        &[
            "--signing-key-env",
            "REKEY_SIGNING_KEY",
            "--signing-passphrase-env",
            "SIGNING_PASS",
        ],
        &[("REKEY_SIGNING_KEY", locked), ("SIGNING_PASS", "wrong".to_owned())],
    );
    run.code(2).stderr_has("the passphrase does not unlock it");
    assert!(!out.exists());
}

#[test]
fn decrypt_with_signers_names_the_inner_signer_or_refuses() {
    let tmp = tempdir();
    let plain = write(tmp.path(), "in.json", br#"{"auths":{}}"#);
    let home = GpgHome::new();
    home.import(&keys().file("signer.sec"));
    home.import(&pubkey("alice"));
    let signed = tmp.path().join("signed.gpg");
    home.run(&[
        "--trust-model",
        "always",
        "--passphrase",
        "",
        "--local-user",
        "signer@example.com",
        "--recipient",
        "alice@example.com",
        "--output",
        &signed.display().to_string(),
        "--sign",
        "--encrypt",
        &plain.display().to_string(),
    ]);
    let out = tmp.path().join("out.json");
    let decrypt = |signers: Option<&Path>, msg: &Path| {
        let mut cmd = rekey().arg("decrypt").arg("--key").arg(keys().file("alice.sec"));
        if let Some(s) = signers {
            cmd = cmd.arg("--signers").arg(s);
        }
        cmd.arg(msg).arg("--out-file").arg(&out).run()
    };
    decrypt(Some(&pubkey("signer")), &signed)
        .code(0)
        .stderr_has(&format!("good signature from {}", keys().fingerprint("signer")))
        .stderr_has(&named("signer"));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&plain).unwrap());
    std::fs::remove_file(&out).unwrap();
    // Without --signers: decrypted, and said to be unverified.
    decrypt(None, &signed).code(0).stderr_has("signed, not verified");
    std::fs::remove_file(&out).unwrap();
    // A signer outside the allowed set: exit 1, nothing written.
    decrypt(Some(&pubkey("alice")), &signed)
        .code(1)
        .stderr_has("not an allowed signer");
    assert!(!out.exists());
    // Unsigned: exit 1, nothing written.
    let unsigned = tmp.path().join("unsigned.gpg");
    gpg_encrypt(&pubkey("alice"), &keys().fingerprint("alice"), &plain, &unsigned);
    decrypt(Some(&pubkey("signer")), &unsigned)
        .code(1)
        .stderr_has("there is no signature");
    assert!(!out.exists());
}
