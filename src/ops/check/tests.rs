//! In-process tests of the `check` operation: real git in a temp dir (a base
//! branch and a pull-request branch), certificates and messages made with
//! sequoia, a fixed clock and recorded events.

use super::*;
use crate::fingerprint::Fingerprint;
use crate::ops::world::{FixedClock, RecordedEvents};
use crate::secrets_repo::layout::{Existing, Plan, SealRequest, State};
use crate::secrets_repo::leakscan;
use crate::secrets_repo::pgp::Validity;
use crate::secrets_repo::signing::SigningKey;
use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::serialize::{Serialize as _, SerializeInto as _};
use std::path::Path;
use std::time::Duration;

const NAME: &str = "JP_REGISTRY_PULL_SECRET_64";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct Repo {
    dir: tempfile::TempDir,
    /// The repo's git, as `check` reads revisions.
    revisions: GitRepo,
    /// `now()`, the clock of every check unless one says otherwise.
    clock: FixedClock,
    alice: Cert,
    bob: Cert,
    carol: Cert,
}

fn cert(uid: &str, validity: Option<Duration>) -> Cert {
    let mut b =
        CertBuilder::general_purpose(Some(uid)).set_creation_time(SystemTime::from(now()) - Duration::from_secs(86400));
    if let Some(v) = validity {
        b = b.set_validity_period(v);
    }
    b.generate().unwrap().0
}

fn armored(certs: &[&Cert]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in certs {
        let public = (*c).clone().strip_secret_key_material();
        public.armored().serialize(&mut out).unwrap();
    }
    out
}

impl Repo {
    /// A repo whose `main` holds jp sealed for alice and bob, with `pr` checked out from it.
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo {
            revisions: GitRepo(dir.path().to_owned()),
            dir,
            clock: FixedClock(now()),
            alice: cert("alice <alice@example.com>", None),
            bob: cert("bob <bob@example.com>", None),
            carol: cert("carol <carol@example.com>", Some(Duration::from_secs(400 * 86400))),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write(layout::RECIPIENTS_FILE, &armored(&[&repo.alice, &repo.bob]));
        repo.seal(b"old plaintext", "old-key");
        repo.commit("base");
        repo.git(&["checkout", "-qb", "pr"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) {
        crate::ops::tests::git(self.path(), args);
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path().join(rel)).unwrap()
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", message]);
    }

    fn policy(&self) -> RecipientSet {
        let certs = pgp::parse_certs(&self.read(layout::RECIPIENTS_FILE), "r").unwrap();
        pgp::check_recipients(
            &certs,
            now().into(),
            Validity {
                min: None,
                warn: Duration::ZERO,
            },
        )
        .unwrap()
    }

    fn meta(&self) -> Metadata {
        Metadata::parse(&self.read(&format!("registry/{NAME}.meta.json")), "m").unwrap()
    }

    /// Seals `plain` for jp to the work tree's policy, as `rekey seal` does.
    fn seal(&self, plain: &[u8], key: &str) {
        self.seal_signed(plain, key, None, None);
    }

    /// Seals like [`Repo::seal`], signed inside by `inner` and the statement
    /// by `outer` when given.
    fn seal_signed(&self, plain: &[u8], key: &str, inner: Option<&SigningKey>, outer: Option<&SigningKey>) {
        let meta_path = format!("registry/{NAME}.meta.json");
        let old_meta = self.path().join(&meta_path).exists().then(|| self.meta());
        let old_active = old_meta.as_ref().map(|_| self.read(&format!("registry/{NAME}.gpg")));
        let existing = old_meta.as_ref().map(|meta| Existing {
            meta,
            active: old_active.as_deref().unwrap(),
            pending: None,
        });
        let req = SealRequest {
            name: NAME,
            region: "jp",
            plaintext: plain,
            key_name: Some("iks-key-20261101"),
            key_fingerprint: Fingerprint::of(key.as_bytes()),
            iam_key_id: None,
            state: State::Current,
            now: now(),
            salt: [7; 32],
            signer: inner,
        };
        let Plan::Write(mut rw) = layout::plan_seal(existing, &req, &self.policy()).unwrap() else {
            panic!("nothing to write");
        };
        if let Some(key) = outer {
            let old_previous = old_meta
                .as_ref()
                .and_then(|m| m.previous.as_ref())
                .map(|_| self.read(&format!("registry/{NAME}.previous.gpg")));
            let disk = old_meta.as_ref().map(|meta| authorship::OnDisk {
                meta,
                active: old_active.as_deref().unwrap(),
                previous: old_previous.as_deref(),
                pending: None,
            });
            authorship::sign_rewrite(&mut rw, disk.as_ref(), None, key, now()).unwrap();
        }
        self.write(&meta_path, &rw.meta.render());
        if let Some(a) = &rw.active {
            self.write(&format!("registry/{NAME}.gpg"), a);
        }
        if let Some(p) = &rw.previous {
            self.write(&format!("registry/{NAME}.previous.gpg"), p);
        }
    }

    fn check_at(&self, clock: DateTime<Utc>, keys: Option<&SecretKeys>) -> (CheckReport, RecordedEvents) {
        let events = RecordedEvents::default();
        let req = CheckRequest { keys, ..pr_request() };
        let world = CheckWorld {
            clock: &FixedClock(clock),
            ..self.world(&events)
        };
        let report = check(&req, &world).unwrap();
        (report, events)
    }

    /// Checking this repo at `now()`: no pulls, no IAM, events to `events`.
    fn world<'a>(&'a self, events: &'a dyn Events) -> CheckWorld<'a> {
        CheckWorld {
            git: &self.revisions,
            pull: None,
            iam: None,
            clock: &self.clock,
            events,
        }
    }

    fn check(&self) -> CheckReport {
        self.check_at(now(), None).0
    }
}

/// Checking `pr` against `main`: no key, no catalog, the base's allowlist.
fn pr_request() -> CheckRequest<'static> {
    CheckRequest {
        base: "main".into(),
        head: "pr".into(),
        keys: None,
        catalog: None,
        allowlist: None,
    }
}

fn failed<'a>(report: &'a CheckReport, kind: &str, target: &str) -> &'a CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.kind == kind && c.target == target && !c.ok)
        .unwrap_or_else(|| panic!("no failing {kind} check of {target}: {:#?}", report.checks))
}

#[test]
fn a_clean_rotation_passes_and_reports_progress() {
    let repo = Repo::new();
    repo.seal(b"new plaintext", "new-key");
    repo.commit("rotate");
    let (report, events) = repo.check_at(now(), None);
    assert!(report.ok, "{:#?}", report.checks);
    assert_eq!(report.changes.len(), 1);
    assert_eq!(report.changes[0].change, "rotated");
    let recipients: Vec<_> = report.checks.iter().filter(|c| c.kind == "recipients").collect();
    assert_eq!(recipients.len(), 2, "active and previous");
    assert!(matches!(&events.events()[0], Event::Status(s) if s.starts_with("checking 3 changed files")));
}

#[test]
fn a_waiver_added_by_the_pull_request_waives_nothing_in_it() {
    let repo = Repo::new();
    let leak = "api_key = \"Zk3mQ9vX2pL8nR4tY7wB1cD6eF0gH5jK\"\n";
    repo.write("notes.txt", leak.as_bytes());
    repo.commit("leak");
    let finding = leakscan::scan("notes.txt", leak, &[]).remove(0);
    let waiver = format!(
        "[[allow]]\nfingerprint = \"{}\"\nreason = \"fixture\"\n",
        finding.fingerprint
    );
    repo.write(ALLOWLIST_FILE, waiver.as_bytes());
    repo.commit("waive it");
    let report = repo.check();
    assert!(!report.ok);
    let leak = failed(&report, "leak", "notes.txt");
    assert!(leak.detail.contains("not waived"), "{}", leak.detail);
    assert!(report.waived.is_empty());
    assert_eq!(report.policy_changes.waivers_added.len(), 1);
    assert_eq!(report.policy_changes.waivers_added[0].reason, "fixture");

    // The same waiver on the base does waive it, and says so with its reason.
    repo.git(&["checkout", "-q", "main"]);
    repo.write(ALLOWLIST_FILE, waiver.as_bytes());
    repo.commit("waive on main");
    repo.git(&["checkout", "-q", "pr"]);
    repo.git(&["rebase", "-q", "main"]);
    let report = repo.check();
    assert!(report.ok, "{:#?}", report.checks);
    assert_eq!(report.waived.len(), 1);
    assert_eq!(report.waived[0].reason, "fixture");
    assert!(report.policy_changes.waivers_added.is_empty());
}

#[test]
fn a_recipient_added_in_the_pull_request_is_shown_and_not_trusted() {
    let repo = Repo::new();
    repo.write(
        layout::RECIPIENTS_FILE,
        &armored(&[&repo.alice, &repo.bob, &repo.carol]),
    );
    repo.seal(b"old plaintext", "old-key"); // re-encrypted to carol too
    repo.commit("add carol");
    let report = repo.check();
    let added = &report.policy_changes.recipients_added;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].user_id, "carol <carol@example.com>");
    assert_eq!(added[0].fingerprint, repo.carol.fingerprint().to_hex());
    assert!(added[0].expires.starts_with("2027-"), "{}", added[0].expires);
    // The files are judged by the base's policy, which carol is not in.
    let r = failed(&report, "recipients", &format!("registry/{NAME}.gpg"));
    assert!(
        r.detail
            .contains("not in the policy carol <carol@example.com> (fingerprint "),
        "{}",
        r.detail
    );
    assert!(r.detail.contains(&repo.carol.fingerprint().to_hex()), "{}", r.detail);
}

#[test]
fn a_file_missing_a_recipient_names_the_certificate() {
    let repo = Repo::new();
    let only_alice = pgp::check_recipients(
        &[repo.alice.clone().strip_secret_key_material()],
        now().into(),
        Validity {
            min: None,
            warn: Duration::ZERO,
        },
    )
    .unwrap();
    repo.write(&format!("registry/{NAME}.gpg"), &pgp::seal(b"x", &only_alice).unwrap());
    repo.commit("alice only");
    let report = repo.check();
    let r = failed(&report, "recipients", &format!("registry/{NAME}.gpg"));
    assert!(
        r.detail.contains("missing bob <bob@example.com> (fingerprint "),
        "{}",
        r.detail
    );
    assert!(r.detail.contains(&repo.bob.fingerprint().to_hex()), "{}", r.detail);
}

#[test]
fn state_files_executables_and_symlinks_fail() {
    let repo = Repo::new();
    repo.write(".rekey/writes.json", b"[[\".rekey/hook\", \".git/hooks/post-commit\"]]");
    repo.write(".rekey/hook", b"#!/bin/sh\n");
    repo.write(".Rekey/journal.json", b"{}");
    repo.write("tools/run.sh", b"#!/bin/sh\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(repo.path().join("tools/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", repo.path().join("registry/link.gpg")).unwrap();
    repo.commit("attack");
    let report = repo.check();
    assert!(!report.ok);
    failed(&report, "layout", ".rekey/writes.json");
    failed(&report, "layout", ".rekey/hook");
    failed(&report, "layout", ".Rekey/journal.json");
    assert!(failed(&report, "mode", "tools/run.sh").detail.contains("executable"));
    assert!(
        failed(&report, "mode", "registry/link.gpg")
            .detail
            .contains("symbolic link")
    );
}

#[test]
fn a_truncated_message_fails_without_the_key() {
    let repo = Repo::new();
    let path = format!("registry/{NAME}.gpg");
    let bytes = repo.read(&path);
    repo.write(&path, &bytes[..bytes.len() * 95 / 100]);
    repo.write(&format!("registry/{NAME}.meta.json"), &{
        let mut m = repo.meta();
        m.active.key_name = Some("touched".into());
        m.render()
    });
    repo.commit("truncate");
    let report = repo.check();
    let r = failed(&report, "recipients", &path);
    assert!(
        r.detail.contains("not a complete, well-formed OpenPGP message"),
        "{}",
        r.detail
    );
    assert!(!r.detail.contains("addressed to exactly"), "{}", r.detail);
}

#[test]
fn a_pure_reencryption_is_reported_as_such() {
    let repo = Repo::new();
    let mut meta = repo.meta();
    let plain = b"old plaintext";
    let set = repo.policy();
    repo.write(&format!("registry/{NAME}.gpg"), &pgp::seal(plain, &set).unwrap());
    meta.active.rotated_at = now();
    repo.write(&format!("registry/{NAME}.meta.json"), &meta.render());
    repo.commit("re-encrypt");
    let keys = SecretKeys::parse(&repo.alice.as_tsk().to_vec().unwrap(), "alice", None).unwrap();
    let (report, _) = repo.check_at(now(), Some(&keys));
    assert_eq!(report.changes[0].change, "reencrypted", "{:#?}", report.changes);
    assert!(report.changes[0].contents_checked);
    // Key-less, the same verdict rests on the metadata and says so.
    let report = repo.check();
    assert_eq!(report.changes[0].change, "reencrypted");
    assert!(!report.changes[0].contents_checked);

    // Same key in the metadata but other contents: with the key it is a change.
    repo.write(&format!("registry/{NAME}.gpg"), &pgp::seal(b"swapped", &set).unwrap());
    repo.commit("swap the contents");
    let (report, _) = repo.check_at(now(), Some(&keys));
    assert_eq!(report.changes[0].change, "changed", "{:#?}", report.changes);
}

#[test]
fn the_base_policy_is_judged_at_the_clock_time() {
    let repo = Repo::new();
    repo.git(&["checkout", "-q", "main"]);
    repo.write(layout::RECIPIENTS_FILE, &armored(&[&repo.carol]));
    repo.commit("carol only");
    repo.git(&["checkout", "-q", "pr"]);
    repo.git(&["reset", "-q", "--hard", "main"]);
    repo.write("README", b"hello\n");
    repo.commit("docs");
    assert!(repo.check().ok);
    let later = now() + chrono::Duration::days(500);
    let (report, events) = repo.check_at(later, None);
    // Nothing encrypted changed: an expired base policy is a warning only, so
    // that the pull request repairing it can pass...
    assert!(report.ok, "{:#?}", report.checks);
    assert!(
        matches!(&events.events()[..], [Event::Status(_), Event::Warning(w), ..] if w.contains("expired")),
        "{:?}",
        events.events()
    );
    repo.write(layout::RECIPIENTS_FILE, &armored(&[&repo.alice]));
    repo.commit("replace carol with alice");
    let (report, _) = repo.check_at(later, None);
    assert!(report.ok, "{:#?}", report.checks);
    assert_eq!(
        report.policy_changes.recipients_added[0].user_id,
        "alice <alice@example.com>"
    );
    let carol = &report.policy_changes.recipients_removed[0];
    assert!(carol.expires.starts_with("2027-"), "{carol:?}");
    assert!(carol.problem.as_deref().unwrap_or("").contains("expired"), "{carol:?}");
    // ...while every secret file checked against it fails.
    repo.write(&format!("registry/{NAME}.meta.json"), &{
        let mut m = repo.meta();
        m.active.key_name = Some("touched".into());
        m.render()
    });
    repo.commit("touch jp");
    let (report, _) = repo.check_at(later, None);
    let r = failed(&report, "recipients", &format!("registry/{NAME}.gpg"));
    assert!(
        r.detail.contains("no usable recipient policy at the base: "),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("expired"), "{}", r.detail);
    let soon = now() + chrono::Duration::days(390);
    let (_, events) = repo.check_at(soon, None);
    assert!(
        events
            .events()
            .iter()
            .any(|e| matches!(e, Event::Warning(w) if w.contains("carol <carol@example.com>"))),
        "{:?}",
        events.events()
    );
}

#[test]
fn secret_names_come_from_the_layout() {
    assert_eq!(secret_of("registry/JP_X_64.gpg"), Some(("JP_X_64".into(), "active")));
    assert_eq!(
        secret_of("registry/JP_X_64.previous.gpg"),
        Some(("JP_X_64".into(), "previous"))
    );
    assert_eq!(
        secret_of("registry/JP_X_64.meta.json"),
        Some(("JP_X_64".into(), "meta"))
    );
    assert_eq!(
        secret_of("registry/JP_X_64.pending.gpg"),
        Some(("JP_X_64".into(), "pending"))
    );
    assert_eq!(secret_of("registry/jp.dockerconfigjson"), None);
    assert_eq!(secret_of("registry/sub/a.gpg"), None);
    assert_eq!(secret_of("README.md"), None);
}

#[test]
fn host_changes_compare_host_sets() {
    let a = br#"{"auths":{"a.io":{},"b.io":{}}}"#;
    let b = br#"{"auths":{"b.io":{},"c.io":{}}}"#;
    assert_eq!(
        host_changes(Some(a), b),
        (vec!["c.io".to_owned()], vec!["a.io".to_owned()])
    );
    assert_eq!(host_changes(None, b).0.len(), 2);
}

#[test]
fn a_file_larger_than_the_bound_is_refused_unread() {
    let repo = Repo::new();
    repo.write("big.bin", &vec![0u8; MAX_FILE as usize + 1]);
    repo.commit("big");
    let err = format!(
        "{:#}",
        check(&pr_request(), &repo.world(&crate::ops::world::NoEvents)).unwrap_err()
    );
    assert!(err.contains("big.bin (added in commit "), "{err}");
    assert!(
        err.contains("is 16777217 bytes, more than the 16777216-byte limit"),
        "{err}"
    );
}

#[test]
fn a_revision_that_does_not_exist_is_an_error_naming_the_flag() {
    let repo = Repo::new();
    let req = CheckRequest {
        base: "nope".into(),
        ..pr_request()
    };
    let err = format!(
        "{:#}",
        check(&req, &repo.world(&crate::ops::world::NoEvents)).unwrap_err()
    );
    assert!(err.starts_with("--base `nope`"), "{err}");
}

/// Answers every pull with one result per host, recording what it was asked.
#[derive(Default)]
struct FakePull(std::sync::Mutex<Vec<(String, Vec<String>)>>);

impl PullVerifier for FakePull {
    fn pull(&self, secret: &str, config: &DockerConfig) -> anyhow::Result<PullOutcome> {
        let hosts: Vec<String> = config.auths.keys().cloned().collect();
        self.0.lock().unwrap().push((secret.to_owned(), hosts.clone()));
        Ok(PullOutcome::Checked(
            hosts
                .into_iter()
                .map(|host| HostResult {
                    region: secret.to_owned(),
                    class: if host == "jp.icr.io" {
                        crate::registry::Class::Ok
                    } else {
                        crate::registry::Class::BadCredentials
                    },
                    host,
                    detail: "401".into(),
                    elapsed_ms: 1,
                    anonymous_allowed: false,
                })
                .collect(),
        ))
    }
}

#[test]
fn verify_pull_checks_each_changed_secret_with_its_own_hosts() {
    let repo = Repo::new();
    let plain = br#"{"auths":{"jp.icr.io":{"username":"iamapikey","password":"p"},"private.jp.icr.io":{"username":"iamapikey","password":"p"}}}"#;
    repo.seal(plain, "new-key");
    repo.commit("rotate");
    let keys = SecretKeys::parse(&repo.alice.as_tsk().to_vec().unwrap(), "alice", None).unwrap();
    let pull = FakePull::default();
    let req = CheckRequest {
        keys: Some(&keys),
        ..pr_request()
    };
    let world = CheckWorld {
        pull: Some(&pull),
        ..repo.world(&crate::ops::world::NoEvents)
    };
    let report = check(&req, &world).unwrap();
    assert_eq!(
        *pull.0.lock().unwrap(),
        [(
            NAME.to_owned(),
            vec!["jp.icr.io".to_owned(), "private.jp.icr.io".to_owned()]
        )]
    );
    let pulls: Vec<(&str, bool)> = report
        .checks
        .iter()
        .filter(|c| c.kind == "pull")
        .map(|c| (c.target.as_str(), c.ok))
        .collect();
    assert_eq!(
        pulls,
        [
            ("JP_REGISTRY_PULL_SECRET_64 jp.icr.io", true),
            ("JP_REGISTRY_PULL_SECRET_64 private.jp.icr.io", false)
        ]
    );
    assert!(!report.ok);
    // Without a key nothing is decrypted, so nothing is pulled.
    let pull = FakePull::default();
    let world = CheckWorld {
        pull: Some(&pull),
        ..world
    };
    check(&CheckRequest { keys: None, ..req }, &world).unwrap();
    assert!(pull.0.lock().unwrap().is_empty());
}

#[test]
fn a_broken_base_allowlist_waives_nothing_and_can_be_repaired() {
    let repo = Repo::new();
    repo.git(&["checkout", "-q", "main"]);
    repo.write(ALLOWLIST_FILE, b"[[allow]]\nreason = \"names nothing\"\n");
    repo.commit("a broken allowlist");
    repo.git(&["checkout", "-q", "-B", "pr", "main"]);
    repo.write(ALLOWLIST_FILE, b"[[allow]]\npath = \"docs/\"\nreason = \"examples\"\n");
    repo.commit("repair it");
    let (report, events) = repo.check_at(now(), None);
    assert!(report.ok, "{:#?}", report.checks);
    assert!(
        events
            .events()
            .iter()
            .any(|e| matches!(e, Event::Warning(w) if w.contains("at the base") && w.contains("no finding is waived"))),
        "{:?}",
        events.events()
    );
    assert_eq!(report.policy_changes.waivers_added[0].path.as_deref(), Some("docs/"));
}

/// Signers: dave is allowed at the base, erin is not; frank expires.
struct Signers {
    dave: Cert,
    erin: Cert,
    frank: Cert,
}

fn signers() -> Signers {
    Signers {
        dave: cert("dave <dave@example.com>", None),
        erin: cert("erin <erin@example.com>", None),
        frank: cert("frank <frank@example.com>", Some(Duration::from_secs(10 * 86400))),
    }
}

fn key(c: &Cert) -> SigningKey {
    let tsk = c.as_tsk().armored().to_vec().unwrap();
    SigningKey::parse(&tsk, "signer.key", None, now().into()).unwrap()
}

impl Repo {
    /// A repo whose `main` allows `allowed` to sign and holds jp sealed and signed by the first.
    fn signed(allowed: &[&Cert]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo {
            revisions: GitRepo(dir.path().to_owned()),
            dir,
            clock: FixedClock(now()),
            alice: cert("alice <alice@example.com>", None),
            bob: cert("bob <bob@example.com>", None),
            carol: cert("carol <carol@example.com>", None),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write(layout::RECIPIENTS_FILE, &armored(&[&repo.alice, &repo.bob]));
        repo.write(layout::SIGNERS_FILE, &armored(allowed));
        let k = key(allowed[0]);
        repo.seal_signed(b"old plaintext", "old-key", Some(&k), Some(&k));
        repo.commit("base");
        repo.git(&["checkout", "-qb", "pr"]);
        repo
    }

    fn alice_keys(&self) -> SecretKeys {
        SecretKeys::parse(&self.alice.as_tsk().armored().to_vec().unwrap(), "alice", None).unwrap()
    }
}

const META: &str = "registry/JP_REGISTRY_PULL_SECRET_64.meta.json";

#[test]
fn a_rotation_signed_by_an_allowed_signer_passes_and_names_it() {
    let s = signers();
    let repo = Repo::signed(&[&s.dave]);
    let k = key(&s.dave);
    repo.seal_signed(b"new plaintext", "new-key", Some(&k), Some(&k));
    repo.commit("rotate");
    let keys = repo.alice_keys();
    let (report, _) = repo.check_at(now(), Some(&keys));
    let a = report.checks.iter().find(|c| c.kind == "authorship").unwrap();
    assert!(a.ok, "{a:?}");
    assert!(
        a.detail.contains("version 2 signed by dave <dave@example.com>"),
        "{}",
        a.detail
    );
    assert!(a.detail.contains(&s.dave.fingerprint().to_hex()), "{}", a.detail);
}

#[test]
fn unsigned_and_unknown_signers_fail_with_or_without_a_key() {
    let s = signers();
    let repo = Repo::signed(&[&s.dave]);
    repo.seal(b"new plaintext", "new-key");
    repo.commit("unsigned");
    let detail = failed(&repo.check(), "authorship", META).detail.clone();
    assert!(detail.contains("unsigned"), "{detail}");

    let repo = Repo::signed(&[&s.dave]);
    let e = key(&s.erin);
    repo.seal_signed(b"new plaintext", "new-key", Some(&e), Some(&e));
    repo.commit("erin signs");
    let detail = failed(&repo.check(), "authorship", META).detail.clone();
    assert!(detail.contains("which is not an allowed signer"), "{detail}");
}

#[test]
fn a_signer_added_in_the_pull_request_is_reported_and_not_trusted() {
    let s = signers();
    let repo = Repo::signed(&[&s.dave]);
    repo.write(layout::SIGNERS_FILE, &armored(&[&s.dave, &s.erin]));
    let e = key(&s.erin);
    repo.seal_signed(b"new plaintext", "new-key", Some(&e), Some(&e));
    repo.commit("erin adds herself");
    let report = repo.check();
    assert!(!report.ok);
    let detail = failed(&report, "authorship", META).detail.clone();
    assert!(detail.contains("not an allowed signer"), "{detail}");
    let change = report.checks.iter().find(|c| c.kind == "signers").unwrap();
    assert!(
        change.detail.contains(&format!(
            "signer added: erin <erin@example.com> (fingerprint {})",
            s.erin.fingerprint().to_hex()
        )),
        "{}",
        change.detail
    );
    assert_eq!(report.policy_changes.signers_added.len(), 1);
}

#[test]
fn a_replayed_older_version_and_a_swapped_ciphertext_fail() {
    let s = signers();
    let repo = Repo::signed(&[&s.dave]);
    let k = key(&s.dave);
    let v1_meta = repo.read(META);
    let v1_active = repo.read(&format!("registry/{NAME}.gpg"));
    // The base moves on to version 2.
    repo.git(&["checkout", "-q", "main"]);
    repo.seal_signed(b"new plaintext", "new-key", Some(&k), Some(&k));
    repo.commit("rotate");
    repo.git(&["checkout", "-q", "-B", "pr"]);
    // The pull request puts version 1 back, validly signed, files and all.
    repo.write(META, &v1_meta);
    repo.write(&format!("registry/{NAME}.gpg"), &v1_active);
    std::fs::remove_file(repo.path().join(format!("registry/{NAME}.previous.gpg"))).unwrap();
    repo.commit("replay");
    let detail = failed(&repo.check(), "authorship", META).detail.clone();
    assert!(
        detail.contains("version 1 signed by") && detail.contains("not newer than the base's version 2"),
        "{detail}"
    );

    // A ciphertext swapped under an intact statement.
    repo.git(&["reset", "-q", "--hard", "main"]);
    repo.seal_signed(b"third plaintext", "third-key", Some(&k), Some(&k));
    repo.write(&format!("registry/{NAME}.gpg"), &v1_active);
    repo.commit("swap");
    let detail = failed(&repo.check(), "authorship", META).detail.clone();
    assert!(detail.contains("the current ciphertext's SHA-256 is"), "{detail}");
}

#[test]
fn an_expired_signer_and_a_different_inner_signer_fail() {
    let s = signers();
    let repo = Repo::signed(&[&s.frank, &s.dave]);
    let f = key(&s.frank);
    repo.seal_signed(b"new plaintext", "new-key", Some(&f), Some(&f));
    repo.commit("frank signs");
    assert!(repo.check().ok);
    let later = now() + chrono::Duration::days(30);
    let (report, _) = repo.check_at(later, None);
    let detail = failed(&report, "authorship", META).detail.clone();
    assert!(
        detail.contains("frank <frank@example.com>") && detail.contains("expired"),
        "{detail}"
    );

    // Signed inside by erin, the statement by dave: only a key can tell.
    let repo = Repo::signed(&[&s.dave, &s.erin]);
    let (d, e) = (key(&s.dave), key(&s.erin));
    repo.seal_signed(b"new plaintext", "new-key", Some(&e), Some(&d));
    repo.commit("mixed");
    assert!(repo.check().ok, "without a key the statement is all there is");
    let keys = repo.alice_keys();
    let (report, _) = repo.check_at(now(), Some(&keys));
    let detail = failed(&report, "authorship", META).detail.clone();
    assert!(
        detail.contains("signed inside by") && detail.contains("erin"),
        "{detail}"
    );
}

#[test]
fn a_signed_rollback_is_a_newer_version_naming_the_one_it_restores() {
    let s = signers();
    let repo = Repo::signed(&[&s.dave]);
    let k = key(&s.dave);
    repo.git(&["checkout", "-q", "main"]);
    repo.seal_signed(b"new plaintext", "new-key", Some(&k), Some(&k));
    repo.commit("rotate to version 2");
    repo.git(&["checkout", "-q", "-B", "pr"]);
    // Roll back as `rekey rollback --signing-key` does.
    let meta = repo.meta();
    let active = repo.read(&format!("registry/{NAME}.gpg"));
    let previous = repo.read(&format!("registry/{NAME}.previous.gpg"));
    let (new_meta, new_active, new_previous) = layout::rollback(&meta, &active, &previous).unwrap();
    let mut rw = layout::Rewrite {
        meta: new_meta,
        active: Some(new_active),
        previous: Some(new_previous),
        pending: None,
    };
    let disk = authorship::OnDisk {
        meta: &meta,
        active: &active,
        previous: Some(&previous),
        pending: None,
    };
    let restores = meta.previous.as_ref().and_then(Version::statement_version);
    assert_eq!(restores, Some(1));
    authorship::sign_rewrite(&mut rw, Some(&disk), restores, &k, now()).unwrap();
    repo.write(META, &rw.meta.render());
    repo.write(&format!("registry/{NAME}.gpg"), rw.active.as_ref().unwrap());
    repo.write(&format!("registry/{NAME}.previous.gpg"), rw.previous.as_ref().unwrap());
    repo.commit("roll back");
    let report = repo.check();
    let a = report.checks.iter().find(|c| c.kind == "authorship").unwrap();
    assert!(a.ok, "{a:?}");
    assert!(
        a.detail.contains("version 3, restoring version 1 signed by dave"),
        "{}",
        a.detail
    );
}

/// Returns an IBM-shaped API key (44 characters of `[A-Za-z0-9_-]`) made from `seed`.
fn ibm_key(seed: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut bytes = sha2::Sha256::digest(seed.as_bytes()).to_vec();
    bytes.push(0x5a);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn leak_checks(report: &CheckReport) -> Vec<&CheckResult> {
    report.checks.iter().filter(|c| c.kind == "leak").collect()
}

#[track_caller]
fn assert_never_shown(report: &CheckReport, events: &RecordedEvents, key: &str) {
    let shown = format!(
        "{report:?} {:?} {}",
        events.events(),
        serde_json::to_string(report).unwrap()
    );
    assert!(!shown.contains(key), "the key is shown: {shown}");
}

#[test]
fn a_key_added_then_removed_in_a_later_commit_fails_with_the_history_note() {
    let repo = Repo::new();
    let key = ibm_key("history");
    repo.write(
        "notes/login.sh",
        format!("docker login -u iamapikey -p {key} jp.icr.io\n").as_bytes(),
    );
    repo.commit("login notes");
    std::fs::remove_file(repo.path().join("notes/login.sh")).unwrap();
    repo.commit("oops, remove it");
    let (report, events) = repo.check_at(now(), None);
    assert!(!report.ok);
    assert!(
        !report.checks.iter().any(|c| c.detail.contains("changes no file")),
        "{:#?}",
        report.checks
    );
    let r = failed(&report, "leak", "notes/login.sh");
    let fp = Fingerprint::of(key.as_bytes()).to_string();
    assert!(
        r.detail.contains(&format!(
            "line 1: cli-login-password {fp} (also ibm-api-key), added in commit "
        )),
        "{}",
        r.detail
    );
    assert!(
        r.detail
            .contains("but still in history; squash or rewrite before merging"),
        "{}",
        r.detail
    );
    assert_never_shown(&report, &events, &key);

    // The base's allowlist waives it by the engine's rule id, or by the old category.
    for rule in ["cli-login-password", "api-key-assignment"] {
        let allow = format!("[[allow]]\nrule = \"{rule}\"\npath = \"notes/\"\nreason = \"rotated since\"\n");
        let req = CheckRequest {
            allowlist: Some(Allowlist::parse("a.toml", &allow).unwrap()),
            ..pr_request()
        };
        let report = check(&req, &repo.world(&crate::ops::world::NoEvents)).unwrap();
        assert!(report.ok, "{rule}: {:#?}", report.checks);
        assert_eq!(report.waived.len(), 1);
        assert_eq!(report.waived[0].rule, "cli-login-password");
        assert_eq!(report.waived[0].reason, "rotated since");
    }
}

#[test]
fn keys_in_commit_messages_file_names_archives_and_odd_names_are_found() {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let in_message = ibm_key("message");
    let in_name = ibm_key("name");
    let in_archive = ibm_key("archive");
    let in_odd = ibm_key("odd");
    let in_binary = ibm_key("binary");

    let mut tar = tar::Builder::new(Vec::new());
    let note = format!("ibmcloud login --apikey {in_archive}\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(note.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "ops/notes.txt", note.as_bytes()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    repo.write("backup/notes.tar.gz", &gz.finish().unwrap());
    repo.write(&format!("keys/ibm/{in_name}.txt"), b"see the name\n");
    let in_rekey_name = ibm_key("rekey-name");
    repo.write(&format!(".rekey/ibm/{in_rekey_name}.txt"), b"not a rekey file\n");
    let odd = std::ffi::OsStr::from_bytes(b"notes/r\xe9gion-\xff.txt");
    std::fs::create_dir_all(repo.path().join("notes")).unwrap();
    std::fs::write(repo.path().join(odd), format!("apikey: {in_odd}\n")).unwrap();
    let mut binary = vec![0u8, 0xff, 0xfe, 0x00];
    binary.extend_from_slice(format!("ibmcloud login --apikey {in_binary}").as_bytes());
    binary.extend_from_slice(&[0, 0x80, 0xc3]);
    repo.write("blobs/app.bin", &binary);
    repo.commit(&format!(
        "jp notes\n\nUsed: docker login -u iamapikey -p {in_message} jp.icr.io\n"
    ));
    let (report, events) = repo.check_at(now(), None);
    assert!(!report.ok);
    let fp = |k: &str| Fingerprint::of(k.as_bytes()).to_string();
    let leaks = leak_checks(&report);
    let find = |fp: String| {
        leaks
            .iter()
            .find(|c| !c.ok && c.detail.contains(&fp))
            .unwrap_or_else(|| panic!("{fp} not found: {leaks:#?}"))
    };
    let message = find(fp(&in_message));
    assert!(message.target.starts_with("commit "), "{message:?}");
    assert!(
        message.detail.contains("of the message: cli-login-password"),
        "{message:?}"
    );
    let name = find(fp(&in_name));
    assert_eq!(name.target, "keys/ibm/<redacted>.txt");
    // Every check names that file by its redacted name.
    failed(&report, "layout", ".rekey/ibm/<redacted>.txt");
    assert!(name.detail.contains("in the file name: "), "{name:?}");
    let archive = find(fp(&in_archive));
    assert_eq!(archive.target, "backup/notes.tar.gz");
    assert!(
        archive.detail.contains("backup/notes.tar.gz!ops/notes.txt") && archive.detail.contains("inside gzip"),
        "{archive:?}"
    );
    let odd = find(fp(&in_odd));
    assert_eq!(odd.target, "notes/r\u{fffd}gion-\u{fffd}.txt");
    assert_eq!(
        leaks.iter().filter(|c| c.target.starts_with("notes/r")).count(),
        1,
        "{leaks:#?}"
    );
    assert_eq!(find(fp(&in_binary)).target, "blobs/app.bin");
    // The changed file whose name holds a key is checked under its redacted name only.
    assert!(leaks.iter().all(|c| !c.target.contains(&in_name)));
    for key in [&in_message, &in_name, &in_archive, &in_odd, &in_binary, &in_rekey_name] {
        assert_never_shown(&report, &events, key);
    }
}

/// The jp pull secret with `key` as its password, as `rekey generate` writes it.
fn pull_secret(key: &str) -> Vec<u8> {
    format!(r#"{{"auths":{{"jp.icr.io":{{"username":"iamapikey","password":"{key}"}}}}}}"#).into_bytes()
}

fn alice_keys(repo: &Repo) -> SecretKeys {
    SecretKeys::parse(&repo.alice.as_tsk().to_vec().unwrap(), "alice", None).unwrap()
}

#[test]
fn with_the_key_a_bare_key_file_is_found_exactly_by_region_and_fingerprint() {
    let repo = Repo::new();
    // A key that no rule would call a key: short, low-entropy, no key-like name near it.
    let key = "letmein-registry-2026";
    repo.seal(&pull_secret(key), key);
    repo.commit("rotate");
    repo.write("ops/handover.txt", format!("{key}\n").as_bytes());
    repo.commit("handover");
    let without = repo.check();
    assert!(
        without.checks.iter().all(|c| c.kind != "leak" || c.ok),
        "{:#?}",
        without.checks
    );
    let keys = alice_keys(&repo);
    let (report, events) = repo.check_at(now(), Some(&keys));
    let r = failed(&report, "leak", "ops/handover.txt");
    let fp = Fingerprint::of(key.as_bytes());
    assert!(
        r.detail.contains(&format!(
            "line 1: known-key {fp} (the key of jp ({NAME}), active at the head, found exactly)"
        )),
        "{}",
        r.detail
    );
    assert_never_shown(&report, &events, key);
}

/// Grades keys as a fake IAM would: live when listed, refused otherwise.
struct FakeIam {
    live: Vec<String>,
    asked: std::sync::Mutex<usize>,
    unreachable: bool,
}

impl KeyVerifier for FakeIam {
    fn verify(&self, key: &crate::secret::ApiKey) -> anyhow::Result<Liveness> {
        *self.asked.lock().unwrap() += 1;
        if self.unreachable {
            anyhow::bail!("IAM is unreachable (the token exchange): connection refused");
        }
        Ok(if self.live.iter().any(|k| k == key.expose_secret()) {
            Liveness::Live
        } else {
            Liveness::Refused("HTTP 400: BXNIM0415E: Provided API key could not be found.".into())
        })
    }
}

#[test]
fn leaked_keys_are_graded_verified_or_unverified_by_iam() {
    let repo = Repo::new();
    let live = ibm_key("live");
    let dead = ibm_key("dead");
    repo.write(
        "notes/a.sh",
        format!("docker login -u iamapikey -p {live} jp.icr.io\n").as_bytes(),
    );
    repo.write("notes/b.sh", format!("ibmcloud login --apikey {dead}\n").as_bytes());
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("iamapikey:{live}"))
    };
    repo.write(
        "notes/c.json",
        format!(r#"{{"auths":{{"jp.icr.io":{{"auth":"{auth}"}}}}}}"#).as_bytes(),
    );
    repo.commit("notes");
    let iam = FakeIam {
        live: vec![live.clone()],
        asked: Default::default(),
        unreachable: false,
    };
    let req = pr_request();
    let events = RecordedEvents::default();
    let world = CheckWorld {
        iam: Some(&iam),
        ..repo.world(&events)
    };
    let report = check(&req, &world).unwrap();
    assert_eq!(*iam.asked.lock().unwrap(), 2, "once per key");
    let c = failed(&report, "leak", "notes/c.json");
    assert!(
        c.detail.contains("dockerconfig-auth") && c.detail.contains("(verified: "),
        "{}",
        c.detail
    );
    let a = failed(&report, "leak", "notes/a.sh");
    assert!(a.detail.contains("(verified: IAM issued a token"), "{}", a.detail);
    let b = failed(&report, "leak", "notes/b.sh");
    assert!(
        b.detail.contains("(unverified: IAM refused it (HTTP 400"),
        "{}",
        b.detail
    );
    let critical = failed(&report, "verified", &Fingerprint::of(live.as_bytes()).to_string());
    assert!(critical.detail.contains("revoke it now"), "{}", critical.detail);
    assert!(
        !report
            .checks
            .iter()
            .any(|c| c.kind == "verified" && c.target == Fingerprint::of(dead.as_bytes()).to_string())
    );
    assert_never_shown(&report, &events, &live);
    assert_never_shown(&report, &events, &dead);

    // IAM unreachable: nothing is known, which is an error, not a verdict.
    let down = FakeIam {
        live: Vec::new(),
        asked: Default::default(),
        unreachable: true,
    };
    let err = check(
        &req,
        &CheckWorld {
            iam: Some(&down),
            ..world
        },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("unreachable"), "{err:#}");
}
