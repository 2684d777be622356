//! In-process tests of the operations: a real git repo in a temp dir, real
//! OpenPGP files (sequoia-made certificates), a fixed clock, recorded
//! events and an in-memory registry verifier.

use crate::ops::reencrypt::{ItemAction, ReencryptRequest, reencrypt};
use crate::ops::rollback::{RollbackRequest, rollback};
use crate::ops::rotate::{Action, NewKeys, RegionKey, RotateReport, RotateRequest, RotateWorld, rotate};
use crate::ops::seal::{Generated, SealRequest, seal};
use crate::ops::world::{FixedClock, Git, GitCli, NoEvents, OsRandom, RecordedEvents, StaticVerifier};
use crate::pullsecret::catalog::Region;
use crate::pullsecret::dockerconfig;
use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use crate::registry::Class;
use crate::secret::ApiKey;
use crate::secrets_repo::authorship;
use crate::secrets_repo::journal::{Journal, Stage};
use crate::secrets_repo::layout::{self, Digest, Slot, State};
use crate::secrets_repo::pgp::{self, SecretKeys, Validity};
use crate::secrets_repo::signing::{AllowedSigners, SignError, Signer, SigningKey, Statement};
use crate::secrets_repo::store::{self, Store};
use chrono::Utc;
use sequoia_openpgp::cert::{Cert, CertBuilder};
use sequoia_openpgp::serialize::SerializeInto;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

const OLD: &str = "old-key-value-0001";
const NEW: &str = "new-key-value-0002";
const NEW_NAME: &str = "iks-registry-test-20261123";

/// Two recipients, made once for all tests.
static CERTS: LazyLock<Vec<Cert>> = LazyLock::new(|| {
    ["alice", "bob"]
        .iter()
        .map(|n| {
            CertBuilder::general_purpose(Some(format!("{n} <{n}@example.com>")))
                .set_creation_time(std::time::SystemTime::now() - Duration::from_secs(86_400))
                .generate()
                .unwrap()
                .0
        })
        .collect()
});

/// Runs git in `dir` with a fixed identity (symlinks as symlinks); panics
/// unless it succeeds. Returns stdout. Shared with `check`'s tests.
pub(in crate::ops) fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.symlinks=true"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn region(name: &str) -> Region {
    Region {
        name: name.to_owned(),
        hosts: vec![
            Host::parse(&format!("{name}.reg.test")).unwrap(),
            Host::parse(&format!("private-{name}.reg.test")).unwrap(),
        ],
        username: "iamapikey".to_owned(),
        probe_image: ImageRef::parse("armada-master/alpine:latest").unwrap(),
        email: None,
        key_code: None,
        source: PathBuf::from(format!("{name}.toml")),
    }
}

fn validity() -> Validity {
    Validity {
        min: None,
        warn: Duration::ZERO,
    }
}

/// A git secrets repo with a two-recipient policy and r1, r2 sealed with the old key, committed.
struct Repo {
    tmp: tempfile::TempDir,
    regions: Vec<Region>,
    clock: FixedClock,
    signer: Option<SigningKey>,
}

impl Repo {
    fn new() -> Repo {
        Repo::signed(None)
    }

    /// A repo whose `signers.asc` holds `signer`'s certificate and whose
    /// secrets it signed (unsigned and without signers with `None`).
    fn signed(signer: Option<&Cert>) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let root = root.as_path();
        git(root, &["init", "-q", "-b", "main"]);
        let mut ring = Vec::new();
        for c in CERTS.iter() {
            ring.extend(c.armored().to_vec().unwrap());
        }
        std::fs::create_dir(root.join(".rekey")).unwrap();
        std::fs::write(root.join(layout::RECIPIENTS_FILE), ring).unwrap();
        if let Some(cert) = signer {
            std::fs::write(root.join(layout::SIGNERS_FILE), cert.armored().to_vec().unwrap()).unwrap();
        }
        let repo = Repo {
            tmp,
            regions: vec![region("r1"), region("r2")],
            clock: FixedClock(Utc::now()),
            signer: signer.map(signing_key),
        };
        repo.seal(OLD, Some("old-20260801"), false).unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "old key"]);
        repo
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn store(&self) -> Store {
        Store::new(self.root())
    }

    fn seal(&self, key: &str, key_name: Option<&str>, pending: bool) -> anyhow::Result<crate::ops::seal::SealReport> {
        let key = ApiKey::from_str_checked(key).unwrap();
        let secrets = self
            .regions
            .iter()
            .map(|r| Generated {
                region: r.name.clone(),
                source: PathBuf::from(format!("{}.dockerconfigjson", r.name)),
                plaintext: zeroize::Zeroizing::new(
                    dockerconfig::render(&r.hosts, &r.username, &key, None)
                        .as_bytes()
                        .to_vec(),
                ),
            })
            .collect();
        let req = SealRequest {
            secrets,
            key_name: key_name.map(str::to_owned),
            pending,
            validity: validity(),
            signer: self.signer.as_ref(),
        };
        seal(&req, &self.store(), &self.clock, &OsRandom, &NoEvents)
    }

    /// The new key, for every region.
    fn new_keys(&self) -> NewKeys {
        NewKeys::Given(
            self.regions
                .iter()
                .map(|r| {
                    let key = RegionKey {
                        key: ApiKey::from_str_checked(NEW).unwrap(),
                        key_name: NEW_NAME.to_owned(),
                        iam_key_id: None,
                    };
                    (r.name.clone(), key)
                })
                .collect(),
        )
    }

    fn rotate_with(&self, verifier: &StaticVerifier, git: &dyn Git, commit: bool) -> anyhow::Result<RotateReport> {
        let req = RotateRequest {
            regions: self.regions.iter().collect(),
            keys: self.new_keys(),
            iam_check: false,
            allowed_failing_hosts: BTreeSet::new(),
            image: None,
            dry_run: false,
            commit,
            branch: None,
            validity: validity(),
            signer: self.signer.as_ref(),
        };
        let store = self.store();
        let events = RecordedEvents::default();
        let world = RotateWorld {
            store: &store,
            git,
            verifier,
            clock: &self.clock,
            random: &OsRandom,
            events: &events,
            iam: None,
        };
        rotate(&req, &world)
    }

    fn dry_run(&self) -> anyhow::Result<RotateReport> {
        let req = RotateRequest {
            regions: self.regions.iter().collect(),
            keys: self.new_keys(),
            iam_check: false,
            allowed_failing_hosts: BTreeSet::new(),
            image: None,
            dry_run: true,
            commit: true,
            branch: Some("never".to_owned()),
            validity: validity(),
            signer: self.signer.as_ref(),
        };
        let store = self.store();
        let verifier = StaticVerifier::default();
        let git = self.git_cli();
        let world = RotateWorld {
            store: &store,
            git: &git,
            verifier: &verifier,
            clock: &self.clock,
            random: &OsRandom,
            events: &NoEvents,
            iam: None,
        };
        let report = rotate(&req, &world);
        assert!(verifier.asked().is_empty(), "a dry run verifies nothing");
        report
    }

    fn rotate(&self, verifier: &StaticVerifier) -> anyhow::Result<RotateReport> {
        self.rotate_with(verifier, &self.git_cli(), true)
    }

    /// A committing rollback of r1 to its previous key, signed as this
    /// repo's seals are (unsigned without a signer).
    fn rollback_r1(&self) -> RollbackRequest<'_> {
        RollbackRequest {
            region: "r1".into(),
            to: crate::ops::rollback::RollbackTo::Previous,
            commit: true,
            signer: self.signer.as_ref(),
        }
    }

    /// Runs `req` on this repo through the git CLI.
    fn rollback(&self, req: &RollbackRequest<'_>) -> anyhow::Result<crate::ops::rollback::RollbackReport> {
        rollback(req, &self.store(), &self.git_cli(), &self.clock, &NoEvents)
    }

    /// The key in a region's active (or previous) file, decrypted with alice's key.
    fn key_in(&self, region: &str, slot: Slot) -> String {
        let keys = secret_keys();
        let bytes = self.store().read_file(&layout::secret_name(region), slot).unwrap();
        let plain = pgp::open(&bytes, &keys, std::time::SystemTime::now()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        let first = v["auths"].as_object().unwrap().values().next().unwrap().clone();
        first["password"].as_str().unwrap().to_owned()
    }

    fn state(&self, region: &str) -> State {
        let meta = self.store().read_meta(&layout::secret_name(region)).unwrap().unwrap();
        meta.active.state
    }

    fn journal_path(&self) -> PathBuf {
        self.root().join(".git/rekey").join(store::JOURNAL_FILE)
    }

    fn write_journal(&self, stages: &[(&str, Stage)]) {
        let mut j = Journal::new(self.clock.0);
        for (r, s) in stages {
            j.plan(
                r,
                NEW_NAME,
                crate::fingerprint::Fingerprint::of(NEW.as_bytes()).to_string(),
                Digest::compute(&[3; 32], NEW.as_bytes()),
                None,
            );
            j.set(r, *s);
        }
        std::fs::create_dir_all(self.journal_path().parent().unwrap()).unwrap();
        std::fs::write(self.journal_path(), j.render()).unwrap();
    }

    fn head(&self) -> String {
        git(self.root(), &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// The files the last commit touched, sorted.
    fn committed_files(&self) -> Vec<String> {
        let mut files: Vec<String> = git(self.root(), &["show", "--name-only", "--format=", "HEAD"])
            .lines()
            .map(str::to_owned)
            .collect();
        files.sort();
        files
    }
}

/// Signer certificates (with secret keys): carol is allowed, mallory is not.
static SIGNERS: LazyLock<Vec<Cert>> = LazyLock::new(|| {
    ["carol", "mallory"]
        .iter()
        .map(|n| {
            CertBuilder::new()
                .add_userid(format!("{n} <{n}@example.com>"))
                .add_signing_subkey()
                .set_creation_time(std::time::SystemTime::now() - Duration::from_secs(86_400))
                .generate()
                .unwrap()
                .0
        })
        .collect()
});

fn signing_key(cert: &Cert) -> SigningKey {
    let tsk = cert.as_tsk().armored().to_vec().unwrap();
    SigningKey::parse(&tsk, "signer.key", None, std::time::SystemTime::now()).unwrap()
}

fn allowed(cert: &Cert) -> AllowedSigners {
    AllowedSigners::parse(&cert.armored().to_vec().unwrap(), "signers.asc").unwrap()
}

/// Verifies a secret on disk as `check` does, with public keys only.
fn verify_secret(repo: &Repo, region: &str) -> Result<(Statement, Signer), SignError> {
    let name = layout::secret_name(region);
    let stored = repo.store().read_secret(&name).unwrap().unwrap();
    authorship::verify(
        &stored.meta,
        &stored.active,
        stored.previous.as_deref(),
        stored.pending.as_deref(),
        &allowed(&SIGNERS[0]),
        std::time::SystemTime::now(),
    )
}

fn secret_keys() -> SecretKeys {
    let tsk = CERTS[0].as_tsk().armored().to_vec().unwrap();
    SecretKeys::parse(&tsk, "alice.sec", None).unwrap()
}

fn files_of(regions: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = regions
        .iter()
        .flat_map(|r| {
            // A finished rotation leaves no pending file.
            Slot::ALL
                .into_iter()
                .filter(|s| *s != Slot::Pending)
                .map(|s| Store::repo_path(&layout::secret_name(r), s))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rotation_publishes_every_region_and_commits_exactly_its_files() {
    let repo = Repo::new();
    // Someone else's staged work is not swept into the rotation's commit.
    std::fs::write(repo.root().join("NOTES.md"), "mine").unwrap();
    git(repo.root(), &["add", "NOTES.md"]);
    let verifier = StaticVerifier::default();
    let report = repo.rotate(&verifier).unwrap();
    assert!(!report.blocked());
    assert!(report.regions.iter().all(|r| r.action == Action::Rotate));
    assert_eq!(verifier.asked().len(), 4, "every host of both regions");
    for r in ["r1", "r2"] {
        assert_eq!(repo.key_in(r, Slot::Active), NEW);
        assert_eq!(repo.key_in(r, Slot::Previous), OLD);
        assert_eq!(repo.state(r), State::Current);
    }
    assert_eq!(repo.committed_files(), files_of(&["r1", "r2"]));
    assert_eq!(report.commit.as_deref(), Some(repo.head().as_str()));
    assert!(!repo.journal_path().exists());
    assert!(!repo.root().join(".rekey/journal.json").exists());

    // A rerun writes, verifies and commits nothing.
    let head = repo.head();
    let again = repo.rotate(&verifier).unwrap();
    assert!(again.regions.iter().all(|r| r.action == Action::Unchanged));
    assert_eq!(again.commit, None);
    assert_eq!(repo.head(), head);
    assert_eq!(verifier.asked().len(), 4);
}

#[test]
fn a_blocked_region_keeps_its_key_and_is_not_committed() {
    let repo = Repo::new();
    let before = std::fs::read(repo.store().path(&layout::secret_name("r2"), Slot::Active)).unwrap();
    let verifier = StaticVerifier::failing(&["private-r2.reg.test"], Class::BadCredentials);
    let report = repo.rotate(&verifier).unwrap();
    assert!(report.blocked());
    assert_eq!(report.regions[0].action, Action::Rotate);
    assert_eq!(report.regions[1].action, Action::Blocked);
    assert_eq!(report.regions[1].hosts_ok, 1);
    assert_eq!(report.regions[1].failing_hosts[0].host, "private-r2.reg.test");
    assert_eq!(
        std::fs::read(repo.store().path(&layout::secret_name("r2"), Slot::Active)).unwrap(),
        before
    );
    assert_eq!(repo.committed_files(), files_of(&["r1"]));
    // The blocked region is verified again on the next run, and then published.
    let report = repo.rotate(&StaticVerifier::default()).unwrap();
    assert_eq!(report.regions[1].action, Action::Rotate);
    assert_eq!(repo.key_in("r2", Slot::Active), NEW);
}

#[test]
fn a_host_serving_without_the_key_blocks_unless_the_operator_allows_it() {
    let repo = Repo::new();
    let verifier = StaticVerifier::failing(&["private-r2.reg.test"], Class::CredentialNotRequired);
    let report = repo.rotate(&verifier).unwrap();
    assert_eq!(report.regions[1].action, Action::Blocked);
    let mut allowed = StaticVerifier::failing(&["private-r2.reg.test"], Class::CredentialNotRequired);
    allowed.anonymous_allowed.insert("private-r2.reg.test".to_owned());
    let report = repo.rotate(&allowed).unwrap();
    assert_eq!(report.regions[1].action, Action::Rotate);
    assert_eq!(repo.key_in("r2", Slot::Active), NEW);
}

#[test]
fn a_rotation_resumes_from_each_journal_stage() {
    // Verified: not verified again, then sealed and published.
    let repo = Repo::new();
    repo.write_journal(&[("r1", Stage::Verified), ("r2", Stage::Planned)]);
    let verifier = StaticVerifier::default();
    let report = repo.rotate(&verifier).unwrap();
    assert_eq!(verifier.asked(), ["r2.reg.test", "private-r2.reg.test"]);
    assert!(report.regions.iter().all(|r| r.stage == Some(Stage::Published)));
    assert_eq!(repo.key_in("r1", Slot::Active), NEW);

    // Blocked: verified again.
    let repo = Repo::new();
    repo.write_journal(&[("r1", Stage::Blocked), ("r2", Stage::Blocked)]);
    let verifier = StaticVerifier::default();
    repo.rotate(&verifier).unwrap();
    assert_eq!(verifier.asked().len(), 4);

    // Sealed: the new version is on disk as pending (its own file; the
    // served one is still the old key); the resume promotes it without
    // re-encrypting (the file moves byte for byte).
    let repo = Repo::new();
    repo.seal(NEW, Some(NEW_NAME), true).unwrap();
    let name = layout::secret_name("r1");
    let pending = std::fs::read(repo.store().path(&name, Slot::Pending)).unwrap();
    assert_eq!(repo.state("r1"), State::Current);
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
    assert_eq!(repo.key_in("r1", Slot::Pending), NEW);
    repo.write_journal(&[("r1", Stage::Sealed), ("r2", Stage::Sealed)]);
    let verifier = StaticVerifier::default();
    repo.rotate(&verifier).unwrap();
    assert!(verifier.asked().is_empty());
    assert_eq!(repo.state("r1"), State::Current);
    assert_eq!(std::fs::read(repo.store().path(&name, Slot::Active)).unwrap(), pending);
    assert!(!repo.store().path(&name, Slot::Pending).exists());

    // Published, but killed before the commit: the rerun commits both regions.
    let repo = Repo::new();
    struct FailingGit;
    impl Git for FailingGit {
        fn commit(&self, _: Option<&str>, _: &[String], _: &str) -> anyhow::Result<Option<String>> {
            anyhow::bail!("git is down")
        }
        fn plan_branch(&self, _: &str) -> anyhow::Result<crate::secrets_repo::git::BranchMove> {
            Ok(crate::secrets_repo::git::BranchMove::CheckedOut)
        }
    }
    let err = repo
        .rotate_with(&StaticVerifier::default(), &FailingGit, true)
        .unwrap_err();
    assert!(err.to_string().contains("git is down"));
    assert!(repo.journal_path().exists(), "the journal survives the failed commit");
    let report = repo.rotate(&StaticVerifier::default()).unwrap();
    assert!(report.regions.iter().all(|r| r.action == Action::Unchanged));
    assert!(report.commit.is_some());
    assert_eq!(repo.committed_files(), files_of(&["r1", "r2"]));
    let message = git(repo.root(), &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("Rotate registry pull secrets of r1, r2"),
        "{message}"
    );
    assert!(!repo.journal_path().exists());
}

#[test]
fn a_dry_run_plans_shows_the_resume_point_and_writes_nothing() {
    let repo = Repo::new();
    repo.write_journal(&[("r1", Stage::Sealed)]);
    let journal = std::fs::read(repo.journal_path()).unwrap();
    let head = repo.head();
    let report = repo.dry_run().unwrap();
    assert!(report.dry_run);
    assert_eq!(report.regions[0].stage, Some(Stage::Sealed));
    assert_eq!(report.regions[1].stage, Some(Stage::Planned));
    assert!(report.regions.iter().all(|r| r.action == Action::Rotate));
    assert_eq!(report.commit, None);
    assert_eq!(std::fs::read(repo.journal_path()).unwrap(), journal);
    assert_eq!(repo.head(), head);
    assert_eq!(git(repo.root(), &["status", "--porcelain"]), "");
    assert_eq!(git(repo.root(), &["branch", "--list", "never"]), "");
    // A dry run refuses a registry/ with unknown files too.
    std::fs::write(repo.root().join("registry/extra.gpg"), "x").unwrap();
    let err = repo.dry_run().unwrap_err().to_string();
    assert!(err.contains("does not know: extra.gpg"), "{err}");
}

#[test]
fn refusals_write_nothing() {
    let repo = Repo::new();
    let snapshot = || git(repo.root(), &["status", "--porcelain", "--ignored"]);
    // A journal of a rotation to another key.
    repo.write_journal(&[("r1", Stage::Verified)]);
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(repo.journal_path()).unwrap()).unwrap();
    j["regions"]["r1"]["key_name"] = "other-20261122".into();
    std::fs::write(repo.journal_path(), j.to_string()).unwrap();
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    assert!(err.contains("a rotation to other-20261122"), "{err}");
    assert!(err.contains(".git/rekey/journal.json"), "{err}");
    std::fs::remove_file(repo.journal_path()).unwrap();
    assert_eq!(snapshot(), "");

    // Metadata pointing outside the repo.
    let meta_path = repo.store().path(&layout::secret_name("r1"), Slot::Meta);
    let good = std::fs::read(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&good).unwrap();
    meta["active"]["file"] = "/proc/self/environ".into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    assert!(
        err.contains("active.file: must be R1_REGISTRY_PULL_SECRET_64.gpg"),
        "{err}"
    );
    let err = repo.rollback(&repo.rollback_r1()).unwrap_err().to_string();
    assert!(err.contains("active.file"), "{err}");
    std::fs::write(&meta_path, good).unwrap();

    // A file rekey does not know.
    std::fs::write(repo.root().join("registry/creds.txt"), "plain").unwrap();
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    assert!(err.contains("holds files rekey does not know: creds.txt"), "{err}");
    std::fs::remove_file(repo.root().join("registry/creds.txt")).unwrap();
    assert_eq!(snapshot(), "", "nothing written by any refused run");
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
}

#[test]
fn rollback_swaps_and_commits_exactly_the_secret() {
    let repo = Repo::new();
    repo.rotate(&StaticVerifier::default()).unwrap();
    let req = repo.rollback_r1();
    let report = repo.rollback(&req).unwrap();
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
    assert_eq!(repo.key_in("r1", Slot::Previous), NEW);
    assert_eq!(report.commit.as_deref(), Some(repo.head().as_str()));
    assert_eq!(repo.committed_files(), files_of(&["r1"]));
    assert_eq!(report.files.len(), 3);
    // No previous version: refused.
    let repo = Repo::new();
    let err = repo.rollback(&req).unwrap_err().to_string();
    assert!(err.contains("no previous version to roll back to"), "{err}");
}

#[test]
fn seal_is_unchanged_on_a_rerun_and_reencrypt_follows_the_policy() {
    let repo = Repo::new();
    let report = repo.seal(OLD, Some("old-20260801"), false).unwrap();
    assert!(report.secrets.iter().all(|s| !s.changed));
    assert!(report.files.is_empty());

    // The policy loses bob: everything is re-encrypted, to alice only.
    std::fs::write(
        repo.root().join(layout::RECIPIENTS_FILE),
        CERTS[0].armored().to_vec().unwrap(),
    )
    .unwrap();
    let keys = secret_keys();
    let req = ReencryptRequest {
        keys: &keys,
        dry_run: true,
        validity: validity(),
        signer: None,
    };
    let before = git(repo.root(), &["status", "--porcelain"]);
    let plan = reencrypt(&req, &repo.store(), &repo.clock, &NoEvents).unwrap();
    assert!(plan.secrets.iter().all(|i| i.action == ItemAction::WouldReencrypt));
    assert_eq!(
        git(repo.root(), &["status", "--porcelain"]),
        before,
        "a dry run writes nothing"
    );
    let req = ReencryptRequest { dry_run: false, ..req };
    let done = reencrypt(&req, &repo.store(), &repo.clock, &NoEvents).unwrap();
    assert!(done.secrets.iter().all(|i| i.action == ItemAction::Reencrypted));
    assert_eq!(done.written.len(), 4, "active file and metadata of two secrets");
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
    let again = reencrypt(&req, &repo.store(), &repo.clock, &NoEvents).unwrap();
    assert!(again.secrets.iter().all(|i| i.action == ItemAction::Unchanged));
}

#[test]
fn reencrypt_keeps_a_version_already_addressed_to_the_policy() {
    let repo = Repo::new();
    let policy = repo.root().join(layout::RECIPIENTS_FILE);
    let both = std::fs::read(&policy).unwrap();
    // Rotated while the policy had only alice: the new version is for alice,
    // the previous one still for alice and bob.
    std::fs::write(&policy, CERTS[0].armored().to_vec().unwrap()).unwrap();
    repo.rotate(&StaticVerifier::default()).unwrap();
    // Bob is back: only the active versions need re-encrypting.
    std::fs::write(&policy, &both).unwrap();
    let prev_path = repo.store().path(&layout::secret_name("r1"), Slot::Previous);
    let previous = std::fs::read(&prev_path).unwrap();
    let keys = secret_keys();
    let req = ReencryptRequest {
        keys: &keys,
        dry_run: false,
        validity: validity(),
        signer: None,
    };
    let done = reencrypt(&req, &repo.store(), &repo.clock, &NoEvents).unwrap();
    assert!(done.secrets.iter().all(|i| i.action == ItemAction::Reencrypted));
    assert_eq!(
        done.written.len(),
        4,
        "active file and metadata of two secrets, no previous: {:?}",
        done.written
    );
    assert!(
        done.written.iter().all(|f| !f.contains("previous")),
        "{:?}",
        done.written
    );
    assert_eq!(
        std::fs::read(&prev_path).unwrap(),
        previous,
        "previous.gpg kept byte for byte"
    );
    let item = done
        .secrets
        .iter()
        .find(|i| i.name == layout::secret_name("r1"))
        .unwrap();
    assert_eq!(item.files.len(), 1, "{:?}", item.files);
    assert_eq!(repo.key_in("r1", Slot::Active), NEW);
    assert_eq!(repo.key_in("r1", Slot::Previous), OLD);
    let again = reencrypt(&req, &repo.store(), &repo.clock, &NoEvents).unwrap();
    assert!(again.secrets.iter().all(|i| i.action == ItemAction::Unchanged));
}

#[test]
fn seal_reports_expiring_recipients_as_events() {
    let repo = Repo::new();
    let soon = CertBuilder::general_purpose(Some("soon <soon@example.com>"))
        .set_creation_time(std::time::SystemTime::now() - Duration::from_secs(86_400))
        .set_validity_period(Duration::from_secs(86_400 * 10))
        .generate()
        .unwrap()
        .0;
    let mut ring = CERTS[0].armored().to_vec().unwrap();
    ring.extend(soon.armored().to_vec().unwrap());
    std::fs::write(repo.root().join(layout::RECIPIENTS_FILE), ring).unwrap();
    let events = RecordedEvents::default();
    let key = ApiKey::from_str_checked(OLD).unwrap();
    let r = &repo.regions[0];
    let req = SealRequest {
        secrets: vec![Generated {
            region: r.name.clone(),
            source: PathBuf::from("r1.dockerconfigjson"),
            plaintext: zeroize::Zeroizing::new(
                dockerconfig::render(&r.hosts, &r.username, &key, None)
                    .as_bytes()
                    .to_vec(),
            ),
        }],
        key_name: None,
        pending: false,
        validity: Validity {
            min: None,
            warn: Duration::from_secs(86_400 * 30),
        },
        signer: None,
    };
    let report = seal(&req, &repo.store(), &repo.clock, &OsRandom, &events).unwrap();
    assert_eq!(report.recipients, 2);
    let events = events.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], crate::ops::world::Event::Warning(w) if w.contains("soon") && w.contains("expires at")),
        "{events:?}"
    );
}

#[test]
fn signed_versions_carry_a_statement_and_an_inner_signature_by_the_same_signer() {
    let repo = Repo::signed(Some(&SIGNERS[0]));
    let (st, signer) = verify_secret(&repo, "r1").unwrap();
    assert_eq!((st.version, st.secret.as_str()), (1, "R1_REGISTRY_PULL_SECRET_64"));
    assert_eq!(signer.name.user_id, "carol <carol@example.com>");
    assert_eq!(st.files.len(), 1, "no previous version yet");

    // A rotation seals pending (2) then current (3): the statement hashes both files.
    repo.rotate(&StaticVerifier::default()).unwrap();
    let (st, _) = verify_secret(&repo, "r1").unwrap();
    assert_eq!(st.version, 3);
    assert_eq!(st.files.len(), 2);
    assert_eq!(st.key_name.as_deref(), Some(NEW_NAME));
    let active = repo
        .store()
        .read_file(&layout::secret_name("r1"), Slot::Active)
        .unwrap();
    let opened = pgp::open_verified(
        &active,
        &secret_keys(),
        &allowed(&SIGNERS[0]),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let inner = opened.signature.unwrap().unwrap();
    assert!(inner.same_certificate(&signer));
    // The version that became previous keeps the last statement made
    // while it was served: the pending seal's (2), which hashed the
    // pending file next to it.
    let meta = repo.store().read_meta(&layout::secret_name("r1")).unwrap().unwrap();
    assert_eq!(
        meta.previous.as_ref().and_then(layout::Version::statement_version),
        Some(2)
    );

    // A signed rollback names the version it restores, under a new number.
    let req = repo.rollback_r1();
    repo.rollback(&req).unwrap();
    let (st, _) = verify_secret(&repo, "r1").unwrap();
    // It restores the old key as last signed while served (2, see above).
    assert_eq!((st.version, st.restores), (4, Some(2)));
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
    // A second rollback keeps the older key; restoring the newer one is
    // explicit, and signed like any rollback.
    let again = repo.rollback(&req).unwrap();
    assert!(!again.changed);
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
    let forward = RollbackRequest {
        to: crate::ops::rollback::RollbackTo::Key(NEW_NAME.to_owned()),
        ..req.clone()
    };
    let report = repo.rollback(&forward).unwrap();
    assert!(report.changed);
    let (st, _) = verify_secret(&repo, "r1").unwrap();
    assert_eq!(st.restores, Some(3));
    assert_eq!(repo.key_in("r1", Slot::Active), NEW);
}

#[test]
fn a_repo_with_signers_refuses_unsigned_writes_unknown_signers_and_unsigned_secrets() {
    let mut repo = Repo::signed(Some(&SIGNERS[0]));
    let root = repo.root().to_owned();
    let snapshot = || git(&root, &["status", "--porcelain"]);
    let carol = repo.signer.take();

    // No signing key.
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    assert!(
        err.contains("signers.asc exists, so every secret must be signed"),
        "{err}"
    );
    let err = repo.seal(NEW, None, false).unwrap_err().to_string();
    assert!(err.contains("--signing-key"), "{err}");

    // A key outside signers.asc, refused before anything is verified.
    repo.signer = Some(signing_key(&SIGNERS[1]));
    let verifier = StaticVerifier::default();
    let err = repo.rotate(&verifier).unwrap_err().to_string();
    assert!(
        err.contains("mallory <mallory@example.com>") && err.contains("not an allowed signer"),
        "{err}"
    );
    assert!(verifier.asked().is_empty());
    assert_eq!(snapshot(), "");

    // An unsigned secret (its statement removed) is not built on.
    repo.signer = carol;
    let meta_path = repo.store().path(&layout::secret_name("r1"), Slot::Meta);
    let good = std::fs::read(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&good).unwrap();
    meta["active"].as_object_mut().unwrap().remove("signed");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = repo.rotate(&verifier).unwrap_err().to_string();
    assert!(err.contains("there is no signature"), "{err}");
    std::fs::write(&meta_path, &good).unwrap();

    // A ciphertext swapped under an intact statement.
    let active = repo.store().path(&layout::secret_name("r1"), Slot::Active);
    let other = repo.store().path(&layout::secret_name("r2"), Slot::Active);
    let original = std::fs::read(&active).unwrap();
    std::fs::copy(&other, &active).unwrap();
    let err = repo.rotate(&verifier).unwrap_err().to_string();
    assert!(err.contains("the current ciphertext's SHA-256 is"), "{err}");
    std::fs::write(&active, original).unwrap();
    assert!(verifier.asked().is_empty(), "refused before any registry is asked");
    assert_eq!(snapshot(), "");

    // With the allowed key, the rotation goes through.
    repo.rotate(&verifier).unwrap();
    assert_eq!(repo.key_in("r1", Slot::Active), NEW);
}

#[test]
fn reencrypt_with_a_signer_re_signs_inside_and_out_and_needs_an_allowed_key() {
    let mut repo = Repo::signed(Some(&SIGNERS[0]));
    repo.rotate(&StaticVerifier::default()).unwrap();
    std::fs::write(
        repo.root().join(layout::RECIPIENTS_FILE),
        CERTS[0].armored().to_vec().unwrap(),
    )
    .unwrap();
    let keys = secret_keys();
    let carol = repo.signer.take();
    let req = |signer| ReencryptRequest {
        keys: &keys,
        dry_run: false,
        validity: validity(),
        signer,
    };
    let err = reencrypt(&req(None), &repo.store(), &repo.clock, &NoEvents)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--signing-key"), "{err}");
    let report = reencrypt(&req(carol.as_ref()), &repo.store(), &repo.clock, &NoEvents).unwrap();
    assert!(report.secrets.iter().all(|i| i.action == ItemAction::Reencrypted));
    let (st, signer) = verify_secret(&repo, "r1").unwrap();
    assert_eq!(st.version, 4, "one above the rotation's 3");
    for slot in [Slot::Active, Slot::Previous] {
        let bytes = repo.store().read_file(&layout::secret_name("r1"), slot).unwrap();
        let opened = pgp::open_verified(&bytes, &keys, &allowed(&SIGNERS[0]), std::time::SystemTime::now()).unwrap();
        assert!(opened.signature.unwrap().unwrap().same_certificate(&signer), "{slot:?}");
    }
}

/// Plans promoting r1's pending version (sealing the same plaintext as
/// current, as the rotation's second step does).
fn promotion_of_r1(repo: &Repo) -> layout::Rewrite {
    let store = repo.store();
    let name = layout::secret_name("r1");
    let stored = store.read_secret(&name).unwrap().unwrap();
    let r = &repo.regions[0];
    let key = ApiKey::from_str_checked(NEW).unwrap();
    let plaintext = dockerconfig::render(&r.hosts, &r.username, &key, None);
    let policy = store
        .load_policy(validity(), std::time::SystemTime::now(), &NoEvents)
        .unwrap();
    let req = layout::SealRequest {
        name: &name,
        region: "r1",
        plaintext: plaintext.as_bytes(),
        key_name: Some(NEW_NAME),
        key_fingerprint: key.fingerprint(),
        iam_key_id: None,
        state: State::Current,
        now: repo.clock.0,
        salt: [9; 32],
        signer: None,
    };
    let existing = layout::Existing {
        meta: &stored.meta,
        active: &stored.active,
        pending: stored.pending.as_deref(),
    };
    match layout::plan_seal(Some(existing), &req, &policy).unwrap() {
        layout::Plan::Write(w) => *w,
        layout::Plan::Unchanged => panic!("expected a promotion"),
    }
}

#[test]
fn a_promotion_killed_at_any_step_is_rolled_forward_whole() {
    // The promotion's write: <NAME>.gpg, <NAME>.previous.gpg, the metadata,
    // then the removal of <NAME>.pending.gpg: a crash after 0 to 4 of them.
    for steps in 0..=4 {
        let repo = Repo::new();
        repo.seal(NEW, Some(NEW_NAME), true).unwrap();
        let store = repo.store();
        let name = layout::secret_name("r1");
        let old = std::fs::read(store.path(&name, Slot::Active)).unwrap();
        let pending = std::fs::read(store.path(&name, Slot::Pending)).unwrap();
        let rewrite = promotion_of_r1(&repo);
        let lock = store.lock(&NoEvents).unwrap();
        let mut writes = store::WritePlan::default();
        lock.stage(&mut writes, rewrite).unwrap();
        lock.apply_crashing(writes, steps).unwrap();
        drop(lock);
        // Whatever the crash left, the served file is one whole version.
        let served = std::fs::read(store.path(&name, Slot::Active)).unwrap();
        assert!(served == old || served == pending, "after {steps} steps");
        // The next writer finishes the promotion before anything else.
        let events = RecordedEvents::default();
        drop(store.lock(&events).unwrap());
        assert_eq!(
            std::fs::read(store.path(&name, Slot::Active)).unwrap(),
            pending,
            "after {steps} steps"
        );
        assert_eq!(std::fs::read(store.path(&name, Slot::Previous)).unwrap(), old);
        assert!(!store.path(&name, Slot::Pending).exists(), "after {steps} steps");
        let meta = store.read_meta(&name).unwrap().unwrap();
        assert!(meta.pending.is_none());
        assert!(
            meta.active.plaintext_digest.matches(
                dockerconfig::render(
                    &repo.regions[0].hosts,
                    &repo.regions[0].username,
                    &ApiKey::from_str_checked(NEW).unwrap(),
                    None
                )
                .as_bytes()
            )
        );
        assert_eq!(repo.key_in("r1", Slot::Active), NEW);
        // r2 was not part of the write: still pending beside its old key.
        assert_eq!(repo.key_in("r2", Slot::Active), OLD);
        assert_eq!(repo.key_in("r2", Slot::Pending), NEW);
    }
}

#[test]
fn a_rotation_promoting_a_committed_pending_version_commits_its_removal() {
    let repo = Repo::new();
    repo.seal(NEW, Some(NEW_NAME), true).unwrap();
    git(repo.root(), &["add", "."]);
    git(repo.root(), &["commit", "-qm", "pending"]);
    let report = repo.rotate(&StaticVerifier::default()).unwrap();
    assert!(report.commit.is_some());
    let tracked = git(repo.root(), &["ls-files", "registry"]);
    assert!(!tracked.contains(".pending.gpg"), "{tracked}");
    assert_eq!(git(repo.root(), &["status", "--porcelain"]), "");
    assert_eq!(repo.key_in("r1", Slot::Active), NEW);
    assert_eq!(repo.key_in("r1", Slot::Previous), OLD);
}

#[test]
fn rollback_leaves_a_pending_version_as_it_is_and_signs_over_it() {
    let repo = Repo::signed(Some(&SIGNERS[0]));
    repo.rotate(&StaticVerifier::default()).unwrap();
    // A later rotation sealed its key (here: the old one again) as pending.
    repo.seal(OLD, Some("old-again-20261201"), true).unwrap();
    let name = layout::secret_name("r1");
    let pending = std::fs::read(repo.store().path(&name, Slot::Pending)).unwrap();
    // The pending seal's statement hashes the pending file next to the served ones.
    let (st, _) = verify_secret(&repo, "r1").unwrap();
    assert_eq!(st.files.len(), 3);
    let req = repo.rollback_r1();
    let report = repo.rollback(&req).unwrap();
    assert!(report.changed);
    assert_eq!(repo.key_in("r1", Slot::Active), OLD);
    assert_eq!(repo.key_in("r1", Slot::Previous), NEW);
    assert_eq!(std::fs::read(repo.store().path(&name, Slot::Pending)).unwrap(), pending);
    let meta = repo.store().read_meta(&name).unwrap().unwrap();
    assert_eq!(meta.pending.unwrap().key_name.as_deref(), Some("old-again-20261201"));
    let (st, _) = verify_secret(&repo, "r1").unwrap();
    assert_eq!(
        st.files.len(),
        3,
        "the rollback's statement covers the pending file too"
    );
}

// Keys the rotation creates in IAM itself (`rotate --create-keys`): what
// happens to them at each point a rotation can fail after creating them.

/// An in-memory IAM for rotations: creates keys, deletes them, and says
/// what it thinks of a key.
#[derive(Default)]
struct MemKeyIam {
    /// (IAM id, key name, value) of every key created.
    created: std::sync::Mutex<Vec<(String, String, String)>>,
    deleted: std::sync::Mutex<Vec<String>>,
    /// Creations after this many fail.
    fail_create_after: Option<usize>,
    /// Creations after this many answer an id that is no IAM key id.
    bad_id_after: Option<usize>,
    fail_delete: bool,
}

impl crate::ops::rotate::KeyIam for MemKeyIam {
    fn check(&self, _key: &ApiKey) -> crate::iam::KeyStatus {
        crate::iam::KeyStatus {
            class: crate::iam::KeyClass::Valid,
            detail: "IAM issued a token".to_owned(),
            details: None,
        }
    }

    fn create(&self, region: &Region, name: &str) -> anyhow::Result<(ApiKey, String)> {
        let mut created = self.created.lock().unwrap();
        if self.fail_create_after.is_some_and(|n| created.len() >= n) {
            anyhow::bail!("IAM refused the key creation (HTTP 400): BXNIM0536E");
        }
        let id = match self.bad_id_after {
            Some(n) if created.len() >= n => "ApiKey-../../evil\nid".to_owned(),
            _ => format!("ApiKey-{}-{}", region.name, created.len()),
        };
        let value = format!("created{}{}", region.name, created.len());
        created.push((id.clone(), name.to_owned(), value.clone()));
        Ok((ApiKey::from_str_checked(&value)?, id))
    }

    fn delete(&self, id: &str) -> anyhow::Result<()> {
        if self.fail_delete {
            anyhow::bail!("IAM is unreachable (test)");
        }
        self.deleted.lock().unwrap().push(id.to_owned());
        Ok(())
    }
}

impl MemKeyIam {
    fn ids(&self) -> Vec<String> {
        self.created.lock().unwrap().iter().map(|(id, ..)| id.clone()).collect()
    }

    fn value_of(&self, id: &str) -> String {
        let created = self.created.lock().unwrap();
        created.iter().find(|(i, ..)| i == id).unwrap().2.clone()
    }

    fn deleted(&self) -> Vec<String> {
        self.deleted.lock().unwrap().clone()
    }
}

impl Repo {
    fn rotate_creating(
        &self,
        iam: &dyn crate::ops::rotate::KeyIam,
        verifier: &StaticVerifier,
        git: &dyn Git,
    ) -> anyhow::Result<RotateReport> {
        let names = self
            .regions
            .iter()
            .map(|r| (r.name.clone(), format!("k-{}-20261124", r.name)))
            .collect();
        let req = RotateRequest {
            regions: self.regions.iter().collect(),
            keys: NewKeys::Create(names),
            iam_check: false,
            allowed_failing_hosts: BTreeSet::new(),
            image: None,
            dry_run: false,
            commit: true,
            branch: None,
            validity: validity(),
            signer: self.signer.as_ref(),
        };
        let store = self.store();
        let world = RotateWorld {
            store: &store,
            git,
            verifier,
            clock: &self.clock,
            random: &OsRandom,
            events: &NoEvents,
            iam: Some(iam),
        };
        rotate(&req, &world)
    }

    fn git_cli(&self) -> GitCli {
        GitCli {
            repo: self.root().to_owned(),
        }
    }
}

#[test]
fn created_keys_are_sealed_with_their_ids_and_a_blocked_regions_key_is_deleted() {
    use crate::ops::rotate::CreatedOutcome;
    let repo = Repo::new();
    let iam = MemKeyIam::default();
    let verifier = StaticVerifier::failing(&["r2.reg.test"], Class::BadCredentials);
    let report = repo.rotate_creating(&iam, &verifier, &repo.git_cli()).unwrap();
    let ids = iam.ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(report.regions[0].action, Action::Rotate);
    assert_eq!(report.regions[1].action, Action::Blocked);
    assert_eq!(report.created_keys[0].outcome, CreatedOutcome::Published);
    assert_eq!(report.created_keys[1].outcome, CreatedOutcome::Deleted);
    assert_eq!(iam.deleted(), [ids[1].clone()], "only the unpublished key is deleted");
    assert_eq!(repo.key_in("r1", Slot::Active), iam.value_of(&ids[0]));
    assert_eq!(repo.key_in("r2", Slot::Active), OLD);
    let meta = repo.store().read_meta(&layout::secret_name("r1")).unwrap().unwrap();
    assert_eq!(meta.active.iam_key_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(meta.active.key_name.as_deref(), Some("k-r1-20261124"));
    assert!(!repo.journal_path().exists());
    let message = git(repo.root(), &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("Rotate registry pull secrets of r1 to k-r1-20261124\n"),
        "{message}"
    );
    assert!(!message.contains(&iam.value_of(&ids[0])));
}

/// Rotates a fresh repo with keys created in `iam`, which must fail before
/// anything is verified or reaches the repo (no journal, same head, clean
/// work tree); returns the error with its causes.
#[track_caller]
fn creation_refused(iam: &MemKeyIam) -> String {
    let repo = Repo::new();
    let head = repo.head();
    let verifier = StaticVerifier::default();
    let err = format!(
        "{:#}",
        repo.rotate_creating(iam, &verifier, &repo.git_cli()).unwrap_err()
    );
    assert!(verifier.asked().is_empty(), "{err}");
    assert!(!repo.journal_path().exists(), "nothing reached the repo: {err}");
    assert_eq!(repo.head(), head);
    assert_eq!(git(repo.root(), &["status", "--porcelain"]), "");
    err
}

#[test]
fn a_creation_failure_midway_deletes_the_keys_created_and_leaves_nothing() {
    let iam = MemKeyIam {
        fail_create_after: Some(1),
        ..Default::default()
    };
    let err = creation_refused(&iam);
    assert!(err.contains("deleted the 1 key it created"), "{err}");
    assert!(err.contains("BXNIM0536E"), "{err}");
    assert_eq!(iam.deleted(), iam.ids(), "nothing is left in IAM");
}

#[test]
fn a_created_key_id_that_is_no_iam_key_id_is_refused_before_it_is_recorded() {
    let iam = MemKeyIam {
        bad_id_after: Some(1),
        ..Default::default()
    };
    let err = creation_refused(&iam);
    assert!(err.contains("not an IAM API key id"), "{err}");
    assert!(err.contains("k-r2-20261124"), "the key is named for cleanup: {err}");
    assert!(!err.contains("evil"), "the hostile id is not echoed: {err}");
    assert_eq!(iam.deleted(), [iam.ids()[0].clone()], "the good key is deleted");
}

#[test]
fn a_failed_commit_after_creation_deletes_the_keys_and_abort_restores_the_secrets() {
    struct FailingGit;
    impl Git for FailingGit {
        fn commit(&self, _: Option<&str>, _: &[String], _: &str) -> anyhow::Result<Option<String>> {
            anyhow::bail!("git is down")
        }
        fn plan_branch(&self, _: &str) -> anyhow::Result<crate::secrets_repo::git::BranchMove> {
            Ok(crate::secrets_repo::git::BranchMove::CheckedOut)
        }
    }
    let repo = Repo::new();
    let iam = MemKeyIam::default();
    let err = format!(
        "{:#}",
        repo.rotate_creating(&iam, &StaticVerifier::default(), &FailingGit)
            .unwrap_err()
    );
    assert!(err.contains("git is down"), "{err}");
    assert!(err.contains("deleted the 2 keys it created"), "{err}");
    assert!(err.contains("rekey rotate --repo REPO --abort"), "{err}");
    assert_eq!(iam.deleted(), iam.ids(), "no key was committed: all are deleted");
    // The published files carry deleted keys: a rerun is refused, not resumed.
    let journal = std::fs::read_to_string(repo.journal_path()).unwrap();
    for id in iam.ids() {
        assert!(
            !journal.contains(&iam.value_of(&id)),
            "the journal holds ids, never keys"
        );
    }
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    assert!(err.contains("cannot be resumed"), "{err}");
    let err = format!(
        "{:#}",
        repo.rotate_creating(&MemKeyIam::default(), &StaticVerifier::default(), &repo.git_cli())
            .unwrap_err()
    );
    assert!(err.contains("--abort"), "{err}");
    let aborted = crate::ops::rotate::abort(&repo.store(), &NoEvents).unwrap();
    assert!(aborted.aborted);
    assert!(aborted.created_keys.is_empty(), "all were deleted already");
    for r in ["r1", "r2"] {
        assert_eq!(repo.key_in(r, Slot::Active), OLD);
    }
    assert!(!repo.journal_path().exists());
}

#[test]
fn a_run_that_cannot_delete_its_keys_lists_them_and_abort_hands_them_over() {
    let repo = Repo::new();
    let iam = MemKeyIam {
        fail_delete: true,
        ..Default::default()
    };
    let verifier = StaticVerifier::failing(&["r1.reg.test", "r2.reg.test"], Class::BadCredentials);
    // Every region blocked: the keys are not published, and deleting them fails.
    let report = repo.rotate_creating(&iam, &verifier, &repo.git_cli()).unwrap();
    assert_eq!(report.leftover_keys().len(), 2);
    // A killed run leaves its journal with the created ids; simulate it by
    // failing after creation with deletions failing too.
    let repo = Repo::new();
    struct FailingGit;
    impl Git for FailingGit {
        fn commit(&self, _: Option<&str>, _: &[String], _: &str) -> anyhow::Result<Option<String>> {
            anyhow::bail!("killed")
        }
        fn plan_branch(&self, _: &str) -> anyhow::Result<crate::secrets_repo::git::BranchMove> {
            Ok(crate::secrets_repo::git::BranchMove::CheckedOut)
        }
    }
    let iam = MemKeyIam {
        fail_delete: true,
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        repo.rotate_creating(&iam, &StaticVerifier::default(), &FailingGit)
            .unwrap_err()
    );
    for id in iam.ids() {
        assert!(err.contains(&id), "{err}");
    }
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    for id in iam.ids() {
        assert!(err.contains(&id), "the refusal names the keys left in IAM: {err}");
    }
    let aborted = crate::ops::rotate::abort(&repo.store(), &NoEvents).unwrap();
    let ids: Vec<String> = aborted.created_keys.iter().map(|c| c.iam_key_id.clone()).collect();
    assert_eq!(ids, iam.ids());
}

#[test]
fn an_old_schema_journal_is_refused_with_how_to_finish_it() {
    let repo = Repo::new();
    let v1 = serde_json::json!({
        "schema": 1, "key_name": NEW_NAME, "key_fingerprint": "sha256:00000000",
        "key_digest": Digest::compute(&[3; 32], NEW.as_bytes()),
        "started_at": "2026-11-22T10:00:00Z", "regions": {"r1": "verified"},
    });
    std::fs::create_dir_all(repo.journal_path().parent().unwrap()).unwrap();
    std::fs::write(repo.journal_path(), v1.to_string()).unwrap();
    let err = repo.rotate(&StaticVerifier::default()).unwrap_err().to_string();
    assert!(err.contains("by an older rekey (journal schema 1"), "{err}");
    assert!(err.contains("--abort"), "{err}");
    let aborted = crate::ops::rotate::abort(&repo.store(), &NoEvents).unwrap();
    assert!(aborted.aborted);
    repo.rotate(&StaticVerifier::default()).unwrap();
}

/// An IAM that creates every key but whose answers to creations after the
/// first `lose_after` are lost (the key exists, rekey hears nothing); it
/// keeps each key's description.
struct LostAnswerIam {
    inner: MemKeyIam,
    lose_after: usize,
    descriptions: std::sync::Mutex<Vec<(String, String)>>,
}

impl crate::ops::rotate::KeyIam for LostAnswerIam {
    fn check(&self, key: &ApiKey) -> crate::iam::KeyStatus {
        self.inner.check(key)
    }

    fn create(&self, region: &Region, name: &str) -> anyhow::Result<(ApiKey, String)> {
        self.create_described(region, name, "")
    }

    fn create_described(&self, region: &Region, name: &str, description: &str) -> anyhow::Result<(ApiKey, String)> {
        let made = self.inner.create(region, name)?;
        self.descriptions
            .lock()
            .unwrap()
            .push((name.to_owned(), description.to_owned()));
        if self.inner.ids().len() > self.lose_after {
            anyhow::bail!("IAM is unreachable (the key creation): the connection failed");
        }
        Ok(made)
    }

    fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.inner.delete(id)
    }

    fn owner_iam_id(&self) -> Option<String> {
        Some("iam-ServiceId-test".to_owned())
    }

    fn created_nothing(&self, _e: &anyhow::Error) -> bool {
        false
    }
}

#[test]
fn a_creation_without_an_answer_leaves_its_intent_and_marker_for_abort() {
    let repo = Repo::new();
    let head = repo.head();
    let iam = LostAnswerIam {
        inner: MemKeyIam::default(),
        lose_after: 1,
        descriptions: Default::default(),
    };
    let verifier = StaticVerifier::default();
    let err = format!(
        "{:#}",
        repo.rotate_creating(&iam, &verifier, &repo.git_cli()).unwrap_err()
    );
    let ids = iam.inner.ids();
    assert_eq!(ids.len(), 2, "the second creation happened in IAM");
    assert_eq!(
        iam.inner.deleted(),
        [ids[0].clone()],
        "only the recorded key is deleted"
    );
    assert!(err.contains("creation got no answer"), "{err}");
    assert!(err.contains("k-r2-20261124"), "{err}");
    assert!(!err.contains(&ids[1]), "rekey never heard the id: {err}");
    for id in &ids {
        assert!(!err.contains(&iam.inner.value_of(id)), "{err}");
    }
    assert!(verifier.asked().is_empty());
    assert!(repo.journal_path().exists(), "the intent is kept for --abort");
    let journal = std::fs::read_to_string(repo.journal_path()).unwrap();
    assert!(!journal.contains(&iam.inner.value_of(&ids[1])));
    let (name, description) = iam.descriptions.lock().unwrap()[1].clone();
    assert_eq!(name, "k-r2-20261124");

    // The rerun is refused and names the key and its marker.
    let rerun = format!(
        "{:#}",
        repo.rotate_creating(&iam, &verifier, &repo.git_cli()).unwrap_err()
    );
    assert!(
        rerun.contains("cannot be resumed") && rerun.contains("k-r2-20261124"),
        "{rerun}"
    );
    assert_eq!(iam.inner.ids().len(), 2, "the refused rerun created nothing");

    let aborted = crate::ops::rotate::abort(&repo.store(), &NoEvents).unwrap();
    assert_eq!(aborted.unanswered.len(), 1);
    let intent = &aborted.unanswered[0];
    assert_eq!(intent.owner_iam_id, "iam-ServiceId-test");
    assert_eq!(intent.description, description);
    assert!(
        intent.matches(&name, Some(&description)),
        "the key is found by its marker"
    );
    assert!(description.contains(&intent.marker) && rerun.contains(&intent.marker));
    assert!(!repo.journal_path().exists());
    assert_eq!(repo.head(), head);
    assert_eq!(git(repo.root(), &["status", "--porcelain"]), "");
}
