//! The auth health gate: reads the auth health signals from Prometheus and
//! says what an on-call engineer would conclude (healthy, degraded, outage),
//! whom to escalate to, and whether to open an incident.
//!
//! The core takes its inputs as values: the rules, a [`Source`] that answers
//! queries (a live Prometheus or saved responses, both in the cli layer), the
//! evaluation time and the window. It never reads the clock or the network
//! itself. A rotation gates on it like this:
//!
//! ```no_run
//! # fn demo(source: &dyn rekey::health::Source) -> anyhow::Result<()> {
//! use rekey::health::{self, Rules};
//! let now = chrono::Utc::now(); // the cli layer reads the clock
//! let report = health::evaluate(&Rules::defaults()?, source, now, std::time::Duration::from_secs(3600))?;
//! if report.exit() != rekey::exit::Exit::Ok {
//!     // stop the rotation, show report.verdict and report.escalations()
//! }
//! # Ok(()) }
//! ```

pub mod evaluate;
pub mod prom;
pub mod rules;

pub use evaluate::{Count, Report, RuleReport, Status, evaluate};
pub use prom::printable;
pub use rules::{Rule, Rules, RulesError};

use chrono::{DateTime, Utc};
use std::time::Duration;

/// One query the gate needs answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `<rule>.<part>`, e.g. `redhat-auth.total`: names the query in messages and saved files.
    pub name: String,
    /// The PromQL expression.
    pub promql: String,
    /// Instant (`/api/v1/query`) or range (`/api/v1/query_range`).
    pub kind: QueryKind,
}

/// Which Prometheus API a query goes to, with its times.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryKind {
    /// `/api/v1/query?time=...`: the result is a vector.
    Instant { time: DateTime<Utc> },
    /// `/api/v1/query_range?start=...&end=...&step=...`: the result is a matrix.
    Range {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    },
}

/// Answers queries with the raw body of a Prometheus API response.
pub trait Source {
    /// Returns the response body for `query`, or why it could not be had.
    fn fetch(&self, query: &Query) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>>;
}

/// Why the gate could not reach a verdict. Never "healthy" by default.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("query `{name}` could not be answered")]
    Source {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Response(#[from] prom::ResponseError),
    #[error("no rules to evaluate: an empty gate would always say healthy")]
    NoRules,
    #[error("--window {window} is shorter than rule `{rule}`'s `within` ({within})")]
    WindowTooShort {
        rule: String,
        window: String,
        within: String,
    },
}

/// Formats a duration as humantime does (`1h`, `3m`, `1h 30m`).
pub fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
