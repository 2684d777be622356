//! The narrow interfaces through which operations see the outside world
//! that is not the secrets repo or git: the clock and the event sink.

use chrono::{DateTime, Utc};
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
