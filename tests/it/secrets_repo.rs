//! `rekey seal`, `rekey recipients check` and `rekey reencrypt` on a
//! secrets repo, read back with real GnuPG.

use crate::pgp_support::*;
use crate::support::*;
use std::path::{Path, PathBuf};

const JP: &str = "registry/JP_REGISTRY_PULL_SECRET_64";

/// A repo with a policy, and the output of `rekey generate` with a canary key.
struct Repo {
    tmp: tempfile::TempDir,
    canary: Canary,
}

impl Repo {
    fn new(tag: &str, policy: &[&str]) -> Repo {
        let repo = Repo {
            tmp: tempdir(),
            canary: Canary::new(tag),
        };
        repo.set_policy(policy);
        // rekey keeps its lock and redo log in the repo's git directory.
        git(&repo.root(), &["init", "-q", "-b", "main"]);
        repo.generate(&repo.canary.key.clone());
        repo
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn generated(&self) -> PathBuf {
        self.tmp.path().join("gen")
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn set_policy(&self, who: &[&str]) {
        let mut ring = Vec::new();
        for w in who {
            ring.extend(std::fs::read(keys().file(&format!("{w}.pub"))).unwrap());
        }
        write(&self.root(), ".rekey/recipients.asc", ring);
    }

    /// Runs `rekey generate` for jp and us with `key`.
    fn generate(&self, key: &str) {
        let key_file = write(self.tmp.path(), "key.txt", key);
        rekey()
            .arg("generate")
            .arg("--regions")
            .arg(repo_root().join("regions"))
            .arg("--api-key-file")
            .arg(&key_file)
            .args(["--region", "jp", "--region", "us", "--out"])
            .arg(self.generated())
            .run()
            .code(0);
        std::fs::remove_file(key_file).unwrap();
    }

    fn seal(&self, extra: &[&str]) -> Run {
        let run = rekey()
            .arg("seal")
            .arg("--repo")
            .arg(self.root())
            .arg("--in")
            .arg(self.generated())
            .args(extra)
            .run();
        self.canary.assert_not_in_run(&run);
        run
    }

    fn check(&self) -> Run {
        let run = rekey()
            .args(["--output", "json", "recipients", "check", "--repo"])
            .arg(self.root())
            .run();
        self.canary.assert_not_in_run(&run);
        run
    }

    fn reencrypt(&self, key: &str, extra: &[&str]) -> Run {
        let run = rekey()
            .arg("reencrypt")
            .arg("--repo")
            .arg(self.root())
            .arg("--key")
            .arg(keys().file(&format!("{key}.sec")))
            .args(extra)
            .run();
        self.canary.assert_not_in_run(&run);
        run
    }

    fn meta(&self, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.file(&format!("{rel}.meta.json"))).unwrap()).unwrap()
    }

    /// Asserts no file of the repo holds the canary in plain text.
    fn assert_sealed(&self) {
        self.canary.assert_not_in_tree(&self.root(), &[]);
    }
}

fn plaintext(repo: &Repo, region: &str) -> Vec<u8> {
    std::fs::read(repo.generated().join(format!("{region}.dockerconfigjson"))).unwrap()
}

#[test]
fn seal_writes_files_gpg_decrypts_and_check_passes() {
    let repo = Repo::new("seal-basic", &["alice", "bob"]);
    let run = repo.seal(&["--key-name", "iks-registry-prod-jp-20261123"]);
    run.code(0);
    for (region, rel) in [("jp", JP), ("us", "registry/US_REGISTRY_PULL_SECRET_64")] {
        let enc = repo.file(&format!("{rel}.gpg"));
        assert_eq!(mode(&enc), 0o644);
        for who in ["alice", "bob"] {
            assert_eq!(
                gpg_decrypt(&keys().file(&format!("{who}.sec")), &enc),
                plaintext(&repo, region)
            );
        }
    }
    let meta = repo.meta(JP);
    assert_eq!(meta["name"], "JP_REGISTRY_PULL_SECRET_64");
    assert_eq!(meta["active"]["state"], "current");
    assert_eq!(meta["active"]["key_name"], "iks-registry-prod-jp-20261123");
    assert!(
        meta["active"]["key_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let mut fprs = vec![keys().fingerprint("alice"), keys().fingerprint("bob")];
    fprs.sort();
    assert_eq!(meta["active"]["recipients"], serde_json::json!(fprs));
    assert_eq!(meta["previous"], serde_json::Value::Null);
    repo.assert_sealed();

    let check = repo.check();
    check.code(0);
    let report = check.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["files"].as_array().unwrap().len(), 2);
    let mut ids = vec![keys().subkey_id("alice"), keys().subkey_id("bob")];
    ids.sort();
    assert_eq!(report["files"][0]["key_ids"], serde_json::json!(ids));
}

#[test]
fn seal_of_unchanged_secrets_rewrites_nothing() {
    let repo = Repo::new("seal-stable", &["alice"]);
    repo.seal(&[]).code(0);
    let before = snapshot(&repo.root());
    let run = repo.seal(&[]);
    run.code(0);
    run.stdout_has("unchanged");
    // OpenPGP output is randomized: identical bytes mean the files were not rewritten.
    assert_eq!(snapshot(&repo.root()), before);
}

#[test]
fn a_pending_seal_never_touches_the_served_file_and_promotion_serves_it() {
    let repo = Repo::new("seal-rotate", &["alice"]);
    repo.seal(&[]).code(0);
    let old_plain = plaintext(&repo, "jp");
    let served = repo.file(&format!("{JP}.gpg"));
    let pending = repo.file(&format!("{JP}.pending.gpg"));
    let old_enc = std::fs::read(&served).unwrap();
    let second = Canary::new("seal-rotate-2");
    repo.generate(&second.key);
    let run = repo.seal(&["--pending"]);
    run.code(0);
    second.assert_not_in_run(&run);
    run.stdout_has(&format!("{JP}.pending.gpg sealed (pending"));
    // The pending version is never in <NAME>.gpg: that file is byte for
    // byte the live key, and no previous file appears.
    assert_eq!(std::fs::read(&served).unwrap(), old_enc);
    assert_eq!(gpg_decrypt(&keys().file("alice.sec"), &served), old_plain);
    assert!(!repo.file(&format!("{JP}.previous.gpg")).exists());
    assert_eq!(gpg_decrypt(&keys().file("alice.sec"), &pending), plaintext(&repo, "jp"));
    let meta = repo.meta(JP);
    assert_eq!(meta["schema"], 2);
    assert_eq!(meta["active"]["state"], "current");
    assert_eq!(meta["pending"]["state"], "pending");
    assert_eq!(meta["pending"]["file"], "JP_REGISTRY_PULL_SECRET_64.pending.gpg");
    repo.check().code(0);
    // Sealing the same pending plaintext again changes nothing.
    let pending_enc = std::fs::read(&pending).unwrap();
    let meta_bytes = std::fs::read(repo.file(&format!("{JP}.meta.json"))).unwrap();
    repo.seal(&["--pending"]).code(0).stdout_has("unchanged (pending");
    assert_eq!(std::fs::read(&pending).unwrap(), pending_enc);
    assert_eq!(
        std::fs::read(repo.file(&format!("{JP}.meta.json"))).unwrap(),
        meta_bytes
    );
    assert_eq!(std::fs::read(&served).unwrap(), old_enc);

    // Sealing the same plaintext as current promotes it without
    // re-encrypting: the pending file moves to <NAME>.gpg, the live one to
    // <NAME>.previous.gpg, and the pending file is gone.
    let run = repo.seal(&[]);
    run.code(0);
    run.stdout_has(&format!("{JP}.gpg sealed (current"));
    assert_eq!(std::fs::read(&served).unwrap(), pending_enc);
    assert_eq!(gpg_decrypt(&keys().file("alice.sec"), &served), plaintext(&repo, "jp"));
    let prev = repo.file(&format!("{JP}.previous.gpg"));
    assert_eq!(std::fs::read(&prev).unwrap(), old_enc);
    assert_eq!(gpg_decrypt(&keys().file("alice.sec"), &prev), old_plain);
    assert!(!pending.exists());
    let meta = repo.meta(JP);
    assert_eq!(meta["active"]["state"], "current");
    assert_eq!(meta["previous"]["state"], "previous");
    assert_eq!(meta["previous"]["file"], "JP_REGISTRY_PULL_SECRET_64.previous.gpg");
    assert!(meta.get("pending").is_none(), "{meta}");
    second.assert_not_in_tree(&repo.root(), &[]);
    repo.assert_sealed();
    repo.check().code(0);
}

#[test]
fn a_pending_version_planted_as_retired_is_refused_not_promoted() {
    // A PR marks the pending version as already retired (unsigned fields):
    // promoted and later demoted, `keys retire` would skip a live key.
    let repo = Repo::new("seal-pending-planted", &["alice"]);
    repo.seal(&[]).code(0);
    repo.generate(&Canary::new("seal-pending-planted-2").key);
    repo.seal(&["--pending"]).code(0);
    let meta_file = repo.file(&format!("{JP}.meta.json"));
    let mut meta = repo.meta(JP);
    meta["pending"]["retired_at"] = "2026-01-01T00:00:00Z".into();
    meta["pending"]["retired_how"] = "deleted".into();
    std::fs::write(&meta_file, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let before = snapshot(&repo.root());
    let run = repo.seal(&[]);
    assert_refused(&repo, run, &before, "pending.retired_at");
}

#[test]
fn a_pending_seal_of_a_secret_with_no_current_version_is_refused() {
    let repo = Repo::new("seal-pending-new", &["alice"]);
    let run = repo.seal(&["--pending"]);
    run.code(2);
    run.stderr_has("has no current version yet");
    assert!(!repo.file("registry").exists() || std::fs::read_dir(repo.file("registry")).unwrap().count() == 0);
}

#[test]
fn reencrypt_covers_a_pending_version_and_keeps_the_served_file_apart() {
    let repo = Repo::new("reenc-pending", &["alice"]);
    repo.seal(&[]).code(0);
    let second = Canary::new("reenc-pending-2");
    repo.generate(&second.key);
    repo.seal(&["--pending"]).code(0);
    repo.set_policy(&["alice", "bob"]);
    repo.check().code(1);
    repo.reencrypt("alice", &[]).code(0);
    repo.check().code(0);
    let pending = repo.file(&format!("{JP}.pending.gpg"));
    assert_eq!(gpg_decrypt(&keys().file("bob.sec"), &pending), plaintext(&repo, "jp"));
    let served = repo.file(&format!("{JP}.gpg"));
    assert_ne!(gpg_decrypt(&keys().file("bob.sec"), &served), plaintext(&repo, "jp"));
    assert_eq!(repo.meta(JP)["pending"]["state"], "pending");
    second.assert_not_in_tree(&repo.root(), &[]);
    repo.assert_sealed();
}

#[test]
fn policy_change_fails_check_until_reencrypt() {
    let repo = Repo::new("reenc", &["alice"]);
    repo.seal(&[]).code(0);
    repo.set_policy(&["alice", "bob"]);
    let check = repo.check();
    check.code(1);
    let report = check.json();
    assert_eq!(report["ok"], false);
    let problems = report["files"][0]["problems"].to_string();
    // The missing recipient is named by user ID and fingerprint, not only its subkey ID.
    assert!(
        problems.contains(&format!(
            "missing [bob <bob@example.com> (fingerprint {}, key ID {})]",
            keys().fingerprint("bob"),
            keys().subkey_id("bob")
        )),
        "{problems}"
    );

    // Dry run: prints the plan, writes nothing.
    let before = snapshot(&repo.root());
    let run = repo.reencrypt("alice", &["--dry-run"]);
    run.code(0);
    run.stdout_has("would re-encrypt  JP_REGISTRY_PULL_SECRET_64");
    assert_eq!(snapshot(&repo.root()), before);

    repo.reencrypt("alice", &[]).code(0);
    repo.check().code(0);
    let enc = repo.file(&format!("{JP}.gpg"));
    assert_eq!(gpg_decrypt(&keys().file("bob.sec"), &enc), plaintext(&repo, "jp"));
    // Nothing left to do: a second run rewrites nothing.
    let before = snapshot(&repo.root());
    repo.reencrypt("alice", &[]).code(0).stdout_has("unchanged");
    assert_eq!(snapshot(&repo.root()), before);

    // Alice leaves: bob re-encrypts, and alice's key no longer opens the files.
    repo.set_policy(&["bob"]);
    repo.reencrypt("bob", &[]).code(0);
    repo.check().code(0);
    let home = GpgHome::new();
    home.import(&keys().file("alice.sec"));
    assert!(!home.decrypt(&enc).0, "alice can still decrypt");
    repo.assert_sealed();
}

#[test]
fn check_flags_a_file_that_is_not_openpgp_and_metadata_that_disagrees() {
    let repo = Repo::new("check-bad", &["alice"]);
    repo.seal(&[]).code(0);
    write(&repo.root(), "registry/STRAY.gpg", "hello");
    let meta_path = repo.file("registry/US_REGISTRY_PULL_SECRET_64.meta.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["active"]["recipient_key_ids"] = serde_json::json!(["0000000000000000"]);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let run = repo.check();
    run.code(1);
    let text = run.stdout.clone();
    assert!(text.contains("not an encrypted OpenPGP message"), "{text}");
    assert!(text.contains("no metadata describes this file"), "{text}");
    assert!(text.contains("metadata lists key IDs [0000000000000000]"), "{text}");
    let jp_ok = run.json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["file"].as_str().unwrap().ends_with("JP_REGISTRY_PULL_SECRET_64.gpg") && f["ok"] == true);
    assert!(jp_ok, "{text}");
    let junit = rekey()
        .args(["--output", "junit", "recipients", "check", "--repo"])
        .arg(repo.root())
        .run();
    junit.code(1);
    assert_eq!(junit.stdout.matches("<testcase ").count(), 3, "{}", junit.stdout);
    assert_eq!(junit.stdout.matches("<failure ").count(), 2, "{}", junit.stdout);
}

// ---- bad input: message, exit 2, nothing written ----

#[track_caller]
fn assert_refused(repo: &Repo, run: Run, before: &std::collections::BTreeMap<PathBuf, Vec<u8>>, message: &str) {
    run.code(2);
    run.stderr_has(message);
    repo.canary.assert_not_in_run(&run);
    assert_eq!(&snapshot(&repo.root()), before, "nothing may be written");
}

#[test]
fn seal_without_policy_file_fails() {
    let repo = Repo::new("seal-nopolicy", &["alice"]);
    std::fs::remove_file(repo.file(".rekey/recipients.asc")).unwrap();
    let before = snapshot(&repo.root());
    let run = repo.seal(&[]);
    assert_refused(&repo, run, &before, ".rekey/recipients.asc is missing");
    assert!(!repo.file("registry").exists());
}

#[test]
fn seal_with_a_revoked_policy_certificate_fails_by_name() {
    let repo = Repo::new("seal-revoked", &["alice", "revoked"]);
    let before = snapshot(&repo.root());
    let run = repo.seal(&[]);
    let msg = format!(
        "certificate {} (revoked <revoked@example.com>) is revoked",
        keys().fingerprint("revoked")
    );
    assert_refused(&repo, run, &before, &msg);
}

#[test]
fn seal_of_an_inconsistent_pull_secret_writes_nothing() {
    let repo = Repo::new("seal-incons", &["alice"]);
    repo.seal(&[]).code(0);
    let before = snapshot(&repo.root());
    // A new key for jp and a broken us: neither is written.
    let second = Canary::new("seal-incons-2");
    repo.generate(&second.key);
    let us = repo.generated().join("us.dockerconfigjson");
    let text = std::fs::read_to_string(&us).unwrap();
    let hacked = text.replacen(&second.key, "other-key", 1);
    std::fs::write(&us, hacked).unwrap();
    let run = repo.seal(&[]);
    second.assert_not_in_run(&run);
    assert_refused(&repo, run, &before, "us.dockerconfigjson: not a consistent pull secret");
}

#[test]
fn seal_with_malformed_metadata_names_file_and_field() {
    let repo = Repo::new("seal-badmeta", &["alice"]);
    repo.seal(&[]).code(0);
    let meta_path = repo.file(&format!("{JP}.meta.json"));
    let text = std::fs::read_to_string(&meta_path)
        .unwrap()
        .replace("\"state\": \"current\"", "\"state\": \"live\"");
    std::fs::write(&meta_path, text).unwrap();
    let before = snapshot(&repo.root());
    let run = repo.seal(&[]);
    assert_refused(
        &repo,
        run,
        &before,
        &format!("{}: unknown variant `live`", meta_path.display()),
    );
}

#[test]
fn reencrypt_with_a_key_that_is_not_a_recipient_writes_nothing() {
    let repo = Repo::new("reenc-wrong", &["alice"]);
    repo.seal(&[]).code(0);
    repo.set_policy(&["alice", "bob"]);
    let before = snapshot(&repo.root());
    let run = repo.reencrypt("carol", &[]);
    assert_refused(&repo, run, &before, "none of them is in");
}

#[test]
fn reencrypt_of_a_tampered_file_writes_nothing() {
    let repo = Repo::new("reenc-tamper", &["alice"]);
    repo.seal(&[]).code(0);
    repo.set_policy(&["alice", "bob"]);
    // Replace us's file with another message to the same key: the digest no longer matches.
    let enc = |p: &Path| std::fs::read(p).unwrap();
    let jp = enc(&repo.file(&format!("{JP}.gpg")));
    std::fs::write(repo.file("registry/US_REGISTRY_PULL_SECRET_64.gpg"), jp).unwrap();
    let before = snapshot(&repo.root());
    let run = repo.reencrypt("alice", &[]);
    assert_refused(&repo, run, &before, "does not match the digest in the metadata");
}

/// Asserts no temporary of rekey's was left anywhere under `dir`.
fn assert_no_temporaries(dir: &Path) {
    for path in snapshot(dir).keys() {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(!name.starts_with(".rekey-tmp"), "stray temporary {}", path.display());
    }
}

#[test]
fn a_relative_repo_path_writes_like_an_absolute_one() {
    // `rekey init` tells teams to run `--repo .` from their checkout, and
    // the CI job defaults to it: every multi-file write must work so.
    let repo = Repo::new("seal-relative", &["alice"]);
    let run = rekey()
        .args(["seal", "--repo", ".", "--in"])
        .arg(repo.generated())
        .current_dir(&repo.root())
        .run();
    run.code(0);
    repo.canary.assert_not_in_run(&run);
    assert!(repo.file(&format!("{JP}.gpg")).exists());
    // A second key, sealed with a path relative to the repo's parent,
    // demotes the first to previous.
    let second = Canary::new("seal-relative-2");
    repo.generate(&second.key);
    rekey()
        .args(["seal", "--repo", "repo", "--in", "gen"])
        .current_dir(repo.tmp.path())
        .run()
        .code(0);
    assert!(repo.file(&format!("{JP}.previous.gpg")).exists());
    let jp_before = std::fs::read(repo.file(&format!("{JP}.gpg"))).unwrap();
    rekey()
        .args(["rollback", "--repo", "./repo/", "--region", "jp"])
        .current_dir(repo.tmp.path())
        .run()
        .code(0);
    // The rollback swapped the files: the served one is the first key's.
    assert_eq!(
        std::fs::read(repo.file(&format!("{JP}.previous.gpg"))).unwrap(),
        jp_before
    );
    rekey()
        .args(["reencrypt", "--repo", ".", "--key"])
        .arg(keys().file("alice.sec"))
        .current_dir(&repo.root())
        .run()
        .code(0);
    assert_no_temporaries(repo.tmp.path());
    repo.check().code(0);
    repo.assert_sealed();
}

#[test]
fn sealing_another_key_as_current_says_it_drops_the_pending_version() {
    let repo = Repo::new("seal-drop-pending", &["alice"]);
    repo.seal(&[]).code(0);
    let pending_key = Canary::new("seal-drop-pending-2");
    repo.generate(&pending_key.key);
    repo.seal(&["--pending", "--key-name", "iks-pending-20261124"]).code(0);
    assert!(repo.file(&format!("{JP}.pending.gpg")).exists());
    let fingerprint = repo.meta(JP)["pending"]["key_fingerprint"].as_str().unwrap().to_owned();
    let third = Canary::new("seal-drop-pending-3");
    repo.generate(&third.key);
    let run = repo.seal(&[]);
    run.code(0);
    run.stderr_has(&format!(
        "{}: the pending version (key {fingerprint}, iks-pending-20261124) is dropped",
        JP.trim_start_matches("registry/")
    ));
    assert!(!repo.file(&format!("{JP}.pending.gpg")).exists());
    // The JSON report names what was dropped, too.
    let fourth = Canary::new("seal-drop-pending-4");
    repo.generate(&fourth.key);
    repo.seal(&["--pending"]).code(0);
    let fourth_fp = repo.meta(JP)["pending"]["key_fingerprint"].clone();
    let fifth = Canary::new("seal-drop-pending-5");
    repo.generate(&fifth.key);
    let run = rekey()
        .args(["-o", "json", "seal", "--repo"])
        .arg(repo.root())
        .arg("--in")
        .arg(repo.generated())
        .run();
    run.code(0);
    let report = run.json();
    let jp = report["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["region"] == "jp")
        .unwrap();
    assert_eq!(jp["dropped_pending"]["key_fingerprint"], fourth_fp);
    for c in [&pending_key, &third, &fourth, &fifth] {
        c.assert_not_in_run(&run);
    }
}

#[test]
fn a_new_pending_seal_says_it_replaces_the_old_pending_version() {
    let repo = Repo::new("seal-replace-pending", &["alice"]);
    repo.seal(&[]).code(0);
    let first = Canary::new("seal-replace-pending-1");
    repo.generate(&first.key);
    repo.seal(&["--pending"]).code(0);
    // The old pending version's name is repo content: a control character
    // planted in it reaches the terminal escaped.
    let meta_path = repo.file(&format!("{JP}.meta.json"));
    let mut meta = repo.meta(JP);
    meta["pending"]["key_name"] = serde_json::Value::String("iks-\u{1b}[2Jplanted".into());
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let second = Canary::new("seal-replace-pending-2");
    repo.generate(&second.key);
    let run = repo.seal(&["--pending"]);
    run.code(0).stderr_has("is replaced by a new pending version");
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    assert!(repo.file(&format!("{JP}.pending.gpg")).exists());
    second.assert_not_in_run(&run);
    first.assert_not_in_run(&run);
}
