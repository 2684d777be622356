//! Signed secrets end to end with real GnuPG and a real git repo: `seal
//! --signing-key` signs inside and out, gpg verifies both, and `rekey
//! check` fails every pull request whose secret did not come from a signer
//! allowed at the base, naming the cause and the signer.

use crate::pgp_support::*;
use crate::support::*;
use std::path::Path;

const JP: &str = "registry/JP_REGISTRY_PULL_SECRET_64";
const OLD_NAME: &str = "iks-registry-prod-test-20260801";
const NEW_NAME: &str = "iks-registry-prod-test-20261123";

/// A [`KeyPr`] with this file's seals.
struct Pr(KeyPr);

impl std::ops::Deref for Pr {
    type Target = KeyPr;
    fn deref(&self) -> &KeyPr {
        &self.0
    }
}

impl Pr {
    /// A secrets repo whose `main` allows `signers` (public key files) and
    /// holds jp and us sealed and signed by `signer`, with a branch `pr`.
    fn new(tag: &str, signers: &[&Path]) -> Pr {
        let pr = Pr(KeyPr::new(tag, &["alice"]));
        pr.set_signers(signers);
        pr.seal(&pr.old.key, OLD_NAME, &signing_args("signer")).code(0);
        pr.open();
        pr
    }

    fn set_signers(&self, signers: &[&Path]) {
        let mut ring = Vec::new();
        for s in signers {
            ring.extend(std::fs::read(s).unwrap());
        }
        write(&self.repo(), ".rekey/signers.asc", ring);
    }

    /// Generates jp and us with `key` and seals them with `extra` options.
    fn seal(&self, key: &str, key_name: &str, extra: &[String]) -> Run {
        seal_key(
            &self.repo(),
            &repo_root().join("regions"),
            &["jp", "us"],
            key,
            Some(key_name),
            extra,
        )
    }

    /// Seals the new key (named [`NEW_NAME`]) with `extra` options.
    fn seal_new(&self, extra: &[String]) -> Run {
        self.seal(&self.new.key, NEW_NAME, extra)
    }

    /// Seals the new key as an attacker would: with rekey, in a work tree
    /// whose signers.asc is set aside, then put back.
    fn seal_bypassing_signers(&self, extra: &[String]) {
        let signers = self.repo().join(".rekey/signers.asc");
        let kept = std::fs::read(&signers).unwrap();
        std::fs::remove_file(&signers).unwrap();
        self.seal_new(extra).code(0);
        std::fs::write(&signers, kept).unwrap();
    }

    /// Re-seals the old key unsigned in a repo without signers.asc (as
    /// rekey did before signing): metadata without statements.
    fn seal_unsigned_over(&self) {
        let registry = self.repo().join("registry");
        std::fs::remove_dir_all(&registry).unwrap();
        self.seal(&self.old.key, OLD_NAME, &[]).code(0);
    }

    /// The failing `authorship` finding on jp's metadata, from JSON output.
    fn authorship_failure(&self, extra: &[&str]) -> String {
        let mut args = vec!["--output", "json"];
        args.extend(extra);
        let run = self.check(&args);
        run.code(1);
        let v = run.json();
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "authorship" && c["target"] == format!("{JP}.meta.json") && c["ok"] == false)
            .unwrap_or_else(|| panic!("no failing authorship finding: {v}"))["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn meta(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.repo().join(format!("{JP}.meta.json"))).unwrap()).unwrap()
    }
}

#[test]
fn gpg_verifies_the_signed_secret_and_its_statement() {
    let pr = Pr::new("auth-gpg", &[&keys().file("signer.pub")]);
    let home = GpgHome::new();
    home.import(&keys().file("alice.sec"));
    home.import(&keys().file("signer.pub"));
    let (ok, plain, err) = home.decrypt(&pr.repo().join(format!("{JP}.gpg")));
    assert!(ok, "{err}");
    assert!(pr.old.found_in(&plain));
    assert!(
        err.contains("Good signature from \"signer <signer@example.com>\""),
        "{err}"
    );
    let meta = pr.meta();
    let signed = &meta["active"]["signed"];
    let tmp = tempdir();
    let statement = write(tmp.path(), "statement", signed["statement"].as_str().unwrap());
    let sig = write(tmp.path(), "statement.asc", signed["signature"].as_str().unwrap());
    let (ok, err) = home.verify(&sig, &statement);
    assert!(ok && err.contains("Good signature from \"signer"), "{err}");
    let text = std::fs::read_to_string(&statement).unwrap();
    assert!(
        text.starts_with("rekey-statement 1\nsecret JP_REGISTRY_PULL_SECRET_64\nregion jp\nversion 1\n"),
        "{text}"
    );

    // And check accepts a statement signature made by gpg itself: a pull
    // request whose statement the signer signed with `gpg --detach-sign`.
    let home = GpgHome::new();
    home.import(&keys().file("signer.sec"));
    pr.seal_new(&signing_args("signer")).code(0);
    let mut meta = pr.meta();
    let statement = write(
        tmp.path(),
        "statement2",
        meta["active"]["signed"]["statement"].as_str().unwrap(),
    );
    let gpg_sig = tmp.path().join("statement2.asc");
    home.detach_sign("signer@example.com", &statement, &gpg_sig, &[]);
    meta["active"]["signed"]["signature"] = std::fs::read_to_string(&gpg_sig).unwrap().into();
    std::fs::write(
        pr.repo().join(format!("{JP}.meta.json")),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
    pr.commit("signed with gpg");
    pr.check(&[])
        .code(0)
        .stdout_has("version 2 signed by signer <signer@example.com>");
}

#[test]
fn a_signed_rotation_passes_check_which_names_the_signer() {
    let pr = Pr::new("auth-ok", &[&keys().file("signer.pub")]);
    pr.seal_new(&signing_args("signer")).code(0);
    pr.commit("rotate");
    let run = pr.check(&[]);
    run.code(0).stdout_has(&format!(
        "version 2 signed by signer <signer@example.com> (fingerprint {})",
        keys().fingerprint("signer")
    ));
    // With the key, the signature inside is checked too.
    let with_key = ["--key".to_owned(), keys().file("alice.sec").display().to_string()];
    pr.check(&with_key.iter().map(String::as_str).collect::<Vec<_>>())
        .code(0);
}

#[test]
fn seal_refuses_no_key_and_a_key_outside_signers_asc() {
    let pr = Pr::new("auth-refuse", &[&keys().file("signer.pub")]);
    let before = snapshot(&pr.repo());
    pr.seal_new(&[])
        .code(2)
        .stderr_has("signers.asc exists, so every secret must be signed");
    pr.seal_new(&signing_args("alice"))
        .code(2)
        .stderr_has("alice <alice@example.com>")
        .stderr_has("is not an allowed signer");
    assert_eq!(snapshot(&pr.repo()), before, "nothing written");
}

#[test]
fn unsigned_and_unknown_signer_pull_requests_fail_check() {
    let pr = Pr::new("auth-unsigned", &[&keys().file("signer.pub")]);
    pr.seal_bypassing_signers(&[]);
    pr.commit("unsigned");
    let detail = pr.authorship_failure(&[]);
    assert!(detail.contains("unsigned"), "{detail}");

    let pr = Pr::new("auth-unknown", &[&keys().file("signer.pub")]);
    pr.seal_bypassing_signers(&signing_args("alice"));
    pr.commit("signed by alice");
    let detail = pr.authorship_failure(&[]);
    assert!(detail.contains("which is not an allowed signer"), "{detail}");
}

#[test]
fn a_signer_added_in_the_same_pull_request_cannot_sign_in_it() {
    let pr = Pr::new("auth-added", &[&keys().file("signer.pub")]);
    pr.set_signers(&[&keys().file("signer.pub"), &keys().file("alice.pub")]);
    pr.seal_new(&signing_args("alice")).code(0);
    pr.commit("alice adds herself and signs");
    let detail = pr.authorship_failure(&[]);
    assert!(detail.contains("not an allowed signer"), "{detail}");
    pr.check(&[]).code(1).stdout_has(&format!(
        "signer added (may sign once merged): alice <alice@example.com> (fingerprint {})",
        keys().fingerprint("alice")
    ));
}

#[test]
fn a_replayed_older_version_and_a_swapped_ciphertext_fail_check() {
    let pr = Pr::new("auth-replay", &[&keys().file("signer.pub")]);
    let repo = pr.repo();
    let v1 = [
        std::fs::read(repo.join(format!("{JP}.gpg"))).unwrap(),
        std::fs::read(repo.join(format!("{JP}.meta.json"))).unwrap(),
    ];
    // main moves on to version 2.
    git(&repo, &["checkout", "-q", "main"]);
    pr.seal_new(&signing_args("signer")).code(0);
    pr.commit("rotate");
    git(&repo, &["checkout", "-q", "-B", "pr"]);
    std::fs::write(repo.join(format!("{JP}.gpg")), &v1[0]).unwrap();
    std::fs::write(repo.join(format!("{JP}.meta.json")), &v1[1]).unwrap();
    std::fs::remove_file(repo.join(format!("{JP}.previous.gpg"))).unwrap();
    pr.commit("replay version 1");
    let detail = pr.authorship_failure(&[]);
    assert!(
        detail.contains("version 1 signed by signer <signer@example.com>")
            && detail.contains("not newer than the base's version 2"),
        "{detail}"
    );

    // A ciphertext swapped under an intact statement: us's file as jp's.
    git(&repo, &["reset", "-q", "--hard", "main"]);
    std::fs::copy(
        repo.join("registry/US_REGISTRY_PULL_SECRET_64.gpg"),
        repo.join(format!("{JP}.gpg")),
    )
    .unwrap();
    pr.commit("swap");
    let detail = pr.authorship_failure(&[]);
    assert!(detail.contains("the current ciphertext's SHA-256 is"), "{detail}");
}

#[test]
fn signers_expired_or_revoked_at_the_base_no_longer_vouch() {
    // A signer made by gpg, allowed at the base, signs the pull request.
    let home = GpgHome::new();
    let fpr = home.quick_gen_key("rv <rv@example.com>", "ed25519", "sign", "never");
    let tmp = tempdir();
    let public = write(tmp.path(), "rv.pub", home.run(&["--armor", "--export", &fpr]));
    let secret = write(
        tmp.path(),
        "rv.sec",
        home.run(&["--passphrase", "", "--armor", "--export-secret-keys", &fpr]),
    );
    let rv = vec!["--signing-key".to_owned(), secret.display().to_string()];
    for (case, want) in [("revoked", "is revoked"), ("expired", "expired at")] {
        let pr = Pr::new(&format!("auth-{case}"), &[&keys().file("signer.pub"), &public]);
        pr.seal_new(&rv).code(0);
        pr.commit("rv signs");
        pr.check(&[]).code(0);
        // Then the base learns that rv is revoked (or expired): the pull
        // request, rebased, no longer passes.
        let gone = GpgHome::new();
        gone.import(&secret);
        if case == "revoked" {
            gone.import(&write(tmp.path(), "rv.rev", home.revocation(&fpr)));
        } else {
            gone.run(&["--passphrase", "", "--quick-set-expire", &fpr, "seconds=1"]);
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        let updated = write(tmp.path(), "rv-now.pub", gone.run(&["--armor", "--export", &fpr]));
        let repo = pr.repo();
        git(&repo, &["checkout", "-q", "main"]);
        pr.set_signers(&[&keys().file("signer.pub"), &updated]);
        pr.commit(&format!("rv is {case}"));
        git(&repo, &["checkout", "-q", "pr"]);
        git(&repo, &["rebase", "-q", "main"]);
        let detail = pr.authorship_failure(&[]);
        assert!(
            detail.contains(want) && detail.contains("rv <rv@example.com>"),
            "{case}: {detail}"
        );
    }
}

#[test]
fn audit_shows_each_versions_signer_and_time() {
    let pr = Pr::new("auth-audit", &[&keys().file("signer.pub")]);
    pr.seal_new(&signing_args("signer")).code(0);
    let fpr = keys().fingerprint("signer");
    let audit = || rekey().arg("audit").arg("--repo").arg(pr.repo());
    audit()
        .run()
        .code(0)
        .stdout_has(&format!(
            "signed   JP_REGISTRY_PULL_SECRET_64 current  version 2 by signer <signer@example.com> (fingerprint {fpr}) at 20"
        ))
        .stdout_has("signed   JP_REGISTRY_PULL_SECRET_64 previous version 1 by signer");
    let v = audit().args(["--output", "json"]).run().json();
    let current = v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["secret"] == "JP_REGISTRY_PULL_SECRET_64" && s["version_state"] == "current")
        .unwrap()
        .clone();
    assert_eq!(current["signer_fingerprint"], fpr.as_str());
    assert_eq!(current["version"], 2);
    assert!(current["signed_at"].as_str().unwrap().ends_with('Z'), "{current}");

    // An unsigned active version fails the audit once signers.asc exists.
    let meta_path = pr.repo().join(format!("{JP}.meta.json"));
    let mut meta = pr.meta();
    meta["active"].as_object_mut().unwrap().remove("signed");
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    audit()
        .run()
        .code(1)
        .stdout_has("unsigned JP_REGISTRY_PULL_SECRET_64 current  no signed statement");
}

#[test]
fn sign_migrates_an_unsigned_repo_after_review_and_refuses_mismatched_metadata() {
    // An unsigned repo, as before signing existed.
    let pr = Pr::new("auth-migrate", &[&keys().file("signer.pub")]);
    let repo = pr.repo();
    std::fs::remove_file(repo.join(".rekey/signers.asc")).unwrap();
    pr.seal_unsigned_over();
    pr.commit("unsigned");
    let sign = |extra: &[&str]| {
        rekey()
            .arg("sign")
            .arg("--repo")
            .arg(&repo)
            .args(signing_args("signer"))
            .args(extra)
            .run()
    };

    // Metadata that does not match its file is refused, nothing written.
    let meta_path = repo.join(format!("{JP}.meta.json"));
    let good = std::fs::read(&meta_path).unwrap();
    let mut meta = pr.meta();
    meta["active"]["recipient_key_ids"] = serde_json::json!(["0123456789ABCDEF"]);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let before = snapshot(&repo);
    sign(&[])
        .code(2)
        .stderr_has(&format!("{JP}.gpg: addressed to ["))
        .stderr_has("but its metadata lists [0123456789ABCDEF]");
    assert_eq!(snapshot(&repo), before);
    std::fs::write(&meta_path, good).unwrap();
    let before = snapshot(&repo);

    // A dry run writes nothing; then the reviewed repo is signed and committed.
    sign(&["--dry-run"])
        .code(0)
        .stdout_has("would sign JP_REGISTRY_PULL_SECRET_64 (version 1)");
    assert_eq!(snapshot(&repo), before);
    pr.set_signers(&[&keys().file("signer.pub")]);
    sign(&["--commit"])
        .code(0)
        .stdout_has("signed     JP_REGISTRY_PULL_SECRET_64 (version 1)");
    assert!(pr.meta()["active"]["signed"]["statement"].is_string());
    sign(&[])
        .code(0)
        .stdout_has("unchanged  JP_REGISTRY_PULL_SECRET_64 (version 1)");
    // A key outside signers.asc cannot sign.
    rekey()
        .arg("sign")
        .arg("--repo")
        .arg(&repo)
        .args(signing_args("alice"))
        .run()
        .code(2)
        .stderr_has("is not an allowed signer");
    // (exit 1: the old key is overdue for rotation)
    rekey()
        .arg("audit")
        .arg("--repo")
        .arg(&repo)
        .run()
        .code(1)
        .stdout_has("signed   JP_REGISTRY_PULL_SECRET_64 current  version 1 by signer <signer@example.com>");
}

/// A signed pending seal signs a new statement that hashes the pending file
/// next to the unchanged served one: check passes it, and a pending file
/// swapped for another ciphertext fails authorship.
#[test]
fn a_signed_pending_seal_covers_the_pending_file() {
    let pr = Pr::new("auth-pending", &[&keys().file("signer.pub")]);
    let served = std::fs::read(pr.repo().join(format!("{JP}.gpg"))).unwrap();
    pr.seal_new(&[signing_args("signer"), vec!["--pending".to_owned()]].concat())
        .code(0);
    assert_eq!(std::fs::read(pr.repo().join(format!("{JP}.gpg"))).unwrap(), served);
    let statement = pr.meta()["active"]["signed"]["statement"].as_str().unwrap().to_owned();
    assert!(statement.contains("\nversion 2\n"), "{statement}");
    assert!(statement.contains("\nfile pending sha256:"), "{statement}");
    pr.commit("seal pending");
    pr.check(&[])
        .code(0)
        .stdout_has("version 2 signed by signer <signer@example.com>");

    // Swap the pending file for another message to the same recipients.
    let other = tempdir();
    let plain = write(other.path(), "plain", "{\"auths\":{}}");
    let pending = pr.repo().join(format!("{JP}.pending.gpg"));
    std::fs::remove_file(&pending).unwrap();
    gpg_encrypt(
        &keys().file("alice.pub"),
        &keys().fingerprint("alice"),
        &plain,
        &pending,
    );
    pr.commit("swap the pending ciphertext");
    let detail = pr.authorship_failure(&[]);
    assert!(detail.contains("pending"), "{detail}");
}
