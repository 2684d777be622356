//! Reading a `cluster_secret_update` job log as the runbook's engineer does:
//! the five phrases of a successful update (each looked for on its own, and
//! in order), the cluster and resource group it names (whole tokens), any
//! error after the update began (quoted), and the values the runbook asks to
//! confirm. A log holding several runs is judged on the last one.

use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

/// The phrases a successful update logs, in order.
pub const PHRASES: [&str; 5] = [
    "Successfully populated secret information from network.toml",
    "Updating the cluster secret",
    "Storage Encryption is enabled.  Encrypting Bluemix.IAMAPIKey",
    "Successfully Uploaded config to cluster updater within 5s with StatusCode: 200",
    "About to send the credential Audit event for cluster secret update",
];

/// The longest line quoted in a report; longer ones are cut.
const QUOTE_MAX: usize = 300;

/// Where one phrase was found in the judged run.
#[derive(Debug, Serialize)]
pub struct PhraseFound {
    pub phrase: &'static str,
    /// 1-based line number in the file of its first occurrence in the run, or null.
    pub line: Option<usize>,
}

/// A line that says the job failed.
#[derive(Debug, Serialize)]
pub struct ErrorLine {
    /// 1-based line number in the file.
    pub line: usize,
    /// The line, control characters escaped, cut at 300 characters.
    pub text: String,
}

/// The values the runbook asks the engineer to confirm, as logged.
#[derive(Debug, Default, Serialize)]
pub struct Logged {
    /// Every cluster ID the run names (`cluster=`, `cluster ID:`, `clusterID`), in order.
    pub cluster_ids: Vec<String>,
    /// Every resource group the run names, in order.
    pub resource_groups: Vec<String>,
    /// The `StatusCode` of the upload, when logged.
    pub status_code: Option<u16>,
    /// The time at the start of the run's last phrase line, when logged.
    pub time: Option<String>,
}

/// The result of checking one log.
#[derive(Debug, Serialize)]
pub struct LogReport {
    pub ok: bool,
    /// How many runs the log holds; the last one is judged.
    pub runs: usize,
    /// The 1-based line where the judged run starts.
    pub run_starts_at: usize,
    pub phrases: Vec<PhraseFound>,
    pub cluster_named: bool,
    /// Null when no resource group was asked for.
    pub resource_group_named: Option<bool>,
    pub errors: Vec<ErrorLine>,
    pub logged: Logged,
    /// Every problem, in words (empty when ok).
    pub problems: Vec<String>,
}

static STATUS_CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"StatusCode:?\s*(\d{3})\b").expect("static regex"));
static ERROR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\bERROR\b|(?i:\blevel\s*=\s*"?(?:error|fatal)\b|"level"\s*:\s*"(?:error|fatal)"|\bpanic\b)"#)
        .expect("static regex")
});
static TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?").expect("static regex")
});
static CLUSTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bcluster(?:[ _-]?id\b\s*[:=]?|\s*[:=])\s*["']?([A-Za-z0-9][A-Za-z0-9_-]*)"#)
        .expect("static regex")
});
static RESOURCE_GROUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bresource[ _-]?group(?:[ _-]?id)?\b\s*[:=]?\s*["']?([A-Za-z0-9][A-Za-z0-9_-]*)"#)
        .expect("static regex")
});

/// Returns true when `line` names `id` as a whole token: not inside a longer
/// run of letters, digits, `-` or `_` (`c0ffee12` is not in `c0ffee123`).
pub fn names_token(line: &str, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let is_token = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    line.match_indices(id).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + id.len()..].chars().next();
        !before.is_some_and(is_token) && !after.is_some_and(is_token)
    })
}

/// Returns true when `line` says the job failed: `ERROR`, an error level,
/// `panic`, or a `StatusCode` other than 200.
fn is_error(line: &str) -> bool {
    ERROR.is_match(line)
        || STATUS_CODE
            .captures_iter(line)
            .any(|c| c.get(1).is_some_and(|m| m.as_str() != "200"))
}

fn quote(line: &str) -> String {
    crate::untrusted::escape_bounded(line.trim_end(), QUOTE_MAX)
}

fn has_phrase(line: &str) -> bool {
    PHRASES.iter().any(|p| line.contains(p))
}

/// Returns the index of the first line of each run. A run begins with the
/// first phrase; when that phrase comes again, a new run begins after the
/// last phrase or error line of the previous one (so the new run's own
/// header lines, naming its cluster, belong to it).
fn run_starts(lines: &[&str]) -> Vec<usize> {
    let mut starts = vec![0];
    let mut seen_first = false;
    let mut last_marked = None;
    for (i, line) in lines.iter().enumerate() {
        if line.contains(PHRASES[0]) {
            if seen_first {
                starts.push(last_marked.map_or(i, |m: usize| m + 1));
            }
            seen_first = true;
        }
        if has_phrase(line) || is_error(line) {
            last_marked = Some(i);
        }
    }
    starts
}

/// Checks the last run of `log` for the phrases, the names and errors.
pub fn check(log: &str, cluster: &str, resource_group: Option<&str>) -> LogReport {
    let lines: Vec<&str> = log.lines().collect();
    let starts = run_starts(&lines);
    let start = starts.last().copied().unwrap_or(0);
    let run = lines.get(start..).unwrap_or_default();
    let number = |i: usize| start + i + 1;

    let phrases: Vec<PhraseFound> = PHRASES
        .iter()
        .map(|phrase| PhraseFound {
            phrase,
            line: run.iter().position(|l| l.contains(phrase)).map(number),
        })
        .collect();
    let mut problems = Vec::new();
    for (i, p) in phrases.iter().enumerate() {
        if p.line.is_none() {
            problems.push(format!("phrase {} missing: \"{}\"", i + 1, p.phrase));
        }
    }
    // Out of order: a phrase found before an earlier phrase's line.
    for (i, p) in phrases.iter().enumerate() {
        let Some(line) = p.line else { continue };
        if let Some((j, q)) = phrases[..i]
            .iter()
            .enumerate()
            .rev()
            .find(|(_, q)| q.line.is_some_and(|l| l > line))
        {
            problems.push(format!(
                "out of order: phrase {} (line {line}) comes before phrase {} (line {})",
                i + 1,
                j + 1,
                q.line.unwrap_or_default()
            ));
        }
    }
    let first_phrase = phrases.iter().filter_map(|p| p.line).min();
    let errors: Vec<ErrorLine> = run
        .iter()
        .enumerate()
        .filter(|(i, l)| first_phrase.is_none_or(|f| number(*i) >= f) && is_error(l))
        .map(|(i, l)| ErrorLine {
            line: number(i),
            text: quote(l),
        })
        .collect();
    for e in &errors {
        problems.push(format!("error at line {}: {}", e.line, e.text));
    }

    let mut logged = Logged::default();
    for line in run {
        for (re, out) in [
            (&*CLUSTER, &mut logged.cluster_ids),
            (&*RESOURCE_GROUP, &mut logged.resource_groups),
        ] {
            for c in re.captures_iter(line) {
                if let Some(m) = c.get(1)
                    && !out.iter().any(|v| v == m.as_str())
                {
                    out.push(quote(m.as_str()));
                }
            }
        }
    }
    let upload = phrases[3].line.and_then(|l| lines.get(l - 1)).copied();
    logged.status_code = upload
        .into_iter()
        .chain(run.iter().rev().copied())
        .find_map(|l| STATUS_CODE.captures(l)?.get(1)?.as_str().parse().ok());
    let last_phrase = phrases.iter().filter_map(|p| p.line).max();
    logged.time = last_phrase
        .and_then(|l| lines.get(l - 1))
        .and_then(|l| TIME.find(l))
        .map(|m| m.as_str().to_owned());

    let cluster_named = run.iter().any(|l| names_token(l, cluster));
    let resource_group_named = resource_group.map(|g| run.iter().any(|l| names_token(l, g)));
    if !cluster_named {
        problems.push(format!(
            "the log does not name cluster {cluster}{}",
            also(&logged.cluster_ids)
        ));
    }
    if let (Some(g), Some(false)) = (resource_group, resource_group_named) {
        problems.push(format!(
            "the log does not name resource group {g}{}",
            also(&logged.resource_groups)
        ));
    }
    LogReport {
        ok: problems.is_empty(),
        runs: starts.len(),
        run_starts_at: start + 1,
        phrases,
        cluster_named,
        resource_group_named,
        errors,
        logged,
        problems,
    }
}

fn also(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (it names {})", found.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> String {
        let mut s = String::from("job start cluster ID: c1 resource group rg1\n");
        for p in PHRASES {
            s.push_str(&format!("2026-11-23T10:00:00Z INFO {p}\n"));
        }
        s
    }

    #[test]
    fn a_good_log_passes_and_its_values_are_extracted() {
        let r = check(&good(), "c1", Some("rg1"));
        assert!(r.ok, "{r:?}");
        assert_eq!(r.phrases[4].line, Some(6));
        assert_eq!(r.logged.cluster_ids, ["c1"]);
        assert_eq!(r.logged.resource_groups, ["rg1"]);
        assert_eq!(r.logged.status_code, Some(200));
        assert_eq!(r.logged.time.as_deref(), Some("2026-11-23T10:00:00Z"));
    }

    #[test]
    fn each_phrase_is_looked_for_on_its_own() {
        let log = good().replace(PHRASES[2], "something else");
        let r = check(&log, "c1", None);
        assert_eq!(r.problems, [format!("phrase 3 missing: \"{}\"", PHRASES[2])]);
        assert_eq!(r.phrases[3].line, Some(5), "a missing phrase hides no other");
        assert_eq!(r.phrases[4].line, Some(6));
    }

    #[test]
    fn all_five_phrases_on_one_line_count() {
        let log = format!("cluster=c1 {}\n", PHRASES.join(" | "));
        let r = check(&log, "c1", None);
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn out_of_order_phrases_are_reported_as_such() {
        let log = format!(
            "cluster=c1\n{}\n{}\n{}\n{}\n{}\n",
            PHRASES[1], PHRASES[0], PHRASES[2], PHRASES[3], PHRASES[4]
        );
        let r = check(&log, "c1", None);
        assert!(!r.ok);
        assert_eq!(
            r.problems,
            ["out of order: phrase 2 (line 2) comes before phrase 1 (line 3)"]
        );
    }

    #[test]
    fn names_match_as_whole_tokens() {
        assert!(names_token("cluster=c0ffee12 ok", "c0ffee12"));
        assert!(!names_token("cluster=c0ffee123", "c0ffee12"));
        assert!(!names_token("cluster=xc0ffee12", "c0ffee12"));
        assert!(names_token("\"c0ffee12\"", "c0ffee12"));
        let r = check(&good(), "c", None);
        assert_eq!(r.problems, ["the log does not name cluster c (it names c1)"]);
        assert!(check(&good(), "c1", Some("rg9")).problems[0].contains("resource group rg9 (it names rg1)"));
        // The single space variant of phrase 3 is not accepted.
        let log = good().replace("enabled.  Encrypting", "enabled. Encrypting");
        assert!(!check(&log, "c1", None).ok);
    }

    #[test]
    fn an_error_after_the_phrases_fails_and_is_quoted() {
        for bad in [
            "2026-11-23T10:00:09Z ERROR upload rejected",
            "level=error msg=\"audit failed\"",
            "panic: runtime error: index out of range",
            "Uploaded config with StatusCode: 500",
        ] {
            let r = check(&format!("{}{bad}\u{1b}[0m\n", good()), "c1", None);
            assert!(!r.ok, "{bad}");
            assert_eq!(r.errors.len(), 1, "{bad}");
            assert_eq!(r.errors[0].line, 7);
            assert!(r.errors[0].text.ends_with("\\u{1b}[0m"), "{:?}", r.errors[0]);
        }
        // An error before the update began (a retried connection) is not the outcome.
        let r = check(&format!("ERROR connecting, retrying\n{}", good()), "c1", None);
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn the_last_run_is_judged() {
        let failed = "cluster ID: c1\n".to_owned() + PHRASES[0] + "\n" + PHRASES[1] + "\nERROR boom\n";
        let r = check(&format!("{failed}{}", good()), "c1", None);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.runs, 2);
        assert_eq!(r.run_starts_at, 5, "the second run's header belongs to it");
        let r = check(&format!("{}{failed}", good()), "c1", None);
        assert!(!r.ok);
        assert_eq!(r.runs, 2);
        assert!(
            r.problems.iter().any(|p| p.contains("phrase 3 missing")),
            "{:?}",
            r.problems
        );
        assert!(r.problems.iter().any(|p| p.contains("ERROR boom")), "{:?}", r.problems);
    }
}
