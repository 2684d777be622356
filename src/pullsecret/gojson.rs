//! JSON string encoding exactly as Go's `encoding/json` writes it.
//!
//! Kubernetes tooling (kubectl) builds dockerconfigjson with `json.Marshal`;
//! matching it byte for byte keeps secrets-repo diffs stable.

/// Appends `s` to `out` as a Go `json.Marshal` string literal, quotes included.
///
/// Go escapes `"` and `\`, writes `\b \f \n \r \t` in short form and other
/// control characters as `\u00XX`, and with HTML escaping on (the default)
/// writes `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`; U+2028 and U+2029 are
/// escaped as well.
pub fn push_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, s);
        out
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(enc("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(enc("q\"\\"), r#""q\"\\""#);
        assert_eq!(enc("\u{1}\n\t\u{8}\u{c}\r"), r#""\u0001\n\t\b\f\r""#);
        assert_eq!(enc("é\u{2028}"), "\"é\\u2028\"");
        assert_eq!(enc("/'\u{7f}"), "\"/'\u{7f}\"");
    }
}
