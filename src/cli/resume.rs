//! `etcd-recover resume`: continue a paused or interrupted run.

use std::path::PathBuf;

use super::args::{Global, RunArgs};
use super::flow::{Policy, Session, Task};
use super::runs;
use crate::error::Exit;
use crate::ui::prompt;

/// Runs `resume`.
pub(crate) fn run(args: &RunArgs, global: &Global) -> anyhow::Result<Exit> {
    Session::run(args.output.style(), |session| async move {
        let printer = &session.printer;
        let (journal, plan, cluster) =
            runs::open(global, &args.run, args.inventory.as_deref(), printer).await?;
        match journal.last_outcome() {
            Some("completed") => {
                printer.line(&format!("run {} is already complete", plan.run_id));
                return Ok(Exit::Success);
            }
            Some("rolled-back") => {
                anyhow::bail!(
                    "run {} was rolled back; plan a new run instead",
                    plan.run_id
                )
            }
            _ => {}
        }
        let policy = Policy {
            ask_on_failure: !args.yes && prompt::can_ask(),
            step: false,
            no_rollback: args.no_rollback,
        };
        let snapshot = PathBuf::from(&plan.snapshot.path);
        session
            .run_engine(plan, &cluster, snapshot, Task::Resume(journal), policy)
            .await
    })
}
