//! `rekey rotate` with one key per region and the IAM key lifecycle: keys
//! created by `--create-keys` in the IAM stand-in, proven by the real
//! token-auth docker-registry (whose token server honours exactly the keys
//! IAM holds), sealed, read back with gpg, and retired later by the ids the
//! metadata records; failures after creation delete the unpublished keys;
//! `--iam-check` blocks a region whose key IAM refuses, by class.

use crate::iam_support::{Iam, SERVICE_ID};
use crate::pgp_support::*;
use crate::rotate::password_in;
use crate::support::*;
use crate::verify_support::{AUTH_HOST, FIXTURE};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const ADMIN_ENV: &str = "REKEY_TEST_IAM_ADMIN";
const PREFIX: &str = "iks-armada-master-registry-access-read-only-prod";
/// The runbook's regions and their key codes.
const REGIONS: [(&str, &str); 6] = RUNBOOK_CODES;

/// Six regions (one host each, all served by the token registry), a
/// secrets repo holding an old key, and the IAM stand-in.
struct Lab {
    tmp: tempfile::TempDir,
    iam: Iam,
    admin: String,
    auth: SocketAddr,
    old: Canary,
    /// Region → its host.
    hosts: Vec<(String, String)>,
    signed: bool,
}

fn today() -> String {
    chrono::Utc::now().format("%Y%m%d").to_string()
}

/// The runbook name of a region's key created today.
fn runbook_name(code: &str) -> String {
    format!("{PREFIX}-{code}-{}", today())
}

fn secret_file(repo: &Path, region: &str, suffix: &str) -> PathBuf {
    repo.join(format!(
        "registry/{}_REGISTRY_PULL_SECRET_64{suffix}",
        region.to_uppercase()
    ))
}

impl Lab {
    fn new(tag: &str) -> Lab {
        Lab::with_signing(tag, false)
    }

    fn with_signing(tag: &str, signed: bool) -> Lab {
        let tmp = tempdir();
        let uniq = unique_hex();
        let mut hosts = Vec::new();
        for (region, code) in REGIONS {
            let host = format!("{region}-{uniq}.reg.test");
            write(
                &tmp.path().join("regions"),
                &format!("{region}.toml"),
                format!(
                    "name = \"{region}\"\nusername = \"iamapikey\"\nprobe_image = \"armada-master/alpine:latest\"\nemail = \"ibmcont3@us.ibm.com\"\nkey_code = \"{code}\"\nhosts = [\"{host}\"]\n"
                ),
            );
            hosts.push((region.to_owned(), host));
        }
        let (iam, admin) = Iam::start();
        let auth = iam.registry_auth(&FIXTURE);
        let lab = Lab {
            tmp,
            iam,
            admin,
            auth,
            old: Canary::new(&format!("{tag}-old")),
            hosts,
            signed,
        };
        let repo = lab.repo();
        if signed {
            write(&repo, ".rekey/signers.asc", public_ring(&["signer"]));
        }
        init_secrets_repo(&repo, &["alice"]);
        seal_key(&repo, &lab.regions(), &[], &lab.old.key, None, lab.signing_args()).code(0);
        commit_all(&repo, "old key");
        lab
    }

    fn regions(&self) -> PathBuf {
        self.tmp.path().join("regions")
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    /// `rekey keys retire` of the lab's repo at `at` (RFC 3339), with the admin key.
    fn retire(&self, at: &str) -> Rekey {
        rekey()
            .args(["keys", "retire", "--repo"])
            .arg(self.repo())
            .args(["--at", at, "--iam-url", &self.iam.url(), "--iam-timeout", "10s"])
            .args(["--iam-api-key-env", ADMIN_ENV])
            .env(ADMIN_ENV, &self.admin)
    }

    fn signing_args(&self) -> Vec<String> {
        if self.signed {
            signing_args("signer")
        } else {
            Vec::new()
        }
    }

    /// `rekey rotate` against the token registry and the IAM stand-in;
    /// `broken` regions' hosts resolve to the basic registry, which refuses
    /// every key IAM issues.
    fn rotate_with(&self, broken: &[&str]) -> Rekey {
        let fx = &*FIXTURE;
        let mut cmd = rekey()
            .arg("rotate")
            .arg("--regions")
            .arg(self.regions())
            .arg("--repo")
            .arg(self.repo())
            .args(["--timeout", "10s", "--iam-url", &self.iam.url(), "--iam-timeout", "10s"])
            .arg("--ca-cert")
            .arg(&fx.ca_pem)
            .arg("--resolve")
            .arg(format!("{AUTH_HOST}={}", self.auth));
        for (region, host) in &self.hosts {
            let addr = if broken.contains(&region.as_str()) {
                fx.basic
            } else {
                fx.token
            };
            cmd = cmd.arg("--resolve").arg(format!("{host}={addr}"));
        }
        cmd.args(self.signing_args())
    }

    fn create_keys(&self, broken: &[&str]) -> Rekey {
        self.rotate_with(broken)
            .args([
                "--create-keys",
                "--service-id",
                SERVICE_ID,
                "--iam-api-key-env",
                ADMIN_ENV,
            ])
            .env(ADMIN_ENV, &self.admin)
    }

    fn meta(&self, region: &str) -> serde_json::Value {
        let bytes = std::fs::read(secret_file(&self.repo(), region, ".meta.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The password in a region's current secret, decrypted by gpg.
    fn password(&self, region: &str) -> String {
        password_in(&gpg_decrypt(&secret_file(&self.repo(), region, ".gpg")))
    }

    /// Asserts that no key IAM ever held (the admin key included) nor the
    /// old key shows in the run, the repo's files (journal included) or its
    /// git history (commit messages included).
    #[track_caller]
    fn assert_no_leak(&self, run: &Run) {
        let mut values: Vec<String> = self.iam.keys().into_iter().map(|k| k.value).collect();
        values.push(self.old.key.clone());
        let history = git(&self.repo(), &["log", "--all", "-p", "--format=%B"]);
        for v in values {
            let c = Canary::with_value(&v);
            c.assert_not_in_run(run);
            c.assert_not_in_tree(&self.repo(), &[]);
            assert!(!c.found_in(history.as_bytes()), "a key leaked into git history");
        }
    }

    /// The registry keys the IAM stand-in holds (not the admin key), by name.
    fn registry_keys(&self) -> Vec<crate::iam_support::Key> {
        self.iam
            .keys()
            .into_iter()
            .filter(|k| k.iam_id == crate::iam_support::SERVICE_IAM_ID)
            .collect()
    }
}

/// Decrypts a sealed file with gpg (alice's secret key).
fn gpg_decrypt(file: &Path) -> Vec<u8> {
    let home = tempdir();
    let import = std::process::Command::new("gpg")
        .arg("--homedir")
        .arg(home.path())
        .args(["--batch", "--quiet", "--import"])
        .arg(keys().file("alice.sec"))
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let out = std::process::Command::new("gpg")
        .arg("--homedir")
        .arg(home.path())
        .args(["--batch", "--quiet", "--decrypt"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpg --decrypt {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn six_keys_are_created_rotated_in_one_run_and_retired_later_by_their_ids() {
    let lab = Lab::new("create6");
    let run = lab.create_keys(&[]).args(["--commit", "--output", "json"]).run();
    run.code(0);
    lab.assert_no_leak(&run);
    let doc = run.json();
    let created = lab.registry_keys();
    assert_eq!(created.len(), 6, "one key per region");
    for (region, code) in REGIONS {
        let key = created
            .iter()
            .find(|k| k.name == runbook_name(code))
            .unwrap_or_else(|| panic!("no key named for {region}"));
        assert!(!key.deleted && lab.iam.accepts(&key.value));
        assert_eq!(lab.password(region), key.value, "{region} carries its own key");
        let meta = lab.meta(region);
        assert_eq!(meta["active"]["iam_key_id"], key.id.as_str());
        assert_eq!(meta["active"]["key_name"], runbook_name(code).as_str());
        let r = region_row(&doc, region);
        assert_eq!(r["action"], "rotate");
        assert_eq!(r["key_name"], runbook_name(code).as_str());
        assert_eq!(r["iam_key_id"], key.id.as_str());
    }
    assert!(
        doc["created_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["outcome"] == "published"),
        "{doc}"
    );
    let message = git(&lab.repo(), &["log", "-1", "--format=%B"]);
    for (region, code) in REGIONS {
        assert!(
            message.contains(&format!("  {region}: {} (", runbook_name(code))),
            "{message}"
        );
    }
    assert_eq!(git(&lab.repo(), &["status", "--porcelain"]), "");
    assert!(!lab.repo().join(".git/rekey/journal.json").exists());

    // A second rotation: the first run's keys become previous, with their ids.
    let first: Vec<(String, String)> = REGIONS
        .iter()
        .map(|(r, _)| {
            (
                r.to_string(),
                lab.meta(r)["active"]["iam_key_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let again = lab.create_keys(&[]).arg("--commit").run();
    again.code(0);
    lab.assert_no_leak(&again);
    for (region, id) in &first {
        assert_eq!(lab.meta(region)["previous"]["iam_key_id"], id.as_str());
    }
    // The grace period over, `keys retire` disables the first run's keys by id.
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let retire = lab.retire(&later).arg("--commit").run();
    retire.code(0);
    lab.assert_no_leak(&retire);
    let now_keys = lab.registry_keys();
    for (region, id) in &first {
        let k = now_keys.iter().find(|k| &k.id == id).unwrap();
        assert!(k.disabled, "{region}'s previous key is retired");
        let current = lab.meta(region)["active"]["iam_key_id"].as_str().unwrap().to_owned();
        let k = now_keys.iter().find(|k| k.id == current).unwrap();
        assert!(lab.iam.accepts(&k.value), "{region}'s current key still works");
    }
}

#[test]
fn a_creation_failure_midway_deletes_the_keys_already_created() {
    let lab = Lab::new("createfail");
    lab.iam.fail_creations_after(3);
    let head = git(&lab.repo(), &["rev-parse", "HEAD"]);
    let run = lab.create_keys(&[]).arg("--commit").run();
    run.code(2).stderr_has("deleted the 3 keys it created");
    lab.assert_no_leak(&run);
    let keys = lab.registry_keys();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.deleted), "{keys:?}");
    assert_eq!(git(&lab.repo(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&lab.repo(), &["status", "--porcelain"]), "");
    assert!(!lab.repo().join(".git/rekey/journal.json").exists());
    // Nothing is left behind: the next run starts afresh.
    lab.iam.fail_creations_after(100);
    lab.create_keys(&[]).arg("--commit").run().code(0);
}

#[test]
fn a_verification_failure_after_creation_deletes_the_unpublished_keys() {
    let lab = Lab::new("createblock");
    let run = lab
        .create_keys(&["de", "uk"])
        .args(["--commit", "--output", "json"])
        .run();
    run.code(1);
    lab.assert_no_leak(&run);
    let doc = run.json();
    let keys = lab.registry_keys();
    assert_eq!(keys.len(), 6);
    for (region, code) in REGIONS {
        let key = keys.iter().find(|k| k.name == runbook_name(code)).unwrap();
        let blocked = region == "de" || region == "uk";
        assert_eq!(key.deleted, blocked, "{region}");
        let r = region_row(&doc, region);
        let c = doc["created_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["region"] == region)
            .unwrap();
        if blocked {
            assert_eq!(r["action"], "blocked");
            assert_eq!(c["outcome"], "deleted");
            assert_eq!(lab.password(region), lab.old.key, "{region} keeps its old key");
        } else {
            assert_eq!(c["outcome"], "published");
            assert_eq!(lab.password(region), key.value);
        }
    }
    let message = git(&lab.repo(), &["log", "-1", "--format=%B"]);
    assert!(!message.contains("  de:") && message.contains("  jp:"), "{message}");
}

#[test]
fn per_region_keys_from_a_directory_with_runbook_names() {
    let lab = Lab::new("keysdir");
    let dir = lab.tmp.path().join("keys");
    let mut canaries = Vec::new();
    for (region, code) in REGIONS {
        let c = Canary::new(&format!("keysdir-{region}"));
        lab.iam.add_key(&runbook_name(code), &c.key);
        write(&dir, &format!("{region}.key"), format!("{}\n", c.key));
        canaries.push((region, c));
    }
    git(&lab.repo(), &["checkout", "-qb", "pr"]);
    let run = lab
        .rotate_with(&[])
        .arg("--api-keys-dir")
        .arg(&dir)
        .args(["--commit", "--iam-check"])
        .run();
    run.code(0);
    lab.assert_no_leak(&run);
    for (region, c) in &canaries {
        assert_eq!(lab.password(region), c.key, "{region}");
        assert!(
            lab.meta(region)["active"]["iam_key_id"].is_string(),
            "--iam-check records the IAM id"
        );
    }
    let message = git(&lab.repo(), &["log", "-1", "--format=%B"]);
    assert!(message.contains("to new per-region keys"), "{message}");
    assert!(
        message.contains(&format!("  jp: {} (", runbook_name("ap-north"))),
        "{message}"
    );
    run.stdout_has(&runbook_name("eu-fr2"));
    // The pre-merge check shows each secret's new key name.
    let check = check_cmd(&lab.repo(), "main", "pr").run();
    check.code(0);
    lab.assert_no_leak(&check);
    for (region, code) in REGIONS {
        check.stdout_has(&format!(
            "{}_REGISTRY_PULL_SECRET_64 ({region}): {} -> ",
            region.to_uppercase(),
            rekey::fingerprint::Fingerprint::of(lab.old.key.as_bytes())
        ));
        check.stdout_has(&format!(" ({})", runbook_name(code)));
    }
}

#[test]
fn a_key_name_for_another_region_is_refused_before_anything_happens() {
    let lab = Lab::new("badcode");
    let before = snapshot(&lab.repo());
    let run = lab
        .rotate_with(&[])
        .args([
            "--region",
            "jp",
            "--api-key-env",
            "K",
            "--key-name",
            &runbook_name("ap-south"),
        ])
        .env("K", "some-key-value")
        .run();
    run.code(2).stderr_has("does not carry region jp's key code `ap-north`");
    assert!(lab.iam.calls().is_empty(), "IAM is not asked");
    assert_eq!(snapshot(&lab.repo()), before);
    // A template without {code}'s region code is refused the same way.
    lab.rotate_with(&[])
        .args(["--region", "jp", "--api-key-env", "K"])
        .args(["--key-name-template", "iks-registry-{region}-{date}"])
        .env("K", "some-key-value")
        .run()
        .code(2)
        .stderr_has("key code");
    // One --key-name for regions with different keys is refused.
    let dir = lab.tmp.path().join("two");
    write(&dir, "jp.key", "key-one");
    write(&dir, "au.key", "key-two");
    lab.rotate_with(&[])
        .args(["--region", "jp", "--region", "au", "--api-keys-dir"])
        .arg(&dir)
        .args(["--key-name", &runbook_name("ap-north")])
        .run()
        .code(2);
    assert_eq!(snapshot(&lab.repo()), before);
}

#[test]
fn iam_check_blocks_a_region_whose_key_is_disabled_by_class() {
    let lab = Lab::new("iamcheck");
    let dir = lab.tmp.path().join("keys");
    let mut canaries = Vec::new();
    for (region, code) in REGIONS.iter().filter(|(r, _)| *r == "jp" || *r == "us") {
        let c = Canary::new(&format!("iamcheck-{region}"));
        lab.iam.add_key(&runbook_name(code), &c.key);
        write(&dir, &format!("{region}.key"), &c.key);
        canaries.push(c);
    }
    lab.iam.edit(&canaries[0].key, |k| k.disabled = true);
    let run = lab
        .rotate_with(&[])
        .args(["--region", "jp", "--region", "us", "--api-keys-dir"])
        .arg(&dir)
        .args(["--iam-check", "--iam-api-key-env", ADMIN_ENV, "--output", "json"])
        .env(ADMIN_ENV, &lab.admin)
        .run();
    run.code(1);
    lab.assert_no_leak(&run);
    let doc = run.json();
    let jp = &doc["regions"][0];
    assert_eq!(jp["region"], "jp");
    assert_eq!(jp["action"], "blocked");
    assert_eq!(jp["iam"]["class"], "disabled", "{doc}");
    assert_eq!(
        jp["failing_hosts"].as_array().unwrap().len(),
        0,
        "no registry was asked"
    );
    assert_eq!(doc["regions"][1]["action"], "rotate");
    assert_eq!(lab.password("jp"), lab.old.key);
    assert_eq!(lab.password("us"), canaries[1].key);
    // The text report names the class.
    lab.rotate_with(&[])
        .args(["--region", "jp", "--api-keys-dir"])
        .arg(&dir)
        .args(["--iam-check", "--iam-api-key-env", ADMIN_ENV])
        .env(ADMIN_ENV, &lab.admin)
        .run()
        .code(1)
        .stdout_has(&format!("IAM says {} (", runbook_name("ap-north")))
        .stdout_has("is disabled");
    // IAM unreachable: exit 2, nothing written.
    let before = snapshot(&lab.repo());
    let unreachable = rekey()
        .arg("rotate")
        .arg("--regions")
        .arg(lab.regions())
        .arg("--repo")
        .arg(lab.repo())
        .args(["--region", "jp", "--api-keys-dir"])
        .arg(&dir)
        .args(["--iam-check", "--iam-url", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--iam-timeout", "2s"])
        .run();
    unreachable.code(2);
    lab.assert_no_leak(&unreachable);
    let work_tree = |s: std::collections::BTreeMap<PathBuf, Vec<u8>>| {
        s.into_iter()
            .filter(|(p, _)| !p.starts_with(".git"))
            .collect::<Vec<_>>()
    };
    assert_eq!(work_tree(snapshot(&lab.repo())), work_tree(before));
}

#[test]
fn a_pr_cannot_retarget_the_previous_keys_iam_id() {
    let lab = Lab::with_signing("retarget", true);
    lab.create_keys(&[]).args(["--region", "jp", "--commit"]).run().code(0);
    lab.create_keys(&[]).args(["--region", "jp", "--commit"]).run().code(0);
    let meta = lab.meta("jp");
    let vouched = meta["previous"]["iam_key_id"].as_str().unwrap().to_owned();
    // The statement names the id it vouches for.
    let statement = meta["active"]["signed"]["statement"].as_str().unwrap();
    assert!(statement.contains("\niam-key-id ApiKey-"), "{statement}");
    // A PR points previous.iam_key_id at another key (here: the current one).
    git(&lab.repo(), &["checkout", "-qb", "pr"]);
    let mut edited = meta.clone();
    edited["previous"]["iam_key_id"] = meta["active"]["iam_key_id"].clone();
    std::fs::write(
        secret_file(&lab.repo(), "jp", ".meta.json"),
        serde_json::to_vec_pretty(&edited).unwrap(),
    )
    .unwrap();
    git(&lab.repo(), &["commit", "-qam", "innocent metadata tidy-up"]);
    let check = check_cmd(&lab.repo(), "main", "pr").run();
    assert_ne!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(
        (check.stdout.clone() + &check.stderr).contains("iam_key_id"),
        "{}{}",
        check.stdout,
        check.stderr
    );
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let retire = lab.retire(&later).run();
    retire.code(2).stderr_has("not vouched for");
    assert!(
        lab.registry_keys().iter().all(|k| !k.disabled && !k.deleted),
        "nothing was retired"
    );
    // On main, the vouched id retires as usual.
    git(&lab.repo(), &["checkout", "-q", "main"]);
    assert_eq!(lab.meta("jp")["previous"]["iam_key_id"], vouched.as_str());
    let retire = lab.retire(&later).run();
    retire.code(0);
    lab.assert_no_leak(&retire);
    let keys = lab.registry_keys();
    assert!(keys.iter().any(|k| k.id == vouched && k.disabled), "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.disabled).count(), 1);
}

#[test]
fn a_pr_cannot_backdate_the_current_version_to_retire_the_previous_key_early() {
    let lab = Lab::with_signing("backdate", true);
    lab.create_keys(&[]).args(["--region", "jp", "--commit"]).run().code(0);
    lab.create_keys(&[]).args(["--region", "jp", "--commit"]).run().code(0);
    // A PR drops the current version's (vouched) id and back-dates it, so
    // the previous key's grace period would look long over.
    let mut edited = lab.meta("jp");
    edited["active"].as_object_mut().unwrap().remove("iam_key_id");
    edited["active"]["rotated_at"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(
        secret_file(&lab.repo(), "jp", ".meta.json"),
        serde_json::to_vec_pretty(&edited).unwrap(),
    )
    .unwrap();
    git(&lab.repo(), &["commit", "-qam", "innocent metadata tidy-up"]);
    let soon = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let retire = lab.retire(&soon).run();
    retire
        .code(2)
        .stderr_has("the signed statement says iam-key-id")
        .stderr_has("did not vouch for");
    lab.assert_no_leak(&retire);
    assert!(
        lab.registry_keys().iter().all(|k| !k.disabled && !k.deleted),
        "nothing was retired inside the grace period"
    );
}

#[test]
fn a_rotation_that_drops_a_never_retired_previous_key_says_so() {
    let lab = Lab::new("dropped");
    lab.create_keys(&[]).args(["--region", "jp", "--commit"]).run().code(0);
    lab.create_keys(&[]).args(["--region", "jp", "--commit"]).run().code(0);
    let first = lab.meta("jp")["previous"]["iam_key_id"].as_str().unwrap().to_owned();
    // The first key was never retired; a third rotation replaces `previous`.
    let run = lab
        .create_keys(&[])
        .args(["--region", "jp", "--commit", "--output", "json"])
        .run();
    run.code(0)
        .stderr_has(&format!("{first}) was never retired in IAM"))
        .stderr_has("delete or disable it in IAM by hand");
    lab.assert_no_leak(&run);
    let dropped = &run.json()["dropped_keys"];
    assert_eq!(dropped[0]["region"], "jp", "{dropped}");
    assert_eq!(dropped[0]["iam_key_id"], first.as_str(), "{dropped}");
    assert!(
        lab.registry_keys()
            .iter()
            .any(|k| k.id == first && !k.disabled && !k.deleted),
        "the key is still alive in IAM, as reported"
    );
}

#[test]
fn abort_deletes_the_keys_a_killed_create_keys_run_left_in_iam() {
    let lab = Lab::new("abortkeys");
    // What a run killed right after creating two keys leaves: its journal.
    let a = lab.iam.add_key(&runbook_name("ap-north"), &Canary::new("abort-a").key);
    let b = lab.iam.add_key(&runbook_name("us-east"), &Canary::new("abort-b").key);
    let digest = serde_json::json!({"algorithm": "hmac-sha256", "salt": "00".repeat(32), "value": "00".repeat(32)});
    let entry = |name: &str, id: &str| {
        serde_json::json!({"stage": "planned", "key_name": name, "key_fingerprint": "sha256:00000000",
            "key_digest": digest, "iam_key_id": id})
    };
    let journal = serde_json::json!({
        "schema": 2, "started_at": "2026-11-24T10:00:00Z",
        "regions": {"jp": entry(&a.name, &a.id), "us": entry(&b.name, &b.id)},
        "created": [
            {"region": "jp", "key_name": a.name, "iam_key_id": a.id},
            {"region": "us", "key_name": b.name, "iam_key_id": b.id},
        ],
    });
    write(&lab.repo(), ".git/rekey/journal.json", journal.to_string());
    // A rerun cannot resume it: the key values are gone.
    let rerun = lab.create_keys(&[]).run();
    rerun.code(2).stderr_has("cannot be resumed").stderr_has(&a.id);
    assert_eq!(lab.registry_keys().len(), 2, "the refused rerun created nothing");
    // Without the admin key, --abort lists them for cleanup (exit 1).
    let listed = rekey().args(["rotate", "--abort", "--repo"]).arg(lab.repo()).run();
    listed.code(1).stdout_has(&format!("LEFT     IAM key {}", a.id));
    // The journal is gone by then; abort again with the admin key after
    // putting it back, as the operator would after a kill.
    write(&lab.repo(), ".git/rekey/journal.json", journal.to_string());
    let run = rekey()
        .args(["rotate", "--abort", "--repo"])
        .arg(lab.repo())
        .args(["--iam-url", &lab.iam.url(), "--iam-api-key-env", ADMIN_ENV])
        .env(ADMIN_ENV, &lab.admin)
        .run();
    run.code(0).stdout_has(&format!("deleted  IAM key {}", b.id));
    lab.assert_no_leak(&run);
    assert!(lab.registry_keys().iter().all(|k| k.deleted));
    assert!(!lab.repo().join(".git/rekey/journal.json").exists());
}

#[test]
fn the_ci_job_creates_the_keys_with_the_masked_admin_key_by_variable_name() {
    let lab = Lab::new("cijob");
    let fx = &*FIXTURE;
    // A wrapper that records rekey's arguments and adds the test registry's
    // CA and addresses (options the job leaves to the CI system).
    let argv = lab.tmp.path().join("argv");
    let mut extra = format!(
        "--ca-cert '{}' --resolve '{AUTH_HOST}={}' --timeout 10s",
        fx.ca_pem.display(),
        lab.auth
    );
    for (_, host) in &lab.hosts {
        extra.push_str(&format!(" --resolve '{host}={}'", fx.token));
    }
    let wrapper = rekey_wrapper(lab.tmp.path(), &argv, &extra);
    let out = rekey_job_rotate(&wrapper, &lab.repo(), &lab.regions())
        .env("REKEY_SERVICE_ID", SERVICE_ID)
        .env("REKEY_IAM_URL", lab.iam.url())
        .env("REKEY_IAM_API_KEY", &lab.admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = std::fs::read_to_string(&argv).unwrap();
    assert!(args.contains("--create-keys\n--service-id\n"), "{args}");
    assert!(args.contains("--iam-api-key-env\nREKEY_IAM_API_KEY\n"), "{args}");
    assert!(!args.contains(&lab.admin), "the admin key on the command line");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    lab.assert_no_leak(&run);
    assert_eq!(lab.registry_keys().len(), 6);
    for (region, code) in REGIONS {
        assert_eq!(lab.meta(region)["active"]["key_name"], runbook_name(code).as_str());
    }

    // The shipped workflow runs that job with the masked admin key by name.
    let text = std::fs::read_to_string(repo_root().join("ci/github/rotation.yml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let steps = doc["jobs"]["rotate"]["steps"].as_sequence().unwrap();
    let step = steps
        .iter()
        .find(|s| s["run"].as_str() == Some("bash ci/rekey-job rotate"))
        .unwrap();
    assert_eq!(step["env"]["REKEY_IAM_API_KEY"], "${{ secrets.REKEY_IAM_API_KEY }}");
    assert_eq!(step["env"]["REKEY_IAM_API_KEY_ENV"], "REKEY_IAM_API_KEY");
    assert_eq!(step["env"]["REKEY_SERVICE_ID"], "${{ vars.REKEY_SERVICE_ID }}");
    assert!(doc["jobs"]["retire"].is_mapping(), "the later retire job stays");
}

#[test]
fn a_create_keys_dry_run_names_the_keys_and_creates_nothing() {
    let lab = Lab::new("createdry");
    let before = snapshot(&lab.repo());
    let run = lab.create_keys(&[]).arg("--dry-run").run();
    run.code(0);
    for (region, code) in REGIONS {
        run.stdout_has(&format!("{region:<6} would rotate"))
            .stdout_has(&format!("-> {} (to be created in IAM)", runbook_name(code)));
    }
    assert!(lab.registry_keys().is_empty(), "a dry run creates no key");
    assert!(
        lab.iam
            .calls()
            .iter()
            .all(|(m, p)| m == "GET" || p == "/identity/token"),
        "{:?}",
        lab.iam.calls()
    );
    assert_eq!(snapshot(&lab.repo()), before);
    lab.assert_no_leak(&run);
    // {service} is the service ID's name as IAM reports it.
    let service = lab
        .create_keys(&[])
        .args([
            "--dry-run",
            "--region",
            "jp",
            "--key-name-template",
            "{service}-prod-{code}-{date}",
        ])
        .run();
    service
        .code(0)
        .stdout_has(&format!("-> {} (to be created", runbook_name("ap-north")));
    // Without --service-id there is no name to fill in.
    lab.rotate_with(&[])
        .args([
            "--region",
            "jp",
            "--api-key-env",
            "K",
            "--key-name-template",
            "{service}-{code}-{date}",
        ])
        .env("K", "some-key-value")
        .run()
        .code(2)
        .stderr_has("uses {service}, the service ID's name in IAM: give --service-id");
    assert_eq!(snapshot(&lab.repo()), before);
}

#[test]
fn a_create_keys_run_killed_after_creation_is_refused_and_abort_deletes_its_keys() {
    let lab = Lab::new("createkill");
    let head = git(&lab.repo(), &["rev-parse", "HEAD"]);
    // jp's host answers after 30 s: the run is verifying when it is killed.
    let slow = format!("slow-{}.fault.test", unique_hex());
    write(
        &lab.regions(),
        "jp.toml",
        format!(
            "name = \"jp\"\nusername = \"iamapikey\"\nprobe_image = \"armada-master/alpine:latest\"\nemail = \"ibmcont3@us.ibm.com\"\nkey_code = \"ap-north\"\nhosts = [\"{slow}\"]\n"
        ),
    );
    let mut child = lab
        .create_keys(&[])
        .arg("--resolve")
        .arg(format!("{slow}={}", FIXTURE.fault))
        .spawn();
    let journal = lab.repo().join(".git/rekey/journal.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let created = std::fs::read(&journal)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|j| j["created"].as_array().map(Vec::len))
            .unwrap_or(0);
        if created == 6 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run never created its keys");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Killed while proving the keys (jp's host takes 30 s; the pull timeout is 10 s).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the run is still verifying");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        lab.registry_keys().iter().filter(|k| !k.deleted).count(),
        6,
        "killed: nothing deleted them"
    );

    // A rerun cannot resume it (IAM does not keep the values) and names the keys.
    let rerun = lab.create_keys(&[]).run();
    rerun.code(2).stderr_has("cannot be resumed");
    for k in lab.registry_keys() {
        rerun.stderr_has(&k.id);
    }
    lab.assert_no_leak(&rerun);
    // --abort with the admin key deletes every key it created and restores the repo.
    let abort = rekey()
        .args(["rotate", "--abort", "--repo"])
        .arg(lab.repo())
        .args([
            "--iam-url",
            &lab.iam.url(),
            "--iam-api-key-env",
            ADMIN_ENV,
            "--output",
            "json",
        ])
        .env(ADMIN_ENV, &lab.admin)
        .run();
    abort.code(0);
    lab.assert_no_leak(&abort);
    assert_eq!(abort.json()["keys"].as_array().unwrap().len(), 6, "{}", abort.stdout);
    assert!(lab.registry_keys().iter().all(|k| k.deleted));
    assert!(!journal.exists());
    assert_eq!(git(&lab.repo(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&lab.repo(), &["status", "--porcelain"]), "");
}

/// The journal of an unfinished rotation, parsed.
fn journal_of(lab: &Lab) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab.repo().join(".git/rekey/journal.json")).unwrap()).unwrap()
}

#[test]
fn a_key_whose_creation_answer_was_lost_is_found_by_its_marker_and_deleted_by_abort() {
    let lab = Lab::new("lostanswer");
    // Older keys of the service ID fill several pages of IAM's key list.
    let older: Vec<_> = (0..5)
        .map(|i| {
            lab.iam
                .add_key(&format!("older-key-{i}"), &Canary::new(&format!("lost-old{i}")).key)
        })
        .collect();
    let head = git(&lab.repo(), &["rev-parse", "HEAD"]);
    // IAM creates jp's key (the fourth) but its answer never reaches rekey.
    lab.iam.lose_creation_answer(3);
    let run = lab.create_keys(&[]).arg("--commit").run();
    run.code(2)
        .stderr_has("creating key")
        .stderr_has("deleted the 3 keys it created")
        .stderr_has("creation got no answer");
    lab.assert_no_leak(&run);
    let orphan: Vec<_> = lab
        .registry_keys()
        .into_iter()
        .filter(|k| !k.deleted && !k.name.starts_with("older-key"))
        .collect();
    assert_eq!(orphan.len(), 1, "only the unanswered key is left: {orphan:?}");
    let orphan = &orphan[0];
    assert_eq!(orphan.name, runbook_name("ap-north"));
    assert_eq!(
        lab.iam
            .calls()
            .iter()
            .filter(|(m, p)| m == "POST" && p == "/v1/apikeys")
            .count(),
        4,
        "a creation whose answer was lost is not repeated"
    );
    // The journal kept the intent: the name and the marker the key carries.
    let journal = journal_of(&lab);
    let intents = journal["intents"].as_array().unwrap();
    assert_eq!(intents.len(), 1, "{journal}");
    assert_eq!(intents[0]["key_name"], orphan.name.as_str());
    let marker = intents[0]["marker"].as_str().unwrap().to_owned();
    assert!(
        orphan.description.split_whitespace().any(|w| w == marker),
        "{}",
        orphan.description
    );
    run.stderr_has(&marker).stderr_has(&orphan.name);
    assert!(!run.stderr.contains(&orphan.id), "rekey never learned the id");

    // A rerun is refused and says what to look for.
    let rerun = lab.create_keys(&[]).run();
    rerun.code(2).stderr_has("cannot be resumed").stderr_has(&marker);
    lab.assert_no_leak(&rerun);

    // Without the admin key, --abort says which name and marker to look for (exit 1).
    let saved = std::fs::read(lab.repo().join(".git/rekey/journal.json")).unwrap();
    let listed = rekey().args(["rotate", "--abort", "--repo"]).arg(lab.repo()).run();
    listed
        .code(1)
        .stdout_has(&format!("LOOK FOR IAM key named {}", orphan.name))
        .stdout_has(&marker);
    lab.assert_no_leak(&listed);
    assert!(lab.registry_keys().iter().any(|k| k.id == orphan.id && !k.deleted));

    // With it (the journal put back, as after a kill), --abort lists the
    // service ID's keys page by page, finds the key by its marker and deletes it.
    write(&lab.repo(), ".git/rekey/journal.json", saved);
    let abort = rekey()
        .args(["rotate", "--abort", "--repo"])
        .arg(lab.repo())
        .args(["--iam-url", &lab.iam.url(), "--iam-api-key-env", ADMIN_ENV])
        .env(ADMIN_ENV, &lab.admin)
        .run();
    abort
        .code(0)
        .stdout_has(&format!("deleted  IAM key {} ({}", orphan.id, orphan.name));
    lab.assert_no_leak(&abort);
    let lists = lab
        .iam
        .calls()
        .iter()
        .filter(|(m, p)| m == "GET" && p == "/v1/apikeys")
        .count();
    assert!(lists >= 3, "the list was read page by page ({lists} pages)");
    let keys = lab.registry_keys();
    assert!(
        keys.iter().any(|k| k.id == orphan.id && k.deleted),
        "IAM no longer holds it"
    );
    for o in &older {
        assert!(
            keys.iter().any(|k| k.id == o.id && !k.deleted),
            "other keys of the service ID stay"
        );
    }
    assert!(!lab.repo().join(".git/rekey/journal.json").exists());
    assert_eq!(git(&lab.repo(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&lab.repo(), &["status", "--porcelain"]), "");
}

#[test]
fn dash_vv_logs_each_iam_request_without_a_key_or_token() {
    let lab = Lab::new("createlog");
    let run = lab.create_keys(&[]).arg("-vv").run();
    run.code(0);
    lab.assert_no_leak(&run);
    let iam_lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains(" DEBUG IAM ")).collect();
    assert!(
        iam_lines
            .iter()
            .any(|l| l.contains("POST") && l.contains("-> HTTP 200 (attempt 1)")),
        "-vv logs IAM requests by method, path and status: {}",
        run.stderr
    );
    // Tokens the stand-in issued (`rktoken…`) and headers never show.
    for needle in ["rktoken", "Bearer ", "Authorization", "apikey="] {
        assert!(!run.stderr.contains(needle), "{needle} in the log: {}", run.stderr);
    }
}

/// The row of `region` in a rotate JSON report.
fn region_row<'a>(doc: &'a serde_json::Value, region: &str) -> &'a serde_json::Value {
    doc["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .unwrap()
}
