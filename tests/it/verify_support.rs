//! Real peers for `rekey verify`: Debian's docker-registry (distribution 2.8)
//! twice over TLS with a test CA, one with htpasswd (bcrypt) auth and one with
//! token auth backed by a small ES256 token server; plus a fault server that
//! plays a registry misbehaving on demand. Everything is started once per
//! test binary and dies with it (PR_SET_PDEATHSIG from a thread that never
//! exits).

#![allow(dead_code)]

pub use crate::peer_support::*;
use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// Host names (all resolved with --resolve; the certificate covers them).
pub const BASIC_HOST: &str = "basic.reg.test";
pub const TOKEN_HOST: &str = "token.reg.test";
pub const AUTH_HOST: &str = "auth.reg.test";

/// The shared peers, started once per test binary.
pub struct Fixture {
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
    /// The key every peer accepts (a canary: it must never be printed).
    pub key: String,
    pub basic: SocketAddr,
    pub token: SocketAddr,
    pub auth: SocketAddr,
    pub fault: SocketAddr,
    pub unknown_ca: SocketAddr,
    pub pki: Arc<Pki>,
    pub image: Arc<FaultImage>,
    /// The key the token registry trusts tokens from (other token servers sign with it too).
    pub signer: Arc<Signer>,
}

impl TokenIssuer for Fixture {
    fn pki(&self) -> &Pki {
        &self.pki
    }
    fn signer(&self) -> Arc<Signer> {
        self.signer.clone()
    }
}

/// So tests can pass `&FIXTURE` as they pass `&Fixture`.
impl TokenIssuer for LazyLock<Fixture> {
    fn pki(&self) -> &Pki {
        &self.pki
    }
    fn signer(&self) -> Arc<Signer> {
        self.signer.clone()
    }
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(start);

/// Starts the shared peers, in a fixture directory that the next test run
/// removes once this process is gone (a static fixture is never dropped).
fn start() -> Fixture {
    let dir = fixture_dir("verify");
    let key = Canary::new("verify-fixture").key;
    let pki = Arc::new(make_pki(
        "rekey test CA",
        &["*.reg.test", "*.fault.test", "reg.test", "localhost"],
    ));
    let ca_pem = write(&dir, "ca.pem", &pki.ca_pem);
    write(&dir, "server.pem", &pki.cert_pem);
    write(&dir, "server.key", &pki.key_pem);
    let signer = Arc::new(Signer::new());
    write(&dir, "token-signer.pem", &signer.cert_pem);
    let auth = serve(Some(acceptor(&pki)), token_server(signer.clone(), key.clone()));
    let htpasswd = Command::new("htpasswd")
        .args(["-B", "-C", "4", "-b", "-n", USER, &key])
        .output()
        .expect("htpasswd (apt-get install apache2-utils)");
    assert!(htpasswd.status.success());
    write(&dir, "htpasswd", &htpasswd.stdout);
    let storage = dir.join("storage");
    let basic_auth = format!(
        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
        dir.join("htpasswd").display()
    );
    let token_auth = token_auth_yaml(&format!("https://{AUTH_HOST}/token"), &dir.join("token-signer.pem"));
    // Spawn from a thread that never exits: PR_SET_PDEATHSIG fires when the
    // spawning thread dies, and test threads end early.
    let (tx, rx) = std::sync::mpsc::channel();
    let (d, s) = (dir.clone(), storage.clone());
    std::thread::spawn(move || {
        let (basic, c1) = start_registry(&d, "basic", &s, &d, &basic_auth);
        let (token, c2) = start_registry(&d, "token", &s, &d, &token_auth);
        tx.send((basic, token)).unwrap();
        let _children = (c1, c2);
        loop {
            std::thread::park();
        }
    });
    let (basic, token) = rx.recv().expect("registries started");
    let image = Arc::new(FaultImage::new());
    let fault = serve(Some(acceptor(&pki)), fault_server(key.clone(), image.clone()));
    let plain = serve(None, fault_server(key.clone(), image.clone()));
    let _ = PLAIN_PORT.set(plain.port());
    let other = make_pki("some other CA", &["*.fault.test", "*.reg.test"]);
    let unknown_ca = serve(Some(acceptor(&other)), Arc::new(|_| Box::pin(async { Resp::new(200) })));
    let fx = Fixture {
        dir,
        ca_pem,
        key,
        basic,
        token,
        auth,
        fault,
        unknown_ca,
        pki,
        image,
        signer,
    };
    RT.block_on(push_images(&fx));
    fx
}

// ---------------------------------------------------------------- images

/// Digests of what the fixture pushed.
pub static PUSHED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

async fn push_images(fx: &Fixture) {
    let ca = reqwest::Certificate::from_pem(fx.pki.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .resolve(BASIC_HOST, fx.basic)
        .build()
        .unwrap();
    let p = Pusher {
        client,
        base: format!("https://{BASIC_HOST}"),
        auth: PushAuth::Basic(fx.key.clone()),
    };
    let mut pushed = Vec::new();
    pushed.push((
        "armada-master/alpine:latest".to_owned(),
        p.index("armada-master/alpine", "latest", &["amd64", "arm64"], true)
            .await,
    ));
    pushed.push((
        "probe/list:v1".to_owned(),
        p.index("probe/list", "v1", &["arm64", "amd64"], false).await,
    ));
    pushed.push((
        "probe/armonly:v1".to_owned(),
        p.index("probe/armonly", "v1", &["arm64", "arm"], true).await,
    ));
    // An OCI artifact (a Helm chart), not an image.
    {
        let repo = "probe/chart";
        let config = br#"{"name":"chart","version":"1.0.0"}"#;
        let layer = format!("chart {}", unique_hex()).into_bytes();
        let cd = p.blob(repo, config).await;
        let ld = p.blob(repo, &layer).await;
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": MT_OCI,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "size": config.len(), "digest": cd},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "size": layer.len(), "digest": ld}]})
        .to_string()
        .into_bytes();
        pushed.push(("probe/chart:v1".to_owned(), p.manifest(repo, "v1", MT_OCI, &m).await));
    }
    for repo in ["probe/single", "private/secret"] {
        let (m, d) = p.image(repo, "amd64", false).await;
        p.manifest(repo, "v1", MT_SCHEMA2, &m).await;
        pushed.push((format!("{repo}:v1"), d));
    }
    *PUSHED.lock().unwrap() = pushed;
}

// ---------------------------------------------------------------- fault server

/// The single-arch image the fault server serves.
pub struct FaultImage {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
    /// 1 MiB layers: one starting as gzip does, one as an HTML error page.
    pub big_gzip: Vec<u8>,
    pub big_html: Vec<u8>,
}

/// 1 MiB of `start` followed by zeros.
fn big(start: &[u8]) -> Vec<u8> {
    let mut v = start.to_vec();
    v.resize(1 << 20, 0);
    v
}

impl FaultImage {
    /// The image manifest with its layer replaced by `layer` of `layer_type`,
    /// the config of `config_type`, and `media_type` (none when `None`).
    pub fn manifest_with(
        &self,
        media_type: Option<&str>,
        config_type: &str,
        layer: &[u8],
        layer_type: &str,
    ) -> Vec<u8> {
        let mut m = serde_json::json!({"schemaVersion": 2,
            "config": {"mediaType": config_type, "size": self.config.len(), "digest": digest(&self.config)},
            "layers": [{"mediaType": layer_type, "size": layer.len(), "digest": digest(layer)}]});
        if let Some(mt) = media_type {
            m["mediaType"] = serde_json::json!(mt);
        }
        m.to_string().into_bytes()
    }
}

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

impl FaultImage {
    fn new() -> FaultImage {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let layer = b"fault layer".to_vec();
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": MT_SCHEMA2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": digest(&config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": digest(&layer)}]})
        .to_string()
        .into_bytes();
        FaultImage {
            config,
            layer,
            manifest,
            big_gzip: big(&[0x1f, 0x8b, 0x08]),
            big_html: big(b"<html>error</html>"),
        }
    }
}

/// What the fault server saw, per host: method, path, Authorization header.
/// One request as seen: method, path and Authorization header.
pub type Seen = (String, String, Option<String>);

/// Range headers the fault server saw: (host, path, range).
pub static RANGES: LazyLock<Mutex<Vec<(String, String, String)>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Returns (path, Range) of the ranged requests the fault server saw for `host`.
pub fn ranges(host: &str) -> Vec<(String, String)> {
    RANGES
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _, _)| h == host)
        .map(|(_, p, r)| (p.clone(), r.clone()))
        .collect()
}

/// The port of the plain-http fault listener (for scheme-downgrade redirects).
pub static PLAIN_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

/// Starts a fault listener of its own that serves every request as host
/// `host` (for clients such as skopeo that cannot use --resolve); returns
/// its address.
pub fn fault_listener(host: &str) -> SocketAddr {
    let fx = &*FIXTURE;
    let inner = fault_server(fx.key.clone(), fx.image.clone());
    let host = host.to_owned();
    let own: Arc<std::sync::OnceLock<SocketAddr>> = Arc::new(std::sync::OnceLock::new());
    let addr = own.clone();
    let listening = serve(
        Some(acceptor(&fx.pki)),
        Arc::new(move |mut req: Req| {
            req.host = host.clone();
            // Token realms name this listener's address, which the client
            // can reach without --resolve.
            if let Some(a) = addr.get() {
                req.headers.push(("x-fault-listener".to_owned(), a.to_string()));
            }
            inner(req)
        }),
    );
    let _ = own.set(listening);
    listening
}

pub static SEEN: LazyLock<Mutex<HashMap<String, Vec<Seen>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Returns what the fault server saw for `host`.
pub fn seen(host: &str) -> Vec<Seen> {
    SEEN.lock().unwrap().get(host).cloned().unwrap_or_default()
}

/// Returns how many manifest HEADs carrying the fixture's key `host` saw
/// (the credential proof's own HEADs carry no key).
pub fn keyed_manifest_heads(host: &str) -> usize {
    let good = format!("Basic {}", STANDARD.encode(format!("{USER}:{}", FIXTURE.key)));
    seen(host)
        .iter()
        .filter(|(m, p, a)| m == "HEAD" && p.contains("/manifests/") && a.as_deref() == Some(good.as_str()))
        .count()
}

fn count(host: &str, path_part: &str) -> usize {
    seen(host).iter().filter(|(_, p, _)| p.contains(path_part)).count()
}

fn fault_server(key: String, image: Arc<FaultImage>) -> Handler {
    Arc::new(move |req: Req| {
        let key = key.clone();
        let image = image.clone();
        Box::pin(async move {
            if let Some(r) = req.header("range") {
                RANGES
                    .lock()
                    .unwrap()
                    .push((req.host.clone(), req.path.clone(), r.to_owned()));
            }
            SEEN.lock().unwrap().entry(req.host.clone()).or_default().push((
                req.method.clone(),
                req.path.clone(),
                req.header("authorization").map(str::to_owned),
            ));
            fault(&req, &key, &image).await
        })
    })
}

const FAULT_TOKEN: &str = "fault-oauth-token";

/// How many `gate` hosts must be in flight together.
pub const GATE_SIZE: usize = 4;
static GATES: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Barrier>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Returns `GATE_SIZE` gate host names of one new group.
pub fn gate_hosts() -> Vec<String> {
    let group = unique_hex();
    (0..GATE_SIZE).map(|i| format!("gate-{group}{i}.fault.test")).collect()
}

/// Serves a blob, honouring `Range: bytes=A-B` with 206 as registries do.
fn blob(req: &Req, bytes: &[u8]) -> Resp {
    let range = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match range {
        Some((a, b)) if a < bytes.len() => {
            let end = b.min(bytes.len() - 1);
            Resp::new(206)
                .header("Content-Range", format!("bytes {a}-{end}/{}", bytes.len()))
                .body(bytes[a..=end].to_vec())
        }
        _ => Resp::new(200).body(bytes.to_vec()),
    }
}

async fn fault(req: &Req, key: &str, image: &FaultImage) -> Resp {
    let kind = req.host.split('-').next().unwrap_or_default().to_owned();
    let nth = |part: &str| count(&req.host, part);
    let id = req
        .host
        .split_once('-')
        .map(|(_, r)| r.split('.').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let find_blob = |d: &str| -> Option<&[u8]> {
        [&image.config, &image.layer, &image.big_gzip, &image.big_html]
            .into_iter()
            .find(|b| digest(b) == d)
            .map(Vec::as_slice)
    };
    // A CDN: serves blobs without asking for credentials (`cdnbroken`
    // hosts and `/broken/` paths answer 404).
    if kind == "cdn" || kind == "cdnbroken" || req.path.starts_with("/cdn/") {
        return match req.path.rsplit('/').next().and_then(find_blob) {
            Some(b) if kind != "cdnbroken" => blob(req, b),
            _ => Resp::new(404),
        };
    }
    match kind.as_str() {
        "ratelimit" => return Resp::new(429).header("Retry-After", "1"),
        "always503" => return Resp::new(503),
        "notreg" => {
            return Resp::new(404)
                .header("Content-Type", "text/html")
                .body("<html>hello</html>");
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Resp::new(200);
        }
        "r503once" if req.path == "/v2/" && nth("/v2/") == 1 => return Resp::new(503),
        // Four `gate` hosts of one group: the first /v2/ of each waits until
        // all four are in flight at once.
        "gate" if req.path == "/v2/" && nth("/v2/") == 1 => {
            let group = id[..id.len().saturating_sub(1)].to_owned();
            let barrier = GATES
                .lock()
                .unwrap()
                .entry(group)
                .or_insert_with(|| Arc::new(tokio::sync::Barrier::new(GATE_SIZE)))
                .clone();
            barrier.wait().await;
        }
        "r429once" if req.path.contains("/manifests/") && nth("/manifests/") == 1 => {
            return Resp::new(429).header("Retry-After", "1");
        }
        _ => {}
    }
    // Authentication.
    let oauth = kind == "oauth";
    // Bearer kinds with a GET token endpoint on the same host: `anontoken`
    // grants without credentials, `anypasstoken` for any password,
    // `hugetoken` answers 2 MiB, `utf8bearer` checks the key.
    let get_token = matches!(kind.as_str(), "anontoken" | "anypasstoken" | "hugetoken" | "utf8bearer");
    if req.path.starts_with("/oauth/token") {
        if req.method != "POST" {
            return Resp::new(405);
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        let good = form.get("grant_type").map(String::as_str) == Some("password")
            && form.get("username").map(String::as_str) == Some(USER)
            && form.get("password").map(String::as_str) == Some(key);
        return if good {
            Resp::new(200).json(&serde_json::json!({"access_token": FAULT_TOKEN}))
        } else {
            Resp::new(401).json(&serde_json::json!({"error": "invalid_grant"}))
        };
    }
    if get_token && req.path.starts_with("/token") {
        let auth = req.header("authorization");
        let grant = match kind.as_str() {
            "anontoken" => true,
            "anypasstoken" => auth.is_some_and(|a| a.starts_with("Basic ")),
            _ => basic_ok(req, USER, key),
        };
        if !grant {
            return Resp::new(401).json(&serde_json::json!({"details": "invalid credentials"}));
        }
        if kind == "hugetoken" {
            let token = "a".repeat(2 << 20);
            return Resp::new(200).json(&serde_json::json!({ "token": token }));
        }
        return Resp::new(200).json(&serde_json::json!({ "token": FAULT_TOKEN }));
    }
    let authed = if oauth || get_token {
        req.header("authorization") == Some(&format!("Bearer {FAULT_TOKEN}"))
    } else if kind == "anon" {
        true
    } else if kind == "anypass" {
        // Any password of the right user.
        req.header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .is_some_and(|d| d.starts_with(format!("{USER}:").as_bytes()))
    } else {
        basic_ok(req, USER, key)
    };
    if kind == "anonping" && req.path == "/v2/" {
        return Resp::new(200).header("Docker-Distribution-API-Version", "registry/2.0");
    }
    if !authed {
        let realm_host = req.header("x-fault-listener").unwrap_or(&req.host);
        let (name, challenge) = match kind.as_str() {
            "oauth" => (
                "WWW-Authenticate",
                format!("Bearer realm=\"https://{realm_host}/oauth/token\",service=\"fault\""),
            ),
            "utf8bearer" => (
                "WWW-Authenticate",
                format!("Bearer realm=\"https://{realm_host}/token\",service=\"régistry-ü\""),
            ),
            _ if get_token => (
                "WWW-Authenticate",
                format!("Bearer realm=\"https://{realm_host}/token\",service=\"fault\""),
            ),
            "latin1" => ("WWW-Authenticate@latin1", "Basic realm=\"café\"".to_owned()),
            // Basic first, as real clients read it; the Bearer realm is down.
            "fallback" => (
                "WWW-Authenticate",
                "Basic realm=\"fault\", Bearer realm=\"https://127.0.0.1:1/token\",service=\"fault\"".to_owned(),
            ),
            _ => ("WWW-Authenticate", "Basic realm=\"fault\"".to_owned()),
        };
        return Resp::new(401)
            .header(name, challenge)
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .json(&serde_json::json!({"errors": [{"code": "UNAUTHORIZED"}]}));
    }
    if req.path == "/v2/" {
        return Resp::new(200).header("Docker-Distribution-API-Version", "registry/2.0");
    }
    if req.path.contains("/manifests/") {
        if kind == "forbidden" {
            return Resp::new(403).json(&serde_json::json!({"errors": [{"code": "DENIED", "message": "no"}]}));
        }
        if kind == "escape" {
            return Resp::new(404).json(
                &serde_json::json!({"errors": [{"code": "\u{1b}[31mPWNED\u{7}", "message": "\u{1b}]0;title\u{7}"}]}),
            );
        }
        let by_tag = !req.path.contains("sha256:");
        let (body, media) = match kind.as_str() {
            "mthtml" => (image.manifest.clone(), "text/html".to_owned()),
            "mtplain" => (
                image.manifest_with(None, DOCKER_CONFIG, &image.layer, DOCKER_LAYER),
                "text/plain; charset=utf-8".to_owned(),
            ),
            "mtindex" => (
                image.manifest_with(None, DOCKER_CONFIG, &image.layer, DOCKER_LAYER),
                MT_INDEX.to_owned(),
            ),
            "mtmismatch" => (
                image.manifest_with(Some(MT_OCI), DOCKER_CONFIG, &image.layer, DOCKER_LAYER),
                MT_SCHEMA2.to_owned(),
            ),
            "artifact" => (
                image.manifest_with(
                    Some(MT_OCI),
                    "application/vnd.cncf.helm.config.v1+json",
                    &image.layer,
                    "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                ),
                MT_OCI.to_owned(),
            ),
            "biglayer" => (
                image.manifest_with(Some(MT_SCHEMA2), DOCKER_CONFIG, &image.big_gzip, DOCKER_LAYER),
                MT_SCHEMA2.to_owned(),
            ),
            "bightml" => (
                image.manifest_with(Some(MT_SCHEMA2), DOCKER_CONFIG, &image.big_html, DOCKER_LAYER),
                MT_SCHEMA2.to_owned(),
            ),
            "hugemanifest" => (vec![b' '; 5 << 20], MT_SCHEMA2.to_owned()),
            // Reflects the Authorization header into a field of the wrong type.
            "reflect" => (
                serde_json::json!({"schemaVersion": req.header("authorization").unwrap_or_default()})
                    .to_string()
                    .into_bytes(),
                MT_SCHEMA2.to_owned(),
            ),
            "escplat" => (
                serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
                    {"mediaType": MT_OCI, "size": 1, "digest": digest(b"x"),
                     "platform": {"os": "linux\u{1b}[2J", "architecture": "arm64\u{9b}31m"}}]})
                .to_string()
                .into_bytes(),
                MT_INDEX.to_owned(),
            ),
            _ => (image.manifest.clone(), MT_SCHEMA2.to_owned()),
        };
        let mut d = digest(&body);
        if kind == "baddigest" {
            d = digest(b"something else");
        }
        // `moving`: the first HEAD of the tag names the tag's previous
        // manifest; `headlies`: every HEAD does.
        if req.method == "HEAD" && by_tag && (kind == "headlies" || (kind == "moving" && nth("/manifests/") == 1)) {
            d = digest(b"the previous manifest");
        }
        let mut resp = Resp::new(200).header("Content-Type", media);
        if kind != "reflect" && kind != "hugemanifest" {
            resp = resp.header("Docker-Content-Digest", d);
        }
        return resp.body(body);
    }
    if let Some(d) = req.path.split("/blobs/").nth(1) {
        let is_layer = d != digest(&image.config);
        match kind.as_str() {
            "xredirect" => {
                return Resp::new(307).header("Location", format!("https://cdn-{id}.fault.test/cdn/{d}"));
            }
            "layercdn" if is_layer => {
                return Resp::new(307).header("Location", format!("https://cdnbroken-{id}.fault.test/cdn/{d}"));
            }
            // A redirect from https to plain http on the same host name.
            "localhost" => {
                let port = PLAIN_PORT.get().copied().unwrap_or(1);
                return Resp::new(307).header("Location", format!("http://localhost:{port}/cdn/{d}"));
            }
            "loop" => return Resp::new(302).header("Location", req.path.clone()),
            "badblob" => return Resp::new(200).body(b"not the config".to_vec()),
            "layer403" if is_layer => {
                return Resp::new(403)
                    .json(&serde_json::json!({"errors": [{"code": "DENIED", "message": "layer denied"}]}));
            }
            "layer404" if is_layer => {
                return Resp::new(404).json(&serde_json::json!({"errors": [{"code": "BLOB_UNKNOWN"}]}));
            }
            "layerbad" if is_layer => return Resp::new(200).body(b"not the layer".to_vec()),
            _ => {}
        }
        if let Some(b) = find_blob(d) {
            return blob(req, b);
        }
        return Resp::new(404).json(&serde_json::json!({"errors": [{"code": "BLOB_UNKNOWN"}]}));
    }
    Resp::new(404).json(&serde_json::json!({"errors": [{"code": "NAME_UNKNOWN"}]}))
}

// ---------------------------------------------------------------- running

/// A catalog with one region per (name, hosts, probe image).
pub fn catalog(dir: &Path, regions: &[(&str, &[String], &str)]) -> PathBuf {
    let cat = dir.join("regions");
    for (name, hosts, image) in regions {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        write(
            &cat,
            &format!("{name}.toml"),
            format!(
                "name = \"{name}\"\nprobe_image = \"{image}\"\nhosts = [{}]\n",
                hosts.join(", ")
            ),
        );
    }
    cat
}

/// Returns a fault host name of `kind`, unique to this call.
pub fn fault_host(kind: &str) -> String {
    format!("{kind}-{}.fault.test", unique_hex())
}

/// `rekey verify` with the CA and --resolve for every host given.
pub fn verify_cmd(fx: &Fixture, resolve: &[(&str, SocketAddr)]) -> Rekey {
    let mut cmd = rekey().arg("verify").arg("--ca-cert").arg(&fx.ca_pem);
    for (host, addr) in resolve {
        cmd = cmd.arg("--resolve").arg(format!("{host}={addr}"));
    }
    cmd
}

/// Returns host → class from a JSON run.
pub fn classes(run: &Run) -> HashMap<String, String> {
    run.json()["hosts"]
        .as_array()
        .expect("hosts array")
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_owned(),
                h["class"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
