//! `etcd-recover completions`: shell completions for every command and flag.

use clap::CommandFactory;

use super::Cli;
use crate::error::Exit;
use crate::ui;

/// Prints the completions for `shell`.
pub(crate) fn run(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "etcd-recover", &mut script);
    ui::document(script)?;
    Ok(Exit::Success)
}
