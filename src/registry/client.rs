//! The per-host check: the Docker Registry HTTP API v2 / OCI distribution
//! calls that prove a credential can read an image, with retries, manual
//! redirects that never carry credentials to another origin, and digest
//! checks of everything read.

use super::auth::{self, Scheme};
use super::classify::{self, Class, Failure};
use super::{Settings, Target};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
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

/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// The largest manifest accepted.
const MANIFEST_LIMIT: usize = 4 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Auth {
    Anonymous,
    Basic,
    Bearer(SecretString),
}

struct Session<'a> {
    client: &'a Client,
    target: &'a Target,
    settings: &'a Settings,
    deadline: Instant,
    base: Url,
    auth: Auth,
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
    };
    s.authenticate().await?;
    s.check_image().await
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

    /// Sends one request, retrying 429 and 5xx with backoff (honouring
    /// `Retry-After`) while the time budget lasts. Never retries 401.
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&str>,
        credentials: bool,
        form: Option<&[(&str, &str)]>,
        basic: bool,
    ) -> Result<Response, Failure> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut req = self.client.request(method.clone(), url.clone());
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if credentials {
                let cred = &self.target.credential;
                req = match (&self.auth, basic) {
                    (_, true) | (Auth::Basic, false) => {
                        req.basic_auth(&cred.username, Some(cred.password.expose_secret()))
                    }
                    (Auth::Bearer(token), false) => req.bearer_auth(token.expose_secret()),
                    (Auth::Anonymous, false) => req,
                };
            }
            if let Some(form) = form {
                req = req.form(form);
            }
            let resp = req.send().await.map_err(classify::transport)?;
            let status = resp.status();
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

    /// Sends a request with the session's credentials, following redirects
    /// by hand: credentials go only to the registry's own origin.
    async fn fetch(&self, method: Method, url: Url, accept: Option<&str>) -> Result<Response, Failure> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let own = same_origin(&url, &self.base);
            let resp = self.send(&method, &url, accept, own, None, false).await?;
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

    async fn authenticate(&mut self) -> Result<(), Failure> {
        let ping = self.url("v2/")?;
        let resp = self.send(&Method::GET, &ping, None, false, None, false).await?;
        match resp.status() {
            StatusCode::OK => {
                // Some registries answer /v2/ anonymously and challenge only
                // for a repository: ask for the manifest to see.
                let manifest = self.url(&format!(
                    "v2/{}/manifests/{}",
                    self.target.image.repository, self.target.image.reference
                ))?;
                let probe = self
                    .send(&Method::HEAD, &manifest, Some(MANIFEST_ACCEPT), false, None, false)
                    .await?;
                if probe.status() == StatusCode::UNAUTHORIZED {
                    return self.answer(&probe, "the manifest", &manifest).await;
                }
                tracing::info!(host = %self.target.host, "registry allows anonymous access");
                Ok(())
            }
            StatusCode::UNAUTHORIZED => self.answer(&resp, "GET /v2/", &ping).await,
            other => Err(Failure::new(
                Class::NotARegistry,
                format!("GET /v2/ answered HTTP {}; not a registry API v2", other.as_u16()),
            )),
        }
    }

    /// Answers the challenge in a 401 response to `what` (at `url`): a token
    /// for Bearer; for Basic, the same request again with credentials.
    async fn answer(&mut self, resp: &Response, what: &str, url: &Url) -> Result<(), Failure> {
        let header = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let challenges = auth::parse_challenges(&header)
            .map_err(|e| Failure::new(Class::NotARegistry, format!("{what} answered 401: {e}")))?;
        let Some(ch) = auth::pick(&challenges) else {
            return Err(Failure::new(
                Class::NotARegistry,
                format!("{what} asks for neither Basic nor Bearer authentication"),
            ));
        };
        if ch.scheme == Scheme::Bearer {
            let token = self.token(ch).await?;
            self.auth = Auth::Bearer(token);
            return Ok(());
        }
        self.auth = Auth::Basic;
        let resp = self.send(&resp_method(what), url, None, true, None, false).await?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(Failure::new(
                Class::BadCredentials,
                format!("the registry rejected the credential (HTTP 401 on {})", url.path()),
            )),
            StatusCode::FORBIDDEN => Err(Failure::new(
                Class::NoAccess,
                format!("the registry refused the credential (HTTP 403 on {})", url.path()),
            )),
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            other => Err(Failure::new(
                Class::NotARegistry,
                format!("{} with credentials answered HTTP {}", url.path(), other.as_u16()),
            )),
        }
    }

    /// Requests a pull token for the probe repository: GET with Basic auth,
    /// then the OAuth2 password grant (POST form) when GET is not offered.
    async fn token(&self, ch: &auth::Challenge) -> Result<SecretString, Failure> {
        let realm = ch
            .param("realm")
            .ok_or_else(|| Failure::new(Class::NotARegistry, "Bearer challenge without a realm"))?;
        let mut url = Url::parse(realm)
            .map_err(|e| Failure::new(Class::NotARegistry, format!("Bearer realm is not a URL: {e}")))?;
        self.check_scheme(&url)?;
        let scope = format!("repository:{}:pull", self.target.image.repository);
        let service = ch.param("service").unwrap_or_default().to_owned();
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", &service);
            }
            q.append_pair("scope", &scope);
            q.append_pair("account", &self.target.credential.username);
        }
        let resp = self
            .send(&Method::GET, &url, Some("application/json"), true, None, true)
            .await?;
        let resp = match resp.status() {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => {
                let mut post_url = url.clone();
                post_url.set_query(None);
                let password = self.target.credential.password.expose_secret();
                let form = [
                    ("grant_type", "password"),
                    ("service", service.as_str()),
                    ("scope", scope.as_str()),
                    ("client_id", "rekey"),
                    ("username", self.target.credential.username.as_str()),
                    ("password", password),
                ];
                self.send(
                    &Method::POST,
                    &post_url,
                    Some("application/json"),
                    false,
                    Some(&form),
                    false,
                )
                .await?
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
        let body = read_limited(resp, 1 << 20).await?;
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

    fn status_failure(&self, what: &str, resp: &Response) -> Failure {
        let status = resp.status();
        let scope_error = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| auth::parse_challenges(h).ok())
            .and_then(|c| c.iter().find_map(|c| c.param("error").map(str::to_owned)));
        let detail = format!(
            "{what}: HTTP {}{}",
            status.as_u16(),
            scope_error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
        let class = match status {
            StatusCode::UNAUTHORIZED if matches!(self.auth, Auth::Anonymous) => Class::BadCredentials,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Class::NoAccess,
            StatusCode::NOT_FOUND => Class::MissingImage,
            _ => Class::ServerError,
        };
        Failure::new(class, detail)
    }

    /// Fetches a manifest by tag or digest and checks its digest.
    async fn manifest(
        &self,
        reference: &str,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String, Option<String>), Failure> {
        let image = &self.target.image;
        let url = self.url(&format!("v2/{}/manifests/{reference}", image.repository))?;
        let what = format!("manifest {}@{reference}", image.repository);
        // HEAD first, as clients do to learn the digest; a manifest named by
        // digest needs no HEAD: its digest is already known.
        let head_digest = if expected.is_some_and(|e| e == reference) && reference != image.reference {
            None
        } else {
            let head = self.fetch(Method::HEAD, url.clone(), Some(MANIFEST_ACCEPT)).await?;
            header_str(&head, "docker-content-digest")
        };
        let resp = self.fetch(Method::GET, url, Some(MANIFEST_ACCEPT)).await?;
        if resp.status() != StatusCode::OK {
            let fail = self.status_failure(&what, &resp);
            let body = read_limited(resp, 1 << 16).await.unwrap_or_default();
            return Err(self.status_failure_codes(fail, &body));
        }
        let header_digest = header_str(&resp, "docker-content-digest");
        let content_type = header_str(&resp, CONTENT_TYPE.as_str());
        let body = read_limited(resp, MANIFEST_LIMIT).await?;
        let actual = sha256_digest(&body);
        for (source, claimed) in [
            ("Docker-Content-Digest", header_digest.as_deref()),
            ("HEAD Docker-Content-Digest", head_digest.as_deref()),
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
        Ok((body, actual, content_type))
    }

    fn status_failure_codes(&self, fail: Failure, body: &[u8]) -> Failure {
        let codes: Vec<String> = serde_json::from_slice::<ErrorBody>(body)
            .map(|b| b.errors.into_iter().map(|e| e.code).collect())
            .unwrap_or_default();
        if codes.is_empty() {
            return fail;
        }
        let class = if codes.iter().any(|c| c == "DENIED") {
            Class::NoAccess
        } else {
            fail.class
        };
        Failure::new(class, format!("{} {}", fail.detail, codes.join(",")))
    }

    async fn check_image(&self) -> Result<String, Failure> {
        let image = &self.target.image;
        let expected = image.is_digest().then_some(image.reference.as_str());
        let (body, digest, content_type) = self.manifest(&image.reference, expected).await?;
        let doc = parse_manifest(&body, &image.to_string())?;
        let media = doc.media_type.clone().or(content_type).unwrap_or_default();
        let (doc, picked) = if let Some(list) = &doc.manifests {
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
            let (child_body, _, _) = self.manifest(&child.digest, Some(&child.digest)).await?;
            let child_doc = parse_manifest(&child_body, &format!("{}@{}", image.repository, child.digest))?;
            if child_doc.manifests.is_some() {
                return Err(Failure::new(
                    Class::ServerError,
                    format!("{image}: the linux/amd64 entry is itself an index"),
                ));
            }
            (child_doc, Some(child.digest.clone()))
        } else {
            (doc, None)
        };
        if doc.schema_version != Some(2) {
            return Err(Failure::new(
                Class::ServerError,
                format!(
                    "{image}: unsupported manifest (schemaVersion {:?}, {media})",
                    doc.schema_version
                ),
            ));
        }
        let config = doc
            .config
            .as_ref()
            .ok_or_else(|| Failure::new(Class::ServerError, format!("{image}: the manifest has no config")))?;
        self.check_blob(config, "config").await?;
        let layers = doc.layers.as_deref().unwrap_or_default();
        if self.settings.full {
            for (i, layer) in layers.iter().enumerate() {
                self.check_blob(layer, &format!("layer {i}")).await?;
            }
        }
        let mut detail = format!("pulled {image} ({digest}");
        if let Some(p) = picked {
            detail.push_str(&format!(", linux/amd64 {p}"));
        }
        detail.push_str(if self.settings.full {
            ", config and all layers verified)"
        } else {
            ", config verified)"
        });
        Ok(detail)
    }

    async fn check_blob(&self, desc: &Descriptor, what: &str) -> Result<(), Failure> {
        let image = &self.target.image;
        if !valid_digest(&desc.digest) {
            return Err(Failure::new(
                Class::ServerError,
                format!("{image}: {what} has an unsupported digest `{}`", desc.digest),
            ));
        }
        let url = self.url(&format!("v2/{}/blobs/{}", image.repository, desc.digest))?;
        let what = format!("{what} blob {}", desc.digest);
        let mut resp = self.fetch(Method::GET, url, None).await?;
        if resp.status() != StatusCode::OK {
            let fail = self.status_failure(&what, &resp);
            let body = read_limited(resp, 1 << 16).await.unwrap_or_default();
            return Err(self.status_failure_codes(fail, &body));
        }
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
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

/// The method that asked the challenge: GET for the ping, HEAD for a manifest.
fn resp_method(what: &str) -> Method {
    if what.starts_with("GET") {
        Method::GET
    } else {
        Method::HEAD
    }
}

fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn parse_manifest(body: &[u8], what: &str) -> Result<ManifestDoc, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Failure::new(Class::ServerError, format!("manifest of {what} is not valid JSON: {e}")))
}

async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify::transport)? {
        if out.len() + chunk.len() > limit {
            return Err(Failure::new(
                Class::ServerError,
                format!("response larger than {limit} bytes"),
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

    #[test]
    fn digests_are_checked_for_form() {
        assert!(valid_digest(&sha256_digest(b"x")));
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest("sha512:00"));
    }
}
