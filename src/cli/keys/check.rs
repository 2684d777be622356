//! `rekey keys check`: asks IAM whether each region's key is valid.

use crate::cli::iamargs::IamAccess;
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::SecretKeyArgs;
use crate::cli::regionkeys::RegionKeyArgs;
use crate::exit::Exit;
use crate::iam::{self, KeyClass, KeyStatus};
use crate::pullsecret::catalog::{Catalog, Region};
use crate::pullsecret::{dockerconfig, keyname};
use crate::secret::ApiKey;
use crate::secrets_repo::layout::{self, Slot};
use crate::secrets_repo::pgp;
use crate::secrets_repo::store::Store;
use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Ask IBM Cloud IAM whether each region's API key is valid.
///
/// Exchanges each key for a token at IAM (POST /identity/token) and, with an
/// admin key, reads its details (GET /v1/apikeys/details): IAM id, name,
/// creation date and state. Each key is valid, invalid (IAM does not know
/// it), disabled, locked, expired or iam_unreachable. A key whose IAM name
/// does not carry its region's key code is reported. Exits 0 when every key
/// is valid, 1 when one is not, 2 when IAM cannot be reached.
///
/// The keys come from the same inputs as rotate (--api-keys-dir,
/// --api-key-file, --api-key-env), or, with --repo and --key, from the
/// repo's current secrets: each region's <NAME>.gpg is decrypted in memory
/// and every entry must carry the same key. Then a metadata fingerprint
/// that is not the decrypted key's, and a recorded iam_key_id that is not
/// the id IAM reports for the key, are reported too.
///
/// Example:
///   rekey keys check --regions regions --api-keys-dir keys
///   rekey keys check --regions regions --repo secrets --key operator.sec.asc \
///       --passphrase-env OPERATOR_PASSPHRASE --iam-api-key-env IAM_ADMIN_KEY
///   rekey keys check --regions regions --api-key-env NEW_KEY --region jp \
///       --iam-api-key-env IAM_ADMIN_KEY --output json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The region catalog directory (one TOML file per region).
    #[arg(long, value_name = "DIR")]
    pub regions: PathBuf,
    /// Check only this region (repeatable; default: every region).
    #[arg(long = "region", value_name = "NAME")]
    pub regions_selected: Vec<String>,
    #[command(flatten)]
    pub keys: RegionKeyArgs,
    /// Check the keys in this secrets repo's current secrets (needs --key to decrypt them).
    #[arg(
        long,
        value_name = "DIR",
        requires = "key",
        conflicts_with_all = ["api_keys_dir", "api_key_file", "api_key_env"]
    )]
    pub repo: Option<PathBuf>,
    /// The secret key (e.g. `gpg --export-secret-keys --armor`) that decrypts --repo's secrets.
    #[arg(long, value_name = "FILE", requires = "repo")]
    pub key: Option<PathBuf>,
    /// Read the secret key's passphrase from FILE (`-` reads stdin); one trailing newline is ignored.
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "passphrase_env")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the secret key's passphrase from the environment variable NAME.
    #[arg(long, value_name = "NAME", requires = "key")]
    pub passphrase_env: Option<String>,
    #[command(flatten)]
    pub iam: IamAccess,
}

/// What the repo's metadata says of a region's current key.
struct Recorded {
    key_fingerprint: String,
    iam_key_id: Option<String>,
}

/// Reads each region's key from its current secret in `repo`: decrypted
/// in memory, every entry carrying the same key.
fn repo_keys(
    repo: &Path,
    secret: &SecretKeyArgs,
    regions: &[&Region],
) -> anyhow::Result<(BTreeMap<String, ApiKey>, BTreeMap<String, Recorded>)> {
    let store = Store::new(repo);
    // Every secret is found before the key is unlocked.
    let mut metas = Vec::with_capacity(regions.len());
    for region in regions {
        let name = layout::secret_name(&region.name);
        let Some(meta) = store.read_meta(&name)? else {
            bail!(
                "{}: missing: the repo has no secret for region {} (choose regions with --region)",
                store.path(&name, Slot::Meta).display(),
                region.name
            );
        };
        metas.push((region, name, meta));
    }
    let secret_keys = secret.load()?;
    let now = std::time::SystemTime::now();
    let mut keys = BTreeMap::new();
    let mut recorded = BTreeMap::new();
    for (region, name, meta) in metas {
        let path = store.path(&name, Slot::Active);
        let shown = path.display();
        let bytes = store.read_file(&name, Slot::Active)?;
        let plain = pgp::open(&bytes, &secret_keys, now).with_context(|| format!("decrypting {shown}"))?;
        let config = dockerconfig::parse(&plain).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        let mut found: BTreeMap<String, ApiKey> = BTreeMap::new();
        for (host, entry) in &config.auths {
            let (_, password) = entry
                .credential()
                .map_err(|e| anyhow::anyhow!("{shown}: the entry for {} {e}", host.escape_debug()))?;
            let key = ApiKey::from_str_checked(password.expose_secret()).map_err(|e| {
                anyhow::anyhow!(
                    "{shown}: the key of the entry for {} is not usable: {e}",
                    host.escape_debug()
                )
            })?;
            found.entry(key.fingerprint().to_string()).or_insert(key);
        }
        if found.len() > 1 {
            bail!(
                "{shown}: its entries carry {} different keys (`rekey inspect` shows them); one key per region is checked",
                found.len()
            );
        }
        let Some((_, key)) = found.pop_first() else {
            bail!("{shown}: holds no registry entry");
        };
        keys.insert(region.name.clone(), key);
        recorded.insert(
            region.name.clone(),
            Recorded {
                key_fingerprint: meta.active.key_fingerprint,
                iam_key_id: meta.active.iam_key_id,
            },
        );
    }
    Ok((keys, recorded))
}

#[derive(Serialize)]
struct Row {
    region: String,
    key_fingerprint: String,
    #[serde(flatten)]
    status: KeyStatus,
    age_days: Option<i64>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    iam_url: &'a str,
    keys: &'a [Row],
}

/// Runs `rekey keys check`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("keys check", &[OutputFormat::Text, OutputFormat::Json])?;
    let catalog = Catalog::load(&args.regions)?;
    let regions = catalog.select(&args.regions, &args.regions_selected)?;
    let client = args.iam.client()?;
    let (keys, recorded) = match (&args.repo, &args.key) {
        (Some(repo), Some(key)) => {
            let secret = SecretKeyArgs {
                key: key.clone(),
                passphrase_file: args.passphrase_file.clone(),
                passphrase_env: args.passphrase_env.clone(),
            };
            repo_keys(repo, &secret, &regions)?
        }
        (None, Some(_)) => bail!("--key decrypts the secrets of --repo: give --repo DIR, or drop --key"),
        (Some(_), None) => bail!("--repo needs --key to decrypt the secrets"),
        (None, None) => (args.keys.read(&regions)?, BTreeMap::new()),
    };
    let admin = args.iam.admin.read()?;
    let now = chrono::Utc::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = runtime.block_on(async {
        let admin_token = match &admin {
            Some(key) => Some(client.token(key).await.context("the IAM admin key")?),
            None => None,
        };
        let (client, admin_token, keys, recorded) = (&client, admin_token.as_ref(), &keys, &recorded);
        let checks = regions.iter().map(|region| {
            let key = &keys[&region.name];
            async move { (*region, key, iam::classify(client, key, admin_token, now).await) }
        });
        let mut rows = Vec::with_capacity(checks.len());
        for (region, key, status) in futures_util::future::join_all(checks).await {
            let mut problems = Vec::new();
            if let (Some(details), Some(code)) = (&status.details, &region.key_code)
                && !details.name.is_empty()
                && let Err(e) = keyname::check_code(&details.name, &region.name, code)
            {
                problems.push(e);
            }
            if let Some(rec) = recorded.get(&region.name) {
                let fingerprint = key.fingerprint().to_string();
                if rec.key_fingerprint != fingerprint {
                    problems.push(format!(
                        "the metadata's current key is {}, but the secret carries {fingerprint}",
                        rec.key_fingerprint.escape_debug()
                    ));
                }
                if let (Some(id), Some(details)) = (&rec.iam_key_id, &status.details)
                    && !details.id.is_empty()
                    && *id != details.id
                {
                    problems.push(format!(
                        "the metadata records IAM id {}, but IAM reports {} for the key",
                        id.escape_debug(),
                        details.id.escape_debug()
                    ));
                }
            }
            let age_days = status
                .details
                .as_ref()
                .and_then(|d| d.created_at)
                .map(|t| (now - t).num_days());
            rows.push(Row {
                region: region.name.clone(),
                key_fingerprint: key.fingerprint().to_string(),
                status,
                age_days,
                problems,
            });
        }
        anyhow::Ok(rows)
    })?;
    let unreachable = rows.iter().any(|r| r.status.class == KeyClass::IamUnreachable);
    let ok = rows
        .iter()
        .all(|r| r.status.class == KeyClass::Valid && r.problems.is_empty());
    match printer.format() {
        OutputFormat::Json => printer.json(&Report {
            ok,
            iam_url: client.base().as_str(),
            keys: &rows,
        })?,
        _ => render_text(printer, &rows),
    }
    Ok(if unreachable {
        Exit::Error
    } else if ok {
        Exit::Ok
    } else {
        Exit::Problem
    })
}

fn render_text(printer: &Printer, rows: &[Row]) {
    for r in rows {
        let d = r.status.details.as_ref();
        let name = d.map_or("-", |d| d.name.as_str());
        let id = d.map_or("-", |d| d.id.as_str());
        let age = r.age_days.map_or_else(|| "-".to_owned(), |a| format!("{a}d"));
        let state = match d {
            Some(d) if d.disabled => "disabled",
            Some(d) if d.locked => "locked",
            Some(_) => "active",
            None => "-",
        };
        printer.line(format_args!(
            "{:<6} {:<15} {} name={name} id={id} age={age} state={state}",
            r.region,
            r.status.class.name(),
            r.key_fingerprint,
        ));
        if r.status.class != KeyClass::Valid {
            printer.line(format_args!("       {}", r.status.detail));
        }
        for p in &r.problems {
            printer.line(format_args!("       {p}"));
        }
    }
    let bad = rows
        .iter()
        .filter(|r| r.status.class != KeyClass::Valid || !r.problems.is_empty())
        .count();
    let n = rows.len();
    let keys = if n == 1 { "key" } else { "keys" };
    if bad == 0 {
        printer.line(format_args!("{n} {keys} valid in IAM"));
    } else {
        printer.line(format_args!("{bad} of {n} {keys} not valid in IAM"));
    }
}
