//! Proves that a credential can pull from registry hosts: a Docker Registry
//! HTTP API v2 / OCI distribution client on reqwest (rustls) that checks
//! every host at once, bounded by a concurrency limit and a per-host time
//! budget, and classifies each host's outcome.
//!
//! This module is the network edge of `rekey verify`. It reads no files, no
//! environment and no terminal; it uses tokio's timer only for deadlines and
//! the elapsed time it reports.

pub mod auth;
pub mod classify;
pub mod client;

pub use classify::{Class, Failure};

use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use secrecy::SecretString;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A username and password (the API key) for one host.
pub struct Credential {
    pub username: String,
    pub password: SecretString,
}

/// One host to verify, with the region it is reported under.
pub struct Target {
    pub region: String,
    pub host: Host,
    pub image: ImageRef,
    pub credential: Credential,
}

/// How every host is verified.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The time budget of each host, retries included.
    pub timeout: Duration,
    /// Also fetch and check every layer.
    pub full: bool,
    /// Hosts (`name` or `name:port`) that may be reached over plain http.
    pub insecure_http: BTreeSet<String>,
    /// Hosts (`name` or `name:port`) whose `credential_not_required` result
    /// does not count as a failure.
    pub allow_anonymous: BTreeSet<String>,
}

impl Settings {
    /// Returns true when `authority` (`host` or `host:port`) may use plain http.
    pub fn allows_http(&self, authority: &str) -> bool {
        if self.insecure_http.contains(authority) {
            return true;
        }
        let name = authority.rsplit_once(':').map_or(authority, |(n, _)| n);
        self.insecure_http.contains(name)
    }

    /// Returns true when `authority` may serve the probe image anonymously.
    pub fn allows_anonymous(&self, authority: &str) -> bool {
        if self.allow_anonymous.contains(authority) {
            return true;
        }
        let name = authority.rsplit_once(':').map_or(authority, |(n, _)| n);
        self.allow_anonymous.contains(name)
    }
}

/// How the HTTP client connects: address overrides and extra trust roots.
#[derive(Default)]
pub struct ClientConfig {
    /// Host name → address to connect to (the address's port is used unless
    /// the host carries its own port).
    pub resolve: Vec<(String, SocketAddr)>,
    /// Where every other name connects (`--resolve '*=ADDR:PORT'`): the
    /// address's port is used unless the URL carries its own.
    pub resolve_all: Option<SocketAddr>,
    /// Extra trust roots, PEM.
    pub ca_pems: Vec<Vec<u8>>,
    /// Maximum idle connections kept per host.
    pub pool_per_host: usize,
}

/// A problem building the HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the CA certificate bundle #{index} is not valid PEM")]
    BadCa {
        index: usize,
        #[source]
        source: reqwest::Error,
    },
    #[error("building the HTTP client failed")]
    Build(#[source] reqwest::Error),
}

/// Builds the HTTP client every host check shares: rustls with the system
/// roots plus `ca_pems`, no automatic redirects (they are followed by hand
/// so credentials never leave the registry's origin).
pub fn build_client(config: &ClientConfig) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rekey/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(config.pool_per_host.max(1));
    for (index, pem) in config.ca_pems.iter().enumerate() {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|source| ClientError::BadCa { index, source })?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(addr) = config.resolve_all {
        b = b.dns_resolver(std::sync::Arc::new(EveryName(addr)));
    }
    for (name, addr) in &config.resolve {
        b = b.resolve(name, *addr);
    }
    b.build().map_err(ClientError::Build)
}

/// A resolver that answers every name with one address (`--resolve '*=…'`),
/// so a whole catalog, and its token realms, can be pointed at one test
/// registry or proxy. Named `--resolve` entries still take precedence.
struct EveryName(SocketAddr);

impl reqwest::dns::Resolve for EveryName {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0;
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(addr));
            Ok(addrs)
        })
    }
}

/// One host's result, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub region: String,
    pub host: String,
    pub class: Class,
    pub detail: String,
    pub elapsed_ms: u64,
    /// `--allow-anonymous` named this host: `credential_not_required` passes.
    #[serde(skip)]
    pub anonymous_allowed: bool,
}

impl HostResult {
    /// Returns true when the host's result is not a failure: `ok`, or
    /// `credential_not_required` on a host named by `--allow-anonymous`.
    pub fn passed(&self) -> bool {
        self.class == Class::Ok || (self.class == Class::CredentialNotRequired && self.anonymous_allowed)
    }
}

/// Verifies every target, at most `concurrency` at once, each within
/// `settings.timeout`. Calls `done` as each host finishes; returns the
/// results in the order of `targets`.
pub async fn verify_all(
    client: reqwest::Client,
    targets: Vec<Target>,
    settings: Settings,
    concurrency: usize,
    done: impl Fn(&HostResult) + Send + Sync + 'static,
) -> Vec<HostResult> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let settings = Arc::new(settings);
    let done = Arc::new(done);
    let mut set = tokio::task::JoinSet::new();
    let names: Vec<(String, String)> = targets.iter().map(|t| (t.region.clone(), t.host.to_string())).collect();
    for (index, target) in targets.into_iter().enumerate() {
        let semaphore = semaphore.clone();
        let settings = settings.clone();
        let client = client.clone();
        let done = done.clone();
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let result = verify_one(&client, &target, &settings).await;
            done(&result);
            (index, result)
        });
    }
    let mut results: Vec<Option<HostResult>> = names.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    // A check that panicked is reported, never silently dropped.
    results
        .into_iter()
        .zip(names)
        .map(|(r, (region, host))| {
            r.unwrap_or(HostResult {
                region,
                host,
                class: Class::ServerError,
                detail: "the check stopped unexpectedly".to_owned(),
                elapsed_ms: 0,
                anonymous_allowed: false,
            })
        })
        .collect()
}

/// Verifies one target within its time budget.
pub async fn verify_one(client: &reqwest::Client, target: &Target, settings: &Settings) -> HostResult {
    let start = tokio::time::Instant::now();
    let deadline = start + settings.timeout;
    let outcome = tokio::time::timeout_at(deadline, client::verify_host(client, target, settings, deadline)).await;
    let (class, detail) = match outcome {
        Ok(Ok(detail)) => (Class::Ok, detail),
        Ok(Err(f)) => (f.class, f.detail),
        Err(_) => (
            Class::Timeout,
            format!("no answer within {} s", settings.timeout.as_secs_f64()),
        ),
    };
    HostResult {
        region: target.region.clone(),
        host: target.host.to_string(),
        class,
        // Details quote registry-controlled strings (error codes, media
        // types, platform names): never print their control characters.
        detail: classify::escape_controls(&detail),
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        anonymous_allowed: settings.allows_anonymous(target.host.as_str()),
    }
}
