//! `kubeadm-config`: kubeadm's ClusterConfiguration keeps one `etcd.local.dataDir`, and
//! `kubeadm upgrade` regenerates etcd.yaml from it. This step points it at the new directory
//! with kubectl on the first node, or leaves the exact follow-up in the report.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::exec::Exec;
use super::step::{PlanCx, Planned, Step};
use crate::action::{self, Action, Actions, Scope, StepAction};
use crate::remote::Cmd;

/// Points kubeadm's ClusterConfiguration at the new data directory, so a later
/// `kubeadm upgrade` does not regenerate etcd.yaml with the old one. When the kubeadm-config
/// ConfigMap cannot be updated from here, the report says exactly what to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeadmConfig {}

impl Step for KubeadmConfig {
    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let scope = match cx.nodes.first() {
            Some(first) => {
                let edit = action::KubeadmConfig {
                    node: first.facts.name.clone(),
                    kubeconfig: cx.admin_kubeconfig.to_string(),
                    data_dirs: cx
                        .nodes
                        .iter()
                        .map(|n| (n.facts.name.clone(), n.new_volume.clone()))
                        .collect(),
                };
                Scope::Cluster(Actions::only(vec![Action::Step(
                    StepAction::KubeadmConfig(edit),
                )]))
            }
            None => Scope::Skipped("no nodes".into()),
        };
        Planned::new(
            "keep kubeadm's ClusterConfiguration in step with etcd.yaml",
            false,
            scope,
        )
    }
}

/// Updates the ConfigMap with kubectl on the action's node, or records what to do instead.
pub(super) async fn execute(a: &action::KubeadmConfig, cx: &dyn Exec) -> anyhow::Result<bool> {
    let node_name = a.node.as_str();
    let kubeconfig = a.kubeconfig.as_str();
    let remote = cx.remote(node_name)?;
    let r = remote.as_ref();
    let distinct: BTreeSet<&String> = a.data_dirs.values().collect();
    if distinct.len() != 1 {
        let list: Vec<String> = a
            .data_dirs
            .iter()
            .map(|(n, d)| format!("{n}: {d}"))
            .collect();
        cx.follow_up(format!(
            "etcd.yaml now points each node at its own new data directory ({}), but kubeadm's ClusterConfiguration holds one etcd.local.dataDir for all nodes: before the next `kubeadm upgrade`, which regenerates etcd.yaml from it, stop etcd on each node in turn and move its data to one common path, then set that path in the kubeadm-config ConfigMap",
            list.join(", ")
        ));
        return Ok(true);
    }
    let data_dir = distinct.iter().next().map_or("", |d| d.as_str());
    let manual = format!(
        "kubeadm's ClusterConfiguration still names the old etcd data directory; before the next `kubeadm upgrade`, run on a control-plane node: `kubectl -n kube-system edit configmap kubeadm-config` and set `etcd.local.dataDir: {data_dir}` (a later upgrade would otherwise regenerate etcd.yaml with the old directory)"
    );
    let probe = r
        .exec(&Cmd::script(
            r#"command -v kubectl >/dev/null 2>&1 && [ -f "$1" ] && echo yes || echo no"#,
            [kubeconfig],
        ))
        .await?;
    if probe.stdout_text().trim() != "yes" {
        cx.follow_up(format!(
            "{manual} (no kubectl with {kubeconfig} on {node_name})"
        ));
        return Ok(true);
    }
    let get = r
        .exec(&Cmd::new([
            "kubectl",
            "--kubeconfig",
            kubeconfig,
            "-n",
            "kube-system",
            "get",
            "configmap",
            "kubeadm-config",
            "-o",
            "json",
        ]))
        .await?;
    if !get.status.success() {
        cx.follow_up(format!(
            "{manual} (kubectl get failed: {})",
            get.stderr_text()
        ));
        return Ok(true);
    }
    let mut cm: serde_json::Value = serde_json::from_slice(&get.stdout)
        .with_context(|| format!("{node_name}: kubectl printed something that is not JSON"))?;
    let Some(cc) = cm["data"]["ClusterConfiguration"].as_str() else {
        cx.follow_up(format!(
            "{manual} (the ConfigMap has no ClusterConfiguration)"
        ));
        return Ok(true);
    };
    let Some(updated) = set_kubeadm_data_dir(cc, data_dir) else {
        cx.follow_up(format!(
            "{manual} (no etcd.local.dataDir line found to update)"
        ));
        return Ok(true);
    };
    if updated == cc {
        return Ok(true);
    }
    cm["data"]["ClusterConfiguration"] = serde_json::Value::String(updated);
    let body = serde_json::to_vec(&cm).context("cannot encode the ConfigMap")?;
    r.run(&Cmd::new(["kubectl", "--kubeconfig", kubeconfig, "replace", "-f", "-"]).stdin(body))
        .await?;
    Ok(false)
}

/// Replaces the value of the `dataDir:` key under `etcd:` / `local:` in a ClusterConfiguration,
/// keeping every other line. `None` when there is no such line.
pub fn set_kubeadm_data_dir(cc: &str, data_dir: &str) -> Option<String> {
    let mut out = String::with_capacity(cc.len() + data_dir.len());
    let mut in_etcd = false;
    let mut in_local = false;
    let mut etcd_indent = 0;
    let mut found = false;
    for line in cc.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key = trimmed.split(':').next().unwrap_or("").trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            if indent == 0 {
                in_etcd = key == "etcd";
                in_local = false;
                etcd_indent = 0;
            } else if in_etcd && (etcd_indent == 0 || indent == etcd_indent) {
                etcd_indent = indent;
                in_local = key == "local";
            }
        }
        if in_etcd && in_local && indent > etcd_indent && key == "dataDir" && !found {
            let nl = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("{}dataDir: {data_dir}{nl}", &line[..indent]));
            found = true;
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_data_dir_is_replaced_in_place() {
        let cc = "apiServer:\n  timeoutForControlPlane: 4m0s\netcd:\n  local:\n    dataDir: /var/lib/etcd\n    extraArgs: {}\nkind: ClusterConfiguration\n";
        let out = set_kubeadm_data_dir(cc, "/var/lib/etcd-restored-r1").unwrap();
        assert_eq!(
            out,
            cc.replace("/var/lib/etcd\n", "/var/lib/etcd-restored-r1\n")
        );
        assert!(set_kubeadm_data_dir("etcd:\n  external:\n    endpoints: []\n", "/x").is_none());
        // A dataDir elsewhere is not touched.
        let other = "foo:\n  local:\n    dataDir: /a\netcd:\n  local:\n    dataDir: /b\n";
        assert_eq!(
            set_kubeadm_data_dir(other, "/c").unwrap(),
            "foo:\n  local:\n    dataDir: /a\netcd:\n  local:\n    dataDir: /c\n"
        );
    }
}
