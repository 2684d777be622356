//! `rekey verify` against real registries (Debian's docker-registry with
//! htpasswd and with token auth) and a fault server for what a real
//! registry cannot do on demand.

use crate::support::*;
use crate::verify_support::*;

fn key_file(dir: &std::path::Path, key: &str) -> std::path::PathBuf {
    write(dir, "key", format!("{key}\n"))
}

#[test]
fn basic_and_token_registries_verify_ok() {
    let fx = &*FIXTURE;
    let tmp = tempdir();
    let hosts = [BASIC_HOST.to_owned(), TOKEN_HOST.to_owned()];
    let cat = catalog(tmp.path(), &[("t", &hosts, "armada-master/alpine:latest")]);
    let run = verify_cmd(
        fx,
        &[(BASIC_HOST, fx.basic), (TOKEN_HOST, fx.token), (AUTH_HOST, fx.auth)],
    )
    .arg("--regions")
    .arg(&cat)
    .arg("--api-key-file")
    .arg(key_file(tmp.path(), &fx.key))
    .args(["--output", "json"])
    .run();
    run.code(0);
    let c = classes(&run);
    assert_eq!(c[BASIC_HOST], "ok", "{}", run.stdout);
    assert_eq!(c[TOKEN_HOST], "ok", "{}", run.stdout);
    Canary::with_value(&fx.key).assert_not_in_run(&run);
}
