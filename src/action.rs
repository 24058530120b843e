//! What a step does: concrete [`Action`]s with their rollbacks ([`Actions`]), where they run
//! ([`Scope`]) and in which order the nodes run them ([`StepOrder`]). Steps produce these, the
//! plan carries them, the engine executes them and nothing else.
//!
//! Most actions are generic primitives (move, copy, write, run, wait, upload, probe) that the
//! engine executes itself. A [`StepAction`] belongs to one step type, whose file in
//! [`crate::steps`] executes it; both kinds serialize the same way (`"op": "..."` plus fields).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::probe::{Endpoint, HttpProbe};
use crate::remote::{shell_join, shell_quote};

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
    /// True for [`StepOrder::Parallel`] (the plan leaves it out).
    pub fn is_parallel(&self) -> bool {
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

impl Actions {
    /// Actions without an undo.
    pub fn only(actions: Vec<Action>) -> Actions {
        Actions {
            actions,
            rollback: Vec::new(),
        }
    }

    /// One note and nothing else (a step with nothing to do on a node, and why).
    pub fn note(text: impl Into<String>) -> Actions {
        Actions::only(vec![Action::Note { text: text.into() }])
    }
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
    /// Something that happens and cannot be previewed in detail.
    Note {
        /// What and why.
        text: String,
    },
    /// An action its step type executes (see [`StepAction`]).
    #[serde(untagged)]
    Step(StepAction),
}

/// An action that belongs to one step type and is executed by that step's code in
/// [`crate::steps`], with the primitives the engine lends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StepAction {
    /// Restore the snapshot into a new data directory (step `restore`).
    Restore(Restore),
    /// Wait until etcd is healthy with exactly the planned members and cluster ID (step
    /// `wait-etcd-healthy`).
    WaitEtcdHealthy(WaitEtcdHealthy),
    /// Wait until each node's apiserver readiness probe passes (step `wait-apiserver-ready`).
    WaitApiserverReady(WaitApiserverReady),
    /// Point kubeadm's ClusterConfiguration `etcd.local.dataDir` at the new directory when
    /// kubectl and an admin kubeconfig are on the node; otherwise record the follow-up (step
    /// `kubeadm-config`).
    KubeadmConfig(KubeadmConfig),
}

/// See [`StepAction::Restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    /// Exact argv.
    pub argv: Vec<String>,
    /// Environment for the command.
    pub env: Vec<(String, String)>,
    /// New data directory (must not exist yet).
    pub data_dir: String,
    /// New WAL directory, when the server uses `--wal-dir`.
    pub wal_dir: Option<String>,
    /// The restored tree gets this path's owner and group.
    pub owner_like: String,
    /// Seconds.
    pub timeout: u64,
}

/// See [`StepAction::WaitEtcdHealthy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitEtcdHealthy {
    /// Seconds.
    pub timeout: u64,
}

/// See [`StepAction::WaitApiserverReady`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitApiserverReady {
    /// Node -> probe from its kube-apiserver.yaml.
    pub probes: BTreeMap<String, HttpProbe>,
    /// Seconds.
    pub timeout: u64,
}

/// See [`StepAction::KubeadmConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeadmConfig {
    /// Node whose kubectl is used.
    pub node: String,
    /// Admin kubeconfig on the node.
    pub kubeconfig: String,
    /// New data-volume host path of each node.
    pub data_dirs: BTreeMap<String, String>,
}

impl Action {
    /// True when the action changes something on a node.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::MoveFile { .. }
                | Action::WriteFile { .. }
                | Action::Run { .. }
                | Action::Step(StepAction::Restore(_) | StepAction::KubeadmConfig(_))
        )
    }

    /// False when the plan cannot show the effect in full (a custom command's effect).
    pub fn is_previewable(&self) -> bool {
        !matches!(
            self,
            Action::Run { .. } | Action::Note { .. } | Action::Step(StepAction::KubeadmConfig(_))
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
                format!(
                    "upload the snapshot ({size} bytes) to {to} (mode {mode:o}), verify SHA-256"
                )
            }
            Action::CheckSha256 { path, sha256 } => format!("check sha256({path}) = {sha256}"),
            Action::RemoveOwnFile { path } => format!("remove {path}"),
            Action::WaitStopped {
                pod,
                endpoints,
                dirs,
                timeout,
            } => {
                let mut s = format!(
                    "wait up to {timeout}s until {pod} is gone: nothing listens on {}",
                    join(endpoints)
                );
                if !dirs.is_empty() {
                    s.push_str(&format!(", no process uses {}", dirs.join(", ")));
                }
                s.push_str(", no running container (crictl, where installed)");
                s
            }
            Action::WaitListening {
                pod,
                endpoints,
                timeout,
            } => {
                format!(
                    "wait up to {timeout}s until {pod} listens on {}",
                    join(endpoints)
                )
            }
            Action::WaitServing {
                pod,
                probe,
                timeout,
            } => {
                format!("wait up to {timeout}s until {pod} answers {probe} (any HTTP status)")
            }
            Action::WriteFile { path, .. } => format!("rewrite {path} atomically (diff below)"),
            Action::Run { argv, timeout } => {
                format!(
                    "run {} (up to {timeout}s; effect not previewable)",
                    shell_join(argv)
                )
            }
            Action::Note { text } => text.clone(),
            Action::Step(step) => step.describe(),
        }
    }
}

impl StepAction {
    /// One line for plans, progress and reports.
    pub fn describe(&self) -> String {
        match self {
            StepAction::Restore(Restore { argv, env, .. }) => {
                let mut s = String::from("run ");
                for (k, v) in env {
                    s.push_str(&format!("{k}={} ", shell_quote(v)));
                }
                s.push_str(&shell_join(argv));
                s
            }
            StepAction::WaitEtcdHealthy(WaitEtcdHealthy { timeout }) => format!(
                "wait up to {timeout}s until etcd is healthy: exactly the planned members with client URLs, one leader, the planned cluster ID, no alarms, a linearizable read on every member, equal HashKV at one revision"
            ),
            StepAction::WaitApiserverReady(WaitApiserverReady { probes, timeout }) => format!(
                "wait up to {timeout}s until every apiserver's readiness probe passes: {}",
                probes
                    .iter()
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            StepAction::KubeadmConfig(KubeadmConfig { node, kubeconfig, data_dirs }) => {
                let dirs: BTreeSet<&String> = data_dirs.values().collect();
                match dirs.iter().next() {
                    Some(dir) if dirs.len() == 1 => format!(
                        "on {node}: set etcd.local.dataDir to {dir} in the kubeadm-config ConfigMap with kubectl --kubeconfig {kubeconfig}, when kubectl and {kubeconfig} exist there; otherwise report the command to run (effect not previewable)"
                    ),
                    _ => "report that kubeadm's single ClusterConfiguration.etcd.local.dataDir cannot name the nodes' different new data directories (effect not previewable)".to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_actions_serialize_like_every_other_action() {
        let actions = vec![
            Action::MoveFile {
                from: "/a".into(),
                to: "/b".into(),
            },
            Action::Step(StepAction::Restore(Restore {
                argv: vec!["etcdutl".into()],
                env: vec![],
                data_dir: "/d".into(),
                wal_dir: None,
                owner_like: "/o".into(),
                timeout: 9,
            })),
            Action::Step(StepAction::WaitEtcdHealthy(WaitEtcdHealthy { timeout: 3 })),
        ];
        let json = serde_json::to_string(&actions).unwrap();
        assert_eq!(
            json,
            r#"[{"op":"move-file","from":"/a","to":"/b"},{"op":"restore","argv":["etcdutl"],"env":[],"data_dir":"/d","wal_dir":null,"owner_like":"/o","timeout":9},{"op":"wait-etcd-healthy","timeout":3}]"#
        );
        let back: Vec<Action> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, actions);
    }
}
