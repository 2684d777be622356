//! Authorship of the secrets repo: who wrote a sealed secret.
//!
//! Exists because encryption proves nothing about the author: anyone holding
//! the public recipient certificates can seal a pull secret. A signer's
//! secret key ([`SigningKey`]) signs a canonical [`Statement`] about each
//! secret (detached OpenPGP signature, [`sign_statement`]), and anyone can
//! check it with public keys only against the allowed signers
//! ([`AllowedSigners`], `.rekey/signers.asc`) with [`verify_statement`].
//! Signers pass the same kind of policy as recipients, for signing: not
//! expired, not revoked, a usable signing key, no SHA-1 self-signatures.
//! Every function takes the time as an argument; nothing here reads files,
//! the clock or the environment.

use crate::secrets_repo::pgp::{self, CertName, PgpError};
use chrono::{DateTime, Utc};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::Key;
use openpgp::packet::key::{SecretParts, UnspecifiedRole};
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper, VerificationResult,
};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Message};
use openpgp::types::{RevocationStatus, SignatureType};
use openpgp::{Cert, Fingerprint, KeyHandle, Packet};
use sha2::Digest as _;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::SystemTime;

/// The largest detached signature file rekey reads.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// The largest statement rekey reads.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// Why a signing key, a signer policy or a signature is refused. Never
/// carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Pgp(#[from] PgpError),
    #[error("there is no signature")]
    NoSignature,
    #[error("signed by key {issuers}, which is not an allowed signer")]
    UnknownSigner { issuers: String },
    #[error("signer {signer} expired at {expired}")]
    ExpiredSigner { signer: CertName, expired: String },
    #[error("signer {0} is revoked")]
    RevokedSigner(CertName),
    #[error("bad signature{}: {reason}", signer.as_ref().map(|s| format!(" by {s}")).unwrap_or_default())]
    BadSignature { signer: Option<CertName>, reason: String },
    #[error("the {role} ciphertext's SHA-256 is {actual}, the signed statement says {expected}")]
    HashMismatch {
        role: FileRole,
        expected: String,
        actual: String,
    },
    #[error("signer {cert} is rejected by the OpenPGP standard policy: {reason}")]
    Policy { cert: CertName, reason: String },
    #[error("signer {0} has no usable signing key")]
    NotSigningCapable(CertName),
    #[error("signer certificate {0} holds secret key material: pass public certificates only (gpg --export --armor)")]
    SecretMaterial(CertName),
    #[error("{source_name}: holds no secret signing key")]
    NoSigningKey { source_name: String },
    #[error("{source_name}: holds {count} secret keys; give exactly one signing key")]
    SeveralSigningKeys { source_name: String, count: usize },
    #[error("signing key {0} is protected by a passphrase: give --signing-passphrase-file or --signing-passphrase-env")]
    PassphraseRequired(CertName),
    #[error("signing key {0}: the passphrase does not unlock it")]
    WrongPassphrase(CertName),
    #[error("malformed statement: {0}")]
    Statement(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
}

/// Who made a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// The signer's certificate: primary fingerprint and first user ID.
    #[serde(flatten)]
    pub name: CertName,
    /// The fingerprint of the (sub)key that made the signature.
    pub key_fingerprint: String,
    /// The signature's creation time.
    #[serde(serialize_with = "serialize_time")]
    pub signed_at: SystemTime,
}

impl Signer {
    /// Returns whether both signatures were made by the same certificate
    /// (e.g. a statement's signer and the inner signer of its ciphertext).
    pub fn same_certificate(&self, other: &Signer) -> bool {
        self.name.fingerprint == other.name.fingerprint
    }
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, signed at {}", self.name, pgp::show_time(self.signed_at))
    }
}

fn serialize_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&pgp::show_time(*t))
}

// ---------------------------------------------------------------------------
// The statement.

/// Which ciphertext file of a secret a hash is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// `<NAME>.gpg`, the version in use.
    Current,
    /// `<NAME>.previous.gpg`, the version kept for rollback.
    Previous,
    /// A version sealed but not yet promoted.
    Pending,
}

impl FileRole {
    /// Returns the role's word in the statement encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Current => "current",
            FileRole::Previous => "previous",
            FileRole::Pending => "pending",
        }
    }

    fn parse(s: &str) -> Option<FileRole> {
        match s {
            "current" => Some(FileRole::Current),
            "previous" => Some(FileRole::Previous),
            "pending" => Some(FileRole::Pending),
            _ => None,
        }
    }
}

impl std::fmt::Display for FileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SHA-256 of one ciphertext file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub role: FileRole,
    pub sha256: [u8; 32],
}

impl FileHash {
    /// Returns the hash of `bytes` (the file exactly as stored) in `role`.
    pub fn of(role: FileRole, bytes: &[u8]) -> FileHash {
        FileHash {
            role,
            sha256: sha2::Sha256::digest(bytes).into(),
        }
    }
}

/// What a signer vouches for about one version of one secret.
///
/// Encoded by [`Statement::encode`] into canonical bytes (the signed data);
/// [`Statement::parse`] accepts exactly those bytes and nothing else, so
/// one statement has one encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The secret's name (`<NAME>.gpg` in the repo).
    pub secret: String,
    /// The region the secret is for.
    pub region: String,
    /// The version number, strictly increasing per secret (from 1).
    pub version: u64,
    /// The API key's name, when known.
    pub key_name: Option<String>,
    /// The API key's fingerprint as the metadata records it.
    pub key_fingerprint: String,
    /// The API key's IAM id (`ApiKey-…`), when the metadata records one:
    /// `keys retire` disables or deletes the key by this id.
    pub iam_key_id: Option<String>,
    /// When the version was sealed (encoded to the second, UTC).
    pub rotated_at: DateTime<Utc>,
    /// For a rollback: the version number this version restores.
    pub restores: Option<u64>,
    /// The hashes of every ciphertext file of the secret, at most one per
    /// role, `current` required.
    pub files: Vec<FileHash>,
}

const STATEMENT_MAGIC: &str = "rekey-statement 1";

fn check_value(field: &str, v: &str) -> Result<(), SignError> {
    if v.is_empty() {
        return Err(SignError::Statement(format!("{field} is empty")));
    }
    if v.chars().any(char::is_control) {
        return Err(SignError::Statement(format!("{field} holds a control character")));
    }
    if v.starts_with(' ') || v.ends_with(' ') {
        return Err(SignError::Statement(format!("{field} starts or ends with a space")));
    }
    Ok(())
}

impl Statement {
    /// Checks the fields can be encoded unambiguously.
    fn check(&self) -> Result<(), SignError> {
        check_value("secret", &self.secret)?;
        check_value("region", &self.region)?;
        if let Some(k) = &self.key_name {
            check_value("key-name", k)?;
        }
        check_value("key-fingerprint", &self.key_fingerprint)?;
        if let Some(id) = &self.iam_key_id {
            check_value("iam-key-id", id)?;
            if id.contains(' ') {
                return Err(SignError::Statement("iam-key-id holds a space".to_owned()));
            }
        }
        if self.version == 0 {
            return Err(SignError::Statement("version must be at least 1".to_owned()));
        }
        if let Some(r) = self.restores
            && (r == 0 || r >= self.version)
        {
            return Err(SignError::Statement(format!(
                "restores {r} is not an earlier version than {}",
                self.version
            )));
        }
        let mut roles: Vec<FileRole> = self.files.iter().map(|f| f.role).collect();
        roles.sort();
        roles.dedup();
        if roles.len() != self.files.len() {
            return Err(SignError::Statement("a file role is given twice".to_owned()));
        }
        if !roles.contains(&FileRole::Current) {
            return Err(SignError::Statement("no hash of the current ciphertext".to_owned()));
        }
        Ok(())
    }

    /// Returns the canonical bytes that are signed. See the README's
    /// "Statement format": UTF-8, LF-terminated `field value` lines in a
    /// fixed order, optional lines omitted, file lines ordered current,
    /// previous, pending.
    pub fn encode(&self) -> Result<Vec<u8>, SignError> {
        use std::fmt::Write as _;
        self.check()?;
        let mut s = String::new();
        let _ = writeln!(s, "{STATEMENT_MAGIC}");
        let _ = writeln!(s, "secret {}", self.secret);
        let _ = writeln!(s, "region {}", self.region);
        let _ = writeln!(s, "version {}", self.version);
        if let Some(k) = &self.key_name {
            let _ = writeln!(s, "key-name {k}");
        }
        let _ = writeln!(s, "key-fingerprint {}", self.key_fingerprint);
        if let Some(id) = &self.iam_key_id {
            let _ = writeln!(s, "iam-key-id {id}");
        }
        let _ = writeln!(
            s,
            "rotated-at {}",
            self.rotated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(r) = self.restores {
            let _ = writeln!(s, "restores {r}");
        }
        let mut files = self.files.clone();
        files.sort_by_key(|f| f.role);
        for f in &files {
            let _ = writeln!(s, "file {} sha256:{}", f.role, hex::encode(f.sha256));
        }
        Ok(s.into_bytes())
    }

    /// Parses canonical statement bytes; anything [`Statement::encode`]
    /// would not produce byte for byte is refused.
    pub fn parse(bytes: &[u8]) -> Result<Statement, SignError> {
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(SignError::TooLarge {
                what: "the statement",
                limit: MAX_STATEMENT_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| SignError::Statement("not UTF-8".to_owned()))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| SignError::Statement("does not end with a newline".to_owned()))?;
        let mut lines = body.split('\n').peekable();
        if lines.next() != Some(STATEMENT_MAGIC) {
            return Err(SignError::Statement(format!(
                "the first line is not `{STATEMENT_MAGIC}`"
            )));
        }
        let mut take = |field: &str, optional: bool| -> Result<Option<String>, SignError> {
            match lines.peek().and_then(|l| l.strip_prefix(field)?.strip_prefix(' ')) {
                Some(v) => {
                    let v = v.to_owned();
                    lines.next();
                    Ok(Some(v))
                }
                None if optional => Ok(None),
                None => Err(SignError::Statement(format!("expected the `{field}` line"))),
            }
        };
        let number = |field: &str, v: String| -> Result<u64, SignError> {
            v.parse::<u64>()
                .map_err(|_| SignError::Statement(format!("{field} is not a number: {v}")))
        };
        let secret = take("secret", false)?.unwrap_or_default();
        let region = take("region", false)?.unwrap_or_default();
        let version = number("version", take("version", false)?.unwrap_or_default())?;
        let key_name = take("key-name", true)?;
        let key_fingerprint = take("key-fingerprint", false)?.unwrap_or_default();
        let iam_key_id = take("iam-key-id", true)?;
        let rotated = take("rotated-at", false)?.unwrap_or_default();
        let rotated_at = DateTime::parse_from_rfc3339(&rotated)
            .map_err(|_| SignError::Statement(format!("rotated-at is not an RFC 3339 time: {rotated}")))?
            .with_timezone(&Utc);
        let restores = take("restores", true)?.map(|v| number("restores", v)).transpose()?;
        let mut files = Vec::new();
        while let Some(v) = take("file", true)? {
            let (role, hash) = v
                .split_once(' ')
                .ok_or_else(|| SignError::Statement(format!("bad file line: {v}")))?;
            let role =
                FileRole::parse(role).ok_or_else(|| SignError::Statement(format!("unknown file role {role}")))?;
            let sha256 = hash
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| SignError::Statement(format!("bad SHA-256 for the {role} file")))?;
            files.push(FileHash { role, sha256 });
        }
        if let Some(extra) = lines.next() {
            return Err(SignError::Statement(format!(
                "unexpected line: {}",
                extra.chars().take(60).collect::<String>().escape_default()
            )));
        }
        let statement = Statement {
            secret,
            region,
            version,
            key_name,
            key_fingerprint,
            iam_key_id,
            rotated_at,
            restores,
            files,
        };
        if statement.encode()? != bytes {
            return Err(SignError::Statement(
                "not in canonical form (numbers, time or line order)".to_owned(),
            ));
        }
        Ok(statement)
    }

    /// Checks that the ciphertext files of the secret are exactly those the
    /// statement hashes: each role present on both sides, hashes equal.
    pub fn check_files(&self, files: &[(FileRole, &[u8])]) -> Result<(), SignError> {
        for want in &self.files {
            let actual = files
                .iter()
                .find(|(role, _)| *role == want.role)
                .map(|(role, bytes)| FileHash::of(*role, bytes).sha256);
            if actual != Some(want.sha256) {
                return Err(SignError::HashMismatch {
                    role: want.role,
                    expected: hex::encode(want.sha256),
                    actual: actual.map(hex::encode).unwrap_or_else(|| "(no such file)".to_owned()),
                });
            }
        }
        if let Some((role, bytes)) = files
            .iter()
            .find(|(role, _)| !self.files.iter().any(|f| f.role == *role))
        {
            return Err(SignError::HashMismatch {
                role: *role,
                expected: "(not in the statement)".to_owned(),
                actual: hex::encode(FileHash::of(*role, bytes).sha256),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The signer policy.

/// Checks `cert` against the signer policy at `now`: valid under the
/// standard policy (no SHA-1 self-signatures), not revoked, not expired,
/// with a live signing key; when `key` is given, that key must be the live,
/// unrevoked, signing-capable one.
pub fn check_signer(cert: &Cert, key: Option<&Fingerprint>, now: SystemTime) -> Result<(), SignError> {
    let policy = StandardPolicy::new();
    let name = CertName::of(cert);
    let vc = cert.with_policy(&policy, now).map_err(|e| SignError::Policy {
        cert: name.clone(),
        reason: format!("{e:#}"),
    })?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(SignError::RevokedSigner(name));
    }
    let expired = |t: Option<SystemTime>, name: CertName| SignError::ExpiredSigner {
        signer: name,
        expired: t.map(pgp::show_time).unwrap_or_else(|| "an unknown time".to_owned()),
    };
    if vc.alive().is_err() {
        return Err(expired(vc.primary_key().key_expiration_time(), name));
    }
    match key {
        None => {
            if vc.keys().alive().revoked(false).for_signing().next().is_none() {
                return Err(SignError::NotSigningCapable(name));
            }
        }
        Some(fpr) => {
            let Some(ka) = vc.keys().key_handle(fpr.clone()).next() else {
                return Err(SignError::NotSigningCapable(name));
            };
            if let RevocationStatus::Revoked(_) = ka.revocation_status() {
                return Err(SignError::RevokedSigner(name));
            }
            if ka.alive().is_err() {
                return Err(expired(ka.key_expiration_time(), name));
            }
            if !ka.for_signing() {
                return Err(SignError::NotSigningCapable(name));
            }
        }
    }
    Ok(())
}

/// The certificates allowed to sign (`.rekey/signers.asc`).
///
/// Parsing refuses unreadable files and secret material; the policy is
/// applied per signature at verification time, so one expired signer does
/// not lock out the others ([`AllowedSigners::check`] reports them all).
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    certs: Vec<Cert>,
}

impl AllowedSigners {
    /// Parses a keyring of signer certificates.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<AllowedSigners, SignError> {
        let mut seen = BTreeSet::new();
        let mut certs = Vec::new();
        for cert in pgp::parse_certs(bytes, source_name)? {
            if cert.is_tsk() {
                return Err(SignError::SecretMaterial(CertName::of(&cert)));
            }
            if seen.insert(cert.fingerprint()) {
                certs.push(cert);
            }
        }
        Ok(AllowedSigners { certs })
    }

    /// Returns an empty set: every signature is by an unknown signer.
    pub fn none() -> AllowedSigners {
        AllowedSigners { certs: Vec::new() }
    }

    /// Returns the signers' certificates.
    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// Returns the signers' names, sorted by fingerprint.
    pub fn names(&self) -> Vec<CertName> {
        let mut v: Vec<CertName> = self.certs.iter().map(CertName::of).collect();
        v.sort();
        v
    }

    /// Returns the signers in `self` but not in `base` (added) and those in
    /// `base` but not in `self` (removed), each sorted by fingerprint: what
    /// a change to `signers.asc` does, for review.
    pub fn diff(&self, base: &AllowedSigners) -> (Vec<CertName>, Vec<CertName>) {
        let fprs = |s: &AllowedSigners| s.certs.iter().map(Cert::fingerprint).collect::<BTreeSet<_>>();
        let (ours, theirs) = (fprs(self), fprs(base));
        let pick = |s: &AllowedSigners, other: &BTreeSet<Fingerprint>| {
            let mut v: Vec<CertName> = s
                .certs
                .iter()
                .filter(|c| !other.contains(&c.fingerprint()))
                .map(CertName::of)
                .collect();
            v.sort();
            v
        };
        (pick(self, &theirs), pick(base, &ours))
    }

    /// Checks every signer against the policy at `now`.
    pub fn check(&self, now: SystemTime) -> Vec<(CertName, Result<(), SignError>)> {
        self.certs
            .iter()
            .map(|c| (CertName::of(c), check_signer(c, None, now)))
            .collect()
    }
}

/// Turns one signature verification result into the signer, or the reason
/// it is refused, applying the signer policy at `now`.
pub(crate) fn classify(result: &VerificationResult, now: SystemTime) -> Result<Signer, SignError> {
    match result {
        Ok(good) => {
            let cert = good.ka.cert();
            let fpr = good.ka.key().fingerprint();
            check_signer(cert, Some(&fpr), now)?;
            Ok(Signer {
                name: CertName::of(cert),
                key_fingerprint: fpr.to_hex(),
                signed_at: good.sig.signature_creation_time().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        }
        Err(VerificationError::MissingKey { sig }) => Err(SignError::UnknownSigner {
            issuers: issuers(sig.get_issuers()),
        }),
        Err(VerificationError::UnboundKey { cert, error, .. }) => {
            check_signer(cert, None, now)?;
            Err(SignError::BadSignature {
                signer: Some(CertName::of(cert)),
                reason: format!("{error:#}"),
            })
        }
        Err(VerificationError::BadKey { ka, error, .. }) => {
            let cert = ka.cert();
            check_signer(cert, Some(&ka.key().fingerprint()), now)?;
            Err(SignError::BadSignature {
                signer: Some(CertName::of(cert)),
                reason: format!("{error:#}"),
            })
        }
        Err(VerificationError::BadSignature { ka, error, .. }) => Err(SignError::BadSignature {
            signer: Some(CertName::of(ka.cert())),
            reason: format!("{error:#}"),
        }),
        Err(e) => Err(SignError::BadSignature {
            signer: None,
            reason: e.to_string(),
        }),
    }
}

fn issuers(handles: Vec<KeyHandle>) -> String {
    let v: Vec<String> = handles.iter().map(|h| h.to_hex()).collect();
    if v.is_empty() {
        "(no issuer)".to_owned()
    } else {
        v.join(", ")
    }
}

struct DetachedHelper<'a> {
    certs: &'a [Cert],
    now: SystemTime,
    results: Vec<Result<Signer, SignError>>,
}

impl VerificationHelper for DetachedHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.certs.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in &results {
                    self.results.push(classify(r, self.now));
                }
            }
        }
        Ok(())
    }
}

/// Checks that `signature` holds exactly one binary-document signature and
/// nothing else.
fn check_signature_packets(signature: &[u8]) -> Result<(), SignError> {
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(SignError::TooLarge {
            what: "the signature",
            limit: MAX_SIGNATURE_BYTES,
        });
    }
    if signature.trim_ascii().is_empty() {
        return Err(SignError::NoSignature);
    }
    let malformed = |reason: String| SignError::BadSignature { signer: None, reason };
    let mut ppr = PacketParser::from_bytes(signature).map_err(|e| malformed(format!("{e:#}")))?;
    let mut count = 0;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::Signature(sig) if sig.typ() == SignatureType::Binary => count += 1,
            Packet::Signature(sig) => {
                return Err(malformed(format!(
                    "a {} signature, not a detached binary one",
                    sig.typ()
                )));
            }
            other => return Err(malformed(format!("a {} packet in the signature", other.tag()))),
        }
        ppr = pp.next().map_err(|e| malformed(format!("{e:#}")))?.1;
    }
    match count {
        0 => Err(SignError::NoSignature),
        1 => Ok(()),
        n => Err(malformed(format!("{n} signatures; exactly one is expected"))),
    }
}

/// Verifies a detached OpenPGP signature over `data` (e.g. statement
/// bytes) with public keys only, and names the signer. The signature must
/// be one binary-document signature by an allowed signer that passes the
/// signer policy at `now`.
pub fn verify_detached(
    data: &[u8],
    signature: &[u8],
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<Signer, SignError> {
    check_signature_packets(signature)?;
    let run = || -> Result<Signer, SignError> {
        let policy = StandardPolicy::new();
        let helper = DetachedHelper {
            certs: &signers.certs,
            now,
            results: Vec::new(),
        };
        let bad = |e: anyhow::Error| SignError::BadSignature {
            signer: None,
            reason: format!("{e:#}"),
        };
        let mut v = DetachedVerifierBuilder::from_bytes(signature)
            .map_err(bad)?
            .with_policy(&policy, now, helper)
            .map_err(bad)?;
        v.verify_bytes(data).map_err(bad)?;
        v.into_helper()
            .results
            .into_iter()
            .next()
            .unwrap_or(Err(SignError::NoSignature))
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(SignError::BadSignature {
            signer: None,
            reason: "the OpenPGP parser failed on this signature".to_owned(),
        })
    })
}

/// Verifies a statement's detached signature ([`verify_detached`]) and
/// that the bytes are a canonical [`Statement`]; returns both.
pub fn verify_statement(
    statement: &[u8],
    signature: &[u8],
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<(Statement, Signer), SignError> {
    let signer = verify_detached(statement, signature, signers, now)?;
    Ok((Statement::parse(statement)?, signer))
}

/// Verifies everything a reviewer needs about one secret, without any
/// private key: the statement's signature by an allowed signer, and that
/// the ciphertext files are exactly those it hashes.
pub fn verify_secret(
    statement: &[u8],
    signature: &[u8],
    files: &[(FileRole, &[u8])],
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<(Statement, Signer), SignError> {
    let (st, signer) = verify_statement(statement, signature, signers, now)?;
    st.check_files(files)?;
    Ok((st, signer))
}

// ---------------------------------------------------------------------------
// The signing key.

/// An unlocked secret signing key. Key material stays in sequoia's
/// protected memory; `Debug` shows the certificate's name only.
pub struct SigningKey {
    key: Key<SecretParts, UnspecifiedRole>,
    cert: Cert,
    name: CertName,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("cert", &self.name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses an armored (or binary) secret key holding one certificate,
    /// checks it against the signer policy at `now`, and unlocks its
    /// signing key with `passphrase` when it is protected.
    pub fn parse(
        bytes: &[u8],
        source_name: &str,
        passphrase: Option<&Password>,
        now: SystemTime,
    ) -> Result<SigningKey, SignError> {
        let certs: Vec<Cert> = pgp::parse_certs(bytes, source_name)?
            .into_iter()
            .filter(Cert::is_tsk)
            .collect();
        let cert = match certs.len() {
            0 => {
                return Err(SignError::NoSigningKey {
                    source_name: source_name.to_owned(),
                });
            }
            1 => certs.into_iter().next().ok_or(SignError::NoSigningKey {
                source_name: source_name.to_owned(),
            })?,
            count => {
                return Err(SignError::SeveralSigningKeys {
                    source_name: source_name.to_owned(),
                    count,
                });
            }
        };
        let name = CertName::of(&cert);
        check_signer(&cert, None, now)?;
        let policy = StandardPolicy::new();
        let vc = cert.with_policy(&policy, now).map_err(|e| SignError::Policy {
            cert: name.clone(),
            reason: format!("{e:#}"),
        })?;
        // The newest live signing key that has secret material.
        let ka = vc
            .keys()
            .secret()
            .alive()
            .revoked(false)
            .for_signing()
            .max_by_key(|ka| ka.key().creation_time())
            .ok_or_else(|| SignError::NoSigningKey {
                source_name: source_name.to_owned(),
            })?;
        let key = ka.key().clone().role_into_unspecified();
        let key = if key.secret().is_encrypted() {
            match passphrase {
                None => return Err(SignError::PassphraseRequired(name)),
                Some(p) => key
                    .decrypt_secret(p)
                    .map_err(|_| SignError::WrongPassphrase(name.clone()))?,
            }
        } else {
            key
        };
        let public = cert.strip_secret_key_material();
        Ok(SigningKey {
            key,
            cert: public,
            name,
        })
    }

    /// Returns the signer's certificate name.
    pub fn name(&self) -> &CertName {
        &self.name
    }

    /// Returns the signer's public certificate (for `signers.asc`).
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Returns the fingerprint of the key that signs.
    pub fn key_fingerprint(&self) -> String {
        self.key.fingerprint().to_hex()
    }

    /// Returns a key pair to sign with.
    pub(crate) fn keypair(&self) -> Result<KeyPair, SignError> {
        self.key
            .clone()
            .into_keypair()
            .map_err(|e| SignError::Sign(format!("{e:#}")))
    }
}

/// Makes an ASCII-armored detached signature over `data` at `now`.
pub fn sign_detached(data: &[u8], key: &SigningKey, now: SystemTime) -> Result<Vec<u8>, SignError> {
    let err = |e: anyhow::Error| SignError::Sign(format!("{e:#}"));
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let message = Armorer::new(message)
            .kind(openpgp::armor::Kind::Signature)
            .build()
            .map_err(err)?;
        let mut signer = openpgp::serialize::stream::Signer::new(message, key.keypair()?)
            .map_err(err)?
            .detached()
            .creation_time(now)
            .build()
            .map_err(err)?;
        signer.write_all(data).map_err(|e| err(e.into()))?;
        signer.finalize().map_err(err)?;
    }
    Ok(sink)
}

/// Encodes `statement` and signs it; returns the encoded statement and its
/// armored detached signature.
pub fn sign_statement(
    statement: &Statement,
    key: &SigningKey,
    now: SystemTime,
) -> Result<(Vec<u8>, Vec<u8>), SignError> {
    let bytes = statement.encode()?;
    let sig = sign_detached(&bytes, key, now)?;
    Ok((bytes, sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets_repo::pgp::{RecipientSet, SecretKeys, Validity};
    use openpgp::cert::CertBuilder;
    use openpgp::serialize::Serialize;
    use std::time::Duration;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn statement() -> Statement {
        Statement {
            secret: "JP_REGISTRY".to_owned(),
            region: "jp".to_owned(),
            version: 7,
            key_name: Some("rekey-jp-20261124".to_owned()),
            key_fingerprint: "sha256:3f2a9c".to_owned(),
            iam_key_id: None,
            rotated_at: DateTime::parse_from_rfc3339("2026-11-24T07:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            restores: None,
            files: vec![
                FileHash::of(FileRole::Previous, b"old ciphertext"),
                FileHash::of(FileRole::Current, b"new ciphertext"),
            ],
        }
    }

    fn tsk_bytes(cert: &Cert) -> Vec<u8> {
        let mut out = Vec::new();
        cert.as_tsk().armored().serialize(&mut out).unwrap();
        out
    }

    fn public(cert: &Cert) -> Vec<u8> {
        let mut out = Vec::new();
        cert.armored().serialize(&mut out).unwrap();
        out
    }

    fn signer_cert(uid: &str) -> Cert {
        CertBuilder::new()
            .add_userid(uid)
            .add_signing_subkey()
            .generate()
            .unwrap()
            .0
    }

    fn key_of(cert: &Cert) -> SigningKey {
        SigningKey::parse(&tsk_bytes(cert), "signer.key", None, now()).unwrap()
    }

    fn signers(certs: &[&Cert]) -> AllowedSigners {
        let mut ring = Vec::new();
        for c in certs {
            ring.extend(public(c));
        }
        AllowedSigners::parse(&ring, "signers.asc").unwrap()
    }

    #[test]
    fn statement_encoding_is_the_documented_one() {
        let bytes = statement().encode().unwrap();
        let want = format!(
            "rekey-statement 1\nsecret JP_REGISTRY\nregion jp\nversion 7\nkey-name rekey-jp-20261124\n\
             key-fingerprint sha256:3f2a9c\nrotated-at 2026-11-24T07:00:00Z\n\
             file current sha256:{}\nfile previous sha256:{}\n",
            hex::encode(sha2::Sha256::digest(b"new ciphertext")),
            hex::encode(sha2::Sha256::digest(b"old ciphertext")),
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), want);
        let parsed = Statement::parse(&bytes).unwrap();
        assert_eq!(parsed.encode().unwrap(), bytes);
        let mut rollback = statement();
        rollback.restores = Some(5);
        rollback.key_name = None;
        let bytes = rollback.encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("rotated-at 2026-11-24T07:00:00Z\nrestores 5\nfile current"),
            "{text}"
        );
        assert!(!text.contains("key-name"));
        assert_eq!(
            Statement::parse(&bytes).unwrap(),
            Statement::parse(&rollback.encode().unwrap()).unwrap()
        );
    }

    #[test]
    fn the_iam_key_id_line_follows_the_key_fingerprint() {
        let mut st = statement();
        st.iam_key_id = Some("ApiKey-1a2b".to_owned());
        let bytes = st.encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("key-fingerprint sha256:3f2a9c\niam-key-id ApiKey-1a2b\nrotated-at "),
            "{text}"
        );
        let parsed = Statement::parse(&bytes).unwrap();
        assert_eq!(parsed.iam_key_id.as_deref(), Some("ApiKey-1a2b"));
        assert_eq!(parsed.encode().unwrap(), bytes);
        // Out of order, or with a space in the id, is not canonical.
        let moved = text.replace("iam-key-id ApiKey-1a2b\n", "").replace(
            "rotated-at 2026-11-24T07:00:00Z\n",
            "rotated-at 2026-11-24T07:00:00Z\niam-key-id ApiKey-1a2b\n",
        );
        assert!(Statement::parse(moved.as_bytes()).is_err());
        st.iam_key_id = Some("ApiKey-1 x".to_owned());
        assert!(st.encode().is_err());
        st.iam_key_id = Some(String::new());
        assert!(st.encode().is_err());
    }

    #[test]
    fn only_canonical_statements_parse() {
        let good = String::from_utf8(statement().encode().unwrap()).unwrap();
        let bad = [
            good.replace("version 7", "version 07"),
            good.replace("version 7", "version +7"),
            good.replace('\n', "\r\n"),
            good.trim_end().to_owned(),
            good.replace("region jp\n", ""),
            good.replace("secret JP_REGISTRY\nregion jp\n", "region jp\nsecret JP_REGISTRY\n"),
            good.replace("07:00:00Z", "07:00:00+00:00"),
            good.replace("07:00:00Z", "07:00:00.000Z"),
            good.replace("file current", "file pending"),
            good.replace("file previous", "file current"),
            good.clone() + "extra line\n",
            good.replace("rekey-statement 1", "rekey-statement 2"),
            good.replace("region jp", "region  jp"),
            good.replace("region jp", "region j\u{1b}p"),
            good.replace("sha256:", "sha1:"),
        ];
        for (i, b) in bad.iter().enumerate() {
            assert!(Statement::parse(b.as_bytes()).is_err(), "case {i}: {b}");
        }
        let mut s = statement();
        s.restores = Some(7);
        assert!(s.encode().is_err());
        s.restores = None;
        s.version = 0;
        assert!(s.encode().is_err());
        let mut s = statement();
        s.files.retain(|f| f.role != FileRole::Current);
        assert!(s.encode().is_err());
        let mut s = statement();
        s.secret = "a\nregion x".to_owned();
        assert!(s.encode().is_err());
    }

    #[test]
    fn file_hashes_must_match_exactly() {
        let s = statement();
        s.check_files(&[
            (FileRole::Current, b"new ciphertext"),
            (FileRole::Previous, b"old ciphertext"),
        ])
        .unwrap();
        let err = s
            .check_files(&[(FileRole::Current, b"swapped"), (FileRole::Previous, b"old ciphertext")])
            .unwrap_err();
        assert!(
            matches!(
                err,
                SignError::HashMismatch {
                    role: FileRole::Current,
                    ..
                }
            ),
            "{err}"
        );
        let err = s.check_files(&[(FileRole::Current, b"new ciphertext")]).unwrap_err();
        assert!(err.to_string().contains("previous"), "{err}");
        let err = s
            .check_files(&[
                (FileRole::Current, b"new ciphertext"),
                (FileRole::Previous, b"old ciphertext"),
                (FileRole::Pending, b"x"),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("not in the statement"), "{err}");
    }

    #[test]
    fn signed_statements_verify_and_name_the_signer() {
        let cert = signer_cert("Ops Signer <ops@example.com>");
        let key = key_of(&cert);
        let (bytes, sig) = sign_statement(&statement(), &key, now()).unwrap();
        assert!(sig.starts_with(b"-----BEGIN PGP SIGNATURE-----"));
        let (st, signer) = verify_statement(&bytes, &sig, &signers(&[&cert]), now()).unwrap();
        assert_eq!(st, Statement::parse(&bytes).unwrap());
        assert_eq!(signer.name.user_id, "Ops Signer <ops@example.com>");
        assert_eq!(signer.name.fingerprint, cert.fingerprint().to_hex());
        assert_eq!(signer.key_fingerprint, key.key_fingerprint());
        assert_ne!(signer.key_fingerprint, signer.name.fingerprint, "signs with the subkey");
        verify_secret(
            &bytes,
            &sig,
            &[
                (FileRole::Current, b"new ciphertext"),
                (FileRole::Previous, b"old ciphertext"),
            ],
            &signers(&[&cert]),
            now(),
        )
        .unwrap();
        let err = verify_secret(
            &bytes,
            &sig,
            &[(FileRole::Current, b"other"), (FileRole::Previous, b"old ciphertext")],
            &signers(&[&cert]),
            now(),
        )
        .unwrap_err();
        assert!(matches!(err, SignError::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn each_refusal_has_its_own_error() {
        let cert = signer_cert("a <a@example.com>");
        let other = signer_cert("b <b@example.com>");
        let key = key_of(&cert);
        let (bytes, sig) = sign_statement(&statement(), &key, now()).unwrap();
        let allowed = signers(&[&cert]);

        let err = verify_statement(&bytes, b"", &allowed, now()).unwrap_err();
        assert!(matches!(err, SignError::NoSignature), "{err}");
        let err = verify_statement(&bytes, b" \n", &allowed, now()).unwrap_err();
        assert!(matches!(err, SignError::NoSignature), "{err}");

        let err = verify_statement(&bytes, &sig, &signers(&[&other]), now()).unwrap_err();
        assert!(matches!(err, SignError::UnknownSigner { .. }), "{err}");
        assert!(err.to_string().contains(&key.key_fingerprint()), "{err}");

        let mut changed = bytes.clone();
        changed[40] ^= 1;
        let err = verify_statement(&changed, &sig, &allowed, now()).unwrap_err();
        assert!(matches!(err, SignError::BadSignature { signer: Some(_), .. }), "{err}");
        assert!(err.to_string().contains("a <a@example.com>"), "{err}");

        // Revoked after signing: refused, by name.
        let (rcert, revocation) = CertBuilder::new()
            .add_userid("r <r@example.com>")
            .add_signing_subkey()
            .generate()
            .unwrap();
        let (rbytes, rsig) = sign_statement(&statement(), &key_of(&rcert), now()).unwrap();
        let revoked = rcert.clone().insert_packets(revocation).unwrap().0;
        let err = verify_statement(&rbytes, &rsig, &signers(&[&revoked]), now()).unwrap_err();
        assert!(matches!(err, SignError::RevokedSigner(_)), "{err}");
        assert!(err.to_string().contains("r <r@example.com>"), "{err}");

        // Expired since signing: refused, by name.
        let (ecert, _) = CertBuilder::new()
            .add_userid("e <e@example.com>")
            .add_signing_subkey()
            .set_validity_period(Duration::from_secs(86400))
            .generate()
            .unwrap();
        let (ebytes, esig) = sign_statement(&statement(), &key_of(&ecert), now()).unwrap();
        let later = now() + Duration::from_secs(2 * 86400);
        let err = verify_statement(&ebytes, &esig, &signers(&[&ecert]), later).unwrap_err();
        assert!(matches!(err, SignError::ExpiredSigner { .. }), "{err}");
        assert!(err.to_string().contains("e <e@example.com>"), "{err}");

        // A well-formed signature over a non-canonical statement.
        let text = b"not a statement\n";
        let sig2 = sign_detached(text, &key, now()).unwrap();
        let err = verify_statement(text, &sig2, &allowed, now()).unwrap_err();
        assert!(matches!(err, SignError::Statement(_)), "{err}");
    }

    #[test]
    fn signature_files_holding_other_things_are_refused() {
        let cert = signer_cert("a <a@example.com>");
        let key = key_of(&cert);
        let (bytes, sig) = sign_statement(&statement(), &key, now()).unwrap();
        let sig2 = sign_detached(&bytes, &key, now()).unwrap();
        let mut two = sig.clone();
        two.extend_from_slice(&sig2);
        let allowed = signers(&[&cert]);
        // Two armored blocks: the armor reader reads the first only; a
        // binary concatenation is two signatures.
        let bin = |s: &[u8]| {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut openpgp::armor::Reader::from_bytes(s, None), &mut out).unwrap();
            out
        };
        let mut both = bin(&sig);
        both.extend(bin(&sig2));
        let err = verify_statement(&bytes, &both, &allowed, now()).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = verify_statement(&bytes, &public(&cert), &allowed, now()).unwrap_err();
        assert!(matches!(err, SignError::BadSignature { signer: None, .. }), "{err}");
        let err = verify_statement(&bytes, &vec![b'x'; MAX_SIGNATURE_BYTES + 1], &allowed, now()).unwrap_err();
        assert!(matches!(err, SignError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn truncated_or_flipped_signatures_never_panic() {
        let cert = signer_cert("a <a@example.com>");
        let key = key_of(&cert);
        let (bytes, sig) = sign_statement(&statement(), &key, now()).unwrap();
        let mut bin = Vec::new();
        std::io::Read::read_to_end(&mut openpgp::armor::Reader::from_bytes(&sig, None), &mut bin).unwrap();
        let allowed = signers(&[&cert]);
        for n in 0..bin.len() {
            let err = verify_statement(&bytes, &bin[..n], &allowed, now()).unwrap_err();
            assert!(!err.to_string().contains("parser failed"), "cut at {n}: {err}");
        }
        for i in 0..bin.len() {
            let mut m = bin.clone();
            m[i] ^= 0x01;
            if let Err(e) = verify_statement(&bytes, &m, &allowed, now()) {
                assert!(!e.to_string().contains("parser failed"), "byte {i}: {e}");
            }
        }
    }

    #[test]
    fn signing_keys_follow_the_signer_policy_and_passphrases() {
        let err = SigningKey::parse(&public(&signer_cert("p <p@example.com>")), "p.asc", None, now()).unwrap_err();
        assert!(matches!(err, SignError::NoSigningKey { .. }), "{err}");
        // An encryption-only certificate cannot sign.
        let (enc, _) = CertBuilder::new()
            .set_primary_key_flags(openpgp::types::KeyFlags::empty().set_certification())
            .add_userid("e <e@example.com>")
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let err = SigningKey::parse(&tsk_bytes(&enc), "e.key", None, now()).unwrap_err();
        assert!(matches!(err, SignError::NotSigningCapable(_)), "{err}");
        let (locked, _) = CertBuilder::new()
            .add_userid("l <l@example.com>")
            .add_signing_subkey()
            .set_password(Some("correct horse".into()))
            .generate()
            .unwrap();
        let err = SigningKey::parse(&tsk_bytes(&locked), "l.key", None, now()).unwrap_err();
        assert!(matches!(err, SignError::PassphraseRequired(_)), "{err}");
        let err = SigningKey::parse(&tsk_bytes(&locked), "l.key", Some(&"wrong".into()), now()).unwrap_err();
        assert!(matches!(err, SignError::WrongPassphrase(_)), "{err}");
        let key = SigningKey::parse(&tsk_bytes(&locked), "l.key", Some(&"correct horse".into()), now()).unwrap();
        let (bytes, sig) = sign_statement(&statement(), &key, now()).unwrap();
        verify_statement(&bytes, &sig, &signers(&[&locked]), now()).unwrap();
        // Debug names the certificate and shows no key material.
        let debug = format!("{key:?}");
        assert!(
            debug.contains("l <l@example.com>") && !debug.contains("secret"),
            "{debug}"
        );
        let mut two = tsk_bytes(&locked);
        two.extend(tsk_bytes(&signer_cert("x <x@example.com>")));
        let err = SigningKey::parse(&two, "two.key", None, now()).unwrap_err();
        assert!(matches!(err, SignError::SeveralSigningKeys { count: 2, .. }), "{err}");
    }

    #[test]
    fn a_signer_change_is_reported_as_added_and_removed() {
        let (a, b, c) = (signer_cert("a <a@x>"), signer_cert("b <b@x>"), signer_cert("c <c@x>"));
        let base = signers(&[&a, &b]);
        let head = signers(&[&b, &c]);
        let (added, removed) = head.diff(&base);
        assert_eq!(added, vec![CertName::of(&c)]);
        assert_eq!(removed, vec![CertName::of(&a)]);
        assert_eq!(base.diff(&base), (vec![], vec![]));
    }

    proptest::proptest! {
        #[test]
        fn statements_round_trip_and_parse_never_panics(
            secret in "[A-Z][A-Z0-9_]{0,20}",
            region in "[a-z]{2}(-[a-z0-9]{1,8})?",
            version in 2u64..u64::MAX,
            key_name in proptest::option::of("[ -~]{1,30}"),
            secs in 0i64..4_000_000_000,
            restores in proptest::option::of(1u64..2),
            iam_key_id in proptest::option::of("ApiKey-[a-z0-9-]{1,40}"),
            hashes in proptest::collection::vec(proptest::prelude::any::<[u8; 32]>(), 3),
            roles in proptest::sample::subsequence(vec![FileRole::Previous, FileRole::Pending], 0..=2),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let key_name = key_name.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
            let mut files = vec![FileHash { role: FileRole::Current, sha256: hashes[0] }];
            for (i, role) in roles.into_iter().enumerate() {
                files.push(FileHash { role, sha256: hashes[i + 1] });
            }
            let st = Statement {
                secret,
                region,
                version,
                key_name,
                key_fingerprint: "sha256:0011".to_owned(),
                iam_key_id,
                rotated_at: DateTime::from_timestamp(secs, 0).unwrap(),
                restores,
                files,
            };
            let bytes = st.encode().unwrap();
            proptest::prop_assert_eq!(Statement::parse(&bytes).unwrap(), st);
            let _ = Statement::parse(&noise);
            let mut spliced = bytes.clone();
            spliced.splice(noise.len() % bytes.len()..noise.len() % bytes.len(), noise.iter().copied());
            if !noise.is_empty() {
                proptest::prop_assert!(Statement::parse(&spliced).map(|p| p.encode().unwrap() == spliced).unwrap_or(true));
            }
        }
    }

    #[test]
    fn allowed_signers_refuse_secret_material_and_report_each_signer() {
        let good = signer_cert("g <g@example.com>");
        let err = AllowedSigners::parse(&tsk_bytes(&good), "signers.asc").unwrap_err();
        assert!(matches!(err, SignError::SecretMaterial(_)), "{err}");
        let (short, _) = CertBuilder::new()
            .add_userid("s <s@example.com>")
            .add_signing_subkey()
            .set_validity_period(Duration::from_secs(86400))
            .generate()
            .unwrap();
        let set = signers(&[&good, &short, &good]);
        assert_eq!(set.certs().len(), 2);
        let later = now() + Duration::from_secs(2 * 86400);
        let report = set.check(later);
        assert!(report.iter().any(|(n, r)| n.user_id.starts_with("g ") && r.is_ok()));
        assert!(
            report
                .iter()
                .any(|(n, r)| n.user_id.starts_with("s ") && matches!(r, Err(SignError::ExpiredSigner { .. })))
        );
    }

    fn recipients(cert: &Cert) -> RecipientSet {
        pgp::check_recipients(
            &[cert.clone().strip_secret_key_material()],
            now(),
            Validity {
                min: None,
                warn: Duration::from_secs(0),
            },
        )
        .unwrap()
    }

    #[test]
    fn signed_then_encrypted_messages_name_their_inner_signer() {
        let recipient = CertBuilder::general_purpose(Some("r <r@example.com>"))
            .generate()
            .unwrap()
            .0;
        let mut tsk = Vec::new();
        recipient.as_tsk().serialize(&mut tsk).unwrap();
        let keys = SecretKeys::parse(&tsk, "r.key", None).unwrap();
        let signer = signer_cert("Ops Signer <ops@example.com>");
        let key = key_of(&signer);
        let sealed = pgp::seal_signed(b"secret", &recipients(&recipient), &key, now()).unwrap();
        assert_eq!(pgp::validate_message(&sealed).unwrap().seipd_version, 1);
        let opened = pgp::open_verified(&sealed, &keys, &signers(&[&signer]), now()).unwrap();
        assert_eq!(&*opened.plaintext, b"secret");
        let who = opened.signature.unwrap().unwrap();
        assert_eq!(who.name.user_id, "Ops Signer <ops@example.com>");
        assert_eq!(who.key_fingerprint, key.key_fingerprint());
        // Unknown signer: still decrypts, and says so.
        let opened = pgp::open_verified(&sealed, &keys, &AllowedSigners::none(), now()).unwrap();
        assert!(matches!(opened.signature, Some(Err(SignError::UnknownSigner { .. }))));
        assert_eq!(&*pgp::open(&sealed, &keys, now()).unwrap(), b"secret");
        // Unsigned: no signature.
        let plain = pgp::seal(b"secret", &recipients(&recipient)).unwrap();
        let opened = pgp::open_verified(&plain, &keys, &signers(&[&signer]), now()).unwrap();
        assert!(opened.signature.is_none());
    }
}
