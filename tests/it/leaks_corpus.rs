//! The leak corpus: named leak and benign cases from `fixtures/leaks/`, with
//! canary-shaped fake keys filled in, plus the shapes that need binary
//! encodings (gzip, zip, tar, UTF-16, wrapped base64, hex dumps), generated
//! deterministically. Shared by `tests/it/leaks.rs` and `examples/leaks_bench.rs`.

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// One named case.
pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The fake key the case holds, when it holds one in full.
    pub key: Option<String>,
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// Returns deterministic pseudo-random bytes for `seed`.
pub fn noise(seed: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < n {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(n);
    out
}

/// Returns a canary-shaped fake IBM Cloud API key for `seed`: 44 characters
/// of `[A-Za-z0-9_-]`, starting with `rkcanary`.
pub fn fake_key(seed: &str) -> String {
    let tail: String = noise(seed, 36)
        .iter()
        .map(|b| ALPHABET[usize::from(b % 64)] as char)
        .collect();
    format!("rkcanary{tail}")
}

/// Fills the placeholders of a case text with `key`'s forms.
pub fn fill(text: &str, key: &str) -> String {
    let (a, b) = key.split_at(key.len() / 2);
    let auth = format!("iamapikey:{key}");
    text.replace("{KEY_A}", a)
        .replace("{KEY_B}", b)
        .replace("{KEY_B64}", &STANDARD.encode(key))
        .replace("{AUTH_B64_NOPAD}", &STANDARD_NO_PAD.encode(&auth))
        .replace("{AUTH_B64}", &STANDARD.encode(&auth))
        .replace(
            "{KEY_PCT}",
            &key.bytes().map(|b| format!("%{b:02X}")).collect::<String>(),
        )
        .replace(
            "{KEY_U}",
            &key.chars().map(|c| format!("\\u{:04x}", c as u32)).collect::<String>(),
        )
        .replace("{KEY}", key)
}

/// Parses a corpus file: `=== name` lines start cases.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut cases: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== ") {
            cases.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = cases.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    cases
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/leaks")
}

/// Returns the text leak cases with keys derived from `seed` and the name.
pub fn text_leaks(seed: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("leaks.txt")).expect("fixtures/leaks/leaks.txt");
    parse(&text)
        .into_iter()
        .map(|(name, body)| {
            let key = fake_key(&format!("{seed}/{name}"));
            Case {
                bytes: fill(&body, &key).into_bytes(),
                name,
                key: Some(key),
            }
        })
        .collect()
}

/// Returns the benign cases.
pub fn benign() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("benign.txt")).expect("fixtures/leaks/benign.txt");
    parse(&text)
        .into_iter()
        .map(|(name, body)| Case {
            name,
            bytes: body.into_bytes(),
            key: None,
        })
        .collect()
}

fn wrap(text: &str, width: usize) -> String {
    text.as_bytes()
        .chunks(width)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tw = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tw.append_data(&mut h, name, *data).expect("tar");
    }
    tw.into_inner().expect("tar")
}

pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        zw.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip");
        zw.write_all(data).expect("zip");
    }
    zw.finish().expect("zip").into_inner()
}

fn utf16(text: &str, little: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if little { &[0xff, 0xfe] } else { &[0xfe, 0xff] });
    }
    for u in text.encode_utf16() {
        out.extend_from_slice(&if little { u.to_le_bytes() } else { u.to_be_bytes() });
    }
    out
}

/// Returns the leak cases that need binary encodings, keys derived from `seed`.
pub fn generated_leaks(seed: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, make: &dyn Fn(&str) -> Vec<u8>, holds_key: bool| {
        let key = fake_key(&format!("{seed}/{name}"));
        cases.push(Case {
            name: name.to_owned(),
            bytes: make(&key),
            key: holds_key.then_some(key),
        });
    };
    let dockerconfig = |key: &str| {
        let auth = STANDARD.encode(format!("iamapikey:{key}"));
        format!(
            "{{\"auths\":{{\"jp.icr.io\":{{\"username\":\"iamapikey\",\"password\":\"{key}\",\"auth\":\"{auth}\"}},\"private.jp.icr.io\":{{\"username\":\"iamapikey\",\"password\":\"{key}\",\"auth\":\"{auth}\"}}}}}}"
        )
    };
    add(
        "encodings/base64-wrapped-76",
        &|k| wrap(&STANDARD.encode(dockerconfig(k)), 76).into_bytes(),
        true,
    );
    add(
        "encodings/base64-openssl-64-armored",
        &|k| {
            format!(
                "-----BEGIN REGISTRY CONFIG-----\n{}-----END REGISTRY CONFIG-----\n",
                wrap(&STANDARD.encode(dockerconfig(k)), 64)
            )
            .into_bytes()
        },
        true,
    );
    add(
        "encodings/base64-in-yaml-block",
        &|k| {
            let b64 = STANDARD.encode(format!("IBMCLOUD_API_KEY={k}\nREGION=jp-tok\n"));
            let indented: String = wrap(&b64, 40).lines().map(|l| format!("    {l}\n")).collect();
            format!("kind: ConfigMap\ndata:\n  env.b64: |\n{indented}").into_bytes()
        },
        true,
    );
    add(
        "encodings/hex-xxd",
        &|k| {
            wrap(
                &hex::encode(format!("machine jp.icr.io login iamapikey password {k}\n")),
                60,
            )
            .into_bytes()
        },
        true,
    );
    add(
        "encodings/gzip-base64",
        &|k| {
            format!(
                "KEYS_GZ_64={}\n",
                STANDARD.encode(gzip(
                    format!("{}IBMCLOUD_API_KEY={k}\n", "# jp-tok pull key\n".repeat(8)).as_bytes()
                ))
            )
            .into_bytes()
        },
        true,
    );
    add(
        "encodings/gzip-file",
        &|k| gzip(format!("{}apikey: {k}\n", "region: jp-tok\n".repeat(8)).as_bytes()),
        true,
    );
    add(
        "encodings/utf16le-bom-powershell",
        &|k| {
            utf16(
                &format!("$env:IBMCLOUD_API_KEY = \"{k}\"\r\nibmcloud login\r\n"),
                true,
                true,
            )
        },
        true,
    );
    add(
        "encodings/utf16be-no-bom",
        &|k| utf16(&format!("ibmcloud login --apikey {k}\n"), false, false),
        true,
    );
    add(
        "archives/tar-gz",
        &|k| {
            gzip(&tar(&[
                ("notes/readme.txt", b"rotation notes\n"),
                ("notes/jp.env", format!("IBMCLOUD_API_KEY={k}\n").as_bytes()),
            ]))
        },
        true,
    );
    add(
        "archives/zip",
        &|k| {
            zip(&[(
                "creds/.netrc",
                format!("machine jp.icr.io login iamapikey password {k}\n").as_bytes(),
            )])
        },
        true,
    );
    add(
        "archives/zip-in-tar",
        &|k| tar(&[("backup.zip", &zip(&[("config.json", dockerconfig(k).as_bytes())]))]),
        true,
    );
    add(
        "binary/embedded",
        &|k| {
            let mut b = noise(k, 300);
            b.extend_from_slice(b"\0\xff\xfe\0--apikey ");
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(b"\0\x80\x81");
            b.extend_from_slice(&noise("tail", 200));
            b
        },
        true,
    );
    add(
        "encodings/openpgp-compressed-armored",
        &|k| {
            // gpg --store --compress-algo zip -a: a compressed data packet
            // (old format, tag 8, indeterminate length, ZIP) holding a literal packet.
            let text = format!("IBMCLOUD_API_KEY={k}\n");
            let mut literal = vec![0xcb, u8::try_from(text.len() + 6).unwrap_or(0), b'b', 0, 0, 0, 0, 0];
            literal.extend_from_slice(text.as_bytes());
            let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            deflate.write_all(&literal).expect("deflate");
            let mut packet = vec![0xa3, 1];
            packet.extend(deflate.finish().expect("deflate"));
            format!(
                "-----BEGIN PGP MESSAGE-----\n\n{}=GZf5\n-----END PGP MESSAGE-----\n",
                wrap(&STANDARD.encode(packet), 64)
            )
            .into_bytes()
        },
        true,
    );
    add("bare/key-file-newline", &|k| format!("{k}\n").into_bytes(), true);
    add(
        "private/pem-block",
        &|k| {
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
                wrap(&STANDARD.encode(noise(k, 120)), 64)
            )
            .into_bytes()
        },
        false,
    );
    add(
        "private/openssh",
        &|k| {
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}-----END OPENSSH PRIVATE KEY-----\n",
                wrap(&STANDARD.encode(noise(k, 200)), 70)
            )
            .into_bytes()
        },
        false,
    );
    cases
}

/// Returns every leak case.
pub fn leaks(seed: &str) -> Vec<Case> {
    let mut cases = text_leaks(seed);
    cases.extend(generated_leaks(seed));
    cases
}
