//! Finds plain-text secrets in text that is about to be committed to the
//! secrets repo, where only OpenPGP messages belong.
//!
//! Modelled on gitleaks: a fixed set of rules (regular expressions with
//! entropy and decoding checks), findings identified by a fingerprint of the
//! matched secret so that an allowlist can waive one without naming it, and
//! base64 blobs decoded and scanned again (Kubernetes Secret data, `auth`
//! fields, `_64` variables). Findings never carry the secret itself.

use crate::fingerprint::Fingerprint;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// How deep base64 inside base64 is followed.
const MAX_DEPTH: usize = 3;
/// The shortest base64 run that is decoded and scanned again.
const MIN_BASE64: usize = 24;

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
    pub fingerprint: Fingerprint,
    /// How the secret was reached: empty, or `base64` once per decoded layer.
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

static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN ((RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----").expect("valid regex")
});
static PASSWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""password"\s*:\s*"((?:[^"\\]|\\.)+)""#).expect("valid regex"));
static AUTH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""auth"\s*:\s*"([A-Za-z0-9+/]+={0,2})""#).expect("valid regex"));
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:api[_-]?key|apikey|secret|token|passw(?:or)?d)[A-Za-z0-9_]*["']?\s*[:=]\s*["']?([A-Za-z0-9_\-+/.=]{20,})"#,
    )
    .expect("valid regex")
});
static BASE64_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/]{24,}={0,2}").expect("valid regex"));

/// Returns the Shannon entropy of `s` in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / n)
        .map(|p| -p * p.log2())
        .sum()
}

/// Scans `text` (from `path`) for plain-text secrets, also inside base64,
/// and for any of the `known` secrets in any of those layers.
pub fn scan(path: &str, text: &str, known: &[&str]) -> Vec<Finding> {
    let mut findings = Vec::new();
    scan_layer(path, text, known, &mut Vec::new(), None, &mut findings);
    findings.sort_by(|a, b| (a.line, a.rule.name(), a.fingerprint).cmp(&(b.line, b.rule.name(), b.fingerprint)));
    findings.dedup_by(|a, b| a.line == b.line && a.rule == b.rule && a.fingerprint == b.fingerprint);
    findings
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

fn scan_layer(
    path: &str,
    text: &str,
    known: &[&str],
    encoding: &mut Vec<&'static str>,
    outer_line: Option<usize>,
    out: &mut Vec<Finding>,
) {
    let push = |offset: usize, rule: Rule, secret: &str, out: &mut Vec<Finding>| {
        out.push(Finding {
            path: path.to_owned(),
            line: outer_line.unwrap_or_else(|| line_of(text, offset)),
            rule,
            fingerprint: Fingerprint::of(secret.as_bytes()),
            encoding: encoding.clone(),
        });
    };
    for m in PRIVATE_KEY.find_iter(text) {
        push(m.start(), Rule::PrivateKey, m.as_str(), out);
    }
    for c in PASSWORD.captures_iter(text) {
        let m = c.get(1).expect("group 1");
        push(m.start(), Rule::DockerconfigPassword, m.as_str(), out);
    }
    for c in AUTH.captures_iter(text) {
        let m = c.get(1).expect("group 1");
        let decodes_to_userpass = STANDARD
            .decode(m.as_str())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|s| s.split_once(':').is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()));
        if decodes_to_userpass {
            push(m.start(), Rule::DockerconfigAuth, m.as_str(), out);
        }
    }
    for c in ASSIGNMENT.captures_iter(text) {
        let m = c.get(1).expect("group 1");
        if entropy(m.as_str()) >= 3.5 && !m.as_str().starts_with("sha256:") {
            push(m.start(), Rule::ApiKeyAssignment, m.as_str(), out);
        }
    }
    for secret in known.iter().filter(|s| !s.is_empty()) {
        if let Some(offset) = text.find(secret) {
            push(offset, Rule::KnownSecret, secret, out);
        }
    }
    if encoding.len() >= MAX_DEPTH {
        return;
    }
    for m in BASE64_RUN.find_iter(text) {
        if m.as_str().len() < MIN_BASE64 {
            continue;
        }
        let Ok(bytes) = STANDARD.decode(m.as_str()) else {
            continue;
        };
        let Ok(inner) = String::from_utf8(bytes) else { continue };
        encoding.push("base64");
        let line = outer_line.unwrap_or_else(|| line_of(text, m.start()));
        scan_layer(path, &inner, known, encoding, Some(line), out);
        encoding.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
