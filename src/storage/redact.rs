//! Redacted diffs of `slclient.toml`: every secret value is replaced by its
//! fingerprint (the key field by the fingerprint of its decrypted value),
//! so two files can be compared line by line without showing a key.

use crate::fingerprint::Fingerprint;
use crate::secret::ApiKey;
use crate::storage::slclient::{self, KeyField, SlClient};
use similar::TextDiff;

/// Returns true for field names that hold secrets (`*key*`, `*secret*`, `*token*`, `*password*`).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "secret", "token", "password"].iter().any(|w| n.contains(w))
}

fn quote(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

fn shown(bytes: &[u8], reveal: bool) -> String {
    if reveal {
        quote(&String::from_utf8_lossy(bytes))
    } else {
        format!("\"<{}>\"", Fingerprint::of(bytes))
    }
}

/// Renders `client`'s file with secrets redacted. The key field shows
/// `key_value` (the decrypted key, or the expected one) when given.
/// `reveal` shows values instead of fingerprints.
pub fn render(client: &SlClient, field: Option<KeyField>, key_value: Option<&[u8]>, reveal: bool) -> String {
    let mut out = String::with_capacity(client.text.len());
    let mut section = String::new();
    let table = client.table().unwrap_or_default();
    for line in client.text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if let Some(end) = trimmed.find(']') {
                section = trimmed[1..end].trim().trim_matches('[').trim().to_owned();
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let Some(eq) = line.find('=') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let name = line[..eq].trim().trim_matches('"');
        if !is_secret_name(name) || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let is_key_field = field.is_some_and(|f| f.name() == format!("{section}.{name}"));
        let value = slclient::value(&table, &section, name);
        let replacement = match (is_key_field, key_value, value) {
            (true, Some(v), _) => format!("{}  # decrypted", shown(v, reveal)),
            (_, _, Some("")) => "\"\"".to_owned(),
            (_, _, Some(v)) => shown(v.as_bytes(), reveal),
            (_, _, None) => "\"<redacted>\"".to_owned(),
        };
        out.push_str(&line[..=eq]);
        out.push(' ');
        out.push_str(&replacement);
        out.push('\n');
    }
    out
}

/// Returns a unified diff between the cluster's file (key decrypted to
/// `actual`) and the same file carrying the expected key, redacted.
pub fn diff_against_truth(
    client: &SlClient,
    field: KeyField,
    actual: &[u8],
    expected: &ApiKey,
    cluster: &str,
    reveal: bool,
) -> String {
    let a = render(client, Some(field), Some(actual), reveal);
    let b = render(client, Some(field), Some(expected.expose_secret().as_bytes()), reveal);
    unified(
        &a,
        &b,
        &format!("{cluster}/slclient.toml"),
        "source-of-truth/slclient.toml",
    )
}

/// Returns a unified diff of two rendered files.
pub fn unified(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(a_name, b_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[Bluemix]\n  iam_client_secret = \"bx\"\n  iam_api_key = \"ENVELOPE\"\n  refresh_token = \"\"\n  encryption = true\n[VPC]\n  g2_api_key = \"\"\n";

    #[test]
    fn replaces_every_secret_with_a_fingerprint() {
        let c = SlClient::parse(FILE.as_bytes()).unwrap();
        let out = render(&c, Some(KeyField::Bluemix), Some(b"PLAINKEY"), false);
        assert!(
            !out.contains("ENVELOPE") && !out.contains("PLAINKEY") && !out.contains("\"bx\""),
            "{out}"
        );
        assert!(out.contains(&format!(
            "  iam_api_key = \"<{}>\"  # decrypted",
            Fingerprint::of(b"PLAINKEY")
        )));
        assert!(out.contains("  refresh_token = \"\"\n"));
        assert!(out.contains("  encryption = true\n"));
        let revealed = render(&c, Some(KeyField::Bluemix), Some(b"PLAINKEY"), true);
        assert!(revealed.contains("\"PLAINKEY\""));
    }

    #[test]
    fn diff_shows_only_the_key_line() {
        let c = SlClient::parse(FILE.as_bytes()).unwrap();
        let expected = ApiKey::from_str_checked("OTHERKEY").unwrap();
        let d = diff_against_truth(&c, KeyField::Bluemix, b"PLAINKEY", &expected, "c1", false);
        assert!(
            d.contains(&format!("-  iam_api_key = \"<{}>\"", Fingerprint::of(b"PLAINKEY"))),
            "{d}"
        );
        assert!(
            d.contains(&format!("+  iam_api_key = \"<{}>\"", Fingerprint::of(b"OTHERKEY"))),
            "{d}"
        );
        assert!(!d.contains("OTHERKEY\"") && !d.contains("PLAINKEY\""));
    }
}
