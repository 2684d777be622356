//! `rekey keys check` against the IAM stand-in: valid, invalid, disabled,
//! expired and unreachable keys, retries, keys read from a sealed repo, and
//! keys never printed.

use crate::iam_support::{Fault, Iam};
use crate::pgp_support::{gpg_encrypt, keys};
use crate::support::*;
use std::path::Path;

const CODES: &[(&str, &str)] = &RUNBOOK_CODES;

fn key_name(code: &str) -> String {
    format!("iks-armada-master-registry-access-read-only-prod-{code}-20260820")
}

/// Gives every shipped region a key in IAM and in DIR/<region>.key; returns the canaries.
fn six_keys(iam: &Iam, dir: &Path) -> Vec<(String, Canary)> {
    CODES
        .iter()
        .map(|(region, code)| {
            let canary = Canary::new(&format!("keys-{region}"));
            iam.add_key(&key_name(code), &canary.key);
            write(dir, &format!("{region}.key"), format!("{}\n", canary.key));
            (region.to_string(), canary)
        })
        .collect()
}

fn check(iam: &Iam, keys: &Path, admin: &str) -> Rekey {
    keys_check(iam, admin).arg("--api-keys-dir").arg(keys)
}

/// `rekey keys check` of the shipped catalog against `iam`, with its admin key.
fn keys_check(iam: &Iam, admin: &str) -> Rekey {
    rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args([
            "--iam-url",
            &iam.url(),
            "--iam-timeout",
            "10s",
            "--iam-api-key-env",
            "REKEY_TEST_IAM_ADMIN",
        ])
        .env("REKEY_TEST_IAM_ADMIN", admin)
}

#[test]
fn six_valid_keys_pass_with_their_names_ids_and_ages() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canaries = six_keys(&iam, dir.path());
    let run = check(&iam, dir.path(), &admin).arg("--output").arg("json").run();
    run.code(0);
    let doc = run.json();
    let rows = doc["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        assert_eq!(row["class"], "valid", "{row}");
        let region = row["region"].as_str().unwrap();
        let code = CODES.iter().find(|(r, _)| *r == region).unwrap().1;
        assert_eq!(row["details"]["name"], key_name(code).as_str());
        assert!(row["details"]["id"].as_str().unwrap().starts_with("ApiKey-"));
        assert!(row["age_days"].as_i64().unwrap() >= 90, "{row}");
    }
    for (_, c) in &canaries {
        c.assert_not_in_run(&run);
    }
    let text = check(&iam, dir.path(), &admin).run();
    text.code(0).stdout_has("6 keys valid in IAM");
    for (_, c) in &canaries {
        c.assert_not_in_run(&text);
    }
}

#[test]
fn deleted_disabled_and_expired_keys_are_named_by_class() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canaries = six_keys(&iam, dir.path());
    let by_region = |r: &str| canaries.iter().find(|(n, _)| n == r).unwrap().1.key.clone();
    iam.edit(&by_region("jp"), |k| k.deleted = true);
    iam.edit(&by_region("au"), |k| k.disabled = true);
    iam.edit(&by_region("de"), |k| {
        k.disabled = true;
        k.expires_at = Some("2026-01-01T00:00+0000".into());
    });
    let run = check(&iam, dir.path(), &admin).args(["--output", "json"]).run();
    run.code(1);
    let doc = run.json();
    let class = |r: &str| {
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["region"] == r)
            .unwrap()["class"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(class("jp"), "invalid");
    assert_eq!(class("au"), "disabled");
    assert_eq!(class("de"), "disabled");
    assert_eq!(class("us"), "valid");
    let text = check(&iam, dir.path(), &admin).run();
    text.code(1)
        .stdout_has("BXNIM0415E: Provided API key could not be found.")
        .stdout_has("3 of 6 keys not valid in IAM");
    for (_, c) in &canaries {
        c.assert_not_in_run(&run);
        c.assert_not_in_run(&text);
    }
}

#[test]
fn an_expired_key_is_expired() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canary = Canary::new("keys-expired");
    iam.add_key(&key_name("ap-north"), &canary.key);
    iam.edit(&canary.key, |k| k.expires_at = Some("2026-02-01T00:00+0000".into()));
    write(dir.path(), "jp.key", &canary.key);
    let run = check(&iam, dir.path(), &admin)
        .args(["--region", "jp", "--output", "json"])
        .run();
    run.code(1);
    assert_eq!(run.json()["keys"][0]["class"], "expired");
    canary.assert_not_in_run(&run);
}

#[test]
fn a_key_named_for_another_region_is_reported() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canary = Canary::new("keys-wrong-code");
    iam.add_key(&key_name("ap-south"), &canary.key);
    write(dir.path(), "jp.key", &canary.key);
    let run = check(&iam, dir.path(), &admin).args(["--region", "jp"]).run();
    run.code(1).stdout_has("does not carry region jp's key code `ap-north`");
}

#[test]
fn iam_429_and_503_are_retried() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canary = Canary::new("keys-retry");
    iam.add_key(&key_name("ap-north"), &canary.key);
    write(dir.path(), "jp.key", &canary.key);
    iam.fail_next([Fault::RetryAfter(429, 1), Fault::Status(503), Fault::Status(502)]);
    let run = check(&iam, dir.path(), &admin).args(["--region", "jp"]).run();
    run.code(0).stdout_has("1 key valid in IAM");
}

#[test]
fn iam_that_keeps_failing_is_unreachable_exit_2() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canary = Canary::new("keys-down");
    iam.add_key(&key_name("ap-north"), &canary.key);
    write(dir.path(), "jp.key", &canary.key);
    let _ = admin;
    iam.fail_next(std::iter::repeat_n(Fault::Status(503), 10));
    let down = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp", "--api-keys-dir"])
        .arg(dir.path())
        .args(["--iam-url", &iam.url(), "--iam-timeout", "10s", "--output", "json"])
        .run();
    down.code(2);
    assert_eq!(down.json()["keys"][0]["class"], "iam_unreachable");
    canary.assert_not_in_run(&down);
}

#[test]
fn a_closed_port_is_unreachable_exit_2() {
    let dir = tempdir();
    let canary = Canary::new("keys-closed");
    write(dir.path(), "jp.key", &canary.key);
    let port = free_port();
    let run = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp", "--api-keys-dir"])
        .arg(dir.path())
        .args(["--iam-url", &format!("http://127.0.0.1:{port}"), "--iam-timeout", "3s"])
        .run();
    run.code(2).stdout_has("iam_unreachable");
    canary.assert_not_in_run(&run);
}

#[test]
fn a_huge_iam_answer_is_refused_not_buffered() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canary = Canary::new("keys-huge");
    iam.add_key(&key_name("ap-north"), &canary.key);
    write(dir.path(), "jp.key", &canary.key);
    iam.fail_next([Fault::Body(200, vec![b' '; 4 << 20])]);
    let run = check(&iam, dir.path(), &admin).args(["--region", "jp"]).run();
    run.code(2).stderr_has("larger than 256 KiB");
    canary.assert_not_in_run(&run);
}

#[test]
fn iam_error_text_is_printed_with_control_characters_escaped() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canary = Canary::new("keys-escape");
    write(dir.path(), "jp.key", &canary.key);
    let _ = admin;
    iam.fail_next([Fault::Body(
        400,
        br#"{"errorCode":"BXNIM0415E\u001b]0;owned\u0007","errorMessage":"gone\u001b[2J"}"#.to_vec(),
    )]);
    let run = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp", "--api-keys-dir"])
        .arg(dir.path())
        .args(["--iam-url", &iam.url()])
        .run();
    run.code(1);
    assert!(
        !run.stdout.contains('\u{1b}'),
        "an escape sequence reached the terminal: {}",
        run.stdout
    );
    run.stdout_has("\\u{1b}[2J");
}

#[test]
fn per_region_key_flags_need_every_region_and_know_their_regions() {
    let (iam, _) = Iam::start();
    let dir = tempdir();
    let jp = write(dir.path(), "jp.key", "k1");
    let run = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp", "--region", "au"])
        .arg(format!("--api-key-file=jp={}", jp.display()))
        .args(["--iam-url", &iam.url()])
        .run();
    run.code(2).stderr_has("no API key for region `au`");
    let run = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp"])
        .arg(format!("--api-key-file=xx={}", jp.display()))
        .args(["--iam-url", &iam.url()])
        .run();
    run.code(2).stderr_has("`xx` is not a region being handled");
    assert!(iam.calls().is_empty(), "IAM was called before the inputs were valid");
}

#[test]
fn plain_http_iam_outside_loopback_is_refused_before_reading_keys() {
    let dir = tempdir();
    let run = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--api-keys-dir"])
        .arg(dir.path())
        .args(["--iam-url", "http://iam.example.com"])
        .run();
    run.code(2).stderr_has("unencrypted");
}

/// Sends a bare HTTP/1.1 request to the IAM stand-in; returns the whole answer.
fn raw_iam(iam: &Iam, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = iam.url().trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    // Read the head, then exactly Content-Length bytes: the stand-in may keep the connection open.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = content_length(head);
            if body.len() >= len {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn the_iam_stand_in_tells_a_missing_authorization_header_from_a_bad_token() {
    let (iam, _) = Iam::start();
    let none = raw_iam(
        &iam,
        "GET /v1/apikeys/details HTTP/1.1\r\nHost: iam\r\nIAM-ApiKey: x\r\nConnection: close\r\n\r\n",
    );
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(
        none.contains("BXNIM0308E") && none.contains("No authorization header found"),
        "{none}"
    );
    let bad = raw_iam(
        &iam,
        "GET /v1/apikeys/details HTTP/1.1\r\nHost: iam\r\nIAM-ApiKey: x\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    assert!(
        bad.contains("BXNIM0308E") && bad.contains("Token is invalid or has expired."),
        "{bad}"
    );
}

fn meta_path(repo: &Path, region: &str) -> std::path::PathBuf {
    repo.join(format!(
        "registry/{}_REGISTRY_PULL_SECRET_64.meta.json",
        region.to_uppercase()
    ))
}

/// Edits a region's metadata in the work tree.
fn edit_meta(repo: &Path, region: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = meta_path(repo, region);
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut meta);
    std::fs::write(&path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

/// A secrets repo sealed for alice with each of `regions`' keys (named by the runbook), committed.
fn sealed_repo(dir: &Path, canaries: &[(String, Canary)], regions: &[&str]) -> std::path::PathBuf {
    sealed_repo_for(dir, canaries, regions, &["alice"])
}

/// A secrets repo sealed for `recipients` with each of `regions`' keys, committed.
fn sealed_repo_for(
    dir: &Path,
    canaries: &[(String, Canary)],
    regions: &[&str],
    recipients: &[&str],
) -> std::path::PathBuf {
    let repo = dir.join("repo");
    init_secrets_repo(&repo, recipients);
    for (region, canary) in canaries.iter().filter(|(r, _)| regions.contains(&r.as_str())) {
        let code = CODES.iter().find(|(r, _)| r == region).unwrap().1;
        seal_key(
            &repo,
            &repo_root().join("regions"),
            &[region],
            &canary.key,
            Some(&key_name(code)),
            Vec::<String>::new(),
        )
        .code(0);
    }
    commit_all(&repo, "sealed");
    repo
}

fn check_repo(iam: &Iam, repo: &Path, admin: &str) -> Rekey {
    keys_check(iam, admin)
        .arg("--repo")
        .arg(repo)
        .arg("--key")
        .arg(keys().file("alice.sec"))
}

#[test]
fn keys_in_the_repos_current_secrets_are_checked_by_region() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canaries = six_keys(&iam, &dir.path().join("keys"));
    let regions: Vec<&str> = CODES.iter().map(|(r, _)| *r).collect();
    let repo = sealed_repo(dir.path(), &canaries, &regions);
    let by_region = |r: &str| canaries.iter().find(|(n, _)| n == r).unwrap().1.key.clone();
    iam.edit(&by_region("au"), |k| k.disabled = true);
    let run = check_repo(&iam, &repo, &admin).args(["--output", "json"]).run();
    run.code(1);
    let doc = run.json();
    let row = |r: &str| {
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["region"] == r)
            .unwrap()
            .clone()
    };
    assert_eq!(row("au")["class"], "disabled", "{doc}");
    for r in ["de", "fr2", "jp", "uk", "us"] {
        assert_eq!(row(r)["class"], "valid", "{doc}");
        assert_eq!(row(r)["problems"].as_array().unwrap().len(), 0, "{doc}");
    }
    let text = check_repo(&iam, &repo, &admin).run();
    text.code(1)
        .stdout_has("au     disabled")
        .stdout_has("1 of 6 keys not valid in IAM");
    for (_, c) in &canaries {
        c.assert_not_in_run(&run);
        c.assert_not_in_run(&text);
    }

    // The metadata disagrees with the secret: another key's fingerprint,
    // and an IAM id that is not the key's.
    let de_fingerprint = row("de")["key_fingerprint"].as_str().unwrap().to_owned();
    let jp_id = row("jp")["details"]["id"].as_str().unwrap().to_owned();
    edit_meta(&repo, "us", |m| {
        m["active"]["key_fingerprint"] = de_fingerprint.clone().into()
    });
    edit_meta(&repo, "jp", |m| {
        m["active"]["iam_key_id"] = "ApiKey-0000-not-the-key".into()
    });
    let run = check_repo(&iam, &repo, &admin)
        .args(["--region", "us", "--region", "jp"])
        .run();
    run.code(1)
        .stdout_has(&format!(
            "the metadata's current key is {de_fingerprint}, but the secret carries"
        ))
        .stdout_has(&format!(
            "the metadata records IAM id ApiKey-0000-not-the-key, but IAM reports {jp_id} for the key"
        ))
        .stdout_has("2 of 2 keys not valid in IAM");
    for (_, c) in &canaries {
        c.assert_not_in_run(&run);
    }
    // The recorded id that is the key's is no problem.
    edit_meta(&repo, "jp", |m| m["active"]["iam_key_id"] = jp_id.clone().into());
    check_repo(&iam, &repo, &admin)
        .args(["--region", "jp"])
        .run()
        .code(0)
        .stdout_has("1 key valid in IAM");
}

#[test]
fn a_region_without_a_secret_in_the_repo_is_exit_2_before_iam() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canaries = six_keys(&iam, &dir.path().join("keys"));
    let repo = sealed_repo(dir.path(), &canaries, &["jp"]);
    let run = check_repo(&iam, &repo, &admin).run();
    run.code(2)
        .stderr_has("AU_REGISTRY_PULL_SECRET_64.meta.json")
        .stderr_has("no secret for region au");
    assert!(iam.calls().is_empty(), "IAM was called before the inputs were valid");
    // --repo needs --key, and takes no other key source.
    let no_key = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp", "--repo"])
        .arg(&repo)
        .args(["--iam-url", &iam.url()])
        .run();
    no_key.code(2).stderr_has("--key");
    let both = check_repo(&iam, &repo, &admin)
        .args(["--region", "jp", "--api-keys-dir"])
        .arg(dir.path().join("keys"))
        .run();
    both.code(2).stderr_has("cannot be used with");
    // A key that is not a recipient cannot open the secret.
    let wrong = rekey()
        .args(["keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--region", "jp", "--repo"])
        .arg(&repo)
        .arg("--key")
        .arg(keys().file("bob.sec"))
        .args(["--iam-url", &iam.url()])
        .run();
    wrong.code(2).stderr_has("JP_REGISTRY_PULL_SECRET_64.gpg");
    assert!(iam.calls().is_empty());
    for (_, c) in &canaries {
        for run in [&run, &no_key, &both, &wrong] {
            c.assert_not_in_run(run);
        }
    }
}

#[test]
fn a_secret_whose_entries_carry_different_keys_is_exit_2() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canaries = six_keys(&iam, &dir.path().join("keys"));
    let repo = sealed_repo(dir.path(), &canaries, &["jp"]);
    let other = Canary::new("keys-mixed-other");
    let jp = &canaries.iter().find(|(r, _)| r == "jp").unwrap().1;
    let plain = write(
        dir.path(),
        "mixed.json",
        format!(
            r#"{{"auths":{{"jp.icr.io":{{"username":"iamapikey","password":"{}"}},"icr.io":{{"username":"iamapikey","password":"{}"}}}}}}"#,
            jp.key, other.key
        ),
    );
    let secret = repo.join("registry/JP_REGISTRY_PULL_SECRET_64.gpg");
    std::fs::remove_file(&secret).unwrap();
    gpg_encrypt(&keys().file("alice.pub"), &keys().fingerprint("alice"), &plain, &secret);
    std::fs::remove_file(&plain).unwrap();
    let run = check_repo(&iam, &repo, &admin).args(["--region", "jp"]).run();
    run.code(2)
        .stderr_has("JP_REGISTRY_PULL_SECRET_64.gpg: its entries carry 2 different keys")
        .stderr_has("rekey inspect");
    jp.assert_not_in_run(&run);
    other.assert_not_in_run(&run);
    assert!(iam.calls().is_empty());
}

#[test]
fn a_passphrase_protected_key_opens_the_repo_with_its_passphrase_from_the_environment() {
    let (iam, admin) = Iam::start();
    let dir = tempdir();
    let canaries = six_keys(&iam, &dir.path().join("keys"));
    let repo = sealed_repo_for(dir.path(), &canaries, &["jp"], &["locked"]);
    let cmd = |extra: &[&str]| {
        rekey()
            .args(["keys", "check", "--regions"])
            .arg(repo_root().join("regions"))
            .args(["--region", "jp", "--repo"])
            .arg(&repo)
            .arg("--key")
            .arg(keys().file("locked.sec"))
            .args(["--iam-url", &iam.url(), "--iam-api-key-env", "REKEY_TEST_IAM_ADMIN"])
            .env("REKEY_TEST_IAM_ADMIN", &admin)
            .args(extra)
    };
    let ok = cmd(&["--passphrase-env", "REKEY_TEST_PASS"])
        .env("REKEY_TEST_PASS", "correct horse")
        .run();
    ok.code(0).stdout_has("1 key valid in IAM");
    Canary::with_value("correct horse").assert_not_in_run(&ok);
    let without = cmd(&[]).run();
    without.code(2);
    for (_, c) in &canaries {
        c.assert_not_in_run(&ok);
        c.assert_not_in_run(&without);
    }
}
