//! `rewrite-manifest`: etcd's moved-aside manifest gets the new data directory as the
//! `etcd-data` hostPath; one value changes, every other byte stays, and the plan shows the diff.

use serde::{Deserialize, Serialize};

use super::rules::{Condition, Rule};
use super::step::{NodeCx, PlanCx, Planned, Step};
use crate::action::{Action, Actions};
use crate::facts::sha256_hex;
use crate::finding::Severity;
use crate::manifest::rewrite_data_hostpath;

/// Rewrites the `etcd-data` hostPath in the moved-aside etcd.yaml to the new data directory
/// (one value changes; every other byte stays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewriteManifest {}

impl Step for RewriteManifest {
    fn rules(&self) -> Vec<Rule> {
        // Pointing etcd at a directory that is not restored yet would start an empty member.
        vec![Rule::provides(Condition::ManifestRewritten).after(Condition::Restored)]
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let scope = cx.per_node(|n| {
            rewrite(cx, n).unwrap_or_else(|| Actions::note("no rewrite (see findings)"))
        });
        Planned::new(
            "point etcd's data hostPath at the new directory (one value changes)",
            true,
            scope,
        )
    }
}

/// The write of the rewritten manifest and its undo; `None` (with a finding when the rewrite
/// is refused) when there is nothing to rewrite.
fn rewrite(cx: &PlanCx<'_>, n: &NodeCx<'_>) -> Option<Actions> {
    let facts = n.facts;
    let file = &facts.etcd.as_ref()?.static_pod.as_ref()?.file;
    let old = facts.static_pods.files.get(file)?;
    let dir = &facts.static_pods.dir;
    let rw = match rewrite_data_hostpath(old.text.as_bytes(), &n.new_volume) {
        Ok(rw) => rw,
        Err(e) => {
            cx.finding(
                Severity::Error,
                &facts.name,
                format!("cannot rewrite {dir}/{file}: {e}"),
                Some(&e.hint()),
            );
            return None;
        }
    };
    let diff = rw.unified_diff(&format!("{}/{file}", dir.trim_start_matches('/')));
    let path = n.run.aside(file);
    let new_sha = sha256_hex(rw.rewritten.as_bytes());
    let write = |before: &str, after: &str, content: &str, diff: String| Action::WriteFile {
        path: path.clone(),
        before_sha256: before.to_string(),
        after_sha256: after.to_string(),
        content: content.to_string(),
        diff,
        temp_dir: n.run.path().to_string(),
    };
    Some(Actions {
        actions: vec![write(&old.sha256, &new_sha, &rw.rewritten, diff)],
        rollback: vec![write(&new_sha, &old.sha256, &old.text, String::new())],
    })
}
