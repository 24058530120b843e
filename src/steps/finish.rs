//! `finish`: the staged snapshot goes, the lock is released. Old data directories and the
//! original manifests stay on the nodes.

use serde::{Deserialize, Serialize};

use super::rules::{Condition, Rule};
use super::step::{PlanCx, Planned, Step};
use crate::action::{Action, Actions};

/// Releases the per-node lock and records the run as complete. Old data directories and the
/// original manifests stay on the nodes until the user removes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {}

impl Step for Finish {
    fn rules(&self) -> Vec<Rule> {
        vec![Rule::provides(Condition::Finished)]
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let scope = cx.per_node(|n| {
            Actions::only(vec![
                Action::RemoveOwnFile {
                    path: n.run.snapshot(),
                },
                Action::ReleaseLock {
                    path: n.facts.layout.lock(),
                },
            ])
        });
        Planned::new(
            "remove the staged snapshot, release the lock (old data and original manifests stay)",
            false,
            scope,
        )
    }
}
