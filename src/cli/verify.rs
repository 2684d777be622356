//! `rekey verify`: prove that a key pulls the probe image from every
//! registry host, all hosts at once.

use crate::cli::iamargs::{AdminKeyArgs, IamArgs};
use crate::cli::netargs::{NetArgs, config_targets, region_targets};
use crate::cli::output::{OutputFormat, Paint, Printer, plural};
use crate::cli::secret_input::SecretSource;
use crate::exit::Exit;
use crate::iam::{self, KeyClass, KeyStatus};
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::dockerconfig;
use crate::pullsecret::image::ImageRef;
use crate::pullsecret::manifest;
use crate::registry::{HostResult, Target};
use crate::secret::ApiKey;
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prove that the key pulls the probe image from every registry host.
///
/// For each host: GET /v2/, answer its Basic or Bearer challenge (a token
/// for `repository:<repo>:pull`), fetch the probe image's manifest (resolving
/// an index to linux/amd64) and config blob, and check every digest and
/// media type as containerd does. All
/// hosts are checked at once, each within --timeout. A host listed in
/// several regions is checked once per region. Each host is classified as
/// ok, bad_credentials, no_access, missing_image, platform_missing,
/// digest_mismatch, not_an_image, not_a_registry, rate_limited,
/// server_error, dns, connect, tls, timeout or credential_not_required.
/// Exits 1 if any host is not ok (credential_not_required passes only for
/// a host named by --allow-anonymous).
///
/// Without --full the config blob is fetched whole and the first bytes of
/// every layer are read (HTTP Range). After the pull, the first request
/// that carried the key is repeated anonymously and with a wrong password:
/// if either works, the key was not proven (credential_not_required).
///
/// Credentials come from the region catalog and the key, or from a
/// generated pull secret (--dockerconfig), checked exactly as shipped.
///
/// With --iam-check (or --iam-url), the key is first
/// exchanged for a token at IAM: a key IAM does not accept is reported by
/// its class (invalid, disabled, locked, expired; with an admin key IAM's
/// details tell a disabled key from a deleted one) and exits 1 before any
/// registry is asked; exit 2 when IAM is unreachable.
///
/// Example:
///   rekey verify --regions regions --api-key-file key.txt
///   rekey verify --regions regions --api-key-env REGISTRY_KEY --iam-check \
///       --iam-api-key-env REKEY_IAM_API_KEY
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
    #[command(flatten)]
    pub net: NetArgs,
    /// Ask IAM whether the key is valid before any registry (token exchange).
    #[arg(long, conflicts_with = "dockerconfig")]
    pub iam_check: bool,
    #[command(flatten)]
    pub iam: IamArgs,
    #[command(flatten)]
    pub admin: AdminKeyArgs,
}

#[derive(Serialize)]
struct Summary<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    iam: Option<&'a KeyStatus>,
    total: usize,
    failed: usize,
    hosts: &'a [HostResult],
}

fn load_dockerconfig(path: &Path, image: &ImageRef) -> anyhow::Result<Vec<Target>> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let json = manifest::extract_dockerconfigjson(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let config = dockerconfig::parse(&json).with_context(|| format!("reading {}", path.display()))?;
    let region = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|n| !n.is_empty())
        .unwrap_or("dockerconfig");
    config_targets(&config, region, image, &path.display().to_string())
}

fn catalog_targets(args: &Args, image: Option<&ImageRef>) -> anyhow::Result<(Vec<Target>, ApiKey)> {
    let Some(dir) = &args.regions else {
        bail!("nothing to verify: give --regions DIR with --api-key-file or --api-key-env, or --dockerconfig FILE");
    };
    let catalog = Catalog::load(dir)?;
    let regions = catalog.select(dir, &args.regions_selected)?;
    let source = SecretSource::from_options(args.api_key_file.as_deref(), args.api_key_env.as_deref())
        .context("no API key source given: use --api-key-file or --api-key-env")?;
    let key =
        ApiKey::parse(source.read()?).with_context(|| format!("API key from {} is not usable", source.describe()))?;
    Ok((region_targets(regions, &key, image), key))
}

/// Asks IAM what it says of `key` (with the admin key's token, when given, for its details).
fn iam_status(args: &Args, key: &ApiKey) -> anyhow::Result<KeyStatus> {
    let client = args.iam.client(&args.net.ca_cert)?;
    let admin = args.admin.read()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let admin_token = match &admin {
            Some(k) => Some(client.token(k).await.context("the IAM admin key")?),
            None => None,
        };
        anyhow::Ok(iam::classify(&client, key, admin_token.as_ref(), chrono::Utc::now()).await)
    })
}

/// Runs `rekey verify`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    let image = match &args.image {
        Some(raw) => Some(ImageRef::parse(raw).map_err(|e| anyhow::anyhow!("--image `{raw}` {e}"))?),
        None => None,
    };
    // Check the network options before reading any secret.
    args.net.client()?;
    let targets = match &args.dockerconfig {
        Some(path) => {
            let image = match image {
                Some(i) => i,
                None => ImageRef::parse(crate::pullsecret::catalog::DEFAULT_PROBE_IMAGE)?,
            };
            load_dockerconfig(path, &image)?
        }
        None => {
            let (targets, key) = catalog_targets(&args, image.as_ref())?;
            if args.iam_check || args.iam.given() {
                let status = iam_status(&args, &key)?;
                if status.class != KeyClass::Valid {
                    report_iam(printer, &key, &status)?;
                    return Ok(if status.class == KeyClass::IamUnreachable {
                        Exit::Error
                    } else {
                        Exit::Problem
                    });
                }
                printer.status(format_args!("IAM accepts key {}", key.fingerprint()));
            }
            targets
        }
    };
    let results = args.net.check(printer, targets)?;
    report(printer, &results)?;
    let failed = results.iter().any(|r| !r.passed());
    Ok(Exit::problem_if(failed))
}

/// Reports a key IAM does not accept; no registry was asked.
fn report_iam(printer: &Printer, key: &ApiKey, status: &KeyStatus) -> anyhow::Result<()> {
    let fingerprint = key.fingerprint();
    match printer.format() {
        OutputFormat::Json => printer.json(&Summary {
            ok: false,
            iam: Some(status),
            total: 0,
            failed: 0,
            hosts: &[],
        })?,
        OutputFormat::Junit => {
            use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type(status.class.name());
            s.set_message(format!("{}: {}", status.class.name(), status.detail));
            let mut suite = TestSuite::new("rekey verify");
            suite.add_test_case(TestCase::new(format!("iam {fingerprint}"), s));
            let mut report = Report::new("rekey");
            report.add_test_suite(suite);
            printer.junit(&report)?;
        }
        OutputFormat::Text | OutputFormat::Openmetrics => {
            printer.line(format_args!(
                "{:<16} iam    key {fingerprint} {}",
                status.class.name(),
                status.detail
            ));
        }
    }
    printer.status(format_args!(
        "IAM does not accept key {fingerprint} ({}): no registry was asked",
        status.class.name()
    ));
    Ok(())
}

fn report(printer: &Printer, results: &[HostResult]) -> anyhow::Result<()> {
    let failed = results.iter().filter(|r| !r.passed()).count();
    match printer.format() {
        OutputFormat::Json => printer.json(&Summary {
            ok: failed == 0,
            iam: None,
            total: results.len(),
            failed,
            hosts: results,
        })?,
        OutputFormat::Junit => printer.junit(&junit(results))?,
        OutputFormat::Text | OutputFormat::Openmetrics => {
            for r in results {
                let paint = if r.passed() { Paint::Good } else { Paint::Bad };
                printer.line(format_args!(
                    "{} {:<6} {:<32} {} ({} ms)",
                    printer.paint(paint, &format!("{:<16}", r.class)),
                    r.region,
                    r.host,
                    r.detail,
                    r.elapsed_ms
                ));
            }
        }
    }
    printer.status(format_args!(
        "{} of {} ok{}",
        results.len() - failed,
        plural(results.len(), "host", "hosts"),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    ));
    // End with the failures, grouped by class, so a long run does not hide them.
    let mut by_class: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for r in results.iter().filter(|r| !r.passed()) {
        by_class
            .entry(r.class.as_str())
            .or_default()
            .push(format!("{} ({})", r.host, r.region));
    }
    for (class, hosts) in &by_class {
        printer.status(format_args!("  {class}: {}", hosts.join(", ")));
    }
    Ok(())
}

/// Builds the JUnit report: one test case per region and host.
fn junit(results: &[HostResult]) -> quick_junit::Report {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("rekey verify");
    for r in results {
        let status = if r.passed() {
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
    use crate::registry::Class;

    #[test]
    fn junit_has_one_case_per_host() {
        let r = |class, host: &str| HostResult {
            region: "jp".into(),
            host: host.into(),
            class,
            detail: "d".into(),
            elapsed_ms: 3,
            anonymous_allowed: false,
        };
        let xml = junit(&[r(Class::Ok, "a.io"), r(Class::NoAccess, "b.io")])
            .to_string()
            .unwrap();
        assert_eq!(xml.matches("<testcase").count(), 2, "{xml}");
        assert!(xml.contains("type=\"no_access\""), "{xml}");
    }
}
