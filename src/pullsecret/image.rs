//! Image references (`repository[:tag|@digest]`) as used for the probe image.

use std::fmt;

/// A repository and tag or digest on a registry, without the registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository path, for example `armada-master/alpine`.
    pub repository: String,
    /// Tag (`latest`) or digest (`sha256:...`).
    pub reference: String,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("is empty")]
    Empty,
    #[error("has an invalid repository path component `{0}`")]
    Component(String),
    #[error("has an invalid tag `{0}`")]
    Tag(String),
    #[error("has an invalid digest `{0}`")]
    Digest(String),
}

impl ImageRef {
    /// Parses `repo/path[:tag]` or `repo/path@sha256:<64 hex>`; the tag
    /// defaults to `latest`.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        if s.is_empty() {
            return Err(ImageError::Empty);
        }
        let (repository, reference) = if let Some((repo, digest)) = s.split_once('@') {
            let valid = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            if !valid {
                return Err(ImageError::Digest(digest.to_owned()));
            }
            (repo, digest)
        } else {
            match s.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => {
                    let valid = !tag.is_empty()
                        && tag.len() <= 128
                        && !tag.starts_with(['.', '-'])
                        && tag
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                    if !valid {
                        return Err(ImageError::Tag(tag.to_owned()));
                    }
                    (repo, tag)
                }
                _ => (s, "latest"),
            }
        };
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ImageError::Component(component.to_owned()));
            }
        }
        Ok(ImageRef {
            repository: repository.to_owned(),
            reference: reference.to_owned(),
        })
    }

    /// Returns true when the reference is a digest rather than a tag.
    pub fn is_digest(&self) -> bool {
        self.reference.starts_with("sha256:")
    }
}

/// A path component: `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || (!sep.is_empty() && sep.bytes().all(|b| b == b'-'));
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.is_digest() { '@' } else { ':' };
        write!(f, "{}{}{}", self.repository, sep, self.reference)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_and_digests() {
        let r = ImageRef::parse("armada-master/alpine:latest").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("armada-master/alpine", "latest")
        );
        assert_eq!(ImageRef::parse("alpine").unwrap().reference, "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("a/b@{d}")).unwrap();
        assert!(r.is_digest());
        assert_eq!(r.to_string(), format!("a/b@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!(
            ImageRef::parse("Alpine").unwrap_err(),
            ImageError::Component("Alpine".into())
        );
        assert_eq!(ImageRef::parse("a//b").unwrap_err(), ImageError::Component("".into()));
        assert_eq!(ImageRef::parse("a:").unwrap_err(), ImageError::Tag("".into()));
        assert_eq!(
            ImageRef::parse("a@sha256:12").unwrap_err(),
            ImageError::Digest("sha256:12".into())
        );
        assert!(ImageRef::parse("a..b").is_err());
        assert!(ImageRef::parse("a__b-c").is_ok());
    }
}
