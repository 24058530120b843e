//! What a restore, a rollback or a refusal must leave on a lab, and where the tool keeps its
//! runs: the baseline of "the cluster exactly as before", the lock files, the local run
//! directory and its report.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use etcd_recover_lab::testing::Lab;
use serde_json::Value;

/// Prefix of the keys written after the snapshot (a restore removes them; a rollback keeps
/// them).
pub const AFTER_SNAPSHOT: &str = "/registry/configmaps/after-snapshot/";

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

fn member_dir_id(l: &Lab, i: usize) -> (u64, u64) {
    let m = std::fs::metadata(l.node_dir(i).join("var/lib/etcd/member"))
        .unwrap_or_else(|e| panic!("cp-{i}: old data dir: {e}"));
    (m.dev(), m.ino())
}

/// Records the baseline of a healthy lab.
pub fn baseline(l: &Lab) -> Baseline {
    Baseline {
        cluster_id: l.wait_healthy(),
        manifests: l.manifests(),
        configmaps: l.count("/registry/configmaps/"),
        secrets: l.count("/registry/secrets/"),
        after_snapshot: l.count(AFTER_SNAPSHOT),
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
    let id = l.wait_healthy();
    assert_eq!(id, b.cluster_id, "{what}: the cluster ID changed");
    assert_eq!(
        l.manifests(),
        b.manifests,
        "{what}: manifests differ from before"
    );
    assert_eq!(
        l.count("/registry/configmaps/"),
        b.configmaps,
        "{what}: configmaps"
    );
    assert_eq!(l.count("/registry/secrets/"), b.secrets, "{what}: secrets");
    assert_eq!(
        l.count(AFTER_SNAPSHOT),
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

/// Asserts the state directory holds no run.
pub fn assert_no_runs(state: &Path) {
    let runs = state.join("runs");
    assert!(
        !runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none(),
        "runs were journaled in {}",
        runs.display()
    );
}

/// The directory of the one run in a state directory.
pub fn run_dir(state: &Path) -> PathBuf {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.remove(0)
}

/// The report of the one run in a state directory.
pub fn report_json(state: &Path) -> Value {
    let text = std::fs::read_to_string(run_dir(state).join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Earliest start (unix ms) of a step on any node, from a report.
pub fn step_started_ms(report: &Value, step: &str) -> i64 {
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
