//! The leak engine's benchmark, for `bench/leaks`: precision, recall and run
//! time over a generated corpus, and the time to scan a 100-commit PR.
//!
//! The corpus mixes every named leak shape of `fixtures/leaks/` (each with
//! its own fake key, inside ordinary surrounding text) with benign files:
//! the benign cases, configs, docs, digests, key ids, OpenPGP messages,
//! binary blobs and archives of benign text.
//!
//! Usage: leaks_bench [N_FILES] [OUT_DIR]   (default 3000; OUT_DIR keeps the corpus)

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/it/leaks_corpus.rs"]
mod leaks_corpus;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use leaks_corpus::{fake_key, noise};
use rayon::prelude::*;
use rekey::secrets_repo::history::HistoryLimits;
use rekey::secrets_repo::leaks::{self, DECODE_LIMIT, Scanner};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

struct File {
    name: String,
    category: String,
    leak: bool,
    bytes: Vec<u8>,
}

fn hexs(seed: &str, n: usize) -> String {
    hex::encode(noise(seed, n))
}

fn uuid(seed: &str) -> String {
    let h = hexs(seed, 16);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Benign file bodies of the kinds a secrets repo and its neighbours hold.
fn benign_file(i: usize, cases: &[leaks_corpus::Case]) -> (String, Vec<u8>) {
    let s = format!("benign-{i}");
    match i % 9 {
        0 => {
            let c = &cases[i / 9 % cases.len()];
            (format!("benign/{}", c.name), c.bytes.clone())
        }
        1 => (
            "meta".into(),
            format!(
                "{{\"secret\":\"JP_REGISTRY_PULL_SECRET_64\",\"key_fingerprint\":\"sha256:{}\",\"api_key_id\":\"ApiKey-{}\",\"service_id\":\"ServiceId-{}\",\"rotated_from\":\"{}\"}}\n",
                hexs(&s, 4),
                uuid(&s),
                uuid(&format!("{s}/sid")),
                hexs(&format!("{s}/sha"), 20)
            )
            .into_bytes(),
        ),
        2 => (
            "deployment".into(),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  uid: {}\nspec:\n  template:\n    spec:\n      imagePullSecrets:\n        - name: all-icr-io\n      containers:\n        - name: app\n          image: jp.icr.io/ns/app@sha256:{}\n          env:\n            - name: IBMCLOUD_API_KEY\n              valueFrom:\n                secretKeyRef:\n                  name: ibm-key\n                  key: apikey\n            - name: TOKEN_FILE\n              value: /var/run/secrets/tokens/app-token\n",
                uuid(&s),
                hexs(&s, 32)
            )
            .into_bytes(),
        ),
        3 => (
            "runbook".into(),
            format!(
                "# Rotating the jp pull key\n\n1. Create the key: `ibmcloud iam api-key-create rekey-jp --file key.json`.\n2. Run `rekey rotate jp --key-file key.json`; the secret is JP_REGISTRY_PULL_SECRET_64.\n3. Check the commit {} in the secrets repo.\n4. The old key id was ApiKey-{}.\n",
                hexs(&s, 20),
                uuid(&s)
            )
            .into_bytes(),
        ),
        4 => (
            "sealed.gpg".into(),
            format!(
                "-----BEGIN PGP MESSAGE-----\n\n{}=AbCd\n-----END PGP MESSAGE-----\n",
                STANDARD
                    .encode(noise(&s, 600))
                    .as_bytes()
                    .chunks(64)
                    .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
                    .collect::<String>()
            )
            .into_bytes(),
        ),
        5 => ("blob.bin".into(), noise(&s, 2048)),
        6 => (
            "terraform".into(),
            format!(
                "variable \"ibmcloud_api_key\" {{\n  type      = string\n  sensitive = true\n}}\n\nresource \"ibm_iam_service_id\" \"pull\" {{\n  name = \"rekey-jp-pull-{i}\"\n}}\n\n# state serial {} lineage {}\n",
                i,
                uuid(&s)
            )
            .into_bytes(),
        ),
        7 => (
            "notes.tar.gz".into(),
            leaks_corpus::gzip(&leaks_corpus::tar(&[(
                "notes.md",
                format!("rotation of {} done; password_sha256: {}\n", uuid(&s), hexs(&s, 32)).as_bytes(),
            )])),
        ),
        _ => (
            "go.sum".into(),
            (0..20)
                .map(|j| {
                    format!(
                        "example.com/mod{j} v1.{j}.0 h1:{}\n",
                        STANDARD.encode(noise(&format!("{s}/{j}"), 32))
                    )
                })
                .collect::<String>()
                .into_bytes(),
        ),
    }
}

fn corpus(n: usize) -> Vec<File> {
    let benign = leaks_corpus::benign();
    let shapes = leaks_corpus::leaks("shape");
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                // Each leak file: one shape, its own key, inside ordinary text when textual.
                let shape = &shapes[i / 3 % shapes.len()];
                let seed = format!("bench-{i}");
                let case = leaks_corpus::leaks(&seed)
                    .into_iter()
                    .find(|c| c.name == shape.name)
                    .unwrap_or_else(|| unreachable!("same corpus"));
                let textual = std::str::from_utf8(&case.bytes).is_ok()
                    && !case.bytes.contains(&0)
                    && !case.name.starts_with("bare/");
                let bytes = if textual {
                    let mut b = format!("# notes {}\nregion: jp-tok\n\n", uuid(&seed)).into_bytes();
                    b.extend_from_slice(&case.bytes);
                    b.extend_from_slice(b"\n# end\n");
                    b
                } else {
                    case.bytes
                };
                File {
                    name: format!("f{i:05}-{}", case.name.replace('/', "-")),
                    category: case.name.split('/').next().unwrap_or("").to_owned(),
                    leak: true,
                    bytes,
                }
            } else {
                let (kind, bytes) = benign_file(i, &benign);
                File {
                    name: format!("f{i:05}-{}", kind.replace('/', "-")),
                    category: kind.split('/').next().unwrap_or("").to_owned(),
                    leak: false,
                    bytes,
                }
            }
        })
        .collect()
}

fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .spawn()
        .expect("git");
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(bytes).expect("git stdin");
    }
    assert!(child.wait().expect("git").success(), "git {args:?}");
}

/// Builds a repo whose `pr` branch has `commits` commits of `per_commit`
/// files each on top of `main`, with `fast-import`; returns the leak count.
fn pr_repo(dir: &Path, commits: usize, per_commit: usize) -> usize {
    git(dir, &["init", "-q", "-b", "main"], None);
    let mut stream = Vec::new();
    let mut mark = 0usize;
    let mut leaks_added = 0usize;
    let mut blob = |stream: &mut Vec<u8>, data: &[u8]| {
        mark += 1;
        write!(stream, "blob\nmark :{mark}\ndata {}\n", data.len()).unwrap();
        stream.extend_from_slice(data);
        stream.push(b'\n');
        mark
    };
    let commit =
        |stream: &mut Vec<u8>, branch: &str, n: usize, msg: &str, files: &[(String, usize)], from: Option<&str>| {
            let t = 1_700_000_000 + n;
            write!(
                stream,
                "commit refs/heads/{branch}\ncommitter t <t@example.com> {t} +0000\ndata {}\n{msg}\n",
                msg.len() + 1
            )
            .unwrap();
            if let Some(f) = from {
                writeln!(stream, "from {f}").unwrap();
            }
            for (path, m) in files {
                writeln!(stream, "M 100644 :{m} {path}").unwrap();
            }
        };
    let readme = blob(&mut stream, b"secrets repo\n");
    commit(&mut stream, "main", 0, "base", &[("README.md".into(), readme)], None);
    let shapes = leaks_corpus::text_leaks("pr");
    let benign = leaks_corpus::benign();
    for c in 0..commits {
        let mut files = Vec::new();
        for f in 0..per_commit {
            let i = c * per_commit + f;
            let data = if i % 50 == 7 {
                leaks_added += 1;
                let shape = &shapes[i % shapes.len()];
                leaks_corpus::fill(
                    &String::from_utf8_lossy(&shape.bytes).replace(shape.key.as_deref().unwrap_or(""), "{KEY}"),
                    &fake_key(&format!("pr-{i}")),
                )
                .into_bytes()
            } else {
                let (_, b) = benign_file(i, &benign);
                b
            };
            let m = blob(&mut stream, &data);
            files.push((format!("dir{}/file{i:04}", c % 10), m));
        }
        let from = (c == 0).then_some("refs/heads/main");
        commit(&mut stream, "pr", c + 1, &format!("Change {c}"), &files, from);
    }
    git(dir, &["fast-import", "--quiet"], Some(&stream));
    leaks_added
}

/// Scans up to `max` real files of this machine (documentation, changelogs,
/// configuration: text, gzip and binaries nobody tuned the rules for) and
/// prints how many are flagged: an out-of-sample view of false alarms.
fn real_files(scanner: &Scanner, max: usize) {
    let mut paths = Vec::new();
    let home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let roots = [
        "/usr/share/doc".to_owned(),
        "/etc".to_owned(),
        format!("{home}/registry/src"),
    ];
    // Depth-first, sorted, following symlinks to a bounded depth: the same
    // files on every run of one machine.
    let quota = max / roots.len();
    for root in &roots {
        let first = paths.len();
        let mut stack: Vec<(std::path::PathBuf, usize)> = vec![(root.into(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries.into_iter().rev() {
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_dir() && depth < 12 => stack.push((p, depth + 1)),
                    Ok(m) if m.is_file() && m.len() <= 2 << 20 && paths.len() - first < quota => paths.push(p),
                    _ => {}
                }
            }
        }
    }
    let t = Instant::now();
    let flagged: Vec<(String, Vec<String>)> = paths
        .par_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(p).ok()?;
            let name = p.display().to_string();
            let rules: Vec<String> = scanner
                .scan(&name, &bytes)
                .into_iter()
                .filter(|f| f.rule != DECODE_LIMIT)
                .map(|f| f.rule)
                .collect();
            (!rules.is_empty()).then_some((name, rules))
        })
        .collect();
    println!(
        "real files: {} under /usr/share/doc, /etc and the cargo registry scanned in {:.3} s, {} flagged (review them: test keys and example tokens are true shapes)",
        paths.len(),
        t.elapsed().as_secs_f64(),
        flagged.len()
    );
    for (name, rules) in flagged.iter().take(10) {
        println!("  {name}: {}", rules.join(", "));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let out_dir = args.next();
    let scanner = Scanner::default();

    eprintln!("leaks_bench: generating {n} files");
    let files = corpus(n);
    if let Some(dir) = &out_dir {
        let dir = Path::new(dir);
        std::fs::create_dir_all(dir.join("leak")).expect("out dir");
        std::fs::create_dir_all(dir.join("benign")).expect("out dir");
        for f in &files {
            let sub = if f.leak { "leak" } else { "benign" };
            std::fs::write(dir.join(sub).join(&f.name), &f.bytes).expect("write corpus");
        }
    }
    let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();

    let t = Instant::now();
    let results: Vec<(bool, bool)> = files
        .par_iter()
        .map(|f| {
            let found = scanner.scan(&f.name, &f.bytes);
            (f.leak, found.iter().any(|x| x.rule != DECODE_LIMIT))
        })
        .collect();
    let elapsed = t.elapsed();
    let mut missed: BTreeMap<String, usize> = BTreeMap::new();
    let mut alarms: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (f, (leak, hit)) in files.iter().zip(&results) {
        if *leak {
            let e = by_category.entry(f.category.as_str()).or_default();
            e.0 += usize::from(*hit);
            e.1 += 1;
        }
        match (leak, hit) {
            (true, false) => *missed.entry(f.name.clone()).or_default() += 1,
            (false, true) => *alarms.entry(f.name.clone()).or_default() += 1,
            _ => {}
        }
    }
    let tp = results.iter().filter(|(l, h)| *l && *h).count();
    let fp = results.iter().filter(|(l, h)| !*l && *h).count();
    let fn_ = results.iter().filter(|(l, h)| *l && !*h).count();
    let tn = results.iter().filter(|(l, h)| !*l && !*h).count();
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    println!(
        "corpus: {n} files ({} leaking, {} benign, {:.1} MiB)",
        tp + fn_,
        fp + tn,
        bytes as f64 / 1048576.0
    );
    println!("  precision {precision:.4}  recall {recall:.4}  (tp {tp}, fp {fp}, fn {fn_}, tn {tn})");
    println!(
        "  scan time {:.3} s ({:.0} files/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    let recall_by: Vec<String> = by_category
        .iter()
        .map(|(c, (found, total))| format!("{c} {found}/{total}"))
        .collect();
    println!("  recall by category: {}", recall_by.join(", "));
    if !missed.is_empty() {
        println!("  missed: {:?}", missed.keys().take(10).collect::<Vec<_>>());
    }
    if !alarms.is_empty() {
        println!("  false alarms: {:?}", alarms.keys().take(10).collect::<Vec<_>>());
    }

    real_files(&scanner, n);

    eprintln!("leaks_bench: building a 100-commit PR with 1,000 files");
    let repo = tempfile::tempdir().expect("tempdir");
    let planted = pr_repo(repo.path(), 100, 10);
    let t = Instant::now();
    let found = leaks::scan_range(&scanner, repo.path(), "main", "pr", &HistoryLimits::default()).expect("scan_range");
    let elapsed = t.elapsed();
    let leaking_files: std::collections::BTreeSet<&str> = found
        .iter()
        .filter(|f| f.rule != DECODE_LIMIT && f.path.starts_with("dir"))
        .map(|f| f.path.as_str())
        .collect();
    println!(
        "history: 100 commits, 1000 files ({planted} with a key): {} files flagged, scan_range {:.3} s",
        leaking_files.len(),
        elapsed.as_secs_f64()
    );
}
