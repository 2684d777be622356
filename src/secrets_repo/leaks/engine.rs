//! The scanning engine: applies the rules and the known keys to a blob and
//! to every decoding of it, recursively within the limits, and returns
//! findings that carry fingerprints, never values.

use super::decode::{self, Budget, Layer, Limits, Outcome};
use super::rules::{Check, Rule, RuleSet, entropy};
use crate::fingerprint::Fingerprint;
use crate::secret::ApiKey;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use memchr::memmem;
use std::fmt;
use zeroize::Zeroizing;

/// The rule id of a known key found exactly.
pub const KNOWN_KEY: &str = "known-key";
/// The rule id of a region that would decode beyond a limit (a bomb).
pub const DECODE_LIMIT: &str = "decode-limit";
/// The most matches of one rule taken from one layer.
const MAX_MATCHES: usize = 1000;
/// Marks a layer whose lines are not the file's (inside a join).
const UNKNOWN_LINE: usize = 0;
/// How far a PEM block's END line is looked for.
const PEM_SPAN: usize = 64 << 10;

/// Where in a commit a finding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    /// A file's contents.
    Content,
    /// A commit message.
    CommitMessage,
    /// A file's name.
    FileName,
}

/// One leak found, identified by its fingerprint only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The rule's id (`cli-login-password`, `known-key`, `decode-limit`, ...).
    pub rule: String,
    /// The fingerprint of the secret (of the key itself for `known-key`).
    pub fingerprint: Fingerprint,
    pub region: Region,
    /// The file (for archive entries `outer!entry`); lossy UTF-8 for display.
    pub path: String,
    /// The commit where the blob first appeared in the range, when scanning history.
    pub commit: Option<String>,
    /// 1-based line in the outermost text layer that holds the region.
    pub line: Option<usize>,
    /// The decodings that led to the secret, outermost first.
    pub chain: Vec<Layer>,
    /// The caller's label of a known key (for example its region).
    pub label: Option<String>,
    /// A later commit in the range that removed the blob: still in history.
    pub removed_in: Option<String>,
    /// What limit was hit, for `decode-limit`.
    pub detail: Option<String>,
}

impl Finding {
    /// Returns the decoding chain as `base64>gzip` (outermost first), or `plain`.
    pub fn chain_text(&self) -> String {
        if self.chain.is_empty() {
            "plain".to_owned()
        } else {
            self.chain.iter().map(|l| l.name()).collect::<Vec<_>>().join(">")
        }
    }

    /// Returns the advice for a key that a later commit removed but the
    /// merge would keep in history.
    pub fn history_note(&self) -> Option<String> {
        self.removed_in.as_ref().map(|c| {
            format!(
                "removed in {} but still in history; squash or rewrite before merging",
                &c[..c.len().min(12)]
            )
        })
    }
}

/// A key the caller knows (a current or previous secret), searched exactly
/// in every layer in its raw form and its everyday encodings.
#[derive(Clone)]
pub struct KnownKey {
    label: String,
    fingerprint: Fingerprint,
    needles: Vec<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for KnownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownKey")
            .field("label", &self.label)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl KnownKey {
    /// Returns the known key `key`, reported under `label`.
    pub fn new(label: impl Into<String>, key: &ApiKey) -> KnownKey {
        KnownKey::from_bytes(label, key.expose_secret().as_bytes())
    }

    /// Returns a known secret given as bytes (empty secrets match nothing).
    pub fn from_bytes(label: impl Into<String>, secret: &[u8]) -> KnownKey {
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        if !secret.is_empty() {
            needles.push(Zeroizing::new(secret.to_vec()));
            let userpass = Zeroizing::new([&b"iamapikey:"[..], secret].concat());
            for plain in [secret, &userpass[..]] {
                for encoded in [
                    STANDARD.encode(plain),
                    STANDARD_NO_PAD.encode(plain),
                    URL_SAFE.encode(plain),
                    URL_SAFE_NO_PAD.encode(plain),
                    hex::encode(plain),
                    hex::encode_upper(plain),
                ] {
                    let encoded = Zeroizing::new(encoded.into_bytes());
                    if !needles.iter().any(|n| **n == *encoded) {
                        needles.push(encoded);
                    }
                }
            }
        }
        KnownKey {
            label: label.into(),
            fingerprint: Fingerprint::of(secret),
            needles,
        }
    }

    /// Returns the key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// A candidate secret's value, as a rule matched it (for a `user:password`
/// base64 pair, the password), for the caller to verify (an IAM token
/// exchange). Held in memory only, cleared on drop, never shown: `Debug`
/// prints the rule and fingerprint only.
pub struct Candidate {
    /// The rule that matched it.
    pub rule: String,
    /// The finding's fingerprint (the same as in [`Finding::fingerprint`]).
    pub fingerprint: Fingerprint,
    value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("rule", &self.rule)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Candidate {
    /// Returns the value. Every caller is a place where the secret leaves
    /// its wrapper: keep them few.
    pub fn expose_secret(&self) -> &[u8] {
        &self.value
    }
}

/// The leak scanner: rules, limits and known keys.
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: RuleSet,
    limits: Limits,
    known: Vec<KnownKey>,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner::new(RuleSet::builtin())
    }
}

impl Scanner {
    /// Returns a scanner with `rules`, the default limits and no known keys.
    pub fn new(rules: RuleSet) -> Scanner {
        Scanner {
            rules,
            limits: Limits::default(),
            known: Vec::new(),
        }
    }

    /// Returns the scanner with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Scanner {
        self.limits = limits;
        self
    }

    /// Returns the scanner searching also for `keys`, exactly.
    pub fn with_known_keys(mut self, keys: Vec<KnownKey>) -> Scanner {
        self.known = keys;
        self
    }

    /// Returns the rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Returns the limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scans a file's contents.
    pub fn scan(&self, path: &str, bytes: &[u8]) -> Vec<Finding> {
        self.scan_region(Region::Content, path, None, bytes)
    }

    /// Scans `bytes` (a file's contents, a commit message, or a file name)
    /// and every decoding of it.
    pub fn scan_region(&self, region: Region, path: &str, commit: Option<&str>, bytes: &[u8]) -> Vec<Finding> {
        if is_encrypted_message(bytes) {
            return Vec::new();
        }
        let mut walk = Walk {
            scanner: self,
            region,
            commit,
            budget: Budget::new(&self.limits),
            out: Vec::new(),
            values: None,
        };
        walk.layer(bytes, path, &mut Vec::new(), None);
        let mut out = walk.out;
        // One finding per secret and rule in a region: the most direct
        // decoding chain, then the first line.
        out.sort_by(|a, b| {
            (&a.path, &a.rule, a.fingerprint, a.chain.len(), a.line).cmp(&(
                &b.path,
                &b.rule,
                b.fingerprint,
                b.chain.len(),
                b.line,
            ))
        });
        out.dedup_by(|a, b| a.path == b.path && a.rule == b.rule && a.fingerprint == b.fingerprint);
        out.sort_by(|a, b| (&a.path, a.line, &a.rule).cmp(&(&b.path, b.line, &b.rule)));
        out
    }

    /// Returns the values of the secrets the rules find in `bytes` (and
    /// every decoding of it), one per fingerprint, for verification. Known
    /// keys are not repeated (the caller holds them); PEM blocks are not
    /// values.
    pub fn candidates(&self, region: Region, bytes: &[u8]) -> Vec<Candidate> {
        if is_encrypted_message(bytes) {
            return Vec::new();
        }
        let mut walk = Walk {
            scanner: self,
            region,
            commit: None,
            budget: Budget::new(&self.limits),
            out: Vec::new(),
            values: Some(Vec::new()),
        };
        walk.layer(bytes, "", &mut Vec::new(), None);
        let mut values = walk.values.unwrap_or_default();
        values.sort_by_key(|c| c.fingerprint);
        values.dedup_by_key(|c| c.fingerprint);
        values
    }
}

struct Walk<'a> {
    scanner: &'a Scanner,
    region: Region,
    commit: Option<&'a str>,
    budget: Budget,
    out: Vec<Finding>,
    /// Collects the matched values when asked to ([`Scanner::candidates`]).
    values: Option<Vec<Candidate>>,
}

/// Line numbers of a layer, computed once.
struct Lines(Vec<usize>);

impl Lines {
    fn of(bytes: &[u8]) -> Lines {
        Lines(memchr::memchr_iter(b'\n', bytes).collect())
    }

    fn at(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

fn trim_value(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && matches!(first, b'"' | b'\'' | b'`')
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && matches!(last, b'"' | b'\'' | b'`' | b',' | b';' | b')' | b'.' | b'\r')
    {
        s = rest;
    }
    s
}

/// Returns the password of a base64 `user:password`.
fn userpass_password(s: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let plain = Zeroizing::new(decode::base64_decode(s)?);
    let colon = memchr::memchr(b':', &plain)?;
    Some(Zeroizing::new(plain[colon + 1..].to_vec()))
}

fn is_userpass_base64(s: &[u8]) -> bool {
    decode::base64_decode(s)
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|s| s.split_once(':').is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()))
}

impl Walk<'_> {
    fn push(&mut self, rule: &str, fingerprint: Fingerprint, path: &str, line: Option<usize>, chain: &[Layer]) {
        self.out.push(Finding {
            rule: rule.to_owned(),
            fingerprint,
            region: self.region,
            path: path.to_owned(),
            commit: self.commit.map(str::to_owned),
            line,
            chain: chain.to_vec(),
            label: None,
            removed_in: None,
            detail: None,
        });
    }

    fn layer(&mut self, bytes: &[u8], path: &str, chain: &mut Vec<Layer>, fixed_line: Option<usize>) {
        let lines = if fixed_line.is_none() {
            Some(Lines::of(bytes))
        } else {
            None
        };
        let line_at = |offset: usize| {
            fixed_line
                .or_else(|| lines.as_ref().map(|l| l.at(offset)))
                .filter(|&l| l != UNKNOWN_LINE)
        };
        let scanner = self.scanner;
        for rule in &scanner.rules.rules {
            self.apply(rule, bytes, path, chain, &line_at);
        }
        for key in &scanner.known {
            if let Some(offset) = key.needles.iter().find_map(|n| memmem::find(bytes, n)) {
                self.push(KNOWN_KEY, key.fingerprint, path, line_at(offset), chain);
                if let Some(f) = self.out.last_mut() {
                    f.label = Some(key.label.clone());
                }
            }
        }
        let limits = scanner.limits;
        if chain.len() >= limits.max_depth {
            if let Some(layer) = decode::container_kind(bytes) {
                self.limit(
                    path,
                    chain,
                    line_at(0),
                    layer,
                    format!("nested deeper than {} decodings", limits.max_depth),
                );
            }
            return;
        }
        for outcome in decode::decode_all(bytes, &limits, &mut self.budget) {
            match outcome {
                Outcome::Decoded(d) => {
                    let inner_path;
                    let (path, fixed) = match &d.entry {
                        Some(entry) => {
                            inner_path = format!("{path}!{}", String::from_utf8_lossy(entry));
                            (inner_path.as_str(), None)
                        }
                        None if d.layer.is_container() || matches!(d.layer, Layer::Utf16le | Layer::Utf16be) => {
                            (path, fixed_line)
                        }
                        // Joining removes line breaks: lines inside are not the file's.
                        None if d.layer == Layer::Join => (path, Some(fixed_line.unwrap_or(UNKNOWN_LINE))),
                        None => (path, line_at(d.offset)),
                    };
                    chain.push(d.layer);
                    self.layer(&d.bytes, path, chain, fixed);
                    chain.pop();
                }
                Outcome::Limit { layer, offset, what } => {
                    self.limit(path, chain, line_at(offset), layer, what);
                }
            }
        }
    }

    fn limit(&mut self, path: &str, chain: &mut Vec<Layer>, line: Option<usize>, layer: Layer, what: String) {
        chain.push(layer);
        let fingerprint = Fingerprint::of(format!("{path}:{what}").as_bytes());
        self.push(DECODE_LIMIT, fingerprint, path, line, chain);
        chain.pop();
        if let Some(f) = self.out.last_mut() {
            f.detail = Some(what);
        }
    }

    fn apply(
        &mut self,
        rule: &Rule,
        bytes: &[u8],
        path: &str,
        chain: &[Layer],
        line_at: &dyn Fn(usize) -> Option<usize>,
    ) {
        let rules = &self.scanner.rules;
        for caps in rule.pattern.captures_iter(bytes).take(MAX_MATCHES) {
            let Some(m) = caps.name("secret").or_else(|| caps.get(0)) else {
                continue;
            };
            let secret = trim_value(m.as_bytes());
            if secret.len() < rule.min_length || entropy(secret) < rule.entropy || rules.benign_match(secret).is_some()
            {
                continue;
            }
            if let Some(near) = &rule.near {
                let from = m.start().saturating_sub(rule.near_bytes);
                let to = m.end().saturating_add(rule.near_bytes).min(bytes.len());
                if !near.is_match(&bytes[from..to]) {
                    continue;
                }
            }
            let fingerprint = match rule.check {
                Some(Check::UserpassBase64) if !is_userpass_base64(secret) => continue,
                Some(Check::PemBlock) => {
                    let rest = &bytes[m.start()..bytes.len().min(m.start().saturating_add(PEM_SPAN))];
                    let end = memmem::find(rest, b"-----END")
                        .and_then(|e| memmem::find(&rest[e + 8..], b"-----").map(|x| e + 8 + x + 5))
                        .unwrap_or(m.len());
                    Fingerprint::of(&rest[..end.min(rest.len())])
                }
                _ => Fingerprint::of(secret),
            };
            if let Some(values) = &mut self.values {
                let value = match rule.check {
                    Some(Check::PemBlock) => None,
                    Some(Check::UserpassBase64) => userpass_password(secret),
                    None => Some(Zeroizing::new(secret.to_vec())),
                };
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    values.push(Candidate {
                        rule: rule.id.clone(),
                        fingerprint,
                        value,
                    });
                }
            }
            self.push(&rule.id, fingerprint, path, line_at(m.start()), chain);
        }
    }
}

/// Returns true when `bytes` are one whole encrypted OpenPGP message
/// (session keys, then encrypted data, nothing else): ciphertext holds no
/// plain text to find, and its armor is random base64 that the rules would
/// otherwise read as text (a 44-character run beside the letters `ibm`
/// turned up in about one armored message in 200).
fn is_encrypted_message(bytes: &[u8]) -> bool {
    bytes.starts_with(b"-----BEGIN PGP MESSAGE-----") && crate::secrets_repo::pgp::validate_message(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Xy7_Qz3-Lm9pR2tWv8Kd4sFh6Jb1Nc5Ge0Ua3Yo7Ti2";

    /// rekey's own ciphertexts are not findings: their armor is random
    /// base64, in which about one message in 200 once showed an
    /// "IBM-shaped key" beside the letters `ibm`.
    #[test]
    fn encrypted_messages_are_never_findings() {
        use crate::secrets_repo::pgp;
        use sequoia_openpgp::cert::CertBuilder;
        let (cert, _) = CertBuilder::general_purpose(Some("r <r@example.com>"))
            .generate()
            .unwrap();
        let now = std::time::SystemTime::now();
        let set = pgp::check_recipients(
            &[cert.strip_secret_key_material()],
            now,
            pgp::Validity {
                min: None,
                warn: std::time::Duration::ZERO,
            },
        )
        .unwrap();
        let scanner = Scanner::default();
        for i in 0..400u32 {
            let plaintext = format!("{i:0900}");
            let sealed = pgp::seal(plaintext.as_bytes(), &set).unwrap();
            assert!(
                scanner.scan("registry/X.gpg", &sealed).is_empty(),
                "message {i} is a finding"
            );
        }
        // The false alarm itself: armor-shaped random base64 that is not a
        // valid message is still scanned as text, and this one (a fixed
        // pseudo-random body) holds an "IBM-shaped key" beside `ibm`.
        let bytes: Vec<u8> = (0..900u64)
            .map(|j| ((18 * 2_654_435_761 + j * 40_503 + j * j) % 251) as u8 ^ (j as u8).wrapping_mul(18))
            .collect();
        let body = STANDARD.encode(&bytes);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let armor = format!(
            "-----BEGIN PGP MESSAGE-----\n\n{}\n=abcd\n-----END PGP MESSAGE-----\n",
            lines.join("\n")
        );
        assert!(pgp::validate_message(armor.as_bytes()).is_err());
        assert!(!scanner.scan("registry/X.gpg", armor.as_bytes()).is_empty());
    }

    #[test]
    fn candidates_are_the_values_of_findings_and_never_shown() {
        let auth = STANDARD.encode(format!("iamapikey:{KEY}"));
        let text = format!(
            "docker login -u iamapikey -p {KEY} jp.icr.io\n{{\"auths\":{{\"a.io\":{{\"auth\":\"{auth}\"}}}}}}\n"
        );
        let scanner = Scanner::default();
        let findings = scanner.scan("notes.sh", text.as_bytes());
        let candidates = scanner.candidates(Region::Content, text.as_bytes());
        // Each candidate is a finding's fingerprint, once.
        for c in &candidates {
            assert!(findings.iter().any(|f| f.fingerprint == c.fingerprint), "{c:?}");
        }
        let mut fps: Vec<Fingerprint> = candidates.iter().map(|c| c.fingerprint).collect();
        fps.dedup();
        assert_eq!(fps.len(), candidates.len());
        // The key's own value, and the password inside the `auth` pair.
        let direct = candidates
            .iter()
            .find(|c| c.fingerprint == Fingerprint::of(KEY.as_bytes()))
            .expect("the key itself");
        assert_eq!(direct.expose_secret(), KEY.as_bytes());
        let pair = candidates
            .iter()
            .find(|c| c.rule == "dockerconfig-auth")
            .expect("the auth pair");
        assert_eq!(pair.expose_secret(), KEY.as_bytes());
        assert!(!format!("{candidates:?}").contains(KEY));
        assert!(scanner.candidates(Region::Content, b"nothing here").is_empty());
    }
}
