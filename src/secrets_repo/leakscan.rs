//! Finds plain-text secrets in text that is about to be committed to the
//! secrets repo, where only OpenPGP messages belong.
//!
//! The scanning itself is the leak engine's ([`crate::secrets_repo::leaks`]);
//! this module keeps the allowlist and the per-file `scan` that `check`
//! uses, mapping the engine's rule ids onto the categories that allowlists
//! name. Findings are identified by a fingerprint of the matched secret so
//! that an allowlist can waive one without naming it; they never carry the
//! secret itself.

use crate::fingerprint::Fingerprint;
use crate::secrets_repo::leaks::{self, KnownKey, Scanner};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// A rule that found a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A PEM or OpenPGP private key block.
    PrivateKey,
    /// A dockerconfigjson `password` value.
    DockerconfigPassword,
    /// A dockerconfigjson `auth` value that decodes to `user:password`.
    DockerconfigAuth,
    /// A high-entropy, API-key-shaped value assigned to a key-like name.
    ApiKeyAssignment,
    /// A value that the caller knows is secret (for example the key being rotated).
    KnownSecret,
    /// A region that would decode beyond the engine's limits (a bomb).
    DecodeLimit,
}

impl Rule {
    /// Returns the rule's name as used in allowlists and reports.
    pub fn name(self) -> &'static str {
        match self {
            Rule::PrivateKey => "private-key",
            Rule::DockerconfigPassword => "dockerconfig-password",
            Rule::DockerconfigAuth => "dockerconfig-auth",
            Rule::ApiKeyAssignment => "api-key-assignment",
            Rule::KnownSecret => "known-secret",
            Rule::DecodeLimit => "decode-limit",
        }
    }
}

/// One plain-text secret found, identified by its fingerprint only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub path: String,
    /// 1-based line in the scanned text (of the outermost layer).
    pub line: usize,
    pub rule: Rule,
    /// The leak engine's precise rule id (`cli-login-password`, ...).
    pub rule_id: String,
    pub fingerprint: Fingerprint,
    /// How the secret was reached, outermost decoding first (`base64`, `gzip`, ...).
    pub encoding: Vec<&'static str>,
}

/// Waivers for findings that are known and accepted (test fixtures, examples).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
}

/// One waiver: every given field must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// The finding's fingerprint (`sha256:1a2b3c4d`).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// A path prefix (`fixtures/`).
    #[serde(default)]
    pub path: Option<String>,
    /// A rule name (`api-key-assignment`).
    #[serde(default)]
    pub rule: Option<String>,
    /// Why this is allowed; required so that every waiver explains itself.
    pub reason: String,
}

impl Allowlist {
    /// Parses an allowlist from TOML; `source` names the file in messages.
    pub fn parse(source: &str, text: &str) -> Result<Allowlist, String> {
        let list: Allowlist = toml::from_str(text).map_err(|e| format!("{source}: {}", e.to_string().trim_end()))?;
        for (i, entry) in list.allow.iter().enumerate() {
            if entry.fingerprint.is_none() && entry.path.is_none() && entry.rule.is_none() {
                return Err(format!(
                    "{source}: field `allow[{i}]`: names no fingerprint, path or rule"
                ));
            }
        }
        Ok(list)
    }

    /// Returns true when a waiver covers a finding of the leak engine (for
    /// history scans): `rule` matches the engine's rule id or its category.
    pub fn waives(&self, finding: &leaks::Finding) -> bool {
        self.waiver_of(finding).is_some()
    }

    /// Returns the first waiver that covers a finding of the leak engine
    /// (to show its reason), matching as [`Allowlist::waives`] does.
    pub fn waiver_of(&self, finding: &leaks::Finding) -> Option<&AllowEntry> {
        let category = category(&finding.rule).name();
        self.allow.iter().find(|a| {
            a.fingerprint
                .as_deref()
                .is_none_or(|f| f == finding.fingerprint.to_string())
                && a.path.as_deref().is_none_or(|p| finding.path.starts_with(p))
                && a.rule.as_deref().is_none_or(|r| r == finding.rule || r == category)
        })
    }

    /// Returns true when a waiver covers `finding`.
    pub fn allows(&self, finding: &Finding) -> bool {
        self.allow.iter().any(|a| {
            a.fingerprint
                .as_deref()
                .is_none_or(|f| f == finding.fingerprint.to_string())
                && a.path.as_deref().is_none_or(|p| finding.path.starts_with(p))
                && a.rule.as_deref().is_none_or(|r| r == finding.rule.name())
        })
    }

    /// Returns the first waiver that covers `finding` (to show its reason).
    pub fn waiver(&self, finding: &Finding) -> Option<&AllowEntry> {
        self.allow.iter().find(|a| {
            a.fingerprint
                .as_deref()
                .is_none_or(|f| f == finding.fingerprint.to_string())
                && a.path.as_deref().is_none_or(|p| finding.path.starts_with(p))
                && a.rule.as_deref().is_none_or(|r| r == finding.rule.name())
        })
    }
}

static SCANNER: LazyLock<Scanner> = LazyLock::new(Scanner::default);

/// Returns the Shannon entropy of `s` in bits per character.
pub fn entropy(s: &str) -> f64 {
    leaks::rules::entropy(s.as_bytes())
}

/// Returns the category of a rule of the leak engine, as allowlists name it.
fn category(id: &str) -> Rule {
    match id {
        "private-key" => Rule::PrivateKey,
        "dockerconfig-password" => Rule::DockerconfigPassword,
        "dockerconfig-auth" => Rule::DockerconfigAuth,
        leaks::KNOWN_KEY => Rule::KnownSecret,
        leaks::DECODE_LIMIT => Rule::DecodeLimit,
        _ => Rule::ApiKeyAssignment,
    }
}

/// Scans `text` (from `path`) for plain-text secrets, also inside every
/// decoding the leak engine follows, and for any of the `known` secrets in
/// any of those layers. Delegates to [`leaks::Scanner`] with the built-in rules.
pub fn scan(path: &str, text: &str, known: &[&str]) -> Vec<Finding> {
    scan_bytes(path, text.as_bytes(), known)
}

/// Scans `bytes` like [`scan`]: binary and non-UTF-8 content is scanned as bytes.
pub fn scan_bytes(path: &str, bytes: &[u8], known: &[&str]) -> Vec<Finding> {
    let found = if known.is_empty() {
        SCANNER.scan(path, bytes)
    } else {
        let keys = known
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| KnownKey::from_bytes("known", k.as_bytes()))
            .collect();
        SCANNER.clone().with_known_keys(keys).scan(path, bytes)
    };
    let mut findings: Vec<Finding> = found
        .into_iter()
        .map(|f| Finding {
            path: f.path,
            line: f.line.unwrap_or(1),
            rule: category(&f.rule),
            rule_id: f.rule,
            fingerprint: f.fingerprint,
            encoding: f.chain.iter().map(|l| l.name()).collect(),
        })
        .collect();
    findings.sort_by(|a, b| (a.line, a.rule.name(), a.fingerprint).cmp(&(b.line, b.rule.name(), b.fingerprint)));
    findings.dedup_by(|a, b| a.line == b.line && a.rule == b.rule && a.fingerprint == b.fingerprint);
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    const KEY: &str = "Xy7_Qz3-Lm9pR2tWv8Kd4sFh6Jb1Nc5Ge0Ua3Yo7Ti2";

    fn rules(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.rule.name()).collect()
    }

    #[test]
    fn finds_dockerconfig_fields_and_never_holds_the_secret() {
        let auth = STANDARD.encode(format!("iamapikey:{KEY}"));
        let text = format!(
            "{{\"auths\":{{\"a.io\":{{\"username\":\"iamapikey\",\"password\":\"{KEY}\",\"auth\":\"{auth}\"}}}}}}"
        );
        let f = scan("x.json", &text, &[]);
        let r = rules(&f);
        assert!(
            r.contains(&"dockerconfig-password") && r.contains(&"dockerconfig-auth"),
            "{r:?}"
        );
        assert!(!format!("{f:?}").contains(KEY));
    }

    #[test]
    fn follows_nested_base64() {
        let inner = format!("{{\"auths\":{{\"a.io\":{{\"password\":\"{KEY}\"}}}}}}");
        let secret_yaml = format!(
            "kind: Secret\ndata:\n  .dockerconfigjson: {}\n",
            STANDARD.encode(&inner)
        );
        let twice = format!("REGISTRY_64={}\n", STANDARD.encode(&secret_yaml));
        let f = scan("env", &twice, &[]);
        let hit = f
            .iter()
            .find(|f| f.rule == Rule::DockerconfigPassword)
            .expect("found through two layers");
        assert_eq!(hit.encoding, vec!["base64", "base64"]);
        assert_eq!(hit.line, 1);
    }

    #[test]
    fn finds_private_keys_assignments_and_known_secrets() {
        let text = format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\napi_key = \"{KEY}\"\nnote: plain\n");
        let r = rules(&scan("f", &text, &[]));
        assert_eq!(r, vec!["private-key", "api-key-assignment"]);
        let f = scan("f", "nothing suspicious here, just hunter2-key", &["hunter2-key"]);
        assert_eq!(rules(&f), vec!["known-secret"]);
    }

    #[test]
    fn ignores_low_entropy_and_fingerprints_and_armor() {
        assert!(scan("f", "password_policy = aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", &[]).is_empty());
        assert!(scan("f", "\"key_fingerprint\": \"sha256:1a2b3c4d\"", &[]).is_empty());
        let armor = format!(
            "-----BEGIN PGP MESSAGE-----\n\n{}\n-----END PGP MESSAGE-----\n",
            STANDARD.encode([0x85u8; 300])
        );
        assert!(scan("f.gpg", &armor, &[]).is_empty());
    }

    #[test]
    fn allowlist_waives_engine_findings_by_rule_id_or_category() {
        let f = &leaks::Scanner::default().scan(
            "notes/a.sh",
            format!("docker login -u iamapikey -p {KEY} jp.icr.io").as_bytes(),
        )[0];
        assert_eq!(f.rule, "cli-login-password");
        let by_id = Allowlist::parse("a.toml", "[[allow]]\nrule = \"cli-login-password\"\nreason = \"x\"\n").unwrap();
        let by_category = Allowlist::parse(
            "a.toml",
            "[[allow]]\nrule = \"api-key-assignment\"\npath = \"notes/\"\nreason = \"x\"\n",
        )
        .unwrap();
        let other = Allowlist::parse("a.toml", "[[allow]]\nrule = \"private-key\"\nreason = \"x\"\n").unwrap();
        assert!(by_id.waives(f) && by_category.waives(f) && !other.waives(f));
    }

    #[test]
    fn allowlist_matches_on_all_given_fields() {
        let f = &scan("fixtures/a.json", &format!("\"password\":\"{KEY}\""), &[])[0];
        let list = Allowlist::parse(
            "allow.toml",
            &format!(
                "[[allow]]\nfingerprint = \"{}\"\nreason = \"example\"\n[[allow]]\npath = \"other/\"\nreason = \"x\"\n",
                f.fingerprint
            ),
        )
        .unwrap();
        assert!(list.allows(f));
        let list = Allowlist::parse("allow.toml", "[[allow]]\npath = \"other/\"\nreason = \"x\"\n").unwrap();
        assert!(!list.allows(f));
        assert!(
            Allowlist::parse("allow.toml", "[[allow]]\nreason = \"x\"\n")
                .unwrap_err()
                .contains("allow[0]")
        );
        assert!(
            Allowlist::parse("allow.toml", "[[allow]]\npath = \"a\"\n")
                .unwrap_err()
                .contains("reason")
        );
    }
}
