//! Runs as the workstation and the nodes record them. The workstation keeps a journal per run
//! in the state directory; each node keeps the run's plan and its own done steps in its run
//! directory, and its lock names the run holding it ([`crate::layout`]). The
//! nodes' records pick up a run started on another workstation, and show in `status -i`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::args::Global;
use crate::engine::journal::{Journal, Record};
use crate::error::HintExt;
use crate::layout::RunLayout;
use crate::plan::Plan;
use crate::remote::Remote;
use crate::ui::Printer;
use crate::workflow::{self, Cluster};

/// What one node records about a run.
pub(crate) struct NodeRecord {
    /// The node.
    pub name: String,
    /// Its record; `None` when the node could not be reached.
    pub reached: Option<Recorded>,
}

/// A reachable node's record of a run.
pub(crate) struct Recorded {
    /// Its step state (`state.json`: `done`, `updated_at`), when it has one for the run.
    pub state: Option<serde_json::Value>,
    /// Its lock (`run_id`, `operator`, `since`), when asked for and held.
    pub lock: Option<serde_json::Value>,
}

/// Reads, in inventory order, every node's record of `run` (and its lock, `with_lock`), and
/// the run's plan from the first node that has a readable one.
pub(crate) async fn node_records(
    cluster: &Cluster,
    run: &str,
    with_lock: bool,
) -> (Option<Plan>, Vec<NodeRecord>) {
    let mut plan: Option<Plan> = None;
    let mut records = Vec::new();
    for n in &cluster.inventory.inventory.nodes {
        let Some(r) = cluster.remotes.get(&n.name) else {
            records.push(NodeRecord {
                name: n.name.clone(),
                reached: None,
            });
            continue;
        };
        let layout = RunLayout::new(&n.etcd.run_dir, &n.name);
        let dir = layout.run(run);
        if plan.is_none() {
            if let Ok(bytes) = r.read_file(&dir.plan()).await {
                plan = serde_json::from_slice(&bytes).ok();
            }
        }
        let state = read_json(r.as_ref(), &dir.state()).await;
        let lock = if with_lock {
            read_json(r.as_ref(), &layout.lock()).await
        } else {
            None
        };
        records.push(NodeRecord {
            name: n.name.clone(),
            reached: Some(Recorded { state, lock }),
        });
    }
    (plan, records)
}

/// A JSON file on a node: `None` when it cannot be read, `Null` when it is not JSON.
async fn read_json(remote: &dyn Remote, path: &str) -> Option<serde_json::Value> {
    let bytes = remote.read_file(path).await.ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or_default())
}

/// Opens a run for `resume` or `rollback`: the local journal, or (with an inventory) the plan
/// and step state saved on the nodes by a run started elsewhere, and connects to its nodes.
pub(crate) async fn open(
    global: &Global,
    run: &str,
    inventory: Option<&Path>,
    printer: &Printer,
) -> anyhow::Result<(Journal, Plan, Cluster)> {
    match Journal::open(&global.state_dir, run) {
        Ok((journal, plan)) => {
            let inventory = inventory.map_or_else(|| plan.inventory.clone().into(), Into::into);
            let cluster = workflow::connect(&global.settings(inventory)).await?;
            printer.warnings(&cluster.inventory.warnings);
            if cluster.inventory.sha256 != plan.fingerprints.inventory_sha256 {
                printer.warning(&format!(
                    "the inventory changed since run {} was planned",
                    plan.run_id
                ));
            }
            Ok((journal, plan, cluster))
        }
        Err(local) => {
            let Some(inventory) = inventory else {
                return Err(local);
            };
            let cluster = workflow::connect(&global.settings(inventory.into())).await?;
            let (plan, records) = node_records(&cluster, run, false).await;
            let plan = plan
                .with_context(|| format!("no node has run {run} in its run directory"))
                .hint(
                    "check the run id with `etcd-recover status` on the workstation that started it",
                )?;
            let done: BTreeMap<String, Vec<String>> = records
                .into_iter()
                .filter_map(|n| Some((n.name, done_steps(&n.reached?.state?))))
                .collect();
            let mut journal = Journal::create(&global.state_dir, &plan)?;
            for (node, steps) in done {
                for step in steps {
                    journal.record(Record::StepDone {
                        step,
                        node: Some(node.clone()),
                        skipped: true,
                    })?;
                }
            }
            printer.warnings(&cluster.inventory.warnings);
            printer.line(&format!(
                "picked up run {} from the nodes' run directories",
                plan.run_id
            ));
            Ok((journal, plan, cluster))
        }
    }
}

/// The steps a node's step state records as done.
fn done_steps(state: &serde_json::Value) -> Vec<String> {
    state["done"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
