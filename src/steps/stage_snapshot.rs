//! `stage-snapshot`: the snapshot goes to every node, and every copy is proven identical.

use serde::{Deserialize, Serialize};

use super::rules::{Condition, Rule};
use super::step::{PlanCx, Planned, Step};
use crate::action::{Action, Actions};

/// Copies the snapshot to every node (mode 0600) and proves the copies are byte-identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSnapshot {}

impl Step for StageSnapshot {
    fn rules(&self) -> Vec<Rule> {
        vec![Rule::provides(Condition::SnapshotStaged)]
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let scope = cx.per_node(|n| Actions {
            actions: vec![
                Action::Upload {
                    to: n.run.snapshot(),
                    sha256: cx.snapshot_sha256.to_string(),
                    size: cx.snapshot_size,
                    mode: 0o600,
                },
                Action::CheckSha256 {
                    path: n.run.snapshot(),
                    sha256: cx.snapshot_sha256.to_string(),
                },
            ],
            rollback: vec![Action::RemoveOwnFile {
                path: n.run.snapshot(),
            }],
        });
        Planned::new(
            "copy the snapshot to every node and prove the copies identical",
            false,
            scope,
        )
    }
}
