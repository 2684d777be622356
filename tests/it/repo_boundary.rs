//! The secrets repo's content is data, never instructions: one regression
//! test per attack on the writing commands, driven as an attacker would
//! (content merged into the repo, then an operator's or CI's run).

use crate::pgp_support::*;
use crate::rotate::Setup;
use crate::support::*;
use std::path::Path;

const R1: &str = "registry/R1_REGISTRY_PULL_SECRET_64";

/// Commits everything in the work tree, as a merged pull request would.
fn merge(repo: &Path, message: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["-c", "core.hooksPath=/dev/null", "commit", "-qm", message]);
}

fn rollback(s: &Setup) -> Run {
    rekey()
        .args(["rollback", "--region", "r1", "--commit", "--repo"])
        .arg(s.repo())
        .run()
}

fn reencrypt(s: &Setup) -> Run {
    rekey()
        .arg("reencrypt")
        .arg("--repo")
        .arg(s.repo())
        .arg("--key")
        .arg(keys().file("alice.sec"))
        .run()
}

/// A run of each command that writes the secrets: a committed rotation, a
/// rollback of r1 and a re-encryption.
fn writing_runs(s: &Setup) -> [Run; 3] {
    [
        s.rotate_named("iks-registry-access-prod-test-20261124")
            .arg("--commit")
            .run(),
        rollback(s),
        reencrypt(s),
    ]
}

#[test]
fn a_committed_redo_log_never_installs_a_hook() {
    let s = Setup::new("bound-hook", &[]);
    let repo = s.repo();
    let marker = s.tmp.path().join("hook-ran");
    write(&repo, ".rekey/hook", format!("#!/bin/sh\nenv > {}\n", marker.display()));
    let hook = repo.join(".git/hooks/post-commit");
    let log = serde_json::json!([
        [".rekey/hook", ".git/hooks/post-commit"],
        [repo.join(".rekey/hook"), hook],
    ]);
    write(&repo, ".rekey/writes.json", log.to_string());
    // A journal at the old place, for another key, would block the rotation if it were read.
    let journal = serde_json::json!({
        "schema": 1, "key_name": "other-key-20261122", "key_fingerprint": "sha256:00000000",
        "key_digest": {"algorithm": "hmac-sha256", "salt": "00".repeat(32), "value": "11".repeat(32)},
        "started_at": "2026-11-22T10:00:00Z", "regions": {"r1": "verified"}
    });
    write(&repo, ".rekey/journal.json", journal.to_string());
    merge(&repo, "a harmless-looking PR");
    let before = std::fs::read(repo.join(".rekey/hook")).unwrap();

    // The old state files are never read: the rotation runs and commits.
    let run = s.rotate().arg("--commit").run();
    run.code(0).stdout_has("rotated");
    s.assert_no_leak(&run);
    assert!(!hook.exists(), "the hook was installed");
    assert!(!marker.exists(), "the hook ran");
    assert_eq!(
        std::fs::read(repo.join(".rekey/hook")).unwrap(),
        before,
        "nothing renamed"
    );
    rollback(&s).code(0);
    assert!(!hook.exists());

    // Even in the real state directory, a redo log is validated before anything is renamed.
    write(&repo, ".git/rekey/writes.json", log.to_string());
    let run = rollback(&s);
    run.code(2)
        .stderr_has(".git/rekey/writes.json: entry 1 renames")
        .stderr_has("nothing was renamed");
    assert!(!hook.exists());
    assert!(repo.join(".rekey/hook").exists());
}

#[test]
fn metadata_naming_a_file_outside_the_repo_is_never_read_or_committed() {
    let outside = Canary::new("bound-outside");
    for (field, hostile) in [
        ("active", "/proc/self/environ"),
        ("active", "../../x"),
        ("previous", "../../x"),
    ] {
        let s = Setup::new("bound-meta", &[]);
        let repo = s.repo();
        // ../../x from registry/ is next to the repo, outside it.
        write(s.tmp.path(), "x", &outside.key);
        // A first rotation gives r1 a previous version.
        s.rotate().arg("--commit").run().code(0);
        let meta_path = repo.join(format!("{R1}.meta.json"));
        let mut meta = s.meta("r1");
        meta[field]["file"] = hostile.into();
        std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
        merge(&repo, "metadata tweak");
        let before = snapshot(&repo);
        let head = git(&repo, &["rev-parse", "HEAD"]);
        let message = format!("{field}.file: must be R1_REGISTRY_PULL_SECRET_64.");
        for run in writing_runs(&s) {
            run.code(2).stderr_has(&message);
            outside.assert_not_in_run(&run);
            s.assert_no_leak(&run);
        }
        assert_eq!(snapshot(&repo), before, "{hostile}: nothing written");
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head, "{hostile}: nothing committed");
        outside.assert_not_in_tree(&repo, &[]);
        assert!(!outside.found_in(git(&repo, &["log", "--all", "-p"]).as_bytes()));
    }
}

#[test]
fn a_symlinked_secret_is_refused_naming_the_path() {
    let s = Setup::new("bound-link", &[]);
    let repo = s.repo();
    s.rotate().arg("--commit").run().code(0);
    let link = repo.join(format!("{R1}.gpg"));
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
    merge(&repo, "a link");
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let named = format!("{R1}.gpg: is a symbolic link");
    let mut runs = Vec::from(writing_runs(&s));
    runs.push(rekey().args(["recipients", "check", "--repo"]).arg(&repo).run());
    for run in runs {
        run.code(2).stderr_has(&named);
        s.assert_no_leak(&run);
    }
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}

#[test]
fn a_stray_plain_text_file_in_registry_is_refused_with_the_list() {
    let s = Setup::new("bound-stray", &[]);
    let repo = s.repo();
    let stray = Canary::new("bound-stray-file");
    write(&repo, "registry/notes.txt", &stray.key);
    write(&repo, "registry/sub/more.txt", "x");
    let before = snapshot(&repo);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let run = s.rotate().arg("--commit").run();
    run.code(2)
        .stderr_has("holds files rekey does not know: notes.txt, sub");
    stray.assert_not_in_run(&run);
    assert_eq!(snapshot(&repo), before);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    // Once it is moved out, only rekey's own files are committed, even with
    // other work staged in the repo.
    std::fs::remove_file(repo.join("registry/notes.txt")).unwrap();
    std::fs::remove_dir_all(repo.join("registry/sub")).unwrap();
    write(&repo, "README.md", "operator's notes");
    git(&repo, &["add", "README.md"]);
    s.rotate().arg("--commit").run().code(0);
    let committed = git(&repo, &["show", "--name-only", "--format=", "HEAD"]);
    let mut files: Vec<&str> = committed.lines().collect();
    files.sort();
    assert_eq!(
        files,
        [
            "registry/R1_REGISTRY_PULL_SECRET_64.gpg",
            "registry/R1_REGISTRY_PULL_SECRET_64.meta.json",
            "registry/R1_REGISTRY_PULL_SECRET_64.previous.gpg",
            "registry/R2_REGISTRY_PULL_SECRET_64.gpg",
            "registry/R2_REGISTRY_PULL_SECRET_64.meta.json",
            "registry/R2_REGISTRY_PULL_SECRET_64.previous.gpg",
        ]
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "A  README.md\n");
}

#[test]
fn temporaries_of_a_killed_run_are_removed_by_the_next_run() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let canary = Canary::new("bound-tmp");
    // What a SIGKILLed generate leaves: a staged new key and a backup of the old one.
    write(&out, ".rekey-tmp-Ab12Cd", &canary.key);
    write(&out, ".rekey-bak-4242-jp.dockerconfigjson", &canary.key);
    generate_cmd(&repo_root().join("regions"), &["jp"], "bound-tmp-new-key", &out)
        .run()
        .code(0);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["jp.dockerconfigjson"]);
    canary.assert_not_in_tree(&out, &[]);

    // The same in the secrets repo: the next writing command removes them.
    let s = Setup::new("bound-tmp-repo", &[]);
    write(&s.repo(), "registry/.rekey-tmp-Zz99", &canary.key);
    write(&s.repo(), "registry/.rekey-bak-1-R1_REGISTRY_PULL_SECRET_64.gpg", "old");
    rollback(&s).code(2).stderr_has("no previous version");
    canary.assert_not_in_tree(&s.repo(), &[]);
    assert!(
        !s.repo()
            .join("registry/.rekey-bak-1-R1_REGISTRY_PULL_SECRET_64.gpg")
            .exists()
    );
}

/// A killed `decrypt --out-file` leaves the plain text in a temporary next
/// to the output; the next decrypt or encrypt into that directory removes it.
#[test]
fn temporaries_of_a_killed_decrypt_are_removed_by_the_next_one() {
    let tmp = tempdir();
    let out = tmp.path().join("plain");
    let canary = Canary::new("bound-decrypt-tmp");
    write(&out, ".rekey-tmp-Qq77", &canary.key);
    let sealed = tmp.path().join("msg.gpg");
    let plain = write(tmp.path(), "msg.txt", "hello");
    rekey()
        .arg("encrypt")
        .arg("--recipients")
        .arg(keys().file("alice.pub"))
        .arg(&plain)
        .arg("--out-file")
        .arg(&sealed)
        .run()
        .code(0);
    rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(keys().file("alice.sec"))
        .arg(&sealed)
        .arg("--out-file")
        .arg(out.join("msg.txt"))
        .run()
        .code(0);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["msg.txt"]);
    canary.assert_not_in_tree(&out, &[]);
}

#[test]
fn under_umask_000_directories_for_secrets_are_0700() {
    let tmp = tempdir();
    let out = tmp.path().join("a/b/out");
    generate_cmd(&repo_root().join("regions"), &["jp"], "umask-test-key", &out)
        .umask(0)
        .run()
        .code(0);
    for dir in [tmp.path().join("a"), tmp.path().join("a/b"), out.clone()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&out.join("jp.dockerconfigjson")), 0o600);

    // seal creates registry/ and the state directory 0700 too.
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    rekey()
        .umask(0)
        .arg("seal")
        .arg("--repo")
        .arg(&repo)
        .arg("--in")
        .arg(&out)
        .run()
        .code(0);
    assert_eq!(mode(&repo.join("registry")), 0o700);
    assert_eq!(mode(&repo.join(".git/rekey")), 0o700);
    assert_eq!(mode(&repo.join("registry/JP_REGISTRY_PULL_SECRET_64.gpg")), 0o644);
}

#[test]
fn a_repo_that_is_not_a_git_work_tree_is_refused_for_writing() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    write(&repo, ".rekey/recipients.asc", public_ring(&["alice"]));
    let before = snapshot(&repo);
    seal_key(
        &repo,
        &repo_root().join("regions"),
        &["jp"],
        "not-git-key",
        None,
        NO_ARGS,
    )
    .code(2)
    .stderr_has("is not the top of a git work tree")
    .stderr_has("run `git init` there");
    assert_eq!(snapshot(&repo), before);
    assert!(!repo.join("registry").exists());
}
