//! What `stop-static-pods` and `start-static-pods` share: moving manifests out of the kubelet's
//! directory and back, and knowing when a pod is really gone or really back.

use crate::action::{Action, Actions};
use crate::facts::static_pod::{endpoints, probe_of};
use crate::manifest::StaticPod;
use crate::probe::HttpProbe;

use super::step::{NodeCx, Site};

/// Refuses a stop or start step of type `type_name` that lists no pods.
pub(super) fn require_pods(type_name: &str, pods: &[String], at: &Site<'_>) -> anyhow::Result<()> {
    if pods.is_empty() {
        anyhow::bail!(
            "{}: `{type_name}` in stage `{}` lists no pods",
            at.stage_line(),
            at.stage
        );
    }
    Ok(())
}

/// Whether a step takes static pods down or brings them back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Stop,
    Start,
}

/// Moves pods' manifests out of (or back into) the manifests directory, then waits until they
/// are gone (or listen again); the rollback does the opposite.
pub(super) fn move_pods(
    n: &NodeCx<'_>,
    pods: &[String],
    timeout: u64,
    direction: Direction,
) -> Actions {
    let mut actions = Vec::new();
    let mut waits = Vec::new();
    let mut rollback = Vec::new();
    let mut rollback_waits = Vec::new();
    for pod in pods {
        let Some(pf) = n.facts.static_pods.pod_file(pod) else {
            let verb = if direction == Direction::Stop {
                "stop"
            } else {
                "start"
            };
            actions.push(Action::Note {
                text: format!("{pod}: no manifest on this node, nothing to {verb}"),
            });
            continue;
        };
        let inside = n.facts.static_pods.path(&pf.file);
        let aside = n.run.aside(&pf.file);
        let endpoints = endpoints(pod, n.facts);
        // What etcd must let go of: the old data directory when stopping the original, the new
        // one when a rollback stops the restored member.
        let stopped = |data_dir: &str| Action::WaitStopped {
            pod: pod.clone(),
            endpoints: endpoints.clone(),
            dirs: (pod == "etcd")
                .then(|| data_dir.to_string())
                .into_iter()
                .collect(),
            timeout,
        };
        let listening = (!endpoints.is_empty()).then(|| Action::WaitListening {
            pod: pod.clone(),
            endpoints: endpoints.clone(),
            timeout,
        });
        let (from, to) = match direction {
            Direction::Stop => (inside, aside),
            Direction::Start => (aside, inside),
        };
        actions.push(Action::MoveFile {
            from: from.clone(),
            to: to.clone(),
        });
        rollback.push(Action::MoveFile { from: to, to: from });
        match direction {
            Direction::Stop => {
                waits.push(stopped(&n.data_dir_old));
                rollback_waits.extend(listening);
            }
            Direction::Start => {
                waits.extend(listening);
                if pod == "etcd" {
                    waits.extend(etcd_serving_probe(n).map(|probe| Action::WaitServing {
                        pod: pod.clone(),
                        probe,
                        timeout,
                    }));
                }
                rollback_waits.push(stopped(&n.data_dir_new));
            }
        }
    }
    if direction == Direction::Stop {
        rollback.reverse();
    }
    actions.extend(waits);
    rollback.extend(rollback_waits);
    Actions { actions, rollback }
}

/// The HTTP probe that tells when etcd serves, for members that run the initial corruption
/// check (see [`crate::action::StepOrder::OneAtATime`]): `None` without the check or without an
/// HTTP probe.
pub(super) fn etcd_serving_probe(n: &NodeCx<'_>) -> Option<HttpProbe> {
    let pod = n.facts.static_pods.pod("etcd")?;
    corrupt_check_probe(pod, &n.facts.host)
}

/// See [`etcd_serving_probe`].
fn corrupt_check_probe(pod: &StaticPod, host: &str) -> Option<HttpProbe> {
    // A boolean flag is on when given bare or as `=true` (the last occurrence counts).
    let flag = "experimental-initial-corrupt-check";
    let on = pod.has_flag(flag) && matches!(pod.flag(flag), None | Some("true"));
    let gate = pod.flag("feature-gates").is_some_and(|g| {
        g.split(',')
            .any(|kv| kv.trim() == "InitialCorruptCheck=true")
    });
    if !(on || gate) {
        return None;
    }
    probe_of(pod, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_with_the_initial_corruption_check_are_started_one_by_one() {
        let load = |text: &str| StaticPod::parse(text.as_bytes()).unwrap();
        // kubeadm's manifest (Kubernetes 1.2x) has the check and an HTTP startup probe.
        let kubeadm = include_str!("../../tests/fixtures/manifests/014.yaml");
        let probe = corrupt_check_probe(&load(kubeadm), "10.0.0.1").unwrap();
        assert_eq!(probe.port, 2381);
        assert!(probe.path.starts_with("/health"), "{probe}");
        let off = kubeadm.replace(
            "--experimental-initial-corrupt-check=true",
            "--experimental-initial-corrupt-check=false",
        );
        assert_ne!(off, kubeadm);
        assert!(corrupt_check_probe(&load(&off), "10.0.0.1").is_none());
        let bare = kubeadm.replace(
            "--experimental-initial-corrupt-check=true",
            "--experimental-initial-corrupt-check",
        );
        assert!(corrupt_check_probe(&load(&bare), "10.0.0.1").is_some());
        let gate = kubeadm.replace(
            "--experimental-initial-corrupt-check=true",
            "--feature-gates=StopGRPCServiceOnDefrag=true,InitialCorruptCheck=true",
        );
        assert!(corrupt_check_probe(&load(&gate), "10.0.0.1").is_some());
        // An older manifest without the check: started together.
        let old = include_str!("../../tests/fixtures/manifests/001.yaml");
        assert!(corrupt_check_probe(&load(old), "10.0.0.1").is_none());
    }
}
