//! The restore plan: every action the engine will take, on which node, in which stage, and how
//! each is undone. `plan` renders it; `apply` executes exactly these actions (the engine has no
//! other source of what to do), so what a change ticket reviewed is what runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod build;
pub mod render;

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

/// In which order the nodes run a step. Whatever the order, the step ends when every node has
/// run it (or at the first failure, before the nodes not started yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOrder {
    /// All nodes at once.
    #[default]
    Parallel,
    /// The node whose etcd member leads after all the others (stopping etcd). A member stopped
    /// while it leads first hands leadership to a connected peer and waits for the hand-over up
    /// to etcd's request timeout (7 s with default settings), which never completes when the
    /// peers are stopping too; a leader stopped after its peers has none to hand over to and
    /// stops at once. When the leader cannot be found out, all nodes at once.
    LeaderLast,
    /// One node after the other, in inventory order (starting etcd members that run the
    /// initial corruption check). A member starting with the check asks every peer for its
    /// hash before it serves; a peer that is itself still in its check has its port open but
    /// does not answer, so members started together wait the check's timeout (7 s) for each
    /// other, round after round. Started one by one, each finds its peers either serving or not
    /// started (refused at once).
    OneAtATime,
}

impl StepOrder {
    fn is_parallel(&self) -> bool {
        *self == StepOrder::Parallel
    }

    /// How the plan shows it; `None` for [`StepOrder::Parallel`].
    pub fn describe(&self) -> Option<&'static str> {
        match self {
            StepOrder::Parallel => None,
            StepOrder::LeaderLast => Some(
                "the node whose etcd member leads goes last, so it stops without a leadership hand-over",
            ),
            StepOrder::OneAtATime => Some(
                "one node at a time, each once etcd serves: the initial corruption check of members started together waits for the others",
            ),
        }
    }
}

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// On each node, in parallel.
    Nodes(BTreeMap<String, Actions>),
    /// Once, for the whole cluster.
    Cluster(Actions),
    /// Skipped in this run, with the reason (e.g. `when: no-revision-bump` with bump support).
    Skipped(String),
}

/// What a step does and how it is undone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Actions {
    /// Done in order.
    pub actions: Vec<Action>,
    /// Done in order to undo the step after it completed (or partly completed).
    pub rollback: Vec<Action>,
}

/// One concrete action. The engine executes these and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Action {
    /// Create the per-node lock file (refuse if another run holds it).
    AcquireLock {
        /// Lock file path.
        path: String,
    },
    /// Remove the lock file if this run holds it.
    ReleaseLock {
        /// Lock file path.
        path: String,
    },
    /// Create a directory.
    MakeDir {
        /// Path.
        path: String,
        /// Mode.
        mode: u32,
    },
    /// Save this plan and the node's step state in the node-side run directory.
    SaveRunState {
        /// Run directory.
        dir: String,
    },
    /// Copy a file, keeping mode and owner; never overwrites.
    CopyFile {
        /// Source.
        from: String,
        /// Destination.
        to: String,
    },
    /// Rename a file; never overwrites. Done when `from` is gone and `to` exists.
    MoveFile {
        /// Source.
        from: String,
        /// Destination.
        to: String,
    },
    /// Stream the snapshot to the node and check the SHA-256 of what landed.
    Upload {
        /// Destination.
        to: String,
        /// Expected SHA-256.
        sha256: String,
        /// Size in bytes.
        size: u64,
        /// File mode.
        mode: u32,
    },
    /// Check a file's SHA-256.
    CheckSha256 {
        /// Path.
        path: String,
        /// Expected SHA-256.
        sha256: String,
    },
    /// Remove a file this run created.
    RemoveOwnFile {
        /// Path.
        path: String,
    },
    /// Wait until a static pod is gone: nothing listens on its endpoints, no process uses its
    /// directories, crictl (where installed) shows no running container.
    WaitStopped {
        /// Pod (container) name.
        pod: String,
        /// Endpoints that must be closed.
        endpoints: Vec<Endpoint>,
        /// Directories no process may use.
        dirs: Vec<String>,
        /// Seconds.
        timeout: u64,
    },
    /// Wait until a pod answers its HTTP probe with any status: it has finished its start-up
    /// checks and serves (etcd answers 503 until it has a quorum).
    WaitServing {
        /// Pod (container) name.
        pod: String,
        /// The probe.
        probe: HttpProbe,
        /// Seconds.
        timeout: u64,
    },
    /// Wait until a static pod listens on its endpoints again.
    WaitListening {
        /// Pod (container) name.
        pod: String,
        /// Endpoints that must be open.
        endpoints: Vec<Endpoint>,
        /// Seconds.
        timeout: u64,
    },
    /// Restore the snapshot into a new data directory.
    Restore {
        /// Exact argv.
        argv: Vec<String>,
        /// Environment for the command.
        env: Vec<(String, String)>,
        /// New data directory (must not exist yet).
        data_dir: String,
        /// New WAL directory, when the server uses `--wal-dir`.
        wal_dir: Option<String>,
        /// The restored tree gets this path's owner and group.
        owner_like: String,
        /// Seconds.
        timeout: u64,
    },
    /// Replace a file's contents atomically (temp file outside the manifests directory, fsync,
    /// rename). Done when the file already has `after_sha256`; refused when it has neither hash.
    WriteFile {
        /// Path.
        path: String,
        /// Expected current SHA-256.
        before_sha256: String,
        /// SHA-256 of `content`.
        after_sha256: String,
        /// New contents (manifests only; never secrets).
        content: String,
        /// Unified diff from the current contents.
        diff: String,
        /// Directory for the temporary file.
        temp_dir: String,
    },
    /// Run a command; exit status 0 means success.
    Run {
        /// Exact argv.
        argv: Vec<String>,
        /// Seconds.
        timeout: u64,
    },
    /// Wait until etcd is healthy with exactly the planned members and cluster ID.
    WaitEtcdHealthy {
        /// Seconds.
        timeout: u64,
    },
    /// Wait until each node's apiserver readiness probe passes.
    WaitApiserverReady {
        /// Node -> probe from its kube-apiserver.yaml.
        probes: BTreeMap<String, HttpProbe>,
        /// Seconds.
        timeout: u64,
    },
    /// Point kubeadm's ClusterConfiguration `etcd.local.dataDir` at the new directory when
    /// kubectl and an admin kubeconfig are on the node; otherwise record the follow-up.
    KubeadmConfig {
        /// Node whose kubectl is used.
        node: String,
        /// Admin kubeconfig on the node.
        kubeconfig: String,
        /// New data-volume host path of each node.
        data_dirs: BTreeMap<String, String>,
    },
    /// Something that happens and cannot be previewed in detail.
    Note {
        /// What and why.
        text: String,
    },
}

impl Action {
    /// True when the action changes something on a node.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::MoveFile { .. }
                | Action::Restore { .. }
                | Action::WriteFile { .. }
                | Action::Run { .. }
                | Action::KubeadmConfig { .. }
        )
    }

    /// False when the plan cannot show the effect in full (a custom command's effect).
    pub fn is_previewable(&self) -> bool {
        !matches!(
            self,
            Action::Run { .. } | Action::KubeadmConfig { .. } | Action::Note { .. }
        )
    }

    /// One line for plans, progress and reports.
    pub fn describe(&self) -> String {
        let join = |v: &[Endpoint]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Action::AcquireLock { path } => format!("take the run lock {path}"),
            Action::ReleaseLock { path } => format!("release the run lock {path}"),
            Action::MakeDir { path, mode } => format!("create directory {path} (mode {mode:o})"),
            Action::SaveRunState { dir } => format!("save the plan and step state in {dir}"),
            Action::CopyFile { from, to } => format!("copy {from} -> {to}"),
            Action::MoveFile { from, to } => format!("move {from} -> {to}"),
            Action::Upload { to, size, mode, .. } => {
                format!("upload the snapshot ({size} bytes) to {to} (mode {mode:o}), verify SHA-256")
            }
            Action::CheckSha256 { path, sha256 } => format!("check sha256({path}) = {sha256}"),
            Action::RemoveOwnFile { path } => format!("remove {path}"),
            Action::WaitStopped { pod, endpoints, dirs, timeout } => {
                let mut s = format!("wait up to {timeout}s until {pod} is gone: nothing listens on {}", join(endpoints));
                if !dirs.is_empty() {
                    s.push_str(&format!(", no process uses {}", dirs.join(", ")));
                }
                s.push_str(", no running container (crictl, where installed)");
                s
            }
            Action::WaitListening { pod, endpoints, timeout } => {
                format!("wait up to {timeout}s until {pod} listens on {}", join(endpoints))
            }
            Action::WaitServing { pod, probe, timeout } => {
                format!("wait up to {timeout}s until {pod} answers {probe} (any HTTP status)")
            }
            Action::Restore { argv, env, .. } => {
                let mut s = String::from("run ");
                for (k, v) in env {
                    s.push_str(&format!("{k}={} ", crate::remote::shell_quote(v)));
                }
                s.push_str(&crate::remote::shell_join(argv));
                s
            }
            Action::WriteFile { path, .. } => format!("rewrite {path} atomically (diff below)"),
            Action::Run { argv, timeout } => {
                format!("run {} (up to {timeout}s; effect not previewable)", crate::remote::shell_join(argv))
            }
            Action::WaitEtcdHealthy { timeout } => format!(
                "wait up to {timeout}s until etcd is healthy: exactly the planned members with client URLs, one leader, the planned cluster ID, no alarms, a linearizable read on every member, equal HashKV at one revision"
            ),
            Action::WaitApiserverReady { probes, timeout } => format!(
                "wait up to {timeout}s until every apiserver's readiness probe passes: {}",
                probes
                    .iter()
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Action::KubeadmConfig { node, kubeconfig, data_dirs } => {
                let dirs: std::collections::BTreeSet<&String> = data_dirs.values().collect();
                match dirs.iter().next() {
                    Some(dir) if dirs.len() == 1 => format!(
                        "on {node}: set etcd.local.dataDir to {dir} in the kubeadm-config ConfigMap with kubectl --kubeconfig {kubeconfig}, when kubectl and {kubeconfig} exist there; otherwise report the command to run (effect not previewable)"
                    ),
                    _ => "report that kubeadm's single ClusterConfiguration.etcd.local.dataDir cannot name the nodes' different new data directories (effect not previewable)".to_string(),
                }
            }
            Action::Note { text } => text.clone(),
        }
    }
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
