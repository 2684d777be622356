//! The network options of every command that talks to registries (`verify`,
//! `rotate`, `check --verify-pull`), and running the checks with a progress
//! bar on a terminal.

use crate::cli::output::Printer;
use crate::pullsecret::dockerconfig::DockerConfig;
use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use crate::registry::{self, ClientConfig, Credential, HostResult, Settings, Target};
use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach registry hosts and how long to try.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// How many hosts to check at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// The time budget of each host, retries included (e.g. 30s, 2m; at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::duration::parse)]
    pub timeout: Duration,
    /// Connect to ADDR:PORT for HOST instead of resolving it (repeatable);
    /// `*=ADDR:PORT` sends every other host there (one test registry or proxy).
    #[arg(long, value_name = "HOST=ADDR:PORT", value_parser = parse_resolve)]
    pub resolve: Vec<(String, SocketAddr)>,
    /// Also trust the CA certificates in this PEM file (repeatable).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Vec<PathBuf>,
    /// Use plain http for this host (repeatable); every other host uses https.
    #[arg(long, value_name = "HOST")]
    pub insecure_http: Vec<String>,
    /// Also download every layer and check its digest (by default the
    /// config is fetched and the first bytes of every layer are read).
    #[arg(long)]
    pub full: bool,
    /// Accept `credential_not_required` for this host (repeatable): a
    /// registry that serves the probe image anonymously by design.
    #[arg(long, value_name = "HOST")]
    pub allow_anonymous: Vec<String>,
}

/// Parses `HOST=ADDR:PORT` (`*=ADDR:PORT` for every other host). Run by
/// clap, so a bad value is refused the same way on every command before
/// anything is read.
pub fn parse_resolve(raw: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = raw.split_once('=').ok_or("expected HOST=ADDR:PORT")?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not ADDR:PORT (for example 127.0.0.1:5000)"))?;
    if host == "*" {
        return Ok(("*".to_owned(), addr));
    }
    let host = Host::parse(host).map_err(|e| format!("the host `{host}` {e}"))?;
    Ok((host.name().to_owned(), addr))
}

impl NetArgs {
    /// Validates the options and builds the shared HTTP client and settings.
    pub fn client(&self) -> anyhow::Result<(reqwest::Client, Settings)> {
        if self.timeout > Duration::from_secs(3600) {
            bail!(
                "--timeout {}: at most 1h per host",
                humantime::format_duration(self.timeout)
            );
        }
        let mut resolve = Vec::with_capacity(self.resolve.len());
        let mut resolve_all = None;
        for (name, addr) in &self.resolve {
            if name == "*" {
                if resolve_all.replace(*addr).is_some() {
                    bail!("--resolve: `*` is given twice");
                }
            } else {
                resolve.push((name.clone(), *addr));
            }
        }
        let mut insecure = BTreeSet::new();
        for raw in &self.insecure_http {
            let host = Host::parse(raw).map_err(|e| anyhow::anyhow!("--insecure-http `{raw}` {e}"))?;
            insecure.insert(host.as_str().to_owned());
        }
        let mut allow_anonymous = BTreeSet::new();
        for raw in &self.allow_anonymous {
            let host = Host::parse(raw).map_err(|e| anyhow::anyhow!("--allow-anonymous `{raw}` {e}"))?;
            allow_anonymous.insert(host.as_str().to_owned());
        }
        let mut ca_pems = Vec::with_capacity(self.ca_cert.len());
        for path in &self.ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!(
                    "--ca-cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
                    path.display()
                );
            }
            ca_pems.push(pem);
        }
        let client = registry::build_client(&ClientConfig {
            resolve,
            resolve_all,
            ca_pems,
            pool_per_host: 4,
        })
        .context("setting up the HTTP client")?;
        let settings = Settings {
            timeout: self.timeout,
            full: self.full,
            insecure_http: insecure,
            allow_anonymous,
        };
        Ok((client, settings))
    }

    /// Checks every target at once (bounded by --concurrency), with a
    /// progress bar when the terminal allows one.
    pub fn check(&self, printer: &Printer, targets: Vec<Target>) -> anyhow::Result<Vec<HostResult>> {
        let (client, settings) = self.client()?;
        let progress = if printer.interactive() {
            let pb = indicatif::ProgressBar::new(targets.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} hosts {msg}") {
                pb.set_style(style);
            }
            Some(pb)
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let pb = progress.clone();
        let results = runtime.block_on(registry::verify_all(
            client,
            targets,
            settings,
            usize::from(self.concurrency),
            move |r: &HostResult| {
                if let Some(pb) = &pb {
                    pb.set_message(r.host.clone());
                    pb.inc(1);
                }
            },
        ));
        if let Some(pb) = progress {
            pb.finish_and_clear();
        }
        Ok(results)
    }
}

pub use crate::ops::rotate::region_targets;

/// Returns one target per host of a dockerconfigjson, each with the
/// credential Docker uses (`auth`, or else `username` and `password`),
/// reported under `region`; `source` names the file in errors. An entry
/// whose `auth` and `password` disagree is an error, found before any
/// request.
pub fn config_targets(
    config: &DockerConfig,
    region: &str,
    image: &ImageRef,
    source: &str,
) -> anyhow::Result<Vec<Target>> {
    if config.auths.is_empty() {
        bail!("{source}: field `auths` lists no hosts");
    }
    let mut targets = Vec::with_capacity(config.auths.len());
    for (name, entry) in &config.auths {
        let field = |f: &str| format!("{source}: field `auths.{name}{f}`");
        let host = Host::parse(name).map_err(|e| anyhow::anyhow!("{}: `{name}` {e}", field("")))?;
        let (username, password) = entry.credential().map_err(|e| anyhow::anyhow!("{} {e}", field("")))?;
        targets.push(Target {
            region: region.to_owned(),
            host,
            image: image.clone(),
            credential: Credential { username, password },
        });
    }
    Ok(targets)
}

/// The registry verifier of the operations: the real registries, through
/// these network options, with a progress bar on a terminal.
pub struct NetVerifier<'a> {
    pub net: &'a NetArgs,
    pub printer: &'a Printer,
}

impl crate::ops::world::Verifier for NetVerifier<'_> {
    fn verify(&self, targets: Vec<Target>) -> anyhow::Result<Vec<HostResult>> {
        self.net.check(self.printer, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn resolve_takes_host_equals_address() {
        let (h, a) = parse_resolve("jp.icr.io=127.0.0.1:5000").unwrap();
        assert_eq!((h.as_str(), a.to_string().as_str()), ("jp.icr.io", "127.0.0.1:5000"));
        assert!(parse_resolve("jp.icr.io").is_err());
        assert!(parse_resolve("jp.icr.io=127.0.0.1").is_err());
        assert!(parse_resolve("JP=127.0.0.1:1").is_err());
        assert_eq!(parse_resolve("*=127.0.0.1:5000").unwrap().0, "*");
        assert!(parse_resolve("*.icr.io=127.0.0.1:5000").is_err());
    }

    #[test]
    fn config_targets_take_each_entrys_credentials() {
        let json = br#"{"auths":{"a.io":{"username":"u","password":"p1"},"b.io":{"auth":"dTpwMg=="},"c.io":{}}}"#;
        let config = crate::pullsecret::dockerconfig::parse(json).unwrap();
        let image = ImageRef::parse("x/y:z").unwrap();
        let Err(e) = config_targets(&config, "r", &image, "f.json") else {
            panic!("c.io has no credentials")
        };
        assert_eq!(
            e.to_string(),
            "f.json: field `auths.c.io` has neither username and password nor auth"
        );
        let json = br#"{"auths":{"a.io":{"username":"u","password":"p1"},"b.io":{"auth":"dTpwMg=="}}}"#;
        let t = config_targets(
            &crate::pullsecret::dockerconfig::parse(json).unwrap(),
            "r",
            &image,
            "f.json",
        )
        .unwrap();
        assert_eq!(t[1].credential.username, "u");
        assert_eq!(t[1].credential.password.expose_secret(), "p2");
    }
}
