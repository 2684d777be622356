//! `rekey init`: a secrets repo that sets itself up, never overwriting.

use crate::pgp_support::keys;
use crate::support::*;

/// `rekey init <repo> --recipients <the test key file recipients>`.
fn init(repo: &std::path::Path, recipients: &str) -> Rekey {
    rekey()
        .arg("init")
        .arg(repo)
        .arg("--recipients")
        .arg(keys().file(recipients))
}

#[test]
fn init_sets_up_a_repo_that_rotate_and_check_can_use() {
    let dir = tempdir();
    let repo = dir.path().join("secrets");
    let run = init(&repo, "team.pub")
        .arg("--signers")
        .arg(keys().file("alice.pub"))
        .arg("--commit")
        .run();
    run.code(0).stdout_has("2 recipients").stdout_has("committed ");
    for f in [
        ".rekey/recipients.asc",
        ".rekey/signers.asc",
        ".gitignore",
        "README.md",
        ".github/workflows/rekey-check.yml",
        ".github/workflows/rekey-rotation.yml",
        "ci/rekey-job",
        "regions/jp.toml",
        "regions/us.toml",
    ] {
        assert!(repo.join(f).is_file(), "{f} was not written");
        assert_eq!(mode(&repo.join(f)) & 0o111, 0, "{f} is executable");
    }
    // The job script is not executable (check refuses executables in the
    // repo), so every workflow step must run it through bash.
    for wf in [
        ".github/workflows/rekey-check.yml",
        ".github/workflows/rekey-rotation.yml",
    ] {
        let text = std::fs::read_to_string(repo.join(wf)).unwrap();
        for line in text.lines().filter(|l| l.contains("ci/rekey-job")) {
            let line = line.trim();
            assert!(
                line.starts_with('#') || line.starts_with("run: bash ci/rekey-job"),
                "{wf}: `{line}` cannot run a script that is not executable"
            );
        }
    }
    assert_eq!(
        std::fs::read(repo.join(".rekey/recipients.asc")).unwrap(),
        std::fs::read(keys().file("team.pub")).unwrap()
    );
    let tracked = git(&repo, &["ls-files"]);
    assert!(tracked.contains(".rekey/recipients.asc"), "{tracked}");
    assert!(tracked.contains(".github/workflows/rekey-check.yml"), "{tracked}");
    assert_eq!(git(&repo, &["status", "--porcelain"]).trim(), "");
    // The repo is usable at once: the shipped catalog in regions/ makes
    // pull secrets that seal into the repo, and the recipient check reads
    // its policy.
    assert_eq!(
        std::fs::read(repo.join("regions/jp.toml")).unwrap(),
        std::fs::read(repo_root().join("regions/jp.toml")).unwrap()
    );
    let canary = Canary::new("init-seal");
    let signing = keys().file("alice.sec");
    let run = seal_key(
        &repo,
        &repo.join("regions"),
        &[],
        &canary.key,
        None,
        [std::ffi::OsStr::new("--signing-key"), signing.as_os_str()],
    );
    run.code(0).stdout_has("JP_REGISTRY_PULL_SECRET_64.gpg sealed");
    canary.assert_not_in_run(&run);
    rekey().args(["recipients", "check", "--repo"]).arg(&repo).run().code(0);
}

#[test]
fn init_copies_the_teams_own_catalog_and_refuses_a_broken_one() {
    let dir = tempdir();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::copy(repo_root().join("regions/de.toml"), catalog.join("de.toml")).unwrap();
    let repo = dir.path().join("secrets");
    let run = init(&repo, "team.pub").arg("--regions").arg(&catalog).run();
    run.code(0).stdout_has("regions/de.toml");
    assert!(repo.join("regions/de.toml").is_file());
    assert!(
        !repo.join("regions/jp.toml").exists(),
        "only the given catalog is copied"
    );

    // A catalog that does not parse is refused by file and field, and
    // nothing is written.
    write(&catalog, "xx.toml", "name = 7\n");
    let other = dir.path().join("other");
    let run = init(&other, "team.pub").arg("--regions").arg(&catalog).run();
    run.code(2).stderr_has("xx.toml").stderr_has("name");
    assert!(
        !other.exists() || snapshot(&other).is_empty(),
        "init wrote into {}",
        other.display()
    );
}

#[test]
fn init_never_overwrites_an_existing_repo() {
    let dir = tempdir();
    let repo = dir.path().join("secrets");
    std::fs::create_dir_all(repo.join(".rekey")).unwrap();
    write(&repo.join(".rekey"), "recipients.asc", "the team's policy");
    let before = snapshot(&repo);
    let run = init(&repo, "team.pub").run();
    run.code(2)
        .stderr_has("never overwrites")
        .stderr_has(".rekey/recipients.asc");
    assert_eq!(snapshot(&repo), before);
}

#[test]
fn init_refuses_an_expired_recipient_and_writes_nothing() {
    let dir = tempdir();
    let repo = dir.path().join("secrets");
    let run = init(&repo, "expired.pub").run();
    run.code(2).stderr_has("expired");
    assert!(!repo.exists(), "init created {} for a refused policy", repo.display());
}

#[test]
fn init_pins_the_ci_workflows_to_a_rekey_release() {
    let dir = tempdir();
    let repo = dir.path().join("secrets");
    init(&repo, "team.pub").args(["--rekey-ref", "v1.4.2"]).run().code(0);
    for wf in ["rekey-check.yml", "rekey-rotation.yml"] {
        let text = std::fs::read_to_string(repo.join(".github/workflows").join(wf)).unwrap();
        assert!(text.contains("REKEY_REF: v1.4.2"), "{wf} is not pinned:\n{text}");
        assert!(!text.contains("vars.REKEY_REF"), "{wf}");
    }
    let other = dir.path().join("other");
    for bad in ["main", "HEAD", "v1.4", "1234abcd"] {
        init(&other, "team.pub")
            .args(["--rekey-ref", bad])
            .run()
            .code(2)
            .stderr_has("--rekey-ref");
        assert!(!other.exists());
    }
}

#[test]
fn init_refuses_a_file_or_link_where_a_directory_goes_and_writes_nothing() {
    let dir = tempdir();
    for (name, make) in [
        (
            "regions",
            (|p: &std::path::Path| std::fs::write(p, "not a dir").unwrap()) as fn(&std::path::Path),
        ),
        (".rekey", |p: &std::path::Path| {
            std::os::unix::fs::symlink("/tmp", p).unwrap()
        }),
    ] {
        let repo = dir.path().join(format!("secrets-{}", name.trim_start_matches('.')));
        std::fs::create_dir_all(&repo).unwrap();
        make(&repo.join(name));
        let before = snapshot(&repo);
        let run = init(&repo, "team.pub").run();
        run.code(2).stderr_has("is not a directory").stderr_has(name);
        assert_eq!(snapshot(&repo), before, "{name}");
        assert!(!repo.join(".git").exists(), "{name}: git init ran");
    }
}
