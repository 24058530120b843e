//! Starting and stopping the lab's daemons: one sshd and one static-pod runner per node.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::state::{LabState, NodePaths, NodeState};
use crate::util::{self, ProcId};

fn append_log(path: &Path) -> Result<fs::File> {
    if let Some(p) = path.parent() {
        util::mkdir(p)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log {}", path.display()))
}

/// Starts the node's sshd in the foreground mode (`-D`) in its own process group.
pub fn spawn_sshd(st: &LabState, node: &NodeState) -> Result<ProcId> {
    let paths = NodePaths::new(&node.dir);
    let log = paths.logs().join("sshd.log");
    let err = append_log(&log)?;
    let cfg = paths.ssh().join("sshd_config");
    let mut cmd = Command::new(&st.sshd_bin);
    cmd.arg("-D")
        .arg("-f")
        .arg(&cfg)
        .arg("-E")
        .arg(&log)
        .env(util::MARKER_ENV, &st.dir)
        .env(util::NODE_ENV, &node.name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} for {}", st.sshd_bin.display(), node.name))?;
    let pid = child.id() as i32;
    // The Child is dropped without waiting: sshd outlives this command and is reparented.
    ProcId::of(pid).with_context(|| {
        format!(
            "sshd for {} exited at once; see {}",
            node.name,
            log.display()
        )
    })
}

/// True when something on `ip:22` greets like an SSH server.
pub fn ssh_banner(ip: Ipv4Addr, timeout: Duration) -> bool {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from((ip, 22)), timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-")
}

/// Waits for the node's sshd to greet; fails with its log when it dies or times out.
pub fn wait_sshd(node: &NodeState, proc: ProcId, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ssh_banner(node.ip, Duration::from_millis(500)) {
            return Ok(());
        }
        let log = NodePaths::new(&node.dir).logs().join("sshd.log");
        if !proc.alive() {
            bail!(
                "sshd for {} exited; {}:\n{}",
                node.name,
                log.display(),
                util::tail(&log, 15)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "sshd for {} does not answer on {}:22 after {timeout:?}; {}:\n{}",
                node.name,
                node.ip,
                log.display(),
                util::tail(&log, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the node's static-pod runner (it puts itself in its own session).
pub fn spawn_runner(st: &LabState, node: &NodeState) -> Result<ProcId> {
    let paths = NodePaths::new(&node.dir);
    let log = paths.logs().join("runner.log");
    let out = append_log(&log)?;
    let child = Command::new(&st.lab_bin)
        .arg("runner")
        .arg("--dir")
        .arg(&st.dir)
        .arg("--node")
        .arg(&node.name)
        .env(util::MARKER_ENV, &st.dir)
        .env(util::NODE_ENV, &node.name)
        .stdin(Stdio::null())
        .stdout(out.try_clone().context("cannot duplicate a file handle")?)
        .stderr(out)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start the runner {} for {}",
                st.lab_bin.display(),
                node.name
            )
        })?;
    let pid = child.id() as i32;
    ProcId::of(pid).with_context(|| {
        format!(
            "the runner for {} exited at once; see {}",
            node.name,
            log.display()
        )
    })
}

/// Waits until the runner `proc` has adopted/started its pods and written its status.
pub fn wait_runner_ready(node: &NodeState, proc: ProcId, timeout: Duration) -> Result<()> {
    let paths = NodePaths::new(&node.dir);
    let ready = paths.run().join("runner.ready");
    let log = paths.logs().join("runner.log");
    let deadline = Instant::now() + timeout;
    loop {
        if fs::read_to_string(&ready)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            == Some(proc.pid)
        {
            return Ok(());
        }
        if !proc.alive() {
            bail!(
                "the runner for {} exited; {}:\n{}",
                node.name,
                log.display(),
                util::tail(&log, 15)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the runner for {} is not ready after {timeout:?}; {}:\n{}",
                node.name,
                log.display(),
                util::tail(&log, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a node's runner (SIGTERM, SIGKILL after 10 s); pods keep running.
pub fn stop_runner(dir: &Path, node: &str) -> Result<Option<ProcId>> {
    let st = LabState::load(dir)?;
    let n = st.node(node)?;
    let old = n.runner.filter(|p| p.alive());
    if let Some(p) = old {
        util::terminate(&[(p, false)], Duration::from_secs(10));
    }
    LabState::update(dir, |st| {
        if let Some(n) = st.nodes.iter_mut().find(|n| n.name == node) {
            n.runner = None;
        }
        Ok(())
    })?;
    Ok(old)
}

/// Starts a node's runner unless one is running; waits until it is ready.
pub fn start_runner(dir: &Path, node: &str) -> Result<(ProcId, bool)> {
    let st = LabState::load(dir)?;
    let n = st.node(node)?.clone();
    if let Some(p) = n.runner.filter(|p| p.alive()) {
        return Ok((p, false));
    }
    let p = spawn_runner(&st, &n)?;
    LabState::update(dir, |st| {
        if let Some(x) = st.nodes.iter_mut().find(|x| x.name == node) {
            x.runner = Some(p);
        }
        Ok(())
    })?;
    wait_runner_ready(&n, p, Duration::from_secs(15))?;
    Ok((p, true))
}

/// Stops a node's sshd listener (established sessions keep running, as with systemd's
/// `KillMode=process`).
pub fn stop_sshd(dir: &Path, node: &str) -> Result<Option<ProcId>> {
    let st = LabState::load(dir)?;
    let n = st.node(node)?;
    let old = n.sshd.filter(|p| p.alive());
    if let Some(p) = old {
        util::terminate(&[(p, false)], Duration::from_secs(5));
    }
    LabState::update(dir, |st| {
        if let Some(n) = st.nodes.iter_mut().find(|n| n.name == node) {
            n.sshd = None;
        }
        Ok(())
    })?;
    Ok(old)
}

/// Stops a node's sshd listener and SIGKILLs every sshd process serving an established
/// session, as when the node drops off the network: clients see their connections close, and
/// new ones are refused. Commands started in those sessions keep running (they are not sshd
/// processes). Returns the listener (if it ran) and the number of session processes killed.
pub fn drop_ssh(dir: &Path, node: &str) -> Result<(Option<ProcId>, usize)> {
    let st = LabState::load(dir)?;
    let n = st.node(node)?;
    let sshd_exe = fs::canonicalize(&st.sshd_bin).unwrap_or_else(|_| st.sshd_bin.clone());
    let listener = n.sshd.filter(|p| p.alive());
    // The sessions are the listener's sshd descendants; find them before the listener goes,
    // while the parent links still lead to it.
    let sessions: Vec<ProcId> = match listener {
        Some(l) => sshd_descendants(l.pid, &sshd_exe),
        None => Vec::new(),
    };
    let listener = stop_sshd(dir, node)?;
    for p in &sessions {
        if p.alive() {
            util::signal_pid(p.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let pairs: Vec<(ProcId, bool)> = sessions.iter().map(|p| (*p, false)).collect();
    util::wait_gone(&pairs, Duration::from_secs(5));
    Ok((listener, sessions.len()))
}

/// Every descendant of `root` running `exe`, following only sshd processes (so the commands
/// run in the sessions are not included).
fn sshd_descendants(root: i32, exe: &Path) -> Vec<ProcId> {
    let mut children: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            let is_sshd = fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|e| e == exe);
            if is_sshd {
                if let Some(id) = ProcId::of(c) {
                    out.push(id);
                }
                todo.push(c);
            }
        }
    }
    out
}

/// Starts a node's sshd unless it is running; waits until it greets.
pub fn start_sshd(dir: &Path, node: &str) -> Result<(ProcId, bool)> {
    let st = LabState::load(dir)?;
    let n = st.node(node)?.clone();
    if let Some(p) = n.sshd.filter(|p| p.alive()) {
        return Ok((p, false));
    }
    let p = spawn_sshd(&st, &n)?;
    LabState::update(dir, |st| {
        if let Some(x) = st.nodes.iter_mut().find(|x| x.name == node) {
            x.sshd = Some(p);
        }
        Ok(())
    })?;
    wait_sshd(&n, p, Duration::from_secs(10))?;
    Ok((p, true))
}
