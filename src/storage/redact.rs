//! Redacted diffs of `slclient.toml`: every secret value is replaced by its
//! fingerprint (the key field by the fingerprint of its decrypted value),
//! so two files can be compared line by line without showing a key.

use crate::fingerprint::Fingerprint;
use crate::secret::ApiKey;
use crate::storage::slclient::{KeyField, SlClient};
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

/// Returns true when a key path names a secret: any of its parts does.
fn path_is_secret(path: &[&str]) -> bool {
    path.iter().any(|p| is_secret_name(p))
}

/// Writes a key bare when TOML allows it, else quoted.
fn key_text(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        key.to_owned()
    } else {
        quote(key)
    }
}

/// Renders one value, redacting every string whose key path names a secret
/// (inside inline tables and arrays too).
fn value_text(path: &mut Vec<String>, value: &toml::Value, reveal: bool) -> String {
    match value {
        toml::Value::String(v) => {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            if !path_is_secret(&parts) {
                quote(v)
            } else if v.is_empty() {
                "\"\"".to_owned()
            } else {
                shown(v.as_bytes(), reveal)
            }
        }
        toml::Value::Array(items) => {
            let shown: Vec<String> = items.iter().map(|v| value_text(path, v, reveal)).collect();
            format!("[{}]", shown.join(", "))
        }
        toml::Value::Table(t) => {
            let shown: Vec<String> = t
                .iter()
                .map(|(k, v)| {
                    path.push(k.clone());
                    let text = format!("{} = {}", key_text(k), value_text(path, v, reveal));
                    path.pop();
                    text
                })
                .collect();
            if shown.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", shown.join(", "))
            }
        }
        other => other.to_string(),
    }
}

/// Renders the entries of `table` under `path` (a section), then its subtables.
fn render_table(
    out: &mut String,
    path: &mut Vec<String>,
    table: &toml::Table,
    key: Option<(KeyField, &[u8])>,
    reveal: bool,
) {
    let indent = if path.is_empty() { "" } else { "  " };
    for (k, v) in table {
        if matches!(v, toml::Value::Table(_)) {
            continue;
        }
        path.push(k.clone());
        let is_key_field = key.is_some_and(|(f, _)| path.len() == 2 && f.name() == format!("{}.{}", path[0], path[1]));
        let text = match (is_key_field, key) {
            (true, Some((_, plain))) => format!("{}  # decrypted", shown(plain, reveal)),
            _ => value_text(path, v, reveal),
        };
        out.push_str(&format!("{indent}{} = {text}\n", key_text(k)));
        path.pop();
    }
    for (k, v) in table {
        let toml::Value::Table(sub) = v else { continue };
        path.push(k.clone());
        let header: Vec<String> = path.iter().map(|p| key_text(p)).collect();
        out.push_str(&format!("\n[{}]\n", header.join(".")));
        render_table(out, path, sub, key, reveal);
        path.pop();
    }
}

/// Renders `client`'s file from its parsed TOML with secrets redacted:
/// every string whose key path contains key, secret, token or password
/// (in inline tables, arrays and multi-line strings too) shows as its
/// fingerprint. The key field shows `key_value` (the decrypted key, or the
/// expected one) when given. `reveal` shows values instead of fingerprints.
pub fn render(client: &SlClient, field: Option<KeyField>, key_value: Option<&[u8]>, reveal: bool) -> String {
    let Some(table) = client.table() else {
        return "# slclient.toml does not parse as TOML: not shown\n".to_owned();
    };
    let mut out = String::with_capacity(client.text.len());
    let key = field.zip(key_value);
    render_table(&mut out, &mut Vec::new(), &table, key, reveal);
    out.trim_start_matches('\n').to_owned()
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

    #[test]
    fn redaction_works_on_the_parsed_toml_not_lines() {
        let file = r#"
top_token = "T0P"
[Bluemix]
  creds = { client_secret = "INLINE", user = "visible-user" }
  api_keys = ["ARR1", "ARR2"]
  note = '''
multi
line'''
  password_hint = """
MULTI
SECRET"""
  "quoted name" = "Q"
  tokens.nested = "DOTTED"
[Bluemix.sub]
  secret_thing = "SUB"
"#;
        let c = SlClient::parse(file.as_bytes()).unwrap();
        let out = render(&c, None, None, false);
        for leaked in ["T0P", "INLINE", "ARR1", "ARR2", "MULTI", "DOTTED", "SUB"] {
            assert!(!out.contains(leaked), "{leaked} leaked: {out}");
        }
        assert!(out.contains("visible-user"), "{out}");
        assert!(out.contains("\"quoted name\" = \"Q\""), "{out}");
        assert!(
            out.contains(&format!("client_secret = \"<{}>\"", Fingerprint::of(b"INLINE"))),
            "{out}"
        );
        assert!(out.contains("[Bluemix.sub]"), "{out}");
    }
}
