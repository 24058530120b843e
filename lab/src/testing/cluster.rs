//! What tests do with a running lab: its commands and faults, and reads of its etcd, manifests,
//! pods and health. Every helper panics with what failed: they are for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use serde_json::Value;

use super::{ok, Lab};
use crate::state::{LabState, NodePaths};
use crate::{data, etcdc, util};

impl Lab {
    /// Runs `etcd-recover-lab ARGS --dir D` and insists it worked; returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.lab(args).expect("run etcd-recover-lab");
        ok(&out, &format!("etcd-recover-lab {}", args.join(" ")))
    }

    /// Writes `keys` keys under the default prefixes (configmaps and secrets).
    pub fn seed(&self, keys: usize) -> String {
        self.run(&["seed", "--keys", &keys.to_string()])
    }

    /// Writes `keys` keys under `prefix`.
    pub fn seed_under(&self, prefix: &str, keys: usize) -> String {
        self.run(&["seed", "--keys", &keys.to_string(), "--prefix", prefix])
    }

    /// Saves a snapshot (of cp-1, with the real etcdctl) to `out`; returns `out`.
    pub fn snapshot(&self, out: impl Into<PathBuf>) -> PathBuf {
        let out = out.into();
        let path = out.to_str().expect("a UTF-8 snapshot path");
        self.run(&["snapshot", "--out", path]);
        out
    }

    /// Injects a fault on `node`, as `etcd-recover-lab fault` names it (`stop-sshd`,
    /// `drop-ssh`, `start-sshd`, `stop-runner`, `start-runner`, `kill-etcd`).
    pub fn fault(&self, node: &str, fault: &str) -> String {
        self.run(&["fault", "--node", node, fault])
    }

    /// The lab's state file (`D/lab.json`), as JSON.
    pub fn state(&self) -> Value {
        let path = self.dir.join("lab.json");
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_slice(&bytes).expect("lab.json is JSON")
    }

    /// The pod status node `i`'s runner wrote (`run/pods.json`), or null when there is none.
    pub fn pods(&self, i: usize) -> Value {
        std::fs::read(NodePaths::new(self.node_dir(i)).pod_status())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// The lab's etcdctl against node `i` with the health-check client certificate.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        let st = LabState::load(&self.dir).expect("lab state");
        data::etcdctl(&st.etcd.etcdctl, &st.nodes[i - 1])
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    /// The real OpenSSH client as `user` to `ip`, with the lab's key, `known_hosts` as the
    /// only host keys on record and strict host key checking.
    pub fn ssh(&self, user: &str, ip: Ipv4Addr, known_hosts: &Path, cmd: &str) -> Output {
        Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .args([
                "-o",
                "ConnectTimeout=5",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(self.ssh_key())
            .arg(format!("{user}@{ip}"))
            .arg(cmd)
            .output()
            .expect("run ssh")
    }

    /// Number of keys under `prefix`, read through every node.
    pub fn count(&self, prefix: &str) -> i64 {
        self.count_through(&(1..=self.nodes).collect::<Vec<_>>(), prefix)
    }

    /// Number of keys under `prefix`, read through node `i` only.
    pub fn count_on(&self, i: usize, prefix: &str) -> i64 {
        self.count_through(&[i], prefix)
    }

    fn count_through(&self, nodes: &[usize], prefix: &str) -> i64 {
        let opts = GetOptions::new().with_prefix().with_count_only();
        self.with_etcd(nodes, |mut c| async move {
            c.get(prefix, Some(opts)).await.expect("count keys").count()
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<String> {
        let nodes: Vec<usize> = (1..=self.nodes).collect();
        self.with_etcd(&nodes, |mut c| async move {
            let r = c.get(key, None).await.expect("get key");
            r.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        })
    }

    /// Runs `f` with an etcd client connected to `nodes`.
    fn with_etcd<T, F: std::future::Future<Output = T>>(
        &self,
        nodes: &[usize],
        f: impl FnOnce(Client) -> F,
    ) -> T {
        let pki = NodePaths::new(self.node_dir(1)).pki();
        let endpoints: Vec<String> = nodes
            .iter()
            .map(|i| format!("https://{}:2379", self.node_ip(*i)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let client = etcdc::connect_healthcheck(&pki, &endpoints, Duration::from_secs(10))
                .await
                .expect("connect to the lab's etcd");
            f(client).await
        })
    }

    /// Every file in every node's manifests directory (`cp-<i>/<name>`), with its SHA-256.
    pub fn manifests(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for i in 1..=self.nodes {
            for e in std::fs::read_dir(self.manifests_dir(i)).expect("manifests directory") {
                let e = e.expect("manifests directory entry");
                let bytes = std::fs::read(e.path()).expect("read a manifest");
                out.insert(
                    format!("cp-{i}/{}", e.file_name().to_string_lossy()),
                    util::sha256_hex(&bytes),
                );
            }
        }
        out
    }

    /// The one cluster ID when every member is healthy with equal hashkv and every apiserver
    /// is ready; otherwise what is wrong.
    pub fn cluster_state(&self) -> Result<String, String> {
        let s = self.status().map_err(|e| e.to_string())?;
        let nodes = s["nodes"].as_array().ok_or("no nodes")?;
        let mut ids = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        for n in nodes {
            if n["etcd"]["healthy"] != true || n["apiserver_ready"] != true {
                return Err(format!("{} not healthy/ready: {}", n["name"], n["etcd"]));
            }
            ids.insert(n["etcd"]["cluster_id"].as_str().unwrap_or("").to_string());
            hashes.insert(n["etcd"]["hashkv"].to_string());
        }
        if ids.len() != 1 || hashes.len() != 1 {
            return Err(format!("cluster ids {ids:?}, hashkv {hashes:?}"));
        }
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    /// Like [`Lab::cluster_state`], insisting on health.
    pub fn healthy_cluster_id(&self) -> String {
        self.cluster_state()
            .unwrap_or_else(|e| panic!("lab not healthy: {e}"))
    }

    /// Waits up to 90 s until the lab is healthy (after a rollback the old cluster needs a
    /// moment); returns its cluster ID.
    pub fn wait_healthy(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.cluster_state() {
                Ok(id) => return id,
                Err(e) if Instant::now() > deadline => panic!("lab not healthy after 90 s: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}
