//! Hostile OpenPGP input to `rekey decrypt`, made by real gpg: compression
//! bombs stay within a few MB of memory, and truncation at any offset or a
//! flipped byte anywhere is a clean refusal (exit 2), never a panic.

use crate::pgp_support::*;
use crate::support::*;
use std::ffi::OsStr;
use std::path::Path;

fn decrypt_measured(key: &Path, message: &Path, out: &Path) -> Measured {
    rekey_measured(&[
        OsStr::new("decrypt"),
        OsStr::new("--key"),
        key.as_os_str(),
        message.as_os_str(),
        OsStr::new("--out-file"),
        out.as_os_str(),
    ])
}

#[test]
fn gpg_compression_bombs_are_refused_within_a_few_megabytes() {
    let tmp = tempdir();
    let k = keys();
    // A small, normal gpg message (compressed, as gpg does by default) is the baseline.
    let plain = write(tmp.path(), "plain.json", br#"{"auths":{}}"#);
    let normal = tmp.path().join("normal.gpg");
    gpg_encrypt(&k.file("alice.pub"), &k.fingerprint("alice"), &plain, &normal);
    let base = decrypt_measured(&k.file("alice.sec"), &normal, &tmp.path().join("normal.out"));
    assert_eq!(base.code, 0, "{}", base.stderr);
    for (algo, len) in [("bzip2", 300u64 << 20), ("zlib", 100 << 20)] {
        let bomb = tmp.path().join(format!("bomb.{algo}.gpg"));
        gpg_compression_bomb(&k.file("alice.pub"), &k.fingerprint("alice"), algo, len, &bomb);
        let size = std::fs::metadata(&bomb).unwrap().len();
        let out = tmp.path().join(format!("bomb.{algo}.out"));
        let run = decrypt_measured(&k.file("alice.sec"), &bomb, &out);
        assert_eq!(run.code, 2, "{algo}: {}", run.stderr);
        assert!(
            run.stderr.contains("larger than the limit of 1048576 bytes"),
            "{algo}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(!out.exists(), "{algo}: plain text written");
        let extra = run.max_rss_kib - base.max_rss_kib;
        eprintln!(
            "{algo}: {size} byte bomb of {len} bytes: peak {} KiB (baseline {} KiB)",
            run.max_rss_kib, base.max_rss_kib
        );
        assert!(extra < 8 * 1024, "{algo}: {extra} KiB more than a normal message");
    }
}

#[test]
fn gpg_message_truncated_at_every_offset_or_flipped_anywhere_exits_2() {
    let tmp = tempdir();
    let k = keys();
    let plain = write(
        tmp.path(),
        "plain.json",
        br#"{"auths":{"jp.icr.io":{"auth":"eDp5"}}}"#.repeat(12),
    );
    let armored = tmp.path().join("m.asc");
    gpg_encrypt(&k.file("alice.pub"), &k.fingerprint("alice"), &plain, &armored);
    let home = GpgHome::new();
    let bin = home.run(&["--dearmor", "--output", "-", &armored.display().to_string()]);
    let out = tmp.path().join("out");
    let key = k.file("alice.sec");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // Each run is a process: every 7th offset plus the last 64 keep this under a minute.
    for n in (0..bin.len()).filter(|n| n % 7 == 0 || *n + 64 >= bin.len()) {
        cases.push((format!("cut at {n} of {}", bin.len()), bin[..n].to_vec()));
    }
    for i in (0..bin.len()).step_by(11) {
        let mut m = bin.clone();
        m[i] ^= 0x40;
        cases.push((format!("byte {i} flipped"), m));
    }
    let file = tmp.path().join("case.gpg");
    for (what, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let run = rekey()
            .arg("decrypt")
            .arg("--key")
            .arg(&key)
            .arg(&file)
            .arg("--out-file")
            .arg(&out)
            .run();
        if run.code == 0 {
            // A flip that changes nothing rekey relies on may pass, with the same text.
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&plain).unwrap(), "{what}");
            std::fs::remove_file(&out).unwrap();
            continue;
        }
        assert_eq!(run.code, 2, "{what}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{what}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
        assert!(!out.exists(), "{what}: wrote plain text");
    }
}

#[test]
fn oversized_messages_and_keyrings_are_refused_before_reading_them_whole() {
    let tmp = tempdir();
    let k = keys();
    let big = tmp.path().join("big.gpg");
    std::fs::write(&big, vec![b'A'; (1 << 20) + 1]).unwrap();
    let out = tmp.path().join("out");
    rekey()
        .arg("decrypt")
        .arg("--key")
        .arg(k.file("alice.sec"))
        .arg(&big)
        .arg("--out-file")
        .arg(&out)
        .run()
        .code(2)
        .stderr_has("big.gpg: larger than the limit of 1048576 bytes");
    assert!(!out.exists());
    let ring = tmp.path().join("huge.asc");
    std::fs::write(&ring, vec![b'A'; (4 << 20) + 1]).unwrap();
    let plain = write(tmp.path(), "p.json", "{}");
    rekey()
        .arg("encrypt")
        .arg("--recipients")
        .arg(&ring)
        .arg(&plain)
        .arg("--out-file")
        .arg(&out)
        .run()
        .code(2)
        .stderr_has("huge.asc: larger than the limit of 4194304 bytes");
    assert!(!out.exists());
}
