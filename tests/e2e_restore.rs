//! End-to-end restores of real lab clusters (real sshd, real etcd, kubelet-like runner) with the
//! real binary.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_recover_lab::testing::{EtcdVersion, Lab, LabOptions};
use support::*;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Seed, snapshot, seed more, restore; then check everything the restore promises.
fn full_restore(opts: LabOptions) {
    let nodes = opts.nodes;
    let l = Lab::up(opts).expect("lab up");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    lab(&l, &["seed", "--keys", "400"]);
    let configmaps = count(&l, "/registry/configmaps/");
    let secrets = count(&l, "/registry/secrets/");
    assert_eq!(configmaps + secrets, 400);
    let old_cluster = healthy_cluster_id(&l);
    let snap = snapshot(&l, tmp.path(), "snap.db");
    let snap_taken = now_ms();
    lab(
        &l,
        &[
            "seed",
            "--keys",
            "150",
            "--prefix",
            "/registry/configmaps/after-snapshot/",
        ],
    );
    assert_eq!(count(&l, "/registry/configmaps/after-snapshot/"), 150);
    let original = manifests(&l);

    let out = run(
        &state,
        &[
            "apply",
            "-i",
            l.inventory.to_str().unwrap(),
            "--snapshot",
            snap.to_str().unwrap(),
            "--yes",
            "--output",
            "plain",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "apply failed:\n{stdout}\n{stderr}");

    // Plain output: no escape codes, one line per node per step.
    assert!(!stderr.contains('\x1b'), "escape codes in plain output");
    for step in [
        "preflight/1",
        "stage-snapshot/1",
        "stop-apiserver/1",
        "stop-etcd/1",
        "restore/1",
        "rewrite-manifest/1",
        "start-etcd/1",
        "start-apiserver/1",
        "finish/1",
    ] {
        for i in 1..=nodes {
            let n = stderr
                .lines()
                .filter(|line| line.contains(&format!(" cp-{i} {step} ok")))
                .count();
            assert_eq!(n, 1, "cp-{i} {step} lines in:\n{stderr}");
        }
    }

    // The new cluster: healthy, one new ID, equal hashes, apiservers ready.
    let new_cluster = healthy_cluster_id(&l);
    assert_ne!(
        new_cluster, old_cluster,
        "a fresh token gives a new cluster ID"
    );
    // Keys written after the snapshot are gone; keys from before are all there.
    assert_eq!(count(&l, "/registry/configmaps/after-snapshot/"), 0);
    assert_eq!(count(&l, "/registry/configmaps/"), configmaps);
    assert_eq!(count(&l, "/registry/secrets/"), secrets);
    // No apiserver heartbeat from the restore window survived: each one is either in the
    // snapshot or was written after the apiservers were started again.
    let report = report_json(&state);
    let restarted = step_started_ms(&report, "start-apiserver/1");
    for i in 1..=nodes {
        if let Some(v) = get(&l, &format!("/registry/lab-heartbeat/cp-{i}")) {
            let t: i64 = v.trim().parse().unwrap();
            assert!(
                t <= snap_taken as i64 || t >= restarted,
                "heartbeat {t} of cp-{i} is from the restore window ({snap_taken}..{restarted})"
            );
        }
    }
    // Manifests dirs hold exactly the expected files; only etcd.yaml changed, in its hostPath.
    let now = manifests(&l);
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
    assert_eq!(report["outcome"], "completed");
    // `status` from the journal and from the nodes themselves.
    let run_id = report["run_id"].as_str().unwrap();
    let out = run(
        &state,
        &["status", run_id, "-i", l.inventory.to_str().unwrap()],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("run {run_id} of cluster lab: completed")),
        "{stdout}"
    );
    for i in 1..=nodes {
        let line = stdout
            .lines()
            .find(|x| x.starts_with(&format!("node cp-{i}:")))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            line.contains("steps done") && line.contains("no lock"),
            "{line}"
        );
    }
}

#[test]
fn restores_three_nodes_etcd35_as_root() {
    full_restore(LabOptions {
        nodes: 3,
        etcd: EtcdVersion::V35,
        ..LabOptions::default()
    });
}

#[test]
fn restores_three_nodes_etcd34_with_a_sudo_user() {
    full_restore(LabOptions {
        nodes: 3,
        etcd: EtcdVersion::V34,
        ssh_user: Some("erlab".into()),
        ..LabOptions::default()
    });
}

#[test]
fn restores_one_node() {
    full_restore(LabOptions {
        nodes: 1,
        ..LabOptions::default()
    });
}

#[test]
fn restores_five_nodes() {
    full_restore(LabOptions {
        nodes: 5,
        ..LabOptions::default()
    });
}
