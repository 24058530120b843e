//! Helpers for end-to-end tests: run the real binary against a real lab, read etcd directly.
#![allow(dead_code)]

pub mod tmux;

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
    client_of(l, &(1..=l.nodes).collect::<Vec<_>>()).await
}

async fn client_of(l: &Lab, nodes: &[usize]) -> Client {
    let pki = l.node_dir(1).join("etc/kubernetes/pki/etcd");
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("healthcheck-client.crt"),
            read("healthcheck-client.key"),
        ));
    let eps: Vec<String> = nodes
        .iter()
        .map(|i| format!("https://{}:2379", l.node_ip(*i)))
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

/// Number of keys under `prefix`, read through node `i` only.
pub fn count_on(l: &Lab, i: usize, prefix: &str) -> i64 {
    runtime().block_on(async {
        let mut c = client_of(l, &[i]).await;
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

/// What "the cluster exactly as before" means, recorded before a run.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// SHA-256 of every file in every manifests directory.
    pub manifests: BTreeMap<String, String>,
    /// Keys under `/registry/configmaps/`.
    pub configmaps: i64,
    /// Keys under `/registry/secrets/`.
    pub secrets: i64,
    /// Keys written after the snapshot (a restore would remove them).
    pub after_snapshot: i64,
    /// The healthy cluster's ID.
    pub cluster_id: String,
    /// Per node: (device, inode) of `var/lib/etcd/member` (the old data dir is never replaced).
    pub data_dirs: Vec<(u64, u64)>,
}

/// Prefix of the keys written after the snapshot in the failure tests.
pub const AFTER_SNAPSHOT: &str = "/registry/configmaps/after-snapshot/";

fn member_dir_id(l: &Lab, i: usize) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(l.node_dir(i).join("var/lib/etcd/member"))
        .unwrap_or_else(|e| panic!("cp-{i}: old data dir: {e}"));
    (m.dev(), m.ino())
}

/// Records the baseline of a healthy lab.
pub fn baseline(l: &Lab) -> Baseline {
    Baseline {
        cluster_id: wait_healthy(l),
        manifests: manifests(l),
        configmaps: count(l, "/registry/configmaps/"),
        secrets: count(l, "/registry/secrets/"),
        after_snapshot: count(l, AFTER_SNAPSHOT),
        data_dirs: (1..=l.nodes).map(|i| member_dir_id(l, i)).collect(),
    }
}

/// Lock files the tool left in the nodes' run directories.
pub fn lock_files(l: &Lab) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in 1..=l.nodes {
        let dir = l.node_dir(i).join("var/lib/etcd-recover");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(".lock") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Asserts the lab is exactly as recorded: healthy with the same cluster ID, equal hashkv,
/// apiservers ready, byte-identical manifests, the same key counts, no lock files, and the old
/// data directories in place (same inode) with their database.
pub fn assert_as_before(l: &Lab, b: &Baseline, what: &str) {
    let id = wait_healthy(l);
    assert_eq!(id, b.cluster_id, "{what}: the cluster ID changed");
    assert_eq!(
        manifests(l),
        b.manifests,
        "{what}: manifests differ from before"
    );
    assert_eq!(
        count(l, "/registry/configmaps/"),
        b.configmaps,
        "{what}: configmaps"
    );
    assert_eq!(count(l, "/registry/secrets/"), b.secrets, "{what}: secrets");
    assert_eq!(
        count(l, AFTER_SNAPSHOT),
        b.after_snapshot,
        "{what}: keys written after the snapshot"
    );
    assert_eq!(
        lock_files(l),
        Vec::<PathBuf>::new(),
        "{what}: lock files left"
    );
    for i in 1..=l.nodes {
        assert_eq!(
            member_dir_id(l, i),
            b.data_dirs[i - 1],
            "{what}: cp-{i}'s old data dir was replaced"
        );
        assert!(
            l.node_dir(i).join("var/lib/etcd/member/snap/db").is_file(),
            "{what}: cp-{i}'s old database is gone"
        );
    }
}

/// Seeds 400 keys, takes a snapshot, then writes 150 more under [`AFTER_SNAPSHOT`] (a restore
/// removes those; a rollback keeps them). Returns the snapshot.
pub fn seed_and_snapshot(l: &Lab, dir: &Path) -> PathBuf {
    lab(l, &["seed", "--keys", "400"]);
    let snap = snapshot(l, dir, "snap.db");
    lab(l, &["seed", "--keys", "150", "--prefix", AFTER_SNAPSHOT]);
    snap
}

/// The built-in playbook with `edit` applied to its stages (a YAML sequence of mappings).
pub fn playbook_with(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<serde_yaml::Value>),
) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/restore-stacked.yaml"),
    )
    .unwrap();
    let mut pb: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let stages = pb["stages"].as_sequence_mut().unwrap();
    edit(stages);
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&pb).unwrap()).unwrap();
    path
}

/// Index of a stage in a playbook's stage list.
pub fn stage_index(stages: &[serde_yaml::Value], name: &str) -> usize {
    stages
        .iter()
        .position(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// A `command` step as YAML.
pub fn command_step(name: &str, run: &[&str]) -> serde_yaml::Value {
    serde_yaml::from_str(&format!(
        "type: command\nname: {name}\nrun: {}\n",
        serde_json::to_string(run).unwrap()
    ))
    .unwrap()
}

/// A stage of one step.
pub fn stage_of(name: &str, step: serde_yaml::Value) -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    m.insert("name".into(), name.into());
    m.insert("steps".into(), serde_yaml::Value::Sequence(vec![step]));
    serde_yaml::Value::Mapping(m)
}

/// A running `etcd-recover` with `--output json` (events on stderr, one per line).
pub struct Running {
    /// The process.
    pub child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    /// Every stderr line so far.
    pub seen: Vec<String>,
}

/// Starts `etcd-recover ARGS` with its own state directory, stderr piped.
pub fn spawn(state: &Path, args: &[&str]) -> Running {
    use std::io::BufRead;
    let mut child = Command::new(bin())
        .args(args)
        .env("ETCD_RECOVER_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start etcd-recover");
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    Running {
        child,
        lines,
        seen: Vec::new(),
    }
}

impl Running {
    /// Reads events until `stop` says so (returns that event) or the output ends (`None`).
    pub fn until(
        &mut self,
        mut stop: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        for line in self.lines.by_ref() {
            let line = line.expect("read stderr");
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if stop(&v) {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Reads to the end and waits; returns the exit code.
    pub fn finish(&mut self) -> Option<i32> {
        self.until(|_| false);
        self.child.wait().expect("wait for etcd-recover").code()
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL etcd-recover");
        let _ = self.child.wait();
    }

    /// The run id from the `run <ID> started` message.
    pub fn run_id(&self) -> Option<String> {
        self.seen.iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let text = v["text"].as_str()?;
            let rest = text.strip_prefix("run ")?;
            let (id, tail) = rest.split_once(' ')?;
            tail.starts_with("started").then(|| id.to_string())
        })
    }

    /// All stderr so far, for failure messages.
    pub fn log(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave the orchestrator running behind a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SHA-256 of a file, hex.
pub fn hex_sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}
