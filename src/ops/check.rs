//! `check` as a library operation: the pre-merge verdict on a pull request
//! to the secrets repo.
//!
//! Exists so that the verdict is computed in one place that tests can drive
//! without a process, and so that the pull request cannot shape it: every
//! rule it is judged by (the recipient policy, the leak allowlist) is read at
//! the base. The head's versions of those files are only reported (who gains
//! access, which waivers would be added). The outside world comes in through
//! narrow interfaces: [`Revisions`] (git), [`PullVerifier`] (the registry),
//! the clock and the event sink.

mod leaks;
mod policy;
#[cfg(test)]
mod tests;

pub use leaks::{KeyVerifier, Liveness};
use policy::Policy;
pub use policy::{KeyNames, PolicyChanges, Recipient, Waiver};

use crate::ops::world::{Clock, Event, Events};
use crate::pullsecret::catalog::{Catalog, Region};
use crate::pullsecret::dockerconfig::{self, DockerConfig};
use crate::registry::HostResult;
use crate::secrets_repo::authorship;
use crate::secrets_repo::git::{self, ChangeKind, GitError, ModeChange};
use crate::secrets_repo::history::{self, HistoryError, HistoryLimits, Range};
use crate::secrets_repo::layout::{self, Metadata, Version};
use crate::secrets_repo::leakscan::Allowlist;
use crate::secrets_repo::pgp::{self, RecipientSet, SecretKeys};
use crate::secrets_repo::signing::{AllowedSigners, SignError};
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// The leak allowlist, read at the base.
pub const ALLOWLIST_FILE: &str = ".rekey/leak-allowlist.toml";

/// The only files a pull request may add or change under `.rekey/`.
pub const KNOWN_REKEY_FILES: &[&str] = &[layout::RECIPIENTS_FILE, ALLOWLIST_FILE, layout::SIGNERS_FILE];

/// The largest file `check` reads from either revision (16 MiB): pull
/// request content is hostile and must not exhaust memory.
pub const MAX_FILE: u64 = 16 << 20;

/// The git file mode of a regular, non-executable file: the only kind a
/// pull request may add or change.
pub const REGULAR_FILE: u32 = 0o100644;

/// Reads revisions of the secrets repo.
pub trait Revisions {
    /// Returns the full commit ID that `rev` names.
    fn rev_parse(&self, rev: &str) -> Result<String, GitError>;
    /// Lists the files that differ between two commits, with their modes.
    fn changes(&self, base: &str, head: &str) -> Result<Vec<ModeChange>, GitError>;
    /// Returns a file's size at `rev`, or `None` when it does not exist there.
    fn size(&self, rev: &str, path: &str) -> Result<Option<u64>, GitError>;
    /// Returns a file's contents at `rev`, or `None` when it does not exist there.
    fn show(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError>;
    /// Lists the files tracked at `rev`.
    fn files(&self, rev: &str) -> Result<Vec<String>, GitError>;
    /// Enumerates what merging `head` into `base` adds to history: every
    /// commit of `base..head`, each blob added or changed, each file name.
    fn history(&self, base: &str, head: &str, limits: &HistoryLimits) -> Result<Range, HistoryError>;
}

/// A git repository read with the git CLI ([`crate::secrets_repo::git`]).
#[derive(Debug, Clone)]
pub struct GitRepo(pub PathBuf);

impl Revisions for GitRepo {
    fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        git::rev_parse(&self.0, rev)
    }

    fn changes(&self, base: &str, head: &str) -> Result<Vec<ModeChange>, GitError> {
        git::changed_modes(&self.0, base, head)
    }

    fn size(&self, rev: &str, path: &str) -> Result<Option<u64>, GitError> {
        git::blob_size(&self.0, rev, path)
    }

    fn show(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        git::show(&self.0, rev, path)
    }

    fn files(&self, rev: &str) -> Result<Vec<String>, GitError> {
        git::ls_tree(&self.0, rev)
    }

    fn history(&self, base: &str, head: &str, limits: &HistoryLimits) -> Result<Range, HistoryError> {
        history::enumerate(&self.0, base, head, limits)
    }
}

/// What pulling the probe image with one secret found.
#[derive(Debug)]
pub enum PullOutcome {
    /// One result per host of the secret.
    Checked(Vec<HostResult>),
    /// The secret's entries cannot be used to pull (a bad host, no credentials).
    Unusable(String),
}

/// Pulls the probe image from every host of a decrypted secret with that
/// entry's own credentials (`--verify-pull`).
pub trait PullVerifier {
    /// Checks every host of `config`; `secret` names it in results. Errors
    /// are environment errors (the HTTP client cannot start).
    fn pull(&self, secret: &str, config: &DockerConfig) -> anyhow::Result<PullOutcome>;
}

/// What to check. Not `Debug`: it holds unlocked secret keys.
pub struct CheckRequest<'a> {
    /// The revision the pull request merges into: the policy comes from here.
    pub base: String,
    /// The pull request's revision.
    pub head: String,
    /// A key that decrypts the secrets, to check their contents.
    pub keys: Option<&'a SecretKeys>,
    /// The region catalog, to check each secret's hosts (with `keys`).
    pub catalog: Option<&'a Catalog>,
    /// An allowlist the operator gave (`--allowlist`): used instead of the base's.
    pub allowlist: Option<Allowlist>,
}

/// The outside world `check` sees.
pub struct CheckWorld<'a> {
    pub git: &'a dyn Revisions,
    /// Pulls with each changed secret (`--verify-pull`, needs `keys`).
    pub pull: Option<&'a dyn PullVerifier>,
    /// Exchanges each leaked key found at IAM to grade it (`--iam-check`).
    pub iam: Option<&'a dyn KeyVerifier>,
    pub clock: &'a dyn Clock,
    pub events: &'a dyn Events,
}

/// One check's verdict (a JUnit test case).
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub kind: &'static str,
    pub target: String,
    pub ok: bool,
    pub detail: String,
}

/// A secret the pull request changes, with what changed (fingerprints only).
#[derive(Debug, Clone, Serialize)]
pub struct SecretChange {
    pub secret: String,
    pub region: Option<String>,
    /// `added`, `rotated`, `reencrypted` (same key and contents, new
    /// recipients or encryption), `changed` or `removed`.
    pub change: &'static str,
    pub old_key_fingerprint: Option<String>,
    pub new_key_fingerprint: Option<String>,
    /// The new version's key name, when the metadata records one.
    pub new_key_name: Option<String>,
    pub hosts_added: Vec<String>,
    pub hosts_removed: Vec<String>,
    /// True when the contents were decrypted and compared (`--key`); else
    /// `reencrypted` rests on what the metadata says.
    pub contents_checked: bool,
}

/// A plain-text secret finding that an allowlist entry at the base waives.
#[derive(Debug, Clone, Serialize)]
pub struct WaivedFinding {
    pub path: String,
    pub line: usize,
    pub rule: String,
    pub fingerprint: String,
    pub reason: String,
}

/// The verdict on a pull request.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    /// The base's commit ID.
    pub base: String,
    /// The head's commit ID.
    pub head: String,
    pub checks: Vec<CheckResult>,
    pub changes: Vec<SecretChange>,
    /// What the pull request changes in the recipient policy and allowlist.
    pub policy_changes: PolicyChanges,
    /// Findings waived by the allowlist at the base, with the reason.
    pub waived: Vec<WaivedFinding>,
}

impl CheckReport {
    /// Returns the number of failed checks.
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

struct Run<'a> {
    world: &'a CheckWorld<'a>,
    base: String,
    head: String,
    now: SystemTime,
    results: Vec<CheckResult>,
}

impl Run<'_> {
    fn record(&mut self, kind: &'static str, target: impl Into<String>, problems: Vec<String>, ok_detail: &str) {
        let ok = problems.is_empty();
        let detail = if ok { ok_detail.to_owned() } else { problems.join("; ") };
        self.results.push(CheckResult {
            kind,
            target: target.into(),
            ok,
            detail,
        });
    }

    fn at_head(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.read(&self.head, "head", path)
    }

    fn at_base(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.read(&self.base, "base", path)
    }

    /// Reads a file at a revision, refusing one larger than [`MAX_FILE`].
    fn read(&self, rev: &str, which: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.world.git.size(rev, path)? {
            None => Ok(None),
            Some(n) if n > MAX_FILE => anyhow::bail!(
                "{path} at the {which} is {n} bytes; check reads files of at most {MAX_FILE} bytes (a secrets repo holds no larger file)"
            ),
            Some(_) => Ok(self.world.git.show(rev, path)?),
        }
    }
}

/// Splits `registry/<NAME>.gpg|.previous.gpg|.pending.gpg|.meta.json` into the secret name.
pub fn secret_of(path: &str) -> Option<(String, &'static str)> {
    let file = path.strip_prefix(&format!("{}/", layout::REGISTRY_DIR))?;
    if file.contains('/') {
        return None;
    }
    for (suffix, kind) in [
        (".previous.gpg", "previous"),
        (".pending.gpg", "pending"),
        (".meta.json", "meta"),
        (".gpg", "active"),
    ] {
        if let Some(name) = file.strip_suffix(suffix) {
            return Some((name.to_owned(), kind));
        }
    }
    None
}

/// Checks the pull request `req.base..req.head` and returns the verdict.
/// Errors are about the environment or the operator's input (a revision
/// that does not exist, an unreadable base allowlist), never about the pull
/// request's content: that is a failing check in the report.
pub fn check(req: &CheckRequest<'_>, world: &CheckWorld<'_>) -> anyhow::Result<CheckReport> {
    let base = world
        .git
        .rev_parse(&req.base)
        .with_context(|| format!("--base `{}`", req.base))?;
    let head = world
        .git
        .rev_parse(&req.head)
        .with_context(|| format!("--head `{}`", req.head))?;
    let mut run = Run {
        world,
        base,
        head,
        now: world.clock.now().into(),
        results: Vec::new(),
    };
    let changes = world.git.changes(&run.base, &run.head)?;
    world.events.event(Event::Status(format!(
        "checking {} against the policy at {}",
        crate::words::plural(changes.len(), "changed file", "changed files"),
        short(&run.base)
    )));
    let policy = policy::read(&mut run, req, &changes)?;
    check_tree(&mut run, &changes);
    let secrets = check_files(&mut run, &changes)?;
    let waived = leaks::check(&mut run, req, &policy, &changes)?;
    let mut summary = Vec::new();
    for name in &secrets {
        if let Some(change) = check_secret(&mut run, req, &policy, &changes, name)? {
            summary.push(change);
        }
    }
    if run.results.is_empty() {
        run.record("changes", "diff", Vec::new(), "the pull request changes no file");
    }
    Ok(CheckReport {
        ok: run.results.iter().all(|r| r.ok),
        base: run.base,
        head: run.head,
        checks: run.results,
        changes: summary,
        policy_changes: policy.changes,
        waived,
    })
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn is_changed(changes: &[ModeChange], path: &str) -> bool {
    changes.iter().any(|c| c.path == path)
}

/// Fails files rekey does not know under `.rekey/`, and anything but a
/// regular non-executable file (executables, symlinks, submodules).
fn check_tree(run: &mut Run<'_>, changes: &[ModeChange]) {
    for c in changes.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        // Case-insensitively: on macOS and Windows `.Rekey/` is `.rekey/`.
        if c.path.to_ascii_lowercase().starts_with(".rekey/") && !KNOWN_REKEY_FILES.contains(&c.path.as_str()) {
            run.record(
                "layout",
                &c.path,
                vec![format!(
                    "rekey does not know this file: .rekey/ holds only {} (rekey keeps its state outside the work tree)",
                    KNOWN_REKEY_FILES.join(", ")
                )],
                "",
            );
        }
        let what = match c.new_mode {
            Some(REGULAR_FILE) | None => continue,
            Some(0o100755) => "an executable file (mode 100755)",
            Some(0o120000) => "a symbolic link (mode 120000)",
            Some(0o160000) => "a submodule (mode 160000)",
            Some(_) => "not a regular file",
        };
        run.record(
            "mode",
            &c.path,
            vec![format!(
                "{what}: the secrets repo holds only regular, non-executable files (mode 100644)"
            )],
            "",
        );
    }
}

/// Checks the registry layout of every changed file; returns the secrets
/// the pull request touches. (Reading and scanning what the pull request
/// adds to history, bounded in size, is [`leaks::check`]'s.)
fn check_files(run: &mut Run<'_>, changes: &[ModeChange]) -> anyhow::Result<BTreeSet<String>> {
    let mut secrets = BTreeSet::new();
    for change in changes {
        if change.kind == ChangeKind::Deleted {
            if let Some((name, _)) = secret_of(&change.path) {
                secrets.insert(name);
            }
            continue;
        }
        if change.path.starts_with(&format!("{}/", layout::REGISTRY_DIR)) {
            match secret_of(&change.path) {
                Some((name, _)) => {
                    secrets.insert(name);
                }
                None => run.record(
                    "layout",
                    &change.path,
                    vec![format!(
                        "{}/ holds only <NAME>.gpg, <NAME>.previous.gpg, <NAME>.pending.gpg and <NAME>.meta.json",
                        layout::REGISTRY_DIR
                    )],
                    "",
                ),
            }
        }
    }
    Ok(secrets)
}

/// Checks one changed secret: addressed to the base policy, metadata
/// consistent, and with a key its contents; returns its summary line.
fn check_secret(
    run: &mut Run<'_>,
    req: &CheckRequest<'_>,
    policy: &Policy,
    changes: &[ModeChange],
    name: &str,
) -> anyhow::Result<Option<SecretChange>> {
    let dir = layout::REGISTRY_DIR;
    let meta_path = format!("{dir}/{}", layout::meta_file(name));
    let active_path = format!("{dir}/{}", layout::active_file(name));
    let previous_path = format!("{dir}/{}", layout::previous_file(name));
    let pending_path = format!("{dir}/{}", layout::pending_file(name));
    let head_meta = match run.at_head(&meta_path)? {
        None => {
            let problems = if run.at_head(&active_path)?.is_none() {
                Vec::new()
            } else {
                vec!["the secret has no metadata file".to_owned()]
            };
            run.record(
                "metadata",
                &meta_path,
                problems,
                "the secret was removed with its metadata",
            );
            return Ok(Some(SecretChange {
                secret: name.to_owned(),
                region: None,
                change: "removed",
                old_key_fingerprint: None,
                new_key_fingerprint: None,
                new_key_name: None,
                hosts_added: Vec::new(),
                hosts_removed: Vec::new(),
                contents_checked: false,
            }));
        }
        Some(bytes) => match Metadata::parse(&bytes, &meta_path) {
            Ok(meta) => meta,
            Err(e) => {
                run.record("metadata", &meta_path, vec![e.to_string()], "");
                return Ok(None);
            }
        },
    };
    let mut meta_problems = Vec::new();
    if (is_changed(changes, &active_path) || is_changed(changes, &previous_path) || is_changed(changes, &pending_path))
        && !is_changed(changes, &meta_path)
    {
        meta_problems.push("an encrypted file changed but its metadata did not".to_owned());
    }
    // A pending version is never served: it lives only in its own file,
    // described by the metadata's `pending`.
    if head_meta.pending.is_none() && run.at_head(&pending_path)?.is_some() {
        meta_problems.push(format!(
            "{pending_path} exists but the metadata has no `pending` version to describe it"
        ));
    }
    if head_meta.name != name {
        meta_problems.push(format!(
            "field `name` is `{}`, the file is named for `{name}`",
            head_meta.name
        ));
    }
    // Paths are derived from the secret's name, never taken from the metadata.
    let versions = [
        (
            Some(&head_meta.active),
            &active_path,
            layout::active_file(name),
            "active",
        ),
        (
            head_meta.previous.as_ref(),
            &previous_path,
            layout::previous_file(name),
            "previous",
        ),
        (
            head_meta.pending.as_ref(),
            &pending_path,
            layout::pending_file(name),
            "pending",
        ),
    ];
    for (version, path, pinned, field) in versions {
        let Some(version) = version else { continue };
        if version.file != pinned {
            meta_problems.push(format!(
                "field `{field}.file` is `{}`, it must be `{pinned}`",
                version.file
            ));
        }
        match run.at_head(path)? {
            None => meta_problems.push(format!("`{}` names {path}, which does not exist", version.state)),
            Some(bytes) => {
                let problems = match &policy.recipients {
                    Ok(set) => addressing_problems(&bytes, version, set, &policy.names),
                    Err(e) => vec![format!("no usable recipient policy at the base: {e}")],
                };
                run.record(
                    "recipients",
                    path.as_str(),
                    problems,
                    "a complete OpenPGP message addressed to exactly the recipient policy at the base",
                );
            }
        }
    }
    run.record(
        "metadata",
        &meta_path,
        meta_problems,
        "consistent with the encrypted files",
    );

    let base_meta = run
        .at_base(&meta_path)?
        .and_then(|b| Metadata::parse(&b, &meta_path).ok());
    // A pull request that only seals (or replaces) a pending version leaves
    // the served key as it is: summarized as `pending`, current -> pending key.
    let new_pending = head_meta.pending.as_ref().filter(|p| {
        base_meta.as_ref().is_some_and(|b| {
            b.active.key_fingerprint == head_meta.active.key_fingerprint
                && b.pending
                    .as_ref()
                    .is_none_or(|bp| bp.plaintext_digest != p.plaintext_digest)
        })
    });
    let mut change = SecretChange {
        secret: name.to_owned(),
        region: Some(head_meta.region.clone()),
        change: match &base_meta {
            None => "added",
            Some(b) if b.active.key_fingerprint != head_meta.active.key_fingerprint => "rotated",
            Some(_) if new_pending.is_some() => "pending",
            Some(b) if same_contents(b, &head_meta) => "reencrypted",
            Some(_) => "changed",
        },
        old_key_fingerprint: base_meta.as_ref().map(|b| b.active.key_fingerprint.clone()),
        new_key_fingerprint: Some(new_pending.unwrap_or(&head_meta.active).key_fingerprint.clone()),
        new_key_name: new_pending.unwrap_or(&head_meta.active).key_name.clone(),
        hosts_added: Vec::new(),
        hosts_removed: Vec::new(),
        contents_checked: false,
    };
    if let Some(signers) = &policy.signers {
        authorship_check(run, req, signers, name, &head_meta, base_meta.as_ref())?;
    }
    if let Some(keys) = req.keys {
        let region = req.catalog.and_then(|c| c.get(&head_meta.region));
        let mut problems = Vec::new();
        if req.catalog.is_some() && region.is_none() {
            problems.push(format!("region `{}` is not in the catalog", head_meta.region));
        }
        let head_plain = match run.at_head(&active_path)? {
            Some(bytes) => match open(&bytes, keys, run.now) {
                Ok(plain) => Some(plain),
                Err(e) => {
                    problems.push(format!("cannot decrypt: {e}"));
                    None
                }
            },
            None => None,
        };
        if let Some(plain) = &head_plain {
            problems.extend(secret_problems(plain, &head_meta, region));
            let base_plain = match &base_meta {
                Some(_) => run
                    .at_base(&active_path)?
                    .and_then(|bytes| open(&bytes, keys, run.now).ok()),
                None => None,
            };
            if let Some(base_plain) = &base_plain {
                change.contents_checked = true;
                if change.change == "reencrypted" && base_plain.as_slice() != plain.as_slice() {
                    change.change = "changed";
                }
            }
            let (added, removed) = host_changes(base_plain.as_ref().map(|p| p.as_slice()), plain);
            change.hosts_added = added;
            change.hosts_removed = removed;
            if let Some(pull) = run.world.pull {
                pull_checks(run, pull, name, plain)?;
            }
        }
        run.record("secret", &active_path, problems, "consistent pull secret");
        if let Some(pending) = &head_meta.pending
            && let Some(bytes) = run.at_head(&pending_path)?
        {
            // The pending version is checked like the served one, against
            // its own metadata.
            let as_served = Metadata {
                active: pending.clone(),
                ..head_meta.clone()
            };
            let problems = match open(&bytes, keys, run.now) {
                Ok(plain) => secret_problems(&plain, &as_served, region),
                Err(e) => vec![format!("cannot decrypt: {e}")],
            };
            run.record("secret", &pending_path, problems, "consistent pull secret (pending)");
        }
    }
    Ok(Some(change))
}

/// Checks who published a changed secret, with public keys only: its
/// statement is signed by a signer allowed at the base, hashes exactly the
/// head's ciphertext files, agrees with the metadata and is numbered above
/// the base's version (no replay of an older signed version). With a key,
/// the signature inside the ciphertext must be by the same certificate.
fn authorship_check(
    run: &mut Run<'_>,
    req: &CheckRequest<'_>,
    signers: &Result<AllowedSigners, String>,
    name: &str,
    head_meta: &Metadata,
    base_meta: Option<&Metadata>,
) -> anyhow::Result<()> {
    let meta_path = format!("{}/{}", layout::REGISTRY_DIR, layout::meta_file(name));
    let signers = match signers {
        Ok(s) => s,
        Err(e) => {
            run.record(
                "authorship",
                &meta_path,
                vec![format!("no usable allowed signers at the base: {e}")],
                "",
            );
            return Ok(());
        }
    };
    let current = run.at_head(&format!("{}/{}", layout::REGISTRY_DIR, layout::active_file(name)))?;
    let previous = match &head_meta.previous {
        Some(_) => run.at_head(&format!("{}/{}", layout::REGISTRY_DIR, layout::previous_file(name)))?,
        None => None,
    };
    let pending = match &head_meta.pending {
        Some(_) => run.at_head(&format!("{}/{}", layout::REGISTRY_DIR, layout::pending_file(name)))?,
        None => None,
    };
    let Some(current) = current else {
        // The missing file is already a metadata finding.
        return Ok(());
    };
    let mut problems = Vec::new();
    let mut ok_detail = String::new();
    match authorship::verify(
        head_meta,
        &current,
        previous.as_deref(),
        pending.as_deref(),
        signers,
        run.now,
    ) {
        Err(SignError::NoSignature) => problems.push(format!(
            "unsigned: the base requires a statement signed by an allowed signer ({})",
            layout::SIGNERS_FILE
        )),
        Err(e) => problems.push(format!("not from an allowed signer at the base: {e}")),
        Ok((st, signer)) => {
            let base_version = base_meta.map_or(0, Metadata::latest_version);
            if st.version <= base_version {
                problems.push(format!(
                    "version {} signed by {} is not newer than the base's version {base_version}: an older signed version replayed",
                    st.version, signer.name
                ));
            }
            if let Some(keys) = req.keys {
                match pgp::open_verified(&current, keys, signers, run.now) {
                    Err(e) => problems.push(format!("cannot decrypt to check the inner signature: {e}")),
                    Ok(opened) => match opened.signature {
                        None => problems.push("the ciphertext is not signed inside".to_owned()),
                        Some(Err(e)) => problems.push(format!("the signature inside the ciphertext: {e}")),
                        Some(Ok(inner)) if !inner.same_certificate(&signer) => problems.push(format!(
                            "the ciphertext is signed inside by {}, the statement by {}",
                            inner.name, signer.name
                        )),
                        Some(Ok(_)) => {}
                    },
                }
            }
            let restores = st
                .restores
                .map(|r| format!(", restoring version {r}"))
                .unwrap_or_default();
            ok_detail = format!(
                "version {}{restores} signed by {} (fingerprint {}) at {}",
                st.version,
                signer.name.user_id,
                signer.name.fingerprint,
                pgp::show_time(signer.signed_at)
            );
            if !problems.is_empty() {
                problems.push(ok_detail.clone());
            }
        }
    }
    run.record("authorship", &meta_path, problems, &ok_detail);
    Ok(())
}

/// True when two metadata files describe the same keys and contents: only
/// the recipients or the encryption differ (a re-encryption).
fn same_contents(base: &Metadata, head: &Metadata) -> bool {
    let same = |a: &Version, b: &Version| {
        a.state == b.state
            && a.key_name == b.key_name
            && a.key_fingerprint == b.key_fingerprint
            && a.plaintext_digest == b.plaintext_digest
    };
    let same_opt = |a: &Option<Version>, b: &Option<Version>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same(a, b),
        _ => false,
    };
    base.region == head.region
        && same(&base.active, &head.active)
        && same_opt(&base.previous, &head.previous)
        && same_opt(&base.pending, &head.pending)
}

/// Checks that an encrypted file is one complete message addressed to
/// exactly the base policy and agrees with its metadata; names each
/// certificate by user ID and fingerprint.
fn addressing_problems(bytes: &[u8], version: &Version, policy: &RecipientSet, names: &KeyNames) -> Vec<String> {
    let shape = match pgp::validate_message(bytes) {
        Ok(shape) => shape,
        Err(e) => return vec![format!("not a complete, well-formed OpenPGP message: {e}")],
    };
    if shape.seipd_version != 1 {
        return vec![format!(
            "the message uses SEIPDv{}, which rekey never writes and GnuPG 2.2 cannot read",
            shape.seipd_version
        )];
    }
    let mut addressed = shape.key_ids;
    addressed.sort();
    addressed.dedup();
    let want: Vec<String> = policy.key_ids().into_iter().collect();
    let mut problems = Vec::new();
    if addressed != want {
        let missing: Vec<String> = want
            .iter()
            .filter(|k| !addressed.contains(k))
            .map(|k| names.name(k))
            .collect();
        let extra: Vec<String> = addressed
            .iter()
            .filter(|k| !want.contains(k))
            .map(|k| names.name(k))
            .collect();
        let mut msg = "not addressed to exactly the recipient policy at the base".to_owned();
        if !missing.is_empty() {
            msg.push_str(&format!(": missing {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            msg.push_str(&format!(": not in the policy {}", extra.join(", ")));
        }
        problems.push(msg);
    }
    if version.recipient_key_ids != addressed {
        problems.push(format!(
            "metadata lists key IDs [{}] but the file is addressed to [{}]",
            version.recipient_key_ids.join(", "),
            addressed.join(", ")
        ));
    }
    let fingerprints = policy.fingerprints();
    if version.recipients != fingerprints {
        let show = |v: &[String]| v.iter().map(|f| names.cert(f)).collect::<Vec<_>>().join(", ");
        problems.push(format!(
            "metadata lists recipients [{}] but the policy at the base holds [{}]",
            show(&version.recipients),
            show(&fingerprints)
        ));
    }
    problems
}

/// Decrypts a message; `pgp::open` validates its structure before sequoia
/// parses it, bounds the plain text and turns any parser panic into an error.
fn open(bytes: &[u8], keys: &SecretKeys, now: SystemTime) -> Result<Zeroizing<Vec<u8>>, String> {
    pgp::open(bytes, keys, now).map_err(|e| e.to_string())
}

/// Checks a decrypted secret as `rekey inspect` does, against its metadata and region.
fn secret_problems(plain: &[u8], meta: &Metadata, region: Option<&Region>) -> Vec<String> {
    let mut problems = Vec::new();
    if !meta.active.plaintext_digest.matches(plain) {
        problems.push("the plaintext does not match the digest in the metadata".to_owned());
    }
    match dockerconfig::parse(plain) {
        Err(e) => problems.push(e.to_string()),
        Ok(config) => {
            let report = dockerconfig::check(&config, region);
            problems.extend(report.problems.iter().cloned());
            for h in &report.hosts {
                problems.extend(h.problems.iter().map(|p| format!("{}: {p}", h.host)));
            }
            if let Some(fp) = report.key_fingerprint
                && fp.to_string() != meta.active.key_fingerprint
            {
                problems.push(format!(
                    "the secret carries key {fp}, the metadata says {}",
                    meta.active.key_fingerprint
                ));
            }
        }
    }
    problems
}

fn hosts_of(plain: &[u8]) -> BTreeSet<String> {
    dockerconfig::parse(plain)
        .map(|c| c.auths.into_keys().collect())
        .unwrap_or_default()
}

/// Returns the hosts `head` adds to and removes from `base`.
fn host_changes(base: Option<&[u8]>, head: &[u8]) -> (Vec<String>, Vec<String>) {
    let head = hosts_of(head);
    let base = base.map(hosts_of).unwrap_or_default();
    (
        head.difference(&base).cloned().collect(),
        base.difference(&head).cloned().collect(),
    )
}

/// Pulls the probe image from every host of a decrypted secret.
fn pull_checks(run: &mut Run<'_>, pull: &dyn PullVerifier, name: &str, plain: &[u8]) -> anyhow::Result<()> {
    // A secret that cannot be parsed is already reported by its `secret` check.
    let Ok(config) = dockerconfig::parse(plain) else {
        return Ok(());
    };
    match pull.pull(name, &config)? {
        PullOutcome::Unusable(e) => run.record("pull", name, vec![e], ""),
        PullOutcome::Checked(results) => {
            for r in results {
                let problems = if r.passed() {
                    Vec::new()
                } else {
                    vec![format!("{}: {}", r.class, r.detail)]
                };
                run.record("pull", format!("{name} {}", r.host), problems, "pulls the probe image");
            }
        }
    }
    Ok(())
}
