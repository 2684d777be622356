//! `rekey audit`: key ages from key names and metadata, recipient expiry.

use crate::support::*;
use std::path::Path;

fn key_name(days_ago: i64) -> String {
    let date = chrono::Utc::now().date_naive() - chrono::Duration::days(days_ago);
    format!("iks-registry-access-prod-test-{}", date.format("%Y%m%d"))
}

/// Seals `region` into `repo` with a fresh canary key named `name` (or unnamed).
fn seal(repo: &Path, region: &str, name: Option<&str>) -> Canary {
    seal_with(repo, region, name, &[])
}

/// Like [`seal`], with more `rekey seal` arguments.
fn seal_with(repo: &Path, region: &str, name: Option<&str>, extra: &[&str]) -> Canary {
    let canary = Canary::new(&format!("audit-{region}"));
    seal_key(repo, &repo_root().join("regions"), &[region], &canary.key, name, extra).code(0);
    canary
}

#[test]
fn reports_overdue_due_and_fresh_keys_and_expiring_recipients() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice", "soon"]);
    let canaries = [
        seal(&repo, "jp", Some(&key_name(100))),
        seal(&repo, "us", Some(&key_name(80))),
        seal(&repo, "de", Some(&key_name(3))),
        seal(&repo, "uk", None),
    ];
    let run = rekey().args(["--output", "json", "audit", "--repo"]).arg(&repo).run();
    run.code(1);
    for c in &canaries {
        c.assert_not_in_run(&run);
    }
    let v = run.json();
    let status = |region: &str| {
        let k = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["region"] == region)
            .unwrap()
            .clone();
        (
            k["status"].as_str().unwrap().to_owned(),
            k["age_days"].as_i64().unwrap(),
            k["created_from"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(status("jp"), ("overdue".into(), 100, "key_name".into()));
    assert_eq!(status("us"), ("due".into(), 80, "key_name".into()));
    assert_eq!(status("de"), ("ok".into(), 3, "key_name".into()));
    assert_eq!(status("uk"), ("ok".into(), 0, "rotated_at".into()));
    let soon = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_id"].as_str().unwrap().starts_with("soon"))
        .unwrap()
        .clone();
    assert_eq!(soon["status"], "due");

    // Within a looser policy nothing is overdue.
    let run = rekey()
        .arg("audit")
        .arg("--repo")
        .arg(&repo)
        .args(["--max-age", "120d", "--warn-age", "90d"])
        .run();
    run.code(0).stdout_has("due      jp ");
    assert!(!run.stdout.contains("OVERDUE"), "{}", run.stdout);
}

#[test]
fn an_unusable_recipient_fails_the_audit() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    seal(&repo, "jp", Some(&key_name(1)));
    init_secrets_repo(&repo, &["alice", "expired"]);
    let run = rekey().args(["--output", "json", "audit", "--repo"]).arg(&repo).run();
    run.code(1);
    let v = run.json();
    let expired = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "unusable")
        .unwrap()
        .clone();
    assert!(expired["detail"].as_str().unwrap().contains("expired"), "{expired}");
}

#[test]
fn bad_audit_input_is_an_error() {
    let tmp = tempdir();
    rekey()
        .arg("audit")
        .arg("--repo")
        .arg(tmp.path())
        .run()
        .code(2)
        .stderr_has("recipients.asc");
    rekey()
        .arg("audit")
        .arg("--repo")
        .arg(tmp.path())
        .args(["--max-age", "ninety"])
        .run()
        .code(2)
        .stderr_has("--max-age");
    rekey()
        .arg("audit")
        .arg("--repo")
        .arg(tmp.path())
        .args(["--max-age", "30d", "--warn-age", "60d"])
        .run()
        .code(2)
        .stderr_has("--warn-age (60d) is longer than --max-age (30d)");
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    write(
        &repo,
        "registry/JP_REGISTRY_PULL_SECRET_64.meta.json",
        "{\"schema\": 1}",
    );
    rekey()
        .arg("audit")
        .arg("--repo")
        .arg(&repo)
        .run()
        .code(2)
        .stderr_has("JP_REGISTRY_PULL_SECRET_64.meta.json");
}

#[test]
fn openmetrics_output_passes_promtool_and_carries_every_gauge() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice", "soon"]);
    let canaries = [
        seal(&repo, "jp", Some(&key_name(100))),
        seal(&repo, "us", Some(&key_name(3))),
    ];
    let run = rekey()
        .args(["--output", "openmetrics", "audit", "--repo"])
        .arg(&repo)
        .run();
    run.code(1);
    for c in &canaries {
        c.assert_not_in_run(&run);
    }
    let text = &run.stdout;
    assert!(text.ends_with("# EOF\n"), "{text}");
    for needle in [
        "rekey_key_age_seconds{region=\"jp\"",
        "rekey_key_created_timestamp_seconds{region=\"jp\"",
        "rekey_key_retirement_seconds{region=\"jp\"",
        "rekey_recipient_expiry_timestamp_seconds{fingerprint=",
        "rekey_audit_ok 0",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }
    let jp_age = text
        .lines()
        .find(|l| l.starts_with("rekey_key_age_seconds{region=\"jp\""))
        .unwrap();
    assert!(jp_age.ends_with(&format!(" {}", 100 * 86_400)), "{jp_age}");
    let retire = text
        .lines()
        .find(|l| l.starts_with("rekey_key_retirement_seconds{region=\"jp\""))
        .unwrap();
    assert!(retire.ends_with(&format!(" {}", -10 * 86_400)), "{retire}");
    // promtool, as Prometheus itself reads it (the textfile collector's format).
    let file = write(tmp.path(), "rekey.prom", text);
    let lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        lint.status.success(),
        "promtool rejected the output: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

#[test]
fn a_key_named_with_a_future_date_fails_the_audit() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    let canary = seal(&repo, "jp", Some(&key_name(-7)));
    let run = rekey().args(["audit", "--repo"]).arg(&repo).run();
    run.code(1)
        .stdout_has("FUTURE")
        .stderr_has("carries a date after today");
    canary.assert_not_in_run(&run);
    let json = rekey().args(["--output", "json", "audit", "--repo"]).arg(&repo).run();
    assert_eq!(json.json()["keys"][0]["status"], "future");
}

#[test]
fn openmetrics_is_refused_by_commands_that_do_not_speak_it() {
    let run = rekey()
        .args(["--output", "openmetrics", "keys", "check", "--regions"])
        .arg(repo_root().join("regions"))
        .args(["--api-key-env", "NOPE"])
        .run();
    run.code(2).stderr_has("does not support --output openmetrics");
}

/// A pending version is shown as pending, never as the served key: the
/// key's age and status are the served (current) key's.
#[test]
fn a_pending_version_is_shown_as_pending_not_as_the_served_key() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    let live = seal(&repo, "jp", Some(&key_name(100)));
    let next_name = key_name(1);
    let next = seal_with(&repo, "jp", Some(&next_name), &["--pending"]);
    let run = rekey().args(["--output", "json", "audit", "--repo"]).arg(&repo).run();
    run.code(1);
    live.assert_not_in_run(&run);
    next.assert_not_in_run(&run);
    let v = run.json();
    let jp = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["region"] == "jp")
        .unwrap()
        .clone();
    assert_eq!(jp["state"], "current");
    assert_eq!(jp["status"], "overdue", "the served key is still the old one: {jp}");
    assert_eq!(jp["key_name"], key_name(100));
    assert_eq!(jp["pending"]["key_name"], next_name.as_str());
    let text = rekey().args(["audit", "--repo"]).arg(&repo).run();
    text.code(1)
        .stdout_has("not served until promoted")
        .stdout_has(&next_name);
}
