//! Renders `rekey check`'s report as text, JSON or JUnit.

use crate::cli::output::{OutputFormat, Paint, Printer, plural};
use crate::ops::check::{CheckReport, CheckResult, SecretChange};
use std::collections::BTreeMap;

/// Prints `report` in the printer's format.
/// With `failures_only`, text output lists only the failing checks (and
/// what the pull request changes about the policies), for a long PR.
pub fn render(printer: &Printer, report: &CheckReport, failures_only: bool) -> anyhow::Result<()> {
    match printer.format() {
        OutputFormat::Json => printer.json(report),
        OutputFormat::Junit => printer.junit(&junit(&report.checks)),
        OutputFormat::Text | OutputFormat::Openmetrics => {
            for r in report.checks.iter().filter(|r| !(failures_only && r.ok)) {
                let verdict = if r.ok {
                    printer.paint(Paint::Good, "ok  ")
                } else {
                    printer.paint(Paint::Bad, "FAIL")
                };
                printer.line(format_args!("{verdict}  {:<10} {}  {}", r.kind, r.target, r.detail));
            }
            let p = &report.policy_changes;
            for r in &p.recipients_added {
                printer.line(format_args!("recipient added (gains access once merged): {r}"));
            }
            for r in &p.recipients_removed {
                printer.line(format_args!("recipient removed: {r}"));
            }
            for w in &p.waivers_added {
                printer.line(format_args!("waiver added (waives nothing in this pull request): {w}"));
            }
            for w in &p.waivers_removed {
                printer.line(format_args!("waiver removed: {w}"));
            }
            for s in &p.signers_added {
                printer.line(format_args!(
                    "signer added (may sign once merged): {} (fingerprint {})",
                    s.user_id, s.fingerprint
                ));
            }
            for s in &p.signers_removed {
                printer.line(format_args!(
                    "signer removed: {} (fingerprint {})",
                    s.user_id, s.fingerprint
                ));
            }
            for w in &report.waived {
                printer.line(format_args!(
                    "waived   {} line {}: {} {} (reason: {})",
                    w.path, w.line, w.rule, w.fingerprint, w.reason
                ));
            }
            if !failures_only {
                for c in &report.changes {
                    printer.line(summary_line(c));
                }
            }
            printer.status(format_args!(
                "{}, {} failed",
                plural(report.checks.len(), "check", "checks"),
                report.failed()
            ));
            Ok(())
        }
    }
}

/// Returns one secret's summary: what changed, by key fingerprint (and the
/// new key's name, when recorded: each region has its own key).
pub fn summary_line(c: &SecretChange) -> String {
    let old = c.old_key_fingerprint.as_deref().unwrap_or("none");
    let new = c.new_key_fingerprint.as_deref().unwrap_or("none");
    let region = c.region.as_deref().unwrap_or("-");
    let mut line = match c.change {
        "reencrypted" if c.contents_checked => format!(
            "reencrypted {} ({region}): same key {new} and contents, re-encrypted only",
            c.secret
        ),
        "reencrypted" => format!(
            "reencrypted {} ({region}): same key {new} and contents per the metadata (--key compares them), re-encrypted only",
            c.secret
        ),
        "changed" if old == new => format!("{:<8} {} ({region}): key {new} unchanged", c.change, c.secret),
        _ => {
            let named = c.new_key_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            format!("{:<8} {} ({region}): {old} -> {new}{named}", c.change, c.secret)
        }
    };
    if !c.hosts_added.is_empty() {
        line.push_str(&format!(", hosts added: {}", c.hosts_added.join(", ")));
    }
    if !c.hosts_removed.is_empty() {
        line.push_str(&format!(", hosts removed: {}", c.hosts_removed.join(", ")));
    }
    line
}

fn junit(results: &[CheckResult]) -> quick_junit::Report {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for r in results {
        let status = if r.ok {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type(r.kind);
            s.set_message(r.detail.clone());
            s
        };
        let mut case = TestCase::new(r.target.clone(), status);
        case.set_classname(format!("check.{}", r.kind));
        if r.ok {
            case.set_system_out(r.detail.clone());
        }
        suites
            .entry(r.kind)
            .or_insert_with(|| TestSuite::new(format!("rekey check {}", r.kind)))
            .add_test_case(case);
    }
    let mut report = Report::new("rekey check");
    report.add_test_suites(suites.into_values());
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &'static str, old: &str, new: &str) -> SecretChange {
        SecretChange {
            secret: "JP".into(),
            region: Some("jp".into()),
            change: kind,
            old_key_fingerprint: Some(old.into()),
            new_key_fingerprint: Some(new.into()),
            new_key_name: None,
            hosts_added: vec!["a.io".into()],
            hosts_removed: Vec::new(),
            contents_checked: true,
        }
    }

    #[test]
    fn a_reencryption_is_not_shown_as_x_to_x() {
        let line = summary_line(&change("reencrypted", "sha256:1", "sha256:1"));
        assert_eq!(
            line,
            "reencrypted JP (jp): same key sha256:1 and contents, re-encrypted only, hosts added: a.io"
        );
        let mut unchecked = change("reencrypted", "sha256:1", "sha256:1");
        unchecked.contents_checked = false;
        assert!(summary_line(&unchecked).contains("per the metadata (--key compares them)"));
        assert_eq!(
            summary_line(&change("changed", "sha256:1", "sha256:1")),
            "changed  JP (jp): key sha256:1 unchanged, hosts added: a.io"
        );
        assert_eq!(
            summary_line(&change("rotated", "sha256:1", "sha256:2")),
            "rotated  JP (jp): sha256:1 -> sha256:2, hosts added: a.io"
        );
        let mut named = change("rotated", "sha256:1", "sha256:2");
        named.new_key_name = Some("k-ap-north-20261124".into());
        assert_eq!(
            summary_line(&named),
            "rotated  JP (jp): sha256:1 -> sha256:2 (k-ap-north-20261124), hosts added: a.io"
        );
    }
}
