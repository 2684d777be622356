//! Real registry peers shared by the tests and the demo's IAM stand-in
//! (`examples/iam_standin.rs` includes this file): a small HTTP/1.1 server
//! (TLS or plain) on 127.0.0.1, a throwaway CA, the ES256 signer of a
//! registry token server, Debian's docker-registry (distribution 2.8) started
//! with a given auth section, and a pusher that uploads images through the
//! registry HTTP API. It uses only `crate::support`'s environment-free
//! helpers (`base_support.rs`), so a non-test target can include it.

#![allow(dead_code)]

use crate::support::{die_with_spawning_thread, free_port, unique_hex, write};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The user every registry credential has.
pub const USER: &str = "iamapikey";
/// The token service name the token registry and token server agree on.
pub const SERVICE: &str = "rekey-test-registry";
pub const ISSUER: &str = "rekey-test-issuer";

/// The runtime the in-process servers run on, for the whole test binary.
pub static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
});

/// An HTTP request as the in-process servers see it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response from the in-process servers.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Resp {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Resp {
        self.body = b.into();
        self
    }
    pub fn json(self, v: &serde_json::Value) -> Resp {
        self.header("Content-Type", "application/json").body(v.to_string())
    }
}

pub type Handler = Arc<dyn Fn(Req) -> Pin<Box<dyn Future<Output = Resp> + Send>> + Send + Sync>;

/// Starts a small HTTP/1.1 server (TLS when `tls` is given) on 127.0.0.1.
pub fn serve(tls: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> SocketAddr {
    let listener = RT.block_on(TcpListener::bind("127.0.0.1:0")).expect("binding");
    let addr = listener.local_addr().unwrap();
    RT.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_conn(stream, handler).await;
                        }
                    }
                    None => serve_conn(tcp, handler).await,
                }
            });
        }
    });
    addr
}

async fn serve_conn<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(stream: S, handler: Handler) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_owned(), path.to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let host = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.split(':').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let head = method == "HEAD";
        let resp = handler(Req {
            method,
            path,
            host,
            headers,
            body,
        })
        .await;
        let mut out = format!("HTTP/1.1 {} X\r\n", resp.status).into_bytes();
        for (k, v) in &resp.headers {
            // `<name>@latin1` writes the value as ISO-8859-1 bytes.
            match k.strip_suffix("@latin1") {
                Some(k) => {
                    out.extend_from_slice(format!("{k}: ").as_bytes());
                    out.extend(v.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')));
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes()),
            }
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", resp.body.len()).as_bytes());
        let w = reader.get_mut();
        if w.write_all(&out).await.is_err() {
            return;
        }
        if !head && w.write_all(&resp.body).await.is_err() {
            return;
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

/// Returns `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A test CA and a server certificate it signed.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// Makes a CA and a server certificate for `names`.
pub fn make_pki(ca_name: &str, names: &[&str]) -> Pki {
    use rcgen::*;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Returns a TLS acceptor for the PKI's server certificate.
pub fn acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rustls::pki_types::CertificateDer::from(pki.cert_der.clone());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The ES256 key and self-signed certificate the token server signs with.
pub struct Signer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: String,
}

impl Signer {
    pub fn new() -> Signer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rekey test token signer");
        let cert = params.self_signed(&kp).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &kp.serialize_der(),
            &rng,
        )
        .unwrap();
        Signer {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        }
    }

    /// Returns a JWT granting `actions` on `repo` to `account`.
    pub fn token(&self, account: &str, repo: &str, actions: &[&str]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let access = if actions.is_empty() {
            serde_json::json!([])
        } else {
            serde_json::json!([{"type": "repository", "name": repo, "actions": actions}])
        };
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": account, "aud": SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now - 60,
            "jti": unique_hex(), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// Returns true when `Authorization` carries Basic `user:pass`.
pub fn basic_ok(req: &Req, user: &str, pass: &str) -> bool {
    let want = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    req.header("authorization") == Some(want.as_str())
}

/// Repositories the token server grants pull on (prefix match).
pub const TOKEN_GRANTS: &[&str] = &["armada-master/", "probe/"];

/// What a registry token server answers a `GET /token?scope=…` whose
/// credentials it `accepted`: a token granting pull on the scope's repository
/// when it is one of `TOKEN_GRANTS`, no access otherwise; 401 when not accepted.
pub fn grant(signer: &Signer, req: &Req, accepted: bool) -> Resp {
    if !req.path.starts_with("/token") || req.method != "GET" {
        return Resp::new(404);
    }
    if !accepted {
        return Resp::new(401).json(&serde_json::json!({"details": "invalid credentials"}));
    }
    let scope = url::Url::parse(&format!("https://x{}", req.path))
        .ok()
        .and_then(|url| {
            url.query_pairs()
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    let repo = scope
        .strip_prefix("repository:")
        .and_then(|s| s.rsplit_once(':'))
        .map(|(r, _)| r.to_owned())
        .unwrap_or_default();
    let allowed = TOKEN_GRANTS.iter().any(|p| repo.starts_with(p));
    let actions: &[&str] = if allowed { &["pull"] } else { &[] };
    let token = signer.token(USER, &repo, actions);
    Resp::new(200).json(&serde_json::json!({"token": token, "expires_in": 600}))
}

/// A token server that grants pulls to `iamapikey` with exactly `key`.
pub fn token_server(signer: Arc<Signer>, key: String) -> Handler {
    Arc::new(move |req: Req| {
        let signer = signer.clone();
        let key = key.clone();
        Box::pin(async move {
            let accepted = basic_ok(&req, USER, &key);
            grant(&signer, &req, accepted)
        })
    })
}

/// The TLS identity and token signer a token server needs (the verify
/// fixture's, or the demo stand-in's).
pub trait TokenIssuer {
    fn pki(&self) -> &Pki;
    fn signer(&self) -> Arc<Signer>;
}

/// docker-registry's `auth:` section for token auth: tokens from `realm`,
/// signed by the certificate in `signer_pem`.
pub fn token_auth_yaml(realm: &str, signer_pem: &Path) -> String {
    format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        signer_pem.display()
    )
}

/// Spawns `cmd` so that it dies with the test process.
pub fn spawn_dying(mut cmd: Command) -> Child {
    die_with_spawning_thread(&mut cmd);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting docker-registry (apt-get install docker-registry)")
}

/// Waits until something listens on `addr`.
pub fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

/// Starts docker-registry with `auth_yaml` on a free port; returns its address.
pub fn start_registry(dir: &Path, name: &str, storage: &Path, pki_dir: &Path, auth_yaml: &str) -> (SocketAddr, Child) {
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rekey-test-secret\n  tls:\n    certificate: {}\n    key: {}\n{auth_yaml}",
        storage.display(),
        pki_dir.join("server.pem").display(),
        pki_dir.join("server.key").display(),
    );
    let path = write(dir, &format!("{name}.yml"), config);
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(&path);
    let child = spawn_dying(cmd);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    (addr, child)
}

pub const MT_SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pushes images to a registry through its HTTP API.
pub struct Pusher {
    pub client: reqwest::Client,
    /// The registry's base URL, e.g. `https://basic.reg.test`.
    pub base: String,
    pub auth: PushAuth,
}

/// How the pusher authenticates.
pub enum PushAuth {
    /// Basic `iamapikey:<key>` (an htpasswd registry).
    Basic(String),
    /// A push token it signs itself for each repository (a token registry).
    Token(Arc<Signer>),
}

impl Pusher {
    fn authed(&self, rb: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match &self.auth {
            PushAuth::Basic(key) => rb.basic_auth(USER, Some(key)),
            PushAuth::Token(signer) => rb.bearer_auth(signer.token(USER, repo, &["pull", "push"])),
        }
    }

    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let start = self.client.post(format!("{}/v2/{repo}/blobs/uploads/", self.base));
        let start = self.authed(start, repo).send().await.unwrap();
        assert_eq!(start.status(), 202, "starting upload to {repo}");
        let loc = start.headers()["location"].to_str().unwrap().to_owned();
        let base = url::Url::parse(&format!("{}/", self.base)).unwrap();
        let mut url = base.join(&loc).unwrap();
        url.query_pairs_mut().append_pair("digest", &d);
        let put = self.client.put(url);
        let put = self
            .authed(put, repo)
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "uploading blob to {repo}");
        d
    }

    pub async fn manifest(&self, repo: &str, reference: &str, media: &str, body: &[u8]) -> String {
        let put = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base));
        let resp = self
            .authed(put, repo)
            .header("Content-Type", media)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, 201, "pushing manifest {repo}:{reference}: {text}");
        digest(body)
    }

    /// Pushes a single-arch image manifest; returns (bytes, digest).
    pub async fn image(&self, repo: &str, arch: &str, oci: bool) -> (Vec<u8>, String) {
        let config = serde_json::json!({"architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {}})
        .to_string();
        let layer = format!("layer of {repo} for {arch} {}", unique_hex()).into_bytes();
        let cd = self.blob(repo, config.as_bytes()).await;
        let ld = self.blob(repo, &layer).await;
        let (mt, cmt, lmt) = if oci {
            (
                MT_OCI,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (
                MT_SCHEMA2,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        };
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cmt, "size": config.len(), "digest": cd},
            "layers": [{"mediaType": lmt, "size": layer.len(), "digest": ld}]})
        .to_string()
        .into_bytes();
        let d = digest(&m);
        self.manifest(repo, &d, mt, &m).await;
        (m, d)
    }

    pub async fn index(&self, repo: &str, tag: &str, arches: &[&str], oci: bool) -> String {
        let mut entries = Vec::new();
        for arch in arches {
            let (m, d) = self.image(repo, arch, oci).await;
            entries.push(serde_json::json!({"mediaType": if oci { MT_OCI } else { MT_SCHEMA2 },
                "size": m.len(), "digest": d, "platform": {"architecture": arch, "os": "linux"}}));
        }
        let mt = if oci { MT_INDEX } else { MT_LIST };
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": mt, "manifests": entries})
            .to_string()
            .into_bytes();
        self.manifest(repo, tag, mt, &body).await
    }
}
