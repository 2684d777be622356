//! Checking a `cluster_secret_update` job log: the five phrases of a
//! successful update, in order, and the cluster and resource group named.

use serde::Serialize;

/// The phrases a successful update logs, in order.
pub const PHRASES: [&str; 5] = [
    "Successfully populated secret information from network.toml",
    "Updating the cluster secret",
    "Storage Encryption is enabled.  Encrypting Bluemix.IAMAPIKey",
    "Successfully Uploaded config to cluster updater within 5s with StatusCode: 200",
    "About to send the credential Audit event for cluster secret update",
];

/// Where one phrase was found.
#[derive(Debug, Serialize)]
pub struct PhraseFound {
    pub phrase: &'static str,
    /// 1-based line number, or null when missing (after the previous phrase).
    pub line: Option<usize>,
}

/// The result of checking one log.
#[derive(Debug, Serialize)]
pub struct LogReport {
    pub ok: bool,
    pub phrases: Vec<PhraseFound>,
    pub cluster_named: bool,
    /// Null when no resource group was asked for.
    pub resource_group_named: Option<bool>,
    /// The first problem, in words.
    pub first_missing: Option<String>,
}

/// Checks `log` for the phrases in order and for the names.
pub fn check(log: &str, cluster: &str, resource_group: Option<&str>) -> LogReport {
    let mut phrases = Vec::with_capacity(PHRASES.len());
    let mut lines = log.lines().enumerate();
    let mut first_missing = None;
    for (i, phrase) in PHRASES.iter().enumerate() {
        let found = lines.by_ref().find(|(_, l)| l.contains(phrase)).map(|(n, _)| n + 1);
        if found.is_none() && first_missing.is_none() {
            first_missing = Some(if i == 0 {
                format!("phrase 1 missing: \"{phrase}\"")
            } else {
                format!("phrase {} missing after phrase {i}: \"{phrase}\"", i + 1)
            });
        }
        if found.is_none() {
            // Later phrases are looked for from the start of what is left: nothing is left.
            phrases.push(PhraseFound { phrase, line: None });
            continue;
        }
        phrases.push(PhraseFound { phrase, line: found });
    }
    let cluster_named = !cluster.is_empty() && log.contains(cluster);
    let resource_group_named = resource_group.map(|g| !g.is_empty() && log.contains(g));
    if first_missing.is_none() && !cluster_named {
        first_missing = Some(format!("the log does not name cluster {cluster}"));
    }
    if first_missing.is_none() && resource_group_named == Some(false) {
        first_missing = Some(format!(
            "the log does not name resource group {}",
            resource_group.unwrap_or_default()
        ));
    }
    LogReport {
        ok: first_missing.is_none(),
        phrases,
        cluster_named,
        resource_group_named,
        first_missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> String {
        let mut s = String::from("job start cluster c1 resource group rg1\n");
        for p in PHRASES {
            s.push_str(&format!("2026-11-23T10:00:00Z INFO {p}\n"));
        }
        s
    }

    #[test]
    fn a_good_log_passes() {
        let r = check(&good(), "c1", Some("rg1"));
        assert!(r.ok, "{r:?}");
        assert_eq!(r.phrases[4].line, Some(6));
    }

    #[test]
    fn reports_the_first_missing_phrase_and_order() {
        let log = good().replace(PHRASES[2], "something else");
        let r = check(&log, "c1", None);
        assert_eq!(
            r.first_missing.as_deref(),
            Some(&*format!("phrase 3 missing after phrase 2: \"{}\"", PHRASES[2]))
        );
        // Out of order: phrase 2 only before phrase 1.
        let log = format!("{}\n{}\n", PHRASES[1], PHRASES[0]);
        let r = check(&log, "c1", None);
        assert_eq!(r.phrases[1].line, None);
        assert!(!r.ok);
    }

    #[test]
    fn requires_the_names() {
        assert!(check(&good(), "c2", None).first_missing.unwrap().contains("cluster c2"));
        assert!(
            check(&good(), "c1", Some("rg9"))
                .first_missing
                .unwrap()
                .contains("resource group rg9")
        );
        // The single space variant of phrase 3 is not accepted.
        let log = good().replace("enabled.  Encrypting", "enabled. Encrypting");
        assert!(!check(&log, "c1", None).ok);
    }
}
