//! `preflight`: the first step. Planning has already read every node and verified the
//! snapshot, and any error finding blocks `apply`; on the nodes the step takes the per-node
//! lock, creates the run directory, saves the plan there and keeps a copy of every manifest.

use serde::{Deserialize, Serialize};

use super::rules::{Condition, Rule};
use super::step::{PlanCx, Planned, Step};
use crate::action::{Action, Actions};

/// Read-only checks on every node and of the snapshot; nothing destructive happens until every
/// node passes. Also takes the per-node lock and creates the node-side run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preflight {}

impl Step for Preflight {
    fn rules(&self) -> Vec<Rule> {
        vec![Rule::provides(Condition::Checked)]
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let scope = cx.per_node(|n| {
            let lock = n.facts.layout.lock();
            let mut actions = vec![
                Action::MakeDir {
                    path: n.facts.layout.base().to_string(),
                    mode: 0o700,
                },
                Action::AcquireLock { path: lock.clone() },
                Action::MakeDir {
                    path: n.run.originals(),
                    mode: 0o700,
                },
                Action::MakeDir {
                    path: n.run.aside_dir(),
                    mode: 0o700,
                },
                Action::SaveRunState {
                    dir: n.run.path().to_string(),
                },
            ];
            for file in n.facts.static_pods.files.keys() {
                actions.push(Action::CopyFile {
                    from: n.facts.static_pods.path(file),
                    to: n.run.original(file),
                });
            }
            Actions {
                actions,
                rollback: vec![Action::ReleaseLock { path: lock }],
            }
        });
        Planned::new(
            "lock every node, create the run directory, keep a copy of every manifest",
            false,
            scope,
        )
    }
}
