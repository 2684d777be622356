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
pub use engine::{DECODE_LIMIT, Finding, KNOWN_KEY, KnownKey, Region, Scanner};
pub use rules::{RuleSet, RulesError};

use crate::secrets_repo::history::{self, HistoryError, HistoryLimits};
use rayon::prelude::*;
use std::path::Path;

/// Scans what merging `head` into `base` adds to history: every blob added
/// or changed by a commit in `base..head` (once, attributed to the commit
/// and path where it first appeared, with the commit that later removed it
/// if one did), every commit message, and every file name.
pub fn scan_range(
    scanner: &Scanner,
    repo: &Path,
    base: &str,
    head: &str,
    limits: &HistoryLimits,
) -> Result<Vec<Finding>, HistoryError> {
    let range = history::enumerate(repo, base, head, limits)?;
    let mut findings: Vec<Finding> = range
        .blobs
        .par_iter()
        .flat_map_iter(|blob| {
            let path = String::from_utf8_lossy(&blob.path);
            let mut found = scanner.scan_region(Region::Content, &path, Some(&blob.commit), &blob.bytes);
            for f in &mut found {
                f.removed_in.clone_from(&blob.removed_in);
            }
            found
        })
        .collect();
    for commit in &range.commits {
        findings.extend(scanner.scan_region(
            Region::CommitMessage,
            "(commit message)",
            Some(&commit.id),
            &commit.message,
        ));
    }
    for name in &range.names {
        let path = String::from_utf8_lossy(&name.path);
        findings.extend(scanner.scan_region(Region::FileName, &path, Some(&name.commit), &name.path));
    }
    Ok(findings)
}
