//! One API key per region: `--api-keys-dir DIR` (holding `<region>.key`),
//! `--api-key-file [REGION=]FILE` and `--api-key-env [REGION=]NAME`. A value
//! without `REGION=` is the key of every region that has no key of its own.

use crate::cli::secret_input::SecretSource;
use crate::pullsecret::catalog::Region;
use crate::secret::ApiKey;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where each region's API key is read from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegionKeyArgs {
    /// Read each region's key from DIR/<region>.key.
    #[arg(long, value_name = "DIR")]
    pub api_keys_dir: Option<PathBuf>,
    /// Read a key from FILE (`-` reads stdin); REGION=FILE for one region (repeatable).
    #[arg(long, value_name = "[REGION=]FILE")]
    pub api_key_file: Vec<String>,
    /// Read a key from the environment variable NAME; REGION=NAME for one region (repeatable).
    #[arg(long, value_name = "[REGION=]NAME")]
    pub api_key_env: Vec<String>,
}

/// Splits `REGION=VALUE` when REGION is one of `regions`; otherwise the whole text is the value.
fn split<'a>(raw: &'a str, regions: &[&Region]) -> (Option<&'a str>, &'a str) {
    if let Some((name, value)) = raw.split_once('=')
        && regions.iter().any(|r| r.name == name)
    {
        return (Some(name), value);
    }
    (None, raw)
}

impl RegionKeyArgs {
    /// Returns true when no key source is given at all.
    pub fn is_empty(&self) -> bool {
        self.api_keys_dir.is_none() && self.api_key_file.is_empty() && self.api_key_env.is_empty()
    }

    /// Reads one key for each of `regions`. Every region must get exactly
    /// one key; a `REGION=` naming a region not being handled is refused.
    pub fn read(&self, regions: &[&Region]) -> anyhow::Result<BTreeMap<String, ApiKey>> {
        let mut sources: BTreeMap<String, SecretSource> = BTreeMap::new();
        let mut default: Option<SecretSource> = None;
        let mut add = |flag: &str, raw: &str, make: fn(&str) -> SecretSource| -> anyhow::Result<()> {
            let (region, value) = split(raw, regions);
            if value.is_empty() {
                bail!("--{flag} `{raw}`: nothing after `=`");
            }
            match region {
                Some(name) => {
                    if sources.insert(name.to_owned(), make(value)).is_some() {
                        bail!("--{flag}: region `{name}` is given a key twice");
                    }
                }
                None => {
                    if let Some((name, _)) = raw.split_once('=')
                        && !name.contains('/')
                        && !Path::new(raw).exists()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    {
                        bail!("--{flag} `{raw}`: `{name}` is not a region being handled");
                    }
                    if default.replace(make(value)).is_some() {
                        bail!("--{flag}: more than one key for all regions; use REGION=… for per-region keys");
                    }
                }
            }
            Ok(())
        };
        for raw in &self.api_key_file {
            add("api-key-file", raw, |v| SecretSource::File(PathBuf::from(v)))?;
        }
        for raw in &self.api_key_env {
            add("api-key-env", raw, |v| SecretSource::Env(v.to_owned()))?;
        }
        let mut keys = BTreeMap::new();
        for region in regions {
            let source = match (sources.remove(&region.name), &self.api_keys_dir) {
                (Some(s), _) => s,
                (None, Some(dir)) if dir.join(format!("{}.key", region.name)).exists() => {
                    SecretSource::File(dir.join(format!("{}.key", region.name)))
                }
                (None, _) => match &default {
                    Some(s) => s.clone(),
                    None => bail!(
                        "no API key for region `{}`: give --api-keys-dir with {}.key, --api-key-file {}=FILE or --api-key-env {}=NAME",
                        region.name,
                        region.name,
                        region.name,
                        region.name
                    ),
                },
            };
            let raw = source.read()?;
            let key = ApiKey::parse(raw).with_context(|| {
                format!(
                    "the key of region `{}` from {} is not usable",
                    region.name,
                    source.describe()
                )
            })?;
            keys.insert(region.name.clone(), key);
        }
        Ok(keys)
    }
}
