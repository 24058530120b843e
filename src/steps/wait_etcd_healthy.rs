//! `wait-etcd-healthy`: once for the cluster, until the restored etcd is provably the planned
//! one and consistent.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::exec::{poll, Exec, Wait};
use super::rules::{Condition, Rule};
use super::step::{PlanCx, Planned, Step};
use crate::action::{self, Action, Actions, Scope, StepAction};

/// Waits until etcd is healthy: exactly the expected members, one leader, the computed
/// cluster ID, equal HashKV at one revision, a linearizable read on every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitEtcdHealthy {
    /// Seconds to wait.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    300
}

impl Step for WaitEtcdHealthy {
    fn rules(&self) -> Vec<Rule> {
        vec![Rule::provides(Condition::EtcdHealthy).after(Condition::EtcdStarted)]
    }

    fn plan(&self, _cx: &PlanCx<'_>) -> Planned {
        let wait = action::WaitEtcdHealthy {
            timeout: self.timeout,
        };
        Planned::new(
            "prove the restored cluster healthy and consistent",
            false,
            Scope::Cluster(Actions::only(vec![Action::Step(
                StepAction::WaitEtcdHealthy(wait),
            )])),
        )
    }
}

/// Checks until the cluster passes or the time is up.
pub(super) async fn execute(a: &action::WaitEtcdHealthy, cx: &dyn Exec) -> anyhow::Result<bool> {
    let wait = Wait::new(None, "etcd to be healthy", a.timeout);
    wait.announce(cx);
    let check = || async { Ok(cx.etcd_health().await.err()) };
    if let Some(why) = poll(cx, &wait, check).await? {
        bail!("etcd is not healthy after {}s: {why}", a.timeout);
    }
    Ok(false)
}
