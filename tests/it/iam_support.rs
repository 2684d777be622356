//! A stand-in for IBM Cloud IAM on loopback (IAM cannot run here). It
//! implements the endpoints rekey calls as IBM documents them in its public
//! API docs and platform-services SDKs, with their answer and error shapes:
//!
//! - `POST /identity/token` (form `grant_type=urn:ibm:params:oauth:grant-type:apikey`,
//!   `apikey`): `{"access_token", "refresh_token", "token_type", "expires_in",
//!   "expiration", "scope"}`; an unknown or disabled key gets HTTP 400
//!   `{"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.", "context": {…}}`;
//! - `GET /v1/apikeys/details` (header `IAM-ApiKey`), `GET /v1/apikeys/{id}`, `GET /v1/serviceids/{id}`,
//!   `POST /v1/apikeys`, `POST /v1/apikeys/{id}/lock`, `…/disable`,
//!   `DELETE /v1/apikeys/{id}`: the identity API's `APIKey`/`ServiceId`
//!   documents, errors as `{"context", "status_code", "errors": [{"code",
//!   "message_code", "message"}], "trace"}`; all need `Authorization: Bearer`.
//!
//! - `GET /v1/apikeys?iam_id=…&pagesize=…&pagetoken=…` (IBM's "List API
//!   keys"): `{"context", "offset", "limit", "first", "previous", "next",
//!   "apikeys": [APIKey…]}`, `next` the full URL of the following page
//!   (carrying `pagetoken`) and absent on the last; this stand-in serves at
//!   most [`PAGE`] keys a page whatever `pagesize` asks, so that paging is
//!   exercised.
//!
//! Faults a real IAM cannot produce on demand (429, 503, a huge body) are
//! queued with [`Iam::fail_next`]; [`Iam::lose_creation_answer`] makes IAM
//! create a key and then send an answer the client cannot read, as when
//! the connection breaks or rekey is killed after IAM acted.
//!
//! [`Iam::registry_auth`] starts a token server for a token-auth
//! docker-registry (the tests' `verify_support` one, or the demo's) that issues pull tokens
//! for exactly the keys this IAM holds and has not deleted or disabled, as
//! IBM's registry does: retiring a key in IAM makes its pulls fail.

#![allow(dead_code)]

use crate::peer_support::{Handler, Req, Resp, TokenIssuer, USER, acceptor, basic_ok, grant, serve};
use crate::support::unique_hex;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The service ID the registry keys belong to.
pub const SERVICE_ID: &str = "ServiceId-2f7d1c9e-0000-4000-8000-rekeytest001";
pub const SERVICE_IAM_ID: &str = "iam-ServiceId-2f7d1c9e-0000-4000-8000-rekeytest001";
pub const SERVICE_NAME: &str = "iks-armada-master-registry-access-read-only";
const ADMIN_IAM_ID: &str = "iam-ServiceId-admin-rekeytest";
const ACCOUNT: &str = "a0c4f0rekeytestaccount0000000000";
/// The most keys one page of the key list holds.
pub const PAGE: usize = 2;

/// One API key as IAM keeps it.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub value: String,
    pub name: String,
    pub iam_id: String,
    pub created_at: String,
    pub locked: bool,
    pub disabled: bool,
    pub expires_at: Option<String>,
    pub deleted: bool,
    pub description: String,
}

/// A fault answered instead of the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    RetryAfter(u16, u64),
    Body(u16, Vec<u8>),
}

#[derive(Default)]
struct State {
    keys: Vec<Key>,
    tokens: BTreeMap<String, String>,
    faults: VecDeque<Fault>,
    fail_creations_after: Option<usize>,
    lose_creation_answer: Option<usize>,
    created: usize,
    calls: Vec<(String, String)>,
}

/// A running IAM stand-in.
#[derive(Clone)]
pub struct Iam {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn now_iam() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M+0000").to_string()
}

fn api_error(status: u16, code: &str, message_code: &str, message: &str) -> Resp {
    Resp::new(status).json(&serde_json::json!({
        "context": {"transaction_id": unique_hex(), "operation": "rekey-test"},
        "status_code": status.to_string(),
        "errors": [{"code": code, "message_code": message_code, "message": message}],
        "trace": unique_hex(),
    }))
}

fn token_error(code: &str, message: &str) -> Resp {
    Resp::new(400).json(&serde_json::json!({
        "errorCode": code,
        "errorMessage": message,
        "context": {"requestId": unique_hex(), "requestType": "incoming.Identity_Token", "url": "https://iam.cloud.ibm.com"},
    }))
}

fn key_json(k: &Key, with_value: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": k.id,
        "entity_tag": "1-0",
        "crn": format!("crn:v1:bluemix:public:iam-identity::a/{ACCOUNT}::apikey:{}", k.id),
        "locked": k.locked,
        "disabled": k.disabled,
        "created_at": k.created_at,
        "created_by": ADMIN_IAM_ID,
        "modified_at": k.created_at,
        "name": k.name,
        "description": k.description,
        "iam_id": k.iam_id,
        "account_id": ACCOUNT,
    });
    if let Some(e) = &k.expires_at {
        v["expires_at"] = serde_json::Value::String(e.clone());
    }
    if with_value {
        v["apikey"] = serde_json::Value::String(k.value.clone());
    }
    v
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl Iam {
    /// Starts an IAM stand-in with one admin key (returned) and no registry keys.
    pub fn start() -> (Iam, String) {
        let admin = format!("rkadmin{}", unique_hex());
        (Iam::start_with_admin(admin.clone()), admin)
    }

    /// Starts an IAM stand-in whose one admin key is `admin`, with no registry keys.
    pub fn start_with_admin(admin: String) -> Iam {
        let state = Arc::new(Mutex::new(State::default()));
        state.lock().unwrap().keys.push(Key {
            id: format!("ApiKey-admin-{}", unique_hex()),
            value: admin,
            name: "rekey-admin".into(),
            iam_id: ADMIN_IAM_ID.into(),
            created_at: now_iam(),
            locked: false,
            disabled: false,
            expires_at: None,
            deleted: false,
            description: "rekey test admin key".into(),
        });
        let s = state.clone();
        let handler: Handler = Arc::new(move |req: Req| {
            let s = s.clone();
            Box::pin(async move { handle(&s, req) })
        });
        let addr = serve(None, handler);
        Iam { addr, state }
    }

    /// Returns the base URL to give rekey as `--iam-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a registry key of the service ID; returns it.
    pub fn add_key(&self, name: &str, value: &str) -> Key {
        let key = Key {
            id: format!("ApiKey-{}", unique_hex()),
            value: value.to_owned(),
            name: name.to_owned(),
            iam_id: SERVICE_IAM_ID.into(),
            created_at: "2026-08-20T09:30+0000".into(),
            locked: false,
            disabled: false,
            expires_at: None,
            deleted: false,
            description: "rekey test key".into(),
        };
        self.state.lock().unwrap().keys.push(key.clone());
        key
    }

    /// Changes a key in place.
    pub fn edit(&self, value: &str, f: impl FnOnce(&mut Key)) {
        let mut st = self.state.lock().unwrap();
        let k = st.keys.iter_mut().find(|k| k.value == value).expect("a key IAM holds");
        f(k);
    }

    /// Returns the keys IAM holds (deleted ones included, marked).
    pub fn keys(&self) -> Vec<Key> {
        self.state.lock().unwrap().keys.clone()
    }

    /// Returns true when IAM would issue a token for `value` now.
    pub fn accepts(&self, value: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .keys
            .iter()
            .any(|k| k.value == value && usable(k))
    }

    /// Answers the next requests with these faults, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Makes key creations after the first `n` fail with HTTP 500 (and no retry helps).
    pub fn fail_creations_after(&self, n: usize) {
        self.state.lock().unwrap().fail_creations_after = Some(n);
    }

    /// Makes the creation after the first `n` happen in IAM but answer with
    /// a response the client cannot parse: the key exists, rekey never
    /// learns its id (the window a kill after creation opens).
    pub fn lose_creation_answer(&self, n: usize) {
        self.state.lock().unwrap().lose_creation_answer = Some(n);
    }

    /// Starts a token server for `fx`'s token registry that grants pulls to
    /// `iamapikey` with any key of the service ID this IAM accepts now;
    /// returns its address (the tests resolve `verify_support::AUTH_HOST` to it).
    pub fn registry_auth(&self, fx: &impl TokenIssuer) -> SocketAddr {
        let iam = self.clone();
        let signer = fx.signer();
        let handler: Handler = Arc::new(move |req: Req| {
            let (iam, signer) = (iam.clone(), signer.clone());
            Box::pin(async move {
                let accepted = iam
                    .state
                    .lock()
                    .unwrap()
                    .keys
                    .iter()
                    .any(|k| usable(k) && k.iam_id == SERVICE_IAM_ID && basic_ok(&req, USER, &k.value));
                grant(&signer, &req, accepted)
            })
        });
        serve(Some(acceptor(fx.pki())), handler)
    }

    /// Returns (method, path) of every request so far.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().calls.clone()
    }
}

/// Returns true when IAM issues tokens for `k`: not deleted, not disabled, not expired.
fn usable(k: &Key) -> bool {
    let expired = k.expires_at.as_deref().is_some_and(|e| {
        chrono::DateTime::parse_from_str(e, "%Y-%m-%dT%H:%M%z").is_ok_and(|t| t <= chrono::Utc::now())
    });
    !k.deleted && !k.disabled && !expired
}

fn bearer_iam_id(st: &State, req: &Req) -> Option<String> {
    let token = req.header("authorization")?.strip_prefix("Bearer ")?;
    st.tokens.get(token).cloned()
}

fn handle(state: &Mutex<State>, req: Req) -> Resp {
    let mut st = state.lock().unwrap();
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    st.calls.push((req.method.clone(), path.clone()));
    if let Some(fault) = st.faults.pop_front() {
        return match fault {
            Fault::Status(code) => Resp::new(code).body("upstream trouble"),
            Fault::RetryAfter(code, secs) => Resp::new(code).header("Retry-After", secs.to_string()),
            Fault::Body(code, body) => Resp::new(code).header("Content-Type", "application/json").body(body),
        };
    }
    if req.method == "POST" && path == "/identity/token" {
        let f = form(&req.body);
        if f.get("grant_type").map(String::as_str) != Some("urn:ibm:params:oauth:grant-type:apikey") {
            return token_error("BXNIM0109E", "Property 'grant_type' missing or invalid.");
        }
        let Some(value) = f.get("apikey").filter(|v| !v.is_empty()) else {
            return token_error("BXNIM0109E", "Property missing or empty. Missing property: apikey");
        };
        let found = st
            .keys
            .iter()
            .find(|k| &k.value == value && usable(k))
            .map(|k| k.iam_id.clone());
        let Some(iam_id) = found else {
            return token_error("BXNIM0415E", "Provided API key could not be found.");
        };
        let token = format!("rktoken{}", unique_hex());
        st.tokens.insert(token.clone(), iam_id);
        let exp = chrono::Utc::now().timestamp() + 3600;
        return Resp::new(200).json(&serde_json::json!({
            "access_token": token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": 3600,
            "expiration": exp,
            "scope": "ibm openid",
        }));
    }
    if req.header("authorization").is_none() {
        return api_error(
            401,
            "authorization_failed",
            "BXNIM0308E",
            "No authorization header found",
        );
    }
    let Some(caller) = bearer_iam_id(&st, &req) else {
        return api_error(
            401,
            "authorization_failed",
            "BXNIM0308E",
            "Token is invalid or has expired.",
        );
    };
    let admin = caller == ADMIN_IAM_ID;
    if req.method == "GET" && path == "/v1/apikeys/details" {
        let Some(value) = req.header("iam-apikey") else {
            return api_error(400, "bad_request", "BXNIM0109E", "Header IAM-ApiKey missing.");
        };
        return match st.keys.iter().find(|k| k.value == value && !k.deleted) {
            Some(k) if admin || k.iam_id == caller => Resp::new(200).json(&key_json(k, false)),
            Some(_) => api_error(
                403,
                "forbidden",
                "BXNIM0513E",
                "You are not authorized to perform the requested action.",
            ),
            None => api_error(404, "not_found", "BXNIM0102E", "API key not found."),
        };
    }
    if !admin {
        return api_error(
            403,
            "forbidden",
            "BXNIM0513E",
            "You are not authorized to perform the requested action.",
        );
    }
    if req.method == "GET" && path == format!("/v1/serviceids/{SERVICE_ID}") {
        return Resp::new(200).json(&serde_json::json!({
            "id": SERVICE_ID,
            "iam_id": SERVICE_IAM_ID,
            "entity_tag": "1-0",
            "crn": format!("crn:v1:bluemix:public:iam-identity::a/{ACCOUNT}::serviceid:{SERVICE_ID}"),
            "locked": false,
            "created_at": "2019-01-01T00:00+0000",
            "modified_at": "2019-01-01T00:00+0000",
            "account_id": ACCOUNT,
            "name": SERVICE_NAME,
        }));
    }
    if req.method == "GET" && path.starts_with("/v1/serviceids/") {
        return api_error(404, "not_found", "BXNIM0102E", "Service ID not found.");
    }
    if req.method == "POST" && path == "/v1/apikeys" {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return api_error(400, "bad_request", "BXNIM0109E", "The request body is not JSON.");
        };
        let (Some(name), Some(iam_id)) = (body["name"].as_str(), body["iam_id"].as_str()) else {
            return api_error(400, "bad_request", "BXNIM0109E", "Property missing or empty.");
        };
        if iam_id != SERVICE_IAM_ID {
            return api_error(404, "not_found", "BXNIM0102E", "The iam_id was not found.");
        }
        if let Some(limit) = st.fail_creations_after
            && st.created >= limit
        {
            return api_error(
                400,
                "bad_request",
                "BXNIM0536E",
                "The maximum number of API keys was reached.",
            );
        }
        let lose = st.lose_creation_answer == Some(st.created);
        st.created += 1;
        let key = Key {
            id: format!("ApiKey-{}", unique_hex()),
            value: format!("rkiam{}{}", unique_hex(), unique_hex()),
            name: name.to_owned(),
            iam_id: iam_id.to_owned(),
            created_at: now_iam(),
            locked: false,
            disabled: false,
            expires_at: None,
            deleted: false,
            description: body["description"].as_str().unwrap_or_default().to_owned(),
        };
        st.keys.push(key.clone());
        if lose {
            // A header name with a space: no HTTP client reads this answer.
            return Resp::new(201).header("Broken Header", "x").json(&key_json(&key, true));
        }
        return Resp::new(201).json(&key_json(&key, true));
    }
    if req.method == "GET" && path == "/v1/apikeys" {
        return list_keys(&st, &req);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["v1", "apikeys", id, rest @ ..] = parts.as_slice() {
        let Some(k) = st.keys.iter_mut().find(|k| k.id == *id && !k.deleted) else {
            return api_error(404, "not_found", "BXNIM0102E", "API key not found.");
        };
        return match (req.method.as_str(), rest) {
            ("DELETE", []) if k.locked => api_error(
                409,
                "conflict",
                "BXNIM0525E",
                "The API key is locked and cannot be deleted.",
            ),
            ("DELETE", []) => {
                k.deleted = true;
                Resp::new(204)
            }
            ("GET", []) => Resp::new(200).json(&key_json(k, false)),
            ("POST", ["disable"]) => {
                k.disabled = true;
                Resp::new(204)
            }
            ("POST", ["lock"]) => {
                k.locked = true;
                Resp::new(204)
            }
            _ => api_error(404, "not_found", "BXNIM0102E", "Not found."),
        };
    }
    api_error(404, "not_found", "BXNIM0102E", "Not found.")
}

/// IBM's "List API keys" for one `iam_id`, [`PAGE`] keys at most a page.
fn list_keys(st: &State, req: &Req) -> Resp {
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(req.path.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .into_owned()
            .collect();
    let Some(iam_id) = query.get("iam_id") else {
        return api_error(
            400,
            "bad_request",
            "BXNIM0109E",
            "Property missing: iam_id or account_id.",
        );
    };
    let size = query
        .get("pagesize")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100)
        .min(PAGE);
    let offset = match query.get("pagetoken") {
        None => 0,
        Some(t) => match t.strip_prefix("pt").and_then(|o| o.parse::<usize>().ok()) {
            Some(o) => o,
            None => return api_error(400, "bad_request", "BXNIM0109E", "Invalid pagetoken."),
        },
    };
    let mine: Vec<&Key> = st.keys.iter().filter(|k| &k.iam_id == iam_id && !k.deleted).collect();
    let host = req.header("host").unwrap_or_default();
    let page_url = |token: Option<usize>| {
        let mut u = format!("http://{host}/v1/apikeys?iam_id={iam_id}&pagesize={size}");
        if let Some(t) = token {
            u.push_str(&format!("&pagetoken=pt{t}"));
        }
        u
    };
    let page: Vec<serde_json::Value> = mine
        .iter()
        .skip(offset)
        .take(size)
        .map(|k| key_json(k, false))
        .collect();
    let mut v = serde_json::json!({
        "context": {"transaction_id": unique_hex(), "operation": "rekey-test"},
        "offset": offset,
        "limit": size,
        "first": page_url(None),
        "apikeys": page,
    });
    if offset > 0 {
        v["previous"] = serde_json::Value::String(page_url(Some(offset.saturating_sub(size))));
    }
    if offset + size < mine.len() {
        v["next"] = serde_json::Value::String(page_url(Some(offset + size)));
    }
    Resp::new(200).json(&v)
}
