//! Leak rules as data: the shapes keys come in, and the values that are
//! never secrets. The defaults (`rules/leaks.toml`) are embedded in the binary.

use regex::bytes::Regex;
use serde::Deserialize;

/// The default rules, as shipped in `rules/leaks.toml`.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/leaks.toml");
/// How the default rules are named in messages.
pub const DEFAULT_RULES_NAME: &str = "rules/leaks.toml (built in)";

/// The largest compiled size of one rule's pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// An extra test a rule's match must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The secret is base64 of `user:password` with both parts present.
    UserpassBase64,
    /// The secret is a PEM header; the fingerprint covers the block to its END line.
    PemBlock,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    benign: Vec<RawBenign>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    description: String,
    pattern: String,
    #[serde(default)]
    min_length: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    near: Option<String>,
    #[serde(default)]
    near_bytes: Option<usize>,
    #[serde(default)]
    check: Option<Check>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBenign {
    id: String,
    description: String,
    pattern: String,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub pattern: Regex,
    pub min_length: usize,
    pub entropy: f64,
    pub near: Option<Regex>,
    pub near_bytes: usize,
    pub check: Option<Check>,
}

/// One compiled benign-value pattern.
#[derive(Debug, Clone)]
pub struct Benign {
    pub id: String,
    pub description: String,
    pub pattern: Regex,
}

/// A parsed and compiled rules file.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub benign: Vec<Benign>,
}

/// A rules file that cannot be used; names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct RulesError {
    pub source_name: String,
    pub message: String,
}

fn compile(source: &str, field: String, pattern: &str) -> Result<Regex, RulesError> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RulesError {
            source_name: source.to_owned(),
            message: format!("field `{field}`: {e}"),
        })
}

impl RuleSet {
    /// Parses and compiles a rules file; `source` names it in messages.
    pub fn parse(source: &str, text: &str) -> Result<RuleSet, RulesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| RulesError {
            source_name: source.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut rules = Vec::new();
        for (i, r) in raw.rule.into_iter().enumerate() {
            let bad = |field: &str, message: &str| RulesError {
                source_name: source.to_owned(),
                message: format!("field `rule[{i}].{field}`: {message}"),
            };
            let valid_id = !r.id.is_empty()
                && r.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_id {
                return Err(bad("id", "must be non-empty kebab-case (a-z, 0-9, -)"));
            }
            if rules.iter().any(|x: &Rule| x.id == r.id) {
                return Err(bad("id", &format!("`{}` is defined twice", r.id)));
            }
            let entropy = r.entropy.unwrap_or(0.0);
            if !(0.0..=8.0).contains(&entropy) {
                return Err(bad("entropy", "must be between 0 and 8 bits per byte"));
            }
            let near = match &r.near {
                Some(p) => Some(compile(source, format!("rule[{i}].near"), p)?),
                None => None,
            };
            rules.push(Rule {
                pattern: compile(source, format!("rule[{i}].pattern"), &r.pattern)?,
                id: r.id,
                description: r.description,
                min_length: r.min_length.unwrap_or(8).max(1),
                entropy,
                near,
                near_bytes: r.near_bytes.unwrap_or(256),
                check: r.check,
            });
        }
        let mut benign = Vec::new();
        for (i, b) in raw.benign.into_iter().enumerate() {
            benign.push(Benign {
                pattern: compile(source, format!("benign[{i}].pattern"), &b.pattern)?,
                id: b.id,
                description: b.description,
            });
        }
        Ok(RuleSet { rules, benign })
    }

    /// Returns the built-in rules of `rules/leaks.toml`.
    pub fn builtin() -> RuleSet {
        // The embedded file is tested to parse; a failure here is a build defect.
        RuleSet::parse(DEFAULT_RULES_NAME, DEFAULT_RULES).unwrap_or_else(|e| unreachable!("built-in rules: {e}"))
    }

    /// Returns the id of the benign pattern that `value` matches, if any.
    pub fn benign_match(&self, value: &[u8]) -> Option<&str> {
        self.benign
            .iter()
            .find(|b| b.pattern.is_match(value))
            .map(|b| b.id.as_str())
    }
}

/// Returns the Shannon entropy of `bytes` in bits per byte.
pub fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / n)
        .map(|p| -p * p.log2())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_and_have_unique_ids() {
        let set = RuleSet::parse(DEFAULT_RULES_NAME, DEFAULT_RULES).unwrap();
        assert!(set.rules.len() >= 10);
        assert!(set.benign.len() >= 4);
    }

    #[test]
    fn bad_rules_name_the_field() {
        let e = RuleSet::parse("r.toml", "[[rule]]\nid = \"x\"\ndescription = \"d\"\npattern = \"(\"\n").unwrap_err();
        assert!(e.to_string().contains("rule[0].pattern"), "{e}");
        let e = RuleSet::parse(
            "r.toml",
            "[[rule]]\nid = \"Bad Id\"\ndescription = \"d\"\npattern = \"a\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("rule[0].id"), "{e}");
        let e = RuleSet::parse(
            "r.toml",
            "[[rule]]\nid = \"a\"\ndescription = \"d\"\npattern = \"a\"\nentropy = 9.0\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("rule[0].entropy"), "{e}");
        let e = RuleSet::parse("r.toml", "[[rule]]\nid = \"a\"\n").unwrap_err();
        assert!(e.to_string().starts_with("r.toml: "), "{e}");
    }

    #[test]
    fn random_keys_are_never_benign() {
        use sha2::{Digest, Sha256};
        const IBM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let set = RuleSet::builtin();
        let mut benign = Vec::new();
        for i in 0..5000u32 {
            let seed = Sha256::digest(i.to_le_bytes());
            let bytes: Vec<u8> = Sha256::digest(seed).iter().chain(seed.iter()).copied().collect();
            for (alphabet, len) in [(IBM, 44), (B64, 40), (IBM, 32)] {
                let key: Vec<u8> = bytes.iter().take(len).map(|b| alphabet[usize::from(b % 64)]).collect();
                if let Some(id) = set.benign_match(&key) {
                    benign.push(format!("{} by {id}", String::from_utf8_lossy(&key)));
                }
            }
        }
        // A base64 key such as `/abc/def...` without `+` reads as a path: rare, accepted.
        assert!(
            benign.len() <= 15,
            "{} of 15000 random keys benign: {:?}",
            benign.len(),
            &benign[..benign.len().min(5)]
        );
        assert!(benign.iter().all(|b| b.ends_with("by path")), "{benign:?}");
    }

    #[test]
    fn entropy_of_uniform_and_constant() {
        assert_eq!(entropy(b"aaaa"), 0.0);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
        assert_eq!(entropy(b""), 0.0);
    }
}
