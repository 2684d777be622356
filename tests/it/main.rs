//! Integration tests: drive the real `rekey` binary as a user would, against
//! real peers started by the tests. One test binary, so it links once.

mod support;

mod generate;
mod inspect;
mod storage;
mod storage_support;
