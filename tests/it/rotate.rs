//! `rekey rotate` and `rekey rollback` end to end: a real registry proves the
//! key, real GnuPG reads the sealed secrets, a real git repo records them.

use crate::pgp_support::*;
use crate::support::*;
use crate::verify_support::FIXTURE;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const OLD_KEY_NAME: &str = "iks-registry-access-prod-test-20260801";
pub(crate) const NEW_KEY_NAME: &str = "iks-registry-access-prod-test-20261123";

/// A catalog of test regions pointing at the test registry, and a git
/// secrets repo holding secrets sealed with an old key.
pub(crate) struct Setup {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) old: Canary,
    pub(crate) hosts: Vec<String>,
    /// Sign with gpg's `signer` key (allowed in `.rekey/signers.asc`).
    pub(crate) signed: bool,
}

impl Setup {
    /// Regions `r1`, `r2` (two hosts each) plus `extra` hosts in r2.
    pub(crate) fn new(tag: &str, extra: &[&str]) -> Setup {
        Setup::with_signing(tag, extra, false)
    }

    /// Like [`Setup::new`], with `signed`: `signers.asc` allows gpg's
    /// `signer`, and every seal and rotation signs with it.
    pub(crate) fn with_signing(tag: &str, extra: &[&str], signed: bool) -> Setup {
        let tmp = tempdir();
        let uniq = unique_hex();
        let mut hosts = Vec::new();
        let mut catalog = String::new();
        for (i, r) in ["r1", "r2"].iter().enumerate() {
            let mut mine = vec![format!("{r}-{uniq}.reg.test"), format!("private-{r}-{uniq}.reg.test")];
            if i == 1 {
                mine.extend(extra.iter().map(|s| s.to_string()));
            }
            let list: Vec<String> = mine.iter().map(|h| format!("\"{h}\"")).collect();
            catalog = format!(
                "name = \"{r}\"\nprobe_image = \"armada-master/alpine:latest\"\nhosts = [{}]\n",
                list.join(", ")
            );
            write(&tmp.path().join("regions"), &format!("{r}.toml"), &catalog);
            hosts.extend(mine);
        }
        drop(catalog);
        let setup = Setup {
            tmp,
            old: Canary::new(&format!("{tag}-old")),
            hosts,
            signed,
        };
        let repo = setup.repo();
        init_secrets_repo(&repo, &["alice", "bob"]);
        if signed {
            write(&repo, ".rekey/signers.asc", public_ring(&["signer"]));
        }
        // Seal the old key (no registry accepts it: seal does not verify).
        seal_key(
            &repo,
            &setup.regions(),
            &[],
            &setup.old.key,
            Some(OLD_KEY_NAME),
            setup.signing_args(),
        )
        .code(0);
        commit_all(&repo, "old key");
        setup
    }

    /// `--signing-key` for a signed setup, nothing otherwise.
    pub(crate) fn signing_args(&self) -> Vec<String> {
        if self.signed {
            signing_args("signer")
        } else {
            Vec::new()
        }
    }

    /// Verifies a region's statement as `check` does, with public keys only.
    pub(crate) fn verify_statement(&self, region: &str) -> Result<u64, String> {
        use rekey::secrets_repo::{authorship, layout::Metadata, signing::AllowedSigners};
        let signers = AllowedSigners::parse(&std::fs::read(keys().file("signer.pub")).unwrap(), "signers").unwrap();
        let meta_path = self.repo().join(format!(
            "registry/{}_REGISTRY_PULL_SECRET_64.meta.json",
            region.to_uppercase()
        ));
        let meta = Metadata::parse(&std::fs::read(meta_path).unwrap(), "meta").map_err(|e| e.to_string())?;
        let active = std::fs::read(self.file(region, false)).unwrap();
        let previous = meta
            .previous
            .as_ref()
            .map(|_| std::fs::read(self.file(region, true)).unwrap());
        let pending = meta
            .pending
            .as_ref()
            .map(|p| std::fs::read(self.file(region, false).with_file_name(&p.file)).unwrap());
        authorship::verify(
            &meta,
            &active,
            previous.as_deref(),
            pending.as_deref(),
            &signers,
            std::time::SystemTime::now(),
        )
        .map(|(st, _)| st.version)
        .map_err(|e| e.to_string())
    }

    pub(crate) fn regions(&self) -> PathBuf {
        self.tmp.path().join("regions")
    }

    pub(crate) fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    /// `rekey rotate` to the key the test registry accepts, with every host resolved to it.
    pub(crate) fn rotate(&self) -> Rekey {
        self.rotate_named(NEW_KEY_NAME)
    }

    pub(crate) fn rotate_named(&self, key_name: &str) -> Rekey {
        let fx = &*FIXTURE;
        let mut cmd = rekey()
            .arg("rotate")
            .arg("--regions")
            .arg(self.regions())
            .arg("--repo")
            .arg(self.repo())
            .args(["--api-key-env", "NEW_KEY", "--key-name", key_name, "--timeout", "10s"])
            .env("NEW_KEY", &fx.key)
            .arg("--ca-cert")
            .arg(&fx.ca_pem);
        for h in self.hosts.iter().filter(|h| h.ends_with(".reg.test")) {
            cmd = cmd.arg("--resolve").arg(format!("{h}={}", fx.basic));
        }
        cmd.args(self.signing_args())
    }

    pub(crate) fn meta(&self, region: &str) -> serde_json::Value {
        let path = self.repo().join(format!(
            "registry/{}_REGISTRY_PULL_SECRET_64.meta.json",
            region.to_uppercase()
        ));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    pub(crate) fn file(&self, region: &str, previous: bool) -> PathBuf {
        let suffix = if previous { ".previous.gpg" } else { ".gpg" };
        self.repo().join(format!(
            "registry/{}_REGISTRY_PULL_SECRET_64{suffix}",
            region.to_uppercase()
        ))
    }

    /// Checks the whole output and repo (git history included) for both keys.
    pub(crate) fn assert_no_leak(&self, run: &Run) {
        let new = Canary::with_value(&FIXTURE.key);
        for c in [&self.old, &new] {
            c.assert_not_in_run(run);
            c.assert_not_in_tree(&self.repo(), &[]);
            let history = git(&self.repo(), &["log", "--all", "-p", "--format=%B"]);
            assert!(!c.found_in(history.as_bytes()), "a key leaked into git history");
        }
    }
}

/// Returns the password in a decrypted dockerconfigjson's first entry.
pub(crate) fn password_in(plaintext: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(plaintext).unwrap();
    let first = v["auths"].as_object().unwrap().values().next().unwrap().clone();
    first["password"].as_str().unwrap().to_owned()
}

#[test]
fn rotates_every_region_commits_and_a_rerun_changes_nothing() {
    let s = Setup::new("rot-e2e", &[]);
    let run = s.rotate().args(["--commit", "--branch", "rotate-20261123"]).run();
    run.code(0)
        .stdout_has("rotated")
        .stderr_has("on new branch rotate-20261123");
    s.assert_no_leak(&run);
    for region in ["r1", "r2"] {
        // Real gpg reads the new key; the old one is kept as previous.
        assert_eq!(
            password_in(&gpg_decrypt(&keys().file("bob.sec"), &s.file(region, false))),
            FIXTURE.key
        );
        assert_eq!(
            password_in(&gpg_decrypt(&keys().file("alice.sec"), &s.file(region, true))),
            s.old.key
        );
        let meta = s.meta(region);
        assert_eq!(meta["active"]["state"], "current");
        assert_eq!(meta["active"]["key_name"], NEW_KEY_NAME);
        assert_eq!(meta["previous"]["state"], "previous");
        assert_eq!(meta["previous"]["key_name"], OLD_KEY_NAME);
    }
    assert_eq!(
        git(&s.repo(), &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "rotate-20261123"
    );
    let message = git(&s.repo(), &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with(&format!("Rotate registry pull secrets of r1, r2 to {NEW_KEY_NAME}")),
        "{message}"
    );
    assert!(message.contains(" -> sha256:"), "{message}");
    assert!(!s.repo().join(".git/rekey/journal.json").exists());
    assert_eq!(
        git(&s.repo(), &["status", "--porcelain"]),
        "",
        "nothing left uncommitted"
    );

    let before = snapshot(&s.repo());
    let head = git(&s.repo(), &["rev-parse", "HEAD"]);
    let again = s.rotate().args(["--commit", "--branch", "rotate-20261123"]).run();
    again.code(0).stdout_has("unchanged");
    assert_eq!(snapshot(&s.repo()), before, "a second run rewrites nothing");
    assert_eq!(git(&s.repo(), &["rev-parse", "HEAD"]), head, "and commits nothing");
}

#[test]
fn rotate_branch_never_drops_a_commit() {
    let s = Setup::new("rot-branch", &[]);
    let repo = s.repo();
    let main = git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).trim().to_owned();
    // A teammate's branch with a commit HEAD does not have.
    git(&repo, &["checkout", "-q", "-b", "team"]);
    write(&repo, "NOTES.md", "a teammate's work\n");
    git(&repo, &["add", "NOTES.md"]);
    git(&repo, &["commit", "-qm", "teammate"]);
    let team = git(&repo, &["rev-parse", "team"]);
    git(&repo, &["checkout", "-q", &main]);
    let before = snapshot(&repo);
    let refused = s.rotate().args(["--commit", "--branch", "team"]).run();
    refused.code(2).stderr_has("branch `team` exists").stderr_has("drop");
    assert_eq!(
        git(&repo, &["rev-parse", "team"]),
        team,
        "the teammate's commit survives"
    );
    assert_eq!(snapshot(&repo), before, "nothing is written");
    assert!(!repo.join(".git/rekey/journal.json").exists());

    // An existing branch that HEAD fast-forwards: moved forward, then committed on.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["branch", "ff"]);
    let run = s.rotate().args(["--commit", "--branch", "ff"]).run();
    run.code(0).stderr_has("fast-forwarded branch ff");
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "ff");
    assert_eq!(
        git(&repo, &["rev-parse", "ff~1"]),
        head,
        "the commit follows the old tip"
    );
    assert_eq!(
        git(&repo, &["rev-parse", &main]),
        head,
        "the branch left behind is untouched"
    );
    assert_eq!(git(&repo, &["rev-parse", "team"]), team);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let s = Setup::new("rot-dry", &[]);
    let before = snapshot(&s.repo());
    let run = s.rotate().args(["--dry-run", "--output", "json"]).run();
    run.code(0);
    s.assert_no_leak(&run);
    let v = run.json();
    assert_eq!(v["dry_run"], true);
    let actions: Vec<&str> = v["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rotate", "rotate"]);
    assert_eq!(snapshot(&s.repo()), before);
}

#[test]
fn a_host_that_cannot_pull_blocks_its_region_unless_allowed() {
    // `nowhere` is not resolved to the registry: its DNS lookup fails.
    let nowhere = format!("nowhere-{}.invalid", unique_hex());
    let s = Setup::new("rot-block", &[&nowhere]);
    let r2_before = std::fs::read(s.file("r2", false)).unwrap();
    let run = s.rotate().args(["--output", "json"]).run();
    run.code(1);
    s.assert_no_leak(&run);
    let v = run.json();
    assert_eq!(v["regions"][0]["action"], "rotate");
    assert_eq!(v["regions"][1]["action"], "blocked");
    assert_eq!(v["regions"][1]["failing_hosts"][0]["host"], nowhere.as_str());
    assert_eq!(v["regions"][1]["failing_hosts"][0]["class"], "dns");
    assert_eq!(
        std::fs::read(s.file("r2", false)).unwrap(),
        r2_before,
        "a blocked region keeps its secret"
    );
    assert_eq!(s.meta("r1")["active"]["key_name"], NEW_KEY_NAME);

    let run = s.rotate().arg("--allow-failing-host").arg(&nowhere).run();
    run.code(0).stdout_has("(allowed)");
    assert_eq!(s.meta("r2")["active"]["key_name"], NEW_KEY_NAME);
}

#[test]
fn rollback_makes_the_previous_key_current_again() {
    let s = Setup::new("rot-back", &[]);
    s.rotate().run().code(0);
    let run = rekey()
        .args(["rollback", "--region", "r1", "--commit", "--repo"])
        .arg(s.repo())
        .run();
    run.code(0).stdout_has("rolled back");
    s.assert_no_leak(&run);
    assert_eq!(
        password_in(&gpg_decrypt(&keys().file("alice.sec"), &s.file("r1", false))),
        s.old.key
    );
    assert_eq!(s.meta("r1")["active"]["key_name"], OLD_KEY_NAME);
    assert_eq!(s.meta("r1")["active"]["state"], "current");
    assert_eq!(s.meta("r1")["previous"]["key_name"], NEW_KEY_NAME);
    assert!(git(&s.repo(), &["log", "-1", "--format=%s"]).starts_with("Roll back the r1 registry pull secret"));

    // Rollback is not a toggle: a second one keeps the older key, says so,
    // and writes and commits nothing.
    let rollback = |extra: &[&str]| {
        rekey()
            .args(["rollback", "--region", "r1", "--commit", "--repo"])
            .arg(s.repo())
            .args(extra)
            .run()
    };
    let before = snapshot(&s.repo());
    let head = git(&s.repo(), &["rev-parse", "HEAD"]);
    rollback(&[])
        .code(0)
        .stdout_has("unchanged")
        .stdout_has("already rolled back");
    assert_eq!(s.meta("r1")["active"]["key_name"], OLD_KEY_NAME);
    // `--to` the current key, by name: a no-op too.
    let json = rollback(&["--to", OLD_KEY_NAME, "--output", "json"]);
    json.code(0);
    assert_eq!(json.json()["changed"], false);
    assert_eq!(snapshot(&s.repo()), before, "no-ops write nothing");
    assert_eq!(git(&s.repo(), &["rev-parse", "HEAD"]), head, "and commit nothing");
    // A key that is neither current nor previous; a region in the wrong case.
    rollback(&["--to", "sha256:00000000"]).code(2).stderr_has("no such key");
    rekey()
        .args(["rollback", "--region", "R1", "--repo"])
        .arg(s.repo())
        .run()
        .code(2)
        .stderr_has("no secret for region `R1`")
        .stderr_has("r1, r2");
    assert_eq!(snapshot(&s.repo()), before, "refusals write nothing");
    // Restoring the newer key is explicit.
    rollback(&["--to", NEW_KEY_NAME]).code(0).stdout_has("rolled back");
    assert_eq!(s.meta("r1")["active"]["key_name"], NEW_KEY_NAME);
    assert_eq!(s.meta("r1")["previous"]["key_name"], OLD_KEY_NAME);
    // ...after which `previous` is a rollback again.
    rollback(&[]).code(0).stdout_has("rolled back");
    assert_eq!(s.meta("r1")["active"]["key_name"], OLD_KEY_NAME);
}

#[test]
fn an_unfinished_rotation_to_another_key_is_not_overwritten() {
    let s = Setup::new("rot-journal", &[]);
    // A journal left by a killed rotation to some other key.
    let journal = serde_json::json!({
        "schema": 1, "key_name": "other-key-20261122", "key_fingerprint": "sha256:00000000",
        "key_digest": {"algorithm": "hmac-sha256", "salt": "00".repeat(32), "value": "11".repeat(32)},
        "started_at": "2026-11-22T10:00:00Z", "regions": {"r1": "verified"}
    });
    write(&s.repo(), ".git/rekey/journal.json", journal.to_string());
    let before = snapshot(&s.repo());
    let run = s.rotate().run();
    run.code(2)
        .stderr_has("a rotation to other-key-20261122 (sha256:00000000)")
        .stderr_has("is unfinished")
        // It was written by an older rekey (one key for every region).
        .stderr_has("by an older rekey (journal schema 1")
        .stderr_has(
            "finish it with the rekey version that started it, or discard it with `rekey rotate --repo REPO --abort`",
        );
    assert_eq!(snapshot(&s.repo()), before);
    // --abort still reads it.
    rekey()
        .args(["rotate", "--abort", "--repo"])
        .arg(s.repo())
        .run()
        .code(0)
        .stdout_has("aborted the rotation to other-key-20261122");
    assert!(!s.repo().join(".git/rekey/journal.json").exists());
}

#[test]
fn abort_discards_an_unfinished_rotation_and_restores_the_committed_secrets() {
    let s = Setup::new("rot-abort", &[]);
    let repo = s.repo();
    // Someone's unrelated, uncommitted work, which abort must not touch.
    write(&repo, "NOTES.md", "work in progress\n");
    let committed = git(&repo, &["rev-parse", "HEAD"]);
    let registry_before = snapshot(&repo.join("registry"));
    // A rotation that publishes, then dies at its commit (git's index is locked).
    write(&repo, ".git/index.lock", "");
    s.rotate().arg("--commit").run().code(2);
    std::fs::remove_file(repo.join(".git/index.lock")).unwrap();
    assert!(repo.join(".git/rekey/journal.json").exists());
    assert_ne!(snapshot(&repo.join("registry")), registry_before, "it published");

    // Its journal blocks another key, and the error says how to discard it.
    let other = "iks-registry-access-prod-test-20261124";
    s.rotate_named(other)
        .run()
        .code(2)
        .stderr_has("is unfinished")
        .stderr_has("rekey rotate --repo REPO --abort");

    let run = rekey().args(["rotate", "--abort", "--repo"]).arg(&repo).run();
    run.code(0)
        .stdout_has(&format!("aborted the rotation to {NEW_KEY_NAME}"))
        .stdout_has("restored registry/R1_REGISTRY_PULL_SECRET_64.gpg")
        .stdout_has("removed  registry/R1_REGISTRY_PULL_SECRET_64.previous.gpg");
    assert_eq!(
        snapshot(&repo.join("registry")),
        registry_before,
        "the committed secrets are back"
    );
    assert!(!repo.join(".git/rekey/journal.json").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("NOTES.md")).unwrap(),
        "work in progress\n"
    );
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), committed);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "?? NOTES.md\n");
    // Aborting again is a no-op that says so.
    rekey()
        .args(["rotate", "--abort", "--repo"])
        .arg(&repo)
        .run()
        .code(0)
        .stdout_has("nothing to abort");

    // A rotation with another key now runs.
    s.rotate_named(other)
        .arg("--commit")
        .run()
        .code(0)
        .stdout_has("rotated");
    assert_eq!(s.meta("r1")["active"]["key_name"], other);
    assert_eq!(s.meta("r1")["previous"]["key_name"], OLD_KEY_NAME);
}

#[test]
fn reencrypt_keeps_a_previous_version_already_addressed_to_the_policy() {
    let s = Setup::new("rot-reenc", &[]);
    let repo = s.repo();
    let both = std::fs::read(repo.join(".rekey/recipients.asc")).unwrap();
    // Rotated while bob was out of the policy; then bob is back.
    write(
        &repo,
        ".rekey/recipients.asc",
        std::fs::read(keys().file("alice.pub")).unwrap(),
    );
    s.rotate().run().code(0);
    write(&repo, ".rekey/recipients.asc", &both);
    let previous: Vec<Vec<u8>> = ["r1", "r2"]
        .iter()
        .map(|r| std::fs::read(s.file(r, true)).unwrap())
        .collect();
    let run = rekey()
        .args(["reencrypt", "--output", "json", "--repo"])
        .arg(&repo)
        .arg("--key")
        .arg(keys().file("alice.sec"))
        .run();
    run.code(0);
    let json = run.json();
    let written: Vec<&str> = json["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(written.iter().all(|w| !w.ends_with(".previous.gpg")), "{written:?}");
    for (i, r) in ["r1", "r2"].iter().enumerate() {
        assert_eq!(
            std::fs::read(s.file(r, true)).unwrap(),
            previous[i],
            "{r}: previous.gpg untouched"
        );
        // The re-encrypted current version now reads with bob's key too.
        assert_eq!(
            password_in(&gpg_decrypt(&keys().file("bob.sec"), &s.file(r, false))),
            FIXTURE.key
        );
    }
}

#[test]
fn bad_rotate_input_writes_nothing() {
    let s = Setup::new("rot-bad", &[]);
    let before = snapshot(&s.repo());
    s.rotate_named("no-date-suffix")
        .run()
        .code(2)
        .stderr_has("does not end in -YYYYMMDD");
    s.rotate_named("bad name-20261123")
        .run()
        .code(2)
        .stderr_has("may hold only");
    for (extra, message) in [
        (&["--region", "mars"][..], "region `mars` is not in the catalog"),
        (
            &["--allow-failing-host", "elsewhere.io"][..],
            "is not a host of the regions being rotated",
        ),
        (
            &["--resolve", "bad"][..],
            "invalid value 'bad' for '--resolve <HOST=ADDR:PORT>': expected HOST=ADDR:PORT",
        ),
    ] {
        s.rotate().args(extra).run().code(2).stderr_has(message);
        assert_eq!(snapshot(&s.repo()), before, "{extra:?}");
    }
    std::fs::remove_file(s.repo().join(".rekey/recipients.asc")).unwrap();
    s.rotate().run().code(2).stderr_has("recipients.asc is missing");
}

/// Kills a signed `rekey rotate` with SIGKILL at many points and checks
/// that every file is always a whole old or new version whose signed
/// statement verifies, and that a rerun completes.
#[test]
fn sigkill_at_any_point_leaves_whole_files_and_a_rerun_completes() {
    let s = Setup::with_signing("rot-kill", &[], true);
    let template = s.tmp.path().join("template");
    copy_tree(&s.repo(), &template);
    let new_key = FIXTURE.key.clone();
    // How long an uninterrupted run takes: kills are spread over it.
    // Build the command first: it starts the shared registry on first use, which is not part of a run.
    let first = s.rotate();
    let start = std::time::Instant::now();
    first.run().code(0);
    let full = start.elapsed().as_micros() as u64;
    let runs = 100;
    // Which (r1 new, r2 new, journal, redo log) states the kills left.
    let mut states = std::collections::BTreeSet::new();
    for i in 0..runs {
        std::fs::remove_dir_all(s.repo()).unwrap();
        copy_tree(&template, &s.repo());
        let delay = pseudo_random(i) % (full + full / 4);
        let mut child = s.rotate().spawn();
        std::thread::sleep(std::time::Duration::from_micros(delay));
        // SAFETY: kill(2) on a child we own and have not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        for region in ["r1", "r2"] {
            let active = password_in(&decrypt(&s.file(region, false)));
            assert!(
                active == s.old.key || active == new_key,
                "run {i}: {region}'s active file is neither version"
            );
            // Before the first rotation there is no previous version; after it, it is the old key.
            if s.file(region, true).exists() {
                assert_eq!(
                    password_in(&decrypt(&s.file(region, true))),
                    s.old.key,
                    "run {i}: {region} previous"
                );
            }
            let meta = s.meta(region);
            assert!(meta["active"]["state"].is_string(), "run {i}: metadata parses");
            // A sealed, unpromoted version is only ever in <NAME>.pending.gpg:
            // the served file still holds the live key. (With a redo log
            // left, the next rekey finishes the write first.)
            let pending = pending_file(&s, region);
            if !s.repo().join(".git/rekey/writes.json").exists() {
                assert_eq!(
                    pending.exists(),
                    meta["pending"].is_object(),
                    "run {i}: {region} pending"
                );
                if pending.exists() {
                    assert_eq!(
                        password_in(&decrypt(&pending)),
                        new_key,
                        "run {i}: {region} pending key"
                    );
                    assert_eq!(active, s.old.key, "run {i}: {region} serves the live key while pending");
                }
            }
            // Files and metadata change together: the statement hashes what is on disk.
            if let Err(e) = s.verify_statement(region) {
                panic!("run {i}: {region}'s statement does not verify: {e}");
            }
        }
        let state: Vec<bool> = ["r1", "r2"]
            .iter()
            .map(|r| password_in(&decrypt(&s.file(r, false))) == new_key)
            .chain([
                s.repo().join(".git/rekey/journal.json").exists(),
                s.repo().join(".git/rekey/writes.json").exists(),
                pending_file(&s, "r1").exists(),
            ])
            .collect();
        states.insert(state);
        let rerun = s.rotate().run();
        rerun.code(0);
        for region in ["r1", "r2"] {
            assert_eq!(
                password_in(&decrypt(&s.file(region, false))),
                new_key,
                "run {i}: rerun finishes {region}"
            );
            assert_eq!(
                password_in(&decrypt(&s.file(region, true))),
                s.old.key,
                "run {i}: previous is the old key"
            );
            let meta = s.meta(region);
            assert_eq!(meta["active"]["state"], "current");
            assert!(meta.get("pending").is_none(), "run {i}: {region} promoted");
            assert!(
                !pending_file(&s, region).exists(),
                "run {i}: {region}'s pending file is gone"
            );
            // Metadata and files changed together: the fingerprints agree.
            assert_eq!(meta["active"]["key_fingerprint"], fingerprint(&new_key), "run {i}");
            assert_eq!(meta["previous"]["key_fingerprint"], fingerprint(&s.old.key), "run {i}");
            let version = s.verify_statement(region).unwrap();
            assert!(version >= 3, "run {i}: {region} is at version {version}");
        }
        let strays: Vec<String> = snapshot(&s.repo())
            .keys()
            .map(|p| p.display().to_string())
            .filter(|p| p.contains(".rekey-tmp-") || p.ends_with("journal.json") || p.ends_with("writes.json"))
            .collect();
        assert!(strays.is_empty(), "run {i}: left behind {strays:?}");
    }
    // The kills landed before, during and after the rotation, not all at one point.
    assert!(states.len() >= 4, "kills hit too few distinct points: {states:?}");
}

/// A region's `<NAME>.pending.gpg`.
fn pending_file(s: &Setup, region: &str) -> PathBuf {
    s.file(region, false)
        .with_file_name(format!("{}_REGISTRY_PULL_SECRET_64.pending.gpg", region.to_uppercase()))
}

fn decrypt(file: &Path) -> Vec<u8> {
    let run = rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(keys().file("alice.sec"))
        .arg(file)
        .args(["--out-file", "-"])
        .run();
    assert_eq!(run.code, 0, "decrypting {}: {}", file.display(), run.stderr);
    run.stdout.into_bytes()
}

fn fingerprint(key: &str) -> String {
    rekey::fingerprint::Fingerprint::of(key.as_bytes()).to_string()
}

fn pseudo_random(i: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(i);
    h.finish()
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

#[test]
fn the_health_gate_runs_after_publishing_and_reports_in_the_summary() {
    use crate::health_support::{Scenario, prom};
    let s = Setup::new("rot-health", &[]);
    let p = prom();
    let gated = |scenario| {
        s.rotate()
            .args(["--health-gate", "--prometheus", &p.url, "--health-at", &p.at(scenario)])
            .run()
    };
    let run = gated(Scenario::Healthy);
    run.code(0).stdout_has("rotated").stdout_has("health healthy");
    // Already published: the rerun only gates, and an outage fails it.
    let run = gated(Scenario::BothFailing);
    run.code(1)
        .stdout_has("unchanged")
        .stdout_has("health outage")
        .stdout_has("open an incident: The creation and deletion of OpenShift clusters is currently impacted");
    let run = s
        .rotate()
        .args([
            "--output",
            "json",
            "--health-gate",
            "--prometheus",
            &p.url,
            "--health-at",
        ])
        .arg(p.at(Scenario::JwtFailing))
        .run();
    run.code(1);
    assert_eq!(run.json()["health"]["verdict"], "degraded");
    // An unreachable Prometheus is an error, never healthy.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    s.rotate()
        .args(["--health-gate", "--prometheus"])
        .arg(format!("http://{closed}"))
        .run()
        .code(2)
        .stderr_has("health gate could not be evaluated");
    // Bad gate options are found before anything is written.
    let before = snapshot(&s.repo());
    s.rotate()
        .args(["--health-gate", "--prometheus", &p.url, "--health-window", "forever"])
        .run()
        .code(2)
        .stderr_has("--health-window");
    assert_eq!(snapshot(&s.repo()), before);
    // The gate takes the same Prometheus options as `rekey health`: a token
    // from a variable that is not set is found before anything is written.
    s.rotate()
        .args([
            "--health-gate",
            "--prometheus",
            &p.url,
            "--health-token-env",
            "REKEY_UNSET_TOKEN_VAR",
        ])
        .args(["--health-timeout", "5s"])
        .run()
        .code(2)
        .stderr_has("REKEY_UNSET_TOKEN_VAR");
    assert_eq!(snapshot(&s.repo()), before);
}

#[test]
fn the_pre_merge_check_pulls_with_the_rotated_secrets() {
    let s = Setup::new("rot-check-pull", &[]);
    s.rotate().args(["--commit", "--branch", "pr"]).run().code(0);
    let fx = &*FIXTURE;
    let mut cmd = rekey()
        .args([
            "--output",
            "json",
            "check",
            "--base",
            "main",
            "--head",
            "pr",
            "--verify-pull",
            "--repo",
        ])
        .arg(s.repo())
        .arg("--key")
        .arg(keys().file("alice.sec"))
        .arg("--ca-cert")
        .arg(&fx.ca_pem);
    for h in &s.hosts {
        cmd = cmd.arg("--resolve").arg(format!("{h}={}", fx.basic));
    }
    let run = cmd.run();
    run.code(0);
    s.assert_no_leak(&run);
    let pulls = run.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "pull")
        .count();
    assert_eq!(pulls, s.hosts.len(), "one pull check per host of each changed secret");
}

#[test]
fn a_second_writer_is_refused_while_another_holds_the_repo() {
    let s = Setup::new("rot-lock", &[]);
    // What a concurrent rekey would hold: a lock on the repo's state directory.
    std::fs::create_dir_all(s.repo().join(".git/rekey")).unwrap();
    let held = std::fs::File::open(s.repo().join(".git/rekey")).unwrap();
    held.lock().unwrap();
    let before = snapshot(&s.repo());
    s.rotate().run().code(2).stderr_has("another rekey is writing to");
    rekey()
        .args(["rollback", "--region", "r1", "--repo"])
        .arg(s.repo())
        .run()
        .code(2)
        .stderr_has("another rekey");
    assert_eq!(snapshot(&s.repo()), before);
    drop(held);
    s.rotate().run().code(0);
}

#[test]
fn bad_rollback_input_writes_nothing() {
    let s = Setup::new("rot-back-bad", &[]);
    let before = snapshot(&s.repo());
    let rollback = |region: &str| {
        rekey()
            .args(["rollback", "--region", region, "--repo"])
            .arg(s.repo())
            .run()
    };
    rollback("mars").code(2).stderr_has("no secret for region `mars`");
    // Only sealed once: there is no previous version to go back to.
    let run = rollback("r1");
    run.code(2).stderr_has("no previous version to roll back to");
    s.old.assert_not_in_run(&run);
    assert_eq!(snapshot(&s.repo()), before);
}

/// The CI job signs with the masked key it is given by variable name: the
/// key material is never on a command line, and the rotation is signed.
#[test]
fn the_ci_job_signs_with_the_masked_key_by_variable_name() {
    let s = Setup::with_signing("rot-ci-sign", &[], true);
    let fx = &*FIXTURE;
    // A wrapper that records rekey's arguments and adds the test registry's
    // CA and addresses (options the job leaves to the CI system).
    let argv = s.tmp.path().join("argv");
    let mut extra = format!("--ca-cert '{}'", fx.ca_pem.display());
    for h in s.hosts.iter().filter(|h| h.ends_with(".reg.test")) {
        extra.push_str(&format!(" --resolve '{h}={}'", fx.basic));
    }
    let wrapper = rekey_wrapper(s.tmp.path(), &argv, &extra);
    let signing_key = std::fs::read_to_string(keys().file("signer.sec")).unwrap();
    let out = rekey_job_rotate(&wrapper, &s.repo(), &s.regions())
        .env("REKEY_KEY_NAME", NEW_KEY_NAME)
        .env("REKEY_API_KEY_ENV", "NEW_KEY")
        .env("NEW_KEY", &fx.key)
        .env("REKEY_SIGNING_KEY", &signing_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = std::fs::read_to_string(&argv).unwrap();
    assert!(args.contains("--signing-key-env\nREKEY_SIGNING_KEY\n"), "{args}");
    assert!(!args.contains("PRIVATE KEY"), "key material on the command line");
    for region in ["r1", "r2"] {
        // Sealed (1), then the rotation: pending (2), current (3).
        assert_eq!(s.verify_statement(region), Ok(3), "{region}");
    }
}

/// A rotation that sealed its new key as pending and stopped there: the
/// served files still hold the old key, and `rotate --abort` removes the
/// pending file, leaving the registry exactly as committed.
#[test]
fn abort_after_the_pending_seal_removes_the_pending_file() {
    let s = Setup::new("rot-abort-pending", &[]);
    let repo = s.repo();
    let registry_before = snapshot(&repo.join("registry"));
    let new = Canary::new("rot-abort-pending-new");
    // What `rotate` does after verifying: seal pending, journal `sealed`.
    seal_key(&repo, &s.regions(), &[], &new.key, Some(NEW_KEY_NAME), ["--pending"]).code(0);
    let journal = serde_json::json!({
        "schema": 1,
        "key_name": NEW_KEY_NAME,
        "key_fingerprint": fingerprint(&new.key),
        "key_digest": {"algorithm": "hmac-sha256", "salt": "00".repeat(32), "value": "00".repeat(32)},
        "started_at": "2026-11-24T10:00:00Z",
        "regions": {"r1": "sealed", "r2": "sealed"},
    });
    write(&repo, ".git/rekey/journal.json", journal.to_string());
    for region in ["r1", "r2"] {
        assert_eq!(
            password_in(&decrypt(&s.file(region, false))),
            s.old.key,
            "{region} serves the old key"
        );
        assert_eq!(password_in(&decrypt(&pending_file(&s, region))), new.key);
    }
    let run = rekey().args(["rotate", "--abort", "--repo"]).arg(&repo).run();
    run.code(0)
        .stdout_has("removed  registry/R1_REGISTRY_PULL_SECRET_64.pending.gpg")
        .stdout_has("removed  registry/R2_REGISTRY_PULL_SECRET_64.pending.gpg");
    new.assert_not_in_run(&run);
    assert_eq!(snapshot(&repo.join("registry")), registry_before);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}
