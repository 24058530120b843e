//! `stop-static-pods`: pods stop when their manifests leave the kubelet's directory; the step
//! then waits until they are really gone. etcd's leader stops last.

use serde::{Deserialize, Serialize};

use super::rules::{Condition, Rule};
use super::static_pods::{move_pods, require_pods, Direction};
use super::step::{PlanCx, Planned, Site, Step};
use crate::action::StepOrder;

/// Stops static pods by moving their manifests out of the manifests directory into the run
/// directory, then waits until they are really gone (ports closed, no process using their
/// files, no container per crictl where present).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopStaticPods {
    /// Pod names (`metadata.name` without the node suffix), e.g. `kube-apiserver`.
    pub pods: Vec<String>,
    /// Seconds to wait for each pod to be gone.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    120
}

impl StopStaticPods {
    fn stops(&self, pod: &str) -> bool {
        self.pods.iter().any(|p| p == pod)
    }
}

impl Step for StopStaticPods {
    fn validate(&self, at: &Site<'_>) -> anyhow::Result<()> {
        require_pods("stop-static-pods", &self.pods, at)
    }

    fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        if self.stops("kube-apiserver") {
            rules.push(Rule::provides(Condition::ApiserverStopped));
        }
        // An apiserver still running during the restore writes into the old cluster.
        if self.stops("etcd") {
            rules.push(Rule::provides(Condition::EtcdStopped).after(Condition::ApiserverStopped));
        }
        rules
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let planned = Planned::new(
            format!(
                "stop {} by moving their manifests out of the manifests directory",
                self.pods.join(", ")
            ),
            true,
            cx.per_node(|n| move_pods(n, &self.pods, self.timeout, Direction::Stop)),
        );
        if planned.on_several_nodes() && self.stops("etcd") {
            planned.order(StepOrder::LeaderLast)
        } else {
            planned
        }
    }
}
