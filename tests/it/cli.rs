//! Conventions shared by every command: exit codes, help, completions.

use crate::support::*;

#[test]
fn completions_for_each_shell_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let run = rekey().args(["completions", shell]).run();
        run.code(0);
        for cmd in ["generate", "inspect", "completions"] {
            assert!(run.stdout.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    rekey()
        .args(["completions", "tcsh"])
        .run()
        .code(2)
        .stderr_has("invalid value 'tcsh'");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    rekey().run().code(2).stderr_has("Usage: rekey");
    rekey()
        .arg("frobnicate")
        .run()
        .code(2)
        .stderr_has("unrecognized subcommand");
    rekey().arg("--version").run().code(0).stdout_has("rekey ");
    rekey()
        .args(["generate", "--help"])
        .run()
        .code(0)
        .stdout_has("Example:");
    // Both key sources at once is ambiguous.
    rekey()
        .args([
            "generate",
            "--regions",
            "r",
            "--out",
            "o",
            "--api-key-file",
            "f",
            "--api-key-env",
            "E",
        ])
        .run()
        .code(2)
        .stderr_has("cannot be used with");
}

#[test]
fn dash_o_is_the_output_format_on_every_command() {
    let dir = tempdir();
    // `decrypt -o json` once wrote the plain text to a file named `json`.
    let run = rekey()
        .current_dir(dir.path())
        .args([
            "decrypt",
            "-o",
            "json",
            "--key",
            "missing.key",
            "missing.gpg",
            "--out-file",
            "plain",
        ])
        .run();
    run.code(2).stderr_has("`rekey decrypt` does not support --output json");
    assert!(
        snapshot(dir.path()).is_empty(),
        "decrypt wrote {:?}",
        snapshot(dir.path()).keys()
    );
    // Every command refuses a format it does not write, the same way, before reading its inputs.
    for (argv, name) in [
        (&["audit", "-o", "junit", "--repo", "nowhere"][..], "audit"),
        (
            &[
                "verify",
                "-o",
                "openmetrics",
                "--regions",
                "nowhere",
                "--api-key-env",
                "UNSET",
            ][..],
            "verify",
        ),
        (
            &[
                "generate",
                "-o",
                "junit",
                "--regions",
                "nowhere",
                "--api-key-env",
                "UNSET",
                "--out",
                "x",
            ][..],
            "generate",
        ),
        (
            &["health", "-o", "openmetrics", "--prometheus", "http://127.0.0.1:9"][..],
            "health",
        ),
        (&["completions", "-o", "json", "bash"][..], "completions"),
    ] {
        let run = rekey().current_dir(dir.path()).args(argv).run();
        run.code(2)
            .stderr_has(&format!("`rekey {name}` does not support --output"));
        assert!(
            !run.stderr.contains("nowhere"),
            "{name} read its inputs first: {}",
            run.stderr
        );
    }
    // `-o` and `--output` are the same option, before or after the subcommand.
    let a = rekey().args(["-o", "json", "audit", "--repo", "nowhere"]).run();
    let b = rekey().args(["audit", "--output", "json", "--repo", "nowhere"]).run();
    assert_eq!((a.code, a.stderr.clone()), (b.code, b.stderr.clone()));
}

#[test]
fn help_groups_global_options_apart() {
    let run = rekey().args(["audit", "--help"]).run();
    run.code(0);
    let global = run.stdout.find("Global options:").expect("a Global options heading");
    let output = run
        .stdout
        .find("-o, --output <OUTPUT>")
        .expect("the --output option line");
    let repo = run.stdout.find("--repo <DIR>").expect("the --repo option line");
    assert!(output > global && repo < global, "{}", run.stdout);
}

#[test]
fn every_duration_flag_reads_the_same_way() {
    // A bare number is refused with the same hint everywhere, before any input is read.
    for argv in [
        &[
            "verify",
            "--regions",
            "nowhere",
            "--api-key-env",
            "UNSET",
            "--timeout",
            "30",
        ][..],
        &["audit", "--repo", "nowhere", "--max-age", "90"][..],
        &["health", "--prometheus", "http://127.0.0.1:9", "--window", "60"][..],
        &["storage", "wait", "--truth", "t.json", "--timeout", "30"][..],
        &["keys", "check", "--regions", "nowhere", "--iam-timeout", "30"][..],
    ] {
        let run = rekey().args(argv).run();
        run.code(2).stderr_has("has no unit: write ");
    }
    // Units work everywhere they are accepted.
    let run = rekey()
        .args(["audit", "--repo", "nowhere", "--max-age", "90d", "--warn-age", "10m"])
        .run();
    run.code(2).stderr_has("nowhere");
}

#[test]
fn every_resolve_flag_reads_the_same_way() {
    // One parser on every command that reaches registries: a bad mapping
    // is refused with the same words before anything is read.
    for command in [&["verify"][..], &["rotate"][..], &["check"][..]] {
        for (bad, why) in [
            ("*=127.0.0.1", "`127.0.0.1` is not ADDR:PORT"),
            ("jp.icr.io", "expected HOST=ADDR:PORT"),
            ("JP.icr.io=127.0.0.1:5000", "the host `JP.icr.io`"),
        ] {
            let run = rekey().args(command).args(["--resolve", bad]).run();
            run.code(2).stderr_has(&format!(
                "invalid value '{bad}' for '--resolve <HOST=ADDR:PORT>': {why}"
            ));
        }
    }
}

/// Runs rekey on a pseudo-terminal (util-linux `script`), with `env` set.
fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} {args}", env!("CARGO_BIN_EXE_rekey")), "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("util-linux script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let coloured = on_a_terminal("audit --repo /nonexistent-rekey-repo", &[]);
    assert!(coloured.contains("\u{1b}[1;31merror:\u{1b}[0m"), "{coloured:?}");
    let plain = on_a_terminal("audit --repo /nonexistent-rekey-repo", &[("NO_COLOR", "1")]);
    assert!(plain.contains("error:") && !plain.contains('\u{1b}'), "{plain:?}");
    let dumb = on_a_terminal("audit --repo /nonexistent-rekey-repo", &[("TERM", "dumb")]);
    assert!(!dumb.contains('\u{1b}'), "{dumb:?}");
    // Piped, as every other test runs it: no escapes.
    let piped = rekey()
        .env_remove("NO_COLOR")
        .args(["audit", "--repo", "/nonexistent-rekey-repo"])
        .run();
    assert!(
        piped.stderr.contains("error:") && !piped.stderr.contains('\u{1b}'),
        "{:?}",
        piped.stderr
    );
}

/// Lines of `stderr` that the log writes (`INFO`, `DEBUG`, …), not status lines.
fn log_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|lv| l.contains(lv))
        })
        .collect()
}

/// Copies the directory `from` to a new directory `to` (`cp -a`, git directory included).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

#[test]
fn dash_v_logs_what_seal_rollback_and_audit_do_and_never_a_secret() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    let regions = repo_root().join("regions");
    let day = |n: i64| {
        let date = chrono::Utc::now().date_naive() - chrono::Duration::days(n);
        format!("iks-registry-access-prod-test-{}", date.format("%Y%m%d"))
    };
    let old = Canary::new("log-old");
    let new = Canary::new("log-new");
    let canaries = [&old, &new];
    let check = |run: &Run| {
        for c in canaries {
            c.assert_not_in_run(run);
        }
    };

    // seal: plain, then -v, then -vv, each into its own copy of the repo.
    let plain = seal_key(&repo, &regions, &["jp"], &old.key, Some(&day(40)), NO_ARGS);
    plain.code(0);
    check(&plain);
    assert!(log_lines(&plain.stderr).is_empty(), "plain seal logs: {}", plain.stderr);
    commit_all(&repo, "old key");
    let (v_repo, vv_repo) = (tmp.path().join("v"), tmp.path().join("vv"));
    copy_dir(&repo, &v_repo);
    copy_dir(&repo, &vv_repo);
    let run = seal_key(&repo, &regions, &["jp"], &new.key, Some(&day(1)), NO_ARGS);
    run.code(0);
    assert!(log_lines(&run.stderr).is_empty(), "plain seal logs: {}", run.stderr);
    let v = seal_key(&v_repo, &regions, &["jp"], &new.key, Some(&day(1)), ["-v"]);
    v.code(0);
    check(&v);
    let logged = log_lines(&v.stderr);
    assert!(
        logged
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("wrote") && l.contains("JP_REGISTRY_PULL_SECRET")),
        "seal -v names the files it writes: {}",
        v.stderr
    );
    assert!(
        !logged.iter().any(|l| l.contains(" DEBUG ")),
        "-v is not -vv: {}",
        v.stderr
    );
    let vv = seal_key(&vv_repo, &regions, &["jp"], &new.key, Some(&day(1)), ["-vv"]);
    vv.code(0);
    check(&vv);
    for what in ["running git", "encrypting", "read "] {
        assert!(
            log_lines(&vv.stderr)
                .iter()
                .any(|l| l.contains(" DEBUG ") && l.contains(what)),
            "seal -vv logs `{what}`: {}",
            vv.stderr
        );
    }

    // rollback: the same state in three copies, rolled back plain, -v and -vv.
    for r in [&repo, &v_repo, &vv_repo] {
        commit_all(r, "new key");
    }
    let rollback = |r: &std::path::Path, extra: &[&str]| {
        rekey()
            .args(["rollback", "--region", "jp", "--commit", "--repo"])
            .arg(r)
            .args(extra)
            .run()
    };
    let plain = rollback(&repo, &[]);
    plain.code(0);
    check(&plain);
    assert!(
        log_lines(&plain.stderr).is_empty(),
        "plain rollback logs: {}",
        plain.stderr
    );
    let v = rollback(&v_repo, &["-v"]);
    v.code(0);
    check(&v);
    for what in ["wrote", "committed"] {
        assert!(
            log_lines(&v.stderr)
                .iter()
                .any(|l| l.contains(" INFO ") && l.contains(what)),
            "rollback -v logs `{what}`: {}",
            v.stderr
        );
    }
    let vv = rollback(&vv_repo, &["-vv"]);
    vv.code(0);
    check(&vv);
    assert!(
        log_lines(&vv.stderr)
            .iter()
            .any(|l| l.contains(" DEBUG ") && l.contains("running git")),
        "rollback -vv logs the git commands: {}",
        vv.stderr
    );

    // audit reads only: -v says what it audits, -vv what it reads.
    let audit = |extra: &[&str]| rekey().args(extra).args(["audit", "--repo"]).arg(&repo).run();
    let plain = audit(&[]);
    check(&plain);
    assert!(
        log_lines(&plain.stderr).is_empty(),
        "plain audit logs: {}",
        plain.stderr
    );
    let v = audit(&["-v"]);
    assert_eq!(v.code, plain.code, "-v changes no outcome");
    assert_eq!(v.stdout, plain.stdout, "logs go to stderr only");
    check(&v);
    assert!(
        log_lines(&v.stderr)
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("holds 1 secret")),
        "audit -v names what it audits: {}",
        v.stderr
    );
    let vv = audit(&["-vv"]);
    check(&vv);
    assert!(
        log_lines(&vv.stderr)
            .iter()
            .any(|l| l.contains(" DEBUG ") && l.contains("read ")),
        "audit -vv names the files it reads: {}",
        vv.stderr
    );
}

#[test]
fn log_lines_are_coloured_on_a_terminal_only() {
    // Piped, with NO_COLOR unset: no escape in the log lines.
    let piped = rekey()
        .env_remove("NO_COLOR")
        .args(["-v", "audit", "--repo", "/nonexistent-rekey-repo"])
        .run();
    assert!(piped.stderr.contains("INFO"), "{:?}", piped.stderr);
    assert!(!piped.stderr.contains('\u{1b}'), "{:?}", piped.stderr);
    // On a terminal the level is coloured, unless NO_COLOR says no.
    let args = "-v audit --repo /nonexistent-rekey-repo";
    let coloured = on_a_terminal(args, &[]);
    assert!(coloured.contains("INFO") && coloured.contains('\u{1b}'), "{coloured:?}");
    let plain = on_a_terminal(args, &[("NO_COLOR", "1")]);
    assert!(plain.contains("INFO") && !plain.contains('\u{1b}'), "{plain:?}");
}

#[test]
fn a_count_of_one_reads_in_the_singular() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    init_secrets_repo(&repo, &["alice"]);
    let canary = Canary::new("singular");
    seal_key(&repo, &repo_root().join("regions"), &["jp"], &canary.key, None, NO_ARGS).code(0);
    let run = rekey()
        .args(["reencrypt", "--dry-run", "--repo"])
        .arg(&repo)
        .arg("--key")
        .arg(crate::pgp_support::keys().file("alice.sec"))
        .run();
    run.code(0).stderr_has("of 1 secret to 1 recipient (dry run");
    canary.assert_not_in_run(&run);
}

#[test]
fn concurrency_is_one_flag_on_every_command_and_parallel_still_works() {
    // The same name, the same bound, the same message everywhere.
    let zero = |argv: &[&str]| {
        let run = rekey().args(argv).args(["--concurrency", "0"]).run();
        run.code(2).stderr_has("'--concurrency <N>'");
        run.stderr
    };
    let verify = zero(&["verify", "--regions", "nowhere", "--api-key-env", "UNSET"]);
    let wait = zero(&["storage", "wait", "--truth", "t.json", "--decryption-key-env", "UNSET"]);
    assert_eq!(verify.lines().next(), wait.lines().next(), "one message for one flag");
    // `--parallel`, storage wait's older name, is the same option, unlisted.
    rekey()
        .args(["storage", "wait", "--truth", "t.json", "--parallel", "0"])
        .run()
        .code(2)
        .stderr_has("'--concurrency <N>'");
    let help = rekey().args(["storage", "wait", "--help"]).run();
    help.code(0).stdout_has("--concurrency <N>");
    assert!(!help.stdout.contains("--parallel <"), "{}", help.stdout);
}
