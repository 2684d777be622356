//! Child processes never inherit a secret: every environment variable rekey
//! reads a secret from is recorded here, and every child process rekey
//! starts (git and its hooks, kubectl and its credential plugins) is built
//! by [`command`], which removes those variables from the child's
//! environment.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::process::Command;
use std::sync::Mutex;

static SECRET_VARS: Mutex<BTreeSet<OsString>> = Mutex::new(BTreeSet::new());

/// Records that the environment variable `name` holds a secret, so that no
/// child process started after this gets it.
pub fn mark_secret(name: impl AsRef<OsStr>) {
    if let Ok(mut vars) = SECRET_VARS.lock() {
        vars.insert(name.as_ref().to_owned());
    }
}

/// Returns the names recorded by [`mark_secret`].
pub fn secret_vars() -> Vec<OsString> {
    SECRET_VARS
        .lock()
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default()
}

/// Returns a command for `program` whose environment lacks every variable
/// rekey read a secret from.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for name in secret_vars() {
        cmd.env_remove(name);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_do_not_inherit_marked_variables() {
        // A name no other test uses, set only for this process's children.
        let name = "REKEY_CHILDENV_TEST_CANARY";
        // SAFETY: tests in this module are the only users of this variable.
        unsafe { std::env::set_var(name, "canary-value") };
        mark_secret(name);
        let out = command("env").output().expect("env runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(name), "the child saw {name}");
        assert!(text.contains("PATH="), "the child lost its other variables");
    }
}
