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
use openpgp::parse::stream::{DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{Features, RevocationStatus, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle, KeyID, Packet};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

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
    if set.keys.is_empty() {
        return Err(PgpError::NoRecipients);
    }
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
        let message = Encryptor::for_recipients(message, recipients)
            .symmetric_algo(SymmetricAlgorithm::AES256)
            .build()
            .map_err(err)?;
        let mut writer = LiteralWriter::new(message).build().map_err(err)?;
        writer.write_all(plaintext).map_err(|e| err(e.into()))?;
        writer.finalize().map_err(err)?;
    }
    Ok(sink)
}

/// Returns the key IDs (upper-case hex; `*` for an anonymous recipient) that
/// the message's session keys are addressed to, without any private key.
pub fn addressed_key_ids(message: &[u8]) -> Result<Vec<String>, PgpError> {
    let bad = |e: anyhow::Error| PgpError::NotAMessage(format!("{e:#}"));
    let mut ppr = PacketParser::from_bytes(message).map_err(bad)?;
    let mut ids = Vec::new();
    let mut encrypted = false;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => ids.push(
                p.recipient()
                    .map(|h| KeyID::from(&h).to_hex())
                    .unwrap_or_else(|| "*".to_owned()),
            ),
            Packet::SKESK(_) => {}
            Packet::SEIP(_) => {
                encrypted = true;
                break;
            }
            other => {
                return Err(PgpError::NotAMessage(format!(
                    "found a {} packet where encrypted data was expected",
                    other.tag()
                )));
            }
        }
        ppr = pp.next().map_err(bad)?.1;
    }
    if !encrypted {
        return Err(PgpError::NotAMessage("no encrypted data packet".to_owned()));
    }
    Ok(ids)
}

/// Unlocked secret keys to decrypt with.
#[derive(Debug)]
pub struct SecretKeys {
    keys: Vec<Key<SecretParts, UnspecifiedRole>>,
    source_name: String,
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

struct Helper<'a> {
    keys: &'a SecretKeys,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // Called after the whole message was read: refuse plain (unencrypted) data.
        match structure.into_iter().next() {
            Some(MessageLayer::Encryption { .. }) => Ok(()),
            _ => Err(anyhow::anyhow!("the message is not encrypted")),
        }
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
pub fn open(message: &[u8], keys: &SecretKeys, now: SystemTime) -> Result<Zeroizing<Vec<u8>>, PgpError> {
    let addressed = addressed_key_ids(message)?;
    if !keys.matching(&addressed) {
        return Err(PgpError::WrongKey {
            addressed: if addressed.is_empty() {
                "(none)".to_owned()
            } else {
                addressed.join(", ")
            },
            source_name: keys.source_name.clone(),
        });
    }
    let policy = StandardPolicy::new();
    let bad = |e: anyhow::Error| PgpError::Open(format!("{e:#}"));
    let mut decryptor = DecryptorBuilder::from_bytes(message)
        .map_err(bad)?
        .with_policy(&policy, now, Helper { keys })
        .map_err(bad)?;
    let mut plaintext = Zeroizing::new(Vec::new());
    decryptor
        .read_to_end(&mut plaintext)
        .map_err(|e| PgpError::Open(e.to_string()))?;
    if !decryptor.message_processed() {
        return Err(PgpError::Open("the message ended early".to_owned()));
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
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
}
