//! `rekey audit --iam`: what IAM says of each current and previous key,
//! looked up by the IAM id recorded in the metadata (never by value, so
//! nothing is decrypted), and which previous keys are pending retirement.

use crate::cli::iamargs::IamAccess;
use crate::cli::output::Printer;
use crate::iam::KeyDetails;
use crate::ops::retire::{self, Decision, Hold};
use crate::secrets_repo::layout::Version;
use crate::secrets_repo::store::Store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One key version as IAM sees it.
#[derive(Debug, Serialize)]
pub struct IamKey {
    pub secret: String,
    pub region: String,
    /// `current`, `pending` or `previous`.
    pub version: String,
    pub key_fingerprint: String,
    pub iam_key_id: Option<String>,
    /// `active`, `disabled`, `locked`, `deleted` (IAM does not know the id)
    /// or `unknown` (no IAM id recorded).
    pub state: &'static str,
    pub name: Option<String>,
    /// The key's real creation date, as IAM reports it.
    pub created_at: Option<DateTime<Utc>>,
    /// What the metadata records of a retirement.
    pub retired_how: Option<String>,
    /// What does not add up, if anything.
    pub problem: Option<String>,
}

/// A previous key due for retirement now or at `due_at`.
#[derive(Debug, Serialize)]
pub struct Pending {
    pub secret: String,
    pub region: String,
    pub iam_key_id: Option<String>,
    pub key_fingerprint: String,
    /// Due now (`rekey keys retire` would retire it).
    pub due: bool,
    pub due_at: Option<DateTime<Utc>>,
}

/// The IAM part of the audit.
#[derive(Debug, Serialize)]
pub struct IamAudit {
    pub iam_url: String,
    pub keys: Vec<IamKey>,
    pub pending_retirement: Vec<Pending>,
}

impl IamAudit {
    /// Returns true when no key has a problem.
    pub fn ok(&self) -> bool {
        self.keys.iter().all(|k| k.problem.is_none())
    }
}

fn state_of(details: Option<&KeyDetails>) -> &'static str {
    match details {
        None => "deleted",
        Some(d) if d.disabled => "disabled",
        Some(d) if d.locked => "locked",
        Some(_) => "active",
    }
}

/// Asks IAM about every recorded key of the repo at `store`.
pub fn collect(
    store: &Store,
    access: &IamAccess,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<IamAudit> {
    let client = access.client()?;
    let admin = access.admin.read()?.context(
        "--iam needs the IAM admin key to look keys up: give --iam-api-key-env NAME or --iam-api-key-file FILE",
    )?;
    let mut versions: Vec<(String, String, Version)> = Vec::new();
    for name in store.secret_names()? {
        let Some(meta) = store.read_meta(&name)? else {
            continue;
        };
        versions.push((name.clone(), meta.region.clone(), meta.active.clone()));
        if let Some(p) = meta.previous {
            versions.push((name, meta.region, p));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let looked_up = runtime.block_on(async {
        let token = client.token(&admin).await.context("the IAM admin key")?;
        let (client, token) = (&client, &token);
        let lookups = versions.iter().map(|(_, _, v)| async move {
            match &v.iam_key_id {
                Some(id) => client.key_by_id(token, id).await.map(Some),
                None => Ok(None),
            }
        });
        let mut out = Vec::with_capacity(versions.len());
        for r in futures_util::future::join_all(lookups).await {
            out.push(r?);
        }
        anyhow::Ok(out)
    })?;
    let mut keys = Vec::with_capacity(versions.len());
    for ((secret, region, v), found) in versions.into_iter().zip(looked_up) {
        let (state, details) = match (&v.iam_key_id, found) {
            (None, _) => ("unknown", None),
            (Some(_), Some(d)) => (state_of(d.as_ref()), d),
            (Some(_), None) => ("deleted", None),
        };
        let in_use = v.state != crate::secrets_repo::layout::State::Previous;
        let problem = match (in_use, state, v.retired_how) {
            (true, "deleted" | "disabled", _) => Some(format!(
                "the {} key is {state} in IAM: every pull with it fails",
                v.state
            )),
            (false, "active" | "locked", Some(how)) => Some(format!(
                "the metadata records the key as {} but IAM reports it {state}",
                how.name()
            )),
            _ => None,
        };
        keys.push(IamKey {
            secret,
            region,
            version: v.state.to_string(),
            key_fingerprint: v.key_fingerprint,
            iam_key_id: v.iam_key_id,
            state,
            name: details.as_ref().map(|d| d.name.clone()),
            created_at: details.as_ref().and_then(|d| d.created_at),
            retired_how: v.retired_how.map(|h| h.name().to_owned()),
            problem,
        });
    }
    let plan = retire::plan(&retire::region_keys(store)?, now, grace)?;
    let pending_retirement = plan
        .into_iter()
        .filter_map(|p| {
            let (due, due_at, iam_key_id, key_fingerprint) = match p.decision {
                Decision::Retire {
                    iam_key_id,
                    key_fingerprint,
                } => (true, None, Some(iam_key_id), key_fingerprint),
                Decision::Hold(Hold::InGracePeriod { until }) => {
                    let meta = store.read_meta(&p.secret).ok().flatten()?;
                    let prev = meta.previous?;
                    (false, Some(until), prev.iam_key_id, prev.key_fingerprint)
                }
                // Recorded as retired: whether IAM agrees is the state column's job.
                Decision::Hold(_) | Decision::Reconfirm { .. } => return None,
            };
            Some(Pending {
                secret: p.secret,
                region: p.region,
                iam_key_id,
                key_fingerprint,
                due,
                due_at,
            })
        })
        .collect();
    Ok(IamAudit {
        iam_url: client.base().to_string(),
        keys,
        pending_retirement,
    })
}

/// Prints the IAM part of the audit as text.
pub fn render_text(printer: &Printer, audit: &IamAudit) {
    printer.line(format_args!("IAM ({}):", audit.iam_url));
    for k in &audit.keys {
        let created = k
            .created_at
            .map_or_else(|| "-".to_owned(), |t| t.date_naive().to_string());
        printer.line(format_args!(
            "{:<9} {:<6} {:<9} {} id={} created={created} name={}",
            k.state,
            k.region,
            k.version,
            k.key_fingerprint,
            k.iam_key_id.as_deref().unwrap_or("-"),
            k.name.as_deref().unwrap_or("-"),
        ));
        if let Some(p) = &k.problem {
            printer.line(format_args!("          {p}"));
        }
    }
    for p in &audit.pending_retirement {
        let when = match (p.due, p.due_at) {
            (true, _) => "now".to_owned(),
            (false, Some(t)) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            (false, None) => "-".to_owned(),
        };
        printer.line(format_args!(
            "pending retirement {:<6} {} id={} due {when}",
            p.region,
            p.key_fingerprint,
            p.iam_key_id.as_deref().unwrap_or("-"),
        ));
    }
}
