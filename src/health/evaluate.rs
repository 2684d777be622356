//! Turns Prometheus answers into verdicts: per rule, then overall.

use super::prom::{self, Labels, Sample, Series};
use super::rules::{Burst, Classified, Kind, PrimaryFallback, Rule, Rules, WhenAbsent};
use super::{HealthError, Query, QueryKind, Source, show_duration};
use crate::exit::Exit;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How bad things are, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing reaches a threshold.
    Healthy,
    /// The metric has no series in the window and the rule cannot tell.
    NoData,
    /// Something fails, and something else carries the load or a team must look.
    Degraded,
    /// Both the primary and the fallback fail: open an incident.
    Outage,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Healthy => "healthy",
            Status::NoData => "no_data",
            Status::Degraded => "degraded",
            Status::Outage => "outage",
        })
    }
}

/// A count from Prometheus: whole numbers show as integers, others with two decimals
/// (`increase` extrapolates, so counts of counters may be fractional).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Count(pub f64);

/// Returns `1 failure`, `2.5 failures`: a count of failures in the right number.
fn failures(n: Count) -> String {
    if n.0 == 1.0 {
        "1 failure".to_owned()
    } else {
        format!("{n} failures")
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:.2}", self.0)
        }
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64((self.0 * 100.0).round() / 100.0)
        }
    }
}

/// A time as RFC 3339 in UTC with seconds (`2026-11-23T12:00:00Z`).
fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(t))
}

fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(t)),
        None => s.serialize_none(),
    }
}

/// The gate's answer: the overall verdict and each rule's.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Status,
    #[serde(serialize_with = "ser_time")]
    pub at: DateTime<Utc>,
    pub window: String,
    pub rules: Vec<RuleReport>,
}

impl Report {
    /// Returns the exit code: 0 healthy, 1 no data, degraded or outage.
    pub fn exit(&self) -> Exit {
        Exit::problem_if(self.verdict != Status::Healthy)
    }

    /// Returns the incident titles to open (non-empty only in an outage).
    pub fn incidents(&self) -> Vec<&str> {
        self.rules.iter().filter_map(|r| r.incident.as_deref()).collect()
    }

    /// Returns every escalation, prefixed with its rule's name.
    pub fn escalations(&self) -> Vec<String> {
        self.rules
            .iter()
            .flat_map(|r| r.escalations.iter().map(move |e| format!("{}: {e}", r.name)))
            .collect()
    }
}

/// One rule's verdict, what it found, and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub status: Status,
    /// One line an on-call engineer reads first.
    pub summary: String,
    /// The title of the incident to open, in an outage.
    pub incident: Option<String>,
    /// Whom to call or what to do, one entry per failing item.
    pub escalations: Vec<String>,
    pub metric: String,
    pub threshold: Count,
    pub within: String,
    #[serde(flatten)]
    pub details: Details,
}

/// What a rule counted, by kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Details {
    PrimaryFallback { methods: Vec<MethodCounts> },
    Classified { classes: Vec<ClassCounts> },
    Burst { groups: Vec<GroupCounts> },
}

/// Attempts of one auth method in the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MethodCounts {
    pub method: String,
    /// `primary`, `fallback` or `other`.
    pub role: &'static str,
    pub success: Count,
    pub failed: Count,
    /// The most failures within the rule's `within` anywhere in the window.
    pub peak_failed: Count,
    /// Failures within the rule's `within` ending at the evaluation time.
    pub recent_failed: Count,
    /// The first failure in the window (to the timeline's step).
    #[serde(serialize_with = "ser_opt_time")]
    pub failures_started: Option<DateTime<Utc>>,
    /// The last failure in the window (to the timeline's step).
    #[serde(serialize_with = "ser_opt_time")]
    pub last_failure: Option<DateTime<Utc>>,
    /// The last success in the window (to the timeline's step).
    #[serde(serialize_with = "ser_opt_time")]
    pub last_success: Option<DateTime<Utc>>,
    /// `none` (no failures in the window), `ongoing` (failures within the
    /// last `within`) or `stopped`.
    pub failures: &'static str,
    /// Failures within the last `within` and no success after the last one.
    pub actively_failing: bool,
    /// Reached the threshold within `within` somewhere in the window.
    pub failing: bool,
}

/// Failures of one class (e.g. identity) in the window.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCounts {
    pub class: String,
    pub count: Count,
    pub peak: Count,
    pub failing: bool,
    pub escalation: String,
    pub methods: Vec<LabelCount>,
}

/// A label value and its count.
#[derive(Debug, Clone, Serialize)]
pub struct LabelCount {
    pub value: String,
    pub count: Count,
}

/// Failures of one group (e.g. one index) in the window.
#[derive(Debug, Clone, Serialize)]
pub struct GroupCounts {
    pub labels: Labels,
    pub total: Count,
    pub peak: Count,
    #[serde(serialize_with = "ser_opt_time")]
    pub peak_at: Option<DateTime<Utc>>,
    pub burst: bool,
}

/// The smallest range-query step; also the resolution of the sliding window.
pub const MIN_STEP: Duration = Duration::from_secs(15);
/// Prometheus refuses range queries of more than 11,000 points per series.
const MAX_POINTS: u64 = 10_000;

/// Returns the step of the range queries for a window.
fn step_of(window: Duration) -> Duration {
    Duration::from_secs(window.as_secs().div_ceil(MAX_POINTS).max(MIN_STEP.as_secs()))
}

/// Returns the first point of a range query that ends exactly at `at`,
/// spans at most `span` and steps by `step`.
fn range_start(at: DateTime<Utc>, span: Duration, step: Duration) -> DateTime<Utc> {
    let steps = span.as_secs() / step.as_secs().max(1);
    i64::try_from(steps * step.as_secs())
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|d| at.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Returns the queries the gate asks for one rule: `presence` (is the metric
/// scraped at all), `total` (counts over the window), `peak` (the alert
/// expression evaluated at every step of the window, the last step at `at`)
/// and, for a `primary-fallback` rule, `timeline` (the count within each
/// step, to tell when failures started and stopped).
pub fn queries(rule: &Rule, at: DateTime<Utc>, window: Duration) -> Vec<Query> {
    let step = step_of(window);
    let mut out = vec![
        Query {
            name: format!("{}.presence", rule.name),
            promql: format!("count(count_over_time({}[{}s]))", rule.metric, window.as_secs()),
            kind: QueryKind::Instant { time: at },
        },
        Query {
            name: format!("{}.total", rule.name),
            promql: rule.count_query(window),
            kind: QueryKind::Instant { time: at },
        },
        Query {
            name: format!("{}.peak", rule.name),
            promql: rule.count_query(rule.within),
            kind: QueryKind::Range {
                start: range_start(at, window.saturating_sub(rule.within), step),
                end: at,
                step,
            },
        },
    ];
    if matches!(rule.kind, Kind::PrimaryFallback(_)) {
        out.push(Query {
            name: format!("{}.timeline", rule.name),
            // One millisecond short of the step: Prometheus 2 ranges are
            // closed at both ends, and a sample on a step's boundary must
            // land in one step only.
            promql: rule.count_query_ms(step.as_millis().saturating_sub(1).max(1)),
            kind: QueryKind::Range {
                start: range_start(at, window.saturating_sub(step), step),
                end: at,
                step,
            },
        });
    }
    out
}

/// Returns every query the rules need, in order (for saving responses).
pub fn all_queries(rules: &Rules, at: DateTime<Utc>, window: Duration) -> Vec<Query> {
    rules.rules.iter().flat_map(|r| queries(r, at, window)).collect()
}

fn fetch(source: &dyn Source, q: &Query) -> Result<Vec<u8>, HealthError> {
    source.fetch(q).map_err(|source| HealthError::Source {
        name: q.name.clone(),
        source,
    })
}

/// Evaluates every rule at `at` over the `window` before it. A rule whose
/// metric has no series gets the verdict its `when_absent` gives; the other
/// rules are evaluated all the same. Fails only when an answer cannot be had.
pub fn evaluate(
    rules: &Rules,
    source: &dyn Source,
    at: DateTime<Utc>,
    window: Duration,
) -> Result<Report, HealthError> {
    if rules.rules.is_empty() {
        return Err(HealthError::NoRules);
    }
    if let Some(rule) = rules.rules.iter().find(|r| window < r.within) {
        return Err(HealthError::WindowTooShort {
            rule: rule.name.clone(),
            window: show_duration(window),
            within: show_duration(rule.within),
        });
    }
    let mut reports = Vec::with_capacity(rules.rules.len());
    for rule in &rules.rules {
        let qs = queries(rule, at, window);
        let present = prom::parse_vector(&qs[0].name, &fetch(source, &qs[0])?)?;
        let totals = prom::parse_vector(&qs[1].name, &fetch(source, &qs[1])?)?;
        let peaks = prom::parse_matrix(&qs[2].name, &fetch(source, &qs[2])?)?;
        let timeline = match qs.get(3) {
            Some(q) => prom::parse_matrix(&q.name, &fetch(source, q)?)?,
            None => Vec::new(),
        };
        let mut report = evaluate_rule(
            rule,
            &Data {
                at,
                totals: &totals,
                peaks: &peaks,
                timeline: &timeline,
            },
        );
        if present.iter().all(|s| s.value <= 0.0) {
            report.escalations.clear();
            report.incident = None;
            match rule.when_absent {
                WhenAbsent::Healthy => {
                    report.status = Status::Healthy;
                    report.summary = format!(
                        "no series of `{}` in the {} window: no failures (when_absent = \"healthy\")",
                        rule.metric,
                        show_duration(window)
                    );
                }
                WhenAbsent::NoData => {
                    report.status = Status::NoData;
                    report.summary = format!(
                        "no series of `{}` in the {} window ending at {}: cannot tell whether it is healthy (is Prometheus scraping it?)",
                        rule.metric,
                        show_duration(window),
                        rfc3339(&at)
                    );
                    report.escalations.push(format!(
                        "check that Prometheus scrapes `{}` (its target is up and exports it)",
                        rule.metric
                    ));
                }
            }
        }
        reports.push(report);
    }
    let verdict = reports.iter().map(|r| r.status).max().unwrap_or(Status::Healthy);
    Ok(Report {
        verdict,
        at,
        window: show_duration(window),
        rules: reports,
    })
}

/// What Prometheus answered for one rule.
pub struct Data<'a> {
    /// The evaluation time.
    pub at: DateTime<Utc>,
    /// The counts over the window, per group.
    pub totals: &'a [Sample],
    /// The count within `within` at every step, the last at `at`.
    pub peaks: &'a [Series],
    /// The count within each step (primary-fallback rules only).
    pub timeline: &'a [Series],
}

/// Evaluates one rule from its `total` vector and `peak` matrix.
pub fn evaluate_rule(rule: &Rule, data: &Data<'_>) -> RuleReport {
    let (totals, peaks) = (data.totals, data.peaks);
    let (status, summary, incident, escalations, details) = match &rule.kind {
        Kind::PrimaryFallback(pf) => primary_fallback(rule, pf, data),
        Kind::Classified(c) => classified(rule, c, totals, peaks),
        Kind::Burst(b) => burst(rule, b, totals, peaks),
    };
    RuleReport {
        name: rule.name.clone(),
        status,
        summary,
        incident,
        escalations,
        metric: rule.metric.clone(),
        threshold: Count(rule.threshold),
        within: show_duration(rule.within),
        details,
    }
}

type Outcome = (Status, String, Option<String>, Vec<String>, Details);

fn reaches(value: f64, threshold: f64) -> bool {
    // Tolerates float noise in extrapolated counts (3.9999999 for 4).
    value + 1e-9 >= threshold
}

fn label<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels.get(name).map(String::as_str).unwrap_or("")
}

fn max_point(series: &Series) -> Option<(f64, f64)> {
    series
        .points
        .iter()
        .copied()
        .fold(None, |best: Option<(f64, f64)>, (t, v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((t, v)),
        })
}

fn point_time(t: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis((t * 1000.0).round() as i64)
}

fn primary_fallback(rule: &Rule, pf: &PrimaryFallback, data: &Data<'_>) -> Outcome {
    let at_secs = data.at.timestamp_millis() as f64 / 1000.0;
    let recent_from =
        data.at - chrono::TimeDelta::seconds(i64::try_from(rule.within.as_secs()).unwrap_or(i64::MAX / 2000));
    let mut methods: BTreeMap<String, MethodCounts> = BTreeMap::new();
    let entry = |methods: &mut BTreeMap<String, MethodCounts>, method: &str| {
        let role = if method == pf.primary {
            "primary"
        } else if method == pf.fallback {
            "fallback"
        } else {
            "other"
        };
        methods.entry(method.to_owned()).or_insert_with(|| MethodCounts {
            method: method.to_owned(),
            role,
            failures: "none",
            ..MethodCounts::default()
        });
    };
    entry(&mut methods, &pf.primary);
    entry(&mut methods, &pf.fallback);
    for s in data.totals {
        let method = label(&s.labels, &pf.method_label);
        entry(&mut methods, method);
        let status = label(&s.labels, &pf.status_label);
        if let Some(m) = methods.get_mut(method) {
            if status == pf.success {
                m.success.0 += s.value;
            } else if status == pf.failure {
                m.failed.0 += s.value;
            }
        }
    }
    // Failures of all methods together within `within`, at each step: the alert.
    let mut all_failed: BTreeMap<i64, f64> = BTreeMap::new();
    for series in data.peaks {
        if label(&series.labels, &pf.status_label) != pf.failure {
            continue;
        }
        let method = label(&series.labels, &pf.method_label);
        entry(&mut methods, method);
        let Some(m) = methods.get_mut(method) else { continue };
        for (t, v) in &series.points {
            *all_failed.entry((t * 1000.0).round() as i64).or_default() += v;
            if (t - at_secs).abs() < 0.001 {
                m.recent_failed.0 += v;
            }
        }
        if let Some((_, v)) = max_point(series) {
            m.peak_failed.0 = m.peak_failed.0.max(v);
        }
    }
    for series in data.timeline {
        let status = label(&series.labels, &pf.status_label);
        let method = label(&series.labels, &pf.method_label);
        entry(&mut methods, method);
        let Some(m) = methods.get_mut(method) else { continue };
        let mut times = series
            .points
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .filter_map(|(t, _)| point_time(*t));
        if status == pf.failure {
            let first = times.next();
            let last = times.next_back().or(first);
            m.failures_started = min_time(m.failures_started, first);
            m.last_failure = m.last_failure.max(last);
        } else if status == pf.success {
            m.last_success = m.last_success.max(times.next_back());
        }
    }
    for m in methods.values_mut() {
        m.failing = reaches(m.peak_failed.0, rule.threshold);
        m.failures = match m.last_failure {
            None => "none",
            Some(last) if last > recent_from => "ongoing",
            Some(_) => "stopped",
        };
        m.actively_failing = m.failures == "ongoing" && m.last_success.is_none_or(|ok| Some(ok) <= m.last_failure);
    }
    let primary = methods.get(&pf.primary).cloned().unwrap_or_default();
    let fallback = methods.get(&pf.fallback).cloned().unwrap_or_default();
    let within = show_duration(rule.within);
    let threshold = Count(rule.threshold);
    let recent_all = Count(methods.values().map(|m| m.recent_failed.0).sum());
    let peak_all = Count(all_failed.values().copied().fold(0.0, f64::max));
    let alerting = reaches(recent_all.0, rule.threshold);
    let at = data.at;
    let describe = |m: &MethodCounts| {
        let timeline = match (m.failures_started, m.last_failure) {
            (Some(first), Some(last)) => format!(
                ", failures started {}, {} (last {}, {} before --at)",
                rfc3339(&first),
                if m.failures == "ongoing" {
                    "still occurring"
                } else {
                    "stopped"
                },
                rfc3339(&last),
                ago(at, last)
            ),
            _ => String::new(),
        };
        format!(
            "{} ({}) {} ok / {} failed{timeline}",
            m.method, m.role, m.success, m.failed
        )
    };
    let counts = format!(
        "{}; {}; {} within the last {within} (alert at {threshold}), peak {peak_all}",
        describe(&primary),
        describe(&fallback),
        failures(recent_all)
    );
    let primary_works_after =
        |failure: Option<DateTime<Utc>>| primary.last_success.is_some_and(|ok| Some(ok) > failure);
    let (status, summary, incident, escalations) = if fallback.actively_failing
        && !primary_works_after(fallback.last_failure)
    {
        (
            Status::Outage,
            format!(
                "fallback {} is actively failing (failed within the last {within}, no success since) and {} does not carry the load: both methods are failing, open an incident; {counts}",
                pf.fallback, pf.primary
            ),
            Some(pf.incident_title.clone()),
            vec![format!(
                "open an incident \"{}\": {}",
                pf.incident_title, pf.incident_escalation
            )],
        )
    } else if primary.actively_failing
        && fallback.success.0 <= 0.0
        && fallback.failed.0 <= 0.0
        && fallback.last_success.is_none()
        && fallback.last_failure.is_none()
    {
        (
            Status::Outage,
            format!(
                "primary {} is actively failing and fallback {} made no attempt in the window: nothing carries the load, open an incident; {counts}",
                pf.primary, pf.fallback
            ),
            Some(pf.incident_title.clone()),
            vec![format!(
                "open an incident \"{}\": {}",
                pf.incident_title, pf.incident_escalation
            )],
        )
    } else if alerting {
        (
            Status::Degraded,
            format!(
                "{} within the last {within} (alert at {threshold}), fallback {} carries the load: no incident; {counts}",
                failures(recent_all),
                pf.fallback
            ),
            None,
            vec![rule.escalation.clone()],
        )
    } else if fallback.actively_failing {
        (
            Status::Degraded,
            format!(
                "fallback {} is actively failing while primary {} works: no incident, but no fallback either; {counts}",
                pf.fallback, pf.primary
            ),
            None,
            vec![format!(
                "fix the fallback method {} before the primary fails: {}",
                pf.fallback, rule.escalation
            )],
        )
    } else {
        (Status::Healthy, counts.clone(), None, Vec::new())
    };
    let details = Details::PrimaryFallback {
        methods: methods.into_values().collect(),
    };
    (status, summary, incident, escalations, details)
}

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long before `at` a time was, as humantime shows it (`51m`).
fn ago(at: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let secs = (at - t).num_seconds().max(0);
    show_duration(Duration::from_secs(secs.unsigned_abs()))
}

const UNCLASSIFIED: &str = "unclassified";

fn classified(rule: &Rule, c: &Classified, totals: &[Sample], peaks: &[Series]) -> Outcome {
    let class_of = |labels: &Labels| -> usize {
        let value = label(labels, &c.label);
        c.classes
            .iter()
            .position(|k| k.pattern.is_match(value))
            .unwrap_or(c.classes.len())
    };
    let mut classes: Vec<ClassCounts> = c
        .classes
        .iter()
        .map(|k| (k.name.as_str(), k.escalation.as_str()))
        .chain(std::iter::once((UNCLASSIFIED, rule.escalation.as_str())))
        .map(|(name, escalation)| ClassCounts {
            class: name.to_owned(),
            count: Count(0.0),
            peak: Count(0.0),
            failing: false,
            escalation: escalation.to_owned(),
            methods: Vec::new(),
        })
        .collect();
    for s in totals {
        let k = &mut classes[class_of(&s.labels)];
        k.count.0 += s.value;
        k.methods.push(LabelCount {
            value: label(&s.labels, &c.label).to_owned(),
            count: Count(s.value),
        });
    }
    // A class's peak is the most its methods failed together within `within`.
    let mut by_time: Vec<BTreeMap<i64, f64>> = vec![BTreeMap::new(); classes.len()];
    for series in peaks {
        let k = class_of(&series.labels);
        for (t, v) in &series.points {
            *by_time[k].entry((t * 1000.0).round() as i64).or_default() += v;
        }
    }
    for (k, sums) in classes.iter_mut().zip(&by_time) {
        k.peak.0 = sums.values().copied().fold(0.0, f64::max);
        k.failing = reaches(k.peak.0, rule.threshold);
        k.methods.sort_by(|a, b| a.value.cmp(&b.value));
    }
    if classes.last().is_some_and(|k| k.count.0 <= 0.0 && k.peak.0 <= 0.0) {
        classes.pop();
    }
    let within = show_duration(rule.within);
    let failing: Vec<&ClassCounts> = classes.iter().filter(|k| k.failing).collect();
    let counts: Vec<String> = classes.iter().map(|k| format!("{} {}", k.class, k.count)).collect();
    let counts = counts.join(", ");
    let (status, summary) = if failing.is_empty() {
        (Status::Healthy, format!("5xx in the window: {counts}"))
    } else {
        let names: Vec<String> = failing
            .iter()
            .map(|k| format!("{} (peak {} within {within})", k.class, k.peak))
            .collect();
        (
            Status::Degraded,
            format!("failing {}; 5xx in the window: {counts}", names.join(", ")),
        )
    };
    let escalations = failing
        .iter()
        .map(|k| format!("{}: {}", k.class, k.escalation))
        .collect();
    (status, summary, None, escalations, Details::Classified { classes })
}

fn burst(rule: &Rule, b: &Burst, totals: &[Sample], peaks: &[Series]) -> Outcome {
    let key = |labels: &Labels| -> Labels {
        b.group_by
            .iter()
            .map(|l| (l.clone(), label(labels, l).to_owned()))
            .collect()
    };
    let mut groups: BTreeMap<Labels, GroupCounts> = BTreeMap::new();
    let empty = |labels: Labels| GroupCounts {
        labels,
        total: Count(0.0),
        peak: Count(0.0),
        peak_at: None,
        burst: false,
    };
    for s in totals {
        let k = key(&s.labels);
        groups.entry(k.clone()).or_insert_with(|| empty(k)).total.0 += s.value;
    }
    for series in peaks {
        let k = key(&series.labels);
        let g = groups.entry(k.clone()).or_insert_with(|| empty(k));
        if let Some((t, v)) = max_point(series)
            && v > g.peak.0
        {
            g.peak = Count(v);
            g.peak_at = DateTime::from_timestamp_millis((t * 1000.0).round() as i64);
        }
    }
    for g in groups.values_mut() {
        g.burst = reaches(g.peak.0, rule.threshold);
    }
    // Groups that never failed are noise in a fleet of thousands of indexes.
    let groups: Vec<GroupCounts> = groups
        .into_values()
        .filter(|g| g.total.0 > 0.0 || g.peak.0 > 0.0)
        .collect();
    let within = show_duration(rule.within);
    let show = |labels: &Labels| -> String {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let bursts: Vec<&GroupCounts> = groups.iter().filter(|g| g.burst).collect();
    let (status, summary) = if bursts.is_empty() {
        (
            Status::Healthy,
            format!(
                "no group reached {} within {within} ({} with failures below that)",
                failures(Count(rule.threshold)),
                groups.len()
            ),
        )
    } else {
        let list: Vec<String> = bursts
            .iter()
            .map(|g| format!("{} ({} within {within})", show(&g.labels), g.peak))
            .collect();
        (
            Status::Degraded,
            format!(
                "{} reached {} within {within}: {}",
                crate::words::plural(bursts.len(), "group", "groups"),
                failures(Count(rule.threshold)),
                list.join(", ")
            ),
        )
    };
    let escalations = bursts
        .iter()
        .map(|g| format!("{}: {}", show(&g.labels), rule.escalation))
        .collect();
    (status, summary, None, escalations, Details::Burst { groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sample(pairs: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels(pairs),
            value,
        }
    }

    fn series(pairs: &[(&str, &str)], values: &[f64]) -> Series {
        Series {
            labels: labels(pairs),
            points: values
                .iter()
                .enumerate()
                .map(|(i, v)| (1000.0 + 15.0 * i as f64, *v))
                .collect(),
        }
    }

    fn rule(i: usize) -> Rule {
        Rules::defaults().unwrap().rules[i].clone()
    }

    const AT: f64 = 1000.0 + 15.0 * 60.0;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(AT as i64, 0).unwrap()
    }

    fn data<'a>(totals: &'a [Sample], peaks: &'a [Series], timeline: &'a [Series]) -> Data<'a> {
        Data {
            at: at(),
            totals,
            peaks,
            timeline,
        }
    }

    /// A series with one point at each `(seconds before AT, value)`.
    fn points(pairs: &[(&str, &str)], at_values: &[(f64, f64)]) -> Series {
        Series {
            labels: labels(pairs),
            points: at_values.iter().map(|(ago, v)| (AT - ago, *v)).collect(),
        }
    }

    const JWT_FAILED: [(&str, &str); 2] = [("method", "jwt"), ("status", "failed")];
    const JWT_OK: [(&str, &str); 2] = [("method", "jwt"), ("status", "success")];
    const TOKEN_FAILED: [(&str, &str); 2] = [("method", "token"), ("status", "failed")];
    const TOKEN_OK: [(&str, &str); 2] = [("method", "token"), ("status", "success")];

    #[test]
    fn the_alert_counts_failures_of_all_methods_in_the_last_15_minutes() {
        // 6 jwt + 4 token failures in the last 15 minutes: 10 across methods.
        let peaks = vec![points(&JWT_FAILED, &[(0.0, 6.0)]), points(&TOKEN_FAILED, &[(0.0, 4.0)])];
        let timeline = vec![
            points(&JWT_FAILED, &[(300.0, 6.0)]),
            points(&TOKEN_FAILED, &[(400.0, 4.0)]),
            points(&TOKEN_OK, &[(200.0, 1.0)]),
        ];
        let r = evaluate_rule(&rule(0), &data(&[], &peaks, &timeline));
        assert_eq!(r.status, Status::Degraded, "{}", r.summary);
        assert!(
            r.summary.starts_with("10 failures within the last 15m (alert at 10)"),
            "{}",
            r.summary
        );
        // 9 is below the alert.
        let peaks = vec![points(&JWT_FAILED, &[(0.0, 9.0)])];
        let timeline = vec![points(&JWT_FAILED, &[(300.0, 9.0)]), points(&TOKEN_OK, &[(200.0, 1.0)])];
        assert_eq!(
            evaluate_rule(&rule(0), &data(&[], &peaks, &timeline)).status,
            Status::Healthy
        );
    }

    #[test]
    fn token_actively_failing_is_an_outage_however_few_its_failures() {
        let peaks = vec![points(&JWT_FAILED, &[(0.0, 3.0)]), points(&TOKEN_FAILED, &[(0.0, 2.0)])];
        let timeline = vec![
            points(&JWT_FAILED, &[(120.0, 1.0), (60.0, 1.0), (0.0, 1.0)]),
            points(&TOKEN_OK, &[(600.0, 1.0)]),
            points(&TOKEN_FAILED, &[(60.0, 1.0), (0.0, 1.0)]),
        ];
        let r = evaluate_rule(&rule(0), &data(&[], &peaks, &timeline));
        assert_eq!(r.status, Status::Outage, "{}", r.summary);
        assert_eq!(
            r.incident.as_deref(),
            Some("The creation and deletion of OpenShift clusters is currently impacted")
        );
        assert!(
            r.escalations[0].contains("deploy squad's PagerDuty escalation policy"),
            "{:?}",
            r.escalations
        );
        let Details::PrimaryFallback { methods } = &r.details else {
            panic!()
        };
        let token = methods.iter().find(|m| m.method == "token").unwrap();
        assert!(token.actively_failing);
        assert_eq!(token.failures, "ongoing");
        assert_eq!(token.failures_started, DateTime::from_timestamp(AT as i64 - 60, 0));
    }

    #[test]
    fn a_token_success_after_its_failures_means_not_actively_failing() {
        let timeline = vec![
            points(&JWT_FAILED, &[(120.0, 1.0)]),
            points(&TOKEN_FAILED, &[(120.0, 1.0)]),
            points(&TOKEN_OK, &[(60.0, 1.0)]),
        ];
        let r = evaluate_rule(&rule(0), &data(&[], &[], &timeline));
        assert_eq!(r.status, Status::Healthy, "{}", r.summary);
        let Details::PrimaryFallback { methods } = &r.details else {
            panic!()
        };
        let token = methods.iter().find(|m| m.method == "token").unwrap();
        assert!(!token.actively_failing, "{token:?}");
        assert_eq!(token.failures, "ongoing", "failed within 15m, but a success came after");
    }

    #[test]
    fn failures_that_stopped_are_reported_as_stopped_and_healthy() {
        let peaks = vec![points(&JWT_FAILED, &[(3000.0, 10.0), (0.0, 0.0)])];
        let timeline = vec![
            points(&JWT_FAILED, &[(3600.0, 1.0), (3000.0, 1.0)]),
            points(&TOKEN_FAILED, &[(3000.0, 1.0)]),
            points(&JWT_OK, &[(60.0, 1.0)]),
        ];
        let r = evaluate_rule(&rule(0), &data(&[], &peaks, &timeline));
        assert_eq!(r.status, Status::Healthy, "{}", r.summary);
        assert!(r.summary.contains("stopped (last "), "{}", r.summary);
        assert!(r.summary.contains("50m before --at"), "{}", r.summary);
    }

    #[test]
    fn only_the_fallback_failing_is_degraded_without_an_incident() {
        let timeline = vec![points(&TOKEN_FAILED, &[(60.0, 1.0)]), points(&JWT_OK, &[(0.0, 1.0)])];
        let r = evaluate_rule(&rule(0), &data(&[], &[], &timeline));
        assert_eq!(r.status, Status::Degraded, "{}", r.summary);
        assert!(r.incident.is_none());
    }

    #[test]
    fn iam_methods_are_classified_and_escalated() {
        let totals = vec![
            sample(&[("method", "iam.NewUserAPIKey")], 3.0),
            sample(&[("method", "iam.IsAuthorized")], 0.0),
        ];
        let peaks = vec![
            series(&[("method", "iam.NewUserAPIKey")], &[1.0, 2.0]),
            series(&[("method", "iam.IsUserAPIKeyNotFound")], &[0.0, 1.0]),
        ];
        let r = evaluate_rule(&rule(1), &data(&totals, &peaks, &[]));
        assert_eq!(r.status, Status::Degraded);
        let Details::Classified { classes } = &r.details else {
            panic!("wrong details")
        };
        assert_eq!(classes.len(), 2, "no unclassified class without data");
        assert_eq!(classes[0].class, "identity");
        assert_eq!(classes[0].peak, Count(3.0), "methods of a class add up per step");
        assert!(classes[0].failing);
        assert!(!classes[1].failing);
        assert_eq!(r.escalations.len(), 1);
        assert!(r.escalations[0].starts_with("identity: "), "{:?}", r.escalations);
    }

    #[test]
    fn iam_class_patterns_ignore_case() {
        let peaks = vec![series(&[("method", "iam.newuserapikey")], &[2.0])];
        let r = evaluate_rule(&rule(1), &data(&[], &peaks, &[]));
        let Details::Classified { classes } = &r.details else {
            panic!("wrong details")
        };
        assert!(classes[0].failing, "{classes:?}");
        assert_eq!(classes.len(), 2, "nothing unclassified: {classes:?}");
        assert!(
            r.escalations[0].contains("Duty Manager - Germany - Policy"),
            "{:?}",
            r.escalations
        );
    }

    #[test]
    fn unknown_iam_methods_are_unclassified() {
        let peaks = vec![series(&[("method", "iam.Something")], &[2.0])];
        let r = evaluate_rule(&rule(1), &data(&[], &peaks, &[]));
        let Details::Classified { classes } = &r.details else {
            panic!("wrong details")
        };
        assert_eq!(classes[2].class, "unclassified");
        assert!(classes[2].failing);
    }

    #[test]
    fn bursts_need_the_threshold_within_the_window() {
        let a = [("index_name", "a"), ("account_id", "1")];
        let b = [("index_name", "b"), ("account_id", "2")];
        let idle = [("index_name", "c"), ("account_id", "3")];
        let totals = vec![sample(&a, 4.0), sample(&b, 4.0), sample(&idle, 0.0)];
        let peaks = vec![
            series(&a, &[1.0, 4.36, 2.0]),
            series(&b, &[3.27, 1.0]),
            series(&idle, &[0.0]),
        ];
        let r = evaluate_rule(&rule(2), &data(&totals, &peaks, &[]));
        assert_eq!(r.status, Status::Degraded);
        let Details::Burst { groups } = &r.details else {
            panic!("wrong details")
        };
        assert_eq!(groups.len(), 2, "idle groups are left out");
        assert!(groups[0].burst);
        assert_eq!(groups[0].peak_at, DateTime::from_timestamp(1015, 0));
        assert!(!groups[1].burst);
        assert_eq!(r.escalations.len(), 1);
        assert!(r.escalations[0].starts_with("account_id=1 index_name=a: "));
    }

    #[test]
    fn counts_show_as_integers_when_whole() {
        assert_eq!(Count(4.0).to_string(), "4");
        assert_eq!(Count(4.363636).to_string(), "4.36");
        assert_eq!(serde_json::to_string(&Count(4.0)).unwrap(), "4");
        assert_eq!(serde_json::to_string(&Count(4.363636)).unwrap(), "4.36");
    }

    #[test]
    fn peak_queries_stay_inside_the_window() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let qs = queries(&rule(2), at, Duration::from_secs(3600));
        let [presence, total, peak] = [&qs[0], &qs[1], &qs[2]];
        assert_eq!(presence.name, "auth-key-refresh.presence");
        assert_eq!(total.kind, QueryKind::Instant { time: at });
        assert_eq!(
            peak.kind,
            QueryKind::Range {
                start: at - chrono::Duration::seconds(3600 - 180),
                end: at,
                step: Duration::from_secs(15)
            }
        );
        let long = queries(&rule(2), at, Duration::from_secs(30 * 86400));
        let QueryKind::Range { step, end, start } = long[2].kind else {
            panic!("not a range")
        };
        assert_eq!(step, Duration::from_secs(260), "at most 10,000 points");
        assert_eq!(end, at);
        assert_eq!((end - start).num_seconds() % 260, 0, "the last step is at --at");
        let auth = queries(&rule(0), at, Duration::from_secs(3600));
        assert_eq!(auth.len(), 4);
        assert_eq!(auth[3].name, "redhat-auth.timeline");
        assert_eq!(
            auth[3].promql,
            "sum by (method, status) (count_over_time(armada_kubx_deployer_redhat_auth{}[14999ms]))"
        );
    }
}
