//! Key age audit: how old each secret's key is, against the rotation policy.
//!
//! A key's age comes from the `-YYYYMMDD` suffix of its name (its creation
//! date) and, when the name has none, from when it was sealed. Today is an
//! argument: this module never reads the clock.

use chrono::NaiveDate;
use serde::Serialize;

/// Where a key stands against the rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeStatus {
    /// The key's name says it was created after today: its age cannot be
    /// trusted, so alerts on it would be silently wrong.
    Future,
    Ok,
    /// Older than the warning age: plan the rotation.
    Due,
    /// Older than the maximum age: rotate now.
    Overdue,
}

/// The policy: warn past `warn_days`, fail past `max_days`.
#[derive(Debug, Clone, Copy)]
pub struct AgePolicy {
    pub warn_days: i64,
    pub max_days: i64,
}

/// Returns a key's age in days and its status on `today`.
pub fn assess(created: NaiveDate, today: NaiveDate, policy: AgePolicy) -> (i64, AgeStatus) {
    let age = (today - created).num_days();
    let status = if age < 0 {
        AgeStatus::Future
    } else if age > policy.max_days {
        AgeStatus::Overdue
    } else if age > policy.warn_days {
        AgeStatus::Due
    } else {
        AgeStatus::Ok
    };
    (age, status)
}

/// Converts a duration such as `90d` into whole days.
pub fn days(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn ages_against_the_policy() {
        let p = AgePolicy {
            warn_days: 75,
            max_days: 90,
        };
        assert_eq!(assess(d("2026-11-01"), d("2026-11-23"), p), (22, AgeStatus::Ok));
        assert_eq!(assess(d("2026-09-01"), d("2026-11-23"), p), (83, AgeStatus::Due));
        assert_eq!(assess(d("2026-08-24"), d("2026-11-23"), p), (91, AgeStatus::Overdue));
        assert_eq!(assess(d("2026-08-25"), d("2026-11-23"), p), (90, AgeStatus::Due));
        assert_eq!(assess(d("2026-11-30"), d("2026-11-23"), p), (-7, AgeStatus::Future));
        assert_eq!(days(std::time::Duration::from_secs(90 * 86_400)), 90);
    }
}
