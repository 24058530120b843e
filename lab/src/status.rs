//! `status`: per-node etcd health and identity, apiserver readiness, manifests, daemons.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use etcd_client::GetOptions;
use serde::Serialize;
use serde_json::{json, Value};

use crate::etcdc;
use crate::runner::{self, PodStatus};
use crate::state::{LabState, NodePaths, NodeState};
use crate::tls;
use crate::util;

/// What one etcd member reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EtcdProbe {
    /// A linearizable read succeeded.
    pub healthy: bool,
    /// Member id (hex).
    pub member_id: Option<String>,
    /// Cluster id (hex).
    pub cluster_id: Option<String>,
    /// Current revision.
    pub revision: Option<i64>,
    /// Number of keys (linearizable count).
    pub keys: Option<i64>,
    /// Raft term.
    pub raft_term: Option<u64>,
    /// Leader member id (hex).
    pub leader: Option<String>,
    /// Whether this member is the leader.
    pub is_leader: bool,
    /// Number of members in the member list.
    pub members: Option<usize>,
    /// Server version.
    pub version: Option<String>,
    /// Database size in bytes.
    pub db_size: Option<i64>,
    /// HashKV at `hashkv_revision`.
    pub hashkv: Option<u32>,
    /// The common revision the hash was taken at.
    pub hashkv_revision: Option<i64>,
    /// Why the member is not healthy.
    pub error: Option<String>,
}

/// Probes one node's etcd (status, member list, key count).
pub async fn probe_etcd(node: &NodeState, timeout: Duration) -> EtcdProbe {
    let mut p = EtcdProbe::default();
    let pki = NodePaths::new(&node.dir).pki();
    let res: Result<()> = async {
        let mut c = etcdc::connect_node(&pki, node.ip, timeout).await?;
        let s = etcdc::timed("status", timeout, c.status()).await?;
        if let Some(h) = s.header() {
            p.member_id = Some(format!("{:x}", h.member_id()));
            p.cluster_id = Some(format!("{:x}", h.cluster_id()));
            p.revision = Some(h.revision());
            p.is_leader = s.leader() != 0 && s.leader() == h.member_id();
        }
        p.raft_term = Some(s.raft_term());
        p.leader = (s.leader() != 0).then(|| format!("{:x}", s.leader()));
        p.version = Some(s.version().to_string());
        p.db_size = Some(s.db_size());
        let ml = etcdc::timed("member list", timeout, c.member_list()).await?;
        p.members = Some(ml.members().len());
        let count = etcdc::timed(
            "linearizable read",
            timeout,
            c.get(
                "",
                Some(GetOptions::new().with_all_keys().with_count_only()),
            ),
        )
        .await?;
        p.keys = Some(count.count());
        p.healthy = true;
        Ok(())
    }
    .await;
    if let Err(e) = res {
        p.error = Some(format!("{e:#}"));
    }
    p
}

/// Adds HashKV at the lowest revision all healthy members have reached.
pub async fn add_hashkv(nodes: &[NodeState], probes: &mut [EtcdProbe], timeout: Duration) {
    let Some(rev) = probes
        .iter()
        .filter(|p| p.healthy)
        .filter_map(|p| p.revision)
        .min()
    else {
        return;
    };
    for (n, p) in nodes.iter().zip(probes.iter_mut()) {
        if !p.healthy {
            continue;
        }
        let pki = NodePaths::new(&n.dir).pki();
        let r: Result<u32> = async {
            let mut c = etcdc::connect_node(&pki, n.ip, timeout).await?;
            Ok(etcdc::timed("hashkv", timeout, c.hash_kv(rev))
                .await?
                .hash())
        }
        .await;
        match r {
            Ok(h) => {
                p.hashkv = Some(h);
                p.hashkv_revision = Some(rev);
            }
            Err(e) => p.error = Some(format!("{e:#}")),
        }
    }
}

/// `GET https://<ip>:6443/readyz` verified against the node's Kubernetes CA.
pub async fn probe_apiserver(node: &NodeState, timeout: Duration) -> Result<(u16, String)> {
    let ca = std::fs::read(NodePaths::new(&node.dir).pki().join("ca.crt"))?;
    let cfg = tls::client_config(Some(&ca))?;
    tls::https_get(SocketAddr::from((node.ip, 6443)), "/readyz", cfg, timeout).await
}

/// The etcd.yaml on a node: present?, sha256, etcd-data hostPath.
pub fn manifest_info(node: &NodeState) -> Value {
    let path = NodePaths::new(&node.dir).manifests().join("etcd.yaml");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let v: serde_yaml::Value = serde_yaml::from_slice(&bytes).unwrap_or_default();
            let host_path = v["spec"]["volumes"]
                .as_sequence()
                .and_then(|vols| {
                    vols.iter()
                        .find(|x| x["name"].as_str() == Some("etcd-data"))
                })
                .and_then(|x| x["hostPath"]["path"].as_str())
                .map(str::to_string);
            json!({"path": path, "present": true, "sha256": util::sha256_hex(&bytes), "etcd_data_host_path": host_path})
        }
        Err(_) => {
            json!({"path": path, "present": false, "sha256": null, "etcd_data_host_path": null})
        }
    }
}

/// Collects the whole status as JSON.
pub async fn collect(st: &LabState) -> Value {
    let timeout = Duration::from_secs(2);
    let mut handles = Vec::new();
    for n in st.nodes.clone() {
        handles.push(tokio::spawn(async move {
            let e = probe_etcd(&n, timeout).await;
            let a = probe_apiserver(&n, timeout).await;
            (e, a)
        }));
    }
    let mut probes = Vec::new();
    let mut api = Vec::new();
    for h in handles {
        match h.await {
            Ok((e, a)) => {
                probes.push(e);
                api.push(a);
            }
            Err(e) => {
                probes.push(EtcdProbe {
                    error: Some(format!("probe failed: {e}")),
                    ..Default::default()
                });
                api.push(Err(anyhow::anyhow!("probe failed")));
            }
        }
    }
    add_hashkv(&st.nodes, &mut probes, timeout).await;

    let mut nodes = Vec::new();
    for ((n, p), a) in st.nodes.iter().zip(&probes).zip(api) {
        let paths = NodePaths::new(&n.dir);
        let pods: std::collections::BTreeMap<String, PodStatus> =
            runner::read_status(&paths.pod_status());
        let pods_json: serde_json::Map<String, Value> = pods
            .iter()
            .map(|(k, v)| {
                let alive = match (v.pid, v.start_time) {
                    (Some(pid), Some(start_time)) => util::ProcId { pid, start_time }.alive(),
                    _ => false,
                };
                let mut j = serde_json::to_value(v).unwrap_or_default();
                j["alive"] = json!(alive);
                (k.clone(), j)
            })
            .collect();
        let (ready, api_detail) = match a {
            Ok((code, body)) => (code == 200, json!({"code": code, "body": body.trim()})),
            Err(e) => (false, json!({"error": format!("{e:#}")})),
        };
        nodes.push(json!({
            "name": n.name,
            "ip": n.ip,
            "dir": n.dir,
            "etcd": p,
            "apiserver_ready": ready,
            "apiserver": api_detail,
            "manifest": manifest_info(n),
            "runner": {"pid": n.runner.map(|p| p.pid), "alive": n.runner.is_some_and(|p| p.alive())},
            "sshd": {"pid": n.sshd.map(|p| p.pid), "alive": n.sshd.is_some_and(|p| p.alive())},
            "pods": pods_json,
        }));
    }
    let healthy = probes.iter().filter(|p| p.healthy).count();
    let mut cluster_ids: Vec<String> = probes.iter().filter_map(|p| p.cluster_id.clone()).collect();
    cluster_ids.sort();
    cluster_ids.dedup();
    let mut leaders: Vec<String> = probes.iter().filter_map(|p| p.leader.clone()).collect();
    leaders.sort();
    leaders.dedup();
    let hashes: Vec<u32> = probes.iter().filter_map(|p| p.hashkv).collect();
    let hashkv_equal = !hashes.is_empty() && hashes.iter().all(|h| *h == hashes[0]);
    json!({
        "dir": st.dir,
        "cluster": st.cluster,
        "phase": st.phase,
        "etcd_version": st.etcd.version,
        "ssh_user": st.ssh_user,
        "base_ip": st.base_ip,
        "nodes": nodes,
        "summary": {
            "nodes": st.nodes.len(),
            "healthy_members": healthy,
            "cluster_ids": cluster_ids,
            "leaders": leaders,
            "hashkv_equal": hashkv_equal,
            "apiservers_ready": nodes.iter().filter(|n| n["apiserver_ready"] == json!(true)).count(),
        }
    })
}

/// Renders the status JSON as a table.
pub fn render(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lab {} ({}), etcd {}, phase {}",
        v["dir"].as_str().unwrap_or(""),
        v["cluster"].as_str().unwrap_or(""),
        v["etcd_version"].as_str().unwrap_or(""),
        v["phase"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "{:<5} {:<13} {:<9} {:<16} {:<16} {:>7} {:>10} {:>6} {:>4} {:<6} {:<9} {:<6} {:<6} ETCD.YAML (sha256, etcd-data hostPath)",
        "NODE", "IP", "ETCD", "MEMBER", "CLUSTER", "REV", "HASHKV", "KEYS", "TERM", "LEADER", "APISERVER", "RUNNER", "SSHD"
    );
    let s = |x: &Value| -> String {
        match x {
            Value::Null => "-".into(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    };
    for n in v["nodes"].as_array().into_iter().flatten() {
        let e = &n["etcd"];
        let m = &n["manifest"];
        let yaml = if m["present"] == json!(true) {
            format!(
                "{} {}",
                &s(&m["sha256"])[..12.min(s(&m["sha256"]).len())],
                s(&m["etcd_data_host_path"])
            )
        } else {
            "absent".to_string()
        };
        let _ =
            writeln!(
            out,
            "{:<5} {:<13} {:<9} {:<16} {:<16} {:>7} {:>10} {:>6} {:>4} {:<6} {:<9} {:<6} {:<6} {}",
            s(&n["name"]),
            s(&n["ip"]),
            if e["healthy"] == json!(true) { "healthy" } else { "DOWN" },
            s(&e["member_id"]),
            s(&e["cluster_id"]),
            s(&e["revision"]),
            s(&e["hashkv"]),
            s(&e["keys"]),
            s(&e["raft_term"]),
            if e["is_leader"] == json!(true) { "leader" } else { "-" },
            if n["apiserver_ready"] == json!(true) { "ready" } else { "NOT READY" },
            if n["runner"]["alive"] == json!(true) { "up" } else { "DOWN" },
            if n["sshd"]["alive"] == json!(true) { "up" } else { "DOWN" },
            yaml
        );
        if let Some(err) = e["error"].as_str() {
            let _ = writeln!(out, "      etcd: {err}");
        }
    }
    let sm = &v["summary"];
    let _ = writeln!(
        out,
        "{}/{} members healthy, cluster ids {}, hashkv {}, {} apiservers ready",
        s(&sm["healthy_members"]),
        s(&sm["nodes"]),
        s(&sm["cluster_ids"]),
        if sm["hashkv_equal"] == json!(true) {
            "equal"
        } else {
            "DIFFERENT or unknown"
        },
        s(&sm["apiservers_ready"])
    );
    out
}
