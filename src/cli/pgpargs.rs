//! Options shared by the OpenPGP commands: recipient certificates, their
//! validity window, and the secret key with its passphrase source.

use crate::cli::output::Printer;
use crate::cli::secret_input::SecretSource;
use crate::secrets_repo::pgp::{self, RecipientSet, SecretKeys, Validity};
use crate::secrets_repo::signing::{AllowedSigners, SigningKey};
use anyhow::Context;
use sequoia_openpgp::crypto::Password;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long recipient certificates must stay valid.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidityArgs {
    /// Fail when a recipient certificate expires sooner than this (e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::duration::parse)]
    pub min_validity: Option<Duration>,
    /// Warn when a recipient certificate expires sooner than this.
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::duration::parse, default_value = "30d")]
    pub warn_validity: Duration,
}

impl ValidityArgs {
    /// Returns the core's view of these options.
    pub fn validity(&self) -> Validity {
        Validity {
            min: self.min_validity,
            warn: self.warn_validity,
        }
    }
}

/// Reads every certificate in `files`, checks them against the recipient
/// policy at `now`, and warns about those that expire soon.
pub fn load_recipients(
    printer: &Printer,
    files: &[PathBuf],
    validity: &ValidityArgs,
    now: SystemTime,
) -> anyhow::Result<RecipientSet> {
    let mut certs = Vec::new();
    for file in files {
        let bytes = read_bounded(file, pgp::MAX_CERT_BYTES)?;
        certs.extend(pgp::parse_certs(&bytes, &file.display().to_string())?);
    }
    let set = pgp::check_recipients(&certs, now, validity.validity()).context("checking the recipients")?;
    warn_expiring(printer, &set);
    Ok(set)
}

/// Warns once per recipient that expires within the warning window.
pub fn warn_expiring(printer: &Printer, set: &RecipientSet) {
    for c in &set.expiring_soon {
        if let Some(exp) = c.expires {
            printer.warn(format_args!(
                "recipient certificate {} expires at {}",
                c.name,
                pgp::show_time(exp)
            ));
        }
    }
}

/// The secret key file and where its passphrase comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretKeyArgs {
    /// The secret key (e.g. `gpg --export-secret-keys --armor`) to decrypt with.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Read the secret key's passphrase from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_env")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the secret key's passphrase from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub passphrase_env: Option<String>,
}

impl SecretKeyArgs {
    /// Reads and unlocks the secret keys.
    pub fn load(&self) -> anyhow::Result<SecretKeys> {
        let bytes = SecretSource::File(self.key.clone()).read_limited(pgp::MAX_CERT_BYTES)?;
        let passphrase = read_passphrase(self.passphrase_file.as_deref(), self.passphrase_env.as_deref())?;
        Ok(SecretKeys::parse(
            &bytes,
            &self.key.display().to_string(),
            passphrase.as_ref(),
        )?)
    }
}

/// Reads a file that holds plain text, into memory that is cleared on drop.
pub fn read_plaintext(path: &Path) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    Ok(zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// Reads a passphrase from a file or an environment variable, ignoring one
/// trailing newline.
fn read_passphrase(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<Option<Password>> {
    let Some(source) = SecretSource::from_options(file, env) else {
        return Ok(None);
    };
    let raw = source.read_limited(64 * 1024)?;
    let mut value: &[u8] = &raw;
    if let Some(rest) = value.strip_suffix(b"\n") {
        value = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    Ok(Some(Password::from(value)))
}

/// Reads a file rekey treats as untrusted input, refusing one larger than
/// `limit` bytes (the error names the file) before reading it all.
pub fn read_bounded(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = Vec::new();
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() > limit {
        anyhow::bail!("{}: larger than the limit of {limit} bytes", path.display());
    }
    tracing::debug!("read {} ({} bytes)", path.display(), buf.len());
    Ok(buf)
}

/// The key that signs what rekey seals, and where its passphrase comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SigningKeyArgs {
    /// Sign with the armored secret key in FILE (`gpg --export-secret-keys --armor SIGNER`).
    #[arg(long, value_name = "FILE", conflicts_with = "signing_key_env")]
    pub signing_key: Option<PathBuf>,
    /// Read the armored secret signing key from the environment variable NAME (for CI).
    #[arg(long, value_name = "NAME")]
    pub signing_key_env: Option<String>,
    /// Read the signing key's passphrase from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE", conflicts_with = "signing_passphrase_env")]
    pub signing_passphrase_file: Option<PathBuf>,
    /// Read the signing key's passphrase from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub signing_passphrase_env: Option<String>,
}

impl SigningKeyArgs {
    /// Reads, checks (signer policy at `now`) and unlocks the signing key;
    /// `None` when no signing key is given.
    pub fn load(&self, now: SystemTime) -> anyhow::Result<Option<SigningKey>> {
        let Some(source) = SecretSource::from_options(self.signing_key.as_deref(), self.signing_key_env.as_deref())
        else {
            if self.signing_passphrase_file.is_some() || self.signing_passphrase_env.is_some() {
                anyhow::bail!("a signing passphrase is given without --signing-key or --signing-key-env");
            }
            return Ok(None);
        };
        let bytes = source.read_limited(pgp::MAX_CERT_BYTES)?;
        let passphrase = read_passphrase(
            self.signing_passphrase_file.as_deref(),
            self.signing_passphrase_env.as_deref(),
        )?;
        let key = SigningKey::parse(&bytes, &source.describe(), passphrase.as_ref(), now)
            .with_context(|| format!("reading the signing key from {}", source.describe()))?;
        Ok(Some(key))
    }
}

/// Reads the allowed signers' certificates from `path`.
pub fn load_signers(path: &Path) -> anyhow::Result<AllowedSigners> {
    let bytes = read_bounded(path, pgp::MAX_CERT_BYTES)?;
    Ok(AllowedSigners::parse(&bytes, &path.display().to_string())?)
}
