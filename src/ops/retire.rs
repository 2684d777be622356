//! Deciding which previous keys may be retired in IAM: a region's previous
//! key goes once the current key has been published for the grace period
//! (never less than IAM's one-hour token lifetime, since tokens minted from
//! the old key stay valid until they expire), and never while that key is
//! still current in any region.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// IAM access tokens live up to an hour, and stay valid after their key is
/// deleted: a grace period shorter than this would cut clusters off early.
pub const MIN_GRACE: Duration = Duration::hours(1);

/// The default grace period between publishing a key and retiring the one it replaced.
pub const DEFAULT_GRACE: Duration = Duration::hours(24);

/// One key version as the secrets repo records it.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub key_name: Option<String>,
    pub key_fingerprint: String,
    /// The key's IAM id (`ApiKey-…`), when rekey created it or recorded it.
    pub iam_key_id: Option<String>,
    /// When this version became current.
    pub published_at: DateTime<Utc>,
    /// When the key was retired in IAM, if it was.
    pub retired_at: Option<DateTime<Utc>>,
}

/// A region's current and previous key.
#[derive(Debug, Clone)]
pub struct RegionKeys {
    pub region: String,
    pub secret: String,
    pub current: KeyVersion,
    pub previous: Option<KeyVersion>,
}

/// Why a region's previous key is not retired now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Hold {
    /// The region has no previous version.
    NoPrevious,
    /// The previous key was already retired.
    AlreadyRetired { at: DateTime<Utc> },
    /// The current key has not been published for the grace period yet.
    InGracePeriod { until: DateTime<Utc> },
    /// The previous key is the current key of this region (or the same as this region's current key).
    StillCurrent { region: String },
    /// No IAM id is recorded for the previous key, so it cannot be named in IAM.
    NoIamId,
}

/// What happens to one region's previous key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Retire the key with this IAM id.
    Retire {
        iam_key_id: String,
        key_fingerprint: String,
    },
    /// Keep it, for this reason.
    Hold(Hold),
}

/// A region's decision.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub region: String,
    pub secret: String,
    #[serde(flatten)]
    pub decision: Decision,
}

/// Why a retirement plan cannot be made at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "a grace period of {0} is shorter than IAM's one-hour token lifetime: tokens minted from the old key would outlive the check that it is unused"
    )]
    GraceTooShort(String),
}

/// Decides, for each region, whether its previous key is retired at `now`.
pub fn plan(regions: &[RegionKeys], now: DateTime<Utc>, grace: Duration) -> Result<Vec<Planned>, PlanError> {
    if grace < MIN_GRACE {
        return Err(PlanError::GraceTooShort(
            humantime::format_duration(grace.to_std().unwrap_or_default()).to_string(),
        ));
    }
    let mut out = Vec::with_capacity(regions.len());
    for r in regions {
        let decision = decide(r, regions, now, grace);
        out.push(Planned {
            region: r.region.clone(),
            secret: r.secret.clone(),
            decision,
        });
    }
    Ok(out)
}

fn decide(r: &RegionKeys, all: &[RegionKeys], now: DateTime<Utc>, grace: Duration) -> Decision {
    let Some(prev) = &r.previous else {
        return Decision::Hold(Hold::NoPrevious);
    };
    if let Some(at) = prev.retired_at {
        return Decision::Hold(Hold::AlreadyRetired { at });
    }
    if let Some(other) = all.iter().find(|o| {
        o.current.key_fingerprint == prev.key_fingerprint
            || (prev.iam_key_id.is_some() && o.current.iam_key_id == prev.iam_key_id)
    }) {
        return Decision::Hold(Hold::StillCurrent {
            region: other.region.clone(),
        });
    }
    let until = r.current.published_at + grace;
    if now < until {
        return Decision::Hold(Hold::InGracePeriod { until });
    }
    match &prev.iam_key_id {
        Some(id) => Decision::Retire {
            iam_key_id: id.clone(),
            key_fingerprint: prev.key_fingerprint.clone(),
        },
        None => Decision::Hold(Hold::NoIamId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn version(fp: &str, id: Option<&str>, published: &str) -> KeyVersion {
        KeyVersion {
            key_name: None,
            key_fingerprint: fp.into(),
            iam_key_id: id.map(str::to_owned),
            published_at: t(published),
            retired_at: None,
        }
    }

    fn region(name: &str, current: KeyVersion, previous: Option<KeyVersion>) -> RegionKeys {
        RegionKeys {
            region: name.into(),
            secret: format!("{}_REGISTRY_PULL_SECRET_64", name.to_uppercase()),
            current,
            previous,
        }
    }

    #[test]
    fn retires_after_the_grace_period_only() {
        let regions = vec![region(
            "jp",
            version("sha256:new", Some("ApiKey-new"), "2026-11-23T10:00:00Z"),
            Some(version("sha256:old", Some("ApiKey-old"), "2026-08-01T00:00:00Z")),
        )];
        let early = plan(&regions, t("2026-11-24T09:59:59Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            early[0].decision,
            Decision::Hold(Hold::InGracePeriod {
                until: t("2026-11-24T10:00:00Z")
            })
        );
        let late = plan(&regions, t("2026-11-24T10:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            late[0].decision,
            Decision::Retire {
                iam_key_id: "ApiKey-old".into(),
                key_fingerprint: "sha256:old".into()
            }
        );
    }

    #[test]
    fn never_retires_a_key_still_current_somewhere() {
        let regions = vec![
            region(
                "jp",
                version("sha256:new", Some("ApiKey-new"), "2026-11-01T00:00:00Z"),
                Some(version("sha256:shared", Some("ApiKey-shared"), "2026-08-01T00:00:00Z")),
            ),
            region(
                "au",
                version("sha256:shared", Some("ApiKey-shared"), "2026-08-01T00:00:00Z"),
                None,
            ),
        ];
        let p = plan(&regions, t("2026-11-24T00:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            p[0].decision,
            Decision::Hold(Hold::StillCurrent { region: "au".into() })
        );
        assert_eq!(p[1].decision, Decision::Hold(Hold::NoPrevious));
    }

    #[test]
    fn refuses_a_grace_period_shorter_than_a_token_lifetime() {
        assert!(matches!(
            plan(&[], t("2026-11-24T00:00:00Z"), Duration::minutes(59)),
            Err(PlanError::GraceTooShort(_))
        ));
        assert!(plan(&[], t("2026-11-24T00:00:00Z"), MIN_GRACE).is_ok());
    }

    #[test]
    fn holds_keys_without_an_iam_id_or_already_retired() {
        let mut prev = version("sha256:old", None, "2026-08-01T00:00:00Z");
        let regions = vec![region(
            "jp",
            version("sha256:new", None, "2026-11-01T00:00:00Z"),
            Some(prev.clone()),
        )];
        let p = plan(&regions, t("2026-11-24T00:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(p[0].decision, Decision::Hold(Hold::NoIamId));
        prev.retired_at = Some(t("2026-11-10T00:00:00Z"));
        let regions = vec![region(
            "jp",
            version("sha256:new", None, "2026-11-01T00:00:00Z"),
            Some(prev),
        )];
        let p = plan(&regions, t("2026-11-24T00:00:00Z"), DEFAULT_GRACE).unwrap();
        assert_eq!(
            p[0].decision,
            Decision::Hold(Hold::AlreadyRetired {
                at: t("2026-11-10T00:00:00Z")
            })
        );
    }
}
