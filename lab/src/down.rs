//! `down`: stops everything the lab started, and only that.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::runner;
use crate::state::{LabState, NodePaths, Phase};
use crate::util::{self, ProcId};

/// Whether the etcd member on `ip` is the leader, from its metrics endpoint
/// (`etcd_server_is_leader`); `None` when it cannot be asked.
fn is_leader(ip: Ipv4Addr) -> Option<bool> {
    let addr = SocketAddr::from((ip, 2381));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(300))).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_server_is_leader "))
        .map(|v| v.trim() == "1")
}

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
                        etcds.push((p, is_leader(n.ip)));
                    } else {
                        pods.push(p);
                    }
                }
            }
        }
        report.stopped += pods
            .iter()
            .chain(etcds.iter().map(|(p, _)| p))
            .filter(|(p, _)| p.alive())
            .count();
        util::terminate(&pods, runner::DEFAULT_GRACE);
        // Members stopped together make a stopping leader wait for a leadership transfer that
        // cannot complete. So: the followers together, then the leader, which then finds no
        // peer to hand over to and stops at once. Unknown roles: one member at a time.
        let (followers, rest): (Vec<_>, Vec<_>) =
            etcds.into_iter().partition(|(_, l)| *l == Some(false));
        let followers: Vec<(ProcId, bool)> = followers.into_iter().map(|(p, _)| p).collect();
        util::terminate(&followers, runner::DEFAULT_GRACE);
        for (p, _) in rest {
            util::terminate(&[p], runner::DEFAULT_GRACE);
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
