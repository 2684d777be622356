//! Reading secrets from where the user keeps them: a file, stdin or a named
//! environment variable. Never from argv, where `ps` and shell history see them.

use anyhow::Context;
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where a secret is read from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// A file; `-` means stdin.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

impl SecretSource {
    /// Returns the source from a pair of mutually exclusive `--x-file` / `--x-env` options.
    pub fn from_options(file: Option<&Path>, env: Option<&str>) -> Option<SecretSource> {
        match (file, env) {
            (Some(f), _) => Some(SecretSource::File(f.to_owned())),
            (None, Some(e)) => Some(SecretSource::Env(e.to_owned())),
            (None, None) => None,
        }
    }

    /// Describes the source for messages (`file key.txt`, `stdin`, `environment variable X`).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(p) if p.as_os_str() == "-" => "stdin".to_owned(),
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(name) => format!("environment variable {name}"),
        }
    }

    /// Reads the secret's bytes.
    pub fn read(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        self.read_limited(usize::MAX)
    }

    /// Reads the secret's bytes, refusing more than `limit` of them.
    pub fn read_limited(&self, limit: usize) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(Vec::new());
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        match self {
            SecretSource::File(p) if p.as_os_str() == "-" => {
                std::io::stdin()
                    .lock()
                    .take(cap)
                    .read_to_end(&mut buf)
                    .context("reading stdin")?;
            }
            SecretSource::File(p) => {
                let f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
                f.take(cap)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("reading {}", p.display()))?;
            }
            SecretSource::Env(name) => {
                use std::os::unix::ffi::OsStringExt;
                let value =
                    std::env::var_os(name).with_context(|| format!("environment variable {name} is not set"))?;
                crate::childenv::mark_secret(name);
                *buf = value.into_vec();
            }
        }
        if buf.len() > limit {
            anyhow::bail!("{} holds more than {limit} bytes", self.describe());
        }
        Ok(buf)
    }
}
