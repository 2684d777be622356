//! Verifying one cluster's storage secret against the source of truth:
//! decode, find the key field, open the envelope, compare in constant time.

use crate::fingerprint::Fingerprint;
use crate::storage::envelope::{DecryptionKey, KeyFormat, OpenError};
use crate::storage::kube::StorageSecret;
use crate::storage::redact;
use crate::storage::slclient::{self, KeyField, Provider, SlClient};
use crate::storage::truth::{Lookup, Scope, TruthIndex};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The verdict for one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The decrypted key equals the record's `IAMAPIKey`.
    Match,
    /// It does not.
    Mismatch,
    /// `encryption = false`: the plain value was compared (see `plain_matches`).
    NotEncrypted,
    /// The envelope did not open (or is malformed).
    Undecryptable,
    /// No key field in `slclient.toml`.
    MissingKey,
    /// No single source-of-truth record for the cluster's scope.
    NoTruth,
}

impl Status {
    /// Returns the name shown in output.
    pub fn name(self) -> &'static str {
        match self {
            Status::Match => "match",
            Status::Mismatch => "mismatch",
            Status::NotEncrypted => "not_encrypted",
            Status::Undecryptable => "undecryptable",
            Status::MissingKey => "missing_key",
            Status::NoTruth => "no_truth",
        }
    }

    /// Every status, in output order.
    pub const ALL: [Status; 6] = [
        Status::Match,
        Status::Mismatch,
        Status::NotEncrypted,
        Status::Undecryptable,
        Status::MissingKey,
        Status::NoTruth,
    ];
}

/// The result for one cluster. Holds fingerprints, never keys.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub cluster: String,
    pub status: Status,
    /// The cluster's provider, when known, and what told it.
    pub provider: Option<Provider>,
    pub provider_from: Option<String>,
    pub field: Option<KeyField>,
    pub expected_fingerprint: Option<Fingerprint>,
    pub actual_fingerprint: Option<Fingerprint>,
    /// The key encoding that opened the envelope.
    pub key_format: Option<KeyFormat>,
    /// For `not_encrypted`: whether the plain value equals the record's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_matches: Option<bool>,
    pub scope: Scope,
    /// The record compared against.
    pub truth: Option<String>,
    /// The other key field, when it is set too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_field: Option<OtherField>,
    /// The `kube-system/sdnlb-config` key, when that Secret was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdnlb: Option<SdnlbReport>,
    /// Why the status is not `match`, in words.
    pub detail: Option<String>,
    pub warnings: Vec<String>,
    /// The redacted diff of `slclient.toml` against the expected one, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// The key field that is not the cluster's, when it is set too.
#[derive(Debug, Serialize)]
pub struct OtherField {
    pub field: KeyField,
    /// Its key's fingerprint, when it opened.
    pub fingerprint: Option<Fingerprint>,
    /// Whether it holds the same key as the cluster's field (null when either did not open).
    pub agrees: Option<bool>,
}

/// Why a secret could not be verified at all (an input error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("cluster {cluster}: field `data.slclient.toml` is not valid base64")]
    DataBase64 { cluster: String },
    #[error("cluster {cluster}: field `data.slclient.toml` is larger than the limit of 1 MiB")]
    DataTooLarge { cluster: String },
    #[error("cluster {cluster}: {error}")]
    SlClient {
        cluster: String,
        error: slclient::ParseError,
    },
}

/// How to verify: scope overrides, and whether to render diffs.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Parts of the scope given on the command line; they override the secret's.
    pub scope: Scope,
    /// Render the redacted diff for clusters that do not match.
    pub diff: bool,
    /// Show values instead of fingerprints in diffs (the caller checked stdout is a terminal).
    pub reveal: bool,
    /// The provider of every cluster (`--provider`); else each secret tells.
    pub provider: Option<Provider>,
    /// The cluster's `kube-system/sdnlb-config`, to verify beside its storage secret.
    pub sdnlb: Option<std::sync::Arc<crate::storage::sdnlb::Sdnlb>>,
}

/// What the cluster's `sdnlb-config` holds, compared with the truth.
#[derive(Debug, Serialize)]
pub struct SdnlbReport {
    /// `match`, `mismatch`, `missing_key`, `undecryptable`, `no_truth`, or
    /// `not_applicable` (not a VPC cluster).
    pub status: &'static str,
    pub fingerprint: Option<Fingerprint>,
    /// The value was an AES-GCM envelope that the decryption key opened.
    pub encrypted: bool,
    pub detail: Option<String>,
}

/// The warning for a classic infrastructure key in the secret.
pub const WARN_SECRET_SL: &str = "classic infrastructure key set in [Softlayer] softlayer_api_key: it takes precedence over the IAM key for classic infrastructure resources";
/// The warning for a classic infrastructure key in the record.
pub const WARN_RECORD_SL: &str = "source of truth has SLAPIKey set: a classic infrastructure key takes precedence over the IAM key for classic infrastructure resources";

/// The largest `slclient.toml` accepted (the real one is under 2 KB).
pub const MAX_SLCLIENT: usize = 1024 * 1024;

/// Decodes `slclient.toml` from the secret's data.
pub fn decode(secret: &StorageSecret) -> Result<SlClient, VerifyError> {
    if secret.data.trim().len() > MAX_SLCLIENT.div_ceil(3) * 4 {
        return Err(VerifyError::DataTooLarge {
            cluster: secret.cluster.clone(),
        });
    }
    let bytes = Zeroizing::new(
        STANDARD
            .decode(secret.data.trim())
            .map_err(|_| VerifyError::DataBase64 {
                cluster: secret.cluster.clone(),
            })?,
    );
    SlClient::parse(&bytes).map_err(|error| VerifyError::SlClient {
        cluster: secret.cluster.clone(),
        error,
    })
}

/// Returns the cluster's scope: the options' parts, else the secret's
/// labels/annotations, else what `slclient.toml` tells.
pub fn scope_of(secret: &StorageSecret, client: &SlClient, opts: &Options) -> Scope {
    Scope {
        account: opts.scope.account.clone().or_else(|| secret.account.clone()),
        resource_group: opts
            .scope
            .resource_group
            .clone()
            .or_else(|| secret.resource_group.clone())
            .or_else(|| client.resource_group.clone()),
        region: opts
            .scope
            .region
            .clone()
            .or_else(|| secret.region.clone())
            .or_else(|| client.region.clone()),
    }
}

/// The key field's value, opened if it is encrypted.
pub struct Opened {
    pub field: KeyField,
    pub plain: Result<(Zeroizing<Vec<u8>>, Option<KeyFormat>), OpenError>,
}

/// Opens the key field of `client` (if any) with `key`.
pub fn open_key(client: &SlClient, key: Option<&DecryptionKey>) -> Option<Opened> {
    open_field(client, client.key.as_ref()?.0, key)
}

/// Opens `field` of `client` (if set) with `key`.
pub fn open_field(client: &SlClient, field: KeyField, key: Option<&DecryptionKey>) -> Option<Opened> {
    let (value, encrypted) = client.field(field)?;
    let plain = if encrypted {
        match key {
            Some(k) => k.open(value).map(|(p, f)| (p, Some(f))),
            None => Err(OpenError::Authentication),
        }
    } else {
        Ok((Zeroizing::new(value.as_bytes().to_vec()), None))
    };
    Some(Opened { field, plain })
}

/// Returns the cluster's provider and what told it: `--provider`, the
/// secret's label, or `[VPC] provider_type`; `None` when nothing does.
pub fn provider_of(secret: &StorageSecret, client: &SlClient, opts: &Options) -> Option<(Provider, String)> {
    if let Some(p) = opts.provider {
        return Some((p, "--provider".to_owned()));
    }
    if let Some(p) = secret.provider.as_deref().and_then(Provider::from_name) {
        return Some((
            p,
            format!("label provider={}", secret.provider.as_deref().unwrap_or_default()),
        ));
    }
    let t = client.provider_type.as_deref()?;
    Provider::from_name(t).map(|p| (p, format!("[VPC] provider_type = \"{t}\"")))
}

/// Verifies the `sdnlb-config` key of a VPC cluster against `expected`.
/// An AES-GCM envelope the key opens is compared decrypted (and reported as
/// encrypted); with `encryption = true` it must open; else the value is
/// compared as it is.
pub fn verify_sdnlb(
    sdnlb: &crate::storage::sdnlb::Sdnlb,
    provider: Option<Provider>,
    expected: Option<&crate::secret::ApiKey>,
    key: Option<&DecryptionKey>,
) -> SdnlbReport {
    let mut r = SdnlbReport {
        status: "match",
        fingerprint: None,
        encrypted: false,
        detail: None,
    };
    if provider == Some(Provider::Classic) {
        r.status = "not_applicable";
        r.detail = Some("sdnlb-config belongs to VPC clusters; this one is classic".to_owned());
        return r;
    }
    if sdnlb.service_apikey.is_empty() {
        r.status = "missing_key";
        r.detail = Some("[SDNLB] service_apikey is empty or missing".to_owned());
        return r;
    }
    let opened = key.map(|k| k.open(&sdnlb.service_apikey));
    let plain: Zeroizing<Vec<u8>> = match (opened, sdnlb.encryption) {
        (Some(Ok((p, _))), _) => {
            r.encrypted = true;
            p
        }
        (Some(Err(e)), Some(true)) => {
            r.status = "undecryptable";
            r.detail = Some(e.to_string());
            return r;
        }
        (None, Some(true)) => {
            r.status = "undecryptable";
            r.detail = Some("encryption = true and no decryption key".to_owned());
            return r;
        }
        _ => Zeroizing::new(sdnlb.service_apikey.as_bytes().to_vec()),
    };
    r.fingerprint = Some(Fingerprint::of(&plain));
    let Some(expected) = expected else {
        r.status = "no_truth";
        return r;
    };
    let equal: bool = plain.as_slice().ct_eq(expected.expose_secret().as_bytes()).into();
    if !equal {
        r.status = "mismatch";
        r.detail = Some(format!(
            "[SDNLB] service_apikey ({}) differs from the source of truth",
            if r.encrypted { "decrypted" } else { "plain" }
        ));
    }
    r
}

/// Verifies one secret against the truth.
pub fn verify(
    secret: &StorageSecret,
    truth: &TruthIndex,
    key: Option<&DecryptionKey>,
    opts: &Options,
) -> Result<ClusterReport, VerifyError> {
    let client = decode(secret)?;
    let scope = scope_of(secret, &client, opts);
    let mut report = ClusterReport {
        cluster: secret.cluster.clone(),
        status: Status::Match,
        provider: None,
        provider_from: None,
        field: None,
        expected_fingerprint: None,
        actual_fingerprint: None,
        key_format: None,
        plain_matches: None,
        scope,
        truth: None,
        other_field: None,
        sdnlb: None,
        detail: None,
        warnings: Vec::new(),
        diff: None,
    };
    if client.softlayer_key_set {
        report.warnings.push(WARN_SECRET_SL.to_owned());
    }
    let record = match truth.lookup(&report.scope) {
        Lookup::Found(r) => Some(r),
        Lookup::None => None,
        Lookup::Ambiguous(n) => {
            report.detail = Some(format!(
                "{n} source-of-truth records match {}; name the scope with --account, --resource-group or --region",
                report.scope.describe()
            ));
            None
        }
    };
    if let Some(r) = record {
        report.truth = Some(r.origin.clone());
        report.expected_fingerprint = r.iam_api_key.as_ref().map(|k| k.fingerprint());
        if r.sl_api_key_set {
            report.warnings.push(WARN_RECORD_SL.to_owned());
        }
    }
    let provider = provider_of(secret, &client, opts);
    if let Some(sdnlb) = &opts.sdnlb {
        let expected = record.and_then(|r| r.iam_api_key.as_ref());
        report.sdnlb = Some(verify_sdnlb(sdnlb, provider.as_ref().map(|p| p.0), expected, key));
    }
    let field = match &provider {
        Some((p, from)) => {
            report.provider = Some(*p);
            report.provider_from = Some(from.clone());
            p.field()
        }
        None => match &client.key {
            Some((f, _)) => {
                report.provider_from = Some(format!("none told; {} is the key field set", f.shown()));
                *f
            }
            None => KeyField::Vpc,
        },
    };
    let other = field.other();
    let other_opened = open_field(&client, other, key);
    let Some(opened) = open_field(&client, field, key) else {
        report.status = Status::MissingKey;
        report.detail = Some(match (&provider, &other_opened) {
            (None, _) => "slclient.toml has neither [VPC] g2_api_key nor [Bluemix] iam_api_key".to_owned(),
            (Some((p, from)), None) => format!(
                "a {} cluster ({from}) has no {}, nor {}",
                p.name(),
                field.shown(),
                other.shown()
            ),
            (Some((p, from)), Some(o)) => format!(
                "a {} cluster ({from}) has no {}; {} is set (fingerprint {}), but it is not this cluster's key field",
                p.name(),
                field.shown(),
                other.shown(),
                o.plain
                    .as_ref()
                    .map_or_else(|e| format!("- : {e}"), |(p, _)| Fingerprint::of(p).to_string())
            ),
        });
        if let Some(o) = other_opened {
            report.other_field = Some(OtherField {
                field: other,
                fingerprint: o.plain.as_ref().ok().map(|(p, _)| Fingerprint::of(p)),
                agrees: None,
            });
        }
        return Ok(report);
    };
    report.field = Some(opened.field);
    let encrypted = client.field(field).is_some_and(|(_, e)| e);
    if let Some(o) = &other_opened {
        let other_plain = o.plain.as_ref().ok().map(|(p, _)| p);
        let agrees = match (&opened.plain, other_plain) {
            (Ok((a, _)), Some(b)) => Some(bool::from(a.as_slice().ct_eq(b.as_slice()))),
            _ => None,
        };
        let other_fp = other_plain.map(|p| Fingerprint::of(p));
        if agrees == Some(false) {
            report.warnings.push(format!(
                "the two key fields disagree: {} (this cluster's) has {}, {} has {}",
                field.shown(),
                opened
                    .plain
                    .as_ref()
                    .map_or_else(|_| "-".to_owned(), |(p, _)| Fingerprint::of(p).to_string()),
                other.shown(),
                other_fp.map_or_else(|| "-".to_owned(), |f| f.to_string())
            ));
        }
        report.other_field = Some(OtherField {
            field: other,
            fingerprint: other_fp,
            agrees,
        });
    }
    let plain = match &opened.plain {
        Ok((plain, format)) => {
            report.actual_fingerprint = Some(Fingerprint::of(plain));
            report.key_format = *format;
            plain
        }
        Err(e) => {
            report.status = Status::Undecryptable;
            report.detail = Some(e.to_string());
            return Ok(report);
        }
    };
    let expected = match record {
        None => {
            report.status = Status::NoTruth;
            if report.detail.is_none() {
                report.detail = Some(format!("no source-of-truth record for {}", report.scope.describe()));
            }
            return Ok(report);
        }
        Some(r) => match &r.iam_api_key {
            Some(k) => k,
            None => {
                report.status = Status::NoTruth;
                report.detail = Some(format!("{} has no IAMAPIKey", r.origin));
                return Ok(report);
            }
        },
    };
    let equal: bool = plain.as_slice().ct_eq(expected.expose_secret().as_bytes()).into();
    report.status = if !encrypted {
        report.plain_matches = Some(equal);
        report.detail = Some(format!(
            "encryption = false: the plain value was compared and {}",
            if equal { "matches" } else { "does not match" }
        ));
        Status::NotEncrypted
    } else if equal {
        Status::Match
    } else {
        report.detail = Some("the decrypted key differs from the source of truth".to_owned());
        Status::Mismatch
    };
    if let Some(sd) = &report.sdnlb
        && report.status == Status::Match
        && !matches!(sd.status, "match" | "not_applicable")
    {
        report.status = Status::Mismatch;
        report.detail = Some(format!(
            "the storage secret matches, but kube-system/sdnlb-config's service_apikey is {}",
            sd.status
        ));
    }
    if opts.diff && report.status != Status::Match {
        report.diff = Some(redact::diff_against_truth(
            &client,
            opened.field,
            plain,
            expected,
            &secret.cluster,
            opts.reveal,
        ));
    }
    Ok(report)
}
