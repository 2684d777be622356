//! `WWW-Authenticate` challenges as registries send them (RFC 7235 with the
//! real-world variations: quoted and unquoted values, commas inside quotes,
//! several challenges in one header).

use std::collections::BTreeMap;

/// The authentication scheme a registry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer,
    Other(String),
}

/// One challenge: its scheme and parameters (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Returns the named parameter (`realm`, `service`, `scope`, `error`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Why a `WWW-Authenticate` value cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("the WWW-Authenticate header is empty")]
    Empty,
    #[error("the WWW-Authenticate header has an unterminated quoted value")]
    Unterminated,
    #[error("the WWW-Authenticate header has a malformed parameter near `{0}`")]
    Malformed(String),
}

/// Parses every challenge in a `WWW-Authenticate` header value.
pub fn parse_challenges(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let s = header.trim();
    if s.is_empty() {
        return Err(ChallengeError::Empty);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && !chars[*i].is_whitespace() && !matches!(chars[*i], ',' | '=' | '"') {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            return Err(ChallengeError::Malformed(chars[i..].iter().take(16).collect()));
        }
        // Peek: `name=` is a parameter of the current challenge; a bare word starts a new one.
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        let is_param = j < chars.len() && chars[j] == '=' && !out.is_empty();
        if !is_param {
            let scheme = match word.to_ascii_lowercase().as_str() {
                "basic" => Scheme::Basic,
                "bearer" => Scheme::Bearer,
                _ => Scheme::Other(word),
            };
            out.push(Challenge {
                scheme,
                params: BTreeMap::new(),
            });
            continue;
        }
        i = j + 1;
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let value = if i < chars.len() && chars[i] == '"' {
            i += 1;
            let mut v = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(ChallengeError::Unterminated),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        if let Some(c) = chars.get(i + 1) {
                            v.push(*c);
                        }
                        i += 2;
                    }
                    Some(c) => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            v
        } else {
            let start = i;
            while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                i += 1;
            }
            chars[start..i].iter().collect()
        };
        if let Some(last) = out.last_mut() {
            last.params.insert(word.to_ascii_lowercase(), value);
        }
    }
    if out.is_empty() {
        return Err(ChallengeError::Empty);
    }
    Ok(out)
}

/// Returns the challenge to answer: Bearer preferred over Basic.
pub fn pick(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .find(|c| c.scheme == Scheme::Bearer)
        .or_else(|| challenges.iter().find(|c| c.scheme == Scheme::Basic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_bearer_with_commas_in_scope() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, Scheme::Bearer);
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn parses_unquoted_values_spaces_and_case() {
        let c = parse_challenges("bearer Realm=https://a/t, service=reg ,scope=repository:x:pull").unwrap();
        assert_eq!(c[0].scheme, Scheme::Bearer);
        assert_eq!(c[0].param("realm"), Some("https://a/t"));
        assert_eq!(c[0].param("service"), Some("reg"));
        assert_eq!(c[0].param("scope"), Some("repository:x:pull"));
    }

    #[test]
    fn parses_basic_and_several_challenges() {
        let c = parse_challenges(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c[0].scheme, Scheme::Basic);
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        let c = parse_challenges(r#"Basic realm="x", Bearer realm="https://t/token",service="s""#).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(pick(&c).map(|c| &c.scheme), Some(&Scheme::Bearer));
        let c = parse_challenges("Negotiate").unwrap();
        assert_eq!(c[0].scheme, Scheme::Other("Negotiate".into()));
        assert!(pick(&c).is_none());
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(parse_challenges("  "), Err(ChallengeError::Empty));
        assert_eq!(
            parse_challenges(r#"Bearer realm="https://a"#),
            Err(ChallengeError::Unterminated)
        );
        assert!(parse_challenges("=x").is_err());
        let c = parse_challenges(r#"Bearer realm="a\"b""#).unwrap();
        assert_eq!(c[0].param("realm"), Some("a\"b"));
    }

    #[test]
    fn non_ascii_parameters_are_kept() {
        let c = parse_challenges("Bearer realm=\"https://a/tökén\",service=\"régistry\"").unwrap();
        assert_eq!(c[0].param("realm"), Some("https://a/tökén"));
        assert_eq!(c[0].param("service"), Some("régistry"));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const VALID: &str = r#"Basic realm="x", Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope""#;

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(s in ".{0,256}") {
                if let Ok(c) = parse_challenges(&s) {
                    prop_assert!(!c.is_empty());
                    let _ = pick(&c);
                }
            }

            #[test]
            fn header_like_text_never_panics(s in r#"[A-Za-z=", \\\t]{0,128}"#) {
                let _ = parse_challenges(&s);
            }
        }

        #[test]
        fn every_truncation_and_byte_flip_is_ok_or_a_clean_error() {
            let valid = VALID.as_bytes();
            for end in 0..=valid.len() {
                let _ = parse_challenges(&String::from_utf8_lossy(&valid[..end]));
            }
            for at in 0..valid.len() {
                for bit in 0..8 {
                    let mut bytes = valid.to_vec();
                    bytes[at] ^= 1 << bit;
                    let _ = parse_challenges(&String::from_utf8_lossy(&bytes));
                }
            }
            let full = parse_challenges(VALID).unwrap();
            assert_eq!(full.len(), 2);
        }
    }
}
