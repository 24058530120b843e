//! Playbooks: the restore procedure as readable, adaptable YAML.
//!
//! A playbook is an ordered list of stages; each stage is a list of steps of built-in types
//! (see [`crate::steps`]). The engine runs every stage on all nodes in parallel and waits for
//! all of them before the next stage starts. Unknown step types and bad fields are refused at
//! load time, with the line; so is an order the steps' own rules forbid.
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
use crate::steps::{rules, Site};

pub use crate::steps::{StepSpec, When, INVENTORY_COMMANDS, STEP_TYPES};

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

    /// Rules that YAML structure alone cannot express: unique, non-empty stages, each step's
    /// own checks, and the safety order that follows from the steps' rules.
    fn validate(&self, text: &str, origin: &str) -> anyhow::Result<()> {
        if self.stages.is_empty() {
            bail!("{origin}: the playbook has no stages");
        }
        let mut names = BTreeSet::new();
        for stage in &self.stages {
            let at = Site {
                origin,
                text,
                stage: &stage.name,
            };
            if !names.insert(stage.name.as_str()) {
                bail!(
                    "{}: stage name `{}` is used twice",
                    at.stage_line(),
                    stage.name
                );
            }
            if stage.steps.is_empty() {
                bail!("{}: stage `{}` has no steps", at.stage_line(), stage.name);
            }
            for step in &stage.steps {
                step.step().validate(&at)?;
            }
        }
        let rules: Vec<Vec<Vec<_>>> = self
            .stages
            .iter()
            .map(|s| s.steps.iter().map(|step| step.step().rules()).collect())
            .collect();
        rules::check(&rules).map_err(|why| anyhow::anyhow!("{origin}: {why}"))
    }
}

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
