//! The `--api-key-file` / `--api-key-env` options shared by every command
//! that needs the API key being rotated.

use crate::cli::secret_input::SecretSource;
use crate::secret::ApiKey;
use anyhow::Context;
use std::path::PathBuf;

/// Where to read the API key: exactly one of a file (or stdin) and an environment variable.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct KeyArgs {
    /// Read the API key from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Read the API key from the environment variable NAME.
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,
}

impl KeyArgs {
    /// Reads and validates the API key.
    pub fn read(&self) -> anyhow::Result<ApiKey> {
        let source = SecretSource::from_options(self.api_key_file.as_deref(), self.api_key_env.as_deref())
            .context("no API key source given: use --api-key-file or --api-key-env")?;
        let raw = source.read()?;
        ApiKey::parse(raw).with_context(|| format!("API key from {} is not usable", source.describe()))
    }
}
