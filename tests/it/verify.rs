//! `rekey verify` against real registries (Debian's docker-registry with
//! htpasswd and with token auth) and a fault server for what a real
//! registry cannot do on demand.

use crate::support::*;
use crate::verify_support::*;

fn key_file(dir: &std::path::Path, key: &str) -> std::path::PathBuf {
    write(dir, "key", format!("{key}\n"))
}

#[test]
fn basic_and_token_registries_verify_ok() {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [BASIC_HOST.to_owned(), TOKEN_HOST.to_owned()];
    let cat = catalog(tmp.path(), &[("t", &hosts, "armada-master/alpine:latest")]);
    let run = verify_cmd(
        fx,
        &[(BASIC_HOST, fx.basic), (TOKEN_HOST, fx.token), (AUTH_HOST, fx.auth)],
    )
    .arg("--regions")
    .arg(&cat)
    .arg("--api-key-file")
    .arg(key_file(tmp.path(), &fx.key))
    .args(["--output", "json"])
    .run();
    run.code(0);
    let c = classes(&run);
    assert_eq!(c[BASIC_HOST], "ok", "{}", run.stdout);
    assert_eq!(c[TOKEN_HOST], "ok", "{}", run.stdout);
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

/// `--resolve '*=ADDR:PORT'` points every catalog host at one registry, so a
/// whole region is tried against one test registry without naming each host.
#[test]
fn resolve_star_maps_every_catalog_host() {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [
        "jp.reg.test".to_owned(),
        "private-jp.reg.test".to_owned(),
        "au.reg.test".to_owned(),
    ];
    let cat = catalog(tmp.path(), &[("jp", &hosts, "armada-master/alpine:latest")]);
    let run = rekey()
        .arg("verify")
        .arg("--ca-cert")
        .arg(&fx.ca_pem)
        .arg("--resolve")
        .arg(format!("*={}", fx.basic))
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-file")
        .arg(key_file(tmp.path(), &fx.key))
        .args(["--output", "json", "--timeout", "20s"])
        .run();
    run.code(0);
    let c = classes(&run);
    for h in &hosts {
        assert_eq!(c[h], "ok", "{}", run.stdout);
    }
    // A named host still goes where it is told; `*` only catches the rest.
    let run = rekey()
        .arg("verify")
        .arg("--ca-cert")
        .arg(&fx.ca_pem)
        .arg("--resolve")
        .arg(format!("*={}", fx.basic))
        .arg("--resolve")
        .arg(format!("au.reg.test=127.0.0.1:{}", free_port()))
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-file")
        .arg(key_file(tmp.path(), &fx.key))
        .args(["--output", "json", "--timeout", "5s"])
        .run();
    run.code(1);
    let c = classes(&run);
    assert_eq!(c["jp.reg.test"], "ok");
    assert_eq!(c["au.reg.test"], "connect", "{}", run.stdout);
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

/// Runs `rekey verify --output json` for `hosts` (one region `t`) with the
/// fixture's key, every host resolved to `addr`.
fn run_hosts(hosts: &[String], addr: std::net::SocketAddr, extra: &[&str]) -> Run {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", hosts, "armada-master/alpine:latest")]);
    let mut resolve: Vec<(&str, std::net::SocketAddr)> = hosts.iter().map(|h| (h.as_str(), addr)).collect();
    resolve.push((AUTH_HOST, fx.auth));
    let run = verify_cmd(fx, &resolve)
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-file")
        .arg(key_file(tmp.path(), &fx.key))
        .args(["--output", "json"])
        .args(extra)
        .run();
    Canary::with_value(&fx.key).assert_not_in_run(&run);
    run
}

/// Runs one image against both real registries; returns (basic, token) classes.
fn both_registries(image: &str, key: Option<&str>, extra: &[&str]) -> (Run, String, String) {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [BASIC_HOST.to_owned(), TOKEN_HOST.to_owned()];
    let cat = catalog(tmp.path(), &[("t", &hosts, image)]);
    let key = key.unwrap_or(&fx.key);
    let run = verify_cmd(
        fx,
        &[(BASIC_HOST, fx.basic), (TOKEN_HOST, fx.token), (AUTH_HOST, fx.auth)],
    )
    .arg("--regions")
    .arg(&cat)
    .arg("--api-key-env")
    .arg("REKEY_TEST_KEY")
    .env("REKEY_TEST_KEY", key)
    .args(["--output", "json"])
    .args(extra)
    .run();
    Canary::with_value(&fx.key).assert_not_in_run(&run);
    Canary::with_value(key).assert_not_in_run(&run);
    let c = classes(&run);
    (run, c[BASIC_HOST].clone(), c[TOKEN_HOST].clone())
}

fn pushed(name: &str) -> String {
    let _ = &*FIXTURE;
    PUSHED
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.clone())
        .unwrap()
}

/// Verifies `image` on both registries and asserts that both hosts get
/// `class`, with exit code 0 for `ok` and 1 otherwise.
#[track_caller]
fn both_are(image: &str, key: Option<&str>, extra: &[&str], class: &str) -> Run {
    let (run, basic, token) = both_registries(image, key, extra);
    run.code(if class == "ok" { 0 } else { 1 });
    assert_eq!(
        (basic.as_str(), token.as_str()),
        (class, class),
        "{image}: {}",
        run.stdout
    );
    run
}

#[test]
fn schema2_image_and_docker_manifest_list_verify_ok() {
    for image in ["probe/single:v1", "probe/list:v1"] {
        both_are(image, None, &[], "ok");
    }
    let (run, _, _) = both_registries("probe/list:v1", None, &[]);
    run.stdout_has("linux/amd64 sha256:");
}

#[test]
fn image_by_digest_verifies_ok_and_wrong_digest_is_missing() {
    let digest = pushed("probe/single:v1");
    both_are(&format!("probe/single@{digest}"), None, &[], "ok");
    let other = format!("sha256:{}", "0".repeat(64));
    both_are(&format!("probe/single@{other}"), None, &[], "missing_image");
}

#[test]
fn full_fetches_every_layer() {
    let run = both_are("armada-master/alpine:latest", None, &["--full"], "ok");
    run.stdout_has("config and its 1 layer verified");
}

#[test]
fn wrong_key_is_bad_credentials_on_both_registries() {
    let wrong = Canary::new("verify-wrong");
    let run = both_are("armada-master/alpine:latest", Some(&wrong.key), &[], "bad_credentials");
    wrong.assert_not_in_run(&run);
}

#[test]
fn repository_outside_the_token_grant_is_no_access() {
    let (run, basic, token) = both_registries("private/secret:v1", None, &[]);
    run.code(1);
    // htpasswd auth has no per-repository access control; the token server does.
    assert_eq!(basic, "ok", "{}", run.stdout);
    assert_eq!(token, "no_access", "{}", run.stdout);
    run.stdout_has("insufficient_scope");
}

#[test]
fn absent_repository_or_tag_is_missing_image() {
    for image in ["probe/nothere:v1", "probe/single:nosuchtag"] {
        both_are(image, None, &[], "missing_image");
    }
}

#[test]
fn index_without_linux_amd64_is_platform_missing() {
    let run = both_are("probe/armonly:v1", None, &[], "platform_missing");
    run.stdout_has("linux/arm64");
}

#[test]
fn json_hosts_have_exactly_the_documented_fields() {
    let (run, _, _) = both_registries("armada-master/alpine:latest", None, &[]);
    let json = run.json();
    assert_eq!(json["ok"], true);
    for host in json["hosts"].as_array().unwrap() {
        let mut keys: Vec<&str> = host.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["class", "detail", "elapsed_ms", "host", "region"]);
        assert!(host["elapsed_ms"].is_u64());
    }
}

#[test]
fn junit_has_one_case_per_host_and_text_names_the_failure() {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [BASIC_HOST.to_owned(), TOKEN_HOST.to_owned()];
    let cat = catalog(
        tmp.path(),
        &[
            ("a", &hosts[..1], "probe/single:v1"),
            ("b", &hosts[1..], "probe/armonly:v1"),
        ],
    );
    let base = || {
        verify_cmd(
            fx,
            &[(BASIC_HOST, fx.basic), (TOKEN_HOST, fx.token), (AUTH_HOST, fx.auth)],
        )
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-file")
        .arg("-")
        .stdin(format!("{}\n", fx.key))
    };
    let run = base().args(["--output", "junit"]).run();
    run.code(1);
    assert_eq!(run.stdout.matches("<testcase ").count(), 2, "{}", run.stdout);
    run.stdout_has("type=\"platform_missing\"");
    run.stdout_has("a basic.reg.test");
    Canary::with_value(&fx.key).assert_not_in_run(&run);
    let run = base().run();
    run.code(1);
    run.stdout_has("platform_missing").stdout_has("token.reg.test");
    run.stderr_has("1 of 2 hosts ok, 1 failed");
    // The run ends with its failures, grouped by class, after every host line.
    let last = run.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("platform_missing: ") && last.contains("token.reg.test (b)"),
        "{}",
        run.stderr
    );
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

#[test]
fn a_generated_dockerconfig_verifies_as_shipped() {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [BASIC_HOST.to_owned(), TOKEN_HOST.to_owned()];
    let cat = catalog(tmp.path(), &[("t", &hosts, "armada-master/alpine:latest")]);
    let out = tmp.path().join("out");
    rekey()
        .arg("generate")
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-file")
        .arg(key_file(tmp.path(), &fx.key))
        .arg("--out")
        .arg(&out)
        .args(["--format", "secret-yaml"])
        .run()
        .code(0);
    let run = verify_cmd(
        fx,
        &[(BASIC_HOST, fx.basic), (TOKEN_HOST, fx.token), (AUTH_HOST, fx.auth)],
    )
    .arg("--dockerconfig")
    .arg(out.join("t.secret.yaml"))
    .args(["--output", "json"])
    .run();
    run.code(0);
    let c = classes(&run);
    assert_eq!((c[BASIC_HOST].as_str(), c[TOKEN_HOST].as_str()), ("ok", "ok"));
    assert_eq!(run.json()["hosts"][0]["region"], "t");
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

// ------------------------------------------------------------ faults

fn fault_one(kind: &str, extra: &[&str]) -> (String, Run, String) {
    let host = fault_host(kind);
    let run = run_hosts(std::slice::from_ref(&host), FIXTURE.fault, extra);
    let class = classes(&run)[&host].clone();
    (host, run, class)
}

#[test]
fn fault_server_plain_registry_is_ok() {
    let (_, run, class) = fault_one("ok", &[]);
    assert_eq!(class, "ok", "{}", run.stdout);
    run.code(0);
}

#[test]
fn anonymous_ping_then_challenge_on_the_manifest_is_answered() {
    let (host, run, class) = fault_one("anonping", &[]);
    assert_eq!(class, "ok", "{}", run.stdout);
    assert!(
        seen(&host)
            .iter()
            .any(|(_, p, auth)| p.contains("/manifests/") && auth.is_some())
    );
    let fx = &*FIXTURE;
    let host = fault_host("anonping");
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", std::slice::from_ref(&host), "probe/x:v1")]);
    let wrong = Canary::new("verify-anon-wrong");
    let run = verify_cmd(fx, &[(&host, fx.fault)])
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", &wrong.key)
        .args(["--output", "json"])
        .run();
    run.code(1);
    assert_eq!(classes(&run)[&host], "bad_credentials", "{}", run.stdout);
    wrong.assert_not_in_run(&run);
}

#[test]
fn persistent_429_is_rate_limited_after_honouring_retry_after() {
    let (host, run, class) = fault_one("ratelimit", &["--timeout", "3s"]);
    assert_eq!(class, "rate_limited", "{}", run.stdout);
    run.code(1);
    // Retry-After: 1 within a 3 s budget: retried, but not hammered.
    let n = seen(&host).len();
    assert!((2..=4).contains(&n), "{n} requests");
}

#[test]
fn one_429_then_success_is_ok() {
    let (host, run, class) = fault_one("r429once", &[]);
    assert_eq!(class, "ok", "{}", run.stdout);
    assert_eq!(keyed_manifest_heads(&host), 2, "{:?}", seen(&host));
}

#[test]
fn one_503_then_success_is_ok_and_persistent_503_is_server_error() {
    let (host, run, class) = fault_one("r503once", &[]);
    assert_eq!(class, "ok", "{}", run.stdout);
    assert!(seen(&host).iter().filter(|(_, p, _)| p == "/v2/").count() >= 2);
    let (_, run, class) = fault_one("always503", &["--timeout", "2s"]);
    assert_eq!(class, "server_error", "{}", run.stdout);
    run.stdout_has("HTTP 503");
}

#[test]
fn cross_host_redirect_does_not_carry_credentials() {
    let fx = &*FIXTURE;
    let host = fault_host("xredirect");
    let id = host.split_once('-').unwrap().1.split('.').next().unwrap().to_owned();
    let cdn = format!("cdn-{id}.fault.test");
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", std::slice::from_ref(&host), "probe/x:v1")]);
    let run = verify_cmd(fx, &[(&host, fx.fault), (&cdn, fx.fault)])
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", &fx.key)
        .args(["--output", "json", "--full"])
        .run();
    run.code(0);
    assert_eq!(classes(&run)[&host], "ok", "{}", run.stdout);
    let cdn_seen = seen(&cdn);
    assert_eq!(cdn_seen.len(), 2, "config and layer fetched from the CDN: {cdn_seen:?}");
    assert!(cdn_seen.iter().all(|(_, _, auth)| auth.is_none()), "{cdn_seen:?}");
    assert!(
        seen(&host)
            .iter()
            .any(|(_, p, auth)| p.contains("/blobs/") && auth.is_some())
    );
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

#[test]
fn redirect_loop_is_server_error() {
    let (_, run, class) = fault_one("loop", &[]);
    assert_eq!(class, "server_error", "{}", run.stdout);
    run.stdout_has("redirect loop");
}

#[test]
fn hosts_are_checked_at_once_up_to_the_concurrency_limit() {
    // Each gate host answers only once all four are in flight together.
    let hosts = gate_hosts();
    let run = run_hosts(&hosts, FIXTURE.fault, &["--concurrency", "4", "--timeout", "20s"]);
    run.code(0);
    assert!(classes(&run).values().all(|c| c == "ok"), "{}", run.stdout);
    // One at a time, the first host checked waits for company that never comes.
    let hosts = gate_hosts();
    let run = run_hosts(&hosts, FIXTURE.fault, &["--concurrency", "1", "--timeout", "1s"]);
    run.code(1);
    let timeouts = classes(&run).values().filter(|c| *c == "timeout").count();
    assert!(timeouts >= 1, "{}", run.stdout);
}

#[test]
fn slow_host_is_timeout() {
    let (_, run, class) = fault_one("slow", &["--timeout", "1s"]);
    assert_eq!(class, "timeout", "{}", run.stdout);
    run.code(1);
}

#[test]
fn wrong_manifest_digest_and_wrong_blob_are_digest_mismatch() {
    let (_, run, class) = fault_one("baddigest", &[]);
    assert_eq!(class, "digest_mismatch", "{}", run.stdout);
    run.stdout_has("Docker-Content-Digest says");
    let (_, run, class) = fault_one("badblob", &[]);
    assert_eq!(class, "digest_mismatch", "{}", run.stdout);
}

#[test]
fn http_404_on_v2_is_not_a_registry() {
    let (_, run, class) = fault_one("notreg", &[]);
    assert_eq!(class, "not_a_registry", "{}", run.stdout);
}

#[test]
fn denied_manifest_is_no_access() {
    let (_, run, class) = fault_one("forbidden", &[]);
    assert_eq!(class, "no_access", "{}", run.stdout);
    run.stdout_has("DENIED");
}

#[test]
fn oauth2_password_grant_is_the_token_fallback() {
    let (host, run, class) = fault_one("oauth", &[]);
    assert_eq!(class, "ok", "{}", run.stdout);
    let s = seen(&host);
    assert!(s.iter().any(|(m, p, _)| m == "GET" && p.starts_with("/oauth/token")));
    assert!(s.iter().any(|(m, p, _)| m == "POST" && p.starts_with("/oauth/token")));
}

#[test]
fn unknown_ca_is_tls_refused_port_is_connect_and_unknown_name_is_dns() {
    let fx = &*FIXTURE;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let tls_host = fault_host("ok");
    let refused_host = fault_host("ok");
    let dns_host = "no-such-host.invalid".to_owned();
    let tmp = tempdir();
    let hosts = [tls_host.clone(), refused_host.clone(), dns_host.clone()];
    let cat = catalog(tmp.path(), &[("t", &hosts, "probe/x:v1")]);
    let run = verify_cmd(fx, &[(&tls_host, fx.unknown_ca), (&refused_host, refused)])
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", &fx.key)
        .args(["--output", "json", "--timeout", "20s"])
        .run();
    run.code(1);
    let c = classes(&run);
    assert_eq!(c[&tls_host], "tls", "{}", run.stdout);
    assert_eq!(c[&refused_host], "connect", "{}", run.stdout);
    assert_eq!(c[&dns_host], "dns", "{}", run.stdout);
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

#[test]
fn insecure_http_is_needed_for_plain_http() {
    // The fault server speaks TLS only; asking for plain http to it fails
    // to connect as a registry rather than silently upgrading.
    let host = fault_host("ok");
    let run = run_hosts(std::slice::from_ref(&host), FIXTURE.fault, &["--insecure-http", &host]);
    run.code(1);
    assert_ne!(classes(&run)[&host], "ok", "{}", run.stdout);
}

// ------------------------------------------------------------ bad input

fn assert_usage_error(run: &Run, needle: &str) {
    run.code(2);
    run.stderr_has(needle);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn no_source_of_credentials_is_a_usage_error() {
    let run = rekey().arg("verify").run();
    assert_usage_error(&run, "nothing to verify");
}

#[test]
fn regions_without_a_key_is_a_usage_error() {
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", &["a.io".to_owned()], "probe/x:v1")]);
    let run = rekey().arg("verify").arg("--regions").arg(&cat).run();
    assert_usage_error(&run, "no API key source given");
}

#[test]
fn malformed_resolve_is_a_usage_error() {
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", &["a.io".to_owned()], "probe/x:v1")]);
    let canary = Canary::new("verify-resolve");
    for bad in ["a.io", "a.io=localhost", "A.io=127.0.0.1:1"] {
        let run = rekey()
            .arg("verify")
            .arg("--regions")
            .arg(&cat)
            .arg("--api-key-env")
            .arg("K")
            .env("K", &canary.key)
            .args(["--resolve", bad])
            .run();
        assert_usage_error(&run, &format!("invalid value '{bad}' for '--resolve <HOST=ADDR:PORT>'"));
        canary.assert_not_in_run(&run);
    }
}

#[test]
fn ca_cert_that_is_not_pem_is_a_usage_error() {
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", &["a.io".to_owned()], "probe/x:v1")]);
    let bad = write(tmp.path(), "ca.pem", "not a certificate");
    let run = rekey()
        .arg("verify")
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", "k")
        .arg("--ca-cert")
        .arg(&bad)
        .run();
    assert_usage_error(&run, "no PEM certificate");
    let run = rekey()
        .arg("verify")
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", "k")
        .arg("--ca-cert")
        .arg(tmp.path().join("missing.pem"))
        .run();
    assert_usage_error(&run, "reading --ca-cert");
}

#[test]
fn invalid_image_and_insecure_host_are_usage_errors() {
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", &["a.io".to_owned()], "probe/x:v1")]);
    let base = || {
        rekey()
            .arg("verify")
            .arg("--regions")
            .arg(&cat)
            .arg("--api-key-env")
            .arg("K")
            .env("K", "k")
    };
    assert_usage_error(&base().args(["--image", "Bad/Image"]).run(), "--image `Bad/Image`");
    assert_usage_error(
        &base().args(["--insecure-http", "http://a.io"]).run(),
        "--insecure-http",
    );
    assert_usage_error(&base().args(["--concurrency", "0"]).run(), "--concurrency");
    assert_usage_error(
        &base().args(["--allow-anonymous", "https://a.io/"]).run(),
        "--allow-anonymous `https://a.io/`",
    );
}

#[test]
fn unreadable_or_malformed_dockerconfig_is_a_usage_error_without_leaking() {
    let tmp = tempdir();
    let canary = Canary::new("verify-dc");
    let run = rekey()
        .arg("verify")
        .arg("--dockerconfig")
        .arg(tmp.path().join("missing.json"))
        .run();
    assert_usage_error(&run, "missing.json");
    // A password of the wrong type: serde would quote neighbouring values.
    let bad = write(
        tmp.path(),
        "bad.dockerconfigjson",
        format!(r#"{{"auths":{{"a.io":{{"username":"{}","password":5}}}}}}"#, canary.key),
    );
    let run = rekey().arg("verify").arg("--dockerconfig").arg(&bad).run();
    assert_usage_error(&run, "bad.dockerconfigjson");
    canary.assert_not_in_run(&run);
    let noauth = write(tmp.path(), "noauth.dockerconfigjson", r#"{"auths":{"a.io":{}}}"#);
    let run = rekey().arg("verify").arg("--dockerconfig").arg(&noauth).run();
    assert_usage_error(&run, "field `auths.a.io`");
    let badauth = write(
        tmp.path(),
        "badauth.dockerconfigjson",
        r#"{"auths":{"a.io":{"auth":"!!"}}}"#,
    );
    let run = rekey().arg("verify").arg("--dockerconfig").arg(&badauth).run();
    assert_usage_error(&run, "field `auths.a.io` has an `auth` that is not valid base64");
}

// ------------------------------------------------------------ proving the key
//
// Each case is also pulled with skopeo (when installed) from a listener that
// plays the same fault host, so rekey's verdict is compared with what a real
// client does with the same key.

/// Runs `rekey verify --output json` for the fault host `host` (plus
/// `extra_hosts`, all resolved to the fault server) with `key`; returns the
/// run, the host's class and its detail.
fn fault_verify(host: &str, image: &str, key: &str, extra_hosts: &[&str], args: &[&str]) -> (Run, String, String) {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let cat = catalog(tmp.path(), &[("t", &[host.to_owned()], image)]);
    let mut resolve = vec![(host, fx.fault)];
    resolve.extend(extra_hosts.iter().map(|h| (*h, fx.fault)));
    let run = verify_cmd(fx, &resolve)
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", key)
        .args(["--output", "json"])
        .args(args)
        .run();
    Canary::with_value(&fx.key).assert_not_in_run(&run);
    Canary::with_value(key).assert_not_in_run(&run);
    let json = run.json();
    let h = json["hosts"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["host"] == host))
        .unwrap_or_else(|| panic!("{host} in {}", run.stdout));
    let (class, detail) = (
        h["class"].as_str().unwrap().to_owned(),
        h["detail"].as_str().unwrap().to_owned(),
    );
    (run, class, detail)
}

/// [`fault_verify`] of `probe/x:v1`, asserting the exit code and the
/// host's class; returns the host's detail.
#[track_caller]
fn fault_verdict(host: &str, key: &str, extra_hosts: &[&str], args: &[&str], code: i32, class: &str) -> String {
    let (run, got, detail) = fault_verify(host, "probe/x:v1", key, extra_hosts, args);
    run.code(code);
    assert_eq!(got, class, "{host}: {detail}\n{}", run.stdout);
    detail
}

fn skopeo_installed() -> bool {
    std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Copies `image` with skopeo (config and every layer, digests checked)
/// from a listener that plays fault host `kind`, authenticating with `key`
/// (no credentials when `None`). Returns None when skopeo is not installed,
/// else whether the copy succeeded and skopeo's stderr.
fn skopeo_copy(kind: &str, image: &str, key: Option<&str>) -> Option<(bool, String)> {
    if !skopeo_installed() {
        return None;
    }
    let addr = fault_listener(&fault_host(kind));
    skopeo_copy_from(addr, image, key)
}

fn skopeo_copy_from(addr: std::net::SocketAddr, image: &str, key: Option<&str>) -> Option<(bool, String)> {
    use base64::Engine;
    if !skopeo_installed() {
        return None;
    }
    let tmp = tempdir();
    let registry = format!("127.0.0.1:{}", addr.port());
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false"])
        .env("HOME", tmp.path())
        .env("XDG_RUNTIME_DIR", tmp.path())
        .env_remove("REGISTRY_AUTH_FILE");
    match key {
        Some(k) => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{k}"));
            let file = write(
                tmp.path(),
                "auth.json",
                serde_json::json!({"auths": {registry.clone(): {"auth": auth}}}).to_string(),
            );
            cmd.arg("--src-authfile").arg(file);
        }
        None => {
            cmd.arg("--src-no-creds");
        }
    }
    cmd.arg(format!("docker://{registry}/{image}"))
        .arg(format!("dir:{}", tmp.path().join("out").display()));
    let out = cmd.output().expect("running skopeo");
    Some((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Asserts skopeo's outcome when skopeo is installed.
#[track_caller]
fn skopeo_agrees(outcome: Option<(bool, String)>, succeeds: bool, case: &str) {
    if let Some((ok, stderr)) = outcome {
        assert_eq!(ok, succeeds, "skopeo on {case}: {stderr}");
    }
}

#[test]
fn anonymous_registry_is_credential_not_required_unless_allowed() {
    let wrong = Canary::new("verify-anon-any");
    let host = fault_host("anon");
    let (run, class, detail) = fault_verify(&host, "probe/x:v1", &wrong.key, &[], &[]);
    run.code(1);
    assert_eq!(class, "credential_not_required", "{}", run.stdout);
    assert!(detail.contains("without credentials"), "{detail}");
    assert_eq!(run.json()["ok"], false);
    // --allow-anonymous: still named, but not a failure.
    fault_verdict(
        &host,
        &wrong.key,
        &[],
        &["--allow-anonymous", &host],
        0,
        "credential_not_required",
    );
    // skopeo pulls with no credentials at all: the key proves nothing.
    skopeo_agrees(skopeo_copy("anon", "probe/x:v1", None), true, "anon");
}

#[test]
fn registry_accepting_any_password_is_credential_not_required() {
    let wrong = Canary::new("verify-anypass");
    let host = fault_host("anypass");
    let detail = fault_verdict(&host, &wrong.key, &[], &[], 1, "credential_not_required");
    assert!(detail.contains("with a wrong password"), "{detail}");
    // The proof sent a wrong password, never the key, in its extra request.
    let sent: Vec<_> = seen(&host).into_iter().filter_map(|(_, _, a)| a).collect();
    assert!(sent.len() >= 2, "{sent:?}");
    skopeo_agrees(skopeo_copy("anypass", "probe/x:v1", Some(&wrong.key)), true, "anypass");
}

#[test]
fn token_server_granting_without_the_key_is_credential_not_required() {
    let fx = &*FIXTURE;
    for (kind, evidence) in [
        ("anontoken", "granted a token without credentials"),
        ("anypasstoken", "granted a token for a wrong password"),
    ] {
        let host = fault_host(kind);
        let detail = fault_verdict(&host, &fx.key, &[], &[], 1, "credential_not_required");
        assert!(detail.contains(evidence), "{kind}: {detail}");
    }
    // skopeo pulls from both without the key.
    let wrong = Canary::new("verify-token-wrong");
    skopeo_agrees(skopeo_copy("anontoken", "probe/x:v1", None), true, "anontoken");
    skopeo_agrees(
        skopeo_copy("anypasstoken", "probe/x:v1", Some(&wrong.key)),
        true,
        "anypasstoken",
    );
    skopeo_agrees(
        skopeo_copy("anypasstoken", "probe/x:v1", None),
        false,
        "anypasstoken anonymous",
    );
}

#[test]
fn a_required_key_is_proven_with_an_anonymous_and_a_wrong_request() {
    let fx = &*FIXTURE;
    let host = fault_host("ok");
    fault_verdict(&host, &fx.key, &[], &[], 0, "ok");
    let good = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{}", fx.key))
    );
    let heads: Vec<Option<String>> = seen(&host)
        .into_iter()
        .filter(|(m, p, _)| m == "HEAD" && p.ends_with("/manifests/v1"))
        .map(|(_, _, a)| a)
        .collect();
    // The manifest HEAD with the key, then the proof (at once, in either
    // order): anonymous and with a wrong password.
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(heads[0].as_deref(), Some(good.as_str()));
    let proof = &heads[1..];
    assert!(proof.contains(&None), "{heads:?}");
    assert!(
        proof.iter().flatten().any(|a| a.starts_with("Basic ") && *a != good),
        "{heads:?}"
    );
    // The real registries refuse both (the ok tests above), and so does skopeo
    // with a wrong key.
    let wrong = Canary::new("verify-skopeo-wrong");
    if skopeo_installed() {
        skopeo_agrees(
            skopeo_copy_from(fx.basic, "probe/single:v1", Some(&wrong.key)),
            false,
            "basic registry, wrong key",
        );
        skopeo_agrees(
            skopeo_copy_from(fx.basic, "probe/single:v1", None),
            false,
            "basic registry, anonymous",
        );
        skopeo_agrees(
            skopeo_copy_from(fx.basic, "probe/single:v1", Some(&fx.key)),
            true,
            "basic registry, key",
        );
    }
}

// ------------------------------------------------------------ the blob path

#[test]
fn denied_missing_and_broken_layers_fail_without_full() {
    let fx = &*FIXTURE;
    for (kind, want, skopeo_ok) in [
        ("layer403", "no_access", false),
        ("layer404", "missing_image", false),
        ("layerbad", "digest_mismatch", false),
        // The blob is what its digest says, but not the gzip its media type
        // says: containerd fails unpacking it; skopeo copying to a directory
        // does not unpack, so it succeeds.
        ("bightml", "digest_mismatch", true),
    ] {
        let host = fault_host(kind);
        let detail = fault_verdict(&host, &fx.key, &[], &[], 1, want);
        assert!(detail.contains("layer 0"), "{kind}: {detail}");
        skopeo_agrees(skopeo_copy(kind, "probe/x:v1", Some(&fx.key)), skopeo_ok, kind);
    }
    // A layer redirected to a CDN that fails.
    let host = fault_host("layercdn");
    let id = host.split_once('-').unwrap().1.split('.').next().unwrap().to_owned();
    let cdn = format!("cdnbroken-{id}.fault.test");
    fault_verdict(&host, &fx.key, &[&cdn], &[], 1, "missing_image");
    assert!(seen(&cdn).iter().all(|(_, _, a)| a.is_none()), "{:?}", seen(&cdn));
}

#[test]
fn layers_are_probed_with_a_range_and_full_reads_them_whole() {
    let fx = &*FIXTURE;
    let big = digest(&fx.image.big_gzip);
    let host = fault_host("biglayer");
    let detail = fault_verdict(&host, &fx.key, &[], &[], 0, "ok");
    assert!(detail.contains("first bytes of 1 layer read"), "{detail}");
    let r = ranges(&host);
    assert!(
        r.iter().any(|(p, range)| p.ends_with(&big) && range == "bytes=0-511"),
        "{r:?}"
    );
    let host = fault_host("biglayer");
    fault_verdict(&host, &fx.key, &[], &["--full"], 0, "ok");
    assert!(
        ranges(&host).iter().all(|(p, _)| !p.ends_with(&big)),
        "--full reads whole layers"
    );
    skopeo_agrees(skopeo_copy("biglayer", "probe/x:v1", Some(&fx.key)), true, "biglayer");
}

// ------------------------------------------------------------ manifests as containerd reads them

#[test]
fn manifests_containerd_rejects_are_not_an_image() {
    let fx = &*FIXTURE;
    for (kind, needle) in [
        ("mthtml", "served as `text/html`"),
        ("mtplain", "served as `text/plain`"),
        ("mtindex", "served as an index"),
        (
            "mtmismatch",
            "its mediaType is `application/vnd.oci.image.manifest.v1+json`",
        ),
        ("artifact", "application/vnd.cncf.helm.config.v1+json"),
    ] {
        let host = fault_host(kind);
        let detail = fault_verdict(&host, &fx.key, &[], &[], 1, "not_an_image");
        assert!(detail.contains(needle), "{kind}: {detail}");
    }
    // The real registries store and serve an OCI artifact as it was pushed.
    let run = both_are("probe/chart:v1", None, &[], "not_an_image");
    run.stdout_has("application/vnd.cncf.helm.config.v1+json");
    // skopeo refuses the same manifests, except an artifact, which it copies
    // as it copies images (containerd, which pulls for the cluster, cannot
    // run it).
    for (kind, skopeo_ok) in [
        ("mthtml", false),
        ("mtplain", false),
        ("mtindex", false),
        ("mtmismatch", false),
        ("artifact", true),
    ] {
        skopeo_agrees(skopeo_copy(kind, "probe/x:v1", Some(&fx.key)), skopeo_ok, kind);
    }
}

// ------------------------------------------------------------ what real clients tolerate

#[test]
fn non_ascii_challenges_are_answered() {
    let fx = &*FIXTURE;
    for kind in ["latin1", "utf8bearer"] {
        let host = fault_host(kind);
        fault_verdict(&host, &fx.key, &[], &[], 0, "ok");
    }
    skopeo_agrees(skopeo_copy("latin1", "probe/x:v1", Some(&fx.key)), true, "latin1");
    skopeo_agrees(
        skopeo_copy("utf8bearer", "probe/x:v1", Some(&fx.key)),
        true,
        "utf8bearer",
    );
}

#[test]
fn basic_is_used_when_the_bearer_realm_is_down() {
    let fx = &*FIXTURE;
    let host = fault_host("fallback");
    let detail = fault_verdict(&host, &fx.key, &[], &[], 0, "ok");
    assert!(
        detail.contains("used Basic because the Bearer realm failed"),
        "{detail}"
    );
    // A wrong key is still refused through Basic.
    let wrong = Canary::new("verify-fallback-wrong");
    fault_verdict(&fault_host("fallback"), &wrong.key, &[], &[], 1, "bad_credentials");
    // skopeo answers the first challenge offered: Basic.
    skopeo_agrees(skopeo_copy("fallback", "probe/x:v1", Some(&fx.key)), true, "fallback");
}

#[test]
fn a_tag_moving_between_head_and_get_is_read_again() {
    let fx = &*FIXTURE;
    let host = fault_host("moving");
    fault_verdict(&host, &fx.key, &[], &[], 0, "ok");
    assert_eq!(keyed_manifest_heads(&host), 2, "{:?}", seen(&host));
    let detail = fault_verdict(&fault_host("headlies"), &fx.key, &[], &[], 1, "digest_mismatch");
    assert!(detail.contains("read twice"), "{detail}");
    skopeo_agrees(skopeo_copy("moving", "probe/x:v1", Some(&fx.key)), true, "moving");
}

// ------------------------------------------------------------ pull secrets as Docker reads them

#[test]
fn dockerconfig_auth_is_used_and_disagreeing_password_is_refused_before_any_request() {
    use base64::Engine;
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let wrong = Canary::new("verify-dc-password");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{}", fx.key));
    // `auth` only: used, as Docker uses it.
    let host = fault_host("ok");
    let only_auth = write(
        tmp.path(),
        "auth.dockerconfigjson",
        serde_json::json!({"auths": {host.clone(): {"auth": auth}}}).to_string(),
    );
    let run = verify_cmd(fx, &[(&host, fx.fault)])
        .arg("--dockerconfig")
        .arg(&only_auth)
        .args(["--image", "probe/x:v1", "--output", "json"])
        .run();
    run.code(0);
    assert_eq!(classes(&run)[&host], "ok", "{}", run.stdout);
    // `auth` and `password` disagree: exit 2 naming the field, no request.
    let host = fault_host("ok");
    let both = write(
        tmp.path(),
        "both.dockerconfigjson",
        serde_json::json!({"auths": {host.clone(): {"username": USER, "password": wrong.key, "auth": auth}}})
            .to_string(),
    );
    let run = verify_cmd(fx, &[(&host, fx.fault)])
        .arg("--dockerconfig")
        .arg(&both)
        .args(["--image", "probe/x:v1"])
        .run();
    run.code(2);
    run.stderr_has("has an `auth` carrying another key than its `password`");
    assert!(seen(&host).is_empty(), "{:?}", seen(&host));
    wrong.assert_not_in_run(&run);
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

// ------------------------------------------------------------ hostile answers

#[test]
fn oversized_manifest_and_token_answers_are_bounded() {
    let fx = &*FIXTURE;
    for (kind, needle) in [
        ("hugemanifest", "larger than the limit of 4194304 bytes"),
        ("hugetoken", "larger than the limit of 1048576 bytes"),
    ] {
        let detail = fault_verdict(&fault_host(kind), &fx.key, &[], &[], 1, "server_error");
        assert!(detail.contains(needle), "{kind}: {detail}");
        // skopeo bounds both answers too.
        skopeo_agrees(skopeo_copy(kind, "probe/x:v1", Some(&fx.key)), false, kind);
    }
}

#[test]
fn control_characters_from_the_registry_are_escaped_in_text_and_junit() {
    let fx = &*FIXTURE;
    for kind in ["escape", "escplat"] {
        let host = fault_host(kind);
        let tmp = tempdir();
        let cat = catalog(tmp.path(), &[("t", std::slice::from_ref(&host), "probe/x:v1")]);
        for format in ["text", "junit", "json"] {
            let run = verify_cmd(fx, &[(&host, fx.fault)])
                .arg("--regions")
                .arg(&cat)
                .arg("--api-key-env")
                .arg("K")
                .env("K", &fx.key)
                .args(["--output", format])
                .run();
            run.code(1);
            for out in [&run.stdout, &run.stderr] {
                assert!(
                    !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{9b}'),
                    "{kind} {format}: {out:?}"
                );
            }
            if format != "json" {
                run.stdout_has("\\u{1b}");
            }
        }
    }
}

#[test]
fn a_manifest_reflecting_the_authorization_header_never_prints_it() {
    let fx = &*FIXTURE;
    let detail = fault_verdict(&fault_host("reflect"), &fx.key, &[], &[], 1, "server_error");
    assert!(detail.contains("line 1 column"), "{detail}");
    assert!(!detail.contains("Basic"), "{detail}");
    skopeo_agrees(skopeo_copy("reflect", "probe/x:v1", Some(&fx.key)), false, "reflect");
    // fault_verify asserts the key (and its base64 forms) are not in the output.
}

#[test]
fn credentials_are_not_sent_after_a_redirect_to_plain_http() {
    let fx = &*FIXTURE;
    let plain = *PLAIN_PORT.get().expect("plain listener");
    let tmp = tempdir();
    let host = format!("localhost:{}", fx.fault.port());
    let cat = catalog(tmp.path(), &[("t", std::slice::from_ref(&host), "probe/x:v1")]);
    let run = rekey()
        .arg("verify")
        .arg("--ca-cert")
        .arg(&fx.ca_pem)
        .arg("--insecure-http")
        .arg(format!("localhost:{plain}"))
        .arg("--regions")
        .arg(&cat)
        .arg("--api-key-env")
        .arg("K")
        .env("K", &fx.key)
        .args(["--output", "json"])
        .run();
    run.code(0);
    assert_eq!(classes(&run)[&host], "ok", "{}", run.stdout);
    let downgraded: Vec<_> = seen("localhost")
        .into_iter()
        .filter(|(_, p, _)| p.starts_with("/cdn/"))
        .collect();
    assert!(!downgraded.is_empty());
    assert!(downgraded.iter().all(|(_, _, a)| a.is_none()), "{downgraded:?}");
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}

#[test]
fn dash_vv_logs_registry_requests_but_no_key_or_credential() {
    let wrong = Canary::new("verify-log");
    for key in [None, Some(wrong.key.as_str())] {
        // both_registries checks that neither key shows in the run.
        let (run, _, _) = both_registries("probe/single:v1", key, &["-vv"]);
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(" DEBUG GET ") && l.contains("/v2/")),
            "-vv logs registry requests: {}",
            run.stderr
        );
        for needle in ["Bearer ", "Basic ", "Authorization", "?scope", "?service"] {
            assert!(!run.stderr.contains(needle), "{needle} in the log: {}", run.stderr);
        }
    }
}
