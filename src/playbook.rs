//! Playbooks: the restore procedure as readable, adaptable YAML.
//!
//! A playbook is an ordered list of stages; each stage is a list of steps of built-in types.
//! The engine runs every stage on all nodes in parallel and waits for all of them before the
//! next stage starts. Unknown step types and bad fields are refused at load time, with the line.
//!
//! ```yaml
//! name: restore-stacked
//! stages:
//!   - name: stop-etcd
//!     steps:
//!       - type: stop-static-pods
//!         pods: [etcd]
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::error::HintExt;

/// The playbook shipped with the tool: `playbooks/restore-stacked.yaml`.
pub const RESTORE_STACKED: &str = include_str!("../playbooks/restore-stacked.yaml");

/// A loaded, validated playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// Name, shown in plans and reports.
    pub name: String,
    /// What the playbook is for.
    #[serde(default)]
    pub description: String,
    /// Stages, in order. Every node finishes stage k before any node starts stage k+1.
    pub stages: Vec<Stage>,
}

/// One stage: steps that run on every node, behind a barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Stage name, unique within the playbook (e.g. `stop-etcd`).
    pub name: String,
    /// Steps, in order.
    pub steps: Vec<StepSpec>,
}

/// Which pods a stop/start step acts on.
pub type PodNames = Vec<String>;

/// When a `command` step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// On every run.
    #[default]
    Always,
    /// Only when the restore could not bump the revision (old restore tool), so clients with
    /// watches and caches must be restarted to forget revisions that now mean something else.
    NoRevisionBump,
}

/// A step of a built-in type. `type:` selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StepSpec {
    /// Read-only checks on every node and of the snapshot; nothing destructive happens until every
    /// node passes. Also takes the per-node lock and creates the node-side run directory.
    Preflight,
    /// Copies the snapshot to every node (mode 0600) and proves the copies are byte-identical.
    StageSnapshot,
    /// Stops static pods by moving their manifests out of the manifests directory into the run
    /// directory, then waits until they are really gone (ports closed, no process using their
    /// files, no container per crictl where present).
    StopStaticPods {
        /// Pod names (`metadata.name` without the node suffix), e.g. `kube-apiserver`.
        pods: PodNames,
        /// Seconds to wait for each pod to be gone.
        #[serde(default = "default_stop_timeout")]
        timeout: u64,
    },
    /// Restores the snapshot into a new data directory on every node (`etcdutl snapshot restore`,
    /// or `etcdctl` on 3.4). The old data directory is never touched.
    Restore {
        /// Seconds the restore may take on one node.
        #[serde(default = "default_restore_timeout")]
        timeout: u64,
    },
    /// Rewrites the `etcd-data` hostPath in the moved-aside etcd.yaml to the new data directory
    /// (one value changes; every other byte stays).
    RewriteManifest,
    /// Moves manifests back into the manifests directory and waits until the pods listen again.
    StartStaticPods {
        /// Pod names, e.g. `etcd`.
        pods: PodNames,
        /// Seconds to wait for each pod to listen.
        #[serde(default = "default_start_timeout")]
        timeout: u64,
    },
    /// Waits until etcd is healthy: exactly the expected members, one leader, the computed
    /// cluster ID, equal HashKV at one revision, a linearizable read on every member.
    WaitEtcdHealthy {
        /// Seconds to wait.
        #[serde(default = "default_health_timeout")]
        timeout: u64,
    },
    /// Waits until every apiserver is ready, judged by its manifest's readiness probe.
    WaitApiserverReady {
        /// Seconds to wait.
        #[serde(default = "default_health_timeout")]
        timeout: u64,
    },
    /// Runs a site-specific command on every node.
    Command {
        /// Step name, shown in plans and reports.
        name: String,
        /// Argument vector, or `[ "@NAME" ]` to use the inventory's `commands.NAME`.
        /// `${NODE}`, `${HOST}`, `${RUN_ID}` and `${RUN_DIR}` are substituted.
        run: Vec<String>,
        /// Undo command, run on rollback (same substitutions). Without it the step is
        /// treated as harmless to leave done.
        #[serde(default)]
        rollback: Option<Vec<String>>,
        /// When the step runs.
        #[serde(default)]
        when: When,
        /// Seconds the command may take.
        #[serde(default = "default_command_timeout")]
        timeout: u64,
    },
    /// Points kubeadm's ClusterConfiguration at the new data directory, so a later
    /// `kubeadm upgrade` does not regenerate etcd.yaml with the old one. When the kubeadm-config
    /// ConfigMap cannot be updated from here, the report says exactly what to run.
    KubeadmConfig,
    /// Releases the per-node lock and records the run as complete. Old data directories and the
    /// original manifests stay on the nodes until the user removes them.
    Finish,
}

fn default_stop_timeout() -> u64 {
    120
}
fn default_start_timeout() -> u64 {
    120
}
fn default_restore_timeout() -> u64 {
    900
}
fn default_health_timeout() -> u64 {
    300
}
fn default_command_timeout() -> u64 {
    120
}

impl StepSpec {
    /// The step type as written in the playbook (`stop-static-pods`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            StepSpec::Preflight => "preflight",
            StepSpec::StageSnapshot => "stage-snapshot",
            StepSpec::StopStaticPods { .. } => "stop-static-pods",
            StepSpec::Restore { .. } => "restore",
            StepSpec::RewriteManifest => "rewrite-manifest",
            StepSpec::StartStaticPods { .. } => "start-static-pods",
            StepSpec::WaitEtcdHealthy { .. } => "wait-etcd-healthy",
            StepSpec::WaitApiserverReady { .. } => "wait-apiserver-ready",
            StepSpec::Command { .. } => "command",
            StepSpec::KubeadmConfig => "kubeadm-config",
            StepSpec::Finish => "finish",
        }
    }
}

impl Playbook {
    /// Parses and validates a playbook. `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Playbook> {
        let pb: Playbook = serde_yaml::from_str(text)
            .map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!("{origin}:{}:{}", l.line(), l.column()))
                    .unwrap_or_else(|| origin.to_string());
                anyhow::anyhow!("{at}: {e}")
            })
            .hint(format!(
                "step types: {}; see docs/playbooks.md",
                STEP_TYPES.join(", ")
            ))?;
        pb.validate(text, origin)?;
        Ok(pb)
    }

    /// Loads a playbook file.
    pub fn load(path: &Path) -> anyhow::Result<Playbook> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read playbook `{}`", path.display()))?;
        Playbook::parse(&text, &path.display().to_string())
    }

    /// The built-in `restore-stacked` playbook.
    pub fn restore_stacked() -> Playbook {
        // The file is part of the binary and covered by tests; failing here is a build defect.
        Playbook::parse(RESTORE_STACKED, "playbooks/restore-stacked.yaml")
            .unwrap_or_else(|e| panic!("built-in playbook is invalid: {e:#}"))
    }

    /// Rules that YAML structure alone cannot express.
    fn validate(&self, text: &str, origin: &str) -> anyhow::Result<()> {
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map_or(String::new(), |i| format!(":{}", i + 1))
        };
        if self.stages.is_empty() {
            bail!("{origin}: the playbook has no stages");
        }
        let mut names = BTreeSet::new();
        let mut seen_types = BTreeSet::new();
        for stage in &self.stages {
            let at = line_of(&format!("name: {}", stage.name));
            if !names.insert(stage.name.as_str()) {
                bail!("{origin}{at}: stage name `{}` is used twice", stage.name);
            }
            if stage.steps.is_empty() {
                bail!("{origin}{at}: stage `{}` has no steps", stage.name);
            }
            for step in &stage.steps {
                match step {
                    StepSpec::StopStaticPods { pods, .. }
                    | StepSpec::StartStaticPods { pods, .. }
                        if pods.is_empty() =>
                    {
                        bail!(
                            "{origin}{at}: `{}` in stage `{}` lists no pods",
                            step.type_name(),
                            stage.name
                        );
                    }
                    StepSpec::Command {
                        name,
                        run,
                        rollback,
                        ..
                    } => {
                        let at = line_of(&format!("name: {name}"));
                        if run.is_empty() {
                            bail!("{origin}{at}: command step `{name}` has an empty `run`");
                        }
                        for arg in run.iter().chain(rollback.iter().flatten()) {
                            if let Some(cmd) = arg.strip_prefix('@') {
                                if !INVENTORY_COMMANDS.contains(&cmd) {
                                    bail!(
                                        "{origin}{at}: command step `{name}` uses `{arg}`, but the inventory defines no command `{cmd}`; known: {}",
                                        INVENTORY_COMMANDS
                                            .iter()
                                            .map(|c| format!("@{c}"))
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    );
                                }
                            }
                        }
                    }
                    _ => {}
                }
                seen_types.insert(step.type_name());
            }
        }
        // The restore is only safe in this order; a playbook may add steps but not drop these.
        let first = &self.stages[0].steps[0];
        if !matches!(first, StepSpec::Preflight) {
            bail!("{origin}: the first step must be `preflight`: nothing may change before every node passes its checks");
        }
        for required in [
            "stage-snapshot",
            "restore",
            "rewrite-manifest",
            "wait-etcd-healthy",
            "finish",
        ] {
            if !seen_types.contains(required) {
                bail!("{origin}: the playbook has no `{required}` step");
            }
        }
        self.check_order(origin)
    }

    /// The built-in safety order: stop every apiserver before etcd, etcd before restore, restore
    /// before rewrite, etcd healthy before any apiserver starts.
    fn check_order(&self, origin: &str) -> anyhow::Result<()> {
        let pos = |pred: &dyn Fn(&StepSpec) -> bool| {
            self.stages.iter().position(|s| s.steps.iter().any(pred))
        };
        let stops = |pod: &'static str| move |s: &StepSpec| matches!(s, StepSpec::StopStaticPods { pods, .. } if pods.iter().any(|p| p == pod));
        let starts = |pod: &'static str| move |s: &StepSpec| matches!(s, StepSpec::StartStaticPods { pods, .. } if pods.iter().any(|p| p == pod));
        let stop_api = pos(&stops("kube-apiserver"));
        let stop_etcd = pos(&stops("etcd"));
        let restore = pos(&|s| matches!(s, StepSpec::Restore { .. }));
        let rewrite = pos(&|s| matches!(s, StepSpec::RewriteManifest));
        let start_etcd = pos(&starts("etcd"));
        let healthy = pos(&|s| matches!(s, StepSpec::WaitEtcdHealthy { .. }));
        let start_api = pos(&starts("kube-apiserver"));
        let (Some(stop_etcd), Some(restore), Some(rewrite), Some(start_etcd), Some(healthy)) =
            (stop_etcd, restore, rewrite, start_etcd, healthy)
        else {
            bail!("{origin}: the playbook must stop etcd, restore, rewrite the manifest, start etcd and wait for it to be healthy");
        };
        let Some(stop_api) = stop_api else {
            bail!("{origin}: the playbook never stops kube-apiserver; an apiserver running during the restore writes into the old cluster");
        };
        let Some(start_api) = start_api else {
            bail!("{origin}: the playbook never starts kube-apiserver again");
        };
        let in_order = [
            stop_api, stop_etcd, restore, rewrite, start_etcd, healthy, start_api,
        ];
        if in_order.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "{origin}: stages are out of order; the required order is stop kube-apiserver -> stop etcd -> restore -> rewrite-manifest -> start etcd -> wait-etcd-healthy -> start kube-apiserver, each in a later stage than the one before"
            );
        }
        Ok(())
    }
}

/// Inventory commands a `command` step can name as `@NAME` (from each node's `commands:`).
pub const INVENTORY_COMMANDS: &[&str] = &["restart_kubelet"];

/// Every step type name, for error messages and docs.
pub const STEP_TYPES: &[&str] = &[
    "preflight",
    "stage-snapshot",
    "stop-static-pods",
    "restore",
    "rewrite-manifest",
    "start-static-pods",
    "wait-etcd-healthy",
    "wait-apiserver-ready",
    "command",
    "kubeadm-config",
    "finish",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_playbook_loads_in_the_documented_order() {
        let pb = Playbook::restore_stacked();
        let names: Vec<_> = pb.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "preflight",
                "stage-snapshot",
                "stop-apiserver",
                "stop-etcd",
                "restore",
                "rewrite-manifest",
                "start-etcd",
                "wait-etcd-healthy",
                "start-apiserver",
                "wait-apiserver-ready",
                "post-restore",
                "finish"
            ]
        );
    }

    #[test]
    fn unknown_step_type_is_refused_with_its_line() {
        let text = "name: x\nstages:\n  - name: a\n    steps:\n      - type: preflight\n      - type: reboot-everything\n";
        let err = Playbook::parse(text, "pb.yaml").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("pb.yaml:6:"), "{msg}");
        assert!(msg.contains("reboot-everything"), "{msg}");
    }

    #[test]
    fn unknown_field_is_refused_with_its_line() {
        let text = "name: x\nstages:\n  - name: a\n    steps:\n      - type: stop-static-pods\n        pods: [etcd]\n        timout: 5\n";
        let msg = format!("{:#}", Playbook::parse(text, "pb.yaml").unwrap_err());
        assert!(msg.contains("pb.yaml:"), "{msg}");
        assert!(msg.contains("timout"), "{msg}");
    }

    #[test]
    fn restore_before_stopping_the_apiserver_is_refused() {
        let text = RESTORE_STACKED.replace(
            "pods: [kube-apiserver, kube-controller-manager, kube-scheduler]",
            "pods: [kube-controller-manager, kube-scheduler]",
        );
        let msg = format!("{:#}", Playbook::parse(&text, "pb.yaml").unwrap_err());
        assert!(msg.contains("never stops kube-apiserver"), "{msg}");
    }

    #[test]
    fn an_unknown_inventory_command_is_refused_at_load_time() {
        let text =
            RESTORE_STACKED.replace("run: [\"@restart_kubelet\"]", "run: [\"@restart_kubelt\"]");
        let msg = format!("{:#}", Playbook::parse(&text, "pb.yaml").unwrap_err());
        assert!(
            msg.contains("`@restart_kubelt`") && msg.contains("known: @restart_kubelet"),
            "{msg}"
        );
        assert!(msg.starts_with("pb.yaml:"), "{msg}");
    }

    #[test]
    fn first_step_must_be_preflight() {
        let text = "name: x\nstages:\n  - name: a\n    steps:\n      - type: finish\n";
        let msg = format!("{:#}", Playbook::parse(text, "pb.yaml").unwrap_err());
        assert!(msg.contains("first step must be `preflight`"), "{msg}");
    }

    #[test]
    fn stages_out_of_order_are_refused() {
        // Swap restore and stop-etcd stage contents.
        let pb = Playbook::restore_stacked();
        let mut swapped = pb.clone();
        let a = swapped
            .stages
            .iter()
            .position(|s| s.name == "stop-etcd")
            .unwrap();
        let b = swapped
            .stages
            .iter()
            .position(|s| s.name == "restore")
            .unwrap();
        swapped.stages.swap(a, b);
        let text = serde_yaml::to_string(&swapped).unwrap();
        let msg = format!("{:#}", Playbook::parse(&text, "pb.yaml").unwrap_err());
        assert!(msg.contains("out of order"), "{msg}");
    }
}
