//! The leak step of `check`: scans everything merging the pull request adds
//! to history, not only the head's snapshot.
//!
//! Every commit of `base..head` is enumerated through [`super::Revisions::history`]:
//! each blob a commit adds or changes (once, as bytes, whatever its
//! encoding), each commit message and each added file name go through the
//! leak engine ([`crate::secrets_repo::leaks`]). With `--key`, every current
//! and previous key of the base and the head is decrypted and searched for
//! exactly (`known-key`). Waivers come from the base's allowlist only. With
//! a [`KeyVerifier`] (`--iam-check`), each leaked key the engine can extract
//! is exchanged at IAM and graded `verified` (live) or `unverified`.
//!
//! Keys stay in memory (zeroized wrappers) and never reach a message: a
//! finding shows its rule, fingerprint, commit and path only.

use super::policy::Policy;
use super::{CheckRequest, Run, WaivedFinding, open, secret_of, short};
use crate::fingerprint::Fingerprint;
use crate::ops::world::Event;
use crate::pullsecret::dockerconfig;
use crate::secret::ApiKey;
use crate::secrets_repo::git::{ChangeKind, ModeChange};
use crate::secrets_repo::history::{HistoryLimits, Range};
use crate::secrets_repo::layout::{self, Metadata};
use crate::secrets_repo::leaks::{self, DECODE_LIMIT, Finding, KNOWN_KEY, KnownKey, Region, Scanner};
use crate::secrets_repo::pgp::SecretKeys;
use anyhow::Context;
use base64::Engine;
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use zeroize::Zeroizing;

/// What IAM said of a leaked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// IAM issued a token: the key is live.
    Live,
    /// IAM refused it (HTTP 400/401/403), with IAM's words.
    Refused(String),
}

/// Exchanges a leaked key at IAM (`--iam-check`).
pub trait KeyVerifier {
    /// Returns what IAM said of `key`. Errors are environment errors: IAM
    /// cannot be reached or gives no answer rekey can use.
    fn verify(&self, key: &ApiKey) -> anyhow::Result<Liveness>;
}

/// A key of a secret, known because `--key` decrypts it.
struct Known {
    known: KnownKey,
    key: ApiKey,
}

/// Scans `base..head` and records one `leak` check per file (every file
/// the pull request changes, and every path or commit message where a
/// finding was made); returns the findings the base's allowlist waives.
pub(super) fn check(
    run: &mut Run<'_>,
    req: &CheckRequest<'_>,
    policy: &Policy,
    changes: &[ModeChange],
) -> anyhow::Result<Vec<WaivedFinding>> {
    let known = match req.keys {
        Some(keys) => known_keys(run, keys)?,
        None => Vec::new(),
    };
    // Beyond the limits (a file over 16 MiB, too many commits) nothing is
    // scanned: an error naming the limit and the file, as for any file
    // `check` will not read.
    let range = run
        .world
        .git
        .history(&run.base, &run.head, &HistoryLimits::default())
        .context("scanning what the pull request adds to history")?;
    run.world.events.event(Event::Status(format!(
        "scanning {}, {} and {} for leaks{}",
        crate::words::plural(range.commits.len(), "commit", "commits"),
        crate::words::plural(range.blobs.len(), "new file version", "new file versions"),
        crate::words::plural(range.names.len(), "file name", "file names"),
        if known.is_empty() {
            String::new()
        } else {
            format!(
                ", with {}",
                crate::words::plural(known.len(), "known key", "known keys")
            )
        }
    )));
    let scanner = Scanner::default().with_known_keys(known.iter().map(|k| k.known.clone()).collect());
    let findings = covered_by_known_keys(leaks::scan_enumerated(&scanner, &range));

    let mut waived = Vec::new();
    let mut waived_lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut open_findings: Vec<(String, Finding, Vec<String>, bool)> = Vec::new();
    let mut targets = Targets::of(&range);
    // Most specific rule first: the rules file's order, a known key before all.
    let rank = |rule: &str| match rule {
        KNOWN_KEY => 0,
        _ => scanner
            .rules()
            .rules
            .iter()
            .position(|r| r.id == rule)
            .map_or(usize::MAX, |i| i + 1),
    };
    for mut same in group(findings) {
        same.sort_by_key(|f| rank(&f.rule));
        let f = &same[0];
        let target = targets.target(f);
        // A waiver of any rule that found this secret here waives it.
        if let Some((by, w)) = same.iter().find_map(|f| policy.allowlist.waiver_of(f).map(|w| (f, w))) {
            let line = f.line.unwrap_or(1);
            waived_lines.entry(target).or_default().push(format!(
                "waived: line {line} {} {} (reason: {})",
                by.rule, by.fingerprint, w.reason
            ));
            waived.push(WaivedFinding {
                path: f.path.clone(),
                line,
                rule: by.rule.clone(),
                fingerprint: f.fingerprint.to_string(),
                reason: w.reason.clone(),
            });
            continue;
        }
        let mut notes = Vec::new();
        if same.len() > 1 {
            let also: Vec<&str> = same[1..].iter().map(|f| f.rule.as_str()).collect();
            notes.push(format!("also {}", also.join(", ")));
        }
        let head_waives = same.iter().any(|f| policy.head_allowlist.waives(f));
        let Some(f) = same.into_iter().next() else { continue };
        open_findings.push((target, f, notes, head_waives));
    }

    let grades = match run.world.iam {
        Some(iam) => grade(run, iam, &scanner, &range, &known, &open_findings)?,
        None => HashMap::new(),
    };

    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut head_waivable: BTreeSet<String> = BTreeSet::new();
    for (target, f, mut notes, head_waives) in open_findings {
        if head_waives {
            head_waivable.insert(target.clone());
            notes.insert(0, "not waived".to_owned());
        }
        if let Some(g) = grades.get(&f.fingerprint) {
            notes.push(g.text());
        }
        problems
            .entry(target.clone())
            .or_default()
            .push(describe(&f, &target, &notes));
    }
    for target in &head_waivable {
        problems.entry(target.clone()).or_default().push(
            "only this pull request's own allowlist waives these findings, and a waiver waives nothing in the pull request that adds it".to_owned(),
        );
    }

    // One check per changed file (redacted when its name holds a key), then
    // one per other place a finding was made (files a later commit removed,
    // commit messages).
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let shown_changes = changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Deleted)
        .map(|c| targets.shown(&c.path));
    for t in shown_changes.chain(problems.keys().chain(waived_lines.keys()).cloned()) {
        if seen.insert(t.clone()) {
            order.push(t);
        }
    }
    for target in order {
        let mut found = problems.remove(&target).unwrap_or_default();
        let file_waived = waived_lines.remove(&target).unwrap_or_default();
        let ok_detail = if file_waived.is_empty() {
            "no plain-text secret".to_owned()
        } else {
            format!("no plain-text secret but waived findings; {}", file_waived.join("; "))
        };
        if !found.is_empty() {
            found.extend(file_waived);
        }
        run.record("leak", target, found, &ok_detail);
    }
    // Other checks (layout, mode) name changed files too: never by a name
    // that holds a key.
    for r in run.results.iter_mut().filter(|r| r.kind != "leak") {
        let shown = targets.shown(&r.target);
        if shown != r.target {
            r.target = shown;
        }
    }
    let mut live: Vec<(&Fingerprint, &Grade)> = grades.iter().filter(|(_, g)| **g == Grade::Verified).collect();
    live.sort();
    for (fp, _) in live {
        run.record(
            "verified",
            fp.to_string(),
            vec![
                "a key leaked in this pull request is live at IAM (critical): revoke it now, then rewrite the history"
                    .to_owned(),
            ],
            "",
        );
    }
    Ok(waived)
}

/// Drops a rule's finding where a known key is found at the same place
/// with the same fingerprint: the known key says it with certainty.
fn covered_by_known_keys(findings: Vec<Finding>) -> Vec<Finding> {
    let exact: HashSet<(Option<String>, String, Fingerprint)> = findings
        .iter()
        .filter(|f| f.rule == KNOWN_KEY)
        .map(|f| (f.commit.clone(), f.path.clone(), f.fingerprint))
        .collect();
    findings
        .into_iter()
        .filter(|f| f.rule == KNOWN_KEY || !exact.contains(&(f.commit.clone(), f.path.clone(), f.fingerprint)))
        .collect()
}

/// Where a finding was made: region, commit, path, line and secret.
type Place = (Region, Option<String>, String, Option<usize>, Fingerprint);

/// Groups the findings of one secret at one place (several rules may
/// find the same key on the same line), keeping the engine's order.
fn group(findings: Vec<Finding>) -> Vec<Vec<Finding>> {
    let mut groups: Vec<Vec<Finding>> = Vec::new();
    let mut index: HashMap<Place, usize> = HashMap::new();
    for f in findings {
        let key = (f.region, f.commit.clone(), f.path.clone(), f.line, f.fingerprint);
        match index.get(&key) {
            Some(&i) => groups[i].push(f),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![f]);
            }
        }
    }
    groups
}

/// Names the check a finding belongs to.
struct Targets {
    /// Every path of the range as shown: lossy UTF-8, and redacted when the
    /// name holds a key.
    paths: HashSet<String>,
    redacted: HashMap<String, String>,
}

impl Targets {
    fn of(range: &Range) -> Targets {
        let mut paths = HashSet::new();
        for b in &range.blobs {
            let lossy = String::from_utf8_lossy(&b.path).into_owned();
            paths.insert(leaks::redact_name(&lossy));
            paths.insert(lossy);
        }
        Targets {
            paths,
            redacted: HashMap::new(),
        }
    }

    /// Returns the check's target of a finding: the file (an archive's own
    /// path for its entries), or `commit <id>` for a commit message.
    fn target(&mut self, f: &Finding) -> String {
        match f.region {
            Region::CommitMessage => format!("commit {}", short(f.commit.as_deref().unwrap_or("?"))),
            Region::FileName => {
                // `f.path` is already redacted; remember it for the changed file.
                self.redacted.insert(f.path.clone(), f.path.clone());
                f.path.clone()
            }
            Region::Content => {
                let outer = f.path.split('!').next().unwrap_or(&f.path);
                if outer != f.path && self.paths.contains(outer) {
                    outer.to_owned()
                } else {
                    f.path.clone()
                }
            }
        }
    }

    /// Returns a changed file's path as shown: redacted when its name holds a key.
    fn shown(&self, path: &str) -> String {
        let redacted = leaks::redact_name(path);
        if self.redacted.contains_key(&redacted) {
            redacted
        } else {
            path.to_owned()
        }
    }
}

/// Describes one finding by rule, fingerprint, where and how, with `notes`
/// after the fingerprint: never its value.
fn describe(f: &Finding, target: &str, notes: &[String]) -> String {
    let mut text = String::new();
    match f.region {
        Region::FileName => text.push_str("in the file name: "),
        Region::CommitMessage => {
            if let Some(line) = f.line {
                text.push_str(&format!("line {line} of the message: "));
            }
        }
        Region::Content => {
            if f.path != target {
                text.push_str(&format!("{} ", f.path));
            }
            if let Some(line) = f.line {
                text.push_str(&format!("line {line}: "));
            }
        }
    }
    text.push_str(&format!("{} {}", f.rule, f.fingerprint));
    for note in notes {
        text.push_str(&format!(" ({note})"));
    }
    if let Some(label) = &f.label {
        text.push_str(&format!(" (the key of {label}, found exactly)"));
    }
    if !f.chain.is_empty() {
        let via: Vec<&str> = f.chain.iter().map(|l| l.name()).collect();
        text.push_str(&format!(" inside {}", via.join(" inside ")));
    }
    if let Some(detail) = &f.detail
        && f.rule == DECODE_LIMIT
    {
        text.push_str(&format!(" ({detail})"));
    }
    if f.region != Region::CommitMessage
        && let Some(commit) = &f.commit
    {
        text.push_str(&format!(", added in commit {}", short(commit)));
    }
    if let Some(note) = f.history_note() {
        text.push_str(&format!(" ({note})"));
    }
    text
}

/// How IAM graded a leaked key, as trufflehog grades findings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Grade {
    /// IAM issued a token: the key is live (critical).
    Verified,
    /// IAM refused it.
    Unverified(String),
}

impl Grade {
    fn text(&self) -> String {
        match self {
            Grade::Verified => "verified: IAM issued a token, the key is live: revoke it now".to_owned(),
            Grade::Unverified(why) => format!("unverified: IAM refused it ({why})"),
        }
    }
}

/// Exchanges each leaked key the engine (or `--key`) knows the value of
/// at IAM, once per fingerprint.
fn grade(
    run: &Run<'_>,
    iam: &dyn super::KeyVerifier,
    scanner: &Scanner,
    range: &Range,
    known: &[Known],
    findings: &[(String, Finding, Vec<String>, bool)],
) -> anyhow::Result<HashMap<Fingerprint, Grade>> {
    let wanted: HashSet<Fingerprint> = findings
        .iter()
        .map(|(_, f, _, _)| f)
        .filter(|f| f.rule != KNOWN_KEY && f.rule != DECODE_LIMIT)
        .map(|f| f.fingerprint)
        .collect();
    let mut keys: Vec<(Fingerprint, ApiKey)> = Vec::new();
    for c in leaks::candidates(scanner, range, &wanted) {
        if let Ok(text) = std::str::from_utf8(c.expose_secret())
            && let Ok(key) = ApiKey::from_str_checked(text)
        {
            keys.push((c.fingerprint, key));
        }
    }
    for (_, f, _, _) in findings.iter().filter(|(_, f, _, _)| f.rule == KNOWN_KEY) {
        if let Some(k) = known.iter().find(|k| k.known.fingerprint() == f.fingerprint)
            && !keys.iter().any(|(fp, _)| *fp == f.fingerprint)
        {
            keys.push((f.fingerprint, k.key.clone()));
        }
    }
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    run.world.events.event(Event::Status(format!(
        "exchanging the leaked keys of {} at IAM to see which are live",
        crate::words::plural(keys.len(), "finding", "findings")
    )));
    // Once per key: an `auth` pair and the key itself are two findings.
    let mut by_key: HashMap<Fingerprint, Grade> = HashMap::new();
    let mut grades = HashMap::new();
    for (fp, key) in keys {
        let grade = match by_key.get(&key.fingerprint()) {
            Some(g) => g.clone(),
            None => {
                let g = match iam.verify(&key)? {
                    Liveness::Live => Grade::Verified,
                    Liveness::Refused(why) => Grade::Unverified(why),
                };
                by_key.insert(key.fingerprint(), g.clone());
                g
            }
        };
        grades.insert(fp, grade);
    }
    Ok(grades)
}

/// Decrypts every current, previous and pending secret at the base and the head
/// (paths derived from the secrets' names) and returns their keys.
fn known_keys(run: &Run<'_>, keys: &SecretKeys) -> anyhow::Result<Vec<Known>> {
    let mut out: Vec<Known> = Vec::new();
    let revs = [(run.base.clone(), "base"), (run.head.clone(), "head")];
    for (rev, which) in &revs {
        let names: BTreeSet<String> = run
            .world
            .git
            .files(rev)?
            .iter()
            .filter_map(|p| secret_of(p))
            .filter(|(_, kind)| *kind != "meta")
            .map(|(name, _)| name)
            .collect();
        for name in names {
            let dir = layout::REGISTRY_DIR;
            let meta_path = format!("{dir}/{}", layout::meta_file(&name));
            let region = run
                .read(rev, which, &meta_path)?
                .and_then(|b| Metadata::parse(&b, &meta_path).ok())
                .map(|m| m.region);
            let owner = match &region {
                Some(region) => format!("{region} ({name})"),
                None => name.clone(),
            };
            for (file, version) in [
                (layout::active_file(&name), "active"),
                (layout::previous_file(&name), "previous"),
                (layout::pending_file(&name), "pending"),
            ] {
                let path = format!("{dir}/{file}");
                let Some(bytes) = run.read(rev, which, &path)? else {
                    continue;
                };
                let plain = match open(&bytes, keys, run.now) {
                    Ok(plain) => plain,
                    Err(e) => {
                        run.world.events.event(Event::Warning(format!(
                            "{path} at the {which} cannot be decrypted, its key is not searched for exactly: {e}"
                        )));
                        continue;
                    }
                };
                for key in keys_in(&plain) {
                    if !out.iter().any(|k| k.key.fingerprint() == key.fingerprint()) {
                        let label = format!("{owner}, {version} at the {which}");
                        out.push(Known {
                            known: KnownKey::new(label, &key),
                            key,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Returns the API keys of a decrypted dockerconfigjson: each entry's
/// password, or the password its `auth` carries.
fn keys_in(plain: &[u8]) -> Vec<ApiKey> {
    let Ok(config) = dockerconfig::parse(plain) else {
        return Vec::new();
    };
    let mut out: Vec<ApiKey> = Vec::new();
    for entry in config.auths.values() {
        let mut found = Vec::new();
        if let Some(p) = &entry.password
            && let Ok(key) = ApiKey::from_str_checked(p.expose_secret())
        {
            found.push(key);
        }
        if let Some(auth) = &entry.auth
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth.expose_secret())
        {
            let decoded = Zeroizing::new(decoded);
            if let Some(colon) = decoded.iter().position(|&b| b == b':')
                && let Ok(text) = std::str::from_utf8(&decoded[colon + 1..])
                && let Ok(key) = ApiKey::from_str_checked(text)
            {
                found.push(key);
            }
        }
        for key in found {
            if !out.iter().any(|k| k.fingerprint() == key.fingerprint()) {
                out.push(key);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_passwords_and_auths_once() {
        let auth = base64::engine::general_purpose::STANDARD.encode("iamapikey:k2");
        let plain = format!(
            r#"{{"auths":{{"a.io":{{"username":"iamapikey","password":"k1"}},"b.io":{{"auth":"{auth}"}},"c.io":{{"password":"k1"}}}}}}"#
        );
        let keys: Vec<String> = keys_in(plain.as_bytes())
            .iter()
            .map(|k| k.expose_secret().to_owned())
            .collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert!(keys_in(b"not json").is_empty());
    }

    #[test]
    fn a_known_key_covers_a_rule_finding_at_the_same_place() {
        let finding = |rule: &str, path: &str| Finding {
            rule: rule.to_owned(),
            fingerprint: Fingerprint::of(b"k"),
            region: Region::Content,
            path: path.to_owned(),
            commit: Some("c".into()),
            line: Some(1),
            chain: Vec::new(),
            label: None,
            removed_in: None,
            detail: None,
        };
        let kept = covered_by_known_keys(vec![
            finding("cli-login-password", "a"),
            finding(KNOWN_KEY, "a"),
            finding("cli-login-password", "b"),
        ]);
        let kept: Vec<(&str, &str)> = kept.iter().map(|f| (f.rule.as_str(), f.path.as_str())).collect();
        assert_eq!(kept, [("known-key", "a"), ("cli-login-password", "b")]);
    }
}
