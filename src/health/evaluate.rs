//! Turns Prometheus answers into verdicts: per rule, then overall.

use super::prom::{self, Labels, Sample, Series};
use super::rules::{Burst, Classified, Kind, PrimaryFallback, Rule, Rules};
use super::{HealthError, Query, QueryKind, Source, show_duration};
use crate::exit::Exit;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How bad things are, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing reaches a threshold.
    Healthy,
    /// Something fails, and something else carries the load or a team must look.
    Degraded,
    /// Both the primary and the fallback fail: open an incident.
    Outage,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Outage => "outage",
        })
    }
}

/// A count from Prometheus: whole numbers show as integers, others with two decimals
/// (`increase` extrapolates, so counts of counters may be fractional).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Count(pub f64);

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
    /// Returns the exit code: 0 healthy, 1 degraded or outage.
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

/// Returns the queries the gate asks for one rule: `presence` (is the metric
/// scraped at all), `total` (counts over the window) and `peak` (the alert
/// expression evaluated at every step of the window).
pub fn queries(rule: &Rule, at: DateTime<Utc>, window: Duration) -> [Query; 3] {
    let step_secs = (window.as_secs().div_ceil(MAX_POINTS)).max(MIN_STEP.as_secs());
    let span = window.saturating_sub(rule.within);
    let start = i64::try_from(span.as_secs())
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|d| at.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    [
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
                start,
                end: at,
                step: Duration::from_secs(step_secs),
            },
        },
    ]
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

/// Evaluates every rule at `at` over the `window` before it.
pub fn evaluate(
    rules: &Rules,
    source: &dyn Source,
    at: DateTime<Utc>,
    window: Duration,
) -> Result<Report, HealthError> {
    if rules.rules.is_empty() {
        return Err(HealthError::NoRules);
    }
    let mut reports = Vec::with_capacity(rules.rules.len());
    for rule in &rules.rules {
        if window < rule.within {
            return Err(HealthError::WindowTooShort {
                rule: rule.name.clone(),
                window: show_duration(window),
                within: show_duration(rule.within),
            });
        }
        let [presence, total, peak] = queries(rule, at, window);
        let present = prom::parse_vector(&presence.name, &fetch(source, &presence)?)?;
        if present.iter().all(|s| s.value <= 0.0) {
            return Err(HealthError::NoData {
                rule: rule.name.clone(),
                metric: rule.metric.clone(),
                window: show_duration(window),
                at: rfc3339(&at),
            });
        }
        let totals = prom::parse_vector(&total.name, &fetch(source, &total)?)?;
        let peaks = prom::parse_matrix(&peak.name, &fetch(source, &peak)?)?;
        reports.push(evaluate_rule(rule, &totals, &peaks));
    }
    let verdict = reports.iter().map(|r| r.status).max().unwrap_or(Status::Healthy);
    Ok(Report {
        verdict,
        at,
        window: show_duration(window),
        rules: reports,
    })
}

/// Evaluates one rule from its `total` vector and `peak` matrix.
pub fn evaluate_rule(rule: &Rule, totals: &[Sample], peaks: &[Series]) -> RuleReport {
    let (status, summary, incident, escalations, details) = match &rule.kind {
        Kind::PrimaryFallback(pf) => primary_fallback(rule, pf, totals, peaks),
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

fn primary_fallback(rule: &Rule, pf: &PrimaryFallback, totals: &[Sample], peaks: &[Series]) -> Outcome {
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
            success: Count(0.0),
            failed: Count(0.0),
            peak_failed: Count(0.0),
            failing: false,
        });
    };
    entry(&mut methods, &pf.primary);
    entry(&mut methods, &pf.fallback);
    for s in totals {
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
    for series in peaks {
        if label(&series.labels, &pf.status_label) != pf.failure {
            continue;
        }
        let method = label(&series.labels, &pf.method_label);
        entry(&mut methods, method);
        if let (Some(m), Some((_, v))) = (methods.get_mut(method), max_point(series)) {
            m.peak_failed.0 = m.peak_failed.0.max(v);
        }
    }
    for m in methods.values_mut() {
        m.failing = reaches(m.peak_failed.0, rule.threshold);
    }
    let primary = methods.get(&pf.primary).cloned().unwrap_or_default();
    let fallback = methods.get(&pf.fallback).cloned().unwrap_or_default();
    let within = show_duration(rule.within);
    let describe = |m: &MethodCounts| {
        format!(
            "{} ({}) {} ok / {} failed, peak {} failed within {}",
            m.method, m.role, m.success, m.failed, m.peak_failed, within
        )
    };
    let counts = format!("{}; {}", describe(&primary), describe(&fallback));
    let threshold = Count(rule.threshold);
    let (status, summary, incident, escalations) = if primary.failing && (fallback.failing || fallback.success.0 <= 0.0)
    {
        let why = if fallback.failing {
            format!(
                "both {} and {} fail ({threshold}+ failures within {within})",
                pf.primary, pf.fallback
            )
        } else {
            format!(
                "{} fails ({threshold}+ failures within {within}) and {} has no successes",
                pf.primary, pf.fallback
            )
        };
        (
            Status::Outage,
            format!("{why}: open an incident; {counts}"),
            Some(pf.incident_title.clone()),
            vec![format!("open an incident: \"{}\"", pf.incident_title)],
        )
    } else if primary.failing {
        (
            Status::Degraded,
            format!(
                "primary {} fails ({threshold}+ failures within {within}), fallback {} carries the load: no incident; {counts}",
                pf.primary, pf.fallback
            ),
            None,
            vec![rule.escalation.clone()],
        )
    } else if fallback.failing {
        (
            Status::Degraded,
            format!(
                "fallback {} fails ({threshold}+ failures within {within}) while primary {} works: no incident, but no fallback either; {counts}",
                pf.fallback, pf.primary
            ),
            None,
            vec![format!(
                "fix the fallback method {} before the primary fails",
                pf.fallback
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
                "no group reached {} failures within {within} ({} with failures below that)",
                Count(rule.threshold),
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
                "{} {} reached {} failures within {within}: {}",
                bursts.len(),
                if bursts.len() == 1 { "group" } else { "groups" },
                Count(rule.threshold),
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

    fn auth(jwt_failed_peak: f64, token_failed_peak: f64, token_ok: f64) -> RuleReport {
        let totals = vec![
            sample(&[("method", "jwt"), ("status", "failed")], jwt_failed_peak),
            sample(&[("method", "token"), ("status", "failed")], token_failed_peak),
            sample(&[("method", "token"), ("status", "success")], token_ok),
        ];
        let peaks = vec![
            series(&[("method", "jwt"), ("status", "failed")], &[0.0, jwt_failed_peak]),
            series(&[("method", "token"), ("status", "failed")], &[token_failed_peak, 0.0]),
        ];
        evaluate_rule(&rule(0), &totals, &peaks)
    }

    #[test]
    fn auth_verdicts() {
        assert_eq!(auth(9.0, 0.0, 5.0).status, Status::Healthy);
        let degraded = auth(10.0, 0.0, 5.0);
        assert_eq!(degraded.status, Status::Degraded);
        assert!(degraded.incident.is_none());
        let outage = auth(10.0, 12.0, 5.0);
        assert_eq!(outage.status, Status::Outage);
        assert_eq!(
            outage.incident.as_deref(),
            Some("The creation and deletion of OpenShift clusters is currently impacted")
        );
        // The primary fails and the fallback never succeeds: nothing works.
        assert_eq!(auth(10.0, 0.0, 0.0).status, Status::Outage);
        // Only the fallback fails: the primary carries the load.
        assert_eq!(auth(0.0, 10.0, 5.0).status, Status::Degraded);
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
        let r = evaluate_rule(&rule(1), &totals, &peaks);
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
    fn unknown_iam_methods_are_unclassified() {
        let peaks = vec![series(&[("method", "iam.Something")], &[2.0])];
        let r = evaluate_rule(&rule(1), &[], &peaks);
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
        let r = evaluate_rule(&rule(2), &totals, &peaks);
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
        let [presence, total, peak] = queries(&rule(2), at, Duration::from_secs(3600));
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
        let [_, _, long] = queries(&rule(2), at, Duration::from_secs(30 * 86400));
        let QueryKind::Range { step, .. } = long.kind else {
            panic!("not a range")
        };
        assert_eq!(step, Duration::from_secs(260), "at most 10,000 points");
    }
}
