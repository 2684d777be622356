//! The per-host check: the Docker Registry HTTP API v2 / OCI distribution
//! calls that prove a credential can read an image, with retries, manual
//! redirects that never carry credentials to another origin, and digest
//! checks of everything read.
//!
//! After a successful pull the check proves that the credential mattered:
//! it repeats the first request that carried the credential anonymously
//! (for Bearer registries: with an anonymous token) and with a deliberately
//! wrong password. If either succeeds, the result is
//! `credential_not_required`.

use super::auth::{self, Scheme};
use super::classify::{self, Class, Failure};
use super::{Settings, Target};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Client, Method, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::time::{Instant, sleep};

/// Docker schema2 and OCI manifests and indexes, as `Accept` sends them.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// Docker schema2 image manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Image configuration media types a runtime can run.
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
];

/// Layer media types containerd unpacks.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// The largest manifest accepted.
pub const MANIFEST_LIMIT: usize = 4 << 20;
/// The largest token server answer accepted.
pub const TOKEN_LIMIT: usize = 1 << 20;
/// The most of an error answer read (for its error codes).
pub const ERROR_LIMIT: usize = 64 << 10;
/// How many bytes of each layer are read without `--full`.
pub const LAYER_PROBE: u64 = 512;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Auth {
    Anonymous,
    Basic,
    Bearer(SecretString),
}

/// The credential one request carries (only ever to the registry's origin,
/// or to the token realm that asked for it).
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// How a token is requested.
#[derive(Clone, Copy)]
enum TokenCred<'a> {
    /// No credentials: the anonymous token real clients get.
    Anonymous,
    /// The username with this password.
    Password(&'a str),
}

/// Headers and body of one request besides its credential.
#[derive(Clone, Copy, Default)]
struct Opts<'a> {
    accept: Option<&'a str>,
    range: Option<&'a str>,
    form: Option<&'a [(&'a str, &'a str)]>,
}

/// The first registry request that carried the credential.
#[derive(Clone)]
struct FirstAuthed {
    method: Method,
    url: Url,
    accept: Option<&'static str>,
}

struct Session<'a> {
    client: &'a Client,
    target: &'a Target,
    settings: &'a Settings,
    deadline: Instant,
    base: Url,
    auth: Auth,
    /// The Bearer challenge answered (kept for the credential proof).
    bearer: Option<auth::Challenge>,
    first_authed: Option<FirstAuthed>,
    /// Why the Bearer realm failed before Basic was used instead.
    fell_back: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default)]
    access_token: Option<SecretString>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(rename = "fsLayers", default)]
    fs_layers: Option<serde_json::Value>,
}

/// Returns `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Returns `host[:port]` of a URL as written in the catalog.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Returns the wait a `Retry-After` header asks for (seconds form).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Returns a header value as text: UTF-8 when it is, else Latin-1 (HTTP's
/// historical charset), as real clients read `WWW-Authenticate`.
pub fn header_text(value: &HeaderValue) -> String {
    match std::str::from_utf8(value.as_bytes()) {
        Ok(s) => s.to_owned(),
        Err(_) => value.as_bytes().iter().map(|&b| char::from(b)).collect(),
    }
}

/// Returns the media type of a `Content-Type` value: lower-cased, without
/// parameters.
pub fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Returns the base URL for a catalog host: https, or http when allowed.
pub fn base_url(host: &str, settings: &Settings) -> Result<Url, Failure> {
    let scheme = if settings.allows_http(host) { "http" } else { "https" };
    Url::parse(&format!("{scheme}://{host}/"))
        .map_err(|e| Failure::new(Class::Dns, format!("`{host}` is not a usable host name: {e}")))
}

/// Verifies one target; returns a short detail on success.
pub async fn verify_host(
    client: &Client,
    target: &Target,
    settings: &Settings,
    deadline: Instant,
) -> Result<String, Failure> {
    let base = base_url(target.host.as_str(), settings)?;
    let mut s = Session {
        client,
        target,
        settings,
        deadline,
        base,
        auth: Auth::Anonymous,
        bearer: None,
        first_authed: None,
        fell_back: None,
    };
    s.authenticate().await?;
    let mut detail = s.check_image().await?;
    if let Some(evidence) = s.prove_credential().await? {
        return Err(Failure::new(Class::CredentialNotRequired, evidence));
    }
    if let Some(why) = &s.fell_back {
        detail.push_str(&format!("; used Basic because the Bearer realm failed: {why}"));
    }
    Ok(detail)
}

/// What one manifest is, as a runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Image,
    Index,
}

/// Checks a manifest as containerd does: the served media type must be a
/// manifest or index type, agree with the body's `mediaType` and with its
/// shape; schema 1 and artifacts are not images.
fn check_manifest_type(doc: &ManifestDoc, content_type: Option<&str>, what: &str) -> Result<Shape, Failure> {
    let not_image = |detail: String| Failure::new(Class::NotAnImage, format!("{what} {detail}"));
    let served = content_type.map(media_type_of).unwrap_or_default();
    let shape = match served.as_str() {
        MT_DOCKER_MANIFEST | MT_OCI_MANIFEST => Shape::Image,
        MT_DOCKER_LIST | MT_OCI_INDEX => Shape::Index,
        "" => return Err(not_image("is served without a Content-Type".to_owned())),
        other => {
            return Err(not_image(format!(
                "is served as `{other}`, not as an image manifest or index"
            )));
        }
    };
    if doc.fs_layers.is_some() || doc.schema_version == Some(1) {
        return Err(not_image("is a Docker schema 1 manifest (not supported)".to_owned()));
    }
    if let Some(declared) = &doc.media_type
        && *declared != served
    {
        return Err(not_image(format!(
            "is served as `{served}` but its mediaType is `{declared}`"
        )));
    }
    let looks_like_index = doc.manifests.is_some();
    let looks_like_image = doc.config.is_some() || doc.layers.is_some();
    match shape {
        Shape::Image if looks_like_index => Err(not_image(format!(
            "is served as an image manifest (`{served}`) but the body is an index"
        ))),
        Shape::Index if looks_like_image => Err(not_image(format!(
            "is served as an index (`{served}`) but the body is an image manifest"
        ))),
        _ => Ok(shape),
    }
}

/// Checks that an image manifest describes a runnable image: an image
/// configuration and layers containerd can unpack.
fn check_image_parts(doc: &ManifestDoc, what: &str) -> Result<(), Failure> {
    let config_type = doc
        .config
        .as_ref()
        .and_then(|c| c.media_type.as_deref())
        .unwrap_or_default();
    if !CONFIG_TYPES.contains(&config_type) {
        return Err(Failure::new(
            Class::NotAnImage,
            format!(
                "{what} is an artifact, not an image (config media type `{}`)",
                if config_type.is_empty() { "none" } else { config_type }
            ),
        ));
    }
    for layer in doc.layers.as_deref().unwrap_or_default() {
        let t = layer.media_type.as_deref().unwrap_or_default();
        if !LAYER_TYPES.contains(&t) {
            return Err(Failure::new(
                Class::NotAnImage,
                format!(
                    "{what} has a layer of media type `{}` that no runtime unpacks",
                    if t.is_empty() { "none" } else { t }
                ),
            ));
        }
    }
    Ok(())
}

fn wrong_password() -> String {
    let mut bytes = [0u8; 16];
    if sequoia_openpgp::crypto::random(&mut bytes).is_err() {
        // Any value works: it only has to differ from the real key.
        bytes = *b"rekey-not-a-key!";
    }
    format!("rekey-wrong-{}", hex::encode(bytes))
}

impl Session<'_> {
    fn url(&self, path: &str) -> Result<Url, Failure> {
        self.base
            .join(path)
            .map_err(|e| Failure::new(Class::ServerError, format!("cannot build URL for {path}: {e}")))
    }

    fn check_scheme(&self, url: &Url) -> Result<(), Failure> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.settings.allows_http(&authority(url)) => Ok(()),
            other => Err(Failure::new(
                Class::ServerError,
                format!(
                    "refused to follow a {other}:// URL to {} (plain http needs --insecure-http)",
                    authority(url)
                ),
            )),
        }
    }

    fn session_cred(&self) -> Cred<'_> {
        let cred = &self.target.credential;
        match &self.auth {
            Auth::Anonymous => Cred::None,
            Auth::Basic => Cred::Basic(&cred.username, cred.password.expose_secret()),
            Auth::Bearer(token) => Cred::Bearer(token.expose_secret()),
        }
    }

    /// Sends one request, retrying 429 and 5xx with backoff (honouring
    /// `Retry-After`) while the time budget lasts. Never retries 401.
    async fn send(&self, method: &Method, url: &Url, opts: Opts<'_>, cred: Cred<'_>) -> Result<Response, Failure> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut req = self.client.request(method.clone(), url.clone());
            if let Some(a) = opts.accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(r) = opts.range {
                req = req.header(RANGE, r);
            }
            req = match cred {
                Cred::None => req,
                Cred::Basic(user, pass) => req.basic_auth(user, Some(pass)),
                Cred::Bearer(token) => req.bearer_auth(token),
            };
            if let Some(form) = opts.form {
                req = req.form(form);
            }
            let resp = req.send().await.map_err(classify::transport)?;
            let status = resp.status();
            // Host and path only: the query (token scopes) and the
            // credentials stay out of the log.
            tracing::debug!(
                "{method} {}{} -> HTTP {}",
                url.host_str().unwrap_or_default(),
                url.path(),
                status.as_u16()
            );
            if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                return Ok(resp);
            }
            let class = if status == StatusCode::TOO_MANY_REQUESTS {
                Class::RateLimited
            } else {
                Class::ServerError
            };
            let asked = retry_after(resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()));
            let wait = asked.unwrap_or(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if Instant::now() + wait >= self.deadline {
                return Err(Failure::new(
                    class,
                    format!(
                        "{} {} answered HTTP {}; gave up retrying within the time budget",
                        method,
                        url.path(),
                        status.as_u16()
                    ),
                ));
            }
            tracing::info!(host = %self.target.host, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "retrying");
            sleep(wait).await;
        }
    }

    /// Sends a request carrying `cred`, following redirects by hand:
    /// credentials go only to the registry's own origin (same scheme, host
    /// and port), never after a redirect elsewhere.
    async fn fetch_as(&self, method: &Method, url: &Url, opts: Opts<'_>, cred: Cred<'_>) -> Result<Response, Failure> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let own = same_origin(&url, &self.base);
            let resp = self
                .send(method, &url, opts, if own { cred } else { Cred::None })
                .await?;
            let status = resp.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Failure::new(
                        Class::ServerError,
                        format!("HTTP {} redirect without a Location", status.as_u16()),
                    )
                })?;
            let next = url
                .join(location)
                .map_err(|e| Failure::new(Class::ServerError, format!("redirect to an invalid URL: {e}")))?;
            self.check_scheme(&next)?;
            url = next;
        }
        Err(Failure::new(
            Class::ServerError,
            format!(
                "more than {MAX_REDIRECTS} redirects for {} (a redirect loop?)",
                url.path()
            ),
        ))
    }

    /// Sends a request with the session's credentials. A registry that let
    /// the ping through anonymously may still challenge here: the challenge
    /// is answered and the request sent once more.
    async fn fetch(
        &mut self,
        method: Method,
        url: Url,
        accept: Option<&'static str>,
        range: Option<&str>,
    ) -> Result<Response, Failure> {
        let opts = Opts {
            accept,
            range,
            form: None,
        };
        self.note_authed(&method, &url, accept);
        let resp = self.fetch_as(&method, &url, opts, self.session_cred()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED || !matches!(self.auth, Auth::Anonymous) {
            return Ok(resp);
        }
        let what = format!("{method} {}", url.path());
        self.answer(&resp, &what).await?;
        self.note_authed(&method, &url, accept);
        self.fetch_as(&method, &url, opts, self.session_cred()).await
    }

    /// Remembers the first registry request that carries the credential.
    fn note_authed(&mut self, method: &Method, url: &Url, accept: Option<&'static str>) {
        if self.first_authed.is_none() && !matches!(self.auth, Auth::Anonymous) {
            self.first_authed = Some(FirstAuthed {
                method: method.clone(),
                url: url.clone(),
                accept,
            });
        }
    }

    async fn authenticate(&mut self) -> Result<(), Failure> {
        let ping = self.url("v2/")?;
        let resp = self.send(&Method::GET, &ping, Opts::default(), Cred::None).await?;
        match resp.status() {
            // Some registries answer /v2/ anonymously and challenge only for
            // a repository: `fetch` answers a later challenge.
            StatusCode::OK => Ok(()),
            StatusCode::UNAUTHORIZED => {
                self.answer(&resp, "GET /v2/").await?;
                if !matches!(self.auth, Auth::Basic) {
                    return Ok(());
                }
                // Basic: the ping with credentials tells a wrong key early.
                // (The proof repeats the first repository request instead:
                // a registry may refuse the ping anonymously yet serve the
                // image.)
                let resp = self
                    .send(&Method::GET, &ping, Opts::default(), self.session_cred())
                    .await?;
                match resp.status() {
                    StatusCode::UNAUTHORIZED => Err(Failure::new(
                        Class::BadCredentials,
                        format!("the registry rejected the credential (HTTP 401 on {})", ping.path()),
                    )),
                    StatusCode::FORBIDDEN => Err(Failure::new(
                        Class::NoAccess,
                        format!("the registry refused the credential (HTTP 403 on {})", ping.path()),
                    )),
                    s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
                    other => Err(Failure::new(
                        Class::NotARegistry,
                        format!("{} with credentials answered HTTP {}", ping.path(), other.as_u16()),
                    )),
                }
            }
            other => Err(Failure::new(
                Class::NotARegistry,
                format!("GET /v2/ answered HTTP {}; not a registry API v2", other.as_u16()),
            )),
        }
    }

    /// Answers the challenge in a 401 response to `what`: a token for
    /// Bearer (falling back to Basic when the Bearer realm fails and Basic
    /// is offered too); for Basic, the credentials on every later request.
    async fn answer(&mut self, resp: &Response, what: &str) -> Result<(), Failure> {
        let header = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .map(header_text)
            .collect::<Vec<_>>()
            .join(", ");
        let challenges = auth::parse_challenges(&header)
            .map_err(|e| Failure::new(Class::NotARegistry, format!("{what} answered 401: {e}")))?;
        let basic_offered = challenges.iter().any(|c| c.scheme == Scheme::Basic);
        let Some(ch) = auth::pick(&challenges) else {
            return Err(Failure::new(
                Class::NotARegistry,
                format!("{what} asks for neither Basic nor Bearer authentication"),
            ));
        };
        if ch.scheme == Scheme::Bearer {
            let password = self.target.credential.password.expose_secret().to_owned();
            let password = zeroize::Zeroizing::new(password);
            match self.token(ch, TokenCred::Password(&password)).await {
                Ok(token) => {
                    self.bearer = Some(ch.clone());
                    self.auth = Auth::Bearer(token);
                    return Ok(());
                }
                Err(f) if basic_offered => {
                    tracing::info!(host = %self.target.host, reason = %f.detail, "Bearer realm failed; using Basic");
                    self.fell_back = Some(f.detail);
                }
                Err(f) => return Err(f),
            }
        }
        self.auth = Auth::Basic;
        Ok(())
    }

    /// Requests a pull token for the probe repository: GET (with Basic auth
    /// unless anonymous), then the OAuth2 password grant (POST form) when
    /// GET is not offered.
    async fn token(&self, ch: &auth::Challenge, cred: TokenCred<'_>) -> Result<SecretString, Failure> {
        let realm = ch
            .param("realm")
            .ok_or_else(|| Failure::new(Class::NotARegistry, "Bearer challenge without a realm"))?;
        let mut url = Url::parse(realm)
            .map_err(|e| Failure::new(Class::NotARegistry, format!("Bearer realm is not a URL: {e}")))?;
        self.check_scheme(&url)?;
        let scope = format!("repository:{}:pull", self.target.image.repository);
        let service = ch.param("service").unwrap_or_default().to_owned();
        let username = self.target.credential.username.as_str();
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", &service);
            }
            q.append_pair("scope", &scope);
            if matches!(cred, TokenCred::Password(_)) {
                q.append_pair("account", username);
            }
        }
        let json = Opts {
            accept: Some("application/json"),
            ..Opts::default()
        };
        let get_cred = match cred {
            TokenCred::Anonymous => Cred::None,
            TokenCred::Password(p) => Cred::Basic(username, p),
        };
        let resp = self.send(&Method::GET, &url, json, get_cred).await?;
        let resp = match (resp.status(), cred) {
            (
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST,
                TokenCred::Password(password),
            ) => {
                let mut post_url = url.clone();
                post_url.set_query(None);
                let form = [
                    ("grant_type", "password"),
                    ("service", service.as_str()),
                    ("scope", scope.as_str()),
                    ("client_id", "rekey"),
                    ("username", username),
                    ("password", password),
                ];
                let opts = Opts {
                    form: Some(&form),
                    ..json
                };
                self.send(&Method::POST, &post_url, opts, Cred::None).await?
            }
            _ => resp,
        };
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => {
                return Err(Failure::new(
                    Class::BadCredentials,
                    format!(
                        "the token server rejected the credential (HTTP {})",
                        resp.status().as_u16()
                    ),
                ));
            }
            StatusCode::FORBIDDEN => {
                return Err(Failure::new(
                    Class::NoAccess,
                    format!("the token server denied {scope} (HTTP 403)"),
                ));
            }
            other => {
                return Err(Failure::new(
                    Class::ServerError,
                    format!("the token server answered HTTP {}", other.as_u16()),
                ));
            }
        }
        let body = zeroize::Zeroizing::new(read_limited(resp, TOKEN_LIMIT, "the token server's answer").await?);
        // serde_json's messages can quote the body: report only the position.
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                Class::ServerError,
                format!(
                    "the token server's answer is not a token response (line {} column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        parsed
            .token
            .filter(|t| !t.expose_secret().is_empty())
            .or(parsed.access_token.filter(|t| !t.expose_secret().is_empty()))
            .ok_or_else(|| Failure::new(Class::ServerError, "the token server's answer has no token"))
    }

    /// Repeats the first request that carried the credential anonymously
    /// and with a wrong password (all attempts at once). Returns the
    /// evidence when any of them worked.
    async fn prove_credential(&self) -> Result<Option<String>, Failure> {
        let Some(first) = self.first_authed.clone() else {
            return Ok(Some(
                "every request of the pull succeeded without credentials (the registry never asked for them)"
                    .to_owned(),
            ));
        };
        let range = first.url.path().contains("/blobs/").then_some("bytes=0-0");
        let opts = Opts {
            accept: first.accept,
            range,
            form: None,
        };
        let wrong = zeroize::Zeroizing::new(wrong_password());
        let username = self.target.credential.username.as_str();
        let anonymous = self.attempt(&first, opts, Cred::None, "without credentials");
        let results: [Result<Option<String>, Failure>; 3] = match (&self.auth, &self.bearer) {
            (Auth::Bearer(_), Some(ch)) => {
                let (a, b, c) = tokio::join!(
                    anonymous,
                    self.attempt_with_token(&first, opts, ch, TokenCred::Anonymous, "without credentials"),
                    self.attempt_with_token(&first, opts, ch, TokenCred::Password(&wrong), "for a wrong password"),
                );
                [a, b, c]
            }
            _ => {
                let (a, c) = tokio::join!(
                    anonymous,
                    self.attempt(&first, opts, Cred::Basic(username, &wrong), "with a wrong password"),
                );
                [a, Ok(None), c]
            }
        };
        // Evidence wins over another attempt's failure.
        let mut failure = None;
        for r in results {
            match r {
                Ok(Some(evidence)) => return Ok(Some(evidence)),
                Ok(None) => {}
                Err(f) => failure = failure.or(Some(f)),
            }
        }
        failure.map_or(Ok(None), Err)
    }

    /// Sends `first` again with `cred`; returns the evidence if it worked.
    async fn attempt(
        &self,
        first: &FirstAuthed,
        opts: Opts<'_>,
        cred: Cred<'_>,
        how: &str,
    ) -> Result<Option<String>, Failure> {
        let resp = self.fetch_as(&first.method, &first.url, opts, cred).await?;
        Ok(resp.status().is_success().then(|| {
            format!(
                "{} {} answered HTTP {} {how}",
                first.method,
                first.url.path(),
                resp.status().as_u16()
            )
        }))
    }

    /// Asks the token realm for a token with `cred` and, if one is granted,
    /// sends `first` again with it; returns the evidence if that worked.
    async fn attempt_with_token(
        &self,
        first: &FirstAuthed,
        opts: Opts<'_>,
        ch: &auth::Challenge,
        cred: TokenCred<'_>,
        how: &str,
    ) -> Result<Option<String>, Failure> {
        // A refused token is what proves the key.
        let Ok(token) = self.token(ch, cred).await else {
            return Ok(None);
        };
        let resp = self
            .fetch_as(&first.method, &first.url, opts, Cred::Bearer(token.expose_secret()))
            .await?;
        Ok(resp.status().is_success().then(|| {
            format!(
                "the token server granted a token {how} and {} {} answered HTTP {} with it",
                first.method,
                first.url.path(),
                resp.status().as_u16()
            )
        }))
    }

    fn status_failure(&self, what: &str, resp: &Response) -> Failure {
        let status = resp.status();
        let scope_error = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(header_text)
            .and_then(|h| auth::parse_challenges(&h).ok())
            .and_then(|c| c.iter().find_map(|c| c.param("error").map(str::to_owned)));
        let detail = format!(
            "{what}: HTTP {}{}",
            status.as_u16(),
            scope_error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
        let class = match status {
            StatusCode::UNAUTHORIZED if matches!(self.auth, Auth::Anonymous | Auth::Basic) => Class::BadCredentials,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Class::NoAccess,
            StatusCode::NOT_FOUND => Class::MissingImage,
            StatusCode::RANGE_NOT_SATISFIABLE => Class::DigestMismatch,
            _ => Class::ServerError,
        };
        Failure::new(class, detail)
    }

    /// Fetches a manifest by tag or digest and checks its digest. A tag
    /// whose HEAD and GET digests disagree (it moved in between) is read
    /// once more before it counts as a mismatch.
    async fn manifest(
        &mut self,
        reference: &str,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String, Option<String>), Failure> {
        let image = self.target.image.clone();
        let url = self.url(&format!("v2/{}/manifests/{reference}", image.repository))?;
        let what = format!("manifest {}@{reference}", image.repository);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // HEAD first, as clients do to learn the digest; a manifest named
            // by digest needs no HEAD: its digest is already known.
            let head_digest = if expected.is_some_and(|e| e == reference) && reference != image.reference {
                None
            } else {
                let head = self
                    .fetch(Method::HEAD, url.clone(), Some(MANIFEST_ACCEPT), None)
                    .await?;
                header_str(&head, "docker-content-digest")
            };
            let resp = self
                .fetch(Method::GET, url.clone(), Some(MANIFEST_ACCEPT), None)
                .await?;
            if resp.status() != StatusCode::OK {
                let fail = self.status_failure(&what, &resp);
                let body = read_limited(resp, ERROR_LIMIT, "an error answer")
                    .await
                    .unwrap_or_default();
                return Err(status_failure_codes(fail, &body));
            }
            let header_digest = header_str(&resp, "docker-content-digest");
            let content_type = header_str(&resp, CONTENT_TYPE.as_str());
            let body = read_limited(resp, MANIFEST_LIMIT, &what).await?;
            let actual = sha256_digest(&body);
            for (source, claimed) in [
                ("Docker-Content-Digest", header_digest.as_deref()),
                ("the reference", expected),
            ] {
                if let Some(claimed) = claimed.filter(|c| c.starts_with("sha256:"))
                    && claimed != actual
                {
                    return Err(Failure::new(
                        Class::DigestMismatch,
                        format!("{what} hashes to {actual} but {source} says {claimed}"),
                    ));
                }
            }
            if let Some(claimed) = head_digest.as_deref().filter(|c| c.starts_with("sha256:"))
                && claimed != actual
            {
                if attempt < 2 {
                    tracing::info!(host = %self.target.host, "HEAD and GET digests differ (the tag moved?); reading again");
                    continue;
                }
                return Err(Failure::new(
                    Class::DigestMismatch,
                    format!("{what} hashes to {actual} but HEAD Docker-Content-Digest says {claimed} (read twice)"),
                ));
            }
            return Ok((body, actual, content_type));
        }
    }

    async fn check_image(&mut self) -> Result<String, Failure> {
        let image = self.target.image.clone();
        let expected = image.is_digest().then_some(image.reference.as_str());
        let (body, digest, content_type) = self.manifest(&image.reference, expected).await?;
        let doc = parse_manifest(&body, &image.to_string())?;
        let shape = check_manifest_type(&doc, content_type.as_deref(), &format!("manifest of {image}"))?;
        let (doc, picked) = if shape == Shape::Index {
            let list = doc.manifests.as_deref().unwrap_or_default();
            let Some(child) = list.iter().find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            }) else {
                let platforms: Vec<String> = list
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                    .collect();
                return Err(Failure::new(
                    Class::PlatformMissing,
                    format!("{image} has no linux/amd64 manifest (has: {})", platforms.join(", ")),
                ));
            };
            if !valid_digest(&child.digest) {
                return Err(Failure::new(
                    Class::ServerError,
                    format!("{image}: the index names an unsupported digest `{}`", child.digest),
                ));
            }
            let child_digest = child.digest.clone();
            let (child_body, _, child_type) = self.manifest(&child_digest, Some(&child_digest)).await?;
            let child_what = format!("{}@{child_digest}", image.repository);
            let child_doc = parse_manifest(&child_body, &child_what)?;
            let child_shape = check_manifest_type(
                &child_doc,
                child_type.as_deref(),
                &format!("linux/amd64 manifest {child_what}"),
            )?;
            if child_shape == Shape::Index {
                return Err(Failure::new(
                    Class::NotAnImage,
                    format!("{image}: the linux/amd64 entry is itself an index"),
                ));
            }
            (child_doc, Some(child_digest))
        } else {
            (doc, None)
        };
        if doc.schema_version != Some(2) {
            return Err(Failure::new(
                Class::NotAnImage,
                format!("{image}: unsupported manifest (schemaVersion {:?})", doc.schema_version),
            ));
        }
        check_image_parts(&doc, &format!("{image}"))?;
        let config = doc
            .config
            .as_ref()
            .ok_or_else(|| Failure::new(Class::ServerError, format!("{image}: the manifest has no config")))?;
        self.check_blob(config, "config", true).await?;
        let layers = doc.layers.as_deref().unwrap_or_default();
        for (i, layer) in layers.iter().enumerate() {
            self.check_blob(layer, &format!("layer {i}"), self.settings.full)
                .await?;
        }
        let mut detail = format!("pulled {image} ({digest}");
        if let Some(p) = picked {
            detail.push_str(&format!(", linux/amd64 {p}"));
        }
        detail.push_str(&if self.settings.full {
            format!(
                ", config and {} verified)",
                if layers.len() == 1 {
                    "its 1 layer".to_owned()
                } else {
                    format!("all {} layers", layers.len())
                }
            )
        } else {
            format!(
                ", config verified, first bytes of {} read)",
                crate::words::plural(layers.len(), "layer", "layers")
            )
        });
        Ok(detail)
    }

    /// Fetches a blob: fully (checking size and digest), or only its first
    /// `LAYER_PROBE` bytes with an HTTP Range request (checking what the
    /// answer says about the size, and the digest when that is everything).
    async fn check_blob(&mut self, desc: &Descriptor, what: &str, full: bool) -> Result<(), Failure> {
        let image = self.target.image.clone();
        if !valid_digest(&desc.digest) {
            return Err(Failure::new(
                Class::ServerError,
                format!("{image}: {what} has an unsupported digest `{}`", desc.digest),
            ));
        }
        let url = self.url(&format!("v2/{}/blobs/{}", image.repository, desc.digest))?;
        let what = format!("{what} blob {}", desc.digest);
        let range = format!("bytes=0-{}", LAYER_PROBE - 1);
        // A blob no larger than the probe is read whole (an empty one would
        // not satisfy the range).
        let full = full || desc.size.is_some_and(|s| s <= LAYER_PROBE);
        let mut resp = self
            .fetch(Method::GET, url, None, (!full).then_some(range.as_str()))
            .await?;
        let status = resp.status();
        if status != StatusCode::OK && (full || status != StatusCode::PARTIAL_CONTENT) {
            let fail = self.status_failure(&what, &resp);
            let body = read_limited(resp, ERROR_LIMIT, "an error answer")
                .await
                .unwrap_or_default();
            return Err(status_failure_codes(fail, &body));
        }
        // The blob's whole size as the answer states it.
        let stated_total = if status == StatusCode::PARTIAL_CONTENT {
            header_str(&resp, "content-range")
                .and_then(|r| r.rsplit_once('/').and_then(|(_, t)| t.trim().parse::<u64>().ok()))
        } else {
            resp.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(want), Some(total)) = (desc.size, stated_total)
            && want != total
        {
            return Err(Failure::new(
                Class::DigestMismatch,
                format!("{what} has {total} bytes, the manifest says {want}"),
            ));
        }
        let cap = if full { u64::MAX } else { LAYER_PROBE };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut head = Vec::new();
        loop {
            let chunk = tokio::time::timeout_at(self.deadline, resp.chunk())
                .await
                .map_err(|_| Failure::new(Class::Timeout, format!("reading {what} took too long")))?
                .map_err(classify::transport)?;
            let Some(chunk) = chunk else { break };
            size += chunk.len() as u64;
            if desc.size.is_some_and(|want| size > want) {
                return Err(Failure::new(
                    Class::DigestMismatch,
                    format!(
                        "{what} is larger than the {} bytes the manifest says",
                        desc.size.unwrap_or(0)
                    ),
                ));
            }
            hasher.update(&chunk);
            if head.len() < 4 {
                head.extend(chunk.iter().take(4 - head.len()));
            }
            if size >= cap {
                break;
            }
        }
        // A probe that read the whole blob checks it as fully as --full.
        let whole = full || desc.size.is_some_and(|want| want == size) || (desc.size.is_none() && size < cap);
        if !whole {
            if size == 0 {
                return Err(Failure::new(Class::DigestMismatch, format!("{what} is empty")));
            }
            return check_magic(desc, &head, &what);
        }
        if let Some(want) = desc.size
            && size != want
        {
            return Err(Failure::new(
                Class::DigestMismatch,
                format!("{what} has {size} bytes, the manifest says {want}"),
            ));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            return Err(Failure::new(
                Class::DigestMismatch,
                format!("{what} hashes to {actual}"),
            ));
        }
        Ok(())
    }
}

/// Checks that the first bytes of a partly read layer start as its media
/// type says (gzip, zstd), so an error page served as a layer is caught.
fn check_magic(desc: &Descriptor, head: &[u8], what: &str) -> Result<(), Failure> {
    let t = desc.media_type.as_deref().unwrap_or_default();
    let (name, magic): (&str, &[u8]) = if t.ends_with("gzip") {
        ("gzip", &[0x1f, 0x8b])
    } else if t.ends_with("zstd") {
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd])
    } else {
        return Ok(());
    };
    if head.starts_with(magic) {
        Ok(())
    } else {
        Err(Failure::new(
            Class::DigestMismatch,
            format!("{what} does not start as {name} data, as its media type `{t}` says"),
        ))
    }
}

fn status_failure_codes(fail: Failure, body: &[u8]) -> Failure {
    let codes: Vec<String> = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.errors.into_iter().map(|e| e.code).take(8).collect())
        .unwrap_or_default();
    if codes.is_empty() {
        return fail;
    }
    let class = if codes.iter().any(|c| c == "DENIED") {
        Class::NoAccess
    } else {
        fail.class
    };
    let codes: Vec<String> = codes.iter().map(|c| c.chars().take(64).collect()).collect();
    Failure::new(class, format!("{} {}", fail.detail, codes.join(",")))
}

fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Parses a manifest. serde_json's messages can quote the document (which
/// a hostile server may fill with the request's Authorization header): the
/// error names only the position.
fn parse_manifest(body: &[u8], what: &str) -> Result<ManifestDoc, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => "has a field of the wrong type",
            serde_json::error::Category::Eof => "ends early",
            _ => "is not valid JSON",
        };
        Failure::new(
            Class::ServerError,
            format!("manifest of {what} {kind} (line {} column {})", e.line(), e.column()),
        )
    })
}

/// Reads a response body of at most `limit` bytes; a longer one is a
/// `server_error` naming the limit (never read into memory).
async fn read_limited(mut resp: Response, limit: usize, what: &str) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify::transport)? {
        if out.len() + chunk.len() > limit {
            return Err(Failure::new(
                Class::ServerError,
                format!("{what} is larger than the limit of {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Url::parse("https://r.example/v2/").unwrap();
        assert!(same_origin(&a, &Url::parse("https://r.example:443/x").unwrap()));
        assert!(!same_origin(&a, &Url::parse("https://cdn.example/x").unwrap()));
        assert!(!same_origin(&a, &Url::parse("http://r.example/x").unwrap()));
        assert!(!same_origin(&a, &Url::parse("https://r.example:8443/x").unwrap()));
    }

    fn doc(json: &str) -> ManifestDoc {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn manifest_types_are_checked_as_containerd_does() {
        let image = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        let kind = |d: &str, ct: Option<&str>| check_manifest_type(&doc(d), ct, "m").map_err(|f| (f.class, f.detail));
        assert_eq!(kind(image, Some(MT_OCI_MANIFEST)), Ok(Shape::Image));
        assert_eq!(
            kind(image, Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")),
            Ok(Shape::Image)
        );
        assert_eq!(kind(index, Some(MT_DOCKER_LIST)), Ok(Shape::Index));
        for (d, ct) in [
            (image, Some(MT_OCI_INDEX)),
            (index, Some(MT_DOCKER_MANIFEST)),
            (image, Some("text/plain")),
            (image, None),
            (r#"{"schemaVersion":1,"fsLayers":[]}"#, Some(MT_DOCKER_MANIFEST)),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                Some(MT_DOCKER_MANIFEST),
            ),
        ] {
            let r = kind(d, ct);
            assert!(matches!(&r, Err((Class::NotAnImage, _))), "{d} as {ct:?}: {r:?}");
        }
        assert!(check_image_parts(&doc(image), "m").is_ok());
        let helm = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:00"}}"#;
        assert_eq!(check_image_parts(&doc(helm), "m").unwrap_err().class, Class::NotAnImage);
    }

    #[test]
    fn partly_read_layers_must_start_as_their_media_type() {
        let d = |t: &str| Descriptor {
            media_type: Some(t.to_owned()),
            digest: String::new(),
            size: None,
            platform: None,
        };
        let gz = d("application/vnd.oci.image.layer.v1.tar+gzip");
        assert!(check_magic(&gz, &[0x1f, 0x8b, 8, 0], "l").is_ok());
        assert_eq!(check_magic(&gz, b"<htm", "l").unwrap_err().class, Class::DigestMismatch);
        let zst = d("application/vnd.oci.image.layer.v1.tar+zstd");
        assert!(check_magic(&zst, &[0x28, 0xb5, 0x2f, 0xfd], "l").is_ok());
        assert!(check_magic(&d("application/vnd.oci.image.layer.v1.tar"), b"anyt", "l").is_ok());
    }

    #[test]
    fn header_values_read_as_utf8_or_latin1() {
        let utf8 = HeaderValue::from_bytes("Basic realm=\"café\"".as_bytes()).unwrap();
        assert_eq!(header_text(&utf8), "Basic realm=\"café\"");
        let latin1 = HeaderValue::from_bytes(b"Basic realm=\"caf\xe9\"").unwrap();
        assert_eq!(header_text(&latin1), "Basic realm=\"café\"");
    }

    #[test]
    fn digests_are_checked_for_form() {
        assert!(valid_digest(&sha256_digest(b"x")));
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest("sha512:00"));
    }
}
