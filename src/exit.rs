//! Exit codes shared by every command, kept in one place.
//!
//! 0: everything verified; 1: a verification found a problem; 2: usage,
//! input or environment error.

use std::process::ExitCode;

/// The outcome of a command that ran to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything the command checked is fine.
    Ok,
    /// The command ran, and what it verified has a problem.
    Problem,
    /// Usage, input or environment error: nothing was verified.
    Error,
}

impl Exit {
    /// Returns the process exit status for this outcome.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problem => 1,
            Exit::Error => 2,
        }
    }

    /// Returns `Problem` when `problem` is true, `Ok` otherwise.
    pub fn problem_if(problem: bool) -> Exit {
        if problem { Exit::Problem } else { Exit::Ok }
    }

    /// Returns the worse of two outcomes.
    pub fn worst(self, other: Exit) -> Exit {
        if other.code() > self.code() { other } else { self }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::Problem.code(), 1);
        assert_eq!(Exit::Error.code(), 2);
    }

    #[test]
    fn worst_keeps_the_higher_code() {
        assert_eq!(Exit::Ok.worst(Exit::Problem), Exit::Problem);
        assert_eq!(Exit::Error.worst(Exit::Problem), Exit::Error);
        assert_eq!(Exit::problem_if(false), Exit::Ok);
        assert_eq!(Exit::problem_if(true), Exit::Problem);
    }
}
