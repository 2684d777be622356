//! The IAM options shared by every command that talks to IBM Cloud IAM
//! (`keys`, and `verify`/`rotate` with `--iam-check`): where IAM is, how
//! long to wait, and where the admin key that manages keys is read from.

use crate::cli::secret_input::SecretSource;
use crate::iam::{Iam, Settings};
use crate::secret::ApiKey;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::Duration;

/// IBM Cloud IAM's public endpoint.
pub const DEFAULT_IAM_URL: &str = "https://iam.cloud.ibm.com";

/// Where IAM is and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct IamArgs {
    /// IBM Cloud IAM's base URL (default: https://iam.cloud.ibm.com; plain
    /// http only for loopback addresses, in tests). Giving it also makes
    /// `verify` and `rotate` exchange each key with IAM first.
    #[arg(long, value_name = "URL")]
    pub iam_url: Option<String>,
    /// The time budget of each IAM call, retries included (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::duration::parse)]
    pub iam_timeout: Duration,
}

/// Where the IAM admin key (allowed to manage the service ID's keys) is read from.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminKeyArgs {
    /// Read the IAM admin API key from FILE (`-` reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "iam_api_key_env")]
    pub iam_api_key_file: Option<PathBuf>,
    /// Read the IAM admin API key from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub iam_api_key_env: Option<String>,
}

impl AdminKeyArgs {
    /// Reads the admin key, when one is given.
    pub fn read(&self) -> anyhow::Result<Option<ApiKey>> {
        let Some(source) =
            SecretSource::from_options(self.iam_api_key_file.as_deref(), self.iam_api_key_env.as_deref())
        else {
            return Ok(None);
        };
        let raw = source.read()?;
        let key =
            ApiKey::parse(raw).with_context(|| format!("IAM admin key from {} is not usable", source.describe()))?;
        Ok(Some(key))
    }
}

/// Everything a command needs to manage keys in IAM: where IAM is, the
/// admin key, and extra trust roots (`keys check`, `keys retire`, `audit --iam`).
#[derive(Debug, Clone, clap::Args)]
pub struct IamAccess {
    #[command(flatten)]
    pub iam: IamArgs,
    #[command(flatten)]
    pub admin: AdminKeyArgs,
    /// Also trust the CA certificates in this PEM file for IAM (repeatable).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Vec<PathBuf>,
}

impl IamAccess {
    /// Validates the URL and builds the client.
    pub fn client(&self) -> anyhow::Result<Iam> {
        self.iam.client(&self.ca_cert)
    }
}

/// Returns true when `host` names this machine (127.0.0.0/8, ::1, localhost).
fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

impl IamArgs {
    /// Returns IAM's base URL: `--iam-url`, or IBM Cloud's.
    pub fn url(&self) -> &str {
        self.iam_url.as_deref().unwrap_or(DEFAULT_IAM_URL)
    }

    /// Returns true when `--iam-url` was given: the operator asked for IAM.
    pub fn given(&self) -> bool {
        self.iam_url.is_some()
    }

    /// Validates the URL and builds the client; `ca_certs` are extra trust roots.
    pub fn client(&self, ca_certs: &[PathBuf]) -> anyhow::Result<Iam> {
        let url = self.url();
        let base = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--iam-url `{url}`: {e}"))?;
        let host = base.host().with_context(|| format!("--iam-url `{url}` has no host"))?;
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => bail!(
                "--iam-url `{}`: plain http would send API keys unencrypted; use https (http is allowed only for loopback addresses)",
                url
            ),
            other => bail!("--iam-url `{}`: the scheme `{other}` is not http or https", url),
        }
        if !base.username().is_empty() || base.password().is_some() {
            bail!("--iam-url must not carry credentials");
        }
        let mut ca_pems = Vec::with_capacity(ca_certs.len());
        for path in ca_certs {
            ca_pems.push(std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?);
        }
        let http = crate::registry::build_client(&crate::registry::ClientConfig {
            ca_pems,
            pool_per_host: 8,
            ..Default::default()
        })
        .context("--ca-cert")?;
        Ok(Iam::new(
            http,
            Settings {
                base,
                timeout: self.iam_timeout,
                retries: 3,
                backoff: Duration::from_millis(200),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> IamArgs {
        IamArgs {
            iam_url: Some(url.to_owned()),
            iam_timeout: Duration::from_secs(5),
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        iam: IamArgs,
    }

    #[test]
    fn giving_iam_url_counts_even_when_it_is_the_default() {
        use clap::Parser;
        let none = Cli::parse_from(["t"]).iam;
        assert!(!none.given());
        assert_eq!(none.url(), DEFAULT_IAM_URL);
        let explicit = Cli::parse_from(["t", "--iam-url", DEFAULT_IAM_URL]).iam;
        assert!(
            explicit.given(),
            "asking for IBM's IAM by name still asks for the IAM check"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(args("http://127.0.0.1:8080").client(&[]).is_ok());
        assert!(args("http://[::1]:8080").client(&[]).is_ok());
        assert!(args("http://localhost:8080").client(&[]).is_ok());
        assert!(args("https://iam.cloud.ibm.com").client(&[]).is_ok());
        let err = args("http://iam.example.com").client(&[]).err().unwrap().to_string();
        assert!(err.contains("unencrypted"), "{err}");
        assert!(args("ftp://127.0.0.1").client(&[]).is_err());
        assert!(args("https://u:p@iam.cloud.ibm.com").client(&[]).is_err());
    }
}
