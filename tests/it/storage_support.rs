//! Helpers for the storage tests: envelopes sealed by an independent AES-GCM
//! implementation (Python's `cryptography`), storage Secrets laid out as
//! kubectl prints them, truth records, and a real etcd shared by the tests.

#![allow(dead_code)]

use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

/// Debian's python3 (with python3-cryptography), not the pyenv one on PATH.
pub const PYTHON: &str = "/usr/bin/python3";

/// What to seal: key, plaintext, and a fixed nonce (random when `None`).
pub type SealItem<'a> = (&'a [u8], &'a [u8], Option<[u8; 12]>);

/// Seals each (key, plaintext, nonce) with Python's AES-GCM; returns the envelopes.
pub fn seal_many(items: &[SealItem]) -> Vec<String> {
    let script = repo_root().join("fixtures/storage/seal.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (python3-cryptography, see script/setup)");
    let mut input = String::new();
    for (key, plain, nonce) in items {
        input.push_str(&hex::encode(key));
        input.push(' ');
        input.push_str(&hex::encode(plain));
        if let Some(n) = nonce {
            input.push(' ');
            input.push_str(&hex::encode(n));
        }
        input.push('\n');
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "seal.py failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let envs: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(envs.len(), items.len());
    envs
}

/// Seals one plaintext.
pub fn seal(key: &[u8], plain: &str) -> String {
    seal_many(&[(key, plain.as_bytes(), None)]).remove(0)
}

/// A 32-character AES key that is also a canary (raw format).
pub fn aes_canary(tag: &str) -> Canary {
    let mut v = format!("aes{tag}{}", unique_hex());
    v.truncate(32);
    while v.len() < 32 {
        v.push('k');
    }
    Canary::with_value(&v)
}

/// `slclient.toml` of a VPC cluster.
pub fn vpc_toml(envelope: &str, resource_group: &str, region: &str, encryption: bool) -> String {
    format!(
        r#"[Bluemix]
  iam_url = "https://iam.cloud.ibm.com"
  iam_client_id = "bx"
  iam_client_secret = "bx"
  iam_api_key = ""
  refresh_token = ""
  pay_tier = "paid"
  containers_api_route = "https://{region}.containers.cloud.ibm.com"
  encryption = {encryption}

[Softlayer]
  encryption = {encryption}
  softlayer_username = ""
  softlayer_api_key = ""
  softlayer_datacenter = "dal10"

[VPC]
  g2_riaas_endpoint_url = "https://{region}.iaas.cloud.ibm.com"
  g2_resource_group_id = "{resource_group}"
  g2_api_key = "{envelope}"
  encryption = {encryption}
  provider_type = "g2"
"#
    )
}

/// `slclient.toml` of a classic cluster (no VPC section).
pub fn classic_toml(envelope: &str, region: &str, softlayer_key: &str) -> String {
    format!(
        r#"[Bluemix]
  iam_url = "https://iam.cloud.ibm.com"
  iam_client_id = "bx"
  iam_client_secret = "bx"
  iam_api_key = "{envelope}"
  refresh_token = ""
  pay_tier = "paid"
  containers_api_route = "https://{region}.containers.cloud.ibm.com"
  encryption = true

[Softlayer]
  encryption = true
  softlayer_username = ""
  softlayer_api_key = "{softlayer_key}"
  softlayer_datacenter = "dal10"
"#
    )
}

/// A `storage-secret-store` Secret as `kubectl get secret -o json` prints it.
pub fn secret_json(cluster: &str, toml: &str) -> String {
    secret_json_raw(cluster, &STANDARD.encode(toml))
}

/// Same, with the data value given as is.
pub fn secret_json_raw(cluster: &str, data: &str) -> String {
    format!(
        r#"{{
    "apiVersion": "v1",
    "data": {{
        "slclient.toml": "{data}"
    }},
    "kind": "Secret",
    "metadata": {{
        "annotations": {{
            "example.com/cluster-id": "{cluster}"
        }},
        "creationTimestamp": "2026-11-23T10:00:00Z",
        "name": "storage-secret-store",
        "namespace": "kube-system",
        "resourceVersion": "123",
        "uid": "0b0e5a5e-0000-4000-8000-000000000000"
    }},
    "type": "Opaque"
}}
"#
    )
}

/// The same Secret as `-o yaml`.
pub fn secret_yaml(cluster: &str, toml: &str) -> String {
    format!(
        "apiVersion: v1\ndata:\n  slclient.toml: {}\nkind: Secret\nmetadata:\n  annotations:\n    example.com/cluster-id: {cluster}\n  name: storage-secret-store\n  namespace: kube-system\ntype: Opaque\n",
        STANDARD.encode(toml)
    )
}

/// A `kind: List` of Secrets (JSON texts).
pub fn list_json(items: &[String]) -> String {
    format!(
        "{{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n{}\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {{\n        \"resourceVersion\": \"\"\n    }}\n}}\n",
        items.join(",\n")
    )
}

/// A source-of-truth record.
pub fn record(account: &str, rg: &str, region: &str, key: Option<&str>, sl_key: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "Region": region,
        "AccountID": account,
        "ResourceGroupID": rg,
        "Canceled": null,
        "Name": "default",
        "SLUser": null,
        "SLAPIKey": sl_key,
        "RefreshToken": null,
        "IAMAPIKey": key,
        "IAMAPIKeyUUID": "ApiKey-00000000-0000-4000-8000-000000000000",
        "Clusters": "{\"c1\":{}}",
        "SomethingNew": 7
    })
}

/// Writes records as a JSON array.
pub fn write_truth(dir: &Path, name: &str, records: &[serde_json::Value]) -> PathBuf {
    write(dir, name, serde_json::to_string_pretty(records).unwrap())
}

/// The fields of one cluster in `--output json`.
pub fn cluster<'a>(json: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    json["clusters"]
        .as_array()
        .expect("clusters array")
        .iter()
        .find(|c| c["cluster"] == id)
        .unwrap_or_else(|| panic!("no cluster {id} in {json}"))
}

/// Returns the SHA-256 fingerprint the tool shows for `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(&sha2::Sha256::digest(bytes)[..4]))
}

// ------------------------------------------------------------------ etcd

/// A real etcd started once for the whole test binary, on free loopback ports.
pub struct Etcd {
    pub client_port: u16,
}

/// Returns the shared etcd, starting it on first use. The process is spawned
/// from a thread that lives as long as the test binary, with
/// PR_SET_PDEATHSIG, so it dies when the tests exit.
pub fn etcd() -> &'static Etcd {
    static ETCD: LazyLock<Etcd> = LazyLock::new(start_etcd);
    &ETCD
}

fn start_etcd() -> Etcd {
    // Not a TempDir: a static is never dropped, and etcd preallocates 64 MB.
    let dir = fixture_dir("etcd");
    let client_port = free_port();
    let peer_port = free_port();
    let data = dir.join("data");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new("/usr/bin/etcd");
        cmd.arg("--name=rekey-test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-cluster=rekey-test=http://127.0.0.1:{peer_port}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_spawning_thread(&mut cmd);
        let child = cmd
            .spawn()
            .expect("start /usr/bin/etcd (etcd-server, see script/setup)");
        tx.send(child.id()).unwrap();
        // Keep this thread (the parent of etcd for PDEATHSIG) alive until the binary exits.
        let _child = child;
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap();
    let etcd = Etcd { client_port };
    for _ in 0..200 {
        if etcd.try_post("/v3/kv/range", r#"{"key":"AA=="}"#).is_some() {
            return etcd;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("etcd did not answer on 127.0.0.1:{client_port}");
}

impl Etcd {
    fn try_post(&self, path: &str, body: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.client_port)).ok()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        resp.starts_with("HTTP/1.1 200").then_some(resp)
    }

    /// Puts `value` at `key` through the v3 JSON gateway.
    pub fn put(&self, key: &str, value: &str) {
        let body = serde_json::json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)}).to_string();
        self.try_post("/v3/kv/put", &body).expect("etcd put");
    }

    /// Returns `etcd://127.0.0.1:PORT/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "etcd://127.0.0.1:{}/{}",
            self.client_port,
            prefix.trim_start_matches('/')
        )
    }
}

// ------------------------------------------------------------------ etcd with TLS and auth

/// The password of the TLS etcd's read-only user `rekey`.
pub const ETCD_PASSWORD: &str = "etcd-test-password-7c1f";
/// The prefix the TLS etcd's user `rekey` may read.
pub const ETCD_TLS_PREFIX: &str = "/secure-truth/";

/// A real etcd as production runs it: TLS with client-certificate auth
/// (`--client-cert-auth`) and user/password auth enabled, on loopback.
pub struct EtcdTls {
    pub port: u16,
    pub dir: PathBuf,
    /// CA, client certificate and key (PEM files in `dir`).
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CA that signed nothing etcd trusts.
    pub other_ca: PathBuf,
    /// The record stored under the prefix, and its API key.
    pub api_key: String,
}

/// Returns the shared TLS etcd, starting it on first use (once per test binary).
pub fn etcd_tls() -> &'static EtcdTls {
    static ETCD: LazyLock<EtcdTls> = LazyLock::new(start_etcd_tls);
    &ETCD
}

fn pem_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::*;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rekey test etcd CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    // etcd's JSON gateway dials etcd itself with the server certificate, so
    // it needs client auth too.
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    // No common names: etcd 3.4 refuses gateway requests over a connection
    // whose certificate has one ("CommonName of client sending a request
    // against gateway will be ignored"); the user comes from the token.
    params.distinguished_name = DistinguishedName::new();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let server = params.signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = params.signed_by(&client_key, &ca).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    other.distinguished_name.push(DnType::CommonName, "someone else's CA");
    let other = other.self_signed(&other_key).unwrap();
    (
        write(dir, "ca.pem", ca.pem()),
        write(dir, "server.pem", server.pem()),
        write(dir, "server-key.pem", server_key.serialize_pem()),
        write(dir, "client.pem", client.pem()),
        write(dir, "client-key.pem", client_key.serialize_pem()),
        write(dir, "other-ca.pem", other.pem()),
    )
}

/// POSTs to the TLS etcd with the client certificate (and a token); returns the JSON answer.
fn tls_post(
    e: &EtcdTls,
    path: &str,
    body: serde_json::Value,
    token: Option<&str>,
) -> Result<serde_json::Value, String> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&e.cacert).unwrap()).unwrap();
    let mut pem = std::fs::read(&e.cert).unwrap();
    pem.extend(std::fs::read(&e.key).unwrap());
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}{path}", e.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = client.post(&url).json(&body);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))
    })
}

fn start_etcd_tls() -> EtcdTls {
    let dir = fixture_dir("etcd-tls");
    let (cacert, server, server_key, cert, key, other_ca) = pem_files(&dir);
    let port = free_port();
    let peer_port = free_port();
    let data = dir.join("data");
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (cacert, server, server_key) = (cacert.clone(), server.clone(), server_key.clone());
        std::thread::spawn(move || {
            let mut cmd = Command::new("/usr/bin/etcd");
            cmd.arg("--name=rekey-tls")
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls=https://127.0.0.1:{port}"))
                .arg(format!("--advertise-client-urls=https://127.0.0.1:{port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-cluster=rekey-tls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--cert-file={}", server.display()))
                .arg(format!("--key-file={}", server_key.display()))
                .arg(format!("--trusted-ca-file={}", cacert.display()))
                .arg("--client-cert-auth")
                .arg("--log-level=error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            die_with_spawning_thread(&mut cmd);
            let child = cmd.spawn().expect("start /usr/bin/etcd (etcd-server)");
            tx.send(child.id()).unwrap();
            let _child = child;
            loop {
                std::thread::park();
            }
        });
    }
    rx.recv().unwrap();
    let e = EtcdTls {
        port,
        dir,
        cacert,
        cert,
        key,
        other_ca,
        api_key: Canary::new("etcdtls").key,
    };
    let b64 = |s: &str| STANDARD.encode(s);
    let mut ready = false;
    for _ in 0..200 {
        if tls_post(&e, "/v3/kv/range", serde_json::json!({"key": "AA=="}), None).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready, "the TLS etcd did not answer on 127.0.0.1:{port}");
    let record = record("acc1", "rg1", "us-south", Some(&e.api_key), None).to_string();
    let key = format!("{ETCD_TLS_PREFIX}acc1/rg1/us-south");
    let steps = [
        (
            "/v3/kv/put",
            serde_json::json!({"key": b64(&key), "value": b64(&record)}),
        ),
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": format!("{ETCD_PASSWORD}-root")}),
        ),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/role/add", serde_json::json!({"name": "reader"})),
        (
            "/v3/auth/role/grant",
            serde_json::json!({"name": "reader", "perm": {"permType": "READ", "key": b64(ETCD_TLS_PREFIX), "range_end": b64("/secure-truth0")}}),
        ),
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "rekey", "password": ETCD_PASSWORD}),
        ),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "rekey", "role": "reader"}),
        ),
        ("/v3/auth/enable", serde_json::json!({})),
    ];
    for (path, body) in steps {
        tls_post(&e, path, body, None).unwrap_or_else(|err| panic!("setting up the TLS etcd: {err}"));
    }
    e
}

impl EtcdTls {
    /// Returns `etcd+https://127.0.0.1:PORT/secure-truth`.
    pub fn url(&self) -> String {
        format!(
            "etcd+https://127.0.0.1:{}{}",
            self.port,
            ETCD_TLS_PREFIX.trim_end_matches('/')
        )
    }
}
