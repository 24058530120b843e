//! `wait-apiserver-ready`: once for the cluster, until every apiserver passes its own
//! readiness probe.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::exec::{poll, Exec, Wait};
use super::step::{PlanCx, Planned, Step};
use crate::action::{self, Action, Actions, Scope, StepAction};
use crate::facts::static_pod::probe_of;

/// Waits until every apiserver is ready, judged by its manifest's readiness probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitApiserverReady {
    /// Seconds to wait.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    300
}

impl Step for WaitApiserverReady {
    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let probes = cx
            .nodes
            .iter()
            .filter_map(|n| {
                let pod = n.facts.static_pods.pod("kube-apiserver")?;
                Some((n.facts.name.clone(), probe_of(pod, &n.facts.host)?))
            })
            .collect();
        let wait = action::WaitApiserverReady {
            probes,
            timeout: self.timeout,
        };
        Planned::new(
            "wait until every apiserver is ready, by its own readiness probe",
            false,
            Scope::Cluster(Actions::only(vec![Action::Step(
                StepAction::WaitApiserverReady(wait),
            )])),
        )
    }
}

/// Probes every node's apiserver in turn until it is ready or the time is up.
pub(super) async fn execute(a: &action::WaitApiserverReady, cx: &dyn Exec) -> anyhow::Result<bool> {
    let mut wait = Wait::new(None, "kube-apiserver to be ready", a.timeout);
    for (node, probe) in &a.probes {
        wait.node = Some(node);
        let check = || async { Ok(cx.apiserver_ready(node, probe).await.err()) };
        if let Some(why) = poll(cx, &wait, check).await? {
            bail!(
                "kube-apiserver on {node} not ready after {}s ({probe}): {why}",
                a.timeout
            );
        }
    }
    Ok(false)
}
