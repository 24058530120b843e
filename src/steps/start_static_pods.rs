//! `start-static-pods`: manifests go back into the kubelet's directory and the step waits until
//! the pods listen again. etcd members that run the initial corruption check start one by one.

use serde::{Deserialize, Serialize};

use super::rules::{Condition, Rule};
use super::static_pods::{etcd_serving_probe, move_pods, require_pods, Direction};
use super::step::{PlanCx, Planned, Site, Step};
use crate::action::StepOrder;

/// Moves manifests back into the manifests directory and waits until the pods listen again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartStaticPods {
    /// Pod names, e.g. `etcd`.
    pub pods: Vec<String>,
    /// Seconds to wait for each pod to listen.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    120
}

impl StartStaticPods {
    fn starts(&self, pod: &str) -> bool {
        self.pods.iter().any(|p| p == pod)
    }
}

impl Step for StartStaticPods {
    fn validate(&self, at: &Site<'_>) -> anyhow::Result<()> {
        require_pods("start-static-pods", &self.pods, at)
    }

    fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        // etcd starts on the restored data only.
        if self.starts("etcd") {
            rules.push(Rule::provides(Condition::EtcdStarted).after(Condition::ManifestRewritten));
        }
        // An apiserver started before etcd is proven healthy could serve from a broken cluster.
        if self.starts("kube-apiserver") {
            rules.push(Rule::provides(Condition::ApiserverStarted).after(Condition::EtcdHealthy));
        }
        rules
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let planned = Planned::new(
            format!(
                "start {} by moving their manifests back",
                self.pods.join(", ")
            ),
            true,
            cx.per_node(|n| move_pods(n, &self.pods, self.timeout, Direction::Start)),
        );
        let checked_one_by_one = cx.nodes.iter().all(|n| etcd_serving_probe(n).is_some());
        if planned.on_several_nodes() && self.starts("etcd") && checked_one_by_one {
            planned.order(StepOrder::OneAtATime)
        } else {
            planned
        }
    }
}
