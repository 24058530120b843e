//! Errors and exit codes.
//!
//! Errors are `anyhow` chains. A layer of type [`Hint`] carries advice for the user; the
//! renderer ([`crate::ui::error`]) prints it after the chain as `hint: ...` instead of as a
//! cause. A layer of type [`ExitWith`] chooses the exit code.

use std::fmt;

/// Advice attached to an error: what the user can do about it.
#[derive(Debug, Clone)]
pub struct Hint(pub String);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Hint {}

/// Attaches a [`Hint`] to an error.
pub trait HintExt<T> {
    /// Adds `hint` to the error, if any.
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T>;
}

impl<T, E> HintExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(Hint(hint.into())))
    }
}

/// Process exit codes. Documented in `docs/exit-codes.md`; scripts rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for was done and verified.
    Success = 0,
    /// An error stopped the command (bad input, unreachable node, failed step, ...).
    Failure = 1,
    /// The command line itself was wrong.
    Usage = 2,
    /// A check found problems: `check` saw an unhealthy node, `plan` found blocking findings.
    ChecksFailed = 3,
    /// A saved plan no longer matches the cluster or the snapshot.
    PlanDrift = 4,
    /// The restore failed and was rolled back; the cluster is as it was before.
    RolledBack = 5,
    /// The run is paused (by request, Ctrl-C or `--no-rollback`) and can be resumed.
    Paused = 6,
    /// The user declined a confirmation; nothing was changed.
    Declined = 7,
    /// Ctrl-C before anything was changed (the shell convention for SIGINT, 128 + 2).
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// An error that ends the command with a specific exit code (instead of [`Exit::Failure`]).
#[derive(Debug)]
pub struct ExitWith(pub Exit);

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {}", self.0 as u8)
    }
}

impl std::error::Error for ExitWith {}

/// The exit code an error maps to.
pub fn exit_code(err: &anyhow::Error) -> Exit {
    err.downcast_ref::<ExitWith>()
        .map_or(Exit::Failure, |x| x.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_comes_from_the_chain() {
        let err = anyhow::Error::new(ExitWith(Exit::PlanDrift)).context("plan is stale");
        assert_eq!(exit_code(&err), Exit::PlanDrift);
    }
}
