//! Options shared by the OpenPGP commands: recipient certificates, their
//! validity window, and the secret key with its passphrase source.

use crate::cli::output::Printer;
use crate::cli::secret_input::SecretSource;
use crate::secrets_repo::pgp::{self, RecipientSet, SecretKeys, Validity};
use anyhow::Context;
use sequoia_openpgp::crypto::Password;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long recipient certificates must stay valid.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidityArgs {
    /// Fail when a recipient certificate expires sooner than this (e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_validity: Option<Duration>,
    /// Warn when a recipient certificate expires sooner than this.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30d")]
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
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
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
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&self.key).with_context(|| format!("reading {}", self.key.display()))?,
        );
        let passphrase =
            match SecretSource::from_options(self.passphrase_file.as_deref(), self.passphrase_env.as_deref()) {
                None => None,
                Some(source) => {
                    let raw = source.read()?;
                    let mut value: &[u8] = &raw;
                    if let Some(rest) = value.strip_suffix(b"\n") {
                        value = rest.strip_suffix(b"\r").unwrap_or(rest);
                    }
                    Some(Password::from(value))
                }
            };
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
