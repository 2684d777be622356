//! Integration tests: drive the real `rekey` binary as a user would, against
//! real peers started by the tests. One test binary, so it links once.

mod pgp_hostile;
mod pgp_support;
mod support;

mod base_support;
mod peer_support;

mod audit;
mod authorship;
mod check;
mod check_leaks;
mod cli;
mod encrypt;
mod generate;
mod health;
mod health_support;
mod iam_support;
mod init;
mod inspect;
mod keys;
mod keys_retire;
mod leaks;
mod leaks_corpus;
mod man;
mod repo_boundary;
mod rotate;
mod rotate_iam;
mod secrets_repo;
mod signing;
mod storage;
mod storage_support;
mod verify;
mod verify_support;
