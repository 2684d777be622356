//! Registry host names as they appear in a dockerconfigjson: a lower-case DNS
//! name or IPv4 address, optionally with a port (`localhost:5000`).

use std::fmt;

/// A validated registry host, optionally with a port.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

/// Why a string is not a registry host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("is empty")]
    Empty,
    #[error("contains whitespace")]
    Whitespace,
    #[error("has a scheme; write the host name only, without `{0}://`")]
    Scheme(String),
    #[error("has a path; write the host name only")]
    Path,
    #[error("ends with a dot")]
    TrailingDot,
    #[error("contains upper-case letters; write it in lower case")]
    UpperCase,
    #[error("has an invalid port `{0}`")]
    Port(String),
    #[error("has an invalid label `{0}`: labels are 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`")]
    Label(String),
    #[error("is longer than 253 characters")]
    TooLong,
}

impl Host {
    /// Parses and validates a host, with an optional `:port`.
    pub fn parse(s: &str) -> Result<Host, HostError> {
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace()) {
            return Err(HostError::Whitespace);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(HostError::Scheme(scheme.to_owned()));
        }
        if s.contains('/') || s.contains('?') || s.contains('#') {
            return Err(HostError::Path);
        }
        if s.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(HostError::UpperCase);
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        };
        if let Some(port) = port {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && matches!(port.parse::<u32>(), Ok(1..=65535));
            if !valid {
                return Err(HostError::Port(port.to_owned()));
            }
        }
        if name.ends_with('.') {
            return Err(HostError::TrailingDot);
        }
        if name.len() > 253 {
            return Err(HostError::TooLong);
        }
        for label in name.split('.') {
            let valid = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(HostError::Label(label.to_owned()));
            }
        }
        Ok(Host(s.to_owned()))
    }

    /// Returns the host as written, port included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the host name without the port.
    pub fn name(&self) -> &str {
        self.0.rsplit_once(':').map_or(&self.0, |(name, _)| name)
    }

    /// Returns the port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.0.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({})", self.0)
    }
}

impl serde::Serialize for Host {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_ports_and_addresses() {
        for ok in [
            "us.icr.io",
            "private.us.icr.io",
            "localhost:5000",
            "127.0.0.1:443",
            "a-b.c",
        ] {
            assert_eq!(Host::parse(ok).unwrap().as_str(), ok);
        }
        let h = Host::parse("localhost:5000").unwrap();
        assert_eq!((h.name(), h.port()), ("localhost", Some(5000)));
        assert_eq!(Host::parse("jp.icr.io").unwrap().port(), None);
    }

    #[test]
    fn rejects_bad_forms() {
        use HostError::*;
        let cases: &[(&str, HostError)] = &[
            ("", Empty),
            ("us.icr.io ", Whitespace),
            ("https://us.icr.io", Scheme("https".into())),
            ("us.icr.io/v2", Path),
            ("us.icr.io.", TrailingDot),
            ("US.icr.io", UpperCase),
            ("us.icr.io:0", Port("0".into())),
            ("us.icr.io:70000", Port("70000".into())),
            ("us.icr.io:", Port("".into())),
            ("-us.icr.io", Label("-us".into())),
            ("us..io", Label("".into())),
            ("us_east.icr.io", Label("us_east".into())),
        ];
        for (input, want) in cases {
            assert_eq!(&Host::parse(input).unwrap_err(), want, "{input:?}");
        }
    }
}
