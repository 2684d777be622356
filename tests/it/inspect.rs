//! `rekey inspect`: finds every inconsistency, shows keys only as fingerprints.

use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::PathBuf;

fn generate(dir: &std::path::Path, key: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join("out");
    rekey()
        .arg("generate")
        .arg("--regions")
        .arg(repo_root().join("regions"))
        .arg("--api-key-env")
        .arg("K")
        .env("K", key)
        .args(["--region", "jp"])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .run()
        .code(0);
    out
}

#[test]
fn accepts_generated_secret_with_fingerprints_only() {
    let tmp = tempdir();
    let canary = Canary::new("inspect-ok");
    let file = generate(tmp.path(), &canary.key, &[]).join("jp.dockerconfigjson");
    let run = rekey().args(["--output", "json", "inspect"]).arg(&file).run();
    run.code(0);
    canary.assert_not_in_run(&run);
    let v = run.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["files"][0]["hosts"].as_array().unwrap().len(), 5);
    let fp = v["files"][0]["key_fingerprint"].as_str().unwrap();
    for h in v["files"][0]["hosts"].as_array().unwrap() {
        assert_eq!(h["key_fingerprint"], fp);
        assert_eq!(h["problems"].as_array().unwrap().len(), 0);
    }
}

/// Edits one host's entry in a generated secret and returns the file.
fn tampered(dir: &std::path::Path, key: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let file = generate(dir, key, &[]).join("jp.dockerconfigjson");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    edit(&mut v);
    write(dir, "tampered.json", serde_json::to_vec(&v).unwrap())
}

#[test]
fn auth_that_does_not_match_password() {
    let tmp = tempdir();
    let canary = Canary::new("inspect-auth");
    let other = Canary::new("inspect-other");
    let file = tampered(tmp.path(), &canary.key, |v| {
        v["auths"]["jp.icr.io"]["auth"] = STANDARD.encode(format!("iamapikey:{}", other.key)).into();
    });
    let run = rekey().arg("inspect").arg(&file).run();
    run.code(1)
        .stdout_has("FAIL  jp.icr.io")
        .stdout_has("`auth` carries key sha256:");
    canary.assert_not_in_run(&run);
    other.assert_not_in_run(&run);
}

#[test]
fn hosts_with_different_keys() {
    let tmp = tempdir();
    let canary = Canary::new("inspect-diff");
    let file = tampered(tmp.path(), &canary.key, |v| {
        v["auths"]["au.icr.io"]["password"] = "other-key".into();
        v["auths"]["au.icr.io"]["auth"] = STANDARD.encode("iamapikey:other-key").into();
    });
    let run = rekey().arg("inspect").arg(&file).run();
    run.code(1)
        .stdout_has("hosts carry 2 different keys")
        .stdout_has("key inconsistent");
    canary.assert_not_in_run(&run);
}

#[test]
fn stray_whitespace_in_key() {
    let tmp = tempdir();
    let file = tampered(tmp.path(), "clean-key", |v| {
        for host in [
            "jp.icr.io",
            "au.icr.io",
            "private.jp.icr.io",
            "private.au.icr.io",
            "registry.au-syd.bluemix.net",
        ] {
            v["auths"][host]["password"] = "clean-key\n".into();
            v["auths"][host]["auth"] = STANDARD.encode("iamapikey:clean-key\n").into();
        }
    });
    rekey()
        .arg("inspect")
        .arg(&file)
        .run()
        .code(1)
        .stdout_has("whitespace or a control character at byte 9");
}

#[test]
fn wrong_username_and_bad_base64() {
    let tmp = tempdir();
    let file = tampered(tmp.path(), "k-123", |v| {
        v["auths"]["jp.icr.io"]["auth"] = "not base64!".into();
        v["auths"]["au.icr.io"]["auth"] = STANDARD.encode("someone:k-123").into();
    });
    let run = rekey().arg("inspect").arg(&file).run();
    run.code(1)
        .stdout_has("not valid standard base64")
        .stdout_has("`auth` names user (a value with fingerprint sha256:")
        .stdout_has("`username` is iamapikey");
}

/// 200 KB of nested brackets under a Secret's data once took 40 s to parse.
#[test]
fn deeply_nested_yaml_is_refused_at_once() {
    let tmp = tempdir();
    let n = 100_000;
    let file = write(
        tmp.path(),
        "nested.yaml",
        format!("kind: Secret\ndata:\n  x: {}{}\n", "[".repeat(n), "]".repeat(n)),
    );
    let started = std::time::Instant::now();
    rekey()
        .arg("inspect")
        .arg(&file)
        .run()
        .code(2)
        .stderr_has("nests deeper than 32 levels");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// A parse error once quoted the offending value, which in a pull secret is the key.
#[test]
fn parse_errors_never_quote_the_document() {
    let tmp = tempdir();
    let canary = Canary::new("inspect-parse");
    for (name, text) in [
        ("a.json", format!("{{\"auths\": \"{}\"}}", canary.key)),
        ("b.yaml", format!("kind: Secret\ntype: 7\ndata: \"{}\"\n", canary.key)),
        ("c.yaml", format!("kind: [\"{}\"\n", canary.key)),
    ] {
        let file = write(tmp.path(), name, text);
        let run = rekey().arg("inspect").arg(&file).run();
        run.code(2);
        canary.assert_not_in_run(&run);
    }
}

/// A secret with username and password swapped carries the key in
/// `username`; inspect once printed it in "`username` is `<KEY>`".
#[test]
fn swapped_username_and_password_never_print_the_key() {
    let tmp = tempdir();
    let canary = Canary::new("inspect-swapped");
    let key = canary.key.clone();
    let file = tampered(tmp.path(), &key, |v| {
        for (_, entry) in v["auths"].as_object_mut().unwrap() {
            entry["username"] = key.clone().into();
            entry["password"] = "iamapikey".into();
            entry["auth"] = STANDARD.encode(format!("{key}:iamapikey")).into();
        }
    });
    let regions = repo_root().join("regions");
    for format in ["text", "json"] {
        let run = rekey()
            .args(["--output", format, "inspect", "--regions"])
            .arg(&regions)
            .args(["--region", "jp"])
            .arg(&file)
            .run();
        run.code(1);
        canary.assert_not_in_run(&run);
        assert!(run.stdout.contains("fingerprint sha256:"), "{}", run.stdout);
    }
}

#[test]
fn hosts_must_be_exactly_the_regions() {
    let tmp = tempdir();
    let file = tampered(tmp.path(), "k-123", |v| {
        v["auths"].as_object_mut().unwrap().remove("private.jp.icr.io");
        v["auths"]["extra.icr.io"] = v["auths"]["jp.icr.io"].clone();
    });
    let regions = repo_root().join("regions");
    let run = rekey()
        .arg("inspect")
        .arg("--regions")
        .arg(&regions)
        .args(["--region", "jp"])
        .arg(&file)
        .run();
    run.code(1)
        .stdout_has("region `jp` hosts missing: private.jp.icr.io")
        .stdout_has("hosts not in region `jp`: extra.icr.io");
    // Without a region, the same file is self-consistent.
    rekey().arg("inspect").arg(&file).run().code(0);
}

#[test]
fn reads_secret_manifests_in_yaml_and_json() {
    let tmp = tempdir();
    for format in ["secret-yaml", "secret-json"] {
        let out = generate(&tmp.path().join(format), "k-manifest", &["--format", format]);
        let file = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
        rekey()
            .arg("inspect")
            .arg(&file)
            .run()
            .code(0)
            .stdout_has(": ok, 5 hosts");
    }
}

#[test]
fn bad_input_is_an_error_not_a_finding() {
    let tmp = tempdir();
    let cases: &[(&str, &str, &str)] = &[
        ("broken.json", "{\"auths\": {", "cut short (line 1, column 11)"),
        (
            "configmap.yaml",
            "kind: ConfigMap\ndata: {}\n",
            "neither a dockerconfigjson",
        ),
        (
            "opaque.yaml",
            "kind: Secret\ntype: Opaque\ndata: {}\n",
            "field `type`: the Secret is of type `Opaque`",
        ),
        (
            "nodata.yaml",
            "kind: Secret\ntype: kubernetes.io/dockerconfigjson\n",
            "field `data..dockerconfigjson` is missing",
        ),
        (
            "badb64.yaml",
            "kind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: '***'\n",
            "is not valid base64",
        ),
        ("auths-list.json", "{\"auths\": []}", "not a dockerconfigjson"),
    ];
    for (name, text, message) in cases {
        let file = write(tmp.path(), name, text);
        let run = rekey().arg("inspect").arg(&file).run();
        run.code(2).stderr_has(message).stderr_has(name);
    }
    rekey()
        .arg("inspect")
        .arg(tmp.path().join("missing.json"))
        .run()
        .code(2)
        .stderr_has("reading ");
    rekey()
        .args(["inspect", "--region", "jp", "x"])
        .run()
        .code(2)
        .stderr_has("--regions");
}

/// Runs `rekey args` with a reader on stdout that takes its first bytes
/// and then closes the pipe (as `| head -c 100` does); returns the exit
/// code and stderr.
fn with_a_reader_that_leaves_early(args: &[std::ffi::OsString]) -> (i32, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning rekey");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).expect("the first bytes of the output");
    drop(stdout);
    let out = child.wait_with_output().expect("waiting for rekey");
    let code = out.status.code().expect("rekey ended by itself, not by a signal");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_reader_that_closes_early_ends_the_output_quietly() {
    let tmp = tempdir();
    let canary = Canary::new("inspect-pipe");
    let file = generate(tmp.path(), &canary.key, &[]).join("jp.dockerconfigjson");
    // Far more than a pipe holds (64 KiB), so the reader's leaving is seen
    // by a write, whatever the timing.
    let many: Vec<std::ffi::OsString> = std::iter::repeat_n(file.clone().into_os_string(), 1000).collect();
    for format in ["json", "text"] {
        let mut args: Vec<std::ffi::OsString> = vec!["-o".into(), format.into(), "inspect".into()];
        args.extend(many.iter().cloned());
        let (code, stderr) = with_a_reader_that_leaves_early(&args);
        assert_eq!(code, 0, "inspect -o {format} | head exits as inspect would: {stderr}");
        assert!(stderr.is_empty(), "inspect -o {format} | head: {stderr}");
    }
    // Raw output (a completion script is larger than a pipe holds).
    let (code, stderr) = with_a_reader_that_leaves_early(&["completions".into(), "bash".into()]);
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn a_result_that_cannot_be_written_fails_the_command() {
    // A full disk is no closed pipe: the operator must not take a lost
    // result for a clean run, whatever the output format.
    let tmp = tempdir();
    let canary = Canary::new("inspect-full");
    let file = generate(tmp.path(), &canary.key, &[]).join("jp.dockerconfigjson");
    for format in ["text", "json"] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(["-o", format, "inspect"])
            .arg(&file)
            .env("NO_COLOR", "1")
            .stdout(full)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "inspect -o {format} > /dev/full: {stderr}");
        assert!(stderr.contains("No space left on device"), "{format}: {stderr}");
        assert!(!stderr.contains(&canary.key), "{format}: {stderr}");
    }
}
