//! `rekey check`'s leak scan as a reviewer meets it: pull requests whose
//! commits hold keys the head snapshot no longer shows (removed later, in a
//! commit message, in a file name, inside an archive, under a non-UTF-8
//! name), known keys found exactly with `--key`, and leaked keys graded at
//! the IAM stand-in with `--iam-check`. No key ever reaches the output.

use crate::iam_support::Iam;
use crate::leaks_corpus::fake_key;
use crate::pgp_support::*;
use crate::support::*;
use rekey::fingerprint::Fingerprint;
use std::io::Write as _;
use std::path::PathBuf;

struct Pr {
    tmp: tempfile::TempDir,
    /// The key sealed in jp and us at the base.
    sealed: Canary,
}

/// Returns a fresh IBM-shaped key (44 characters), unique to this run.
fn leaked(tag: &str) -> Canary {
    Canary::with_value(&fake_key(&format!("{tag}-{}", unique_hex())))
}

impl Pr {
    /// A secrets repo whose `main` holds jp and us sealed for alice and bob,
    /// and a branch `pr` checked out from it.
    fn new(tag: &str) -> Pr {
        let pr = Pr {
            tmp: tempdir(),
            sealed: Canary::new(&format!("{tag}-sealed")),
        };
        let repo = pr.repo();
        init_secrets_repo(&repo, &["alice", "bob"]);
        seal_key(
            &repo,
            &repo_root().join("regions"),
            &["jp", "us"],
            &pr.sealed.key,
            Some("iks-registry-prod-test-20260801"),
            NO_ARGS,
        )
        .code(0);
        pr.commit("sealed");
        git(&repo, &["checkout", "-qb", "pr"]);
        pr
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn commit(&self, message: &str) -> String {
        commit_all(&self.repo(), message)
    }

    fn check(&self, extra: &[&str], canaries: &[&Canary]) -> Run {
        let run = check_cmd(&self.repo(), "main", "pr").args(extra).run();
        self.sealed.assert_not_in_run(&run);
        for c in canaries {
            c.assert_not_in_run(&run);
        }
        run
    }
}

fn fp(c: &Canary) -> String {
    Fingerprint::of(c.key.as_bytes()).to_string()
}

#[track_caller]
fn failure<'a>(all: &'a [(String, String, String)], kind: &str, target: &str) -> &'a str {
    &all.iter()
        .find(|(k, t, _)| k == kind && t == target)
        .unwrap_or_else(|| panic!("no failing {kind} check of {target}: {all:#?}"))
        .2
}

#[test]
fn a_key_removed_in_a_later_commit_still_fails_the_check() {
    let pr = Pr::new("check-leaks-removed");
    let key = leaked("removed");
    write(
        &pr.repo(),
        "notes/login.sh",
        format!("docker login -u iamapikey -p {} jp.icr.io\n", key.key),
    );
    let added = pr.commit("login notes");
    std::fs::remove_file(pr.repo().join("notes/login.sh")).unwrap();
    let removed = pr.commit("remove the notes");
    // The head is the base's snapshot: only history holds the key.
    assert_eq!(git(&pr.repo(), &["diff", "--stat", "main", "pr"]), "");

    let run = pr.check(&["--output", "json"], &[&key]);
    run.code(1);
    let all = failing_checks(&run);
    let detail = failure(&all, "leak", "notes/login.sh");
    assert!(detail.contains(&fp(&key)), "{detail}");
    assert!(
        detail.contains(&format!("added in commit {}", &added[..12])),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "removed in {} but still in history; squash or rewrite before merging",
            &removed[..12]
        )),
        "{detail}"
    );
    assert!(!run.stdout.contains("changes no file"), "{}", run.stdout);

    let junit = pr.check(&["--output", "junit"], &[&key]);
    junit.code(1);
    assert!(junit.stdout.contains("still in history"), "{}", junit.stdout);
    pr.check(&[], &[&key])
        .code(1)
        .stdout_has("FAIL  leak       notes/login.sh");
}

#[test]
fn keys_in_messages_names_archives_and_odd_names_are_found() {
    use std::os::unix::ffi::OsStrExt;
    let pr = Pr::new("check-leaks-places");
    let (in_message, in_name, in_zip, in_odd) = (leaked("message"), leaked("name"), leaked("zip"), leaked("odd"));
    write(&pr.repo(), &format!("keys/ibm/{}.txt", in_name.key), "see the name\n");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("ops/notes.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(format!("ibmcloud login --apikey {}\n", in_zip.key).as_bytes())
        .unwrap();
    write(&pr.repo(), "backup/notes.zip", zip.finish().unwrap().into_inner());
    std::fs::create_dir_all(pr.repo().join("notes")).unwrap();
    std::fs::write(
        pr.repo().join(std::ffi::OsStr::from_bytes(b"notes/r\xe9gion-\xff.txt")),
        format!("apikey: {}\n", in_odd.key),
    )
    .unwrap();
    let commit = pr.commit(&format!(
        "jp notes\n\nUsed: docker login -u iamapikey -p {} jp.icr.io\n",
        in_message.key
    ));
    let canaries = [&in_message, &in_name, &in_zip, &in_odd];
    let run = pr.check(&["--output", "json"], &canaries);
    run.code(1);
    let all = failing_checks(&run);
    let message = failure(&all, "leak", &format!("commit {}", &commit[..12]));
    assert!(
        message.contains(&format!("of the message: cli-login-password {}", fp(&in_message))),
        "{message}"
    );
    let name = failure(&all, "leak", "keys/ibm/<redacted>.txt");
    assert!(
        name.contains("in the file name: ") && name.contains(&fp(&in_name)),
        "{name}"
    );
    let zip = failure(&all, "leak", "backup/notes.zip");
    assert!(
        zip.contains("backup/notes.zip!ops/notes.txt line 1: ") && zip.contains(&fp(&in_zip)),
        "{zip}"
    );
    let odd = failure(&all, "leak", "notes/r\u{fffd}gion-\u{fffd}.txt");
    assert!(odd.contains(&fp(&in_odd)), "{odd}");
    pr.check(&["--output", "junit"], &canaries).code(1);
    pr.check(&[], &canaries).code(1);
}

fn key_args() -> Vec<String> {
    vec!["--key".to_owned(), keys().file("alice.sec").display().to_string()]
}

#[test]
fn with_the_key_a_bare_key_file_is_a_known_key_by_region_and_fingerprint() {
    let pr = Pr::new("check-leaks-known");
    // The sealed key, alone in a file, in a later-removed commit too.
    write(&pr.repo(), "ops/handover.txt", format!("{}\n", pr.sealed.key));
    pr.commit("handover");
    let args = key_args();
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--output", "json"]);
    let run = pr.check(&extra, &[]);
    run.code(1);
    let all = failing_checks(&run);
    let detail = failure(&all, "leak", "ops/handover.txt");
    assert!(
        detail.contains(&format!(
            "line 1: known-key {} (the key of jp (JP_REGISTRY_PULL_SECRET_64), active at the base, found exactly)",
            fp(&pr.sealed)
        )),
        "{detail}"
    );
    pr.check(&extra[..2], &[]).code(1).stdout_has("known-key");
}

#[test]
fn leaked_keys_are_graded_at_iam_and_iam_down_is_an_error() {
    let pr = Pr::new("check-leaks-iam");
    let (live, dead) = (leaked("live"), leaked("dead"));
    write(
        &pr.repo(),
        "notes/a.sh",
        format!("docker login -u iamapikey -p {} jp.icr.io\n", live.key),
    );
    write(
        &pr.repo(),
        "notes/b.sh",
        format!("ibmcloud login --apikey {}\n", dead.key),
    );
    pr.commit("notes");
    let (iam, _admin) = Iam::start();
    iam.add_key("leaked-live", &live.key);
    let url = iam.url();
    let run = pr.check(&["--iam-check", "--iam-url", &url, "--output", "json"], &[&live, &dead]);
    run.code(1);
    let all = failing_checks(&run);
    let a = failure(&all, "leak", "notes/a.sh");
    assert!(
        a.contains("(verified: IAM issued a token, the key is live: revoke it now)"),
        "{a}"
    );
    let b = failure(&all, "leak", "notes/b.sh");
    assert!(b.contains("(unverified: IAM refused it (HTTP 400"), "{b}");
    failure(&all, "verified", &fp(&live));
    assert!(
        !all.iter().any(|(k, t, _)| k == "verified" && *t == fp(&dead)),
        "{all:#?}"
    );
    let tokens = iam.calls().iter().filter(|(_, p)| p == "/identity/token").count();
    assert_eq!(tokens, 2, "one exchange per leaked key");

    // IAM unreachable: the keys cannot be graded, which is an error (exit 2).
    let port = free_port().to_string();
    let down = format!("http://127.0.0.1:{port}");
    pr.check(
        &["--iam-check", "--iam-url", &down, "--iam-timeout", "2s"],
        &[&live, &dead],
    )
    .code(2)
    .stderr_has("unreachable");
    // Without --iam-check nothing is sent to IAM.
    let before = iam.calls().len();
    pr.check(&["--iam-url", &url], &[&live, &dead]).code(1);
    assert_eq!(iam.calls().len(), before);
}
