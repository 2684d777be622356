//! Storage secret verification: does the IAM key inside each cluster's
//! `storage-secret-store` equal the source of truth?
//!
//! `kube` reads the Secrets, `slclient` the file inside, `envelope` opens
//! the AES-GCM envelope, `truth` holds the records, `verify` compares,
//! `redact` renders diffs without secrets, `joblog` checks update job logs
//! and `etcd` speaks the etcd v3 JSON gateway's wire format (values only).

pub mod envelope;
pub mod etcd;
pub mod joblog;
pub mod kube;
#[cfg(test)]
mod proptests;
pub mod redact;
pub mod sdnlb;
pub mod slclient;
pub mod split;
pub mod truth;
pub mod verify;
