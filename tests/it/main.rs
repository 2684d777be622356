//! Integration tests: drive the real `rekey` binary as a user would, against
//! real peers started by the tests. One test binary, so it links once.

mod pgp_support;
mod support;

mod audit;
mod check;
mod cli;
mod encrypt;
mod generate;
mod health;
mod health_support;
mod inspect;
mod leaks;
mod leaks_corpus;
mod rotate;
mod secrets_repo;
mod storage;
mod storage_support;
mod verify;
mod verify_support;
