//! The secrets repo: its layout and per-secret metadata, rotation states and
//! their transitions, OpenPGP sealing and the recipient policy, the rotation
//! journal, the git edge, the leak scanner and the key-age audit, and the
//! store through which every command reads and writes the repo on disk.

pub mod audit;
pub mod authorship;
pub mod git;
pub mod history;
pub mod journal;
pub mod layout;
pub mod leaks;
pub mod leakscan;
pub mod pgp;
pub mod signing;
pub mod store;
