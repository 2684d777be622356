//! The key lifecycle against the IAM stand-in and the real token-auth
//! docker-registry: `rekey keys retire` after the grace period makes the old
//! key's pulls fail; refusals inside the grace period, while the key is still
//! current, and while the health gate is not healthy; `verify --iam-check`
//! and `audit --iam` report keys by their IAM class and state.

use crate::health_support::{Scenario, prom};
use crate::iam_support::{Fault, Iam, Key};
use crate::pgp_support::*;
use crate::support::*;
use crate::verify_support::*;
use std::path::PathBuf;

/// When the current keys were published, in every test.
const PUBLISHED: &str = "2026-11-20T12:00:00Z";
/// Inside the grace period (2 h after publishing).
const EARLY: &str = "2026-11-20T14:00:00Z";
/// After the default grace period of 24 h.
const LATE: &str = "2026-11-21T12:00:01Z";
const ADMIN_ENV: &str = "REKEY_TEST_IAM_ADMIN";

struct Setup {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    iam: Iam,
    admin: String,
    canaries: Vec<Canary>,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempdir();
        let repo = tmp.path().join("secrets");
        let mut ring = Vec::new();
        ring.extend(std::fs::read(keys().file("alice.pub")).unwrap());
        write(&repo, ".rekey/recipients.asc", ring);
        git(&repo, &["init", "-q", "-b", "main"]);
        let (iam, admin) = Iam::start();
        Setup {
            tmp,
            repo,
            iam,
            admin,
            canaries: Vec::new(),
        }
    }

    /// Creates a key in IAM and returns it with its canary.
    fn key(&mut self, tag: &str) -> (Canary, Key) {
        let canary = Canary::new(tag);
        let key = self
            .iam
            .add_key(&format!("iks-registry-test-{tag}-20261120"), &canary.key);
        self.canaries.push(Canary::with_value(&canary.key));
        (canary, key)
    }

    /// Seals `canary` as `region`'s current key.
    fn seal(&self, region: &str, canary: &Canary) {
        let gen_dir = self.tmp.path().join(format!("gen-{region}"));
        rekey()
            .arg("generate")
            .arg("--regions")
            .arg(repo_root().join("regions"))
            .args(["--region", region, "--api-key-env", "K", "--out"])
            .arg(&gen_dir)
            .env("K", &canary.key)
            .run()
            .code(0);
        rekey()
            .arg("seal")
            .arg("--repo")
            .arg(&self.repo)
            .arg("--in")
            .arg(&gen_dir)
            .run()
            .code(0);
        std::fs::remove_dir_all(gen_dir).unwrap();
    }

    fn meta_path(&self, region: &str) -> PathBuf {
        self.repo.join(format!(
            "registry/{}_REGISTRY_PULL_SECRET_64.meta.json",
            region.to_uppercase()
        ))
    }

    fn meta(&self, region: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.meta_path(region)).unwrap()).unwrap()
    }

    /// Records the IAM ids (as `rotate --create-keys` does) and the
    /// publication time, and commits it all as published then.
    fn record_ids(&self, region: &str, current: &Key, previous: Option<&Key>) {
        self.record_ids_at(region, current, previous, PUBLISHED);
        self.commit_at(PUBLISHED, &["add", "-A"]);
        self.commit_at(PUBLISHED, &["commit", "-qm", "rotated"]);
    }

    /// Records the IAM ids and `rotated_at` in the work tree only.
    fn record_ids_at(&self, region: &str, current: &Key, previous: Option<&Key>, rotated_at: &str) {
        let mut meta = self.meta(region);
        meta["active"]["iam_key_id"] = current.id.clone().into();
        meta["active"]["rotated_at"] = rotated_at.into();
        if let Some(p) = previous {
            meta["previous"]["iam_key_id"] = p.id.clone().into();
        }
        std::fs::write(self.meta_path(region), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    }

    /// Runs git in the repo with author and committer time `at`.
    fn commit_at(&self, at: &str, args: &[&str]) {
        git_at(&self.repo, at, args);
    }

    /// A region `region` rotated from a fresh old key to a fresh new key.
    fn rotated(&mut self, region: &str) -> (Key, Key) {
        let (old_c, old) = self.key(&format!("{region}-old"));
        let (new_c, new) = self.key(&format!("{region}-new"));
        self.seal(region, &old_c);
        self.seal(region, &new_c);
        self.record_ids(region, &new, Some(&old));
        (old, new)
    }

    fn retire(&self, at: &str) -> Rekey {
        rekey()
            .args(["keys", "retire", "--repo"])
            .arg(&self.repo)
            .args(["--at", at, "--iam-url", &self.iam.url(), "--iam-timeout", "10s"])
            .args(["--iam-api-key-env", ADMIN_ENV])
            .env(ADMIN_ENV, &self.admin)
    }

    #[track_caller]
    fn no_leak(&self, run: &Run) {
        for c in &self.canaries {
            c.assert_not_in_run(run);
        }
        Canary::with_value(&self.admin).assert_not_in_run(run);
    }

    /// The calls made to IAM's key management (not the token exchange).
    fn key_calls(&self) -> Vec<(String, String)> {
        self.iam
            .calls()
            .into_iter()
            .filter(|(_, p)| p.starts_with("/v1/apikeys/ApiKey"))
            .collect()
    }
}

/// `rekey verify` of `key` against the token registry, its tokens issued by `iam`.
fn pull(iam: &Iam, key: &str, extra: &[&str]) -> Run {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [TOKEN_HOST.to_owned()];
    let cat = catalog(tmp.path(), &[("t", &hosts, "armada-master/alpine:latest")]);
    let auth = iam.registry_auth(fx);
    verify_cmd(fx, &[(TOKEN_HOST, fx.token), (AUTH_HOST, auth)])
        .arg("--regions")
        .arg(&cat)
        .args(["--api-key-env", "REKEY_TEST_KEY", "--output", "json"])
        .env("REKEY_TEST_KEY", key)
        .args(extra)
        .run()
}

#[test]
fn retirement_after_the_grace_period_makes_pulls_fail() {
    let mut s = Setup::new();
    let (old, new) = s.rotated("jp");
    let old_value = s.canaries[0].key.clone();
    let new_value = s.canaries[1].key.clone();
    let before = pull(&s.iam, &old_value, &[]);
    before.code(0);
    s.no_leak(&before);

    let early = s.retire(EARLY).run();
    early
        .code(0)
        .stdout_has("in the grace period until 2026-11-21T12:00:00Z");
    s.no_leak(&early);
    assert!(s.key_calls().is_empty(), "nothing is retired inside the grace period");

    let dry = s.retire(LATE).arg("--dry-run").run();
    dry.code(0).stdout_has("would retire");
    assert!(s.key_calls().is_empty(), "a dry run calls no IAM");

    let run = s.retire(LATE).args(["--commit", "--output", "json"]).run();
    run.code(0);
    s.no_leak(&run);
    let doc = run.json();
    let jp = &doc["regions"][0];
    assert_eq!(jp["outcome"], "retired", "{doc}");
    assert_eq!(jp["iam_key_id"], old.id.as_str());
    assert_eq!(jp["how"], "disabled");
    assert!(doc["commit"].is_string(), "{doc}");
    assert!(s.iam.keys().iter().any(|k| k.id == old.id && k.disabled));
    assert!(s.iam.accepts(&new_value));
    let meta = s.meta("jp");
    assert_eq!(meta["previous"]["retired_how"], "disabled");
    assert_eq!(meta["previous"]["retired_at"], "2026-11-21T12:00:01Z");
    assert_eq!(meta["active"]["iam_key_id"], new.id.as_str());
    assert_eq!(git(&s.repo, &["status", "--porcelain"]), "", "the record is committed");

    let after = pull(&s.iam, &old_value, &[]);
    after.code(1);
    assert_eq!(classes(&after)[TOKEN_HOST], "bad_credentials");
    s.no_leak(&after);
    pull(&s.iam, &new_value, &[]).code(0);

    // verify --iam-check names the retired key's class and asks no registry.
    let host = fault_host("iamcheck");
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let cat = catalog(
        tmp.path(),
        &[("t", std::slice::from_ref(&host), "armada-master/alpine:latest")],
    );
    let checked = verify_cmd(fx, &[(host.as_str(), fx.fault)])
        .arg("--regions")
        .arg(&cat)
        .args(["--api-key-env", "REKEY_TEST_KEY", "--iam-check", "--output", "json"])
        .args(["--iam-url", &s.iam.url(), "--iam-api-key-env", ADMIN_ENV])
        .env(ADMIN_ENV, &s.admin)
        .env("REKEY_TEST_KEY", &old_value)
        .run();
    checked.code(1);
    assert_eq!(checked.json()["iam"]["class"], "disabled", "{}", checked.stdout);
    assert!(seen(&host).is_empty(), "no registry request after IAM refused the key");
    s.no_leak(&checked);

    let again = s.retire(LATE).run();
    again.code(0).stdout_has("the previous key was retired at");
    s.no_leak(&again);

    // A rollback to the retired key is refused.
    rekey()
        .args(["rollback", "--repo"])
        .arg(&s.repo)
        .args(["--region", "jp"])
        .run()
        .code(2)
        .stderr_has("disabled in IAM");
}

#[test]
fn after_a_rollback_the_newer_key_keeps_its_grace_period_from_the_rollback() {
    let mut s = Setup::new();
    let (old, new) = s.rotated("jp");
    // The old key was first published long ago.
    let mut meta = s.meta("jp");
    meta["previous"]["rotated_at"] = "2026-11-01T00:00:00Z".into();
    std::fs::write(s.meta_path("jp"), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    git(
        &s.repo,
        &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "old"],
    );
    // Roll back now: the old key is served again, the new one (served until
    // now, so clusters still hold it) becomes previous.
    rekey()
        .args(["rollback", "--repo"])
        .arg(&s.repo)
        .args(["--region", "jp"])
        .args(["--commit"])
        .run()
        .code(0);
    assert_eq!(s.meta("jp")["previous"]["iam_key_id"], new.id.as_str());
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let soon = fmt(chrono::Utc::now() + chrono::Duration::hours(2));
    let run = s.retire(&soon).run();
    run.code(0).stdout_has("in the grace period until");
    s.no_leak(&run);
    assert!(
        s.key_calls().is_empty(),
        "the key served until the rollback is not retired at once"
    );
    assert!(s.iam.keys().iter().all(|k| !k.disabled && !k.deleted));
    // Once the grace period from the rollback is over, it goes.
    let later = fmt(chrono::Utc::now() + chrono::Duration::hours(25));
    s.retire(&later).run().code(0);
    assert!(s.iam.keys().iter().any(|k| k.id == new.id && k.disabled));
    assert!(s.iam.keys().iter().any(|k| k.id == old.id && !k.disabled));
}

#[test]
fn the_grace_period_runs_from_the_merge_not_from_sealing() {
    let mut s = Setup::new();
    let (old_c, old) = s.key("jp-old");
    let (new_c, new) = s.key("jp-new");
    s.seal("jp", &old_c);
    s.record_ids_at("jp", &old, None, "2026-11-01T00:00:00Z");
    s.commit_at("2026-11-01T00:00:00Z", &["add", "-A"]);
    s.commit_at("2026-11-01T00:00:00Z", &["commit", "-qm", "first key"]);
    // The rotation is sealed on a branch on the 20th (rotated_at) …
    s.commit_at(PUBLISHED, &["checkout", "-qb", "rotate"]);
    s.seal("jp", &new_c);
    s.record_ids_at("jp", &new, Some(&old), PUBLISHED);
    // … and, sealed but not committed, is not published.
    let uncommitted = s.retire("2026-11-30T00:00:00Z").arg("--dry-run").run();
    uncommitted
        .code(0)
        .stdout_has("not committed on the checked-out branch");
    s.commit_at(PUBLISHED, &["add", "-A"]);
    s.commit_at(PUBLISHED, &["commit", "-qm", "rotate jp"]);
    // The pull request is merged three days later.
    s.commit_at(PUBLISHED, &["checkout", "-q", "main"]);
    s.commit_at(
        "2026-11-23T12:00:00Z",
        &["merge", "-q", "--no-ff", "-m", "Merge rotate", "rotate"],
    );
    let early = s.retire("2026-11-23T14:00:00Z").run();
    early
        .code(0)
        .stdout_has("in the grace period until 2026-11-24T12:00:00Z");
    s.no_leak(&early);
    assert!(
        s.key_calls().is_empty(),
        "the merge, not the sealing, starts the grace period"
    );
    let late = s.retire("2026-11-24T13:00:00Z").args(["--output", "json"]).run();
    late.code(0);
    s.no_leak(&late);
    assert_eq!(late.json()["regions"][0]["outcome"], "retired", "{}", late.stdout);
    assert!(s.iam.keys().iter().any(|k| k.id == old.id && k.disabled));
    assert!(s.iam.accepts(&new_c.key));
}

#[test]
fn a_key_still_current_elsewhere_is_never_retired() {
    let mut s = Setup::new();
    let (old_c, old) = s.key("shared-old");
    let (new_c, new) = s.key("jp-new");
    s.seal("jp", &old_c);
    s.seal("jp", &new_c);
    s.record_ids("jp", &new, Some(&old));
    s.seal("au", &old_c);
    s.record_ids("au", &old, None);
    let run = s.retire(LATE).run();
    run.code(1).stdout_has("still current in au");
    s.no_leak(&run);
    let doc = s.retire(LATE).args(["--output", "json"]).run().json();
    let jp = doc["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "jp")
        .unwrap()
        .clone();
    assert_eq!(jp["outcome"], "held", "{doc}");
    assert_eq!(jp["reason"], "still_current");
    assert_eq!(jp["current_in"], "au");
    assert_eq!(jp["region"], "jp");
    assert_eq!(jp["attention"], true);
    assert_eq!(doc["ok"], false);
    s.retire(LATE)
        .args(["--region", "de"])
        .run()
        .code(2)
        .stderr_has("no secret in the repo for region de");
    assert!(s.key_calls().is_empty());
    assert!(s.iam.accepts(&old_c.key));
}

#[test]
fn a_branch_that_cannot_take_the_commit_is_refused_before_iam_is_asked() {
    let mut s = Setup::new();
    let (old, _) = s.rotated("jp");
    // `retire-x` has a commit HEAD does not have: committing there would drop it.
    git(&s.repo, &["checkout", "-qb", "retire-x"]);
    git(
        &s.repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "theirs",
        ],
    );
    git(&s.repo, &["checkout", "-q", "main"]);
    let head = git(&s.repo, &["rev-parse", "HEAD"]);
    let meta = std::fs::read(s.meta_path("jp")).unwrap();
    let run = s.retire(LATE).args(["--commit", "--branch", "retire-x"]).run();
    run.code(2).stderr_has("--branch").stderr_has("would drop them");
    s.no_leak(&run);
    assert!(s.key_calls().is_empty(), "IAM was asked before the branch was checked");
    assert!(s.iam.keys().iter().any(|k| k.id == old.id && !k.disabled && !k.deleted));
    assert_eq!(std::fs::read(s.meta_path("jp")).unwrap(), meta, "nothing recorded");
    assert_eq!(git(&s.repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&s.repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&s.repo, &["symbolic-ref", "--short", "HEAD"]).trim(), "main");
    // A branch it can fast-forward takes the record.
    s.retire(LATE).args(["--commit", "--branch", "retire-y"]).run().code(0);
    assert_eq!(git(&s.repo, &["symbolic-ref", "--short", "HEAD"]).trim(), "retire-y");
    assert!(s.iam.keys().iter().any(|k| k.id == old.id && k.disabled));
}

#[test]
fn iam_429_and_503_are_retried_and_delete_deletes() {
    let mut s = Setup::new();
    let (old, _) = s.rotated("jp");
    s.iam.fail_next([Fault::RetryAfter(429, 0), Fault::Status(503)]);
    let run = s.retire(LATE).arg("--delete").run();
    run.code(0).stdout_has("1 key retired");
    s.no_leak(&run);
    assert!(s.iam.keys().iter().any(|k| k.id == old.id && k.deleted));
    assert_eq!(s.meta("jp")["previous"]["retired_how"], "deleted");
}

#[test]
fn iam_that_keeps_failing_is_exit_2_and_nothing_is_recorded() {
    let mut s = Setup::new();
    s.rotated("jp");
    s.iam.fail_next(std::iter::repeat_n(Fault::Status(503), 12));
    let run = s.retire(LATE).args(["--iam-timeout", "3s"]).run();
    run.code(2);
    s.no_leak(&run);
    assert!(s.meta("jp")["previous"].get("retired_at").is_none());
}

#[test]
fn a_grace_period_under_an_hour_and_a_missing_admin_key_are_refused() {
    let mut s = Setup::new();
    s.rotated("jp");
    s.retire(LATE)
        .args(["--after", "30m"])
        .run()
        .code(2)
        .stderr_has("shorter than IAM's one-hour token lifetime");
    rekey()
        .args(["keys", "retire", "--repo"])
        .arg(&s.repo)
        .args(["--iam-url", &s.iam.url()])
        .run()
        .code(2)
        .stderr_has("needs the IAM admin key");
    s.retire("yesterday").run().code(2).stderr_has("--at");
    assert!(s.key_calls().is_empty());
}

#[test]
fn an_unhealthy_gate_retires_nothing() {
    let mut s = Setup::new();
    let (old, _) = s.rotated("jp");
    let p = prom();
    let run = s
        .retire(LATE)
        .args([
            "--health-gate",
            "--prometheus",
            &p.url,
            "--health-at",
            &p.at(Scenario::JwtFailing),
        ])
        .run();
    run.code(1).stdout_has("health gate: degraded").stdout_has("refused");
    s.no_leak(&run);
    assert!(s.key_calls().is_empty());
    assert!(!s.iam.keys().iter().any(|k| k.id == old.id && k.disabled));
    let ok = s
        .retire(LATE)
        .args([
            "--health-gate",
            "--prometheus",
            &p.url,
            "--health-at",
            &p.at(Scenario::Healthy),
        ])
        .run();
    ok.code(0)
        .stdout_has("health gate: healthy")
        .stdout_has("1 key retired");
}

#[test]
fn verify_iam_check_reports_deleted_keys_by_class() {
    let (iam, admin) = Iam::start();
    let gone = Canary::new("deleted-key");
    iam.add_key("iks-registry-test-gone", &gone.key);
    iam.edit(&gone.key, |k| k.deleted = true);
    let run = {
        let fx = &*FIXTURE;
        let tmp = tempdir();
        let cat = catalog(
            tmp.path(),
            &[("t", &[TOKEN_HOST.to_owned()], "armada-master/alpine:latest")],
        );
        verify_cmd(fx, &[(TOKEN_HOST, fx.token), (AUTH_HOST, iam.registry_auth(fx))])
            .arg("--regions")
            .arg(&cat)
            .args(["--api-key-env", "REKEY_TEST_KEY", "--iam-url", &iam.url()])
            .args(["--iam-api-key-env", ADMIN_ENV])
            .env(ADMIN_ENV, &admin)
            .env("REKEY_TEST_KEY", &gone.key)
            .run()
    };
    run.code(1).stdout_has("invalid").stderr_has("no registry was asked");
    gone.assert_not_in_run(&run);
    Canary::with_value(&admin).assert_not_in_run(&run);
    // Unreachable IAM: exit 2, still no registry asked.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let cat = catalog(
        tmp.path(),
        &[("t", &[TOKEN_HOST.to_owned()], "armada-master/alpine:latest")],
    );
    verify_cmd(fx, &[(TOKEN_HOST, fx.token), (AUTH_HOST, fx.auth)])
        .arg("--regions")
        .arg(&cat)
        .args(["--api-key-env", "REKEY_TEST_KEY", "--iam-check", "--iam-url", &closed])
        .args(["--iam-timeout", "2s"])
        .env("REKEY_TEST_KEY", &gone.key)
        .run()
        .code(2)
        .stdout_has("iam_unreachable");
}

#[test]
fn audit_iam_reports_states_creation_dates_and_pending_retirements() {
    let mut s = Setup::new();
    let (old, new) = s.rotated("jp");
    let audit = |s: &Setup| {
        rekey()
            .args(["audit", "--repo"])
            .arg(&s.repo)
            .args(["--iam", "--iam-url", &s.iam.url(), "--iam-api-key-env", ADMIN_ENV])
            .env(ADMIN_ENV, &s.admin)
    };
    let run = audit(&s).args(["--output", "json"]).run();
    run.code(0);
    s.no_leak(&run);
    let doc = run.json();
    let keys = doc["iam"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{doc}");
    let by_id = |id: &str| keys.iter().find(|k| k["iam_key_id"] == id).unwrap().clone();
    assert_eq!(by_id(&new.id)["state"], "active");
    assert_eq!(by_id(&new.id)["version"], "current");
    assert_eq!(by_id(&new.id)["created_at"], "2026-08-20T09:30:00Z");
    assert_eq!(by_id(&old.id)["version"], "previous");
    let pending = doc["iam"]["pending_retirement"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{doc}");
    assert_eq!(pending[0]["iam_key_id"], old.id.as_str());
    assert_eq!(pending[0]["due"], true);

    s.retire(LATE).run().code(0);
    let text = audit(&s).run();
    text.code(0);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("disabled") && l.contains(&old.id)),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("pending retirement"), "{}", text.stdout);
    s.no_leak(&text);

    // The current key deleted behind rekey's back: the audit fails.
    let current_value = s.canaries[1].key.clone();
    s.iam.edit(&current_value, |k| k.deleted = true);
    let bad = audit(&s).run();
    bad.code(1).stdout_has("the current key is deleted in IAM");
    s.no_leak(&bad);
    // Without the admin key, --iam cannot look keys up.
    rekey()
        .args(["audit", "--repo"])
        .arg(&s.repo)
        .args(["--iam", "--iam-url", &s.iam.url()])
        .run()
        .code(2)
        .stderr_has("needs the IAM admin key");
}

#[test]
fn a_locked_key_iam_refuses_to_delete_is_exit_1_and_not_recorded() {
    let mut s = Setup::new();
    s.rotated("jp");
    let old_value = s.canaries[0].key.clone();
    s.iam.edit(&old_value, |k| k.locked = true);
    let run = s.retire(LATE).arg("--delete").run();
    run.code(1).stdout_has("failed").stdout_has("BXNIM0525E");
    s.no_leak(&run);
    assert!(s.iam.accepts(&old_value), "IAM kept the locked key");
    assert!(s.meta("jp")["previous"].get("retired_at").is_none());
}

#[test]
fn the_rotation_workflow_retires_daily_with_the_admin_key_by_variable_name() {
    let text = std::fs::read_to_string(repo_root().join("ci/github/rotation.yml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let crons: Vec<&str> = doc["on"]["schedule"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s["cron"].as_str().unwrap())
        .collect();
    let job = &doc["jobs"]["retire"];
    let cond = job["if"].as_str().unwrap();
    assert!(crons.iter().any(|c| cond.contains(c)), "{cond} {crons:?}");
    let steps = job["steps"].as_sequence().unwrap();
    let step = steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("rekey keys retire")))
        .expect("a step running rekey keys retire");
    let run = step["run"].as_str().unwrap();
    assert!(run.contains("--iam-api-key-env REKEY_IAM_API_KEY"), "{run}");
    assert!(
        !run.contains("secrets."),
        "secrets reach rekey only through the environment: {run}"
    );
    assert_eq!(
        step["env"]["REKEY_IAM_API_KEY"].as_str(),
        Some("${{ secrets.REKEY_IAM_API_KEY }}")
    );
    let install = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("cargo install"))
        .unwrap();
    assert!(install.contains("--rev \"$REKEY_REF\"") && !install.contains("--branch"));
}

#[test]
fn verify_iam_check_lets_a_locked_key_pull() {
    // Locking protects a key from changes and deletion; it still authenticates.
    let (iam, admin) = Iam::start();
    let locked = Canary::new("locked-key");
    iam.add_key("iks-registry-test-locked", &locked.key);
    iam.edit(&locked.key, |k| k.locked = true);
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let cat = catalog(
        tmp.path(),
        &[("t", &[TOKEN_HOST.to_owned()], "armada-master/alpine:latest")],
    );
    let run = verify_cmd(fx, &[(TOKEN_HOST, fx.token), (AUTH_HOST, iam.registry_auth(fx))])
        .arg("--regions")
        .arg(&cat)
        .args([
            "--api-key-env",
            "REKEY_TEST_KEY",
            "--iam-check",
            "--iam-url",
            &iam.url(),
        ])
        .args(["--iam-api-key-env", ADMIN_ENV])
        .env(ADMIN_ENV, &admin)
        .env("REKEY_TEST_KEY", &locked.key)
        .run();
    run.code(0).stderr_has("IAM accepts key");
    locked.assert_not_in_run(&run);
    Canary::with_value(&admin).assert_not_in_run(&run);
}

#[test]
fn the_shipped_retire_job_checks_out_the_whole_history() {
    // The grace period runs from the commit that brought a version to main:
    // a shallow clone would show every version as published at its tip.
    let text = std::fs::read_to_string(repo_root().join("ci/github/rotation.yml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let steps = doc["jobs"]["retire"]["steps"].as_sequence().unwrap();
    let checkout = steps
        .iter()
        .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/checkout@")))
        .unwrap();
    assert_eq!(checkout["with"]["fetch-depth"].as_u64(), Some(0), "{checkout:?}");
}
