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
