//! The leak engine over the corpus (`fixtures/leaks/`, see leaks_corpus.rs)
//! and over real git history: a PR branch whose commits add, remove and
//! rename keys, with commit messages, non-UTF-8 names and binary files.

use crate::leaks_corpus::{self, Case};
use rekey::fingerprint::Fingerprint;
use rekey::secrets_repo::history::{self, HistoryError, HistoryLimits};
use rekey::secrets_repo::leaks::{self, DECODE_LIMIT, Finding, KNOWN_KEY, KnownKey, Limits, Region, Scanner};
use std::path::Path;
use std::process::Command;

fn real(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.rule != DECODE_LIMIT).collect()
}

fn describe(f: &[Finding]) -> String {
    f.iter()
        .map(|f| format!("{}@{:?} via {}", f.rule, f.line, f.chain_text()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_leak_shape_is_found_by_the_rules() {
    let scanner = Scanner::default();
    let missed: Vec<String> = leaks_corpus::leaks("rules")
        .iter()
        .filter(|c| real(&scanner.scan(&c.name, &c.bytes)).is_empty())
        .map(|c| c.name.clone())
        .collect();
    assert!(missed.is_empty(), "leak shapes not found: {missed:?}");
}

#[test]
fn every_leak_shape_is_found_exactly_as_a_known_key() {
    let mut missed = Vec::new();
    for case in leaks_corpus::leaks("known") {
        let Some(key) = &case.key else { continue };
        let scanner = Scanner::default().with_known_keys(vec![KnownKey::from_bytes("jp", key.as_bytes())]);
        let found = scanner.scan(&case.name, &case.bytes);
        let exact = found.iter().any(|f| {
            f.rule == KNOWN_KEY && f.fingerprint == Fingerprint::of(key.as_bytes()) && f.label.as_deref() == Some("jp")
        });
        if !exact {
            missed.push(format!("{}: {}", case.name, describe(&found)));
        }
    }
    assert!(missed.is_empty(), "known keys not found: {missed:#?}");
}

#[test]
fn benign_lines_are_not_findings() {
    let scanner = Scanner::default();
    let alarms: Vec<String> = leaks_corpus::benign()
        .iter()
        .filter_map(|c| {
            let f = scanner.scan(&c.name, &c.bytes);
            (!f.is_empty()).then(|| format!("{}: {}", c.name, describe(&f)))
        })
        .collect();
    assert!(alarms.is_empty(), "false alarms: {alarms:#?}");
}

#[test]
fn findings_show_fingerprints_never_values() {
    for case in leaks_corpus::leaks("values") {
        let Some(key) = &case.key else { continue };
        let scanner = Scanner::default().with_known_keys(vec![KnownKey::from_bytes("jp", key.as_bytes())]);
        let found = scanner.scan(&case.name, &case.bytes);
        let shown = format!("{found:?} {}", serde_json::to_string(&found).unwrap());
        let (a, b) = key.split_at(key.len() / 2);
        assert!(
            !shown.contains(a) && !shown.contains(b),
            "{}: a finding shows the key",
            case.name
        );
        assert!(
            !format!("{scanner:?}").contains(a),
            "the scanner's Debug shows a known key"
        );
    }
}

#[test]
fn findings_name_the_decoding_chain_and_the_line() {
    let find = |name: &str| -> Vec<Finding> {
        let case: Case = leaks_corpus::leaks("chain")
            .into_iter()
            .find(|c| c.name == name)
            .unwrap();
        Scanner::default().scan("f", &case.bytes)
    };
    let chains = |f: &[Finding]| f.iter().map(Finding::chain_text).collect::<Vec<_>>();
    let f = find("encodings/gzip-base64");
    assert!(chains(&f).contains(&"base64>gzip".to_owned()), "{f:?}");
    assert!(chains(&find("archives/tar-gz")).contains(&"gzip>tar".to_owned()));
    assert!(chains(&find("archives/zip-in-tar")).contains(&"tar>zip".to_owned()));
    let f = find("archives/tar-gz");
    assert!(
        f.iter().any(|f| f.path == "f!notes/jp.env" && f.line == Some(1)),
        "{f:?}"
    );
    let f = find("cli/kubectl-docker-password-continued");
    assert!(
        f.iter().any(|f| f.rule == "cli-secret-flag" && f.line == Some(4)),
        "{f:?}"
    );
}

#[test]
fn a_decompression_bomb_is_a_finding_not_an_outage() {
    let bomb = leaks_corpus::gzip(&vec![0u8; 64 << 20]);
    let nested = leaks_corpus::gzip(&leaks_corpus::gzip(&leaks_corpus::gzip(&leaks_corpus::gzip(
        &leaks_corpus::gzip(b"apikey: nothing to see"),
    ))));
    let scanner = Scanner::default();
    let f = scanner.scan("bomb.gz", &bomb);
    assert!(
        f.iter()
            .any(|f| f.rule == DECODE_LIMIT && f.detail.as_deref().unwrap_or("").contains("beyond")),
        "{f:?}"
    );
    let f = scanner.scan("nested.gz", &nested);
    assert!(f.iter().any(|f| f.rule == DECODE_LIMIT), "{f:?}");
    let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), b"x".to_vec())).collect();
    let entries: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let f = Scanner::default()
        .with_limits(Limits {
            max_entries: 10,
            ..Limits::default()
        })
        .scan("many.zip", &leaks_corpus::zip(&entries));
    assert!(f.iter().any(|f| f.rule == DECODE_LIMIT), "{f:?}");
}

#[test]
fn a_gpg_store_message_is_opened_and_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let key = leaks_corpus::fake_key("gpg-store");
    std::fs::write(dir.path().join("notes.txt"), format!("apikey: {key}\n")).unwrap();
    for algo in ["zip", "zlib"] {
        let out = Command::new("gpg")
            .args(["--batch", "--quiet", "--homedir"])
            .arg(&home)
            .args(["--store", "--compress-algo", algo, "--armor", "--output", "-"])
            .arg(dir.path().join("notes.txt"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let found = Scanner::default().scan("notes.txt.asc", &out.stdout);
        let hit = found
            .iter()
            .find(|f| f.fingerprint == Fingerprint::of(key.as_bytes()))
            .unwrap_or_else(|| panic!("{algo}: {found:?}"));
        assert_eq!(hit.chain_text(), "base64>openpgp", "{algo}");
    }
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .status();
}

/// Today's `rekey check` (head snapshot, per changed file) uses the engine
/// through `leakscan::scan`: shapes the old scanner missed fail the check,
/// rekey's own names pass, and output shows fingerprints only.
#[test]
fn rekey_check_catches_the_new_shapes_and_passes_benign_files() {
    use crate::support::{Canary, rekey};
    let dir = repo();
    let d = dir.path();
    let key = leaks_corpus::fake_key("check/cli");
    let canary = Canary::with_value(&key);
    let tarred = leaks_corpus::gzip(&leaks_corpus::tar(&[(
        "jp.env",
        format!("IBMCLOUD_API_KEY={key}\n").as_bytes(),
    )]));
    write(
        d,
        "notes/login.sh",
        format!("docker login -u iamapikey -p {key} jp.icr.io\n").as_bytes(),
    );
    write(d, "notes/backup.tar.gz", &tarred);
    write(
        d,
        "notes/ok.md",
        b"secret_name = \"JP_REGISTRY_PULL_SECRET_64\"\napi_key_id: ApiKey-6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b\nSECRETS_REPO_SHA=3f9a1c2e4b6d8f0a1c3e5b7d9f1a3c5e7b9d1f3a\n",
    );
    commit_all(d, "notes");
    let run = rekey()
        .arg("check")
        .arg("--repo")
        .arg(d)
        .args(["--base", "main", "--head", "pr", "--output", "json"])
        .run();
    run.code(1);
    canary.assert_not_in_run(&run);
    let json = run.json();
    let leak = |target: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "leak" && c["target"] == target)
            .cloned()
            .unwrap_or_else(|| panic!("no leak check of {target}: {json}"))
    };
    let login = leak("notes/login.sh");
    assert_eq!(login["ok"], false);
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .contains(&Fingerprint::of(key.as_bytes()).to_string()),
        "{login}"
    );
    // Binary files reach today's check as lossy UTF-8 text; archives are
    // found once check passes bytes (`leakscan::scan_bytes`, `leaks::scan_range`).
    let found = rekey::secrets_repo::leakscan::scan_bytes("notes/backup.tar.gz", &tarred, &[]);
    assert!(found.iter().any(|f| f.encoding.first() == Some(&"gzip")), "{found:?}");
    assert_eq!(leak("notes/ok.md")["ok"], true);
}

// ---- history --------------------------------------------------------------

/// [`crate::support::git`], its output trimmed.
fn git(dir: &Path, args: &[&str]) -> String {
    crate::support::git(dir, args).trim().to_owned()
}

fn write(dir: &Path, name: impl AsRef<Path>, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A secrets repo with a base commit on main and a PR branch.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    write(dir.path(), "README.md", b"secrets\n");
    write(dir.path(), "old.txt", b"kept from before\n");
    commit_all(dir.path(), "base");
    git(dir.path(), &["checkout", "-q", "-b", "pr"]);
    dir
}

#[test]
fn history_finds_a_key_added_then_removed_with_the_still_in_history_note() {
    let dir = repo();
    let d = dir.path();
    let key = leaks_corpus::fake_key("history/removed");
    write(
        d,
        "notes/jp.md",
        format!("docker login -u iamapikey -p {key} jp.icr.io\n").as_bytes(),
    );
    let added = commit_all(d, "Add rotation notes");
    std::fs::remove_file(d.join("notes/jp.md")).unwrap();
    let removed = commit_all(d, "Remove notes");
    write(d, "registry/README", b"nothing here\n");
    commit_all(d, "Document the registry dir");

    // The head snapshot no longer differs from the base in notes/: history does.
    let found = leaks::scan_range(&Scanner::default(), d, "main", "pr", &HistoryLimits::default()).unwrap();
    let hit = found
        .iter()
        .find(|f| f.path == "notes/jp.md" && f.rule == "cli-login-password")
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(hit.commit.as_deref(), Some(added.as_str()));
    assert_eq!(hit.removed_in.as_deref(), Some(removed.as_str()));
    assert_eq!(hit.line, Some(1));
    assert!(
        hit.history_note()
            .unwrap()
            .contains("still in history; squash or rewrite before merging")
    );
    assert_eq!(hit.fingerprint, Fingerprint::of(key.as_bytes()));
    // Known keys are found exactly too, with the caller's label.
    let scanner = Scanner::default().with_known_keys(vec![KnownKey::from_bytes("jp", key.as_bytes())]);
    let found = leaks::scan_range(&scanner, d, "main", "pr", &HistoryLimits::default()).unwrap();
    assert!(
        found
            .iter()
            .any(|f| f.rule == KNOWN_KEY && f.label.as_deref() == Some("jp") && f.removed_in.is_some())
    );
}

#[test]
fn history_finds_every_corpus_shape_in_a_pr_that_later_deletes_them_and_no_benign_case() {
    let dir = repo();
    let d = dir.path();
    let cases = leaks_corpus::leaks("history-corpus");
    let mut categories: Vec<&str> = cases.iter().filter_map(|c| c.name.split('/').next()).collect();
    categories.dedup();
    for category in &categories {
        for c in cases.iter().filter(|c| c.name.starts_with(&format!("{category}/"))) {
            write(d, format!("leaks/{}", c.name), &c.bytes);
        }
        commit_all(d, &format!("Add {category} notes"));
    }
    for c in leaks_corpus::benign() {
        write(d, format!("benign/{}", c.name), &c.bytes);
    }
    commit_all(d, "Add benign files");
    std::fs::remove_dir_all(d.join("leaks")).unwrap();
    let cleanup = commit_all(d, "Remove the notes again");

    let found = leaks::scan_range(&Scanner::default(), d, "main", "pr", &HistoryLimits::default()).unwrap();
    let missed: Vec<&str> = cases
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| {
            let path = format!("leaks/{name}");
            !found.iter().any(|f| {
                f.rule != DECODE_LIMIT
                    && (f.path == path || f.path.starts_with(&format!("{path}!")))
                    && f.removed_in.as_deref() == Some(cleanup.as_str())
            })
        })
        .collect();
    assert!(missed.is_empty(), "not found in history: {missed:?}");
    let alarms: Vec<String> = found
        .iter()
        .filter(|f| f.path.starts_with("benign/") || f.region == Region::CommitMessage)
        .map(|f| format!("{} {}", f.path, f.rule))
        .collect();
    assert!(alarms.is_empty(), "false alarms: {alarms:?}");
}

#[test]
fn history_scans_commit_messages_file_names_binary_files_and_non_utf8_names() {
    use std::os::unix::ffi::OsStrExt;
    let dir = repo();
    let d = dir.path();
    let in_message = leaks_corpus::fake_key("history/message");
    let in_binary = leaks_corpus::fake_key("history/binary");
    let in_odd_name = leaks_corpus::fake_key("history/odd-name");
    let in_name = leaks_corpus::fake_key("history/name");
    let mut binary = vec![0u8, 0xff, 0xfe, 0x00, 0x13];
    binary.extend_from_slice(format!("ibmcloud login --apikey {in_binary}").as_bytes());
    binary.extend_from_slice(&[0, 0x80, 0xc3]);
    write(d, "blobs/app.bin", &binary);
    let odd = std::ffi::OsStr::from_bytes(b"notes/r\xe9gion-\xff.txt");
    write(d, odd, format!("apikey: {in_odd_name}\n").as_bytes());
    write(d, format!("keys/ibm/{in_name}.txt"), b"see name\n");
    let c1 = commit_all(
        d,
        &format!("Rotate jp\n\nUsed: docker login -u iamapikey -p {in_message} jp.icr.io\n"),
    );

    let range = history::enumerate(d, "main", "pr", &HistoryLimits::default()).unwrap();
    assert_eq!(range.commits.len(), 1);
    assert!(
        range.names.iter().any(|n| n.path == b"notes/r\xe9gion-\xff.txt"),
        "non-UTF-8 name kept as bytes"
    );

    let found = leaks::scan_range(&Scanner::default(), d, "main", "pr", &HistoryLimits::default()).unwrap();
    let fp = |k: &str| Fingerprint::of(k.as_bytes());
    let at = |region: Region, key: &str| {
        found
            .iter()
            .any(|f| f.region == region && f.fingerprint == fp(key) && f.commit.as_deref() == Some(c1.as_str()))
    };
    assert!(at(Region::CommitMessage, &in_message), "{found:?}");
    assert!(at(Region::Content, &in_binary), "{found:?}");
    assert!(at(Region::Content, &in_odd_name), "{found:?}");
    assert!(at(Region::FileName, &in_name), "{found:?}");
    assert!(found.iter().any(|f| f.path == "blobs/app.bin"));
    // A key in a file name is a finding, and the name is shown redacted.
    assert!(found.iter().any(|f| f.path == "keys/ibm/<redacted>.txt"), "{found:?}");
    let shown = format!(
        "{found:?} {:?}",
        history::enumerate(d, "main", "pr", &HistoryLimits::default()).unwrap()
    );
    for key in [&in_message, &in_binary, &in_odd_name, &in_name] {
        assert!(!shown.contains(key.as_str()), "a key is shown");
    }
    assert!(found.iter().any(|f| f.path.starts_with("notes/r\u{fffd}gion")));
}

#[test]
fn history_reads_each_blob_once_and_skips_what_the_base_has() {
    let dir = repo();
    let d = dir.path();
    let key = leaks_corpus::fake_key("history/once");
    let body = format!("IBMCLOUD_API_KEY={key}\n");
    write(d, "a.env", body.as_bytes());
    let first = commit_all(d, "one");
    write(d, "b.env", body.as_bytes());
    write(d, "copy-of-old.txt", b"kept from before\n");
    commit_all(d, "two");
    let range = history::enumerate(d, "main", "pr", &HistoryLimits::default()).unwrap();
    assert_eq!(range.blobs.len(), 1, "{:?}", range.blobs);
    assert_eq!(range.blobs[0].path, b"a.env");
    assert_eq!(range.blobs[0].commit, first);
    assert_eq!(range.blobs[0].removed_in, None, "still at the head");
    assert_eq!(range.names.len(), 3);
}

#[test]
fn history_handles_a_pr_that_merged_main() {
    let dir = repo();
    let d = dir.path();
    let key = leaks_corpus::fake_key("history/merge");
    write(d, "pr.env", format!("IBMCLOUD_API_KEY={key}\n").as_bytes());
    let added = commit_all(d, "pr work");
    git(d, &["checkout", "-q", "main"]);
    write(d, "main-only.txt", b"landed on main meanwhile\n");
    commit_all(d, "main work");
    git(d, &["checkout", "-q", "pr"]);
    git(d, &["merge", "-q", "--no-edit", "main"]);
    let range = history::enumerate(d, "main", "pr", &HistoryLimits::default()).unwrap();
    assert_eq!(range.commits.len(), 2, "the PR commit and the merge");
    let paths: Vec<&[u8]> = range.blobs.iter().map(|b| b.path.as_slice()).collect();
    assert_eq!(paths, [&b"pr.env"[..]], "main's file is in the base already");
    let found = leaks::scan_range(&Scanner::default(), d, "main", "pr", &HistoryLimits::default()).unwrap();
    assert!(
        found
            .iter()
            .any(|f| f.path == "pr.env" && f.commit.as_deref() == Some(added.as_str()))
    );
}

#[test]
fn history_limits_are_clear_errors() {
    let dir = repo();
    let d = dir.path();
    write(d, "big.bin", &vec![7u8; 5000]);
    commit_all(d, "big");
    commit_all(d, "empty");
    let small = HistoryLimits {
        max_blob_bytes: 1000,
        ..HistoryLimits::default()
    };
    let e = history::enumerate(d, "main", "pr", &small).unwrap_err();
    assert!(matches!(e, HistoryError::TooLarge { size: 5000, .. }), "{e}");
    assert!(
        e.to_string().contains("big.bin") && e.to_string().contains("1000"),
        "{e}"
    );
    let few = HistoryLimits {
        max_commits: 1,
        ..HistoryLimits::default()
    };
    let e = history::enumerate(d, "main", "pr", &few).unwrap_err();
    assert!(e.to_string().contains("more than 1 commits"), "{e}");
    let e = history::enumerate(d, "main", "no-such-branch", &HistoryLimits::default()).unwrap_err();
    assert!(matches!(e, HistoryError::Git(_)), "{e}");
}
