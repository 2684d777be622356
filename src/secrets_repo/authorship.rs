//! Signed secrets in the repo: the statement each secret's metadata carries,
//! made when a version is written and verified before it is trusted.
//!
//! Exists so that the writing commands (seal, rotate, rollback, reencrypt,
//! sign) and `check` agree on one thing: what a secret's statement says and
//! how it is checked against the files next to it. The statement lives in
//! the active version's metadata (`active.signed`): the canonical statement
//! text and its armored detached signature. It hashes every ciphertext file
//! of the secret as stored (`current` = `<NAME>.gpg`, `previous` =
//! `<NAME>.previous.gpg`, `pending` = `<NAME>.pending.gpg`): sealing a
//! pending version signs a new statement too, so that it hashes the pending
//! file next to the unchanged current one. A version that becomes `previous` keeps the
//! statement it was published with, as a record of who published it.

use crate::secrets_repo::layout::{Metadata, Rewrite, Signed};
use crate::secrets_repo::signing::{
    self, AllowedSigners, FileHash, FileRole, SignError, Signer, SigningKey, Statement,
};
use chrono::{DateTime, Utc};
use std::time::SystemTime;

/// Returns the statement about `meta`'s active version and the files as
/// they will be stored.
pub fn statement_for(
    meta: &Metadata,
    current: &[u8],
    previous: Option<&[u8]>,
    version: u64,
    restores: Option<u64>,
) -> Statement {
    let mut files = vec![FileHash::of(FileRole::Current, current)];
    if let Some(p) = previous {
        files.push(FileHash::of(FileRole::Previous, p));
    }
    Statement {
        secret: meta.name.clone(),
        region: meta.region.clone(),
        version,
        key_name: meta.active.key_name.clone(),
        key_fingerprint: meta.active.key_fingerprint.clone(),
        iam_key_id: meta.active.iam_key_id.clone(),
        rotated_at: meta.active.rotated_at,
        restores,
        files,
    }
}

/// The ciphertext files of a secret as they will be stored, for a statement.
pub struct Files<'a> {
    pub current: &'a [u8],
    pub previous: Option<&'a [u8]>,
    pub pending: Option<&'a [u8]>,
}

/// Signs `meta`'s active version: a statement numbered `version` over the
/// files (as they will be stored), signed by `key` at `now`, stored in
/// `meta.active.signed`.
pub fn sign_meta(
    meta: &mut Metadata,
    files: Files<'_>,
    version: u64,
    restores: Option<u64>,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<(), SignError> {
    let mut st = statement_for(meta, files.current, files.previous, version, restores);
    if let Some(p) = files.pending {
        st.files.push(FileHash::of(FileRole::Pending, p));
    }
    let (bytes, sig) = signing::sign_statement(&st, key, now.into())?;
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| SignError::Sign("not UTF-8".to_owned()));
    meta.active.signed = Some(Signed {
        statement: text(bytes)?,
        signature: text(sig)?,
    });
    Ok(())
}

/// What is on disk of a secret before a rewrite: its metadata and files.
pub struct OnDisk<'a> {
    pub meta: &'a Metadata,
    pub active: &'a [u8],
    pub previous: Option<&'a [u8]>,
    pub pending: Option<&'a [u8]>,
}

/// Signs a planned rewrite: the files it writes, or else those on disk.
/// The version number is one more than any the secret's metadata (old or
/// new) claims.
pub fn sign_rewrite(
    rewrite: &mut Rewrite,
    on_disk: Option<&OnDisk<'_>>,
    restores: Option<u64>,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<(), SignError> {
    let missing = |what: &str| SignError::Statement(format!("{}: no {what} ciphertext to hash", rewrite.meta.name));
    let current: Vec<u8> = match (&rewrite.active, on_disk) {
        (Some(b), _) => b.clone(),
        (None, Some(d)) => d.active.to_vec(),
        (None, None) => return Err(missing("current")),
    };
    let previous: Option<Vec<u8>> = match (&rewrite.meta.previous, &rewrite.previous, on_disk) {
        (None, _, _) => None,
        (Some(_), Some(b), _) => Some(b.clone()),
        (Some(_), None, Some(OnDisk { previous: Some(p), .. })) => Some(p.to_vec()),
        (Some(_), None, _) => return Err(missing("previous")),
    };
    let pending: Option<Vec<u8>> = match (&rewrite.meta.pending, &rewrite.pending, on_disk) {
        (None, _, _) => None,
        (Some(_), Some(b), _) => Some(b.clone()),
        (Some(_), None, Some(OnDisk { pending: Some(p), .. })) => Some(p.to_vec()),
        (Some(_), None, _) => return Err(missing("pending")),
    };
    let prior = on_disk.map_or(0, |d| d.meta.latest_version());
    let version = prior.max(rewrite.meta.latest_version()) + 1;
    let mut meta = rewrite.meta.clone();
    let files = Files {
        current: &current,
        previous: previous.as_deref(),
        pending: pending.as_deref(),
    };
    sign_meta(&mut meta, files, version, restores, key, now)?;
    rewrite.meta = meta;
    Ok(())
}

/// Verifies a secret with public keys only: its active version's statement
/// is signed by an allowed signer (policy at `now`), hashes exactly the
/// ciphertext files given, and says what the metadata says (name, region,
/// key name and fingerprint, time).
pub fn verify(
    meta: &Metadata,
    current: &[u8],
    previous: Option<&[u8]>,
    pending: Option<&[u8]>,
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<(Statement, Signer), SignError> {
    let Some(signed) = &meta.active.signed else {
        return Err(SignError::NoSignature);
    };
    let mut files: Vec<(FileRole, &[u8])> = vec![(FileRole::Current, current)];
    if let Some(p) = previous {
        files.push((FileRole::Previous, p));
    }
    if let Some(p) = pending {
        files.push((FileRole::Pending, p));
    }
    let (st, signer) = signing::verify_secret(
        signed.statement.as_bytes(),
        signed.signature.as_bytes(),
        &files,
        signers,
        now,
    )?;
    check_agrees(&st, meta)?;
    previous_vouched(meta, signers, now)?;
    Ok((st, signer))
}

/// Fails unless every IAM id the metadata records (active and previous) is
/// vouched for by the signed statement of its version: what `keys retire`
/// relies on before it deletes or disables keys by id.
pub fn ids_vouched(meta: &Metadata, signers: &AllowedSigners, now: SystemTime) -> Result<(), SignError> {
    // The current version's statement also vouches for its `rotated_at`,
    // from which the previous key's grace period runs: whenever a previous
    // key could be retired, an unsigned edit of the current version (a
    // back-dated `rotated_at`, a removed id) must not start it early.
    let retirable = meta.previous.as_ref().is_some_and(|p| p.iam_key_id.is_some());
    if meta.active.iam_key_id.is_some() || retirable {
        let what = match &meta.active.iam_key_id {
            Some(id) => format!("the current version's iam_key_id `{id}`"),
            None => "the current version's rotated_at (the previous key's grace period runs from it)".to_owned(),
        };
        let st = match signer_of(&meta.active, signers, now) {
            Some(Ok((st, _))) => st,
            Some(Err(e)) => {
                return Err(SignError::Statement(format!(
                    "{what} is not vouched for: its statement does not verify: {e}"
                )));
            }
            None => {
                return Err(SignError::Statement(format!(
                    "{what} is not vouched for: the version carries no signed statement"
                )));
            }
        };
        check_agrees(&st, meta)?;
    }
    previous_vouched(meta, signers, now)
}

/// Fails unless the previous version's IAM id, when the metadata records
/// one, is the one its own signed statement (kept from when it was
/// published) vouches for: `keys retire` disables or deletes the key by
/// that id, so an unsigned edit must not retarget it.
pub fn previous_vouched(meta: &Metadata, signers: &AllowedSigners, now: SystemTime) -> Result<(), SignError> {
    let Some(prev) = &meta.previous else {
        return Ok(());
    };
    let Some(id) = &prev.iam_key_id else {
        return Ok(());
    };
    let unvouched = |why: String| {
        Err(SignError::Statement(format!(
            "the previous version's iam_key_id `{id}` is not vouched for: {why}"
        )))
    };
    let Some(signed) = &prev.signed else {
        return unvouched("the previous version carries no signed statement".to_owned());
    };
    let st = match signing::verify_statement(signed.statement.as_bytes(), signed.signature.as_bytes(), signers, now) {
        Ok((st, _)) => st,
        Err(e) => return unvouched(format!("its statement does not verify: {e}")),
    };
    if st.iam_key_id.as_deref() != Some(id.as_str()) || st.key_fingerprint != prev.key_fingerprint {
        let said = st.iam_key_id.unwrap_or_else(|| "(none)".to_owned());
        return unvouched(format!("its signed statement says iam-key-id `{said}`"));
    }
    Ok(())
}

/// Fails unless the statement says what the metadata says.
pub fn check_agrees(st: &Statement, meta: &Metadata) -> Result<(), SignError> {
    let differ = |field: &str, signed: &str, meta: &str| {
        Err(SignError::Statement(format!(
            "the signed statement says {field} `{signed}`, the metadata says `{meta}`"
        )))
    };
    if st.secret != meta.name {
        return differ("secret", &st.secret, &meta.name);
    }
    if st.region != meta.region {
        return differ("region", &st.region, &meta.region);
    }
    if st.key_fingerprint != meta.active.key_fingerprint {
        return differ("key-fingerprint", &st.key_fingerprint, &meta.active.key_fingerprint);
    }
    if st.key_name != meta.active.key_name {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
        return differ("key-name", &show(&st.key_name), &show(&meta.active.key_name));
    }
    if st.iam_key_id != meta.active.iam_key_id {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
        return differ("iam-key-id", &show(&st.iam_key_id), &show(&meta.active.iam_key_id));
    }
    if st.rotated_at.timestamp() != meta.active.rotated_at.timestamp() {
        return differ(
            "rotated-at",
            &st.rotated_at.to_rfc3339(),
            &meta.active.rotated_at.to_rfc3339(),
        );
    }
    Ok(())
}

/// Verifies only a version's statement signature (no file hashes): who
/// signed it and when, for display (`audit`). `None` when unsigned.
pub fn signer_of(
    version: &crate::secrets_repo::layout::Version,
    signers: &AllowedSigners,
    now: SystemTime,
) -> Option<Result<(Statement, Signer), SignError>> {
    let signed = version.signed.as_ref()?;
    Some(signing::verify_statement(
        signed.statement.as_bytes(),
        signed.signature.as_bytes(),
        signers,
        now,
    ))
}

/// Fails unless `key`'s certificate is one of `signers`: a key that is not
/// allowed would write secrets that `check` refuses.
pub fn check_allowed(key: &SigningKey, signers: &AllowedSigners) -> anyhow::Result<()> {
    let fpr = key.cert().fingerprint();
    if !signers.certs().iter().any(|c| c.fingerprint() == fpr) {
        anyhow::bail!(
            "signing key {} is not an allowed signer in {}: add its certificate there (gpg --export --armor) in a reviewed change first",
            key.name(),
            crate::secrets_repo::layout::SIGNERS_FILE
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets_repo::layout::{Digest, SCHEMA, State, Version};
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::serialize::SerializeInto;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00.750Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn meta() -> Metadata {
        Metadata {
            schema: SCHEMA,
            name: "JP_REGISTRY_PULL_SECRET_64".to_owned(),
            region: "jp".to_owned(),
            active: Version {
                state: State::Current,
                file: "JP_REGISTRY_PULL_SECRET_64.gpg".to_owned(),
                key_name: Some("iks-key-20261124".to_owned()),
                key_fingerprint: "sha256:1a2b3c4d".to_owned(),
                rotated_at: now(),
                recipients: Vec::new(),
                recipient_key_ids: Vec::new(),
                rekey_version: "0".to_owned(),
                plaintext_digest: Digest::compute(&[1; 32], b"x"),
                iam_key_id: None,
                retired_at: None,
                retired_how: None,
                rolled_back_at: None,
                signed: None,
            },
            previous: None,
            pending: None,
        }
    }

    /// Rotates signed version 1 (`first`, ciphertext `v1`, served alone) to
    /// version 2 (`v2`, with IAM id `iam_key_id`): version 1 becomes
    /// previous with its statement, and version 2 is signed.
    fn next_version(first: &Metadata, iam_key_id: Option<&str>, key: &SigningKey) -> Rewrite {
        let mut meta = first.clone();
        let mut prev = meta.active.clone();
        prev.state = State::Previous;
        prev.file = "JP_REGISTRY_PULL_SECRET_64.previous.gpg".to_owned();
        meta.previous = Some(prev);
        meta.active.signed = None;
        if let Some(id) = iam_key_id {
            meta.active.iam_key_id = Some(id.to_owned());
        }
        let mut second = Rewrite {
            meta,
            active: Some(b"v2".to_vec()),
            previous: Some(b"v1".to_vec()),
            pending: None,
        };
        let disk = OnDisk {
            meta: first,
            active: b"v1",
            previous: None,
            pending: None,
        };
        sign_rewrite(&mut second, Some(&disk), None, key, now()).unwrap();
        second
    }

    fn signer() -> (SigningKey, AllowedSigners) {
        let cert = CertBuilder::new()
            .add_userid("ci <ci@example.com>")
            .add_signing_subkey()
            .set_creation_time(std::time::SystemTime::from(now()) - std::time::Duration::from_secs(3600))
            .generate()
            .unwrap()
            .0;
        let key = SigningKey::parse(&cert.as_tsk().armored().to_vec().unwrap(), "k", None, now().into()).unwrap();
        let allowed = AllowedSigners::parse(&cert.armored().to_vec().unwrap(), "signers").unwrap();
        (key, allowed)
    }

    #[test]
    fn a_signed_rewrite_verifies_and_any_disagreement_is_named() {
        let (key, allowed) = signer();
        let mut rw = Rewrite {
            meta: meta(),
            active: Some(b"ciphertext".to_vec()),
            previous: None,
            pending: None,
        };
        sign_rewrite(&mut rw, None, None, &key, now()).unwrap();
        let t = now().into();
        let (st, who) = verify(&rw.meta, b"ciphertext", None, None, &allowed, t).unwrap();
        assert_eq!(st.version, 1);
        assert_eq!(who.name.user_id, "ci <ci@example.com>");
        // The metadata's sub-second time is in the statement to the second.
        assert!(st.encode().unwrap().windows(20).any(|w| w == b"2026-11-24T10:00:00Z"));

        let err = verify(&rw.meta, b"other", None, None, &allowed, t).unwrap_err();
        assert!(matches!(err, SignError::HashMismatch { .. }), "{err}");
        let err = verify(&rw.meta, b"ciphertext", Some(b"old"), None, &allowed, t).unwrap_err();
        assert!(err.to_string().contains("previous ciphertext"), "{err}");
        let mut other = rw.meta.clone();
        other.active.key_fingerprint = "sha256:ffffffff".to_owned();
        let err = verify(&other, b"ciphertext", None, None, &allowed, t).unwrap_err();
        assert!(err.to_string().contains("key-fingerprint `sha256:1a2b3c4d`"), "{err}");
        let mut unsigned = rw.meta.clone();
        unsigned.active.signed = None;
        assert!(matches!(
            verify(&unsigned, b"ciphertext", None, None, &allowed, t),
            Err(SignError::NoSignature)
        ));
        assert!(matches!(
            verify(&rw.meta, b"ciphertext", None, None, &AllowedSigners::none(), t),
            Err(SignError::UnknownSigner { .. })
        ));
    }

    #[test]
    fn versions_count_up_from_everything_the_metadata_holds() {
        let (key, _) = signer();
        let mut first = Rewrite {
            meta: meta(),
            active: Some(b"v1".to_vec()),
            previous: None,
            pending: None,
        };
        sign_rewrite(&mut first, None, None, &key, now()).unwrap();
        // A new version: the old one becomes previous, keeping its statement (1).
        let second = next_version(&first.meta, None, &key);
        assert_eq!(second.meta.active.statement_version(), Some(2));
        assert_eq!(second.meta.latest_version(), 2);
        // A rewrite naming a previous version with no bytes anywhere is refused.
        let mut broken = Rewrite {
            meta: second.meta.clone(),
            active: Some(b"v3".to_vec()),
            previous: None,
            pending: None,
        };
        let err = sign_rewrite(&mut broken, None, None, &key, now()).unwrap_err();
        assert!(err.to_string().contains("no previous ciphertext"), "{err}");
    }

    #[test]
    fn iam_ids_count_only_when_their_versions_statement_vouches_for_them() {
        let (key, allowed) = signer();
        let t = now().into();
        let mut m = meta();
        m.active.iam_key_id = Some("ApiKey-one".to_owned());
        let mut first = Rewrite {
            meta: m,
            active: Some(b"v1".to_vec()),
            previous: None,
            pending: None,
        };
        sign_rewrite(&mut first, None, None, &key, now()).unwrap();
        ids_vouched(&first.meta, &allowed, t).unwrap();
        let st = verify(&first.meta, b"v1", None, None, &allowed, t).unwrap().0;
        assert_eq!(st.iam_key_id.as_deref(), Some("ApiKey-one"));
        // The active id edited after signing.
        let mut edited = first.meta.clone();
        edited.active.iam_key_id = Some("ApiKey-other".to_owned());
        let err = verify(&edited, b"v1", None, None, &allowed, t).unwrap_err();
        assert!(err.to_string().contains("iam-key-id `ApiKey-one`"), "{err}");
        assert!(ids_vouched(&edited, &allowed, t).is_err());
        // Rotated: version 1 becomes previous with its statement; then its id is edited.
        let second = next_version(&first.meta, Some("ApiKey-two"), &key);
        verify(&second.meta, b"v2", Some(b"v1"), None, &allowed, t).unwrap();
        ids_vouched(&second.meta, &allowed, t).unwrap();
        let mut retarget = second.meta.clone();
        if let Some(p) = retarget.previous.as_mut() {
            p.iam_key_id = Some("ApiKey-two".to_owned());
        }
        let err = verify(&retarget, b"v2", Some(b"v1"), None, &allowed, t).unwrap_err();
        assert!(
            err.to_string()
                .contains("previous version's iam_key_id `ApiKey-two` is not vouched for"),
            "{err}"
        );
        assert!(ids_vouched(&retarget, &allowed, t).is_err());
        // A previous id on a version that was never signed is not vouched for.
        let mut unsigned = second.meta.clone();
        if let Some(p) = unsigned.previous.as_mut() {
            p.signed = None;
        }
        assert!(previous_vouched(&unsigned, &allowed, t).is_err());
    }
}
