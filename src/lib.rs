//! rekey rotates and verifies the credentials that a managed-Kubernetes
//! service's clusters depend on: registry pull secrets, their encrypted copies
//! in a secrets repo, and the keys inside clusters' storage secrets.
//!
//! The crate is split into a core that works on values (this file's modules
//! other than `cli`) and a `cli` layer that owns every file, terminal,
//! network and clock access. See `ARCHITECTURE.md`.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]

pub mod audit;
pub mod catalog;
pub mod cli;
pub mod dockerconfig;
pub mod exit;
pub mod fingerprint;
pub mod fsx;
pub mod git;
pub mod gojson;
pub mod health;
pub mod host;
pub mod image;
pub mod keyname;
pub mod leakscan;
pub mod manifest;
pub mod pgp;
pub mod registry;
pub mod repo;
pub mod rotation;
pub mod secret;
pub mod storage;
