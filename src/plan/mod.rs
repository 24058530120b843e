//! The restore plan: every action the engine will take, on which node, in which stage, and how
//! each is undone. `plan` renders it; `apply` executes exactly these actions (the engine has no
//! other source of what to do), so what a change ticket reviewed is what runs.
//!
//! The model is here (with the actions themselves in [`crate::action`]); [`build`] makes a plan
//! from the facts, the playbook and the snapshot by asking each step for its actions;
//! [`render`] shows it as text, Markdown or JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod build;
pub mod render;

pub use crate::action::{Action, Actions, Scope, StepAction, StepOrder};
pub use crate::finding::{Finding, Severity};
pub use crate::probe::{Endpoint, HttpProbe};

/// Version of the saved plan format; `apply --plan` refuses other versions.
pub const FORMAT_VERSION: u32 = 1;

/// A complete, deterministic restore plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT_VERSION`] of this file.
    pub format_version: u32,
    /// Version of the tool that made the plan.
    pub tool_version: String,
    /// Run id: names the node-side run directories, the new data directories and the token.
    pub run_id: String,
    /// When the plan was made (RFC 3339, UTC).
    pub created_at: String,
    /// Cluster name from the inventory; typed by the user to confirm.
    pub cluster: String,
    /// Inventory file the plan was made from (absolute path on the workstation).
    pub inventory: String,
    /// Playbook name.
    pub playbook: String,
    /// What the plan was made from; `apply --plan` refuses when any of it changed.
    pub fingerprints: Fingerprints,
    /// The snapshot to restore.
    pub snapshot: SnapshotSummary,
    /// Parameters shared by every member's restore.
    pub restore: RestoreParams,
    /// One entry per node, in inventory order.
    pub nodes: Vec<NodeSummary>,
    /// Preflight findings. Any [`Severity::Error`] blocks `apply`.
    pub findings: Vec<Finding>,
    /// Stages in order.
    pub stages: Vec<StagePlan>,
}

/// Hashes of every input, to detect drift between `plan` and `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    /// SHA-256 of the inventory file's bytes.
    pub inventory_sha256: String,
    /// SHA-256 of the whole snapshot file.
    pub snapshot_sha256: String,
    /// SHA-256 of the playbook text.
    pub playbook_sha256: String,
    /// Per node: file name in the manifests directory -> SHA-256 of its bytes.
    pub manifests: BTreeMap<String, BTreeMap<String, String>>,
}

/// The snapshot, as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Local path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// Highest revision in the snapshot, when known.
    pub revision: Option<i64>,
    /// Key count as `etcdutl snapshot status` reports it, when known.
    pub total_keys: Option<u64>,
    /// One-line verdict.
    pub verdict: String,
}

/// One member of the restored cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedMember {
    /// Node and member name (`--name`).
    pub name: String,
    /// Peer URLs (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// Member ID etcd will compute, hex.
    pub member_id: String,
}

/// Parameters shared by every member's restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreParams {
    /// `--initial-cluster`, identical on every node.
    pub initial_cluster: String,
    /// `--initial-cluster-token`, fresh for this run.
    pub token: String,
    /// `--bump-revision` (always with `--mark-compacted`), or `None` when a restore tool lacks it.
    pub bump_revision: Option<u64>,
    /// The members, in inventory order.
    pub members: Vec<ExpectedMember>,
    /// Cluster ID etcd will compute, hex.
    pub cluster_id: String,
}

/// Per-node facts the plan relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// SSH address.
    pub host: String,
    /// etcd server version (from the image), when known.
    pub etcd_version: Option<String>,
    /// Restore tool path on the node.
    pub restore_tool: String,
    /// Restore tool version.
    pub restore_tool_version: String,
    /// Manifests directory (kubelet `staticPodPath`).
    pub manifests_dir: String,
    /// Host path of the data directory today (kept untouched).
    pub data_dir_old: String,
    /// Host path the restore writes to.
    pub data_dir_new: String,
    /// Node-side run directory (moved manifests, original copies, staged snapshot, state).
    pub run_dir: String,
    /// Client URL used for health checks, as seen from the node (`https://host:port`).
    pub client_endpoint: String,
    /// Host paths of the CA, client certificate and key for health checks (read over SSH
    /// when needed, kept in memory only).
    pub client_tls: Option<(String, String, String)>,
}

/// One stage: its steps run on all nodes, then a barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    /// Stage name from the playbook.
    pub name: String,
    /// Steps in order.
    pub steps: Vec<StepPlan>,
}

/// One step of a stage, with its actions on each node or once for the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPlan {
    /// Stable id, `<stage>/<index>`, used by the journal.
    pub id: String,
    /// Step type from the playbook.
    pub kind: String,
    /// Human title.
    pub title: String,
    /// True when the step changes a node (the first such step is the point of no return for
    /// a silent abort: from there on, failure means rollback).
    pub destructive: bool,
    /// In which order the nodes run the step.
    #[serde(default, skip_serializing_if = "StepOrder::is_parallel")]
    pub order: StepOrder,
    /// Where the step runs.
    pub scope: Scope,
}

impl Plan {
    /// Findings of this severity or worse.
    pub fn findings_at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }

    /// True when no finding blocks `apply`.
    pub fn is_applicable(&self) -> bool {
        self.findings_at_least(Severity::Error).next().is_none()
    }

    /// The node summary by name.
    pub fn node(&self, name: &str) -> Option<&NodeSummary> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Every step id in execution order.
    pub fn step_ids(&self) -> impl Iterator<Item = &str> {
        self.stages
            .iter()
            .flat_map(|s| s.steps.iter().map(|st| st.id.as_str()))
    }

    /// Saves the plan as pretty JSON.
    pub fn to_json(&self) -> String {
        // Plain data of strings, numbers and maps: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
