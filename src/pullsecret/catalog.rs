//! The region catalog: which registry hosts each region's pull secret covers.
//!
//! The catalog lives in data files (`regions/<name>.toml`), never in code,
//! because hosts are added and retired. This module parses and validates
//! them; reading the directory is the one edge it has.

use crate::pullsecret::host::Host;
use crate::pullsecret::image::ImageRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The username every IBM Cloud registry pull secret uses.
pub const DEFAULT_USERNAME: &str = "iamapikey";
/// The image pulled to prove a key works, unless a region names another.
pub const DEFAULT_PROBE_IMAGE: &str = "armada-master/alpine:latest";

/// One region: its name and the registry hosts its clusters pull from.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub hosts: Vec<Host>,
    pub username: String,
    pub probe_image: ImageRef,
    pub email: Option<String>,
    /// The code in the names of this region's API keys (`ap-north` for jp).
    pub key_code: Option<String>,
    /// The file the region was read from, for messages.
    pub source: PathBuf,
}

/// All regions of a catalog directory, sorted by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    regions: Vec<Region>,
}

/// A catalog that cannot be used, naming the file and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: field `{field}`: {problem}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{}: field `hosts`: `{host}` is listed twice", path.display())]
    DuplicateHost { path: PathBuf, host: String },
    #[error("region `{name}` is defined twice: in {} and {}", first.display(), second.display())]
    DuplicateRegion {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: the catalog has no regions (no *.toml files)", dir.display())]
    Empty { dir: PathBuf },
    #[error("region `{name}` is not in the catalog {}; known regions: {}", dir.display(), known.join(", "))]
    UnknownRegion {
        name: String,
        dir: PathBuf,
        known: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    name: String,
    hosts: Vec<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    probe_image: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    key_code: Option<String>,
}

fn field_error(path: &Path, field: impl Into<String>, problem: impl Into<String>) -> CatalogError {
    CatalogError::Field {
        path: path.to_owned(),
        field: field.into(),
        problem: problem.into(),
    }
}

/// Parses one region file's text; `path` is used in messages only.
pub fn parse_region(path: &Path, text: &str) -> Result<Region, CatalogError> {
    let file: RegionFile = toml::from_str(text).map_err(|e| CatalogError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    if !valid_region_name(&file.name) {
        return Err(field_error(
            path,
            "name",
            format!("`{}` is not a region name: use 1 to 32 of a-z, 0-9 and `-`", file.name),
        ));
    }
    if file.hosts.is_empty() {
        return Err(field_error(path, "hosts", "lists no hosts"));
    }
    let mut hosts: Vec<Host> = Vec::with_capacity(file.hosts.len());
    for (i, raw) in file.hosts.iter().enumerate() {
        let host = Host::parse(raw).map_err(|e| field_error(path, format!("hosts[{i}]"), format!("`{raw}` {e}")))?;
        if hosts.contains(&host) {
            return Err(CatalogError::DuplicateHost {
                path: path.to_owned(),
                host: raw.clone(),
            });
        }
        hosts.push(host);
    }
    let username = file.username.unwrap_or_else(|| DEFAULT_USERNAME.to_owned());
    if username.is_empty() || username.contains(':') || username.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(field_error(
            path,
            "username",
            "must be non-empty, without `:`, whitespace or control characters",
        ));
    }
    let probe_raw = file.probe_image.unwrap_or_else(|| DEFAULT_PROBE_IMAGE.to_owned());
    let probe_image =
        ImageRef::parse(&probe_raw).map_err(|e| field_error(path, "probe_image", format!("`{probe_raw}` {e}")))?;
    if let Some(email) = &file.email {
        validate_email(email).map_err(|problem| field_error(path, "email", problem))?;
    }
    if let Some(code) = &file.key_code
        && !valid_region_name(code)
    {
        return Err(field_error(
            path,
            "key_code",
            format!("`{code}` is not a key code: use 1 to 32 of a-z, 0-9 and `-`"),
        ));
    }
    Ok(Region {
        key_code: file.key_code,
        name: file.name,
        hosts,
        username,
        probe_image,
        email: file.email,
        source: path.to_owned(),
    })
}

/// Checks an email address for a dockerconfigjson entry.
pub fn validate_email(email: &str) -> Result<(), String> {
    if email.is_empty() || email.chars().any(|c| c.is_whitespace() || c.is_control()) || !email.contains('@') {
        return Err(format!("`{email}` is not an email address"));
    }
    Ok(())
}

fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

impl Catalog {
    /// Reads every `*.toml` file in `dir` as a region.
    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let io = |source| CatalogError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        let mut regions = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Io {
                path: path.clone(),
                source,
            })?;
            tracing::debug!("read region file {}", path.display());
            regions.push(parse_region(&path, &text)?);
        }
        let catalog = Catalog::from_regions(dir, regions)?;
        tracing::debug!(
            "loaded the catalog from {}: {}",
            dir.display(),
            catalog
                .regions
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(catalog)
    }

    /// Builds a catalog from parsed regions, rejecting duplicates and emptiness.
    pub fn from_regions(dir: &Path, mut regions: Vec<Region>) -> Result<Catalog, CatalogError> {
        if regions.is_empty() {
            return Err(CatalogError::Empty { dir: dir.to_owned() });
        }
        let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
        for region in &regions {
            if let Some(first) = seen.insert(&region.name, &region.source) {
                return Err(CatalogError::DuplicateRegion {
                    name: region.name.clone(),
                    first: first.to_owned(),
                    second: region.source.clone(),
                });
            }
        }
        regions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Catalog { regions })
    }

    /// Returns all regions, sorted by name.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Returns the named region.
    pub fn get(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Returns the regions named in `names` (all when empty), in catalog
    /// order, or an error naming the first unknown one.
    pub fn select(&self, dir: &Path, names: &[String]) -> Result<Vec<&Region>, CatalogError> {
        if names.is_empty() {
            return Ok(self.regions.iter().collect());
        }
        for name in names {
            if self.get(name).is_none() {
                return Err(CatalogError::UnknownRegion {
                    name: name.clone(),
                    dir: dir.to_owned(),
                    known: self.regions.iter().map(|r| r.name.clone()).collect(),
                });
            }
        }
        Ok(self.regions.iter().filter(|r| names.contains(&r.name)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Region, CatalogError> {
        parse_region(Path::new("regions/x.toml"), text)
    }

    #[test]
    fn parses_a_region_with_defaults() {
        let r = parse("name = \"jp\"\nhosts = [\"jp.icr.io\", \"localhost:5000\"]\n").unwrap();
        assert_eq!(r.name, "jp");
        assert_eq!(r.username, "iamapikey");
        assert_eq!(r.probe_image.to_string(), "armada-master/alpine:latest");
        assert_eq!(r.hosts.len(), 2);
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = parse("name = \"jp\"\nhosts = [\"jp.icr.io\", \"JP.icr.io\"]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "regions/x.toml: field `hosts[1]`: `JP.icr.io` contains upper-case letters; write it in lower case"
        );
        let e = parse("name = \"jp\"\nhosts = [\"a.io\", \"a.io\"]\n").unwrap_err();
        assert_eq!(e.to_string(), "regions/x.toml: field `hosts`: `a.io` is listed twice");
        let e = parse("name = \"jp\"\nhosts = [\"a.io\"]\ncolour = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = parse("name = \"jp\"\nhosts = []\n").unwrap_err();
        assert_eq!(e.to_string(), "regions/x.toml: field `hosts`: lists no hosts");
        let e = parse("name = \"jp\"\nhosts = [\"a.io\"]\nemail = \"nobody\"\n").unwrap_err();
        assert!(e.to_string().contains("field `email`"), "{e}");
        let e = parse("name = \"jp\"\nhosts = [\"a.io\"]\nprobe_image = \"A/b\"\n").unwrap_err();
        assert!(e.to_string().contains("field `probe_image`"), "{e}");
    }

    #[test]
    fn rejects_duplicate_regions_and_empty_catalogs() {
        let a = parse_region(Path::new("a.toml"), "name = \"jp\"\nhosts = [\"a.io\"]").unwrap();
        let b = parse_region(Path::new("b.toml"), "name = \"jp\"\nhosts = [\"b.io\"]").unwrap();
        let e = Catalog::from_regions(Path::new("r"), vec![a, b]).unwrap_err();
        assert_eq!(e.to_string(), "region `jp` is defined twice: in a.toml and b.toml");
        let e = Catalog::from_regions(Path::new("r"), vec![]).unwrap_err();
        assert!(matches!(e, CatalogError::Empty { .. }));
    }
}
