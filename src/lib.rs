//! rekey rotates and verifies the credentials that a managed-Kubernetes
//! service's clusters depend on: registry pull secrets, their encrypted copies
//! in a secrets repo, and the keys inside clusters' storage secrets.
//!
//! The crate has three layers: domain modules that work on values, `ops`
//! (the workflows as library operations, which see the outside world only
//! through narrow interfaces), and a `cli` layer that parses flags, builds
//! the world and renders reports. See `ARCHITECTURE.md`.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]

pub mod childenv;
pub mod cli;
pub mod exit;
pub mod fingerprint;
pub mod fsx;
pub mod health;
pub mod iam;
pub mod ops;
pub mod pullsecret;
pub mod registry;
pub mod secret;
pub mod secrets_repo;
pub mod storage;
pub mod untrusted;
pub mod words;
