//! The policy a pull request is checked against, read at the base, and what
//! the pull request changes in it.
//!
//! Exists so that a pull request cannot vote on its own verdict: the
//! recipient policy and the leak allowlist come from the base revision only;
//! their versions at the head are parsed for one purpose, to report who
//! gains or loses access and which waivers would be added.

use super::{ALLOWLIST_FILE, CheckRequest, Run, is_changed};
use crate::ops::world::Event;
use crate::secrets_repo::git::ModeChange;
use crate::secrets_repo::layout;
use crate::secrets_repo::leakscan::{AllowEntry, Allowlist};
use crate::secrets_repo::pgp::{self, CertName, RecipientSet, Validity};
use crate::secrets_repo::signing::AllowedSigners;
use sequoia_openpgp::Cert;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How long a recipient must stay valid to not be reported as expiring soon.
pub const WARN_VALIDITY: Duration = Duration::from_secs(30 * 86400);

/// One recipient certificate as shown to reviewers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub user_id: String,
    pub fingerprint: String,
    /// RFC 3339 UTC, or `never`; `unknown` when an unusable certificate does not say.
    pub expires: String,
    /// Why the certificate cannot be a recipient, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (fingerprint {}, expires {})",
            self.user_id, self.fingerprint, self.expires
        )?;
        if let Some(p) = &self.problem {
            write!(f, " [unusable: {p}]")?;
        }
        Ok(())
    }
}

/// One leak waiver as shown to reviewers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Waiver {
    pub fingerprint: Option<String>,
    pub path: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
}

impl Waiver {
    /// Returns the waiver of an allowlist entry.
    pub fn of(entry: &AllowEntry) -> Waiver {
        Waiver {
            fingerprint: entry.fingerprint.clone(),
            path: entry.path.clone(),
            rule: entry.rule.clone(),
            reason: entry.reason.clone(),
        }
    }
}

impl std::fmt::Display for Waiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.fingerprint {
            parts.push(format!("fingerprint {v}"));
        }
        if let Some(v) = &self.path {
            parts.push(format!("path {v}"));
        }
        if let Some(v) = &self.rule {
            parts.push(format!("rule {v}"));
        }
        write!(f, "{} (reason: {})", parts.join(", "), self.reason)
    }
}

/// What the pull request changes in the policy files (it takes effect only
/// once merged: the pull request itself is checked against the base).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyChanges {
    pub recipients_added: Vec<Recipient>,
    pub recipients_removed: Vec<Recipient>,
    pub waivers_added: Vec<Waiver>,
    pub waivers_removed: Vec<Waiver>,
    /// Signers the pull request adds to `.rekey/signers.asc` (user ID and fingerprint).
    pub signers_added: Vec<CertName>,
    /// Signers the pull request removes from `.rekey/signers.asc`.
    pub signers_removed: Vec<CertName>,
}

/// Describes each certificate, checked alone against the recipient policy at `now`.
pub fn recipients_of(certs: &[Cert], now: SystemTime) -> Vec<Recipient> {
    let validity = Validity {
        min: None,
        warn: WARN_VALIDITY,
    };
    certs
        .iter()
        .map(|cert| {
            let name = CertName::of(cert);
            let (expires, problem) = match pgp::check_recipients(std::slice::from_ref(cert), now, validity) {
                Ok(set) => (
                    set.certs
                        .first()
                        .and_then(|c| c.expires)
                        .map_or_else(|| "never".to_owned(), pgp::show_time),
                    None,
                ),
                Err(e) => {
                    let expires = match &e {
                        pgp::PgpError::Expired { expired, .. } => expired.clone(),
                        _ => "unknown".to_owned(),
                    };
                    (expires, Some(e.to_string()))
                }
            };
            Recipient {
                user_id: name.user_id,
                fingerprint: name.fingerprint,
                expires,
                problem,
            }
        })
        .collect()
}

/// Returns the recipients in `head` but not in `base`, and those in `base` but not in `head`.
pub fn diff_recipients(base: &[Recipient], head: &[Recipient]) -> (Vec<Recipient>, Vec<Recipient>) {
    let added = head
        .iter()
        .filter(|h| !base.iter().any(|b| b.fingerprint == h.fingerprint))
        .cloned()
        .collect();
    let removed = base
        .iter()
        .filter(|b| !head.iter().any(|h| h.fingerprint == b.fingerprint))
        .cloned()
        .collect();
    (added, removed)
}

/// Returns the waivers in `head` but not in `base`, and those in `base` but not in `head`.
pub fn diff_waivers(base: &Allowlist, head: &Allowlist) -> (Vec<Waiver>, Vec<Waiver>) {
    let base: Vec<Waiver> = base.allow.iter().map(Waiver::of).collect();
    let head: Vec<Waiver> = head.allow.iter().map(Waiver::of).collect();
    (
        head.iter().filter(|w| !base.contains(w)).cloned().collect(),
        base.iter().filter(|w| !head.contains(w)).cloned().collect(),
    )
}

/// Names OpenPGP key IDs by their certificate's user ID and fingerprint.
#[derive(Debug, Default)]
pub struct KeyNames(BTreeMap<String, CertName>);

impl KeyNames {
    /// Learns every key (primary and subkeys) of `certs`.
    pub fn learn(&mut self, certs: &[Cert]) {
        for cert in certs {
            let name = CertName::of(cert);
            for ka in cert.keys() {
                self.0.entry(ka.key().keyid().to_hex()).or_insert_with(|| name.clone());
            }
        }
    }

    /// Returns `user ID (fingerprint F, key ID K)`, or `unknown key ID K`.
    pub fn name(&self, key_id: &str) -> String {
        match self.0.get(key_id) {
            Some(n) => format!("{} (fingerprint {}, key ID {key_id})", n.user_id, n.fingerprint),
            None if key_id == "*" => "an anonymous recipient (key ID hidden)".to_owned(),
            None => format!("unknown key ID {key_id} (no certificate in the base or head policy)"),
        }
    }

    /// Returns `user ID (fingerprint F)` for a certificate fingerprint.
    pub fn cert(&self, fingerprint: &str) -> String {
        match self.0.values().find(|n| n.fingerprint == fingerprint) {
            Some(n) => format!("{} (fingerprint {fingerprint})", n.user_id),
            None => format!("fingerprint {fingerprint}"),
        }
    }
}

/// The policy read at the base, and what the head would change in it.
pub(super) struct Policy {
    pub recipients: Result<RecipientSet, String>,
    pub names: KeyNames,
    pub allowlist: Allowlist,
    pub head_allowlist: Allowlist,
    pub changes: PolicyChanges,
    /// The allowed signers at the base: `None` when the base has no
    /// `signers.asc` (secrets may be unsigned); an error fails every
    /// changed secret (fail closed).
    pub signers: Option<Result<AllowedSigners, String>>,
}

/// Reads the recipient policy and allowlist at the base and reports the head's changes to them.
pub(super) fn read(run: &mut Run<'_>, req: &CheckRequest<'_>, changes: &[ModeChange]) -> anyhow::Result<Policy> {
    let mut names = KeyNames::default();
    let mut policy_changes = PolicyChanges::default();
    let base_certs = match run.at_base(layout::RECIPIENTS_FILE)? {
        None => Err(format!("{} is missing at the base", layout::RECIPIENTS_FILE)),
        Some(bytes) => {
            pgp::parse_certs(&bytes, &format!("{} at the base", layout::RECIPIENTS_FILE)).map_err(|e| e.to_string())
        }
    };
    let recipients = base_certs.as_ref().map_err(Clone::clone).and_then(|certs| {
        names.learn(certs);
        let set = pgp::check_recipients(
            certs,
            run.now,
            Validity {
                min: None,
                warn: WARN_VALIDITY,
            },
        )
        .map_err(|e| format!("the recipient policy at the base is not usable: {e}"))?;
        for c in &set.expiring_soon {
            let when = c.expires.map(pgp::show_time).unwrap_or_default();
            run.world
                .events
                .event(Event::Warning(format!("recipient {} expires at {when}", c.name)));
        }
        Ok(set)
    });
    // An unusable base policy fails every secret file checked against it
    // (see `recipients`), not the pull request as such: a pull request that
    // repairs the policy must be able to pass.
    if let Err(e) = &recipients {
        run.world.events.event(Event::Warning(e.clone()));
    }
    if is_changed(changes, layout::RECIPIENTS_FILE) {
        let base_list = match &base_certs {
            Ok(certs) => recipients_of(certs, run.now),
            Err(_) => Vec::new(),
        };
        let mut problems = Vec::new();
        let head_list = match run.at_head(layout::RECIPIENTS_FILE)? {
            None => {
                problems.push("the pull request removes the recipient policy".to_owned());
                Vec::new()
            }
            Some(bytes) => match pgp::parse_certs(&bytes, &format!("{} at the head", layout::RECIPIENTS_FILE)) {
                Err(e) => {
                    problems.push(e.to_string());
                    Vec::new()
                }
                Ok(certs) => {
                    names.learn(&certs);
                    if let Err(e) = pgp::check_recipients(
                        &certs,
                        run.now,
                        Validity {
                            min: None,
                            warn: WARN_VALIDITY,
                        },
                    ) {
                        problems.push(format!("the recipient policy at the head would not be usable: {e}"));
                    }
                    recipients_of(&certs, run.now)
                }
            },
        };
        let (added, removed) = diff_recipients(&base_list, &head_list);
        let mut detail = vec![
            "the pull request changes the recipient policy (this pull request is checked against the base's)"
                .to_owned(),
        ];
        detail.extend(added.iter().map(|r| format!("recipient added: {r}")));
        detail.extend(removed.iter().map(|r| format!("recipient removed: {r}")));
        let detail = detail.join("; ");
        if !problems.is_empty() {
            problems.push(detail.clone());
        }
        run.record("policy", layout::RECIPIENTS_FILE, problems, &detail);
        policy_changes.recipients_added = added;
        policy_changes.recipients_removed = removed;
    }

    let allowlist = match &req.allowlist {
        Some(list) => list.clone(),
        None => match run.at_base(ALLOWLIST_FILE)? {
            Some(bytes) => Allowlist::parse(
                &format!("{ALLOWLIST_FILE} at the base"),
                &String::from_utf8_lossy(&bytes),
            )
            .unwrap_or_else(|e| {
                // Fail closed, yet let the pull request that repairs it pass.
                run.world
                    .events
                    .event(Event::Warning(format!("{e}: no finding is waived")));
                Allowlist::default()
            }),
            None => Allowlist::default(),
        },
    };
    let mut head_allowlist = Allowlist::default();
    if is_changed(changes, ALLOWLIST_FILE) {
        let base_file = match run.at_base(ALLOWLIST_FILE)? {
            Some(bytes) => Allowlist::parse("base", &String::from_utf8_lossy(&bytes)).unwrap_or_default(),
            None => Allowlist::default(),
        };
        let mut problems = Vec::new();
        if let Some(bytes) = run.at_head(ALLOWLIST_FILE)? {
            match Allowlist::parse(
                &format!("{ALLOWLIST_FILE} at the head"),
                &String::from_utf8_lossy(&bytes),
            ) {
                Ok(list) => head_allowlist = list,
                Err(e) => problems.push(e),
            }
        }
        let (added, removed) = diff_waivers(&base_file, &head_allowlist);
        let mut detail = vec![
            "the pull request changes the leak allowlist (its waivers waive nothing in this pull request)".to_owned(),
        ];
        detail.extend(added.iter().map(|w| format!("waiver added: {w}")));
        detail.extend(removed.iter().map(|w| format!("waiver removed: {w}")));
        run.record("allowlist", ALLOWLIST_FILE, problems, &detail.join("; "));
        policy_changes.waivers_added = added;
        policy_changes.waivers_removed = removed;
    }
    let signers = read_signers(run, changes, &mut policy_changes)?;
    Ok(Policy {
        recipients,
        names,
        allowlist,
        head_allowlist,
        changes: policy_changes,
        signers,
    })
}

/// Reads the allowed signers at the base and reports who the head adds and
/// removes (by user ID and fingerprint): the head's signers take effect only
/// once merged, so a pull request cannot add a signer and use it.
fn read_signers(
    run: &mut Run<'_>,
    changes: &[ModeChange],
    policy_changes: &mut PolicyChanges,
) -> anyhow::Result<Option<Result<AllowedSigners, String>>> {
    let file = layout::SIGNERS_FILE;
    let parse = |bytes: Option<Vec<u8>>, which: &str| {
        bytes.map(|b| AllowedSigners::parse(&b, &format!("{file} at the {which}")).map_err(|e| e.to_string()))
    };
    let base = parse(run.at_base(file)?, "base");
    if let Some(Err(e)) = &base {
        run.world.events.event(Event::Warning(format!(
            "{e}: every changed secret fails the authorship check"
        )));
    }
    if is_changed(changes, file) {
        let mut problems = Vec::new();
        let head = match parse(run.at_head(file)?, "head") {
            None => {
                problems.push("the pull request removes the allowed signers".to_owned());
                AllowedSigners::none()
            }
            Some(Err(e)) => {
                problems.push(e);
                AllowedSigners::none()
            }
            Some(Ok(s)) => {
                for (name, result) in s.check(run.now) {
                    if let Err(e) = result {
                        problems.push(format!("signer {name} would not be usable: {e}"));
                    }
                }
                s
            }
        };
        let base_set = match &base {
            Some(Ok(s)) => s.clone(),
            _ => AllowedSigners::none(),
        };
        let (added, removed) = head.diff(&base_set);
        let mut detail = vec![
            "the pull request changes the allowed signers (this pull request is checked against the base's)".to_owned(),
        ];
        detail.extend(
            added
                .iter()
                .map(|s| format!("signer added: {} (fingerprint {})", s.user_id, s.fingerprint)),
        );
        detail.extend(
            removed
                .iter()
                .map(|s| format!("signer removed: {} (fingerprint {})", s.user_id, s.fingerprint)),
        );
        let detail = detail.join("; ");
        if !problems.is_empty() {
            problems.push(detail.clone());
        }
        run.record("signers", file, problems, &detail);
        policy_changes.signers_added = added;
        policy_changes.signers_removed = removed;
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::CertBuilder;

    fn cert(uid: &str, validity: Option<Duration>) -> Cert {
        CertBuilder::general_purpose(Some(uid))
            .set_validity_period(validity)
            .generate()
            .unwrap()
            .0
            .strip_secret_key_material()
    }

    #[test]
    fn recipients_are_named_with_expiry_and_diffed_by_fingerprint() {
        let now = SystemTime::now();
        let a = cert("a <a@example.com>", None);
        let b = cert("b <b@example.com>", Some(Duration::from_secs(400 * 86400)));
        let base = recipients_of(std::slice::from_ref(&a), now);
        let head = recipients_of(&[a.clone(), b.clone()], now);
        assert_eq!(base[0].expires, "never");
        let (added, removed) = diff_recipients(&base, &head);
        assert!(removed.is_empty());
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].user_id, "b <b@example.com>");
        assert_eq!(added[0].fingerprint, b.fingerprint().to_hex());
        assert!(added[0].expires.starts_with("20"), "{}", added[0].expires);
        assert!(added[0].to_string().contains("expires 20"));
        let (added, removed) = diff_recipients(&head, &base);
        assert_eq!((added.len(), removed.len()), (0, 1));
    }

    #[test]
    fn key_ids_are_named_by_certificate() {
        let a = cert("a <a@example.com>", None);
        let mut names = KeyNames::default();
        names.learn(std::slice::from_ref(&a));
        let sub = a.keys().subkeys().next().unwrap().key().keyid().to_hex();
        let named = names.name(&sub);
        assert!(named.starts_with("a <a@example.com> (fingerprint "), "{named}");
        assert!(named.contains(&a.fingerprint().to_hex()), "{named}");
        assert!(names.name("0011223344556677").starts_with("unknown key ID"));
    }

    #[test]
    fn waivers_are_diffed() {
        let base = Allowlist::parse("b", "[[allow]]\npath = \"docs/\"\nreason = \"x\"\n").unwrap();
        let head = Allowlist::parse(
            "h",
            "[[allow]]\npath = \"docs/\"\nreason = \"x\"\n[[allow]]\nfingerprint = \"sha256:1\"\nreason = \"y\"\n",
        )
        .unwrap();
        let (added, removed) = diff_waivers(&base, &head);
        assert_eq!(added.len(), 1);
        assert!(removed.is_empty());
        assert_eq!(added[0].to_string(), "fingerprint sha256:1 (reason: y)");
    }
}
