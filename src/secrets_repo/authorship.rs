//! Signed secrets in the repo: the statement each secret's metadata carries,
//! made when a version is written and verified before it is trusted.
//!
//! Exists so that the writing commands (seal, rotate, rollback, reencrypt,
//! sign) and `check` agree on one thing: what a secret's statement says and
//! how it is checked against the files next to it. The statement lives in
//! the active version's metadata (`active.signed`): the canonical statement
//! text and its armored detached signature. It hashes every ciphertext file
//! of the secret as stored (`current` = `<NAME>.gpg`, `previous` =
//! `<NAME>.previous.gpg`). A version that becomes `previous` keeps the
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
        rotated_at: meta.active.rotated_at,
        restores,
        files,
    }
}

/// Signs `meta`'s active version: a statement numbered `version` over the
/// files `current` and `previous` (as they will be stored), signed by `key`
/// at `now`, stored in `meta.active.signed`.
pub fn sign_meta(
    meta: &mut Metadata,
    current: &[u8],
    previous: Option<&[u8]>,
    version: u64,
    restores: Option<u64>,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<(), SignError> {
    let st = statement_for(meta, current, previous, version, restores);
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
    let prior = on_disk.map_or(0, |d| d.meta.latest_version());
    let version = prior.max(rewrite.meta.latest_version()) + 1;
    let mut meta = rewrite.meta.clone();
    sign_meta(&mut meta, &current, previous.as_deref(), version, restores, key, now)?;
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
    let (st, signer) = signing::verify_secret(
        signed.statement.as_bytes(),
        signed.signature.as_bytes(),
        &files,
        signers,
        now,
    )?;
    check_agrees(&st, meta)?;
    Ok((st, signer))
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
