//! Pull secrets: the region catalog (regions, registry hosts, probe images,
//! key names) and the dockerconfigjson and Secret manifests rendered from it,
//! byte for byte as kubectl renders them.

pub mod catalog;
pub mod dockerconfig;
pub mod gojson;
pub mod host;
pub mod image;
pub mod keyname;
pub mod manifest;
