//! End-to-end restores of real lab clusters (real sshd, real etcd, kubelet-like runner) with the
//! real binary.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::*;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Seed, snapshot, seed more, restore with `--output OUTPUT` (plain or json); then check
/// everything the restore promises.
fn full_restore(opts: LabOptions, output: &str) {
    let nodes = opts.nodes;
    let l = Lab::up(opts).expect("lab up");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    l.seed(400);
    let configmaps = l.count("/registry/configmaps/");
    let secrets = l.count("/registry/secrets/");
    assert_eq!(configmaps + secrets, 400);
    let old_cluster = l.healthy_cluster_id();
    let snap = l.snapshot(tmp.path().join("snap.db"));
    let snap_taken = now_ms();
    l.seed_under(AFTER_SNAPSHOT, 150);
    assert_eq!(l.count(AFTER_SNAPSHOT), 150);
    let original = l.manifests();

    let stderr = etcd_recover()
        .state(&state)
        .apply(&l.inventory)
        .snapshot(&snap)
        .yes()
        .output(output)
        .run()
        .success()
        .stderr;

    // Not a terminal: no escape codes; one line (or event) per node per step that ran.
    assert!(!stderr.contains('\x1b'), "escape codes in {output} output");
    let report = report_json(&state);
    let ran: Vec<(String, String)> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s[1].as_array().unwrap().iter())
        .filter(|s| s["outcome"] != "skipped")
        .map(|s| {
            assert!(
                s["outcome"] == "done" || s["outcome"] == "already-done",
                "{s}"
            );
            (
                s["node"].as_str().unwrap().to_string(),
                s["step"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(ran.len() >= 9 * nodes, "{ran:?}");
    for i in 1..=nodes {
        for step in ["preflight/1", "stage-snapshot/1", "restore/1", "finish/1"] {
            assert!(
                ran.contains(&(format!("cp-{i}"), step.to_string())),
                "cp-{i} {step}"
            );
        }
    }
    match output {
        "plain" => {
            for (node, step) in &ran {
                let lines: Vec<&str> = stderr
                    .lines()
                    .filter(|l| l.contains(&format!(" {node} {step} ")))
                    .collect();
                assert_eq!(lines.len(), 1, "{node} {step} lines in:\n{stderr}");
                assert!(
                    lines[0].ends_with(" already done") || lines[0].contains(" ok in "),
                    "{}",
                    lines[0]
                );
            }
        }
        "json" => {
            let events: Vec<Value> = stderr
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            for e in &events {
                assert!(e["event"].is_string(), "no event field: {e}");
                assert!(e["at"].is_string(), "no time: {e}");
            }
            for (node, step) in &ran {
                let n = events
                    .iter()
                    .filter(|e| e["event"] == "step-done" && e["step"] == step.as_str())
                    .filter(|e| match node.as_str() {
                        "cluster" => e["node"].is_null(),
                        n => e["node"] == n,
                    })
                    .count();
                assert_eq!(n, 1, "step-done events of {node} {step}");
            }
            let stages = events.iter().filter(|e| e["event"] == "stage-done").count();
            assert_eq!(stages, 12, "one stage-done per stage");
            assert!(events.iter().any(|e| e["event"] == "message"
                && e["text"].as_str().unwrap_or("").starts_with("report: ")));
        }
        other => panic!("no checks for --output {other}"),
    }

    // The new cluster: healthy, one new ID, equal hashes, apiservers ready.
    let new_cluster = l.healthy_cluster_id();
    assert_ne!(
        new_cluster, old_cluster,
        "a fresh token gives a new cluster ID"
    );
    // Keys written after the snapshot are gone; keys from before are all there.
    assert_eq!(l.count(AFTER_SNAPSHOT), 0);
    assert_eq!(l.count("/registry/configmaps/"), configmaps);
    assert_eq!(l.count("/registry/secrets/"), secrets);
    // No apiserver heartbeat from the restore window survived: each one is either in the
    // snapshot or was written after the apiservers were started again.
    let restarted = step_started_ms(&report, "start-apiserver/1");
    for i in 1..=nodes {
        if let Some(v) = l.get(&format!("/registry/lab-heartbeat/cp-{i}")) {
            let t: i64 = v.trim().parse().unwrap();
            assert!(
                t <= snap_taken as i64 || t >= restarted,
                "heartbeat {t} of cp-{i} is from the restore window ({snap_taken}..{restarted})"
            );
        }
    }
    // Manifests dirs hold exactly the expected files; only etcd.yaml changed, in its hostPath.
    let now = l.manifests();
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>()
    );
    for (k, v) in &now {
        if k.ends_with("/etcd.yaml") {
            assert_ne!(v, &original[k], "{k} points at the new data dir");
        } else {
            assert_eq!(v, &original[k], "{k} is byte-identical");
        }
    }
    for i in 1..=nodes {
        let m = std::fs::read_to_string(l.manifests_dir(i).join("etcd.yaml")).unwrap();
        assert!(m.contains("var/lib/etcd-restored-"), "{m}");
        assert!(
            m.contains("--data-dir=/var/lib/etcd\n"),
            "the container path is unchanged"
        );
        // The old data dir is intact.
        let old = l.node_dir(i).join("var/lib/etcd/member/snap/db");
        assert!(old.exists(), "{} kept", old.display());
    }
    assert!(stderr.contains("report.md"), "{stderr}");
    assert!(stderr.contains("follow-up: "), "{stderr}");
    assert_eq!(report["outcome"], "completed");
    // `status` from the journal and from the nodes themselves.
    let run_id = report["run_id"].as_str().unwrap();
    let status = etcd_recover()
        .state(&state)
        .args(["status", run_id])
        .arg("-i")
        .arg(&l.inventory)
        .run()
        .success()
        .stdout_contains(&format!("run {run_id} of cluster lab: completed"));
    for i in 1..=nodes {
        let line = status
            .stdout
            .lines()
            .find(|x| x.starts_with(&format!("node cp-{i}:")))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(
            line.contains("steps done") && line.contains("no lock"),
            "{line}"
        );
    }
}

#[test]
fn restores_three_nodes_etcd35_as_root() {
    full_restore(LabOptions::nodes(3).etcd(EtcdVersion::V35), "plain");
}

#[test]
fn restores_three_nodes_etcd34_with_a_sudo_user() {
    full_restore(
        LabOptions::nodes(3)
            .etcd(EtcdVersion::V34)
            .ssh_user("erlab"),
        "plain",
    );
}

/// With `--output json`: every line is one JSON event.
#[test]
fn restores_one_node_with_json_events() {
    full_restore(LabOptions::nodes(1), "json");
}

#[test]
fn restores_five_nodes() {
    full_restore(LabOptions::nodes(5), "plain");
}
