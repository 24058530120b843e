//! What every step type implements ([`Step`]), and what it plans with: the run's parameters and
//! the nodes ([`PlanCx`], [`NodeCx`]), and where in the playbook it is ([`Site`]).

use std::cell::RefCell;

use super::rules::Rule;
use crate::action::{Actions, Scope, StepOrder};
use crate::etcd::ids::InitialCluster;
use crate::facts::NodeFacts;
use crate::finding::{Finding, Severity};
use crate::layout::RunDir;

/// What every step type provides.
pub trait Step {
    /// Refuses what the playbook's YAML structure alone cannot (an empty pod list, an unknown
    /// `@NAME`), naming the file and line through `at`.
    fn validate(&self, _at: &Site<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// What the step needs from earlier stages and what it brings about.
    fn rules(&self) -> Vec<Rule> {
        Vec::new()
    }

    /// The step's actions in this run, on every node or once for the cluster.
    fn plan(&self, cx: &PlanCx<'_>) -> Planned;
}

/// Where in a playbook a step is, for error messages.
pub struct Site<'a> {
    /// The playbook file (or the built-in playbook's name).
    pub origin: &'a str,
    /// The playbook's text, to find line numbers in.
    pub text: &'a str,
    /// The stage the step is in.
    pub stage: &'a str,
}

impl Site<'_> {
    /// `:LINE` of the first line that contains `needle`, or nothing.
    pub fn line_of(&self, needle: &str) -> String {
        self.text
            .lines()
            .position(|l| l.contains(needle))
            .map_or(String::new(), |i| format!(":{}", i + 1))
    }

    /// `ORIGIN:LINE` of the step's stage.
    pub fn stage_line(&self) -> String {
        format!(
            "{}{}",
            self.origin,
            self.line_of(&format!("name: {}", self.stage))
        )
    }
}

/// What a step plans with: the run's parameters and the nodes it runs on.
pub struct PlanCx<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// `--initial-cluster-token`.
    pub token: &'a str,
    /// `--initial-cluster`, when it could be built.
    pub initial_cluster: Option<&'a InitialCluster>,
    /// `--bump-revision`, when every restore tool supports it.
    pub bump: Option<u64>,
    /// SHA-256 of the snapshot.
    pub snapshot_sha256: &'a str,
    /// Size of the snapshot in bytes.
    pub snapshot_size: u64,
    /// Restore without the snapshot's integrity trailer.
    pub skip_hash_check: bool,
    /// Admin kubeconfig on the nodes.
    pub admin_kubeconfig: &'a str,
    /// The nodes, in inventory order (those whose data directory is known).
    pub nodes: &'a [NodeCx<'a>],
    findings: RefCell<Vec<Finding>>,
}

impl<'a> PlanCx<'a> {
    /// A context with no findings yet; see the fields for the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: &'a str,
        token: &'a str,
        initial_cluster: Option<&'a InitialCluster>,
        bump: Option<u64>,
        snapshot: (&'a str, u64, bool),
        admin_kubeconfig: &'a str,
        nodes: &'a [NodeCx<'a>],
    ) -> PlanCx<'a> {
        let (snapshot_sha256, snapshot_size, skip_hash_check) = snapshot;
        PlanCx {
            run_id,
            token,
            initial_cluster,
            bump,
            snapshot_sha256,
            snapshot_size,
            skip_hash_check,
            admin_kubeconfig,
            nodes,
            findings: RefCell::new(Vec::new()),
        }
    }

    /// The same actions shape on every node.
    pub fn per_node(&self, f: impl Fn(&NodeCx<'_>) -> Actions) -> Scope {
        Scope::Nodes(
            self.nodes
                .iter()
                .map(|n| (n.facts.name.clone(), f(n)))
                .collect(),
        )
    }

    /// Records a problem found while planning (it blocks `apply` when it is an error).
    pub fn finding(&self, severity: Severity, node: &str, message: String, hint: Option<&str>) {
        self.findings
            .borrow_mut()
            .push(Finding::new(severity, Some(node), message, hint));
    }

    /// The problems found while planning.
    pub fn into_findings(self) -> Vec<Finding> {
        self.findings.into_inner()
    }
}

/// One node as the steps plan for it.
pub struct NodeCx<'a> {
    /// What the node looks like.
    pub facts: &'a NodeFacts,
    /// This run's directory on the node.
    pub run: RunDir,
    /// The host path that replaces the data volume's (the new directory, or the directory
    /// that holds it).
    pub new_volume: String,
    /// The new data directory on the host.
    pub data_dir_new: String,
    /// The old data directory on the host.
    pub data_dir_old: String,
}

/// A step's part of the plan.
pub struct Planned {
    /// Human title.
    pub title: String,
    /// True when the step changes a node.
    pub destructive: bool,
    /// Where it runs and what it does there.
    pub scope: Scope,
    /// In which order the nodes run it.
    pub order: StepOrder,
}

impl Planned {
    /// A step that runs on all its nodes at once.
    pub fn new(title: impl Into<String>, destructive: bool, scope: Scope) -> Planned {
        Planned {
            title: title.into(),
            destructive,
            scope,
            order: StepOrder::Parallel,
        }
    }

    /// Runs the nodes in `order` instead.
    pub fn order(mut self, order: StepOrder) -> Planned {
        self.order = order;
        self
    }

    /// True when the step runs on more than one node.
    pub fn on_several_nodes(&self) -> bool {
        matches!(&self.scope, Scope::Nodes(map) if map.len() > 1)
    }
}
