//! OpenPGP sealing and opening for the secrets repo (sequoia-openpgp).
//!
//! Exists so that every file in the secrets repo is readable by GnuPG 2.2:
//! messages are ASCII-armored, SEIPDv1 with MDC (never SEIPDv2, even when a
//! certificate advertises it), uncompressed, and addressed by key ID to every
//! usable encryption subkey of every recipient certificate. Recipients pass a
//! policy check first ([`check_recipients`]), with the time as an argument.
//! Opening ([`open`]) buffers the whole plaintext and returns it only when the
//! message was read to its end and its integrity (MDC) verified.

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::packet::{Key, PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{Features, RevocationStatus, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle, KeyID, Packet};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

use crate::secrets_repo::signing::{self, AllowedSigners, SignError, Signer, SigningKey};

/// A certificate named for messages: its fingerprint and first user ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct CertName {
    /// The primary key's fingerprint, upper-case hex.
    pub fingerprint: String,
    /// The first user ID, or `<no user ID>`.
    pub user_id: String,
}

impl std::fmt::Display for CertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.fingerprint, self.user_id)
    }
}

impl CertName {
    /// Returns the name of `cert`.
    pub fn of(cert: &Cert) -> CertName {
        let user_id = cert
            .userids()
            .next()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .unwrap_or_else(|| "<no user ID>".to_owned());
        CertName {
            fingerprint: cert.fingerprint().to_hex(),
            user_id,
        }
    }
}

/// Why certificates, keys or messages cannot be used. Never carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("{source_name}: not an OpenPGP certificate or keyring: {reason}")]
    Unparseable { source_name: String, reason: String },
    #[error("{source_name}: holds no OpenPGP certificate")]
    NoCertificate { source_name: String },
    #[error("the recipient set is empty: give at least one certificate")]
    NoRecipients,
    #[error("certificate {0} holds secret key material: pass public certificates only (gpg --export --armor)")]
    SecretMaterial(CertName),
    #[error("certificate {cert} is rejected by the OpenPGP standard policy: {reason}")]
    Policy { cert: CertName, reason: String },
    #[error("certificate {0} is revoked")]
    Revoked(CertName),
    #[error("certificate {cert} expired at {expired}")]
    Expired { cert: CertName, expired: String },
    #[error("certificate {0} has no usable encryption subkey (a signing-only key cannot be a recipient)")]
    NoEncryptionSubkey(CertName),
    #[error("certificate {cert} expires at {expires}, sooner than the required minimum validity of {min}")]
    ExpiresTooSoon {
        cert: CertName,
        expires: String,
        min: String,
    },
    #[error("encrypting: {0}")]
    Seal(String),
    #[error("not an encrypted OpenPGP message: {0}")]
    NotAMessage(String),
    #[error("{source_name}: holds no secret key")]
    NoSecretKey { source_name: String },
    #[error("secret key {0} is protected by a passphrase: give --passphrase-file or --passphrase-env")]
    PassphraseRequired(CertName),
    #[error("secret key {0}: the passphrase does not unlock it")]
    WrongPassphrase(CertName),
    #[error("the message is addressed to key IDs {addressed}, and none of them is in {source_name}")]
    WrongKey { addressed: String, source_name: String },
    #[error("decrypting failed (corrupted, truncated or tampered message): {0}")]
    Open(String),
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error(
        "the plain text is larger than the limit of {limit} bytes (a compressed message is decompressed only up to it)"
    )]
    PlaintextTooLarge { limit: usize },
}

/// One recipient certificate that passed the policy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecipientCert {
    #[serde(flatten)]
    pub name: CertName,
    /// When the certificate stops being usable for encryption (`None`: never).
    #[serde(serialize_with = "serialize_time")]
    pub expires: Option<SystemTime>,
    /// The key IDs of its usable encryption subkeys.
    pub key_ids: Vec<String>,
}

/// Certificates checked against the policy, ready to encrypt to.
#[derive(Debug)]
pub struct RecipientSet {
    pub certs: Vec<RecipientCert>,
    keys: Vec<Key<PublicParts, UnspecifiedRole>>,
    /// Certificates that expire within the warning window.
    pub expiring_soon: Vec<RecipientCert>,
}

impl RecipientSet {
    /// Returns the key IDs (upper-case hex) every message must be addressed to.
    pub fn key_ids(&self) -> BTreeSet<String> {
        self.certs.iter().flat_map(|c| c.key_ids.iter().cloned()).collect()
    }

    /// Returns the certificates' fingerprints, sorted.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut v: Vec<String> = self.certs.iter().map(|c| c.name.fingerprint.clone()).collect();
        v.sort();
        v
    }
}

/// How long recipients must stay valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Fail when a certificate expires sooner than this from now.
    pub min: Option<Duration>,
    /// Report certificates that expire sooner than this from now.
    pub warn: Duration,
}

fn parse_error(source_name: &str, e: impl std::fmt::Display) -> PgpError {
    PgpError::Unparseable {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    }
}

/// Parses every certificate in `bytes` (armored or binary; a keyring holds several).
pub fn parse_certs(bytes: &[u8], source_name: &str) -> Result<Vec<Cert>, PgpError> {
    if bytes.len() > MAX_CERT_BYTES {
        return Err(parse_error(
            source_name,
            format!("the file is larger than the limit of {MAX_CERT_BYTES} bytes"),
        ));
    }
    let parser = CertParser::from_bytes(bytes).map_err(|e| parse_error(source_name, format!("{e:#}")))?;
    let mut certs = Vec::new();
    for cert in parser {
        certs.push(cert.map_err(|e| parse_error(source_name, format!("{e:#}")))?);
    }
    if certs.is_empty() {
        return Err(PgpError::NoCertificate {
            source_name: source_name.to_owned(),
        });
    }
    Ok(certs)
}

fn serialize_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&show_time(*t)),
        None => s.serialize_none(),
    }
}

/// Returns a time as RFC 3339 UTC for messages.
pub fn show_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Checks every certificate against the recipient policy at `now` and
/// returns the set to encrypt to. The first failing certificate is named.
pub fn check_recipients(certs: &[Cert], now: SystemTime, validity: Validity) -> Result<RecipientSet, PgpError> {
    if certs.is_empty() {
        return Err(PgpError::NoRecipients);
    }
    let policy = StandardPolicy::new();
    let mut set = RecipientSet {
        certs: Vec::new(),
        keys: Vec::new(),
        expiring_soon: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for cert in certs {
        let name = CertName::of(cert);
        if cert.is_tsk() {
            return Err(PgpError::SecretMaterial(name));
        }
        // The same certificate in two keyrings is one recipient.
        if !seen.insert(cert.fingerprint()) {
            continue;
        }
        let vc = cert.with_policy(&policy, now).map_err(|e| PgpError::Policy {
            cert: name.clone(),
            reason: format!("{e:#}"),
        })?;
        if let RevocationStatus::Revoked(_) = vc.revocation_status() {
            return Err(PgpError::Revoked(name));
        }
        let primary_expiry = vc.primary_key().key_expiration_time();
        if vc.alive().is_err() {
            return Err(PgpError::Expired {
                expired: primary_expiry
                    .map(show_time)
                    .unwrap_or_else(|| "an unknown time".to_owned()),
                cert: name,
            });
        }
        let mut key_ids = Vec::new();
        let mut never = false;
        let mut latest: Option<SystemTime> = None;
        for ka in vc
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .for_storage_encryption()
            .for_transport_encryption()
        {
            match ka.key_expiration_time() {
                None => never = true,
                Some(t) => latest = Some(latest.map_or(t, |l| l.max(t))),
            }
            key_ids.push(ka.key().keyid().to_hex());
            set.keys.push(ka.key().clone().role_into_unspecified());
        }
        if key_ids.is_empty() {
            return Err(PgpError::NoEncryptionSubkey(name));
        }
        let sub_expiry = if never { None } else { latest };
        let expires = match (primary_expiry, sub_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let recipient = RecipientCert { name, expires, key_ids };
        if let Some(exp) = expires {
            let left = exp.duration_since(now).unwrap_or_default();
            if let Some(min) = validity.min
                && left < min
            {
                return Err(PgpError::ExpiresTooSoon {
                    expires: show_time(exp),
                    min: humantime::format_duration(min).to_string(),
                    cert: recipient.name,
                });
            }
            if left < validity.warn {
                set.expiring_soon.push(recipient.clone());
            }
        }
        set.certs.push(recipient);
    }
    Ok(set)
}

/// Encrypts `plaintext` to every key in `set`: ASCII-armored, SEIPDv1 with
/// MDC, AES-256, no compression, recipients addressed by key ID.
pub fn seal(plaintext: &[u8], set: &RecipientSet) -> Result<Vec<u8>, PgpError> {
    seal_with(plaintext, set, None)
}

/// Encrypts as [`seal`] describes, signing inside the encryption when a
/// signer (key pair and signing time) is given.
fn seal_with(
    plaintext: &[u8],
    set: &RecipientSet,
    signer: Option<(openpgp::crypto::KeyPair, SystemTime)>,
) -> Result<Vec<u8>, PgpError> {
    if set.keys.is_empty() {
        return Err(PgpError::NoRecipients);
    }
    tracing::debug!(
        "encrypting {} bytes for {} ({}){}",
        plaintext.len(),
        crate::words::plural(set.keys.len(), "key", "keys"),
        set.key_ids().into_iter().collect::<Vec<_>>().join(", "),
        if signer.is_some() { ", signed" } else { "" }
    );
    let err = |e: anyhow::Error| PgpError::Seal(format!("{e:#}"));
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let message = Armorer::new(message).build().map_err(err)?;
        // Features that list only SEIPDv1 keep the encryptor off SEIPDv2,
        // which GnuPG 2.2 cannot read, whatever the certificate advertises.
        let recipients = set
            .keys
            .iter()
            .map(|k| Recipient::new(Features::empty().set_seipdv1(), KeyHandle::from(k.keyid()), k));
        let mut message = Encryptor::for_recipients(message, recipients)
            .symmetric_algo(SymmetricAlgorithm::AES256)
            .build()
            .map_err(err)?;
        if let Some((keypair, now)) = signer {
            message = openpgp::serialize::stream::Signer::new(message, keypair)
                .map_err(err)?
                .creation_time(now)
                .build()
                .map_err(err)?;
        }
        let mut writer = LiteralWriter::new(message).build().map_err(err)?;
        writer.write_all(plaintext).map_err(|e| err(e.into()))?;
        writer.finalize().map_err(err)?;
    }
    Ok(sink)
}

/// The largest message (armored or binary) rekey reads.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The largest plain text rekey decrypts (or decompresses) a message to.
pub const MAX_PLAINTEXT_BYTES: usize = 1 << 20;
/// The largest certificate or keyring file rekey reads.
pub const MAX_CERT_BYTES: usize = 4 << 20;
/// The most session keys (recipient keys) a message may carry: each one
/// addressed to the decryption key costs a public-key operation.
pub const MAX_SESSION_KEYS: usize = 128;
/// The most signatures (one-pass or not) inside a message. Sequoia hashes
/// the plain text once per distinct one-pass signature (v6 ones are salted,
/// so never shared): 10,000 of them over 100 KB took 9 s before this bound.
pub const MAX_INNER_SIGNATURES: usize = 16;

const ARMOR_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const ARMOR_END: &[u8] = b"-----END PGP MESSAGE-----";
const TAG_PKESK: u8 = 1;
const TAG_SEIPD: u8 = 18;
/// A SEIPDv1 body holds at least the version octet, the random prefix (a
/// cipher block, 16 octets at most, plus 2), a literal data packet and the
/// 22-octet MDC packet. Sequoia's parser panics on bodies shorter than the
/// prefix plus the MDC, so shorter bodies are refused before it sees them.
const MIN_SEIPD1_BODY: usize = 1 + 18 + 22;
/// A SEIPDv2 body holds at least 4 header octets, a 32-octet salt and a 16-octet tag.
const MIN_SEIPD2_BODY: usize = 4 + 32 + 16;

/// The structure of a well-formed encrypted message, read without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageShape {
    /// Whether the message was ASCII-armored.
    pub armored: bool,
    /// The key IDs (upper-case hex; `*` for an anonymous recipient) its
    /// session keys are addressed to, in message order.
    pub key_ids: Vec<String>,
    /// The version of the encrypted data packet (1: SEIPDv1 with MDC).
    pub seipd_version: u8,
}

/// One top-level packet found by [`frame`].
struct Framed {
    tag: u8,
    /// The whole packet (header and body) in the binary message.
    range: std::ops::Range<usize>,
    body_len: usize,
    /// The body's first octet (its version for PKESK and SEIPD).
    first: Option<u8>,
}

/// Splits a binary message into its top-level packets, checking that every
/// length fits in the input and that nothing trails the last packet.
fn frame(b: &[u8]) -> Result<Vec<Framed>, String> {
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let truncated = || format!("byte {start}: the packet is truncated");
        let header = |at: usize, n: usize| -> Result<&[u8], String> {
            b.get(at..at + n)
                .ok_or_else(|| format!("byte {start}: the packet header is truncated"))
        };
        let be = |bytes: &[u8]| bytes.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        let ctb = b[pos];
        pos += 1;
        if ctb & 0x80 == 0 {
            return Err(format!("byte {start}: not a packet header"));
        }
        let (tag, mut body_len, mut first) = (ctb & 0x3f, 0usize, None);
        if ctb & 0x40 == 0 {
            // Old format: tag and length type in the CTB; indeterminate lengths are refused.
            let n = match ctb & 3 {
                0 => 1,
                1 => 2,
                2 => 4,
                _ => return Err(format!("byte {start}: a packet of indeterminate length")),
            };
            let len = be(header(pos, n)?);
            pos += n;
            let body = b.get(pos..pos.saturating_add(len)).ok_or_else(truncated)?;
            body_len = len;
            first = body.first().copied();
            pos += len;
            packets.push(Framed {
                tag: (ctb >> 2) & 0x0f,
                range: start..pos,
                body_len,
                first,
            });
            continue;
        }
        // New format: one length, or partial lengths ending in a definite one.
        loop {
            let o1 = header(pos, 1)?[0];
            let (len, partial, n) = match o1 {
                0..=191 => (usize::from(o1), false, 1),
                192..=223 => (
                    ((usize::from(o1) - 192) << 8) + usize::from(header(pos, 2)?[1]) + 192,
                    false,
                    2,
                ),
                255 => (be(header(pos + 1, 4)?), false, 5),
                _ => (1usize << (o1 & 0x1f), true, 1),
            };
            if partial && tag != TAG_SEIPD {
                return Err(format!(
                    "byte {start}: a partial body length on a packet other than encrypted data"
                ));
            }
            pos += n;
            let chunk = b.get(pos..pos.saturating_add(len)).ok_or_else(truncated)?;
            first = first.or(chunk.first().copied());
            body_len += len;
            pos += len;
            if !partial {
                break;
            }
        }
        packets.push(Framed {
            tag,
            range: start..pos,
            body_len,
            first,
        });
    }
    Ok(packets)
}

/// Returns the binary form of `bytes`: dearmored when it is ASCII-armored
/// (nothing but white space may follow the armor's end line).
fn binary(bytes: &[u8]) -> Result<(bool, std::borrow::Cow<'_, [u8]>), PgpError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(PgpError::TooLarge {
            what: "the message",
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let text = bytes.trim_ascii_start();
    if !text.starts_with(ARMOR_BEGIN) {
        return Ok((false, std::borrow::Cow::Borrowed(bytes)));
    }
    let end = memchr::memmem::find(text, ARMOR_END)
        .ok_or_else(|| PgpError::NotAMessage("the armor has no end line (truncated?)".to_owned()))?
        + ARMOR_END.len();
    if !text[end..].trim_ascii().is_empty() {
        return Err(PgpError::NotAMessage("data follows the armor's end line".to_owned()));
    }
    let mode = openpgp::armor::ReaderMode::Tolerant(Some(openpgp::armor::Kind::Message));
    let reader = openpgp::armor::Reader::from_bytes(&text[..end], mode);
    let mut out = Vec::new();
    reader
        .take(MAX_MESSAGE_BYTES as u64)
        .read_to_end(&mut out)
        .map_err(|e| PgpError::NotAMessage(format!("bad ASCII armor: {e}")))?;
    Ok((true, std::borrow::Cow::Owned(out)))
}

/// Checks, without any private key, that `bytes` is one complete encrypted
/// message as rekey and GnuPG write them: public-key encrypted session keys,
/// then exactly one integrity-protected encrypted data packet, complete,
/// with nothing after it. Returns the key IDs it is addressed to.
pub fn validate_message(bytes: &[u8]) -> Result<MessageShape, PgpError> {
    Ok(parse_message(bytes)?.0)
}

/// Validates the message and returns its shape and binary form.
fn parse_message(bytes: &[u8]) -> Result<(MessageShape, std::borrow::Cow<'_, [u8]>), PgpError> {
    let (armored, bin) = binary(bytes)?;
    if bin.is_empty() {
        return Err(PgpError::NotAMessage("the message is empty".to_owned()));
    }
    let packets = frame(&bin).map_err(PgpError::NotAMessage)?;
    let mut key_ids = Vec::new();
    let mut seipd = None;
    for p in &packets {
        if seipd.is_some() {
            return Err(PgpError::NotAMessage(format!(
                "a {} packet follows the encrypted data",
                openpgp::packet::Tag::from(p.tag)
            )));
        }
        match p.tag {
            TAG_PKESK => {
                if key_ids.len() == MAX_SESSION_KEYS {
                    return Err(PgpError::NotAMessage(format!(
                        "more than {MAX_SESSION_KEYS} encrypted session keys"
                    )));
                }
                let packet = Packet::from_bytes(&bin[p.range.clone()])
                    .map_err(|e| PgpError::NotAMessage(format!("bad encrypted session key: {e:#}")))?;
                let Packet::PKESK(pkesk) = packet else {
                    return Err(PgpError::NotAMessage("bad encrypted session key packet".to_owned()));
                };
                key_ids.push(
                    pkesk
                        .recipient()
                        .map(|h| KeyID::from(&h).to_hex())
                        .unwrap_or_else(|| "*".to_owned()),
                );
            }
            TAG_SEIPD => {
                let (version, min) = match p.first {
                    Some(1) => (1, MIN_SEIPD1_BODY),
                    Some(2) => (2, MIN_SEIPD2_BODY),
                    Some(v) => {
                        return Err(PgpError::NotAMessage(format!("encrypted data of unknown version {v}")));
                    }
                    None => return Err(PgpError::NotAMessage("empty encrypted data packet".to_owned())),
                };
                if p.body_len < min {
                    return Err(PgpError::NotAMessage(format!(
                        "the encrypted data is too short ({} bytes)",
                        p.body_len
                    )));
                }
                seipd = Some(version);
            }
            other => {
                return Err(PgpError::NotAMessage(format!(
                    "found a {} packet where encrypted data was expected",
                    openpgp::packet::Tag::from(other)
                )));
            }
        }
    }
    let Some(seipd_version) = seipd else {
        return Err(PgpError::NotAMessage("no encrypted data packet".to_owned()));
    };
    Ok((
        MessageShape {
            armored,
            key_ids,
            seipd_version,
        },
        bin,
    ))
}

/// Signs then encrypts `plaintext` as [`seal`] does, with the signature
/// inside the encryption: one-pass signature, literal data, signature (as
/// `gpg --sign --encrypt` writes it, so `gpg --decrypt` reports a good
/// signature), made by `key` at `now`. No compression.
pub fn seal_signed(
    plaintext: &[u8],
    set: &RecipientSet,
    key: &SigningKey,
    now: SystemTime,
) -> Result<Vec<u8>, PgpError> {
    if set.keys.is_empty() {
        return Err(PgpError::NoRecipients);
    }
    let keypair = key.keypair().map_err(|e| PgpError::Seal(e.to_string()))?;
    seal_with(plaintext, set, Some((keypair, now)))
}

/// Returns the key IDs (upper-case hex; `*` for an anonymous recipient) that
/// the message's session keys are addressed to, without any private key,
/// after checking that the message is complete and well formed
/// ([`validate_message`]).
pub fn addressed_key_ids(message: &[u8]) -> Result<Vec<String>, PgpError> {
    Ok(validate_message(message)?.key_ids)
}

/// Unlocked secret keys to decrypt with. Key material stays in sequoia's
/// protected memory; `Debug` shows where the keys came from and their IDs.
pub struct SecretKeys {
    keys: Vec<Key<SecretParts, UnspecifiedRole>>,
    source_name: String,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeys")
            .field("source_name", &self.source_name)
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.keyid().to_hex()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SecretKeys {
    /// Parses the secret keys in `bytes`, unlocking them with `passphrase`.
    pub fn parse(bytes: &[u8], source_name: &str, passphrase: Option<&Password>) -> Result<SecretKeys, PgpError> {
        let certs = parse_certs(bytes, source_name)?;
        let mut keys = Vec::new();
        for cert in &certs {
            for ka in cert.keys().secret() {
                let key = ka.key().clone().role_into_unspecified();
                let key = if key.secret().is_encrypted() {
                    match passphrase {
                        None => return Err(PgpError::PassphraseRequired(CertName::of(cert))),
                        Some(p) => key
                            .decrypt_secret(p)
                            .map_err(|_| PgpError::WrongPassphrase(CertName::of(cert)))?,
                    }
                } else {
                    key
                };
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(PgpError::NoSecretKey {
                source_name: source_name.to_owned(),
            });
        }
        Ok(SecretKeys {
            keys,
            source_name: source_name.to_owned(),
        })
    }

    fn matching(&self, ids: &[String]) -> bool {
        self.keys
            .iter()
            .any(|k| ids.iter().any(|id| id == "*" || *id == k.keyid().to_hex()))
    }
}

/// The result of verifying one inner signature of a message.
pub type InnerResult = Result<Signer, SignError>;

struct Helper<'a> {
    keys: &'a SecretKeys,
    /// Certificates that may have made inner signatures.
    certs: &'a [Cert],
    now: SystemTime,
    results: Vec<InnerResult>,
    /// One-pass signature and signature packets seen so far.
    signatures: usize,
    /// Compressed data packets seen so far.
    compressed: usize,
}

impl VerificationHelper for Helper<'_> {
    fn inspect(&mut self, pp: &openpgp::parse::PacketParser) -> openpgp::Result<()> {
        if let Packet::CompressedData(_) = pp.packet {
            // GnuPG compresses once; each nested layer (up to sequoia's
            // recursion limit) would keep its own decompressor's memory.
            self.compressed += 1;
            if self.compressed > 1 {
                return Err(anyhow::anyhow!("the message is compressed more than once"));
            }
        }
        if matches!(pp.packet, Packet::OnePassSig(_) | Packet::Signature(_)) {
            self.signatures += 1;
            if self.signatures > 2 * MAX_INNER_SIGNATURES {
                return Err(anyhow::anyhow!(
                    "the message holds more than {MAX_INNER_SIGNATURES} signatures"
                ));
            }
        }
        Ok(())
    }

    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.certs.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // Called after the whole message was read: refuse plain (unencrypted) data.
        let mut layers = structure.into_iter();
        match layers.next() {
            Some(MessageLayer::Encryption { .. }) => {}
            _ => return Err(anyhow::anyhow!("the message is not encrypted")),
        }
        for layer in layers {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in &results {
                    self.results.push(signing::classify(r, self.now));
                }
            }
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            for key in &self.keys.keys {
                let addressed = match pkesk.recipient() {
                    None => true,
                    Some(h) => h.aliases(key.key_handle()),
                };
                if !addressed {
                    continue;
                }
                let mut pair = key.clone().into_keypair()?;
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &sk)
                {
                    return Ok(None);
                }
            }
        }
        Err(anyhow::anyhow!("no secret key decrypts a session key"))
    }
}

/// Decrypts `message` with `keys` and returns the plaintext only after the
/// whole message was read and its integrity verified; on any error nothing
/// of the plaintext is returned (the buffer is zeroized).
///
/// The message is validated first ([`validate_message`]); a compressed
/// message is decompressed to at most [`MAX_PLAINTEXT_BYTES`].
pub fn open(message: &[u8], keys: &SecretKeys, now: SystemTime) -> Result<Zeroizing<Vec<u8>>, PgpError> {
    Ok(decrypt_message(message, keys, &[], now)?.0)
}

/// Decrypts a validated message, handing `certs` to the verifier for inner
/// signatures; returns the plaintext and the inner signatures' results.
pub(crate) fn decrypt_message(
    message: &[u8],
    keys: &SecretKeys,
    certs: &[Cert],
    now: SystemTime,
) -> Result<(Zeroizing<Vec<u8>>, Vec<InnerResult>), PgpError> {
    let (shape, bin) = parse_message(message)?;
    if !keys.matching(&shape.key_ids) {
        return Err(PgpError::WrongKey {
            addressed: if shape.key_ids.is_empty() {
                "(none)".to_owned()
            } else {
                shape.key_ids.join(", ")
            },
            source_name: keys.source_name.clone(),
        });
    }
    tracing::debug!(
        "decrypting a message addressed to {} with keys from {}",
        shape.key_ids.join(", "),
        keys.source_name
    );
    // Sequoia is not known to panic on a validated message; should it, the
    // panic becomes an error here rather than reaching the user.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decrypt_bounded(&bin, keys, certs, now)))
        .unwrap_or_else(|_| Err(PgpError::Open("the OpenPGP parser failed on this message".to_owned())))
}

/// A decrypted message and what its inner signature says.
#[derive(Debug)]
pub struct Opened {
    /// The plain text (cleared on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// `None` when the message is not signed; otherwise the first signer
    /// that verified, or else the first signature's refusal.
    pub signature: Option<InnerResult>,
}

/// Decrypts like [`open`] and verifies the inner signature, if any,
/// against `signers` under the signer policy at `now`. A bad inner
/// signature does not fail decryption: it is reported in
/// [`Opened::signature`] for the caller to judge.
pub fn open_verified(
    message: &[u8],
    keys: &SecretKeys,
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<Opened, PgpError> {
    let (plaintext, results) = decrypt_message(message, keys, signers.certs(), now)?;
    let signature = match results.iter().position(Result::is_ok) {
        Some(i) => results.into_iter().nth(i),
        None => results.into_iter().next(),
    };
    Ok(Opened { plaintext, signature })
}

fn decrypt_bounded(
    bin: &[u8],
    keys: &SecretKeys,
    certs: &[Cert],
    now: SystemTime,
) -> Result<(Zeroizing<Vec<u8>>, Vec<InnerResult>), PgpError> {
    let policy = StandardPolicy::new();
    let bad = |e: anyhow::Error| PgpError::Open(format!("{e:#}"));
    let helper = Helper {
        keys,
        certs,
        now,
        results: Vec::new(),
        signatures: 0,
        compressed: 0,
    };
    // The buffer bounds what sequoia reads ahead (and so decompresses)
    // before the first read; `take` bounds the rest.
    let mut decryptor = DecryptorBuilder::from_bytes(bin)
        .map_err(bad)?
        .buffer_size(64 * 1024)
        .with_policy(&policy, now, helper)
        .map_err(bad)?;
    let mut plaintext = Zeroizing::new(Vec::new());
    (&mut decryptor)
        .take(MAX_PLAINTEXT_BYTES as u64 + 1)
        .read_to_end(&mut plaintext)
        .map_err(|e| PgpError::Open(e.to_string()))?;
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(PgpError::PlaintextTooLarge {
            limit: MAX_PLAINTEXT_BYTES,
        });
    }
    if !decryptor.message_processed() {
        return Err(PgpError::Open("the message ended early".to_owned()));
    }
    let results = std::mem::take(&mut decryptor.helper_mut().results);
    Ok((plaintext, results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::parse::{PacketParser, PacketParserResult};
    use openpgp::serialize::Serialize;

    fn far() -> Validity {
        Validity {
            min: None,
            warn: Duration::from_secs(30 * 86400),
        }
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn new_cert(uid: &str) -> Cert {
        CertBuilder::general_purpose(Some(uid)).generate().unwrap().0
    }

    fn public_armor(cert: &Cert) -> Vec<u8> {
        let mut out = Vec::new();
        cert.armored().serialize(&mut out).unwrap();
        out
    }

    fn secret_bytes(cert: &Cert) -> Vec<u8> {
        let mut out = Vec::new();
        cert.as_tsk().serialize(&mut out).unwrap();
        out
    }

    #[test]
    fn seals_seipdv1_without_compression_even_for_seipdv2_certs() {
        let cert = new_cert("a <a@example.com>");
        assert!(
            cert.with_policy(&StandardPolicy::new(), None)
                .unwrap()
                .features()
                .unwrap()
                .supports_seipdv2()
        );
        let public = parse_certs(&public_armor(&cert), "a.asc").unwrap();
        let set = check_recipients(&public, now(), far()).unwrap();
        let sealed = seal(b"hello", &set).unwrap();
        assert!(sealed.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        let mut ppr = PacketParser::from_bytes(&sealed).unwrap();
        let mut tags = Vec::new();
        while let PacketParserResult::Some(pp) = ppr {
            match &pp.packet {
                Packet::SEIP(s) => assert_eq!(s.version(), 1),
                Packet::PKESK(p) => assert_eq!(p.version(), 3),
                Packet::CompressedData(_) => panic!("compressed"),
                _ => {}
            }
            tags.push(pp.packet.tag());
            ppr = pp.recurse().unwrap().1;
        }
        let keys = SecretKeys::parse(&secret_bytes(&cert), "a.key", None).unwrap();
        assert_eq!(&*open(&sealed, &keys, now()).unwrap(), b"hello");
        assert_eq!(
            addressed_key_ids(&sealed).unwrap(),
            set.key_ids().into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_certificate_given_twice_is_one_recipient() {
        let cert = new_cert("d <d@example.com>").strip_secret_key_material();
        let set = check_recipients(&[cert.clone(), cert], now(), far()).unwrap();
        assert_eq!(set.certs.len(), 1);
        let sealed = seal(b"x", &set).unwrap();
        assert_eq!(addressed_key_ids(&sealed).unwrap().len(), 1);
    }

    #[test]
    fn secret_material_is_refused_as_recipient() {
        let cert = new_cert("s <s@example.com>");
        let certs = parse_certs(&secret_bytes(&cert), "s.key").unwrap();
        let err = check_recipients(&certs, now(), far()).unwrap_err();
        assert!(matches!(err, PgpError::SecretMaterial(_)), "{err}");
        assert!(err.to_string().contains(&cert.fingerprint().to_hex()));
    }

    #[test]
    fn empty_and_garbage_inputs_are_refused() {
        assert!(matches!(
            check_recipients(&[], now(), far()),
            Err(PgpError::NoRecipients)
        ));
        assert!(parse_certs(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n", "x.asc").is_err());
        assert!(addressed_key_ids(b"hello").is_err());
    }

    #[test]
    fn min_validity_fails_and_warn_window_reports() {
        let (cert, _) = CertBuilder::general_purpose(Some("e <e@example.com>"))
            .set_validity_period(Duration::from_secs(10 * 86400))
            .generate()
            .unwrap();
        let certs = vec![cert.strip_secret_key_material()];
        let set = check_recipients(&certs, now(), far()).unwrap();
        assert_eq!(set.expiring_soon.len(), 1);
        let strict = Validity {
            min: Some(Duration::from_secs(30 * 86400)),
            warn: Duration::from_secs(0),
        };
        assert!(matches!(
            check_recipients(&certs, now(), strict),
            Err(PgpError::ExpiresTooSoon { .. })
        ));
        let later = now() + Duration::from_secs(11 * 86400);
        assert!(matches!(
            check_recipients(&certs, later, far()),
            Err(PgpError::Expired { .. })
        ));
    }

    #[test]
    fn tampered_message_yields_no_plaintext() {
        let cert = new_cert("t <t@example.com>");
        let set = check_recipients(&[cert.clone().strip_secret_key_material()], now(), far()).unwrap();
        let keys = SecretKeys::parse(&secret_bytes(&cert), "t.key", None).unwrap();
        let sealed = seal(&[7u8; 4000], &set).unwrap();
        // Dearmor, flip a byte near the end of the encrypted data, decrypt.
        let mut reader = openpgp::armor::Reader::from_bytes(&sealed, None);
        let mut binary = Vec::new();
        reader.read_to_end(&mut binary).unwrap();
        let n = binary.len();
        binary[n - 30] ^= 1;
        assert!(matches!(open(&binary, &keys, now()), Err(PgpError::Open(_))));
        binary.truncate(n - 100);
        assert!(open(&binary, &keys, now()).is_err());
    }

    /// A real message (armored), its binary form, the key that opens it, its plain text.
    type Sample = (Vec<u8>, Vec<u8>, SecretKeys, Vec<u8>);

    fn sample() -> Sample {
        let cert = new_cert("m <m@example.com>");
        let set = check_recipients(&[cert.clone().strip_secret_key_material()], now(), far()).unwrap();
        let keys = SecretKeys::parse(&secret_bytes(&cert), "m.key", None).unwrap();
        let plaintext = br#"{"auths":{"jp.icr.io":{"auth":"aWFtYXBpa2V5OnNlY3JldA=="}}}"#.repeat(6);
        let sealed = seal(&plaintext, &set).unwrap();
        let bin = binary(&sealed).unwrap().1.into_owned();
        (sealed, bin, keys, plaintext)
    }

    /// Opens a mutated message: an error, or exactly the original plain
    /// text; never a panic, never other plain text.
    #[track_caller]
    fn assert_opens_cleanly(m: &[u8], keys: &SecretKeys, plaintext: &[u8], what: &str) {
        let _ = validate_message(m);
        match open(m, keys, now()) {
            Ok(p) => assert_eq!(&*p, plaintext, "{what}: other plain text"),
            Err(e) => assert!(
                !e.to_string().contains("parser failed"),
                "{what}: sequoia panicked: {e}"
            ),
        }
    }

    #[test]
    fn truncation_at_every_offset_is_a_clean_error() {
        let (armored, bin, keys, plaintext) = sample();
        for n in 0..bin.len() {
            assert!(addressed_key_ids(&bin[..n]).is_err(), "key-less check, cut at {n}");
            let err = validate_message(&bin[..n]).unwrap_err();
            assert!(matches!(err, PgpError::NotAMessage(_)), "binary cut at {n}: {err}");
            assert_opens_cleanly(&bin[..n], &keys, &plaintext, &format!("binary cut at {n}"));
        }
        // Cuts in the armor's end line still hold all the data; earlier cuts do not.
        let end = armored.len() - ARMOR_END.len() - 2;
        for n in 0..end {
            assert!(validate_message(&armored[..n]).is_err(), "armored cut at {n}");
            assert!(open(&armored[..n], &keys, now()).is_err(), "armored cut at {n}");
        }
        assert_eq!(validate_message(&armored).unwrap().key_ids, keys_ids(&keys));
    }

    fn keys_ids(keys: &SecretKeys) -> Vec<String> {
        // The sample's only recipient is its encryption subkey.
        keys.keys
            .iter()
            .filter(|k| k.pk_algo().for_encryption())
            .map(|k| k.keyid().to_hex())
            .collect()
    }

    #[test]
    fn flipping_every_byte_is_a_clean_error() {
        let (armored, bin, keys, plaintext) = sample();
        for i in 0..bin.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut m = bin.clone();
                m[i] ^= mask;
                assert_opens_cleanly(&m, &keys, &plaintext, &format!("byte {i} ^ {mask:#x}"));
            }
        }
        for i in 0..armored.len() {
            let mut m = armored.clone();
            m[i] = if m[i] == b'A' { b'B' } else { b'A' };
            assert_opens_cleanly(&m, &keys, &plaintext, &format!("armored byte {i}"));
        }
    }

    #[test]
    fn seipdv2_messages_survive_the_same_mutations() {
        // rekey never writes SEIPDv2, but other tools do; hostile ones must not panic either.
        let cert = new_cert("v <v@example.com>");
        let set = check_recipients(&[cert.clone().strip_secret_key_material()], now(), far()).unwrap();
        let keys = SecretKeys::parse(&secret_bytes(&cert), "v.key", None).unwrap();
        let mut bin = Vec::new();
        {
            let message = Message::new(&mut bin);
            let recipients = set
                .keys
                .iter()
                .map(|k| Recipient::new(Features::empty().set_seipdv2(), KeyHandle::from(k.fingerprint()), k));
            let message = Encryptor::for_recipients(message, recipients).build().unwrap();
            let mut w = LiteralWriter::new(message).build().unwrap();
            w.write_all(&[b'v'; 300]).unwrap();
            w.finalize().unwrap();
        }
        assert_eq!(validate_message(&bin).unwrap().seipd_version, 2);
        assert_eq!(&*open(&bin, &keys, now()).unwrap(), &[b'v'; 300][..]);
        for n in 0..bin.len() {
            assert!(validate_message(&bin[..n]).is_err(), "cut at {n}");
            assert_opens_cleanly(&bin[..n], &keys, &[b'v'; 300], &format!("v2 cut at {n}"));
        }
        for i in 0..bin.len() {
            let mut m = bin.clone();
            m[i] ^= 0x01;
            assert_opens_cleanly(&m, &keys, &[b'v'; 300], &format!("v2 byte {i}"));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        #[test]
        fn arbitrary_bytes_never_panic_the_validator(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = validate_message(&bytes);
            let mut armored = b"-----BEGIN PGP MESSAGE-----\n\n".to_vec();
            armored.extend_from_slice(&bytes);
            armored.extend_from_slice(b"\n-----END PGP MESSAGE-----\n");
            let _ = validate_message(&armored);
        }
    }

    #[test]
    fn the_panicking_truncation_is_refused_before_sequoia_sees_it() {
        // Sequoia 2.4 panics (parse.rs, `data_consume_hard(..).unwrap()`)
        // when a SEIPDv1 body is shorter than its prefix plus the MDC.
        let (_, bin, keys, _) = sample();
        let cut = &bin[..bin.len() - 41];
        let err = open(cut, &keys, now()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_complete_but_too_short_encrypted_packet_is_refused() {
        // Same panic, reached with a well-framed packet: the real session
        // key decrypts the random prefix, then the body ends before the MDC.
        let (_, bin, keys, _) = sample();
        let packets = frame(&bin).unwrap();
        let seipd = packets.iter().find(|p| p.tag == TAG_SEIPD).unwrap();
        let header = seipd.range.len() - seipd.body_len;
        let body = &bin[seipd.range.start + header..seipd.range.end];
        for len in [20, 30, MIN_SEIPD1_BODY - 1] {
            let mut m = bin[..seipd.range.start].to_vec();
            m.extend_from_slice(&[0xc0 | TAG_SEIPD, len as u8]);
            m.extend_from_slice(&body[..len]);
            let err = open(&m, &keys, now()).unwrap_err();
            assert!(err.to_string().contains("too short"), "{len}: {err}");
        }
    }

    #[test]
    fn messages_with_thousands_of_one_pass_signatures_are_refused_early() {
        use openpgp::packet::one_pass_sig::OnePassSig6;
        use openpgp::types::{HashAlgorithm, PublicKeyAlgorithm, SignatureType};
        let cert = CertBuilder::general_purpose(Some("o <o@example.com>"))
            .set_profile(openpgp::Profile::RFC9580)
            .unwrap()
            .generate()
            .unwrap()
            .0;
        let set = check_recipients(&[cert.clone().strip_secret_key_material()], now(), far()).unwrap();
        let keys = SecretKeys::parse(&secret_bytes(&cert), "o.key", None).unwrap();
        let message = |n: usize| {
            let mut sink = Vec::new();
            let message = Message::new(&mut sink);
            let recipients = set
                .keys
                .iter()
                .map(|k| Recipient::new(Features::empty().set_seipdv1(), KeyHandle::from(k.keyid()), k));
            let mut w = Encryptor::for_recipients(message, recipients).build().unwrap();
            for i in 0..n {
                let mut ops = OnePassSig6::new(SignatureType::Binary, cert.fingerprint());
                ops.set_hash_algo(HashAlgorithm::SHA512);
                ops.set_pk_algo(PublicKeyAlgorithm::Ed25519);
                let mut salt = vec![0u8; 32];
                salt[..8].copy_from_slice(&(i as u64).to_be_bytes());
                ops.set_salt(salt);
                ops.set_last(i + 1 == n);
                Packet::from(ops).serialize(&mut w).unwrap();
            }
            let mut lit = LiteralWriter::new(w).build().unwrap();
            lit.write_all(&[0u8; 100_000]).unwrap();
            lit.finalize().unwrap();
            sink
        };
        let started = std::time::Instant::now();
        let err = open(&message(2000), &keys, now()).unwrap_err();
        assert!(err.to_string().contains("more than 16 signatures"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // A few (unverifiable) signatures are not refused for their number.
        let err = open(&message(3), &keys, now()).unwrap_err();
        assert!(!err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn secret_keys_debug_shows_no_key_material() {
        let (_, _, keys, _) = sample();
        let debug = format!("{keys:?}");
        assert!(
            debug.contains("m.key") && debug.contains(&keys_ids(&keys)[0]),
            "{debug}"
        );
        assert!(!debug.contains("mpis") && !debug.contains("Unencrypted"), "{debug}");
    }

    #[test]
    fn too_many_session_keys_are_refused() {
        let (_, bin, _, _) = sample();
        let packets = frame(&bin).unwrap();
        let pkesk = &bin[packets[0].range.clone()];
        let seipd = &bin[packets.last().unwrap().range.clone()];
        let message = |n: usize| {
            let mut m = pkesk.repeat(n);
            m.extend_from_slice(seipd);
            m
        };
        assert_eq!(
            validate_message(&message(MAX_SESSION_KEYS)).unwrap().key_ids.len(),
            MAX_SESSION_KEYS
        );
        let err = validate_message(&message(MAX_SESSION_KEYS + 1)).unwrap_err();
        assert!(
            err.to_string().contains("more than 128 encrypted session keys"),
            "{err}"
        );
    }

    #[test]
    fn trailing_data_and_extra_packets_are_refused() {
        let (armored, bin, _, _) = sample();
        let mut m = bin.clone();
        m.push(0);
        assert!(validate_message(&m).is_err());
        let mut m = bin.clone();
        m.extend_from_slice(&bin);
        let err = validate_message(&m).unwrap_err();
        assert!(err.to_string().contains("follows the encrypted data"), "{err}");
        let mut m = armored.clone();
        m.extend_from_slice(b"\nhello\n");
        assert!(validate_message(&m).is_err());
        let mut m = armored.clone();
        m.extend_from_slice(b"\n\n");
        assert!(validate_message(&m).is_ok());
        let err = validate_message(&vec![b' '; MAX_MESSAGE_BYTES + 1]).unwrap_err();
        assert!(matches!(err, PgpError::TooLarge { .. }), "{err}");
    }

    fn seal_compressed(plaintext_len: usize, set: &RecipientSet) -> Vec<u8> {
        seal_compressed_n(plaintext_len, set, 1)
    }

    fn seal_compressed_n(plaintext_len: usize, set: &RecipientSet, layers: usize) -> Vec<u8> {
        use openpgp::serialize::stream::Compressor;
        use openpgp::types::{CompressionAlgorithm, CompressionLevel};
        let mut sink = Vec::new();
        let message = Message::new(&mut sink);
        let recipients = set
            .keys
            .iter()
            .map(|k| Recipient::new(Features::empty().set_seipdv1(), KeyHandle::from(k.keyid()), k));
        let message = Encryptor::for_recipients(message, recipients).build().unwrap();
        let mut message = message;
        for _ in 0..layers {
            message = Compressor::new(message)
                .algo(CompressionAlgorithm::Zlib)
                .level(CompressionLevel::best())
                .build()
                .unwrap();
        }
        let mut w = LiteralWriter::new(message).build().unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut left = plaintext_len;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        w.finalize().unwrap();
        sink
    }

    #[test]
    fn compressed_messages_open_up_to_the_plaintext_cap() {
        let cert = new_cert("z <z@example.com>");
        let set = check_recipients(&[cert.clone().strip_secret_key_material()], now(), far()).unwrap();
        let keys = SecretKeys::parse(&secret_bytes(&cert), "z.key", None).unwrap();
        let small = seal_compressed(1000, &set);
        assert_eq!(&*open(&small, &keys, now()).unwrap(), &[0u8; 1000][..]);
        let at_cap = seal_compressed(MAX_PLAINTEXT_BYTES, &set);
        assert_eq!(open(&at_cap, &keys, now()).unwrap().len(), MAX_PLAINTEXT_BYTES);
        let bomb = seal_compressed(32 << 20, &set);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let err = open(&bomb, &keys, now()).unwrap_err();
        assert!(matches!(err, PgpError::PlaintextTooLarge { .. }), "{err}");
        let nested = seal_compressed_n(1000, &set, 2);
        let err = open(&nested, &keys, now()).unwrap_err();
        assert!(err.to_string().contains("compressed more than once"), "{err}");
    }

    #[test]
    fn mutated_certificates_never_panic() {
        let cert = new_cert("k <k@example.com>");
        let mut bin = Vec::new();
        cert.serialize(&mut bin).unwrap();
        let check = |m: &[u8]| {
            if let Ok(certs) = parse_certs(m, "k.asc") {
                let _ = check_recipients(&certs, now(), far());
            }
        };
        for n in 0..bin.len() {
            check(&bin[..n]);
        }
        for i in 0..bin.len() {
            let mut m = bin.clone();
            m[i] ^= 0x01;
            check(&m);
        }
    }

    #[test]
    fn oversized_keyrings_are_refused() {
        let err = parse_certs(&vec![b'x'; MAX_CERT_BYTES + 1], "big.asc").unwrap_err();
        assert!(err.to_string().contains("big.asc"), "{err}");
        assert!(err.to_string().contains("limit"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        #[test]
        fn random_mutations_never_panic_nor_yield_other_plaintext(
            edits in proptest::collection::vec((0usize..4096, 0u8..=255, 0u8..3), 1..6)
        ) {
            use std::sync::OnceLock;
            static SAMPLE: OnceLock<Sample> = OnceLock::new();
            let (_, bin, keys, plaintext) = SAMPLE.get_or_init(sample);
            let mut m = bin.clone();
            for (at, byte, op) in edits {
                let at = at % (m.len() + 1);
                match op {
                    0 if at < m.len() => m[at] = byte,
                    1 => m.insert(at, byte),
                    _ if at < m.len() => { m.remove(at); }
                    _ => m.push(byte),
                }
            }
            assert_opens_cleanly(&m, keys, plaintext, "random mutation");
        }
    }
}
