//! Error presentation and exit codes.
//!
//! Errors are `anyhow` chains. A layer of type [`Hint`] carries advice for the user; the renderer
//! prints it after the chain as `hint: ...` instead of as a cause.

use std::fmt;
use std::io::Write;

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

/// Writes `error: ...`, `caused by: ...` and `hint: ...` lines for an error chain.
pub fn render(err: &anyhow::Error, out: &mut dyn Write) -> std::io::Result<()> {
    // anyhow finds a context value anywhere in the chain by type, but presents context layers
    // only as text; the hint's layer is recognised by its text and printed last.
    let hint = err.downcast_ref::<Hint>().map(|h| h.0.clone());
    let mut first = true;
    for layer in err.chain() {
        let text = layer.to_string();
        let is_exit = err
            .downcast_ref::<ExitWith>()
            .is_some_and(|x| x.to_string() == text);
        if hint.as_deref() == Some(text.as_str()) || is_exit {
            continue;
        }
        let label = if first { "error" } else { "caused by" };
        first = false;
        writeln!(out, "{label}: {text}")?;
    }
    if let Some(h) = hint {
        writeln!(out, "hint: {h}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn renders_chain_and_hints_in_order() {
        let err: anyhow::Result<()> = Err(std::io::Error::other("permission denied"))
            .context("cannot read `/etc/kubernetes/manifests/etcd.yaml` on cp-1")
            .hint("run with an SSH user that may use sudo");
        let err = err.unwrap_err().context("discovery failed");
        let mut buf = Vec::new();
        render(&err, &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "error: discovery failed\n\
             caused by: cannot read `/etc/kubernetes/manifests/etcd.yaml` on cp-1\n\
             caused by: permission denied\n\
             hint: run with an SSH user that may use sudo\n"
        );
        assert_eq!(exit_code(&err), Exit::Failure);
    }

    #[test]
    fn exit_code_comes_from_the_chain() {
        let err = anyhow::Error::new(ExitWith(Exit::PlanDrift)).context("plan is stale");
        assert_eq!(exit_code(&err), Exit::PlanDrift);
        let mut buf = Vec::new();
        render(&err, &mut buf).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "error: plan is stale\n");
    }
}
