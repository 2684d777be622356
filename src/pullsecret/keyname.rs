//! Service-ID API key names: `<service-id>-<env>-<region-name>-<YYYYMMDD>`.
//!
//! The date suffix is the key's creation date, which makes a key's age
//! auditable without asking the identity service.

use chrono::NaiveDate;

/// Why a key name does not follow the naming convention.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyNameError {
    #[error("key name `{0}` does not end in -YYYYMMDD")]
    NoDate(String),
    #[error("key name `{name}` ends in `{suffix}`, which is not a calendar date")]
    BadDate { name: String, suffix: String },
    #[error("key name `{0}` may hold only a-z, A-Z, 0-9, `-` and `_`")]
    Characters(String),
}

/// Checks a key name's characters (it is written into commit messages and metadata).
pub fn validate(name: &str) -> Result<(), KeyNameError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(KeyNameError::Characters(name.to_owned()));
    }
    Ok(())
}

/// Returns the creation date encoded in a key name's `-YYYYMMDD` suffix.
pub fn created_on(name: &str) -> Result<NaiveDate, KeyNameError> {
    let suffix = name
        .rsplit_once('-')
        .map(|(_, s)| s)
        .filter(|s| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| KeyNameError::NoDate(name.to_owned()))?;
    NaiveDate::parse_from_str(suffix, "%Y%m%d").map_err(|_| KeyNameError::BadDate {
        name: name.to_owned(),
        suffix: suffix.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_date_suffix() {
        let d = created_on("iks-armada-master-registry-access-read-only-prod-ap-north-20210625").unwrap();
        assert_eq!(d, NaiveDate::from_ymd_opt(2021, 6, 25).unwrap());
        assert!(matches!(created_on("key-2021062"), Err(KeyNameError::NoDate(_))));
        assert!(matches!(created_on("key-20211345"), Err(KeyNameError::BadDate { .. })));
        assert!(matches!(created_on("20210625"), Err(KeyNameError::NoDate(_))));
        assert!(validate("a b").is_err());
        assert!(validate("iks-x_1").is_ok());
    }
}
