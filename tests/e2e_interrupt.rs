//! The orchestrator is SIGKILLed at every stage boundary of a real restore; `resume` must
//! finish the run, or `rollback` must undo it, from whatever the nodes and the journal hold.
#![allow(clippy::print_stderr)]

mod support;

use std::time::Instant;

use etcd_recover_lab::testing::{Lab, LabOptions};
use support::*;

/// Stages 2..=12 of the built-in playbook, by index.
const STAGES: std::ops::RangeInclusive<u64> = 2..=12;

/// Starts `apply` and SIGKILLs it as soon as it reports that stage `k` started. Returns the
/// run id.
fn apply_and_kill_at(l: &Lab, state: &std::path::Path, snap: &std::path::Path, k: u64) -> String {
    let mut apply = spawn(
        state,
        &[
            "apply",
            "-i",
            l.inventory.to_str().unwrap(),
            "--snapshot",
            snap.to_str().unwrap(),
            "--yes",
            "--output",
            "json",
        ],
    );
    let started = apply.until(|v| v["event"] == "stage-started" && v["index"] == k);
    let Some(stage) = started else {
        let code = apply.finish();
        panic!("apply ended ({code:?}) before stage {k}:\n{}", apply.log());
    };
    apply.kill();
    let run_id = apply.run_id().expect("run id");
    eprintln!("killed run {run_id} at stage {k} ({})", stage["stage"]);
    run_id
}

#[test]
fn sigkill_at_every_stage_boundary_then_resume_completes_the_restore() {
    let t0 = Instant::now();
    let l = Lab::up(LabOptions {
        nodes: 3,
        poll_ms: 200,
        // A plain user through sudo: every remote command skips root's heavy login shell
        // setup on this machine, which keeps these long loops short.
        ssh_user: Some("erlab".into()),
        ..LabOptions::default()
    })
    .expect("lab up");
    let tmp = tempfile::tempdir().unwrap();
    let snap = seed_and_snapshot(&l, tmp.path());
    let in_snapshot = (
        count(&l, "/registry/configmaps/") - count(&l, AFTER_SNAPSHOT),
        count(&l, "/registry/secrets/"),
    );
    let mut timings = Vec::new();
    for k in STAGES {
        let t = Instant::now();
        let before = wait_healthy(&l);
        assert!(count(&l, AFTER_SNAPSHOT) > 0);
        let state = tmp.path().join(format!("state-{k}"));
        let run_id = apply_and_kill_at(&l, &state, &snap, k);
        let out = run(&state, &["resume", &run_id, "--yes", "--output", "plain"]);
        let (_, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "resume after a kill at stage {k}:\n{stderr}"
        );
        assert_eq!(report_json(&state)["outcome"], "completed", "stage {k}");
        let after = wait_healthy(&l);
        assert_ne!(after, before, "stage {k}: the restore makes a new cluster");
        assert_eq!(
            count(&l, AFTER_SNAPSHOT),
            0,
            "stage {k}: keys written after the snapshot are gone"
        );
        assert_eq!(
            (
                count(&l, "/registry/configmaps/"),
                count(&l, "/registry/secrets/")
            ),
            in_snapshot,
            "stage {k}: every key of the snapshot is back"
        );
        assert_eq!(
            lock_files(&l),
            Vec::<std::path::PathBuf>::new(),
            "stage {k}: locks released"
        );
        for i in 1..=l.nodes {
            let m = std::fs::read_to_string(l.manifests_dir(i).join("etcd.yaml")).unwrap();
            assert!(
                m.contains(&format!("-restored-{run_id}")),
                "stage {k}: cp-{i} runs the restored data dir"
            );
        }
        // Writes after this restore, so that the next one has something to take away.
        lab(&l, &["seed", "--keys", "50", "--prefix", AFTER_SNAPSHOT]);
        timings.push(format!("stage {k}: {:.1}s", t.elapsed().as_secs_f64()));
    }
    eprintln!(
        "kill + resume at stages 2..=12 in {:.1}s:\n  {}",
        t0.elapsed().as_secs_f64(),
        timings.join("\n  ")
    );
}

#[test]
fn sigkill_at_every_stage_boundary_then_rollback_restores_the_cluster_before() {
    let t0 = Instant::now();
    let l = Lab::up(LabOptions {
        nodes: 3,
        poll_ms: 200,
        // A plain user through sudo: every remote command skips root's heavy login shell
        // setup on this machine, which keeps these long loops short.
        ssh_user: Some("erlab".into()),
        ..LabOptions::default()
    })
    .expect("lab up");
    let tmp = tempfile::tempdir().unwrap();
    let snap = seed_and_snapshot(&l, tmp.path());
    let before = baseline(&l);
    let mut timings = Vec::new();
    for k in STAGES {
        let t = Instant::now();
        let state = tmp.path().join(format!("state-{k}"));
        let run_id = apply_and_kill_at(&l, &state, &snap, k);
        let out = run(&state, &["rollback", &run_id, "--yes", "--output", "plain"]);
        let (_, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "rollback after a kill at stage {k}:\n{stderr}"
        );
        assert!(stderr.contains("rolled back"), "{stderr}");
        assert_as_before(&l, &before, &format!("kill at stage {k}, then rollback"));
        timings.push(format!("stage {k}: {:.1}s", t.elapsed().as_secs_f64()));
    }
    eprintln!(
        "kill + rollback at stages 2..=12 in {:.1}s:\n  {}",
        t0.elapsed().as_secs_f64(),
        timings.join("\n  ")
    );
}
