//! Helpers for end-to-end tests: run the real binary against a real lab, read etcd directly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use etcd_recover_lab::testing::Lab;
use sha2::{Digest, Sha256};

/// The `etcd-recover` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_etcd-recover"))
}

/// Runs `etcd-recover ARGS` with its own state directory.
pub fn run(state: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("ETCD_RECOVER_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .output()
        .expect("run etcd-recover")
}

/// Text of stdout and stderr.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs a lab subcommand and insists it worked.
pub fn lab(l: &Lab, args: &[&str]) -> String {
    let o = l.lab(args).expect("run etcd-recover-lab");
    assert!(
        o.status.success(),
        "lab {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Takes a snapshot into `dir/name`.
pub fn snapshot(l: &Lab, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    lab(l, &["snapshot", "--out", p.to_str().unwrap()]);
    p
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(l: &Lab) -> Client {
    let pki = l.node_dir(1).join("etc/kubernetes/pki/etcd");
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("healthcheck-client.crt"),
            read("healthcheck-client.key"),
        ));
    let eps: Vec<String> = (1..=l.nodes)
        .map(|i| format!("https://{}:2379", l.node_ip(i)))
        .collect();
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(10));
    Client::connect(eps, Some(opts))
        .await
        .expect("connect to the lab's etcd")
}

/// Number of keys under `prefix`.
pub fn count(l: &Lab, prefix: &str) -> i64 {
    runtime().block_on(async {
        let mut c = client(l).await;
        let r = c
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count keys");
        r.count()
    })
}

/// Value of one key, if present.
pub fn get(l: &Lab, key: &str) -> Option<String> {
    runtime().block_on(async {
        let mut c = client(l).await;
        let r = c.get(key, None).await.expect("get key");
        r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    })
}

/// Every file in every node's manifests directory, with its SHA-256.
pub fn manifests(l: &Lab) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 1..=l.nodes {
        let dir = l.manifests_dir(i);
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            out.insert(
                format!("cp-{i}/{}", e.file_name().to_string_lossy()),
                hex::encode(Sha256::digest(&bytes)),
            );
        }
    }
    out
}

/// The one cluster ID when every member is healthy with equal hashkv and every apiserver is
/// ready; otherwise what is wrong.
pub fn cluster_state(l: &Lab) -> Result<String, String> {
    let s = l.status().map_err(|e| e.to_string())?;
    let nodes = s["nodes"].as_array().ok_or("no nodes")?;
    let mut ids = std::collections::BTreeSet::new();
    let mut hashes = std::collections::BTreeSet::new();
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

/// Like [`cluster_state`], insisting on health.
pub fn healthy_cluster_id(l: &Lab) -> String {
    cluster_state(l).unwrap_or_else(|e| panic!("lab not healthy: {e}"))
}

/// Waits until the lab is healthy again (after a rollback the old cluster needs a moment).
pub fn wait_healthy(l: &Lab) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        match cluster_state(l) {
            Ok(id) => return id,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("lab not healthy after 90 s: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// The report of the only run in a state directory.
pub fn report_json(state: &Path) -> serde_json::Value {
    let runs = state.join("runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
}

/// Earliest start (unix ms) of a step on any node, from a report.
pub fn step_started_ms(report: &serde_json::Value, step: &str) -> i64 {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s[1].as_array().unwrap().iter())
        .filter(|s| s["step"] == step)
        .filter_map(|s| s["started_at"].as_str())
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        })
        .min()
        .unwrap_or_else(|| panic!("no {step} in the report"))
}
