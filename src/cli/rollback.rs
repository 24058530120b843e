//! `etcd-recover rollback`: undo a run's completed steps on every node, newest first.

use std::path::PathBuf;

use super::args::{Global, RunArgs};
use super::flow::{declined, Policy, Session, Task};
use super::runs;
use crate::error::Exit;
use crate::ui::prompt;

/// Runs `rollback`.
pub(crate) fn run(args: &RunArgs, global: &Global) -> anyhow::Result<Exit> {
    Session::run(args.output.style(), |session| async move {
        let printer = &session.printer;
        let (journal, plan, cluster) =
            runs::open(global, &args.run, args.inventory.as_deref(), printer).await?;
        if journal.touched().is_empty() {
            printer.line(&format!("run {} has nothing to roll back", plan.run_id));
            return Ok(Exit::Success);
        }
        if !args.yes && prompt::can_ask() {
            let question = format!(
                "Roll back run {} on {} node(s)?",
                plan.run_id,
                plan.nodes.len()
            );
            if prompt::confirm(printer, &question) != Some(true) {
                return Err(declined("not confirmed"));
            }
        }
        let snapshot = PathBuf::from(&plan.snapshot.path);
        session
            .run_engine(
                plan,
                &cluster,
                snapshot,
                Task::Rollback(journal),
                Policy::default(),
            )
            .await
    })
}
