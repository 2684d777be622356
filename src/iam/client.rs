//! The IBM Cloud IAM client: token exchange, API key details, creation and
//! retirement, hand-written on reqwest like the registry client.
//!
//! Every call has a timeout, reads at most [`MAX_BODY`] bytes of an answer,
//! and is retried with backoff on 429, 5xx and transport errors (honouring
//! `Retry-After`); a key creation only on 429, since a creation whose
//! answer was lost may have happened. Keys and tokens travel only in request bodies and headers
//! and never appear in errors: an error says which call failed, the HTTP
//! status and IAM's message code.

use super::wire::{self, Created, ErrorText, KeyDetails, KeyList, ServiceId, TokenAnswer};
use crate::secret::ApiKey;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use url::Url;

/// The largest IAM answer read; larger ones are an error, not a buffer.
pub const MAX_BODY: usize = 256 * 1024;

/// The most pages of a key list read; a longer list is an error, not a loop.
pub const MAX_PAGES: usize = 50;

/// The page size asked for when listing keys (IAM's largest).
pub const PAGE_SIZE: u32 = 100;

/// IAM's grant type for exchanging an API key for a token.
pub const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// Where IAM is and how hard to try.
#[derive(Debug, Clone)]
pub struct Settings {
    /// IAM's base URL (`https://iam.cloud.ibm.com`).
    pub base: Url,
    /// The time budget of one call, retries included.
    pub timeout: Duration,
    /// How many times a call is retried after 429, 5xx or a transport error.
    pub retries: u32,
    /// The first backoff; it doubles each retry, up to 5 s.
    pub backoff: Duration,
}

/// Why an IAM call did not give an answer rekey can use. Never carries a
/// key or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IamError {
    #[error("IAM is unreachable ({call}): {detail}")]
    Unreachable { call: &'static str, detail: String },
    #[error("IAM refused {call} with HTTP {status}: {}", .text.describe())]
    Refused {
        call: &'static str,
        status: u16,
        text: ErrorText,
    },
    #[error("IAM's answer to {call} is not what its API documents: {what}")]
    Malformed { call: &'static str, what: String },
}

impl IamError {
    /// Returns true when IAM could not be reached or kept failing.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, IamError::Unreachable { .. })
    }
}

/// An answer: the status and a bounded body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// Reads a document from a 200 answer; `None` on 404; else IAM's refusal.
    fn found_or_none<T: serde::de::DeserializeOwned>(&self, call: &'static str) -> Result<Option<T>, IamError> {
        match self.status {
            200 => parse(call, &self.body).map(Some),
            404 => Ok(None),
            status => Err(refused(call, status, &self.body)),
        }
    }
}

/// What a request carries, rebuilt for every attempt.
enum Body<'a> {
    None,
    Form(Vec<(&'a str, &'a str)>),
    Json(serde_json::Value),
}

/// A client for one IAM endpoint.
#[derive(Clone)]
pub struct Iam {
    http: reqwest::Client,
    settings: Settings,
}

/// What IAM said of a key's token exchange.
pub enum Exchange {
    /// IAM issued a token: the key is valid now.
    Token(SecretString),
    /// IAM refused the key (HTTP 400/401/403), with its error text.
    Refused { status: u16, text: ErrorText },
}

impl Iam {
    /// Returns a client that sends its requests with `http` (which must not
    /// follow redirects: IAM's answers are never redirects).
    pub fn new(http: reqwest::Client, settings: Settings) -> Iam {
        Iam { http, settings }
    }

    /// Returns IAM's base URL.
    pub fn base(&self) -> &Url {
        &self.settings.base
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.settings.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(None);
        url
    }

    /// Sends one call with retries; returns the final answer, whatever its status.
    async fn send(
        &self,
        call: &'static str,
        method: reqwest::Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Answer, IamError> {
        self.send_with(call, method, url, headers, body, true).await
    }

    /// Sends one call; an `idempotent` one is retried after 429, 5xx and
    /// transport errors, any other only after 429 (IAM answered and did
    /// nothing): repeating a creation whose answer was lost would create a
    /// second key and leave the first unrecorded.
    async fn send_with(
        &self,
        call: &'static str,
        method: reqwest::Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
        idempotent: bool,
    ) -> Result<Answer, IamError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header("Accept", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req = match &body {
                Body::None => req,
                Body::Form(fields) => req.form(fields),
                Body::Json(v) => req.json(v),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(IamError::Unreachable {
                    call,
                    detail: format!("no answer within {}", humantime::format_duration(self.settings.timeout)),
                });
            }
            let outcome = tokio::time::timeout(left, async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let body = read_bounded(resp).await?;
                Ok::<_, BodyError>((status, retry_after, body))
            })
            .await;
            // Method, path and status only: never the query, headers
            // (Authorization) or bodies (API keys, tokens).
            let shown = match &outcome {
                Ok(Ok((status, _, _))) => format!("HTTP {status}"),
                Ok(Err(BodyError::TooLarge)) => "an answer too large".to_owned(),
                Ok(Err(BodyError::Http(e))) => transport_detail(e),
                Err(_) => "no answer in time".to_owned(),
            };
            tracing::debug!(
                "IAM {call}: {method} {} -> {shown} (attempt {})",
                url.path(),
                attempt + 1
            );
            let (retryable, detail, wait_hint) = match outcome {
                Err(_) => (idempotent, "no answer in time".to_owned(), None),
                Ok(Err(BodyError::TooLarge)) => {
                    return Err(IamError::Malformed {
                        call,
                        what: format!("the answer is larger than {} KiB", MAX_BODY / 1024),
                    });
                }
                Ok(Err(BodyError::Http(e))) => (idempotent, transport_detail(&e), None),
                Ok(Ok((status, retry_after, body))) => {
                    if status == 429 || (idempotent && status >= 500) {
                        (true, format!("HTTP {status}"), retry_after)
                    } else if status >= 500 {
                        (false, format!("HTTP {status}"), None)
                    } else {
                        return Ok(Answer { status, body });
                    }
                }
            };
            if !retryable || attempt >= self.settings.retries {
                return Err(IamError::Unreachable {
                    call,
                    detail: if attempt > 0 {
                        format!("{detail} after {} attempts", attempt + 1)
                    } else {
                        detail
                    },
                });
            }
            let backoff = self
                .settings
                .backoff
                .saturating_mul(1 << attempt.min(5))
                .min(Duration::from_secs(5));
            let wait = wait_hint.map_or(backoff, |s| Duration::from_secs(s.min(10)));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(wait.min(left)).await;
            attempt += 1;
        }
    }

    /// Exchanges `key` for an access token (`POST /identity/token`).
    pub async fn exchange(&self, key: &ApiKey) -> Result<Exchange, IamError> {
        const CALL: &str = "the token exchange";
        let answer = self
            .send(
                CALL,
                reqwest::Method::POST,
                self.url("/identity/token"),
                &[],
                Body::Form(vec![("grant_type", APIKEY_GRANT), ("apikey", key.expose_secret())]),
            )
            .await?;
        match answer.status {
            200 => {
                let token: TokenAnswer = serde_json::from_slice(&answer.body).map_err(|e| IamError::Malformed {
                    call: CALL,
                    what: crate::untrusted::json_error(&e),
                })?;
                Ok(Exchange::Token(token.access_token))
            }
            400 | 401 | 403 => Ok(Exchange::Refused {
                status: answer.status,
                text: ErrorText::parse(&answer.body),
            }),
            status => Err(refused(CALL, status, &answer.body)),
        }
    }

    /// Returns an access token for `key`, or an error when IAM refuses it.
    pub async fn token(&self, key: &ApiKey) -> Result<SecretString, IamError> {
        match self.exchange(key).await? {
            Exchange::Token(t) => Ok(t),
            Exchange::Refused { status, text } => Err(IamError::Refused {
                call: "the token exchange",
                status,
                text,
            }),
        }
    }

    /// Describes the key `key` (`GET /v1/apikeys/details` with the key in
    /// the `IAM-ApiKey` header), authorised by `token`. `None` when IAM
    /// does not know the key.
    pub async fn details(&self, token: &SecretString, key: &ApiKey) -> Result<Option<KeyDetails>, IamError> {
        let answer = self
            .get("the key details", "/v1/apikeys/details", token, Some(key))
            .await?;
        answer.found_or_none("the key details")
    }

    /// Describes the key with IAM id `id` (`GET /v1/apikeys/{id}`, IBM's
    /// `GetAPIKey`), authorised by `token`. `None` when IAM does not know it
    /// (deleted, or never there).
    pub async fn key_by_id(&self, token: &SecretString, id: &str) -> Result<Option<KeyDetails>, IamError> {
        const CALL: &str = "the key lookup";
        let answer = self
            .get(CALL, &format!("/v1/apikeys/{}", path_segment(id)), token, None)
            .await?;
        answer.found_or_none(CALL)
    }

    /// Describes the service ID `id` (`GET /v1/serviceids/{id}`).
    pub async fn service_id(&self, token: &SecretString, id: &str) -> Result<ServiceId, IamError> {
        const CALL: &str = "the service ID lookup";
        let answer = self
            .get(CALL, &format!("/v1/serviceids/{}", path_segment(id)), token, None)
            .await?;
        match answer.status {
            200 => parse(CALL, &answer.body),
            status => Err(refused(CALL, status, &answer.body)),
        }
    }

    /// Lists the API keys of the identity `iam_id` (`GET /v1/apikeys?iam_id=…
    /// &pagesize=100`, IBM's `ListAPIKeys`), following each page's `next`
    /// (its `pagetoken`) for at most [`MAX_PAGES`] pages.
    pub async fn list_keys(&self, token: &SecretString, iam_id: &str) -> Result<Vec<KeyDetails>, IamError> {
        const CALL: &str = "the key list";
        let auth = bearer(token);
        let mut pager = Pager::new(self.url(LIST_PATH));
        let mut page_token: Option<String> = None;
        loop {
            let mut url = self.url(LIST_PATH);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("iam_id", iam_id);
                q.append_pair("pagesize", &PAGE_SIZE.to_string());
                if let Some(t) = &page_token {
                    q.append_pair("pagetoken", t);
                }
            }
            let answer = self
                .send(CALL, reqwest::Method::GET, url, &[("Authorization", &auth)], Body::None)
                .await?;
            if answer.status != 200 {
                return Err(refused(CALL, answer.status, &answer.body));
            }
            match pager.take(&answer.body)? {
                Some(t) => page_token = Some(t),
                None => return Ok(pager.keys),
            }
        }
    }

    /// Sends an authorised GET of `path` (with the key in `IAM-ApiKey` when given).
    async fn get(
        &self,
        call: &'static str,
        path: &str,
        token: &SecretString,
        key: Option<&ApiKey>,
    ) -> Result<Answer, IamError> {
        let auth = bearer(token);
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(key) = key {
            headers.push(("IAM-ApiKey", key.expose_secret()));
        }
        self.send(call, reqwest::Method::GET, self.url(path), &headers, Body::None)
            .await
    }

    /// Creates an API key for `iam_id` (`POST /v1/apikeys`, `store_value:
    /// false`): returns its details and its value, held only in memory.
    pub async fn create(
        &self,
        token: &SecretString,
        iam_id: &str,
        name: &str,
        description: &str,
    ) -> Result<(KeyDetails, ApiKey), IamError> {
        const CALL: &str = "the key creation";
        let auth = bearer(token);
        let body = serde_json::json!({
            "name": name,
            "iam_id": iam_id,
            "description": description,
            "store_value": false,
        });
        let answer = self
            .send_with(
                CALL,
                reqwest::Method::POST,
                self.url("/v1/apikeys"),
                &[("Authorization", &auth)],
                Body::Json(body),
                false,
            )
            .await?;
        if answer.status != 201 && answer.status != 200 {
            return Err(refused(CALL, answer.status, &answer.body));
        }
        let created: Created = serde_json::from_slice(&answer.body).map_err(|e| IamError::Malformed {
            call: CALL,
            what: crate::untrusted::json_error(&e),
        })?;
        let key = ApiKey::from_str_checked(created.apikey.expose_secret()).map_err(|e| IamError::Malformed {
            call: CALL,
            what: format!("the new key's value is not usable: {e}"),
        })?;
        Ok((created.details, key))
    }

    /// Retires the key with IAM id `id`: deletes it, disables it or locks it.
    pub async fn retire(&self, token: &SecretString, id: &str, how: Retire) -> Result<(), IamError> {
        let (call, method, path) = match how {
            Retire::Delete => (
                "the key deletion",
                reqwest::Method::DELETE,
                format!("/v1/apikeys/{}", path_segment(id)),
            ),
            Retire::Disable => (
                "disabling the key",
                reqwest::Method::POST,
                format!("/v1/apikeys/{}/disable", path_segment(id)),
            ),
            Retire::Lock => (
                "locking the key",
                reqwest::Method::POST,
                format!("/v1/apikeys/{}/lock", path_segment(id)),
            ),
        };
        let auth = bearer(token);
        let answer = self
            .send(call, method, self.url(&path), &[("Authorization", &auth)], Body::None)
            .await?;
        match answer.status {
            200 | 202 | 204 => Ok(()),
            status => Err(refused(call, status, &answer.body)),
        }
    }
}

/// The key list's path.
const LIST_PATH: &str = "/v1/apikeys";

/// Reads the pages of a key list: collects their keys, and takes from each
/// page's `next` only its `pagetoken`, after checking that `next` points at
/// the list on IAM's own origin (a hostile answer cannot send rekey, with
/// the admin token, anywhere else). Stops after [`MAX_PAGES`] pages.
struct Pager {
    list: Url,
    pages: usize,
    keys: Vec<KeyDetails>,
    seen: std::collections::BTreeSet<String>,
}

impl Pager {
    fn new(list: Url) -> Pager {
        Pager {
            list,
            pages: 0,
            keys: Vec::new(),
            seen: Default::default(),
        }
    }

    /// Takes one page; returns the next page's token, `None` after the last page.
    fn take(&mut self, body: &[u8]) -> Result<Option<String>, IamError> {
        const CALL: &str = "the key list";
        let malformed = |what: String| IamError::Malformed { call: CALL, what };
        self.pages += 1;
        let page: KeyList = parse(CALL, body)?;
        self.keys.extend(page.apikeys);
        let Some(next) = page.next.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if self.pages >= MAX_PAGES {
            return Err(malformed(format!("the list goes on past {MAX_PAGES} pages")));
        }
        let next = self
            .list
            .join(&next)
            .map_err(|_| malformed("the next page's URL is not a URL".to_owned()))?;
        if next.origin() != self.list.origin() || next.path() != self.list.path() {
            return Err(malformed(
                "the next page's URL is not IAM's key list on the same origin".to_owned(),
            ));
        }
        let token = next
            .query_pairs()
            .find(|(k, _)| k == "pagetoken")
            .map(|(_, v)| v.into_owned())
            .filter(|t| !t.is_empty() && t.len() <= 2048)
            .ok_or_else(|| malformed("the next page's URL has no usable pagetoken".to_owned()))?;
        if !self.seen.insert(token.clone()) {
            return Err(malformed("the next page's pagetoken repeats an earlier one".to_owned()));
        }
        Ok(Some(token))
    }
}

/// How a key is retired in IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retire {
    /// `DELETE /v1/apikeys/{id}`: gone for good.
    Delete,
    /// `POST /v1/apikeys/{id}/disable`: kept, but cannot authenticate.
    Disable,
    /// `POST /v1/apikeys/{id}/lock`: kept and usable, but cannot be changed or deleted.
    Lock,
}

fn bearer(token: &SecretString) -> String {
    format!("Bearer {}", token.expose_secret())
}

/// Percent-encodes an id for use as one path segment.
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn parse<T: serde::de::DeserializeOwned>(call: &'static str, body: &[u8]) -> Result<T, IamError> {
    serde_json::from_slice(body).map_err(|e| IamError::Malformed {
        call,
        what: crate::untrusted::json_error(&e),
    })
}

fn refused(call: &'static str, status: u16, body: &[u8]) -> IamError {
    IamError::Refused {
        call,
        status,
        text: ErrorText::parse(body),
    }
}

fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "the request failed"
    } else {
        "the connection failed"
    };
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {}", wire::escape(&s.to_string()));
        source = s.source();
    }
    detail
}

enum BodyError {
    TooLarge,
    Http(reqwest::Error),
}

impl From<reqwest::Error> for BodyError {
    fn from(e: reqwest::Error) -> Self {
        BodyError::Http(e.without_url())
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Url {
        Url::parse("https://iam.cloud.ibm.com/v1/apikeys").unwrap()
    }

    fn page(next: Option<&str>, ids: &[&str]) -> Vec<u8> {
        let keys: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "name": "n"}))
            .collect();
        serde_json::json!({"limit": 2, "first": "https://iam.cloud.ibm.com/v1/apikeys", "next": next, "apikeys": keys})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn pages_are_followed_by_their_pagetoken_only() {
        let mut p = Pager::new(list());
        let t = p
            .take(&page(
                Some("https://iam.cloud.ibm.com/v1/apikeys?iam_id=x&pagesize=2&pagetoken=abc%3D"),
                &["ApiKey-1", "ApiKey-2"],
            ))
            .unwrap();
        assert_eq!(t.as_deref(), Some("abc="));
        assert_eq!(p.take(&page(None, &["ApiKey-3"])).unwrap(), None);
        let ids: Vec<&str> = p.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["ApiKey-1", "ApiKey-2", "ApiKey-3"]);
    }

    #[test]
    fn a_next_page_elsewhere_is_refused() {
        for next in [
            "https://evil.example/v1/apikeys?pagetoken=a",
            "http://iam.cloud.ibm.com/v1/apikeys?pagetoken=a",
            "https://iam.cloud.ibm.com:8443/v1/apikeys?pagetoken=a",
            "https://iam.cloud.ibm.com/v1/serviceids?pagetoken=a",
            "//evil.example/v1/apikeys?pagetoken=a",
            "https://iam.cloud.ibm.com/v1/apikeys?pagesize=2",
        ] {
            let e = Pager::new(list()).take(&page(Some(next), &[])).unwrap_err();
            assert!(matches!(e, IamError::Malformed { .. }), "{next}: {e}");
            assert!(!e.to_string().contains("evil"), "the URL is not echoed: {e}");
        }
    }

    #[test]
    fn an_endless_or_looping_list_is_cut_off() {
        let mut p = Pager::new(list());
        let mut pages = 0;
        let e = loop {
            pages += 1;
            let next = format!("/v1/apikeys?pagetoken=t{pages}");
            match p.take(&page(Some(&next), &["ApiKey-1"])) {
                Ok(_) => assert!(pages < MAX_PAGES, "page {pages} accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(pages, MAX_PAGES);
        assert!(e.to_string().contains("past 50 pages"), "{e}");
        let mut p = Pager::new(list());
        p.take(&page(Some("/v1/apikeys?pagetoken=same"), &[])).unwrap();
        let e = p.take(&page(Some("/v1/apikeys?pagetoken=same"), &[])).unwrap_err();
        assert!(e.to_string().contains("repeats"), "{e}");
        let e = Pager::new(list()).take(b"{\"apikeys\": 3}").unwrap_err();
        assert!(matches!(e, IamError::Malformed { .. }), "{e}");
    }
}
