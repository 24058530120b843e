//! The orchestrator is SIGKILLed at every stage boundary of a real restore; `resume` must
//! finish the run, or `rollback` must undo it, from whatever the nodes and the journal hold.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::harness::*;

/// Stages 2..=12 of the built-in playbook, by index.
const STAGES: std::ops::RangeInclusive<u64> = 2..=12;

/// Starts `apply` and SIGKILLs it as soon as it reports that stage `k` started. Returns the
/// run id.
fn apply_and_kill_at(l: &Lab, state: &Path, snap: &Path, k: u64) -> String {
    let mut apply = etcd_recover()
        .state(state)
        .apply(&l.inventory)
        .snapshot(snap)
        .yes()
        .output("json")
        .spawn();
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

/// `etcd-recover VERB RUN --yes --output plain` (`resume` or `rollback`), which must succeed;
/// returns its stderr.
fn finish(state: &Path, verb: &str, run_id: &str, k: u64) -> String {
    let out = etcd_recover()
        .state(state)
        .args([verb, run_id])
        .yes()
        .output("plain")
        .run();
    assert_eq!(out.code, Some(0), "{verb} after a kill at stage {k}: {out}");
    out.stderr
}

#[test]
fn sigkill_at_every_stage_boundary_then_resume_completes_the_restore() {
    let t0 = Instant::now();
    let Setup { lab: l, tmp, snap } = Setup::for_loops();
    let in_snapshot = (
        l.count("/registry/configmaps/") - l.count(AFTER_SNAPSHOT),
        l.count("/registry/secrets/"),
    );
    let mut timings = Vec::new();
    for k in STAGES {
        let t = Instant::now();
        let before = l.wait_healthy();
        assert!(l.count(AFTER_SNAPSHOT) > 0);
        let state = tmp.path().join(format!("state-{k}"));
        let run_id = apply_and_kill_at(&l, &state, &snap, k);
        finish(&state, "resume", &run_id, k);
        assert_eq!(report_json(&state)["outcome"], "completed", "stage {k}");
        let after = l.wait_healthy();
        assert_ne!(after, before, "stage {k}: the restore makes a new cluster");
        assert_eq!(
            l.count(AFTER_SNAPSHOT),
            0,
            "stage {k}: keys written after the snapshot are gone"
        );
        assert_eq!(
            (
                l.count("/registry/configmaps/"),
                l.count("/registry/secrets/")
            ),
            in_snapshot,
            "stage {k}: every key of the snapshot is back"
        );
        assert_eq!(
            lock_files(&l),
            Vec::<PathBuf>::new(),
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
        l.seed_under(AFTER_SNAPSHOT, 50);
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
    let Setup { lab: l, tmp, snap } = Setup::for_loops();
    let before = baseline(&l);
    let mut timings = Vec::new();
    for k in STAGES {
        let t = Instant::now();
        let state = tmp.path().join(format!("state-{k}"));
        let run_id = apply_and_kill_at(&l, &state, &snap, k);
        let stderr = finish(&state, "rollback", &run_id, k);
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
