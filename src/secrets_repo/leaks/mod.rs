//! Leak scanning for secrets PRs: rules as data, a bounded decoding
//! pipeline, known keys found exactly, and the scan of every commit a merge
//! adds to history. Findings carry fingerprints, never values.
//!
//! - [`rules`]: the rules file format and the built-in `rules/leaks.toml`.
//! - [`decode`]: base64, hex, percent, escapes, UTF-16, gzip/zlib, zip, tar,
//!   joined strings; all within [`Limits`].
//! - [`engine`]: [`Scanner`] applies rules and [`KnownKey`]s to every layer.
//! - [`scan_range`]: enumerates `base..head` with [`crate::secrets_repo::history`]
//!   and scans each new blob once, each commit message and each file name.

pub mod decode;
pub mod engine;
pub mod rules;

pub use decode::{Layer, Limits};
pub use engine::{Candidate, DECODE_LIMIT, Finding, KNOWN_KEY, KnownKey, Region, Scanner};
pub use rules::{RuleSet, RulesError};

use crate::fingerprint::Fingerprint;
use crate::secrets_repo::history::{self, HistoryError, HistoryLimits, Range};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Returns a file name fit to show when it holds a key: each part of 16 or
/// more characters between `/`, `.`, spaces and commas is replaced.
pub fn redact_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut part = String::new();
    let flush = |part: &mut String, out: &mut String| {
        if part.chars().count() >= 16 {
            out.push_str("<redacted>");
        } else {
            out.push_str(part);
        }
        part.clear();
    };
    for c in name.chars() {
        if matches!(c, '/' | '.' | ' ' | ',') {
            flush(&mut part, &mut out);
            out.push(c);
        } else {
            part.push(c);
        }
    }
    flush(&mut part, &mut out);
    out
}

/// Scans what merging `head` into `base` adds to history: every blob added
/// or changed by a commit in `base..head` (once, attributed to the commit
/// and path where it first appeared, with the commit that later removed it
/// if one did), every commit message, and every file name. A file name that
/// holds a key is shown redacted ([`redact_name`]) in every finding.
pub fn scan_range(
    scanner: &Scanner,
    repo: &Path,
    base: &str,
    head: &str,
    limits: &HistoryLimits,
) -> Result<Vec<Finding>, HistoryError> {
    let range = history::enumerate(repo, base, head, limits)?;
    Ok(scan_enumerated(scanner, &range))
}

/// Scans a range already enumerated, as [`scan_range`] does.
pub fn scan_enumerated(scanner: &Scanner, range: &Range) -> Vec<Finding> {
    // File names first: a name that holds a key is shown redacted everywhere.
    let mut findings = Vec::new();
    let mut redacted: HashMap<&[u8], String> = HashMap::new();
    for name in &range.names {
        let shown = String::from_utf8_lossy(&name.path);
        let mut found = scanner.scan_region(Region::FileName, &shown, Some(&name.commit), &name.path);
        if !found.is_empty() {
            let safe = redact_name(&shown);
            for f in &mut found {
                f.path.clone_from(&safe);
            }
            redacted.insert(&name.path, safe);
            findings.extend(found);
        }
    }
    let shown_path = |path: &[u8]| {
        redacted
            .get(path)
            .cloned()
            .unwrap_or_else(|| String::from_utf8_lossy(path).into_owned())
    };
    let in_blobs: Vec<Finding> = range
        .blobs
        .par_iter()
        .flat_map_iter(|blob| {
            let path = shown_path(&blob.path);
            let mut found = scanner.scan_region(Region::Content, &path, Some(&blob.commit), &blob.bytes);
            for f in &mut found {
                f.removed_in.clone_from(&blob.removed_in);
            }
            found
        })
        .collect();
    findings.extend(in_blobs);
    for commit in &range.commits {
        findings.extend(scanner.scan_region(
            Region::CommitMessage,
            "(commit message)",
            Some(&commit.id),
            &commit.message,
        ));
    }
    findings
}

/// Returns the values of the rule findings of `range` whose fingerprints
/// are `wanted`, one per fingerprint, for the caller to verify. Scans the
/// range again, collecting values: call it only when there is something
/// to verify.
pub fn candidates(scanner: &Scanner, range: &Range, wanted: &HashSet<Fingerprint>) -> Vec<Candidate> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<Candidate> = range
        .blobs
        .par_iter()
        .flat_map_iter(|blob| scanner.candidates(Region::Content, &blob.bytes))
        .collect();
    for name in &range.names {
        found.extend(scanner.candidates(Region::FileName, &name.path));
    }
    for commit in &range.commits {
        found.extend(scanner.candidates(Region::CommitMessage, &commit.message));
    }
    found.retain(|c| wanted.contains(&c.fingerprint));
    found.sort_by_key(|c| c.fingerprint);
    found.dedup_by_key(|c| c.fingerprint);
    found
}
