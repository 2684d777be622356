//! `rekey verify`: prove that a key pulls the probe image from every
//! registry host, all hosts at once.

use crate::catalog::Catalog;
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::secret_input::SecretSource;
use crate::dockerconfig;
use crate::exit::Exit;
use crate::host::Host;
use crate::image::ImageRef;
use crate::manifest;
use crate::registry::{self, Class, ClientConfig, Credential, HostResult, Settings, Target};
use crate::secret::ApiKey;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prove that the key pulls the probe image from every registry host.
///
/// For each host: GET /v2/, answer its Basic or Bearer challenge (a token
/// for `repository:<repo>:pull`), fetch the probe image's manifest (resolving
/// an index to linux/amd64) and config blob, and check every digest. All
/// hosts are checked at once, each within --timeout. A host listed in
/// several regions is checked once per region. Each host is classified as
/// ok, bad_credentials, no_access, missing_image, platform_missing,
/// digest_mismatch, not_a_registry, rate_limited, server_error, dns,
/// connect, tls or timeout. Exits 1 if any host is not ok.
///
/// Credentials come from the region catalog and the key, or from a
/// generated pull secret (--dockerconfig), checked exactly as shipped.
///
/// Example:
///   rekey verify --regions regions --api-key-file key.txt
///   rekey verify --regions regions --api-key-env REGISTRY_KEY --region jp --output junit
///   rekey verify --dockerconfig out/jp.dockerconfigjson --image armada-master/alpine:latest
///   rekey verify --regions regions --api-key-file key.txt \
///       --resolve jp.icr.io=127.0.0.1:5000 --ca-cert test-ca.pem
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The region catalog directory (one TOML file per region).
    #[arg(long, value_name = "DIR", conflicts_with = "dockerconfig")]
    pub regions: Option<PathBuf>,
    /// Read the API key from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["api_key_env", "dockerconfig"])]
    pub api_key_file: Option<PathBuf>,
    /// Read the API key from the environment variable NAME.
    #[arg(long, value_name = "NAME", conflicts_with = "dockerconfig")]
    pub api_key_env: Option<String>,
    /// Verify the hosts and credentials of this dockerconfigjson or Secret
    /// manifest instead of the catalog and a key.
    #[arg(long, value_name = "FILE")]
    pub dockerconfig: Option<PathBuf>,
    /// Verify only this region (repeatable; default: every region).
    #[arg(long = "region", value_name = "NAME", requires = "regions")]
    pub regions_selected: Vec<String>,
    /// The image to pull (default: each region's probe_image, or
    /// armada-master/alpine:latest with --dockerconfig).
    #[arg(long, value_name = "REPO:TAG")]
    pub image: Option<String>,
    /// How many hosts to check at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// The time budget of each host in seconds, retries included.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Connect to ADDR:PORT for HOST instead of resolving it (repeatable).
    #[arg(long, value_name = "HOST=ADDR:PORT")]
    pub resolve: Vec<String>,
    /// Also trust the CA certificates in this PEM file (repeatable).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Vec<PathBuf>,
    /// Use plain http for this host (repeatable); every other host uses https.
    #[arg(long, value_name = "HOST")]
    pub insecure_http: Vec<String>,
    /// Also fetch every layer and check its digest.
    #[arg(long)]
    pub full: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    ok: bool,
    total: usize,
    failed: usize,
    hosts: &'a [HostResult],
}

/// Parses `HOST=ADDR:PORT`.
fn parse_resolve(raw: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (host, addr) = raw
        .split_once('=')
        .with_context(|| format!("--resolve `{raw}`: expected HOST=ADDR:PORT"))?;
    let host = Host::parse(host).map_err(|e| anyhow::anyhow!("--resolve `{raw}`: the host `{host}` {e}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("--resolve `{raw}`: `{addr}` is not ADDR:PORT (for example 127.0.0.1:5000)"))?;
    Ok((host.name().to_owned(), addr))
}

fn load_dockerconfig(path: &Path, image: &ImageRef) -> anyhow::Result<Vec<Target>> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let json = manifest::extract_dockerconfigjson(&bytes).with_context(|| format!("reading {}", path.display()))?;
    // serde_json's messages can quote values: report only the position.
    let config = dockerconfig::parse(&json).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: not a dockerconfigjson ({:?} error at line {} column {})",
            path.display(),
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let region = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|n| !n.is_empty())
        .unwrap_or("dockerconfig")
        .to_owned();
    if config.auths.is_empty() {
        bail!("{}: field `auths` lists no hosts", path.display());
    }
    let mut targets = Vec::with_capacity(config.auths.len());
    for (name, entry) in &config.auths {
        let field = |f: &str| format!("{}: field `auths.{name}{f}`", path.display());
        let host = Host::parse(name).map_err(|e| anyhow::anyhow!("{}: `{name}` {e}", field("")))?;
        let from_auth = match entry.auth.as_ref().map(|a| a.expose_secret()).filter(|a| !a.is_empty()) {
            Some(auth) => {
                let decoded = zeroize::Zeroizing::new(
                    STANDARD
                        .decode(auth)
                        .map_err(|_| anyhow::anyhow!("{} is not valid base64", field(".auth")))?,
                );
                let text =
                    std::str::from_utf8(&decoded).map_err(|_| anyhow::anyhow!("{} is not UTF-8", field(".auth")))?;
                let (user, pass) = text
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("{} does not decode to username:password", field(".auth")))?;
                Some((user.to_owned(), SecretString::from(pass.to_owned())))
            }
            None => None,
        };
        let (username, password) = match (&entry.username, &entry.password, from_auth) {
            (Some(u), Some(p), _) if !u.is_empty() && !p.expose_secret().is_empty() => (u.clone(), p.clone()),
            (_, _, Some(pair)) => pair,
            _ => bail!("{} has neither username and password nor auth", field("")),
        };
        if password.expose_secret().is_empty() {
            bail!("{}: the password is empty", field(""));
        }
        targets.push(Target {
            region: region.clone(),
            host,
            image: image.clone(),
            credential: Credential { username, password },
        });
    }
    Ok(targets)
}

fn catalog_targets(args: &Args, image: Option<&ImageRef>) -> anyhow::Result<Vec<Target>> {
    let Some(dir) = &args.regions else {
        bail!("nothing to verify: give --regions DIR with --api-key-file or --api-key-env, or --dockerconfig FILE");
    };
    let catalog = Catalog::load(dir)?;
    let regions = catalog.select(dir, &args.regions_selected)?;
    let source = SecretSource::from_options(args.api_key_file.as_deref(), args.api_key_env.as_deref())
        .context("no API key source given: use --api-key-file or --api-key-env")?;
    let key =
        ApiKey::parse(source.read()?).with_context(|| format!("API key from {} is not usable", source.describe()))?;
    let mut targets = Vec::new();
    for region in regions {
        for host in &region.hosts {
            targets.push(Target {
                region: region.name.clone(),
                host: host.clone(),
                image: image.cloned().unwrap_or_else(|| region.probe_image.clone()),
                credential: Credential {
                    username: region.username.clone(),
                    password: SecretString::from(key.expose_secret().to_owned()),
                },
            });
        }
    }
    Ok(targets)
}

/// Runs `rekey verify`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    let image = match &args.image {
        Some(raw) => Some(ImageRef::parse(raw).map_err(|e| anyhow::anyhow!("--image `{raw}` {e}"))?),
        None => None,
    };
    let mut resolve = Vec::with_capacity(args.resolve.len());
    for raw in &args.resolve {
        resolve.push(parse_resolve(raw)?);
    }
    let mut insecure = BTreeSet::new();
    for raw in &args.insecure_http {
        let host = Host::parse(raw).map_err(|e| anyhow::anyhow!("--insecure-http `{raw}` {e}"))?;
        insecure.insert(host.as_str().to_owned());
    }
    let mut ca_pems = Vec::with_capacity(args.ca_cert.len());
    for path in &args.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            bail!(
                "--ca-cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
                path.display()
            );
        }
        ca_pems.push(pem);
    }
    let targets = match &args.dockerconfig {
        Some(path) => {
            let image = match image {
                Some(i) => i,
                None => ImageRef::parse(crate::catalog::DEFAULT_PROBE_IMAGE)?,
            };
            load_dockerconfig(path, &image)?
        }
        None => catalog_targets(&args, image.as_ref())?,
    };
    let client = registry::build_client(&ClientConfig {
        resolve,
        ca_pems,
        pool_per_host: 4,
    })
    .context("setting up the HTTP client")?;
    let settings = Settings {
        timeout: Duration::from_secs(args.timeout),
        full: args.full,
        insecure_http: insecure,
    };
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
        usize::from(args.concurrency),
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
    report(printer, &results)?;
    let failed = results.iter().any(|r| r.class != Class::Ok);
    Ok(Exit::problem_if(failed))
}

fn report(printer: &Printer, results: &[HostResult]) -> anyhow::Result<()> {
    let failed = results.iter().filter(|r| r.class != Class::Ok).count();
    match printer.format() {
        OutputFormat::Json => printer.json(&Summary {
            ok: failed == 0,
            total: results.len(),
            failed,
            hosts: results,
        })?,
        OutputFormat::Junit => printer.junit(&junit(results))?,
        OutputFormat::Text => {
            for r in results {
                printer.line(format_args!(
                    "{:<16} {:<6} {:<32} {} ({} ms)",
                    r.class, r.region, r.host, r.detail, r.elapsed_ms
                ));
            }
        }
    }
    printer.status(format_args!(
        "{} of {} hosts ok{}",
        results.len() - failed,
        results.len(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// Builds the JUnit report: one test case per region and host.
fn junit(results: &[HostResult]) -> quick_junit::Report {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("rekey verify");
    for r in results {
        let status = if r.class == Class::Ok {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type(r.class.as_str());
            s.set_message(format!("{}: {}", r.class, r.detail));
            s
        };
        let mut case = TestCase::new(format!("{} {}", r.region, r.host), status);
        case.set_classname(format!("verify.{}", r.region));
        case.set_time(Duration::from_millis(r.elapsed_ms));
        suite.add_test_case(case);
    }
    let mut report = Report::new("rekey");
    report.add_test_suite(suite);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_takes_host_equals_address() {
        let (h, a) = parse_resolve("jp.icr.io=127.0.0.1:5000").unwrap();
        assert_eq!((h.as_str(), a.to_string().as_str()), ("jp.icr.io", "127.0.0.1:5000"));
        assert!(parse_resolve("jp.icr.io").is_err());
        assert!(parse_resolve("jp.icr.io=127.0.0.1").is_err());
        assert!(parse_resolve("JP=127.0.0.1:1").is_err());
    }

    #[test]
    fn junit_has_one_case_per_host() {
        let r = |class, host: &str| HostResult {
            region: "jp".into(),
            host: host.into(),
            class,
            detail: "d".into(),
            elapsed_ms: 3,
        };
        let xml = junit(&[r(Class::Ok, "a.io"), r(Class::NoAccess, "b.io")])
            .to_string()
            .unwrap();
        assert_eq!(xml.matches("<testcase").count(), 2, "{xml}");
        assert!(xml.contains("type=\"no_access\""), "{xml}");
    }
}
