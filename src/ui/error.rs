//! Errors as the user reads them: `error: ...`, then `caused by: ...` for each cause, then
//! `hint: ...` (the [`Hint`] layer of the chain, wherever it sits).

use std::io::Write;

use crate::error::{ExitWith, Hint};

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

/// Prints an error that ended the command on stderr (see [`render`]).
pub fn print(err: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = render(err, &mut stderr);
    let _ = stderr.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code, Exit, HintExt};
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
    fn the_exit_code_layer_is_not_shown() {
        let err = anyhow::Error::new(ExitWith(Exit::PlanDrift)).context("plan is stale");
        let mut buf = Vec::new();
        render(&err, &mut buf).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "error: plan is stale\n");
    }
}
