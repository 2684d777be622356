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
