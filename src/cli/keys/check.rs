//! `rekey keys check`: asks IAM whether each region's key is valid.

use crate::cli::iamargs::IamAccess;
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::regionkeys::RegionKeyArgs;
use crate::exit::Exit;
use crate::iam::{self, KeyClass, KeyStatus};
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::keyname;
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

/// Ask IBM Cloud IAM whether each region's API key is valid.
///
/// Exchanges each key for a token at IAM (POST /identity/token) and, with an
/// admin key, reads its details (GET /v1/apikeys/details): IAM id, name,
/// creation date and state. Each key is valid, invalid (IAM does not know
/// it), disabled, locked, expired or iam_unreachable. A key whose IAM name
/// does not carry its region's key code is reported. Exits 0 when every key
/// is valid, 1 when one is not, 2 when IAM cannot be reached.
///
/// Example:
///   rekey keys check --regions regions --api-keys-dir keys
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
    #[command(flatten)]
    pub iam: IamAccess,
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
    let keys = args.keys.read(&regions)?;
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
        let (client, admin_token, keys) = (&client, admin_token.as_ref(), &keys);
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
