//! Health rules as data: which metric each rule reads, how it counts, its
//! threshold and window, how it classifies what it finds and whom to escalate
//! to. The defaults (`rules/health.toml`) are embedded in the binary.

use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// The default rules, as shipped in `rules/health.toml`.
pub const DEFAULT_RULES: &str = include_str!("../../rules/health.toml");
/// How the default rules are named in messages.
pub const DEFAULT_RULES_NAME: &str = "rules/health.toml (built in)";

/// A validated set of rules, in file order.
#[derive(Debug, Clone)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

/// One rule: a metric, how to count it, and what a count means.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub metric: String,
    pub matchers: Vec<Matcher>,
    pub function: Function,
    /// A group is failing when its count within `within` reaches this.
    pub threshold: f64,
    pub within: Duration,
    /// What to do about a failing group (for `classified`: a method in no class).
    pub escalation: String,
    /// What a metric with no series in the window means.
    pub when_absent: WhenAbsent,
    pub kind: Kind,
}

/// What a rule concludes when its metric has no series at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenAbsent {
    /// No series means nothing failed (a failure counter created on the first failure).
    Healthy,
    /// No series means the rule cannot tell: its verdict is `no_data`.
    NoData,
}

/// What a rule concludes from its counts.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A primary and a fallback method: degraded when the primary fails,
    /// an outage when both do.
    PrimaryFallback(PrimaryFallback),
    /// Failures split into classes by a label's value, each with its own escalation.
    Classified(Classified),
    /// Any group (by labels) whose count within the window reaches the threshold.
    Burst(Burst),
}

/// The fields of a `primary-fallback` rule.
#[derive(Debug, Clone)]
pub struct PrimaryFallback {
    pub method_label: String,
    pub status_label: String,
    pub primary: String,
    pub fallback: String,
    pub success: String,
    pub failure: String,
    pub incident_title: String,
    /// Whom to page when an incident is opened.
    pub incident_escalation: String,
}

/// The fields of a `classified` rule.
#[derive(Debug, Clone)]
pub struct Classified {
    pub label: String,
    pub classes: Vec<Class>,
}

/// One class of a `classified` rule.
#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    pub pattern: Regex,
    pub escalation: String,
}

/// The fields of a `burst` rule.
#[derive(Debug, Clone)]
pub struct Burst {
    pub group_by: Vec<String>,
}

/// A PromQL label matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

/// The four PromQL label match operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// The PromQL range function a rule counts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Every sample is one event (a gauge written once per attempt).
    CountOverTime,
    /// A counter's increase (handles counter resets).
    Increase,
    /// A gauge's change (as in some alert expressions).
    Delta,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::CountOverTime => "count_over_time",
            Function::Increase => "increase",
            Function::Delta => "delta",
        }
    }
}

/// A rules file that cannot be used, naming the file, rule and field.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{source_name}: {message}")]
    Syntax { source_name: String, message: String },
    #[error("{source_name}: rule {index} (`{rule}`): field `{field}`: {problem}")]
    Field {
        source_name: String,
        index: usize,
        rule: String,
        field: String,
        problem: String,
    },
    #[error("{source_name}: defines no rules (add a [[rule]] table)")]
    Empty { source_name: String },
    #[error("{source_name}: rule `{rule}` is defined twice")]
    Duplicate { source_name: String, rule: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    label: String,
    op: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: String,
    pattern: String,
    escalation: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    kind: Option<String>,
    metric: Option<String>,
    #[serde(default)]
    matchers: Vec<RawMatcher>,
    function: Option<Function>,
    threshold: Option<f64>,
    within: Option<String>,
    escalation: Option<String>,
    when_absent: Option<WhenAbsent>,
    // primary-fallback
    method_label: Option<String>,
    status_label: Option<String>,
    primary: Option<String>,
    fallback: Option<String>,
    success: Option<String>,
    failure: Option<String>,
    incident_title: Option<String>,
    incident_escalation: Option<String>,
    // classified
    label: Option<String>,
    class: Option<Vec<RawClass>>,
    // burst
    group_by: Option<Vec<String>>,
}

const KIND_FIELDS: &[(&str, &[&str])] = &[
    (
        "primary-fallback",
        &[
            "method_label",
            "status_label",
            "primary",
            "fallback",
            "success",
            "failure",
            "incident_title",
            "incident_escalation",
        ],
    ),
    ("classified", &["label", "class"]),
    ("burst", &["group_by"]),
];

struct Ctx<'a> {
    source_name: &'a str,
    index: usize,
    rule: String,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, problem: impl Into<String>) -> RulesError {
        RulesError::Field {
            source_name: self.source_name.to_owned(),
            index: self.index,
            rule: self.rule.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn required<T>(&self, field: &str, value: Option<T>) -> Result<T, RulesError> {
        value.ok_or_else(|| self.err(field, "is required"))
    }

    fn text(&self, field: &str, value: Option<String>) -> Result<String, RulesError> {
        let value = self.required(field, value)?;
        if value.trim().is_empty() {
            return Err(self.err(field, "is empty"));
        }
        Ok(value)
    }

    fn label_name(&self, field: &str, value: Option<String>) -> Result<String, RulesError> {
        let value = self.required(field, value)?;
        if !valid_label_name(&value) {
            return Err(self.err(field, format!("`{value}` is not a Prometheus label name")));
        }
        Ok(value)
    }
}

/// Returns true for a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Returns true for a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Parses a duration such as `3m`, `15m` or `1h` (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration ({e})"))?;
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err(format!("`{text}` must be a whole number of seconds, at least 1s"));
    }
    Ok(d)
}

impl Rules {
    /// Returns the default rules shipped in `rules/health.toml` (a unit
    /// test keeps them valid; an error is still an error, never "no rules").
    pub fn defaults() -> Result<Rules, RulesError> {
        Rules::parse(DEFAULT_RULES, DEFAULT_RULES_NAME)
    }

    /// Parses and validates a rules file; `source_name` names it in messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Syntax {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        if file.rule.is_empty() {
            return Err(RulesError::Empty {
                source_name: source_name.to_owned(),
            });
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
        for (i, raw) in file.rule.into_iter().enumerate() {
            let rule = parse_rule(source_name, i + 1, raw)?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(RulesError::Duplicate {
                    source_name: source_name.to_owned(),
                    rule: rule.name,
                });
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }
}

fn set_fields(raw: &RawRule) -> Vec<&'static str> {
    let mut set = Vec::new();
    let checks: [(&'static str, bool); 11] = [
        ("method_label", raw.method_label.is_some()),
        ("status_label", raw.status_label.is_some()),
        ("primary", raw.primary.is_some()),
        ("fallback", raw.fallback.is_some()),
        ("success", raw.success.is_some()),
        ("failure", raw.failure.is_some()),
        ("incident_title", raw.incident_title.is_some()),
        ("incident_escalation", raw.incident_escalation.is_some()),
        ("label", raw.label.is_some()),
        ("class", raw.class.is_some()),
        ("group_by", raw.group_by.is_some()),
    ];
    for (name, present) in checks {
        if present {
            set.push(name);
        }
    }
    set
}

fn parse_rule(source_name: &str, index: usize, raw: RawRule) -> Result<Rule, RulesError> {
    let mut ctx = Ctx {
        source_name,
        index,
        rule: raw.name.clone().unwrap_or_default(),
    };
    let name = ctx.required("name", raw.name.clone())?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ctx.err("name", format!("`{name}` is not a rule name: use a-z, 0-9 and `-`")));
    }
    ctx.rule = name.clone();
    let kind_name = ctx.required("kind", raw.kind.clone())?;
    let Some((_, kind_fields)) = KIND_FIELDS.iter().find(|(k, _)| *k == kind_name) else {
        let known: Vec<&str> = KIND_FIELDS.iter().map(|(k, _)| *k).collect();
        return Err(ctx.err(
            "kind",
            format!("`{kind_name}` is not a rule kind; use one of: {}", known.join(", ")),
        ));
    };
    if let Some(field) = set_fields(&raw).into_iter().find(|f| !kind_fields.contains(f)) {
        return Err(ctx.err(field, format!("does not apply to a `{kind_name}` rule")));
    }
    let metric = ctx.required("metric", raw.metric)?;
    if !valid_metric_name(&metric) {
        return Err(ctx.err("metric", format!("`{metric}` is not a Prometheus metric name")));
    }
    let mut matchers = Vec::with_capacity(raw.matchers.len());
    for (i, m) in raw.matchers.into_iter().enumerate() {
        let field = format!("matchers[{i}]");
        if !valid_label_name(&m.label) {
            return Err(ctx.err(
                format!("{field}.label"),
                format!("`{}` is not a Prometheus label name", m.label),
            ));
        }
        let op = match m.op.as_str() {
            "=" => MatchOp::Eq,
            "!=" => MatchOp::Ne,
            "=~" => MatchOp::Re,
            "!~" => MatchOp::NotRe,
            other => {
                return Err(ctx.err(
                    format!("{field}.op"),
                    format!("`{other}` is not a matcher operator; use one of: =, !=, =~, !~"),
                ));
            }
        };
        if matches!(op, MatchOp::Re | MatchOp::NotRe) {
            Regex::new(&m.value)
                .map_err(|e| ctx.err(format!("{field}.value"), format!("not a regular expression: {e}")))?;
        }
        matchers.push(Matcher {
            label: m.label,
            op,
            value: m.value,
        });
    }
    let function = ctx.required("function", raw.function)?;
    let threshold = ctx.required("threshold", raw.threshold)?;
    if !threshold.is_finite() || threshold <= 0.0 {
        return Err(ctx.err("threshold", format!("{threshold} must be a number above 0")));
    }
    let within_text = ctx.required("within", raw.within)?;
    let within = parse_duration(&within_text).map_err(|p| ctx.err("within", p))?;
    let escalation = ctx.text("escalation", raw.escalation)?;
    let when_absent = raw.when_absent.unwrap_or(WhenAbsent::NoData);

    let kind = match kind_name.as_str() {
        "primary-fallback" => {
            let pf = PrimaryFallback {
                method_label: ctx.label_name("method_label", raw.method_label)?,
                status_label: ctx.label_name("status_label", raw.status_label)?,
                primary: ctx.text("primary", raw.primary)?,
                fallback: ctx.text("fallback", raw.fallback)?,
                success: ctx.text("success", raw.success)?,
                failure: ctx.text("failure", raw.failure)?,
                incident_title: ctx.text("incident_title", raw.incident_title)?,
                incident_escalation: ctx.text("incident_escalation", raw.incident_escalation)?,
            };
            if pf.method_label == pf.status_label {
                return Err(ctx.err("status_label", "must differ from `method_label`"));
            }
            if pf.primary == pf.fallback {
                return Err(ctx.err("fallback", "must differ from `primary`"));
            }
            if pf.success == pf.failure {
                return Err(ctx.err("failure", "must differ from `success`"));
            }
            Kind::PrimaryFallback(pf)
        }
        "classified" => {
            let label = ctx.label_name("label", raw.label)?;
            let raw_classes = ctx.required("class", raw.class)?;
            if raw_classes.is_empty() {
                return Err(ctx.err("class", "lists no classes"));
            }
            let mut classes: Vec<Class> = Vec::with_capacity(raw_classes.len());
            for (i, c) in raw_classes.into_iter().enumerate() {
                let field = format!("class[{i}]");
                if c.name.trim().is_empty() {
                    return Err(ctx.err(format!("{field}.name"), "is empty"));
                }
                if classes.iter().any(|k| k.name == c.name) {
                    return Err(ctx.err(format!("{field}.name"), format!("class `{}` is listed twice", c.name)));
                }
                if c.escalation.trim().is_empty() {
                    return Err(ctx.err(format!("{field}.escalation"), "is empty"));
                }
                if c.pattern.is_empty() {
                    return Err(ctx.err(format!("{field}.pattern"), "is empty"));
                }
                let pattern = Regex::new(&c.pattern)
                    .map_err(|e| ctx.err(format!("{field}.pattern"), format!("not a regular expression: {e}")))?;
                classes.push(Class {
                    name: c.name,
                    pattern,
                    escalation: c.escalation,
                });
            }
            Kind::Classified(Classified { label, classes })
        }
        _ => {
            let group_by = ctx.required("group_by", raw.group_by)?;
            if group_by.is_empty() {
                return Err(ctx.err("group_by", "lists no labels"));
            }
            let mut seen = BTreeSet::new();
            for (i, l) in group_by.iter().enumerate() {
                if !valid_label_name(l) {
                    return Err(ctx.err(
                        format!("group_by[{i}]"),
                        format!("`{l}` is not a Prometheus label name"),
                    ));
                }
                if !seen.insert(l) {
                    return Err(ctx.err(format!("group_by[{i}]"), format!("`{l}` is listed twice")));
                }
            }
            Kind::Burst(Burst { group_by })
        }
    };
    Ok(Rule {
        name,
        metric,
        matchers,
        function,
        threshold,
        within,
        escalation,
        when_absent,
        kind,
    })
}

/// Quotes a string as a PromQL double-quoted string literal.
fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration as PromQL writes it, in whole seconds (`180s`).
struct PromDuration(Duration);

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl Rule {
    /// Returns the labels the rule's queries aggregate by.
    pub fn group_labels(&self) -> Vec<&str> {
        match &self.kind {
            Kind::PrimaryFallback(pf) => vec![pf.method_label.as_str(), pf.status_label.as_str()],
            Kind::Classified(c) => vec![c.label.as_str()],
            Kind::Burst(b) => b.group_by.iter().map(String::as_str).collect(),
        }
    }

    /// Returns the series selector: `metric{label op "value", ...}`.
    pub fn selector(&self) -> String {
        let parts: Vec<String> = self
            .matchers
            .iter()
            .map(|m| format!("{}{}{}", m.label, m.op.as_str(), promql_string(&m.value)))
            .collect();
        format!("{}{{{}}}", self.metric, parts.join(", "))
    }

    /// Returns the PromQL that counts per group over `range`:
    /// `sum by (labels) (function(selector[range]))`.
    pub fn count_query(&self, range: Duration) -> String {
        format!(
            "sum by ({}) ({}({}[{}]))",
            self.group_labels().join(", "),
            self.function.as_str(),
            self.selector(),
            PromDuration(range)
        )
    }

    /// Returns [`Rule::count_query`] over a range in milliseconds (`14999ms`).
    pub fn count_query_ms(&self, range_ms: u128) -> String {
        format!(
            "sum by ({}) ({}({}[{range_ms}ms]))",
            self.group_labels().join(", "),
            self.function.as_str(),
            self.selector(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Rules::parse(text, "r.toml").unwrap_err().to_string()
    }

    const BURST: &str = r#"
[[rule]]
name = "b"
kind = "burst"
metric = "m_total"
function = "increase"
threshold = 4
within = "3m"
group_by = ["index_name"]
escalation = "call someone"
"#;

    #[test]
    fn shipped_defaults_parse() {
        let rules = Rules::parse(DEFAULT_RULES, DEFAULT_RULES_NAME).unwrap();
        let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["redhat-auth", "iam-5xx", "auth-key-refresh"]);
        assert_eq!(Rules::defaults().unwrap().rules.len(), 3);
    }

    #[test]
    fn default_queries_are_the_operators_queries() {
        let rules = Rules::defaults().unwrap();
        assert_eq!(
            rules.rules[0].count_query(Duration::from_secs(3600)),
            "sum by (method, status) (count_over_time(armada_kubx_deployer_redhat_auth{}[3600s]))"
        );
        assert_eq!(
            rules.rules[1].count_query(Duration::from_secs(600)),
            r#"sum by (method) (delta(api_response_codes{method=~"(?i).*iam.*", rc=~"5.."}[600s]))"#
        );
        assert_eq!(
            rules.rules[2].count_query(Duration::from_secs(180)),
            "sum by (index_name, account_id) (increase(auth_key_refresh_failures_total{}[180s]))"
        );
    }

    #[test]
    fn promql_strings_are_escaped() {
        assert_eq!(promql_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn a_minimal_burst_rule_parses() {
        let rules = Rules::parse(BURST, "r.toml").unwrap();
        assert_eq!(rules.rules[0].within, Duration::from_secs(180));
        assert!(matches!(rules.rules[0].kind, Kind::Burst(_)));
    }

    #[test]
    fn errors_name_the_file_rule_and_field() {
        assert_eq!(
            err(&BURST.replace("kind = \"burst\"", "kind = \"spike\"")),
            "r.toml: rule 1 (`b`): field `kind`: `spike` is not a rule kind; use one of: primary-fallback, classified, burst"
        );
        assert!(
            err(&BURST.replace("within = \"3m\"", "within = \"soon\""))
                .starts_with("r.toml: rule 1 (`b`): field `within`: `soon` is not a duration")
        );
        assert_eq!(
            err(&BURST.replace("threshold = 4", "threshold = 0")),
            "r.toml: rule 1 (`b`): field `threshold`: 0 must be a number above 0"
        );
        assert_eq!(
            err(&BURST.replace("metric = \"m_total\"", "metric = \"m-total\"")),
            "r.toml: rule 1 (`b`): field `metric`: `m-total` is not a Prometheus metric name"
        );
        assert_eq!(
            err(&BURST.replace("metric = \"m_total\"\n", "")),
            "r.toml: rule 1 (`b`): field `metric`: is required"
        );
        assert_eq!(
            err(&BURST.replace("group_by", "primary = \"x\"\ngroup_by")),
            "r.toml: rule 1 (`b`): field `primary`: does not apply to a `burst` rule"
        );
        assert_eq!(
            err(&BURST.replace("[\"index_name\"]", "[\"index-name\"]")),
            "r.toml: rule 1 (`b`): field `group_by[0]`: `index-name` is not a Prometheus label name"
        );
        assert_eq!(err(&format!("{BURST}{BURST}")), "r.toml: rule `b` is defined twice");
        assert_eq!(err(""), "r.toml: defines no rules (add a [[rule]] table)");
        assert!(err("[[rule]]\nname = 1\n").starts_with("r.toml: "));
        assert!(err(&format!("{BURST}colour = 1\n")).contains("unknown field `colour`"));
    }

    #[test]
    fn matchers_and_class_patterns_are_checked() {
        let with_matcher = BURST.replace(
            "function",
            "matchers = [{ label = \"rc\", op = \"=~\", value = \"5(\" }]\nfunction",
        );
        assert!(
            err(&with_matcher).starts_with("r.toml: rule 1 (`b`): field `matchers[0].value`: not a regular expression"),
            "{}",
            err(&with_matcher)
        );
        let bad_op = BURST.replace(
            "function",
            "matchers = [{ label = \"rc\", op = \"==\", value = \"5\" }]\nfunction",
        );
        assert_eq!(
            err(&bad_op),
            "r.toml: rule 1 (`b`): field `matchers[0].op`: `==` is not a matcher operator; use one of: =, !=, =~, !~"
        );
        let classified = DEFAULT_RULES.replace("IsAuthorized.*|", "IsAuthorized.*|(");
        assert!(
            err(&classified).contains("rule 2 (`iam-5xx`): field `class[1].pattern`: not a regular expression"),
            "{}",
            err(&classified)
        );
    }
}
