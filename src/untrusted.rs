//! Documents from outside (repo files, PR content, server answers) are read
//! under bounds, and their parse errors are described without quoting them.
//!
//! Parse errors of serde_json and serde_yaml quote the offending value
//! ("invalid type: string \"…\""), which for a pull secret or a reflected
//! header is the key itself: [`json_error`] and [`yaml_error`] keep only the
//! kind of error and its position.
//!
//! The YAML parser rekey uses takes time quadratic in the nesting depth of
//! flow collections (`[[[[…]]]]` under a mapping key): 200 KB of brackets
//! took 40 s. No real Secret, List or pull secret nests more than a few
//! levels, so documents nested deeper than a small limit are refused before
//! parsing. The scan is linear and needs no allocation per level.

/// Returns `text` with control characters (C0, DEL, C1) and bidirectional
/// overrides written as `\u{..}` escapes, so that text from a server or a
/// pull request cannot drive the terminal, log or JUnit file it lands in.
pub fn escape(text: &str) -> String {
    escape_with(text, false, usize::MAX)
}

/// Like [`escape`], but keeps line feeds (for multi-line reports).
pub fn escape_lines(text: &str) -> String {
    escape_with(text, true, usize::MAX)
}

/// Like [`escape`], keeping at most `max` characters of `text` (then `…`).
pub fn escape_bounded(text: &str, max: usize) -> String {
    escape_with(text, false, max)
}

fn escape_with(text: &str, keep_newlines: bool, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max.saturating_add(8)));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && !(keep_newlines && c == '\n')) || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Describes a JSON parse error by its kind and position only.
pub fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "a field is missing or of the wrong type",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// Describes a YAML parse error by its position only.
pub fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(l) => format!(
            "not valid YAML, or a field is missing or of the wrong type (line {}, column {})",
            l.line(),
            l.column()
        ),
        None => "not valid YAML, or a field is missing or of the wrong type".to_owned(),
    }
}

/// Why a YAML document is refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlBoundError {
    #[error("the YAML nests deeper than {max} levels (at line {line})")]
    TooDeep { max: usize, line: usize },
}

/// The deepest nesting rekey accepts in a YAML document.
pub const MAX_DEPTH: usize = 32;

/// Checks that YAML nests at most `max` levels, by flow brackets (`[`,
/// `{`) outside quotes and comments, by block indentation and by `- - -`
/// sequence dashes, in one linear pass. Lines of block scalars (`|`, `>`)
/// are text and do not count.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), YamlBoundError> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    let mut in_block_scalar: Option<usize> = None;
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let indent = line.iter().take_while(|b| **b == b' ').count();
        let rest = &line[indent..];
        let blank = rest.iter().all(u8::is_ascii_whitespace) || rest.first() == Some(&b'#');
        // Lines of a block scalar (`|` or `>`) are text, not structure.
        if let Some(parent) = in_block_scalar {
            if blank || indent > parent {
                continue;
            }
            in_block_scalar = None;
        }
        if flow == 0 && !blank {
            while indents.last().is_some_and(|top| *top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            // `- - - x` nests a sequence per dash.
            let dashes = rest.chunks(2).take_while(|c| c == b"- " || c == b"-").count();
            if indents.len() + dashes > max {
                return Err(YamlBoundError::TooDeep { max, line: n + 1 });
            }
        }
        let mut quote: Option<u8> = None;
        let mut prev = b' ';
        let mut escaped = false;
        for &b in rest {
            match quote {
                Some(b'"') if escaped => escaped = false,
                Some(b'"') if b == b'\\' => escaped = true,
                Some(q) => {
                    if b == q {
                        quote = None;
                    }
                }
                None => match b {
                    b'"' | b'\'' if matches!(prev, b' ' | b'[' | b'{' | b',' | b':' | b'-') => quote = Some(b),
                    b'#' if prev == b' ' || prev == b'\t' => break,
                    b'[' | b'{' => {
                        flow += 1;
                        if flow + indents.len() > max {
                            return Err(YamlBoundError::TooDeep { max, line: n + 1 });
                        }
                    }
                    b']' | b'}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = b;
        }
        let trimmed = rest.trim_ascii_end();
        if flow == 0
            && (trimmed.ends_with(b"|")
                || trimmed.ends_with(b">")
                || trimmed.ends_with(b"|-")
                || trimmed.ends_with(b">-"))
        {
            in_block_scalar = Some(indent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_never_quote_the_document() {
        let e =
            serde_json::from_str::<std::collections::BTreeMap<String, u32>>(r#"{"a": "hunter2-secret"}"#).unwrap_err();
        assert!(
            e.to_string().contains("hunter2"),
            "serde quotes values: the reason this module exists"
        );
        assert!(!json_error(&e).contains("hunter2"));
        let e = serde_yaml_ng::from_str::<std::collections::BTreeMap<String, u32>>("a: hunter2-secret\n").unwrap_err();
        assert!(!yaml_error(&e).contains("hunter2"));
    }

    #[test]
    fn real_manifests_pass() {
        let secret = b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: all-icr-io\n  namespace: default\ndata:\n  .dockerconfigjson: eyJhdXRocyI6e319\ntype: kubernetes.io/dockerconfigjson\n";
        assert!(check_depth(secret, MAX_DEPTH).is_ok());
        let list = b"kind: List\nitems:\n- kind: Secret\n  data:\n    a: b\n  metadata: {name: x, labels: {a: b}}\n";
        assert!(check_depth(list, MAX_DEPTH).is_ok());
    }

    #[test]
    fn deep_flow_nesting_is_refused_quickly() {
        let n = 200_000;
        let doc = format!("data:\n  x: {}{}\n", "[".repeat(n), "]".repeat(n));
        let started = std::time::Instant::now();
        assert_eq!(
            check_depth(doc.as_bytes(), MAX_DEPTH),
            Err(YamlBoundError::TooDeep { max: 32, line: 2 })
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let doc: String = (0..100).map(|i| format!("{}a:\n", "  ".repeat(i))).collect();
        assert!(matches!(
            check_depth(doc.as_bytes(), MAX_DEPTH),
            Err(YamlBoundError::TooDeep { .. })
        ));
        let seq: String = (0..100).map(|i| format!("{}- x\n", " ".repeat(i))).collect();
        assert!(matches!(
            check_depth(seq.as_bytes(), MAX_DEPTH),
            Err(YamlBoundError::TooDeep { .. })
        ));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let doc = format!(
            "a: \"{}\"\nb: '{}'\nc: 1 # {}\n",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(check_depth(doc.as_bytes(), MAX_DEPTH).is_ok());
    }
}
