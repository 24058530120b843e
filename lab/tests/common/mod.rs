//! Helpers shared by the lab's end-to-end tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use etcd_recover_lab::testing::Lab;
use serde_json::Value;

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True while `pid` is a running (non-zombie) process.
pub fn pid_alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').map(|i| i + 1).unwrap_or(0)..];
            !matches!(after.split_whitespace().next(), Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// The command line of a process, NUL-separated args joined by spaces.
pub fn cmdline(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// True when something accepts TCP connections on `ip:port`.
pub fn port_open(ip: Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_millis(300)).is_ok()
}

/// Runs the real OpenSSH client against node `ip` with the lab's key and `known_hosts`.
pub fn ssh(lab: &Lab, user: &str, ip: Ipv4Addr, known_hosts: &Path, cmd: &str) -> Output {
    Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-o")
        .arg("GlobalKnownHostsFile=/dev/null")
        .arg("-i")
        .arg(lab.ssh_key())
        .arg(format!("{user}@{ip}"))
        .arg(cmd)
        .output()
        .expect("run ssh")
}

/// The lab's state file.
pub fn lab_json(lab: &Lab) -> Value {
    serde_json::from_slice(&std::fs::read(lab.dir.join("lab.json")).expect("read lab.json"))
        .expect("parse lab.json")
}

/// Runs the lab's etcdctl against node `i` with the health-check client certificate.
pub fn etcdctl(lab: &Lab, i: usize, args: &[&str]) -> Output {
    let st = lab_json(lab);
    let pki = lab.node_dir(i).join("etc/kubernetes/pki/etcd");
    Command::new(st["etcd"]["etcdctl"].as_str().expect("etcdctl path"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}:2379", lab.node_ip(i)))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("healthcheck-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("healthcheck-client.key").display()
        ))
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// Every pid the lab recorded: pods (from the status), runners and sshds.
pub fn recorded_pids(status: &Value) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for n in status["nodes"].as_array().expect("nodes") {
        let name = n["name"].as_str().unwrap_or("?");
        for (pod, p) in n["pods"].as_object().expect("pods") {
            if let Some(pid) = p["pid"].as_i64() {
                out.push((format!("{name}/{pod}"), pid));
            }
        }
        for d in ["runner", "sshd"] {
            if let Some(pid) = n[d]["pid"].as_i64() {
                out.push((format!("{name}/{d}"), pid));
            }
        }
    }
    out
}

/// Pid of pod `pod` on node index `i` (0-based in the status array), if running.
pub fn pod_pid(status: &Value, i: usize, pod: &str) -> Option<i64> {
    let p = &status["nodes"][i]["pods"][pod];
    (p["alive"] == Value::Bool(true))
        .then(|| p["pid"].as_i64())
        .flatten()
}

/// Reads the runner's pod status file of node `i` (1-based).
pub fn pods(lab: &Lab, i: usize) -> Value {
    std::fs::read(lab.node_dir(i).join("run/pods.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// A path inside node `i`'s manifests directory.
pub fn manifest(lab: &Lab, i: usize, name: &str) -> PathBuf {
    lab.manifests_dir(i).join(name)
}

/// Asserts a command succeeded, printing its output otherwise.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
