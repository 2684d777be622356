//! The narrow interfaces through which operations see the outside world:
//! the clock, the event sink, randomness, git and the registry verifier.
//! (The secrets repo on disk is `secrets_repo::store::Store`.)

use crate::registry::{Class, HostResult, Target};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// Tells an operation what time it is.
pub trait Clock {
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always says the same time (tests, `--at` replays).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Something an operation reports while it runs. Never carries a secret:
/// keys appear only as fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A progress line ("verifying 6 regions with key sha256:…").
    Status(String),
    /// Something the operator should know that does not fail the operation.
    Warning(String),
}

/// Receives an operation's progress and warnings.
pub trait Events {
    /// Takes one event.
    fn event(&self, event: Event);

    /// Reports a progress line.
    fn status(&self, line: impl Into<String>)
    where
        Self: Sized,
    {
        self.event(Event::Status(line.into()));
    }

    /// Reports a warning.
    fn warn(&self, line: impl Into<String>)
    where
        Self: Sized,
    {
        self.event(Event::Warning(line.into()));
    }
}

/// Drops every event.
#[derive(Debug, Default)]
pub struct NoEvents;

impl Events for NoEvents {
    fn event(&self, _: Event) {}
}

/// Keeps every event, in order (tests).
#[derive(Debug, Default)]
pub struct RecordedEvents(Mutex<Vec<Event>>);

impl RecordedEvents {
    /// Returns the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Events for RecordedEvents {
    fn event(&self, event: Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

/// Random bytes for the salts of plaintext digests.
pub trait Random {
    /// Returns a fresh 32-byte salt.
    fn salt(&self) -> anyhow::Result<[u8; 32]>;
}

/// The operating system's random numbers (through sequoia).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn salt(&self) -> anyhow::Result<[u8; 32]> {
        let mut salt = [0u8; 32];
        sequoia_openpgp::crypto::random(&mut salt).map_err(|e| anyhow::anyhow!("no random numbers for a salt: {e}"))?;
        Ok(salt)
    }
}

/// Records changed files in the secrets repo's history.
pub trait Git {
    /// Commits exactly `paths` (relative to the repo root) with `message`,
    /// on `branch` when given; returns the commit ID, or `None` when none
    /// of them changed.
    fn commit(&self, branch: Option<&str>, paths: &[String], message: &str) -> anyhow::Result<Option<String>>;

    /// Decides how a commit would go on `branch` (created, checked out, or
    /// fast-forwarded), or refuses a branch it would have to move backwards
    /// or sideways; changes nothing.
    fn plan_branch(&self, branch: &str) -> anyhow::Result<crate::secrets_repo::git::BranchMove>;
}

/// The git CLI in the repo at `repo`.
#[derive(Debug, Clone)]
pub struct GitCli {
    pub repo: PathBuf,
}

impl Git for GitCli {
    fn commit(&self, branch: Option<&str>, paths: &[String], message: &str) -> anyhow::Result<Option<String>> {
        Ok(crate::secrets_repo::git::commit(&self.repo, branch, paths, message)?)
    }

    fn plan_branch(&self, branch: &str) -> anyhow::Result<crate::secrets_repo::git::BranchMove> {
        Ok(crate::secrets_repo::git::plan_branch(&self.repo, branch)?)
    }
}

/// Proves that credentials pull from registry hosts.
pub trait Verifier {
    /// Checks every target; returns one result per target, in order.
    fn verify(&self, targets: Vec<Target>) -> anyhow::Result<Vec<HostResult>>;
}

/// An in-memory registry (tests, where the registry is not the point):
/// every host pulls except those listed with the class they fail with.
/// Records the hosts it was asked about.
#[derive(Debug, Default)]
pub struct StaticVerifier {
    pub failing: BTreeMap<String, Class>,
    /// Hosts the operator allows to serve without the key (`--allow-anonymous`).
    pub anonymous_allowed: BTreeSet<String>,
    asked: Mutex<Vec<String>>,
}

impl StaticVerifier {
    /// A verifier for which `failing` hosts fail with `class`.
    pub fn failing(hosts: &[&str], class: Class) -> StaticVerifier {
        StaticVerifier {
            failing: hosts.iter().map(|h| ((*h).to_owned(), class)).collect(),
            anonymous_allowed: BTreeSet::new(),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// Returns every host asked about so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Verifier for StaticVerifier {
    fn verify(&self, targets: Vec<Target>) -> anyhow::Result<Vec<HostResult>> {
        Ok(targets
            .into_iter()
            .map(|t| {
                let host = t.host.to_string();
                if let Ok(mut asked) = self.asked.lock() {
                    asked.push(host.clone());
                }
                let class = self.failing.get(&host).copied().unwrap_or(Class::Ok);
                HostResult {
                    region: t.region,
                    detail: if class == Class::Ok {
                        "pulled".to_owned()
                    } else {
                        "refused by the test registry".to_owned()
                    },
                    host: host.clone(),
                    class,
                    elapsed_ms: 0,
                    anonymous_allowed: self.anonymous_allowed.contains(&host),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_events_keep_their_order() {
        let events = RecordedEvents::default();
        events.status("one");
        events.warn("two");
        assert_eq!(
            events.events(),
            vec![Event::Status("one".into()), Event::Warning("two".into())]
        );
    }

    #[test]
    fn fixed_clock_does_not_move() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = FixedClock(t);
        assert_eq!(clock.now(), t);
        assert_eq!(clock.now(), t);
    }
}
