//! `down`: stops everything the lab started, and only that.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::runner;
use crate::state::{LabState, NodePaths, Phase};
use crate::util::{self, ProcId};

/// What `down` did.
#[derive(Debug, Default)]
pub struct DownReport {
    /// Processes that were running and were stopped.
    pub stopped: usize,
    /// Whether a lab state file was found.
    pub had_state: bool,
}

/// Stops runners first (so nothing restarts pods), then the pods' process groups recorded in
/// the runners' status files, then the sshd listeners, then any straggler that carries the
/// lab's marker in its environment (sshd sessions, processes of a half-finished `up`).
/// Idempotent; works after a failed or partial `up`.
pub fn down(dir: &Path) -> Result<DownReport> {
    let mut report = DownReport::default();
    let dir = util::absolute(dir)?;
    let st = LabState::load(&dir).ok();
    if let Some(st) = &st {
        report.had_state = true;
        let runners: Vec<(ProcId, bool)> = st
            .nodes
            .iter()
            .filter_map(|n| n.runner)
            .map(|p| (p, false))
            .collect();
        report.stopped += runners.iter().filter(|(p, _)| p.alive()).count();
        util::terminate(&runners, Duration::from_secs(5));

        let mut pods = Vec::new();
        let mut etcds = Vec::new();
        for n in &st.nodes {
            for (name, ps) in runner::read_status(&NodePaths::new(&n.dir).pod_status()) {
                if let (Some(pid), Some(start_time)) = (ps.pid, ps.start_time) {
                    let p = (ProcId { pid, start_time }, true);
                    if name == "etcd" {
                        etcds.push(p);
                    } else {
                        pods.push(p);
                    }
                }
            }
        }
        report.stopped += pods.iter().chain(&etcds).filter(|(p, _)| p.alive()).count();
        util::terminate(&pods, runner::DEFAULT_GRACE);
        // One member at a time: a stopping leader hands leadership to a live peer at once,
        // whereas members stopped together wait for a transfer that cannot complete.
        for e in etcds {
            util::terminate(&[e], runner::DEFAULT_GRACE);
        }

        let sshds: Vec<(ProcId, bool)> = st
            .nodes
            .iter()
            .filter_map(|n| n.sshd)
            .map(|p| (p, false))
            .collect();
        report.stopped += sshds.iter().filter(|(p, _)| p.alive()).count();
        util::terminate(&sshds, Duration::from_secs(5));
    }

    // Stragglers: anything that still carries the marker (three rounds, as killing a parent
    // can briefly leave children behind).
    for round in 0..3 {
        let left: Vec<(ProcId, bool)> = util::marked_processes(&dir)
            .into_iter()
            .filter_map(ProcId::of)
            .map(|p| (p, false))
            .collect();
        if left.is_empty() {
            break;
        }
        report.stopped += left.len();
        if round == 0 {
            util::terminate(&left, Duration::from_secs(3));
        } else {
            for (p, _) in &left {
                util::signal_pid(p.pid, Signal::SIGKILL);
            }
            util::wait_gone(&left, Duration::from_secs(3));
        }
    }

    if st.is_some() {
        LabState::update(&dir, |st| {
            for n in &mut st.nodes {
                n.runner = None;
                n.sshd = None;
            }
            if st.phase != Phase::Failed {
                st.phase = Phase::Down;
            }
            Ok(())
        })?;
    }
    Ok(report)
}
