//! `rekey generate`: byte-identical to kubectl, atomic, never leaking.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn regions() -> PathBuf {
    repo_root().join("regions")
}

/// Returns kubectl's `.dockerconfigjson` for one host (the reference implementation).
fn kubectl_dockerconfigjson(host: &str, key: &str, email: Option<&str>) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.args([
        "create",
        "secret",
        "docker-registry",
        "probe",
        "--dry-run=client",
        "-o",
        "json",
    ])
    .arg(format!("--docker-server={host}"))
    .arg("--docker-username=iamapikey")
    .arg(format!("--docker-password={key}"));
    if let Some(e) = email {
        cmd.arg(format!("--docker-email={e}"));
    }
    let out = cmd.output().expect("kubectl must be installed (see .ci/run)");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = secret["data"][".dockerconfigjson"].as_str().unwrap();
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
}

fn kubectl_manifest(host: &str, key: &str, ns: &str, format: &str) -> String {
    let out = Command::new("kubectl")
        .args([
            "create",
            "secret",
            "docker-registry",
            "all-icr-io",
            "-n",
            ns,
            "--dry-run=client",
            "-o",
            format,
        ])
        .arg(format!("--docker-server={host}"))
        .arg("--docker-username=iamapikey")
        .arg(format!("--docker-password={key}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn one_host_catalog(dir: &Path, host: &str) -> PathBuf {
    let cat = dir.join("regions");
    write(&cat, "t.toml", format!("name = \"t\"\nhosts = [\"{host}\"]\n"));
    cat
}

#[test]
fn all_six_regions_match_kubectl_per_host_and_pass_inspect() {
    let tmp = tempdir();
    let canary = Canary::new("gen-all");
    let key_file = write(tmp.path(), "key", format!("{}\n", canary.key));
    let out = tmp.path().join("out");
    let run = rekey()
        .arg("generate")
        .arg("--regions")
        .arg(regions())
        .arg("--api-key-file")
        .arg(&key_file)
        .arg("--out")
        .arg(&out)
        .run();
    run.code(0);
    canary.assert_not_in_run(&run);

    let files = snapshot(&out);
    let names: Vec<String> = files.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        ["au", "de", "fr2", "jp", "uk", "us"]
            .map(|r| format!("{r}.dockerconfigjson"))
            .to_vec()
    );
    let mut hosts_seen = 0;
    for (name, bytes) in &files {
        let path = out.join(name);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        // The file is kubectl's single-host entries joined in host order.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut hosts: Vec<String> = parsed["auths"].as_object().unwrap().keys().cloned().collect();
        hosts.sort();
        let inner: Vec<String> = hosts
            .iter()
            .map(|h| {
                // The shipped catalog carries the runbook's email in every entry.
                let k = kubectl_dockerconfigjson(h, &canary.key, Some("ibmcont3@us.ibm.com"));
                k.strip_prefix("{\"auths\":{")
                    .unwrap()
                    .strip_suffix("}}")
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(text, format!("{{\"auths\":{{{}}}}}", inner.join(",")), "{name:?}");
        hosts_seen += hosts.len();

        let region = name.to_str().unwrap().trim_end_matches(".dockerconfigjson");
        let inspect = rekey()
            .arg("inspect")
            .arg("--regions")
            .arg(regions())
            .arg("--region")
            .arg(region)
            .arg(&path)
            .run();
        inspect.code(0).stdout_has(": ok,");
        canary.assert_not_in_run(&inspect);
    }
    assert_eq!(hosts_seen, 22, "formats.md lists 22 host entries");
    canary.assert_not_in_tree(
        tmp.path(),
        &files.keys().map(|p| out.join(p)).chain([key_file]).collect::<Vec<_>>(),
    );
}

#[test]
fn awkward_keys_are_byte_identical_to_kubectl() {
    let keys = [
        "a<b>c&d",
        r#"quote"back\slash"#,
        "unicodé-ключ-鍵",
        "line\u{2028}sep",
        "dollar$`tick'single",
        "plus+slash/equals=",
    ];
    for (i, key) in keys.iter().enumerate() {
        let tmp = tempdir();
        let cat = one_host_catalog(tmp.path(), "private.jp.icr.io");
        let out = tmp.path().join("out");
        let email = if i % 2 == 0 {
            Some("ops+rekey@example.com")
        } else {
            None
        };
        let mut cmd = rekey()
            .arg("generate")
            .arg("--regions")
            .arg(&cat)
            .arg("--api-key-env")
            .arg("RK_KEY")
            .env("RK_KEY", key)
            .arg("--out")
            .arg(&out);
        if let Some(e) = email {
            cmd = cmd.arg("--email").arg(e);
        }
        let run = cmd.run();
        if key.contains('\u{2028}') {
            // U+2028 is whitespace: not a usable key, so it is rejected.
            run.code(2).stderr_has("whitespace");
            continue;
        }
        run.code(0);
        Canary::with_value(key).assert_not_in_run(&run);
        let ours = std::fs::read_to_string(out.join("t.dockerconfigjson")).unwrap();
        assert_eq!(
            ours,
            kubectl_dockerconfigjson("private.jp.icr.io", key, email),
            "key #{i}"
        );
    }
}

#[test]
fn secret_manifests_are_identical_to_kubectl() {
    let tmp = tempdir();
    let canary = Canary::new("gen-manifest");
    let cat = one_host_catalog(tmp.path(), "us.icr.io");
    for (format, ext, kube) in [
        ("secret-json", "secret.json", "json"),
        ("secret-yaml", "secret.yaml", "yaml"),
    ] {
        let out = tmp.path().join(format);
        rekey()
            .arg("generate")
            .arg("--regions")
            .arg(&cat)
            .arg("--api-key-file")
            .arg("-")
            .stdin(canary.key.clone())
            .args(["--format", format, "--namespace", "kube-system"])
            .arg("--out")
            .arg(&out)
            .run()
            .code(0);
        let ours = std::fs::read_to_string(out.join(format!("t.{ext}"))).unwrap();
        assert_eq!(
            ours,
            kubectl_manifest("us.icr.io", &canary.key, "kube-system", kube),
            "{format}"
        );
        let inspect = rekey().arg("inspect").arg(out.join(format!("t.{ext}"))).run();
        inspect.code(0);
        canary.assert_not_in_run(&inspect);
    }
}

#[test]
fn json_output_names_files_and_fingerprints_only() {
    let tmp = tempdir();
    let canary = Canary::new("gen-json");
    let out = tmp.path().join("out");
    let run = rekey()
        .args(["--output", "json", "generate", "--region", "jp", "--region", "de"])
        .arg("--regions")
        .arg(regions())
        .arg("--api-key-env")
        .arg("K")
        .env("K", &canary.key)
        .arg("--out")
        .arg(&out)
        .run();
    run.code(0);
    canary.assert_not_in_run(&run);
    let v = run.json();
    let regions: Vec<&str> = v["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["de", "jp"]);
    assert_eq!(v["regions"][1]["hosts"].as_array().unwrap().len(), 5);
    let fp = v["key_fingerprint"].as_str().unwrap();
    assert!(fp.starts_with("sha256:") && fp.len() == 15, "{fp}");
    assert_eq!(snapshot(&out).len(), 2);
}

#[test]
fn regenerating_replaces_files_atomically_and_keeps_mode() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    for key in ["first-key-1", "second-key-2"] {
        rekey()
            .arg("generate")
            .arg("--regions")
            .arg(regions())
            .arg("--api-key-env")
            .arg("K")
            .env("K", key)
            .arg("--out")
            .arg(&out)
            .run()
            .code(0);
    }
    let files = snapshot(&out);
    assert_eq!(files.len(), 6, "no temporary files are left behind: {:?}", files.keys());
    for (name, bytes) in files {
        assert!(String::from_utf8(bytes).unwrap().contains("second-key-2"));
        assert_eq!(mode(&out.join(name)), 0o600);
    }
}

/// Runs `generate` with a bad input and checks: exit 2, the message, and that
/// the output directory (holding an earlier file) is unchanged.
#[track_caller]
fn rejects(catalog: &Path, key: Option<&[u8]>, extra: &[&str], message: &str) {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let earlier = write(&out, "us.dockerconfigjson", "earlier");
    let before = snapshot(&out);
    let mut cmd = rekey()
        .arg("generate")
        .arg("--regions")
        .arg(catalog)
        .arg("--out")
        .arg(&out);
    if let Some(key) = key {
        cmd = cmd.arg("--api-key-file").arg(write(tmp.path(), "key", key));
    }
    let run = cmd.args(extra).run();
    run.code(2).stderr_has(message);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert_eq!(snapshot(&out), before, "nothing is written");
    assert_eq!(std::fs::read(earlier).unwrap(), b"earlier");
}

fn catalog_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir();
    let dir = tmp.path().join("regions");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        write(&dir, name, text);
    }
    (tmp, dir)
}

#[test]
fn bad_catalog_malformed_toml() {
    let (_t, dir) = catalog_with(&[("jp.toml", "name = \"jp\"\nhosts = [\"jp.icr.io\"\n")]);
    rejects(&dir, Some(b"k"), &[], "jp.toml: TOML parse error");
}

#[test]
fn bad_catalog_unknown_field() {
    let (_t, dir) = catalog_with(&[("jp.toml", "name = \"jp\"\nhosts = [\"jp.icr.io\"]\nhost = \"x\"\n")]);
    rejects(&dir, Some(b"k"), &[], "unknown field `host`");
}

#[test]
fn bad_catalog_duplicate_host() {
    let (_t, dir) = catalog_with(&[("jp.toml", "name = \"jp\"\nhosts = [\"jp.icr.io\", \"jp.icr.io\"]\n")]);
    rejects(
        &dir,
        Some(b"k"),
        &[],
        "jp.toml: field `hosts`: `jp.icr.io` is listed twice",
    );
}

#[test]
fn bad_catalog_duplicate_region() {
    let (_t, dir) = catalog_with(&[
        ("jp.toml", "name = \"jp\"\nhosts = [\"jp.icr.io\"]\n"),
        ("jp2.toml", "name = \"jp\"\nhosts = [\"au.icr.io\"]\n"),
    ]);
    rejects(&dir, Some(b"k"), &[], "region `jp` is defined twice");
}

#[test]
fn bad_catalog_host_forms() {
    for (host, message) in [
        ("https://jp.icr.io", "has a scheme"),
        ("jp.icr.io/v2", "has a path"),
        ("jp.icr.io.", "ends with a dot"),
        ("jp.icr.io ", "contains whitespace"),
        ("JP.icr.io", "contains upper-case letters"),
        ("jp_x.icr.io", "has an invalid label `jp_x`"),
        ("jp.icr.io:99999", "has an invalid port"),
    ] {
        let (_t, dir) = catalog_with(&[("jp.toml", &format!("name = \"jp\"\nhosts = [\"{host}\"]\n"))]);
        rejects(
            &dir,
            Some(b"k"),
            &[],
            &format!("jp.toml: field `hosts[0]`: `{host}` {message}"),
        );
    }
}

#[test]
fn bad_catalog_empty() {
    let (_t, dir) = catalog_with(&[]);
    rejects(&dir, Some(b"k"), &[], "the catalog has no regions");
}

#[test]
fn bad_catalog_missing_directory() {
    let tmp = tempdir();
    rejects(&tmp.path().join("nope"), Some(b"k"), &[], "reading ");
}

#[test]
fn bad_key_empty_file() {
    rejects(&regions(), Some(b""), &[], "the key is empty");
}

#[test]
fn bad_key_embedded_newline() {
    rejects(
        &regions(),
        Some(b"abc\ndef\n"),
        &[],
        "whitespace or a control character at byte 3",
    );
}

#[test]
fn bad_key_embedded_space() {
    rejects(
        &regions(),
        Some(b"abc def"),
        &[],
        "whitespace or a control character at byte 3",
    );
}

#[test]
fn bad_key_missing_env_var() {
    rejects(
        &regions(),
        None,
        &["--api-key-env", "REKEY_TEST_UNSET_VARIABLE"],
        "environment variable REKEY_TEST_UNSET_VARIABLE is not set",
    );
}

#[test]
fn bad_key_missing_file() {
    rejects(
        &regions(),
        None,
        &["--api-key-file", "/nonexistent/key"],
        "reading /nonexistent/key",
    );
}

#[test]
fn bad_key_unreadable_file() {
    let tmp = tempdir();
    // A directory cannot be read as a file, even by root.
    let dir = tmp.path().join("keydir");
    std::fs::create_dir(&dir).unwrap();
    rejects(&regions(), None, &["--api-key-file", dir.to_str().unwrap()], "reading ");
}

#[test]
fn bad_key_never_in_argv() {
    let run = rekey()
        .args(["generate", "--regions", "regions", "--out", "o", "--api-key", "secret"])
        .run();
    run.code(2).stderr_has("unexpected argument '--api-key'");
}

#[test]
fn bad_region_not_in_catalog() {
    rejects(
        &regions(),
        Some(b"k"),
        &["--region", "mars"],
        "region `mars` is not in the catalog",
    );
}

/// Runs `generate` for every region into `out` with a fixed key.
fn generate_into(out: &Path) -> Run {
    rekey()
        .arg("generate")
        .arg("--regions")
        .arg(regions())
        .args(["--api-key-env", "K"])
        .env("K", "k1")
        .arg("--out")
        .arg(out)
        .run()
}

#[test]
fn bad_output_dir_not_writable() {
    let tmp = tempdir();
    // A regular file where the output directory should be: not writable as a directory, even by root.
    let out = write(tmp.path(), "out", "a file");
    generate_into(&out).code(2).stderr_has("is not writable");
    assert_eq!(std::fs::read(&out).unwrap(), b"a file");
}

#[test]
fn bad_output_dir_read_only_mount_point() {
    // Inside /proc nothing can be created, even by root.
    generate_into(Path::new("/proc/rekey-out"))
        .code(2)
        .stderr_has("output directory /proc/rekey-out is not writable");
}

#[test]
fn bad_email_and_names() {
    rejects(&regions(), Some(b"k"), &["--email", "not an email"], "--email:");
    rejects(
        &regions(),
        Some(b"k"),
        &["--format", "secret-yaml", "--secret-name", "Bad_Name"],
        "--secret-name:",
    );
}

#[test]
fn unsupported_output_format_is_a_usage_error() {
    rejects(
        &regions(),
        Some(b"k"),
        &["--output", "junit"],
        "does not support --output junit",
    );
}
