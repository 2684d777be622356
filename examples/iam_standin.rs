//! The demo's stand-in for IBM Cloud IAM and its registry, on 127.0.0.1
//! only: `script/demo` runs the whole key lifecycle against it (rotate with
//! `--create-keys`, `keys retire`, `audit --iam`).
//!
//! It starts, from the very code the integration tests use:
//! - the IAM stand-in (`tests/it/iam_support.rs`, plain http): IBM's
//!   identity endpoints, holding one service ID and one admin key;
//! - that stand-in's registry token server (TLS): it issues pull tokens for
//!   exactly the keys of the service ID that IAM holds and has not disabled
//!   or deleted, so a key retired in IAM stops pulling;
//! - Debian's docker-registry with token auth (TLS from a throwaway CA whose
//!   certificate names every catalog host), with each catalog probe image
//!   pushed through the registry HTTP API.
//!
//! Then it prints shell assignments (IAM_URL, IAM_SERVICE_ID, REGISTRY_ADDR,
//! REGISTRY_CA), then `# ready`, and runs until SIGTERM or SIGINT, when it
//! stops the registry. IAM forgets everything when it stops.
//!
//! Usage: iam_standin DIR ADMIN_KEY_FILE REGIONS_DIR
//!   DIR             where the CA, registry config and data go (created)
//!   ADMIN_KEY_FILE  the IAM admin key (first line), read from a file, never argv
//!   REGIONS_DIR     the catalog: its hosts go in the certificate, its probe images are pushed

#![allow(clippy::print_stdout, clippy::print_stderr)]

// Named `support` so that the shared files' `crate::support::…` paths resolve
// here as they do in the test binary (where `support` re-exports it).
#[path = "../tests/it/base_support.rs"]
mod support;

#[path = "../tests/it/peer_support.rs"]
mod peer_support;

#[path = "../tests/it/iam_support.rs"]
mod iam_support;

use iam_support::{Iam, SERVICE_ID};
use peer_support::{Pki, PushAuth, Pusher, RT, Signer, TokenIssuer, make_pki, start_registry, token_auth_yaml};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The demo's TLS identity and token signer.
struct Demo {
    pki: Pki,
    signer: Arc<Signer>,
}

impl TokenIssuer for Demo {
    fn pki(&self) -> &Pki {
        &self.pki
    }
    fn signer(&self) -> Arc<Signer> {
        self.signer.clone()
    }
}

/// The part of a region file the stand-in needs.
#[derive(serde::Deserialize)]
struct Region {
    hosts: Vec<String>,
    probe_image: String,
}

/// Returns every catalog host name (ports dropped) and every probe image.
fn catalog(dir: &Path) -> Result<(BTreeSet<String>, BTreeSet<String>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (mut hosts, mut images) = (BTreeSet::new(), BTreeSet::new());
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let region: Region = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for host in region.hosts {
            hosts.insert(host.split(':').next().unwrap_or_default().to_owned());
        }
        images.insert(region.probe_image);
    }
    if images.is_empty() {
        return Err(format!("{}: no region files (*.toml)", dir.display()));
    }
    Ok((hosts, images))
}

/// Quotes `s` for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run() -> Result<(), String> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, admin_file, regions] = args.as_slice() else {
        return Err("usage: iam_standin DIR ADMIN_KEY_FILE REGIONS_DIR".into());
    };
    std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    let admin = std::fs::read_to_string(admin_file)
        .map_err(|e| format!("{}: {e}", admin_file.display()))?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if admin.is_empty() {
        return Err(format!("{}: the first line holds no admin key", admin_file.display()));
    }
    let (hosts, images) = catalog(regions)?;

    let mut names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    names.extend(["localhost", "127.0.0.1"]);
    let demo = Demo {
        pki: make_pki("rekey demo CA", &names),
        signer: Arc::new(Signer::new()),
    };
    let ca = support::write(&dir, "ca.pem", &demo.pki.ca_pem);
    support::write(&dir, "server.pem", &demo.pki.cert_pem);
    support::write(&dir, "server.key", &demo.pki.key_pem);
    let signer_pem = support::write(&dir, "token-signer.pem", &demo.signer.cert_pem);

    let iam = Iam::start_with_admin(admin);
    let auth = iam.registry_auth(&demo);
    // The realm names the token server by address: clients reach it without --resolve.
    let realm = format!("https://127.0.0.1:{}/token", auth.port());
    let (registry, mut child) = start_registry(
        &dir,
        "registry",
        &dir.join("data"),
        &dir,
        &token_auth_yaml(&realm, &signer_pem),
    );

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(demo.pki.ca_pem.as_bytes()).map_err(|e| e.to_string())?)
        .build()
        .map_err(|e| e.to_string())?;
    let pusher = Pusher {
        client,
        base: format!("https://{registry}"),
        auth: PushAuth::Token(demo.signer.clone()),
    };
    for image in &images {
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        RT.block_on(pusher.index(repo, tag, &["amd64", "arm64"], true));
    }

    let mut out = std::io::stdout().lock();
    let lines = format!(
        "IAM_URL={}\nIAM_SERVICE_ID={}\nREGISTRY_ADDR={}\nREGISTRY_CA={}\n# ready\n",
        sh(&iam.url()),
        sh(SERVICE_ID),
        sh(&registry.to_string()),
        sh(&ca.display().to_string()),
    );
    out.write_all(lines.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    drop(out);

    RT.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iam_standin: {e}");
            ExitCode::from(2)
        }
    }
}
