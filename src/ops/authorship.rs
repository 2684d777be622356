//! The signer rules every writing operation follows, in one place: once the
//! repo has allowed signers (`.rekey/signers.asc`), a signing key is
//! required and must be one of them, and a secret is trusted (rewritten,
//! kept as previous, rolled back) only when its statement verifies.

use crate::secrets_repo::authorship::{self, OnDisk};
use crate::secrets_repo::layout;
use crate::secrets_repo::signing::{AllowedSigners, SigningKey};
use crate::secrets_repo::store::Store;
use std::time::SystemTime;

/// Reads the allowed signers and checks `key` against them, before
/// anything is written: with signers, a key is required and must be
/// allowed. Returns the signers (`None` when the repo has none).
pub fn require_signer(store: &Store, key: Option<&SigningKey>) -> anyhow::Result<Option<AllowedSigners>> {
    let Some(signers) = store.read_signers()? else {
        return Ok(None);
    };
    match key {
        None => anyhow::bail!(
            "{} exists, so every secret must be signed: give --signing-key FILE or --signing-key-env NAME",
            store.root().join(layout::SIGNERS_FILE).display()
        ),
        Some(key) => authorship::check_allowed(key, &signers)?,
    }
    Ok(Some(signers))
}

/// Fails unless the secret on disk is signed by an allowed signer and its
/// files are those its statement hashes (when the repo has signers).
pub fn verify_on_disk(
    store: &Store,
    signers: Option<&AllowedSigners>,
    disk: &OnDisk<'_>,
    now: SystemTime,
) -> anyhow::Result<()> {
    let Some(signers) = signers else {
        return Ok(());
    };
    authorship::verify(disk.meta, disk.active, disk.previous, disk.pending, signers, now).map_err(|e| {
        anyhow::anyhow!(
            "{}: refusing to build on a secret that is not from an allowed signer: {e} (run `rekey sign` after reviewing it, or restore it from history)",
            store.path(&disk.meta.name, layout::Slot::Meta).display()
        )
    })?;
    Ok(())
}
