//! Integration tests: drive the real `rekey` binary as a user would, against
//! real peers started by the tests. One test binary, so it links once.

mod pgp_support;
mod support;

mod cli;
mod encrypt;
mod generate;
mod health;
mod health_support;
mod inspect;
mod secrets_repo;
mod verify;
mod verify_support;
