//! `rekey generate`: per-region `kubernetes.io/dockerconfigjson` pull secrets.

use crate::cli::keyarg::KeyArgs;
use crate::cli::output::{OutputFormat, Printer, plural};
use crate::exit::Exit;
use crate::fingerprint::Fingerprint;
use crate::fsx::{self, WriteSet};
use crate::pullsecret::catalog::{self, Catalog, Region};
use crate::pullsecret::dockerconfig;
use crate::pullsecret::manifest;
use crate::secret::ApiKey;
use serde::Serialize;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Write one pull secret per region, all carrying the same API key.
///
/// Every file is written atomically with mode 0600; all regions are written
/// or none. The JSON is byte-identical to what `kubectl create secret
/// docker-registry --dry-run=client -o json` puts in `.dockerconfigjson`.
///
/// Example:
///   rekey generate --regions regions --api-key-file key.txt --out out
///   rekey generate --regions regions --api-key-env REGISTRY_KEY --region jp \
///       --format secret-yaml --namespace kube-system --out out
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The region catalog directory (one TOML file per region).
    #[arg(long, value_name = "DIR")]
    pub regions: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Generate only this region (repeatable; default: every region).
    #[arg(long = "region", value_name = "NAME")]
    pub regions_selected: Vec<String>,
    /// The email to put in each entry (default: the region's, or none).
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// What to write for each region.
    #[arg(long, value_enum, default_value_t = Format::Dockerconfigjson)]
    pub format: Format,
    /// The Secret's name, for secret-yaml and secret-json.
    #[arg(long, value_name = "NAME", default_value = "all-icr-io")]
    pub secret_name: String,
    /// The Secret's namespace, for secret-yaml and secret-json (default: none).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
}

/// The file written for each region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `<region>.dockerconfigjson`: the raw JSON.
    Dockerconfigjson,
    /// `<region>.secret.yaml`: a Kubernetes Secret manifest.
    SecretYaml,
    /// `<region>.secret.json`: a Kubernetes Secret manifest.
    SecretJson,
}

impl Format {
    /// Returns the file name written for `region`.
    pub fn file_name(self, region: &str) -> String {
        match self {
            Format::Dockerconfigjson => format!("{region}.dockerconfigjson"),
            Format::SecretYaml => format!("{region}.secret.yaml"),
            Format::SecretJson => format!("{region}.secret.json"),
        }
    }
}

#[derive(Serialize)]
struct Written {
    region: String,
    file: PathBuf,
    format: Format,
    hosts: Vec<String>,
    key_fingerprint: Fingerprint,
}

#[derive(Serialize)]
struct Summary {
    key_fingerprint: Fingerprint,
    regions: Vec<Written>,
}

/// Renders the file contents for one region.
pub fn render_region(
    region: &Region,
    key: &ApiKey,
    email: Option<&str>,
    format: Format,
    name: &str,
    namespace: Option<&str>,
) -> Zeroizing<String> {
    let email = email.or(region.email.as_deref());
    let json = dockerconfig::render(&region.hosts, &region.username, key, email);
    match format {
        Format::Dockerconfigjson => json,
        Format::SecretYaml => manifest::render_yaml(name, namespace, &json),
        Format::SecretJson => manifest::render_json(name, namespace, &json),
    }
}

/// Runs `rekey generate`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("generate", &[OutputFormat::Text, OutputFormat::Json])?;
    let catalog = Catalog::load(&args.regions)?;
    let regions = catalog.select(&args.regions, &args.regions_selected)?;
    if let Some(email) = &args.email {
        catalog::validate_email(email).map_err(|p| anyhow::anyhow!("--email: {p}"))?;
    }
    manifest::validate_name(&args.secret_name).map_err(|p| anyhow::anyhow!("--secret-name: {p}"))?;
    if let Some(ns) = &args.namespace {
        manifest::validate_name(ns).map_err(|p| anyhow::anyhow!("--namespace: {p}"))?;
    }
    let key = args.key.read()?;
    let _lock = fsx::prepare_output_dir(&args.out)?;

    let mut set = WriteSet::new();
    let mut written = Vec::with_capacity(regions.len());
    for region in &regions {
        let contents = render_region(
            region,
            &key,
            args.email.as_deref(),
            args.format,
            &args.secret_name,
            args.namespace.as_deref(),
        );
        let path = args.out.join(args.format.file_name(&region.name));
        set.stage(&path, contents.as_bytes(), fsx::SECRET_MODE)?;
        written.push(Written {
            region: region.name.clone(),
            file: path,
            format: args.format,
            hosts: region.hosts.iter().map(|h| h.to_string()).collect(),
            key_fingerprint: key.fingerprint(),
        });
    }
    set.commit()?;
    report(printer, &key, written, &args.out)?;
    Ok(Exit::Ok)
}

fn report(printer: &Printer, key: &ApiKey, written: Vec<Written>, out: &Path) -> anyhow::Result<()> {
    match printer.format() {
        OutputFormat::Json => printer.json(&Summary {
            key_fingerprint: key.fingerprint(),
            regions: written,
        }),
        _ => {
            for w in &written {
                printer.line(format_args!(
                    "{:<6} {} ({}, key {})",
                    w.region,
                    w.file.display(),
                    plural(w.hosts.len(), "host", "hosts"),
                    w.key_fingerprint
                ));
            }
            printer.status(format_args!(
                "wrote {} to {}",
                plural(written.len(), "region", "regions"),
                out.display()
            ));
            Ok(())
        }
    }
}
