//! `rekey audit`: key age and recipient expiry across the secrets repo.

use crate::cli::audit_iam;
use crate::cli::iamargs::IamAccess;
use crate::cli::output::{OutputFormat, Paint, Printer};
use crate::exit::Exit;
use crate::pullsecret::keyname;
use crate::secrets_repo::audit::{self, AgePolicy, AgeStatus};
use crate::secrets_repo::authorship;
use crate::secrets_repo::layout;
use crate::secrets_repo::pgp::{self, Validity};
use crate::secrets_repo::signing::AllowedSigners;
use crate::secrets_repo::store::Store;
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Report key ages and expiring recipient certificates.
///
/// For the quarterly rotation: how old each secret's key is, and which
/// recipient certificates expire soon.
///
/// A key's age comes from the -YYYYMMDD suffix of its name (its creation
/// date), or from when it was sealed when the name has none. Exits 1 when a
/// key is older than --max-age or a recipient certificate is expired,
/// revoked or otherwise unusable; keys older than --warn-age and
/// certificates expiring within --warn-validity are listed as due.
///
/// A key whose name carries a date after today is reported as `future`
/// (exit 1): its age, and every alert on it, would be wrong.
///
/// With --iam, each current and previous key is looked up in IAM by the IAM
/// id recorded in its metadata (GET /v1/apikeys/{id}; nothing is
/// decrypted): its real creation date and state (active, disabled, locked,
/// deleted; unknown without a recorded id), and the previous keys pending
/// retirement (due now, or when their grace period ends). Exits 1 when a
/// current key is deleted or disabled in IAM, or a key the metadata records
/// as retired is still active; 2 when IAM cannot be reached.
///
/// --output openmetrics writes gauges for Prometheus's textfile collector
/// (rekey_key_age_seconds, rekey_key_created_timestamp_seconds,
/// rekey_key_retirement_seconds, rekey_recipient_expiry_timestamp_seconds,
/// rekey_audit_ok), so key-age alerts live beside the team's other alerts.
///
/// Example:
///   rekey audit --repo secrets
///   rekey audit --repo secrets --max-age 90d --warn-age 75d --output json
///   rekey audit --repo secrets --output openmetrics > /var/lib/node_exporter/rekey.prom
///   rekey audit --repo secrets --iam --iam-api-key-env REKEY_IAM_API_KEY
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Keys older than this must be rotated (exit 1).
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = crate::cli::duration::parse)]
    pub max_age: Duration,
    /// Keys older than this are due for rotation.
    #[arg(long, value_name = "DURATION", default_value = "75d", value_parser = crate::cli::duration::parse)]
    pub warn_age: Duration,
    /// Recipient certificates expiring within this are due for renewal.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = crate::cli::duration::parse)]
    pub warn_validity: Duration,
    /// Ask IBM Cloud IAM, by the IAM ids in the metadata, for each current
    /// and previous key's creation date and state (needs the admin key).
    #[arg(long)]
    pub iam: bool,
    /// The grace period after which a previous key is due for retirement (with --iam).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::cli::duration::parse)]
    pub retire_after: Duration,
    #[command(flatten)]
    pub iam_access: IamAccess,
}

#[derive(Serialize)]
struct KeyAge {
    secret: String,
    region: String,
    state: String,
    key_name: Option<String>,
    key_fingerprint: String,
    created: String,
    /// Where `created` comes from: `key_name` or `rotated_at`.
    created_from: &'static str,
    rotated_at: String,
    age_days: i64,
    status: AgeStatus,
    /// A version sealed but not promoted (`<NAME>.pending.gpg`): not the
    /// served key, so its age is not assessed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<PendingKey>,
}

#[derive(Serialize)]
struct PendingKey {
    key_name: Option<String>,
    key_fingerprint: String,
    rotated_at: String,
}

#[derive(Serialize)]
struct Recipient {
    fingerprint: String,
    user_id: String,
    expires: Option<String>,
    status: &'static str,
    detail: String,
}

/// Who signed one version of a secret (its statement), checked against
/// `.rekey/signers.asc` with public keys only.
#[derive(Serialize)]
struct VersionSigner {
    secret: String,
    /// `current` (or `pending`) or `previous`.
    version_state: String,
    /// `signed`, `unsigned`, `unverified` (the repo has no signers.asc) or `bad`.
    status: &'static str,
    version: Option<u64>,
    signer_user_id: Option<String>,
    signer_fingerprint: Option<String>,
    signed_at: Option<String>,
    detail: String,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    max_age_days: i64,
    warn_age_days: i64,
    keys: &'a [KeyAge],
    recipients: &'a [Recipient],
    #[serde(skip_serializing_if = "Option::is_none")]
    iam: Option<&'a audit_iam::IamAudit>,
    signatures: &'a [VersionSigner],
}

/// Runs `rekey audit`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require(
        "audit",
        &[OutputFormat::Text, OutputFormat::Json, OutputFormat::Openmetrics],
    )?;
    let policy = AgePolicy {
        warn_days: audit::days(args.warn_age),
        max_days: audit::days(args.max_age),
    };
    if policy.warn_days > policy.max_days {
        bail!(
            "--warn-age ({}d) is longer than --max-age ({}d)",
            policy.warn_days,
            policy.max_days
        );
    }
    let now = SystemTime::now();
    let today = chrono::DateTime::<chrono::Utc>::from(now).date_naive();
    let store = Store::new(&args.repo);
    let names = store.secret_names()?;
    let mut keys = Vec::new();
    let signers = store.read_signers()?;
    let mut signatures = Vec::new();
    for name in &names {
        let meta = store
            .read_meta(name)?
            .with_context(|| format!("reading metadata of {name}"))?;
        for v in std::iter::once(&meta.active).chain(meta.previous.as_ref()) {
            signatures.push(version_signer(name, v, signers.as_ref(), now));
        }
        let v = &meta.active;
        let from_name = v.key_name.as_deref().and_then(|n| keyname::created_on(n).ok());
        let (created, created_from) = match from_name {
            Some(date) => (date, "key_name"),
            None => (v.rotated_at.date_naive(), "rotated_at"),
        };
        let (age_days, status) = audit::assess(created, today, policy);
        keys.push(KeyAge {
            secret: name.clone(),
            region: meta.region.clone(),
            state: v.state.to_string(),
            key_name: v.key_name.clone(),
            key_fingerprint: v.key_fingerprint.clone(),
            created: created.to_string(),
            created_from,
            rotated_at: v.rotated_at.to_rfc3339(),
            age_days,
            status,
            pending: meta.pending.as_ref().map(|p| PendingKey {
                key_name: p.key_name.clone(),
                key_fingerprint: p.key_fingerprint.clone(),
                rotated_at: p.rotated_at.to_rfc3339(),
            }),
        });
    }
    let recipients = audit_recipients(&args, now)?;
    let iam = if args.iam {
        let grace = chrono::Duration::from_std(args.retire_after).context("--retire-after is too long")?;
        Some(audit_iam::collect(
            &store,
            &args.iam_access,
            grace,
            chrono::DateTime::<chrono::Utc>::from(now),
        )?)
    } else {
        None
    };
    let ok = keys
        .iter()
        .all(|k| !matches!(k.status, AgeStatus::Overdue | AgeStatus::Future))
        && recipients.iter().all(|r| r.status != "unusable")
        && iam.as_ref().is_none_or(audit_iam::IamAudit::ok)
        // With allowed signers, every active version must verify.
        && signatures
            .iter()
            .filter(|s| s.version_state != "previous")
            .all(|s| signers.is_none() || s.status == "signed");
    match printer.format() {
        OutputFormat::Openmetrics => printer.raw(openmetrics(&keys, &recipients, policy, ok).as_bytes())?,
        OutputFormat::Json => printer.json(&Report {
            ok,
            max_age_days: policy.max_days,
            warn_age_days: policy.warn_days,
            keys: &keys,
            recipients: &recipients,
            iam: iam.as_ref(),
            signatures: &signatures,
        })?,
        _ => {
            printer.line(format_args!(
                "{:<8} {:<6} {:<30} {:>5}  {:<10} {}",
                "status", "region", "secret", "age", "created", "key"
            ));
            for k in &keys {
                let (status, paint) = match k.status {
                    AgeStatus::Future => ("FUTURE", Paint::Bad),
                    AgeStatus::Ok => ("ok", Paint::Good),
                    AgeStatus::Due => ("due", Paint::Warn),
                    AgeStatus::Overdue => ("OVERDUE", Paint::Bad),
                };
                let status = printer.paint(paint, &format!("{status:<8}"));
                printer.line(format_args!(
                    "{status} {:<6} {:<30} {:>4}d  {:<10} {} {}",
                    k.region,
                    k.secret,
                    k.age_days,
                    k.created,
                    k.key_name.as_deref().unwrap_or("(unnamed)"),
                    k.key_fingerprint
                ));
                if let Some(p) = &k.pending {
                    printer.line(format_args!(
                        "{:<8} {:<6} {:<30} sealed {}, not served until promoted: {} {}",
                        "pending",
                        k.region,
                        k.secret,
                        p.rotated_at,
                        p.key_name.as_deref().unwrap_or("(unnamed)"),
                        p.key_fingerprint
                    ));
                }
            }
            for k in keys.iter().filter(|k| k.status == AgeStatus::Future) {
                printer.warn(format_args!(
                    "{}: key name {} carries a date after today ({}): its age cannot be trusted",
                    k.secret,
                    k.key_name.as_deref().unwrap_or("(unnamed)"),
                    k.created
                ));
            }
            for r in &recipients {
                printer.line(format_args!(
                    "{:<8} recipient {} {}: {}",
                    r.status, r.fingerprint, r.user_id, r.detail
                ));
            }
            let shown = signers.is_some() || signatures.iter().any(|s| s.status != "unsigned");
            for s in signatures.iter().filter(|_| shown) {
                printer.line(format_args!(
                    "{:<8} {} {:<8} {}",
                    s.status, s.secret, s.version_state, s.detail
                ));
            }
            if let Some(iam) = &iam {
                audit_iam::render_text(printer, iam);
            }
            if keys.is_empty() {
                printer.status(format_args!("{} holds no secrets", store.registry_dir().display()));
            }
        }
    }
    Ok(Exit::problem_if(!ok))
}

/// Describes who signed version `v` of secret `name`.
fn version_signer(name: &str, v: &layout::Version, signers: Option<&AllowedSigners>, now: SystemTime) -> VersionSigner {
    let mut out = VersionSigner {
        secret: name.to_owned(),
        version_state: v.state.to_string(),
        status: "unsigned",
        version: v.statement_version(),
        signer_user_id: None,
        signer_fingerprint: None,
        signed_at: None,
        detail: "no signed statement".to_owned(),
    };
    if v.signed.is_none() {
        return out;
    }
    let Some(signers) = signers else {
        out.status = "unverified";
        out.detail = format!(
            "signed, but the repo has no {} to verify it against",
            layout::SIGNERS_FILE
        );
        return out;
    };
    match authorship::signer_of(v, signers, now) {
        None => {}
        Some(Err(e)) => {
            out.status = "bad";
            out.detail = e.to_string();
        }
        Some(Ok((st, signer))) => {
            let at = pgp::show_time(signer.signed_at);
            out.status = "signed";
            out.detail = format!(
                "version {} by {} (fingerprint {}) at {at}",
                st.version, signer.name.user_id, signer.name.fingerprint
            );
            out.version = Some(st.version);
            out.signer_user_id = Some(signer.name.user_id);
            out.signer_fingerprint = Some(signer.name.fingerprint);
            out.signed_at = Some(at);
        }
    }
    out
}

/// Escapes a label value as the exposition formats require.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the audit as OpenMetrics text (also valid Prometheus text format,
/// which the node exporter's textfile collector reads). Times are in
/// seconds, as Prometheus's conventions (and promtool) want: alert with
/// e.g. `rekey_key_age_seconds > 75 * 86400`.
fn openmetrics(keys: &[KeyAge], recipients: &[Recipient], policy: AgePolicy, ok: bool) -> String {
    use std::fmt::Write;
    const DAY: i64 = 86_400;
    let mut out = String::new();
    let key_labels = |k: &KeyAge| {
        format!(
            "region=\"{}\",secret=\"{}\",key_name=\"{}\",key_fingerprint=\"{}\"",
            label(&k.region),
            label(&k.secret),
            label(k.key_name.as_deref().unwrap_or("")),
            label(&k.key_fingerprint)
        )
    };
    let mut gauge = |name: &str, help: &str, rows: &mut dyn Iterator<Item = (String, i64)>| {
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "# HELP {name} {help}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    gauge(
        "rekey_key_age_seconds",
        "Age of each secret's current key (whole days), from its name's date or its sealing time.",
        &mut keys.iter().map(|k| (key_labels(k), k.age_days * DAY)),
    );
    gauge(
        "rekey_key_created_timestamp_seconds",
        "When each secret's current key was created (midnight UTC of its date).",
        &mut keys.iter().filter_map(|k| {
            let date = chrono::NaiveDate::parse_from_str(&k.created, "%Y-%m-%d").ok()?;
            Some((key_labels(k), date.and_hms_opt(0, 0, 0)?.and_utc().timestamp()))
        }),
    );
    gauge(
        "rekey_key_retirement_seconds",
        "Time until the key passes the maximum age (negative: overdue).",
        &mut keys
            .iter()
            .map(|k| (key_labels(k), (policy.max_days - k.age_days) * DAY)),
    );
    gauge(
        "rekey_recipient_expiry_timestamp_seconds",
        "When each recipient certificate stops being usable (absent: never).",
        &mut recipients.iter().filter_map(|r| {
            let expires = chrono::DateTime::parse_from_rfc3339(r.expires.as_deref()?).ok()?;
            let labels = format!(
                "fingerprint=\"{}\",user_id=\"{}\"",
                label(&r.fingerprint),
                label(&r.user_id)
            );
            Some((labels, expires.timestamp()))
        }),
    );
    let _ = writeln!(out, "# TYPE rekey_audit_ok gauge");
    let _ = writeln!(
        out,
        "# HELP rekey_audit_ok 1 when no key is overdue or future-dated and every recipient is usable."
    );
    let _ = writeln!(out, "rekey_audit_ok {}", u8::from(ok));
    out.push_str("# EOF\n");
    out
}
/// Checks each policy certificate on its own, so one bad certificate does not hide the others.
fn audit_recipients(args: &Args, now: SystemTime) -> anyhow::Result<Vec<Recipient>> {
    let file = args.repo.join(layout::RECIPIENTS_FILE);
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let certs = pgp::parse_certs(&bytes, &file.display().to_string())?;
    let mut out = Vec::with_capacity(certs.len());
    for cert in &certs {
        let name = pgp::CertName::of(cert);
        let validity = Validity {
            min: None,
            warn: args.warn_validity,
        };
        let (status, detail, expires) = match pgp::check_recipients(std::slice::from_ref(cert), now, validity) {
            Ok(set) => {
                let expires = set.certs.first().and_then(|c| c.expires);
                if set.expiring_soon.is_empty() {
                    ("ok", "usable".to_owned(), expires)
                } else {
                    (
                        "due",
                        "expires soon: renew it and run `rekey reencrypt`".to_owned(),
                        expires,
                    )
                }
            }
            Err(e) => ("unusable", e.to_string(), None),
        };
        out.push(Recipient {
            fingerprint: name.fingerprint.clone(),
            user_id: name.user_id.clone(),
            expires: expires.map(pgp::show_time),
            status,
            detail,
        });
    }
    Ok(out)
}
