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

/// The runbook's key name template.
pub const DEFAULT_TEMPLATE: &str = "iks-armada-master-registry-access-read-only-prod-{code}-{date}";

/// Why a key name template cannot be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "key name template `{template}`: unknown placeholder `{{{name}}}`; use {{region}}, {{code}}, {{date}} or {{service}}"
    )]
    Unknown { template: String, name: String },
    #[error("key name template `{0}`: an unclosed `{{`")]
    Unclosed(String),
    #[error("key name template `{template}` uses {{{name}}}, which is not known here ({why})")]
    Missing {
        template: String,
        name: &'static str,
        why: &'static str,
    },
    #[error("key name template `{0}` must end in -{{date}}, so that the key's age can be audited")]
    NoDate(String),
}

/// What a key name template is filled with.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    /// The region's name (`jp`).
    pub region: &'a str,
    /// The region's key code (`ap-north`), when the catalog has one.
    pub code: Option<&'a str>,
    /// The creation date, UTC.
    pub date: NaiveDate,
    /// The service ID's name as IAM reports it, when known.
    pub service: Option<&'a str>,
}

/// Fills `template`'s placeholders `{region}`, `{code}`, `{date}` (UTC,
/// YYYYMMDD) and `{service}`, and checks the result is a valid key name
/// with a date suffix.
pub fn fill(template: &str, fill: &Fill<'_>) -> Result<String, TemplateError> {
    if !template.ends_with("-{date}") {
        return Err(TemplateError::NoDate(template.to_owned()));
    }
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| TemplateError::Unclosed(template.to_owned()))?;
        let name = &after[..close];
        let missing = |name: &'static str, why: &'static str| TemplateError::Missing {
            template: template.to_owned(),
            name,
            why,
        };
        match name {
            "region" => out.push_str(fill.region),
            "code" => out.push_str(
                fill.code
                    .ok_or_else(|| missing("code", "the region has no key_code in the catalog"))?,
            ),
            "date" => out.push_str(&fill.date.format("%Y%m%d").to_string()),
            "service" => out.push_str(
                fill.service
                    .ok_or_else(|| missing("service", "no service ID was looked up in IAM"))?,
            ),
            other => {
                return Err(TemplateError::Unknown {
                    template: template.to_owned(),
                    name: other.to_owned(),
                });
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that a key name carries its region's key code just before the
/// date (`…-ap-north-20261124` for jp): a key named for another region is
/// refused, as the runbook keeps one key per region.
pub fn check_code(name: &str, region: &str, code: &str) -> Result<(), String> {
    let stem = name.rsplit_once('-').map_or(name, |(stem, _)| stem);
    if stem.ends_with(&format!("-{code}")) || stem == code {
        return Ok(());
    }
    Err(format!(
        "key name `{name}` does not carry region {region}'s key code `{code}` before its date (…-{code}-YYYYMMDD)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    #[test]
    fn fills_the_runbook_template() {
        let f = Fill {
            region: "jp",
            code: Some("ap-north"),
            date: day(),
            service: Some("iks-armada-master-registry-access-read-only"),
        };
        assert_eq!(
            fill(DEFAULT_TEMPLATE, &f).unwrap(),
            "iks-armada-master-registry-access-read-only-prod-ap-north-20261124"
        );
        assert_eq!(
            fill("{service}-prod-{region}-{date}", &f).unwrap(),
            "iks-armada-master-registry-access-read-only-prod-jp-20261124"
        );
    }

    #[test]
    fn refuses_bad_templates() {
        let f = Fill {
            region: "jp",
            code: None,
            date: day(),
            service: None,
        };
        assert!(matches!(
            fill("x-{code}-{date}", &f),
            Err(TemplateError::Missing { name: "code", .. })
        ));
        assert!(matches!(
            fill("x-{service}-{date}", &f),
            Err(TemplateError::Missing { name: "service", .. })
        ));
        assert!(matches!(
            fill("x-{nope}-{date}", &f),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(fill("x-{region", &f), Err(TemplateError::NoDate(_))));
        assert!(matches!(
            fill("x-{region-{date}", &f),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(fill("x-{region}", &f), Err(TemplateError::NoDate(_))));
    }

    #[test]
    fn a_key_name_must_carry_its_regions_code() {
        let name = "iks-armada-master-registry-access-read-only-prod-ap-north-20261124";
        assert!(check_code(name, "jp", "ap-north").is_ok());
        assert!(check_code(name, "au", "ap-south").is_err());
        assert!(check_code("iks-prod-xap-north-20261124", "jp", "ap-north").is_err());
    }

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
