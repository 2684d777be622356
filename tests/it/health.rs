//! `rekey health`: the verdicts an on-call engineer would reach, from a real
//! Prometheus over backfilled scenarios (see `health_support.rs`), and every
//! way the answer cannot be had, which is an error (exit 2), never "healthy".

use crate::health_support::{Scenario, prom};
use crate::support::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

const INCIDENT: &str = "The creation and deletion of OpenShift clusters is currently impacted";

fn health(s: Scenario) -> Rekey {
    let p = prom();
    rekey()
        .arg("health")
        .arg("--prometheus")
        .arg(&p.url)
        .arg("--at")
        .arg(p.at(s))
}

fn json_run(s: Scenario) -> (Run, Value) {
    let run = health(s).args(["--output", "json"]).run();
    let json = run.json();
    (run, json)
}

fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {report}"))
}

fn find<'a>(items: &'a Value, key: &str, value: &str) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {items}"))
}

/// Returns a port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn healthy_scenario_is_healthy_and_exits_0() {
    let (run, report) = json_run(Scenario::Healthy);
    run.code(0);
    assert_eq!(report["verdict"], "healthy");
    let auth = rule(&report, "redhat-auth");
    assert_eq!(auth["status"], "healthy");
    let jwt = find(&auth["methods"], "method", "jwt");
    // 9 failures within 15 minutes stay below the alert's 10.
    assert_eq!(jwt["failed"], 9);
    assert_eq!(jwt["peak_failed"], 9);
    assert_eq!(jwt["failing"], false);
    assert_eq!(jwt["success"], 60);
    let iam = rule(&report, "iam-5xx");
    assert_eq!(iam["status"], "healthy");
    // etcd.Put answers 503 all hour, but it is not an IAM call.
    assert!(!iam.to_string().contains("etcd.Put"), "{iam}");
    assert_eq!(rule(&report, "auth-key-refresh")["status"], "healthy");
    assert_eq!(rule(&report, "auth-key-refresh")["groups"], serde_json::json!([]));

    let text = health(Scenario::Healthy).run();
    text.code(0).stdout_has("verdict: healthy");
}

#[test]
fn jwt_failing_with_token_ok_is_degraded_without_an_incident() {
    let (run, report) = json_run(Scenario::JwtFailing);
    run.code(1);
    assert_eq!(report["verdict"], "degraded");
    let auth = rule(&report, "redhat-auth");
    assert_eq!(auth["status"], "degraded");
    assert_eq!(auth["incident"], Value::Null);
    assert_eq!(find(&auth["methods"], "method", "jwt")["failing"], true);
    assert_eq!(find(&auth["methods"], "method", "jwt")["failed"], 60);
    let token = find(&auth["methods"], "method", "token");
    assert_eq!(token["failing"], false);
    assert_eq!(token["success"], 60);
    assert!(auth["summary"].as_str().unwrap().contains("no incident"));
    assert_eq!(rule(&report, "iam-5xx")["status"], "healthy");

    let text = health(Scenario::JwtFailing).run();
    text.code(1).stdout_has("DEGRADED").stdout_has("verdict: degraded");
    assert!(!text.stdout.contains(INCIDENT), "{}", text.stdout);
}

#[test]
fn jwt_and_token_failing_is_an_outage_with_the_incident_title() {
    let (run, report) = json_run(Scenario::BothFailing);
    run.code(1);
    assert_eq!(report["verdict"], "outage");
    let auth = rule(&report, "redhat-auth");
    assert_eq!(auth["status"], "outage");
    assert_eq!(auth["incident"], INCIDENT);
    assert_eq!(find(&auth["methods"], "method", "token")["failing"], true);

    let text = health(Scenario::BothFailing).run();
    text.code(1)
        .stdout_has(&format!("incident: {INCIDENT}"))
        .stdout_has("verdict: OUTAGE: open an incident");
}

/// Asserts the iam-5xx rule escalates exactly once: to `pager` and the
/// #iam-issues channel.
#[track_caller]
fn assert_one_iam_escalation(iam: &Value, pager: &str) {
    let escalations = iam["escalations"].as_array().unwrap();
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    let text = escalations[0].as_str().unwrap();
    assert!(text.contains(pager), "{text}");
    assert!(text.contains("#iam-issues"), "{text}");
}

#[test]
fn iam_identity_5xx_escalate_to_the_identity_team() {
    let (run, report) = json_run(Scenario::IamIdentity5xx);
    run.code(1);
    assert_eq!(report["verdict"], "degraded");
    let iam = rule(&report, "iam-5xx");
    assert_eq!(iam["status"], "degraded");
    let identity = find(&iam["classes"], "class", "identity");
    assert_eq!(identity["failing"], true);
    assert_eq!(identity["count"], 13);
    let methods: Vec<&str> = identity["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["iam.IsUserAPIKeyNotFound", "iam.NewUserAPIKey"]);
    let access = find(&iam["classes"], "class", "access-management");
    assert_eq!(access["failing"], false);
    assert_eq!(access["count"], 0);
    assert_one_iam_escalation(iam, "PagerDuty \"Duty Manager - Germany - Policy\"");
    assert_eq!(rule(&report, "redhat-auth")["status"], "healthy");
}

#[test]
fn iam_access_management_5xx_escalate_to_the_access_management_team() {
    let (run, report) = json_run(Scenario::IamAccess5xx);
    run.code(1);
    let iam = rule(&report, "iam-5xx");
    assert_eq!(iam["status"], "degraded");
    assert_eq!(find(&iam["classes"], "class", "identity")["failing"], false);
    let access = find(&iam["classes"], "class", "access-management");
    assert_eq!(access["failing"], true);
    assert_eq!(access["count"], 10);
    assert_one_iam_escalation(iam, "PagerDuty \"IAM - Access Management - Sev1\"");

    let text = health(Scenario::IamAccess5xx).run();
    text.code(1).stdout_has("escalate: access-management: ");
}

#[test]
fn refresh_burst_of_4_in_3m_is_reported_and_3_in_3m_is_not() {
    let (run, report) = json_run(Scenario::RefreshBurst);
    run.code(1);
    let refresh = rule(&report, "auth-key-refresh");
    assert_eq!(refresh["status"], "degraded");
    let groups = refresh["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "the index without failures is left out: {groups:?}");
    let burst = groups.iter().find(|g| g["labels"]["index_name"] == "logs-eu").unwrap();
    assert_eq!(burst["labels"]["account_id"], "a1");
    assert_eq!(burst["burst"], true);
    assert_eq!(burst["peak"], 4);
    let calm = groups
        .iter()
        .find(|g| g["labels"]["index_name"] == "metrics-us")
        .unwrap();
    // 4 failures in the hour, but never 4 within 3 minutes.
    assert_eq!(calm["total"], 4);
    assert_eq!(calm["peak"], 3);
    assert_eq!(calm["burst"], false);
    assert_eq!(refresh["escalations"].as_array().unwrap().len(), 1);

    let text = health(Scenario::RefreshBurst).run();
    text.code(1)
        .stdout_has("account_id=a1 index_name=logs-eu (4 within 3m)");
    assert!(!text.stdout.contains("index_name=metrics-us ("), "{}", text.stdout);
}

#[test]
fn empty_results_are_no_data_never_healthy() {
    let tmp = tempdir();
    let saved = tmp.path().join("saved");
    let run = health(Scenario::Empty).arg("--save-responses").arg(&saved).run();
    run.code(1)
        .stdout_has(
            "redhat-auth       NO_DATA   no series of `armada_kubx_deployer_redhat_auth` in the 1h window ending at ",
        )
        .stdout_has("iam-5xx           NO_DATA   no series of `api_response_codes`")
        // The refresh counter only exists once an index failed: absent means no failures.
        .stdout_has(
            "auth-key-refresh  HEALTHY   no series of `auth_key_refresh_failures_total` in the 1h window: no failures",
        )
        .stdout_has("verdict: no_data");
    assert!(run.stdout.ends_with('\n'), "{:?}", run.stdout);
    assert_eq!(snapshot(&saved).len(), 10, "every answer is saved");
    let (run, report) = json_run(Scenario::Empty);
    run.code(1);
    assert_eq!(report["verdict"], "no_data");
    assert_eq!(rule(&report, "redhat-auth")["status"], "no_data");
    assert_eq!(rule(&report, "auth-key-refresh")["status"], "healthy");
}

#[test]
fn a_missing_metric_beside_failing_ones_hides_no_verdict() {
    let (run, report) = json_run(Scenario::MissingMetric);
    run.code(1);
    assert_eq!(report["verdict"], "degraded");
    assert_eq!(rule(&report, "redhat-auth")["status"], "no_data");
    let iam = rule(&report, "iam-5xx");
    assert_eq!(iam["status"], "degraded");
    assert_eq!(find(&iam["classes"], "class", "identity")["failing"], true);
    assert_eq!(rule(&report, "auth-key-refresh")["status"], "healthy");
    let text = health(Scenario::MissingMetric).run();
    text.code(1)
        .stdout_has("redhat-auth       NO_DATA")
        .stdout_has("iam-5xx           DEGRADED")
        .stdout_has("Duty Manager - Germany - Policy")
        .stdout_has("verdict: degraded");
}

#[test]
fn a_rule_that_allows_absence_makes_no_data_healthy() {
    let rules = default_rules().replacen("when_absent = \"no_data\"", "when_absent = \"healthy\"", 2);
    let (_tmp, path) = with_rules(&rules);
    let run = health(Scenario::Empty).arg("--rules").arg(&path).run();
    run.code(0).stdout_has("verdict: healthy");
    let (_tmp, path) = with_rules(&default_rules().replacen("when_absent = \"no_data\"", "when_absent = \"maybe\"", 1));
    rekey()
        .args(["health", "--prometheus", &prom().url, "--rules"])
        .arg(&path)
        .run()
        .code(2)
        .stderr_has("unknown variant `maybe`");
}

#[test]
fn lowercase_iam_methods_are_classified_as_the_runbook_does() {
    let (run, report) = json_run(Scenario::IamLowercase);
    run.code(1);
    let iam = rule(&report, "iam-5xx");
    let identity = find(&iam["classes"], "class", "identity");
    assert_eq!(identity["failing"], true, "{iam}");
    assert_eq!(identity["methods"][0]["value"], "iam.newuserapikey");
    assert!(
        !iam["classes"].to_string().contains("unclassified"),
        "nothing is unclassified: {iam}"
    );
}

#[test]
fn token_actively_failing_with_few_failures_is_an_outage() {
    let (run, report) = json_run(Scenario::TokenActivelyFailing);
    run.code(1);
    assert_eq!(report["verdict"], "outage");
    let auth = rule(&report, "redhat-auth");
    assert_eq!(auth["incident"], INCIDENT);
    let token = find(&auth["methods"], "method", "token");
    assert_eq!(token["failed"], 4, "far below the alert's 10");
    assert_eq!(token["actively_failing"], true);
    assert_eq!(token["failures"], "ongoing");
    assert!(
        token["failures_started"].as_str().unwrap().ends_with(":56:00Z"),
        "{token}"
    );
    let escalations = auth["escalations"].as_array().unwrap();
    assert!(
        escalations[0]
            .as_str()
            .unwrap()
            .contains("deploy squad's PagerDuty escalation policy"),
        "{escalations:?}"
    );
    assert!(escalations[0].as_str().unwrap().contains(INCIDENT), "{escalations:?}");
}

#[test]
fn failures_that_stopped_50_minutes_ago_are_reported_and_healthy() {
    let (run, report) = json_run(Scenario::FailuresStopped);
    run.code(0);
    let auth = rule(&report, "redhat-auth");
    assert_eq!(auth["status"], "healthy");
    for method in ["jwt", "token"] {
        let m = find(&auth["methods"], "method", method);
        assert_eq!(m["failures"], "stopped", "{m}");
        assert_eq!(m["actively_failing"], false);
        assert_eq!(m["failed"], 11);
        // The timeline covers (at - 1h, at]: the failure at the window's very start is outside it.
        assert!(m["failures_started"].as_str().unwrap().ends_with(":01:00Z"), "{m}");
        assert!(m["last_failure"].as_str().unwrap().ends_with(":10:00Z"), "{m}");
    }
    let text = health(Scenario::FailuresStopped).run();
    text.code(0)
        .stdout_has("stopped (last ")
        .stdout_has("50m before --at")
        .stdout_has("0 failures within the last 15m (alert at 10), peak 22");
}

#[test]
fn unreachable_prometheus_is_an_error_never_healthy() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = rekey().args(["health", "--prometheus", &url]).run();
    run.code(2)
        .stderr_has("error: query `redhat-auth.presence` could not be answered")
        .stderr_has(&format!("  caused by: requesting {url}/api/v1/query"));
    assert!(run.stdout.is_empty());
}

#[test]
fn a_server_that_is_not_prometheus_is_an_error() {
    let url = format!("{}/not-prometheus", prom().url);
    let run = rekey().args(["health", "--prometheus", &url]).run();
    run.code(2)
        .stderr_has("query `redhat-auth.presence` could not be answered")
        .stderr_has("not found (HTTP 404): is this Prometheus?");
}

#[test]
fn bad_prometheus_urls_are_rejected() {
    let run = rekey().args(["health", "--prometheus", "ftp://127.0.0.1:9090"]).run();
    run.code(2)
        .stderr_has("error: --prometheus: `ftp://127.0.0.1:9090` is not an http or https URL");
    let run = rekey().args(["health", "--prometheus", "127.0.0.1:9090"]).run();
    run.code(2)
        .stderr_has("error: --prometheus: `127.0.0.1:9090` is not a URL (relative URL without a base)");
    let run = rekey().args(["health", "--prometheus", "not a url"]).run();
    run.code(2).stderr_has("error: --prometheus: `not a url` is not a URL");
    let run = rekey().arg("health").run();
    run.code(2)
        .stderr_has("error: no Prometheus given: use --prometheus URL");
}

#[test]
fn credentials_in_the_url_are_rejected_without_showing_them() {
    let canary = Canary::new("health-url");
    let url = format!("http://ops:{}@127.0.0.1:{}", canary.key, closed_port());
    let run = rekey().args(["health", "--prometheus", &url]).run();
    run.code(2).stderr_has("the URL carries credentials");
    canary.assert_not_in_run(&run);
}

#[test]
fn the_bearer_token_never_shows_in_output_or_logs() {
    let tmp = tempdir();
    let canary = Canary::new("health-token");
    let token = write(tmp.path(), "token", format!("{}\n", canary.key));
    // A real Prometheus ignores the header: the gate still works.
    let run = health(Scenario::JwtFailing)
        .arg("--token-file")
        .arg(&token)
        .env("REKEY_LOG", "trace")
        .run();
    run.code(1).stdout_has("verdict: degraded");
    canary.assert_not_in_run(&run);
    // Nor in the error of an unreachable server, from a file or the environment.
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = rekey()
        .args(["health", "-vv", "--prometheus", &url, "--token-file"])
        .arg(&token)
        .run();
    run.code(2).stderr_has("could not be answered");
    canary.assert_not_in_run(&run);
    let run = rekey()
        .args(["health", "--prometheus", &url, "--token-env", "HEALTH_TOKEN"])
        .env("HEALTH_TOKEN", &canary.key)
        .run();
    run.code(2);
    canary.assert_not_in_run(&run);
    canary.assert_not_in_tree(tmp.path(), &[token]);
}

#[test]
fn a_bearer_token_with_whitespace_is_rejected() {
    let tmp = tempdir();
    let canary = Canary::new("health-ws");
    let token = write(tmp.path(), "token", format!("{} x\n", canary.key));
    let run = rekey()
        .args(["health", "--prometheus", &prom().url, "--token-file"])
        .arg(&token)
        .run();
    run.code(2)
        .stderr_has(&format!(
            "error: bearer token from file {} is not usable",
            token.display()
        ))
        .stderr_has("caused by: the key contains whitespace or a control character");
    canary.assert_not_in_run(&run);
}

#[test]
fn bad_times_and_windows_are_rejected() {
    let url = prom().url.clone();
    let run = rekey()
        .args(["health", "--prometheus", &url, "--at", "yesterday"])
        .run();
    run.code(2)
        .stderr_has("error: --at: `yesterday` is not an RFC 3339 time");
    let run = rekey()
        .args(["health", "--prometheus", &url, "--window", "1 fortnight"])
        .run();
    run.code(2)
        .stderr_has("--window")
        .stderr_has("`1 fortnight` is not a duration");
    let run = rekey()
        .args(["health", "--prometheus", &url, "--window", "300000y"])
        .run();
    run.code(2)
        .stderr_has("error: --window: `300000y` is longer than the limit of 366 days");
    let run = rekey().args(["health", "--prometheus", &url, "--window", "5m"]).run();
    run.code(2)
        .stderr_has("error: --window 5m is shorter than rule `redhat-auth`'s `within` (15m)");
}

#[test]
fn junit_output_is_refused() {
    let run = rekey()
        .args(["health", "--output", "junit", "--prometheus", "http://127.0.0.1:1"])
        .run();
    run.code(2)
        .stderr_has("`rekey health` does not support --output junit; use one of: text, json");
}

// --- rules are data ---------------------------------------------------------

fn default_rules() -> String {
    std::fs::read_to_string(repo_root().join("rules/health.toml")).unwrap()
}

fn with_rules(rules: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir();
    let path = write(tmp.path(), "rules.toml", rules);
    (tmp, path)
}

#[test]
fn a_rules_file_changes_the_verdict() {
    // With a threshold of 3, the index with 3 failures within 3 minutes bursts too.
    let (_tmp, rules) = with_rules(&default_rules().replace("threshold = 4", "threshold = 3"));
    let run = health(Scenario::RefreshBurst)
        .arg("--rules")
        .arg(&rules)
        .args(["--output", "json"])
        .run();
    run.code(1);
    let report = run.json();
    let groups = rule(&report, "auth-key-refresh")["groups"].as_array().unwrap().clone();
    assert!(groups.iter().all(|g| g["burst"] == true), "{groups:?}");
}

fn rules_error(rules: &str) -> (Run, PathBuf) {
    let (tmp, path) = with_rules(rules);
    let run = rekey()
        .args(["health", "--prometheus", &prom().url, "--rules"])
        .arg(&path)
        .run();
    drop(tmp);
    (run, path)
}

/// The shipped rules with `from` replaced by `to` are refused (exit 2)
/// with `error: <rules file>: <message>`.
#[track_caller]
fn edited_rules_are_rejected(from: &str, to: &str, message: &str) {
    let rules = default_rules();
    assert!(rules.contains(from), "the shipped rules lack {from:?}");
    let (run, path) = rules_error(&rules.replace(from, to));
    run.code(2).stderr_has(&format!("error: {}: {message}", path.display()));
}

#[test]
fn a_rules_file_with_a_syntax_error_is_rejected() {
    let (run, path) = rules_error("[[rule]\nname = \"x\"\n");
    run.code(2).stderr_has(&format!("error: {}: ", path.display()));
    assert!(run.stdout.is_empty());
}

#[test]
fn a_rules_file_with_an_unknown_kind_is_rejected() {
    edited_rules_are_rejected(
        "kind = \"burst\"",
        "kind = \"spike\"",
        "rule 3 (`auth-key-refresh`): field `kind`: `spike` is not a rule kind; use one of: primary-fallback, classified, burst",
    );
}

#[test]
fn a_rules_file_with_a_bad_class_pattern_is_rejected() {
    edited_rules_are_rejected(
        "NewUserAPIKey.*|",
        "NewUserAPIKey.*|(",
        "rule 2 (`iam-5xx`): field `class[0].pattern`: not a regular expression",
    );
}

#[test]
fn a_rules_file_missing_a_field_is_rejected() {
    edited_rules_are_rejected(
        "incident_title = ",
        "# incident_title = ",
        "rule 1 (`redhat-auth`): field `incident_title`: is required",
    );
}

#[test]
fn a_rules_file_with_an_unknown_field_is_rejected() {
    let (run, path) = rules_error(&default_rules().replace("within = \"3m\"", "within = \"3m\"\nseverity = 1"));
    run.code(2)
        .stderr_has(&format!("error: {}: ", path.display()))
        .stderr_has("unknown field `severity`");
}

#[test]
fn a_missing_rules_file_is_an_error() {
    let run = rekey()
        .args([
            "health",
            "--prometheus",
            &prom().url,
            "--rules",
            "/nonexistent/rules.toml",
        ])
        .run();
    run.code(2)
        .stderr_has("error: reading rules /nonexistent/rules.toml")
        .stderr_has("caused by: No such file or directory");
}

// --- saved responses ----------------------------------------------------------

/// Saves the responses of a live evaluation of `s` into `dir`.
fn save(s: Scenario, dir: &Path) -> Vec<PathBuf> {
    health(s).arg("--save-responses").arg(dir).run().code(1);
    let mut files: Vec<PathBuf> = snapshot(dir).into_keys().map(|p| dir.join(p)).collect();
    files.sort();
    files
}

fn from_files(s: Scenario, files: &[PathBuf]) -> Run {
    rekey()
        .args(["health", "--at", &prom().at(s), "--from-file"])
        .args(files)
        .run()
}

#[test]
fn saved_responses_give_the_same_verdict() {
    let tmp = tempdir();
    let files = save(Scenario::BothFailing, tmp.path());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(names.contains(&"redhat-auth.peak.json".to_owned()), "{names:?}");
    assert!(files.iter().all(|f| mode(f) == 0o644));
    let live = health(Scenario::BothFailing).args(["--output", "json"]).run().json();
    let run = rekey()
        .args([
            "health",
            "--output",
            "json",
            "--at",
            &prom().at(Scenario::BothFailing),
            "--from-file",
        ])
        .args(&files)
        .run();
    run.code(1);
    assert_eq!(run.json(), live);
}

fn replace_saved(files: &[PathBuf], name: &str, body: &str) {
    let f = files
        .iter()
        .find(|f| f.file_name().unwrap() == name)
        .unwrap_or_else(|| panic!("no {name}"));
    std::fs::write(f, body).unwrap();
}

#[test]
fn a_saved_response_that_is_not_json_is_an_error_naming_the_query() {
    let tmp = tempdir();
    let files = save(Scenario::JwtFailing, tmp.path());
    replace_saved(&files, "iam-5xx.total.json", "{\"status\": \"succ");
    let run = from_files(Scenario::JwtFailing, &files);
    run.code(2)
        .stderr_has("error: query `iam-5xx.total`: the response is not JSON: EOF while parsing");
    assert!(run.stdout.is_empty());
}

#[test]
fn a_saved_response_of_the_wrong_shape_is_an_error_naming_the_field() {
    let tmp = tempdir();
    let files = save(Scenario::JwtFailing, tmp.path());
    let matrix = std::fs::read_to_string(tmp.path().join("redhat-auth.peak.json")).unwrap();
    replace_saved(&files, "redhat-auth.total.json", &matrix);
    from_files(Scenario::JwtFailing, &files)
        .code(2)
        .stderr_has("error: query `redhat-auth.total`: field `data.resultType`: is `matrix`, expected `vector`");

    replace_saved(
        &files,
        "redhat-auth.total.json",
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"method":"jwt"},"value":[1,"lots"]}]}}"#,
    );
    from_files(Scenario::JwtFailing, &files)
        .code(2)
        .stderr_has("error: query `redhat-auth.total`: field `data.result[0].value[1]`: `lots` is not a number");

    replace_saved(
        &files,
        "redhat-auth.total.json",
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"method":"jwt"}}]}}"#,
    );
    from_files(Scenario::JwtFailing, &files)
        .code(2)
        .stderr_has("error: query `redhat-auth.total`: field `data.result[0]`: missing field `value`");
}

#[test]
fn a_saved_prometheus_error_is_an_error() {
    let tmp = tempdir();
    let files = save(Scenario::JwtFailing, tmp.path());
    replace_saved(
        &files,
        "auth-key-refresh.peak.json",
        r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
    );
    from_files(Scenario::JwtFailing, &files).code(2).stderr_has(
        "error: query `auth-key-refresh.peak`: Prometheus answered with an error (timeout): query timed out in expression evaluation",
    );
}

#[test]
fn oversized_saved_responses_and_rules_files_are_refused() {
    let tmp = tempdir();
    let files = save(Scenario::JwtFailing, tmp.path());
    let big = files
        .iter()
        .find(|f| f.file_name().unwrap() == "iam-5xx.total.json")
        .unwrap();
    // A sparse 3 GB file: refused at 16 MiB, never read whole.
    std::fs::File::options()
        .write(true)
        .open(big)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    from_files(Scenario::JwtFailing, &files)
        .code(2)
        .stderr_has("query `iam-5xx.total` could not be answered")
        .stderr_has("larger than the limit of 16 MiB");
    let rules = tmp.path().join("rules.toml");
    std::fs::File::create(&rules).unwrap().set_len(3 << 30).unwrap();
    rekey()
        .args(["health", "--prometheus", &prom().url, "--rules"])
        .arg(&rules)
        .run()
        .code(2)
        .stderr_has("larger than the limit of 1 MiB");
}

#[test]
fn saved_responses_must_cover_every_query() {
    let tmp = tempdir();
    let files = save(Scenario::JwtFailing, tmp.path());
    let fewer: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.file_name().unwrap() != "iam-5xx.peak.json")
        .cloned()
        .collect();
    from_files(Scenario::JwtFailing, &fewer)
        .code(2)
        .stderr_has("error: --from-file: no saved response for iam-5xx.peak (expected files named <query>.json)");

    let mut extra = files.clone();
    extra.push(write(tmp.path(), "other/notes.json", "{}"));
    from_files(Scenario::JwtFailing, &extra).code(2).stderr_has(&format!(
        "error: --from-file {}: the file name does not name a query of the rules",
        tmp.path().join("other/notes.json").display()
    ));
}

#[test]
fn a_metric_with_no_series_is_no_data_for_that_rule_only() {
    let tmp = tempdir();
    let files = save(Scenario::JwtFailing, tmp.path());
    replace_saved(
        &files,
        "iam-5xx.presence.json",
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    );
    let run = from_files(Scenario::JwtFailing, &files);
    run.code(1)
        .stdout_has("iam-5xx           NO_DATA   no series of `api_response_codes`")
        .stdout_has("redhat-auth       DEGRADED")
        .stdout_has("verdict: degraded");
}

// --- hostile servers -----------------------------------------------------------

use crate::health_support::{endless, hostile, respond};

#[test]
fn health_never_resends_its_bearer_token_after_a_redirect_to_another_origin() {
    let (elsewhere, elsewhere_log) = hostile(|_, s| respond(s, "200 OK", &[], b"{}"));
    let (port, log) = hostile(move |req, s| {
        let path = req.head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let to = format!("http://127.0.0.1:{elsewhere}{path}");
        respond(s, "302 Found", &[("Location", &to)], b"")
    });
    let tmp = tempdir();
    let canary = Canary::new("health-redirect");
    let token = write(tmp.path(), "token", format!("{}\n", canary.key));
    let run = rekey()
        .args([
            "health",
            "--prometheus",
            &format!("http://127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(&token)
        .run();
    run.code(2).stderr_has("redirected to another origin");
    assert!(
        log.lock().unwrap()[0].head.contains("Bearer"),
        "the server asked sees the token"
    );
    let sent: Vec<String> = elsewhere_log.lock().unwrap().iter().map(|r| r.head.clone()).collect();
    assert!(sent.iter().all(|h| !canary.found_in(h.as_bytes())), "{sent:?}");
    assert!(sent.is_empty(), "the other origin is never asked: {sent:?}");
    canary.assert_not_in_run(&run);
}

#[test]
fn an_endless_prometheus_answer_is_cut_at_the_size_limit() {
    let (port, _) = hostile(|_, s| {
        endless(
            s,
            "application/json",
            br#"{"status":"success","data":{"resultType":"vector","result":["#,
            br#"{"metric":{"a":"b"},"value":[1,"1"]},"#,
        )
    });
    let started = std::time::Instant::now();
    let run = rekey()
        .args(["health", "--prometheus", &format!("http://127.0.0.1:{port}")])
        .run();
    run.code(2).stderr_has("larger than the limit of 16 MiB");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn prometheus_error_text_is_printed_with_control_characters_escaped() {
    let (port, _) = hostile(|_, s| {
        respond(
            s,
            "400 Bad Request",
            &[("Content-Type", "application/json")],
            br#"{"status":"error","errorType":"bad_data","error":"\u001b]0;pwned\u0007\u001b[31mred"}"#,
        )
    });
    let run = rekey()
        .args(["health", "--prometheus", &format!("http://127.0.0.1:{port}")])
        .run();
    run.code(2).stderr_has("\\u{1b}]0;pwned\\u{7}\\u{1b}[31mred");
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(!run.stderr.contains('\u{7}'), "{:?}", run.stderr);
}

// --- watch ------------------------------------------------------------------------

#[test]
fn watch_stops_as_soon_as_the_verdict_is_healthy() {
    // Every rule treats absence as healthy: "now" has no data, so healthy at once.
    let (_tmp, rules) = with_rules(&default_rules().replace("when_absent = \"no_data\"", "when_absent = \"healthy\""));
    let run = rekey()
        .args([
            "health",
            "--prometheus",
            &prom().url,
            "--watch",
            "--until",
            "healthy",
            "--interval",
            "1s",
        ])
        .arg("--rules")
        .arg(&rules)
        .run();
    run.code(0).stdout_has("verdict: HEALTHY");
    assert!(run.stdout.ends_with('\n'));
}

#[test]
fn watch_prints_each_change_once_and_times_out_with_exit_1() {
    // Now has no data: redhat-auth and iam-5xx stay no_data for every evaluation.
    let run = rekey()
        .args([
            "health",
            "--prometheus",
            &prom().url,
            "--watch",
            "--until",
            "healthy",
            "--interval",
            "1s",
            "--timeout",
            "3s",
        ])
        .run();
    run.code(1)
        .stdout_has("  redhat-auth  NO_DATA  no series of `armada_kubx_deployer_redhat_auth`")
        .stdout_has("  auth-key-refresh  HEALTHY  ")
        .stdout_has("verdict: NO_DATA")
        .stderr_has("timed out after 3s: the verdict is still no_data");
    assert_eq!(
        run.stdout.matches("redhat-auth").count(),
        1,
        "printed once, not per poll: {}",
        run.stdout
    );
    let json = rekey()
        .args([
            "health",
            "--prometheus",
            &prom().url,
            "--watch",
            "--interval",
            "1s",
            "--timeout",
            "1s",
            "--output",
            "json",
        ])
        .run();
    json.code(1);
    let lines: Vec<serde_json::Value> = json.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{}", json.stdout);
    assert_eq!(lines[3]["rule"], "verdict");
    assert_eq!(lines[3]["status"], "no_data");
}

#[test]
fn watch_options_need_watch() {
    rekey()
        .args(["health", "--prometheus", &prom().url, "--until", "healthy"])
        .run()
        .code(2)
        .stderr_has("--watch");
}

#[test]
fn watch_prints_each_change_of_verdict_until_healthy() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A stand-in Prometheus whose metrics appear after the first evaluation:
    // a verdict change that a backfilled Prometheus cannot play at "now".
    let presence = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = presence.clone();
    let (port, _) = hostile(move |req, s| {
        let path = req.head.split_whitespace().nth(1).unwrap_or("");
        let body = if path.starts_with("/api/v1/query_range") {
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.to_owned()
        } else if path.contains("query=count%28count_over_time") {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            // Three rules per evaluation: the first evaluation sees no series.
            let result = if n < 3 {
                "[]"
            } else {
                r#"[{"metric":{},"value":[1,"5"]}]"#
            };
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#)
        } else {
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_owned()
        };
        respond(s, "200 OK", &[("Content-Type", "application/json")], body.as_bytes())
    });
    let run = rekey()
        .args([
            "health",
            "--prometheus",
            &format!("http://127.0.0.1:{port}"),
            "--watch",
            "--until",
            "healthy",
            "--interval",
            "1s",
            "--timeout",
            "1m",
        ])
        .run();
    run.code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let changes: Vec<String> = lines
        .iter()
        .map(|l| l.split_once("  ").map_or(*l, |(_, rest)| rest).to_owned())
        .map(|l| l.split("  ").take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        changes,
        [
            "redhat-auth NO_DATA",
            "iam-5xx NO_DATA",
            "auth-key-refresh HEALTHY",
            "verdict: NO_DATA",
            "redhat-auth HEALTHY",
            "iam-5xx HEALTHY",
            "verdict: HEALTHY",
        ],
        "{}",
        run.stdout
    );
    assert!(presence.load(Ordering::SeqCst) >= 6);
}

#[test]
fn health_never_resends_its_bearer_token_after_a_redirect_from_https_to_http() {
    use crate::verify_support::make_pki;
    use std::io::{Read, Write};
    use tokio_rustls::rustls;
    let pki = make_pki("rekey health test CA", &["127.0.0.1"]);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(pki.cert_der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
            )
            .unwrap(),
    );
    let (plain_port, plain_log) = hostile(|_, s| respond(s, "200 OK", &[], b"{}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
            let to = format!("http://127.0.0.1:{plain_port}/api/v1/query");
            let _ = write!(
                tls,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let tmp = tempdir();
    let ca = write(tmp.path(), "ca.pem", &pki.ca_pem);
    let canary = Canary::new("health-https");
    let token = write(tmp.path(), "token", format!("{}\n", canary.key));
    let run = rekey()
        .args([
            "health",
            "--prometheus",
            &format!("https://127.0.0.1:{tls_port}"),
            "--token-file",
        ])
        .arg(&token)
        .env("SSL_CERT_FILE", &ca)
        .run();
    run.code(2).stderr_has("redirected to another origin");
    assert!(
        heads.lock().unwrap().iter().any(|h| h.contains("Bearer")),
        "the https server was asked, with the token: {:?}",
        heads.lock().unwrap()
    );
    let sent: Vec<String> = plain_log.lock().unwrap().iter().map(|r| r.head.clone()).collect();
    assert!(sent.is_empty(), "nothing goes to the http origin: {sent:?}");
    canary.assert_not_in_run(&run);
}
