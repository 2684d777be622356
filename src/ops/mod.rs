//! Workflows as library operations: each takes a typed request and the
//! outside world as narrow interfaces (the secrets repo store, git, the
//! registry verifier, the clock, randomness, an event sink) and returns a
//! typed, serializable report. The `cli` layer builds the request, calls
//! the operation and renders the report; operations never print, read the
//! environment or the terminal.

pub mod authorship;
pub mod check;
pub mod reencrypt;
pub mod retire;
pub mod rollback;
pub mod rotate;
pub mod seal;
pub mod sign;
pub mod world;

#[cfg(test)]
mod tests;
