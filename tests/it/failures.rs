//! Failure paths end to end, on real lab clusters with the real binary: a step fails at every
//! point of the restore and the automatic rollback must leave the cluster exactly as it was;
//! SSH to a node is lost before or during a run.
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::harness::*;

/// `apply --snapshot SNAP --yes` on the lab with its own state directory.
fn apply(l: &Lab, state: &Path, snap: &Path) -> EtcdRecover {
    etcd_recover()
        .state(state)
        .apply(&l.inventory)
        .snapshot(snap)
        .yes()
}

/// A command step that fails on cp-2 only.
fn fail_on_cp2() -> serde_yaml::Value {
    command_step("fail-on-cp-2", &["sh", "-c", "test ${NODE} != cp-2"])
}

/// Where the failure is injected, and the step id that fails.
enum Inject {
    /// A stage of its own right after the named stage.
    AfterStage(&'static str),
    /// A step inside the named stage, after its first step.
    InsideStage(&'static str),
}

#[test]
fn a_failure_at_every_stage_rolls_back_to_exactly_the_cluster_before() {
    let t0 = Instant::now();
    let Setup { lab: l, tmp, snap } = Setup::for_loops();
    let before = baseline(&l);
    assert_eq!(before.after_snapshot, 150);

    let points = [
        Inject::AfterStage("stage-snapshot"),
        Inject::AfterStage("stop-apiserver"),
        Inject::AfterStage("stop-etcd"),
        Inject::AfterStage("restore"),
        Inject::AfterStage("rewrite-manifest"),
        Inject::AfterStage("start-etcd"),
        Inject::AfterStage("wait-etcd-healthy"),
        Inject::AfterStage("start-apiserver"),
        Inject::AfterStage("wait-apiserver-ready"),
        Inject::InsideStage("post-restore"),
        Inject::AfterStage("post-restore"),
        Inject::AfterStage("finish"),
    ];
    let mut timings = Vec::new();
    for (k, point) in points.iter().enumerate() {
        let started = Instant::now();
        let (file, failing_step, what) = match point {
            Inject::AfterStage(stage) => {
                let pb = playbook_with(tmp.path(), &format!("pb-{k}.yaml"), |stages| {
                    let i = stage_index(stages, stage);
                    stages.insert(
                        i + 1,
                        stage_of(&format!("fail-after-{stage}"), fail_on_cp2()),
                    );
                });
                (
                    pb,
                    format!("fail-after-{stage}/1"),
                    format!("failure after stage {stage}"),
                )
            }
            Inject::InsideStage(stage) => {
                let pb = playbook_with(tmp.path(), &format!("pb-{k}.yaml"), |stages| {
                    let i = stage_index(stages, stage);
                    let steps = stages[i]["steps"].as_sequence_mut().unwrap();
                    steps.insert(1, fail_on_cp2());
                });
                (
                    pb,
                    format!("{stage}/2"),
                    format!("failure inside stage {stage}"),
                )
            }
        };
        let state = tmp.path().join(format!("state-{k}"));
        apply(&l, &state, &snap)
            .playbook(&file)
            .output("plain")
            .run()
            .expect_exit(5)
            .stderr_contains(&format!(
                "failed at {failing_step} on cp-2 and was rolled back"
            ));
        let report = report_json(&state);
        assert_eq!(report["outcome"], "rolled-back", "{what}");
        assert_as_before(&l, &before, &what);
        timings.push(format!("{what}: {:.1}s", started.elapsed().as_secs_f64()));
    }
    eprintln!(
        "{} injected failures rolled back in {:.1}s:\n  {}",
        points.len(),
        t0.elapsed().as_secs_f64(),
        timings.join("\n  ")
    );
}

#[test]
fn lost_ssh_before_and_during_a_run() {
    let Setup { lab: l, tmp, snap } = Setup::for_loops();
    let before = baseline(&l);
    let lab_bin = lab_bin();
    let lab_bin = lab_bin.to_str().unwrap();
    let dir = l.dir.to_str().unwrap();
    let run_dirs = |l: &Lab| -> Vec<String> {
        (1..=l.nodes)
            .flat_map(|i| {
                std::fs::read_dir(l.node_dir(i).join("var/lib/etcd-recover/runs"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| format!("cp-{i}/{}", e.file_name().to_string_lossy()))
            })
            .collect()
    };

    // 1. sshd of cp-2 is down before apply: refused in preflight, naming the node; nothing on
    //    any node changes and no run directory or lock is created.
    let t = Instant::now();
    l.fault("cp-2", "stop-sshd");
    let state = tmp.path().join("state-before");
    let refused = apply(&l, &state, &snap)
        .output("plain")
        .run()
        .expect_exit(3)
        .stderr_contains("nothing was changed");
    let stderr = &refused.stderr;
    assert!(
        stderr.contains("cp-2") && stderr.contains("connection refused"),
        "the refusal names the node and why:\n{stderr}"
    );
    assert!(!stderr.contains("cp-1: cannot reach") && !stderr.contains("cp-3: cannot reach"));
    assert_eq!(run_dirs(&l), Vec::<String>::new(), "no run directories");
    assert_no_runs(&state);
    l.fault("cp-2", "start-sshd");
    assert_as_before(&l, &before, "sshd down before apply");
    eprintln!("sshd down before apply: {:.1}s", t.elapsed().as_secs_f64());

    // 2. Only the listener stops mid-run (as `systemctl stop sshd` does): the established
    //    session lives on, so the run goes on over it; a later failure rolls back over it too.
    let t = Instant::now();
    let pb = playbook_with(tmp.path(), "pb-listener.yaml", |stages| {
        let i = stage_index(stages, "stage-snapshot");
        stages.insert(
            i + 1,
            stage_of(
                "stop-cp-2-sshd-listener",
                command_step(
                    "stop-sshd-listener",
                    &["sh", "-c", &format!("test ${{NODE}} != cp-2 || {lab_bin} fault --dir {dir} --node cp-2 stop-sshd")],
                ),
            ),
        );
        let i = stage_index(stages, "start-etcd");
        stages.insert(i + 1, stage_of("fail-after-start-etcd", fail_on_cp2()));
    });
    let state = tmp.path().join("state-listener");
    apply(&l, &state, &snap)
        .playbook(&pb)
        .output("plain")
        .run()
        .expect_exit(5)
        .stderr_contains("failed at fail-after-start-etcd/1 on cp-2");
    assert!(
        std::net::TcpStream::connect((l.node_ip(2), 22)).is_err(),
        "cp-2's sshd listener was really stopped during the run"
    );
    l.fault("cp-2", "start-sshd");
    assert_as_before(&l, &before, "sshd listener stopped mid-run");
    eprintln!(
        "sshd listener stopped mid-run: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The connection itself breaks on cp-2 (sshd and its sessions killed) right after etcd was
    // stopped everywhere.
    let drop_pb = playbook_with(tmp.path(), "pb-drop.yaml", |stages| {
        let i = stage_index(stages, "stop-etcd");
        stages.insert(
            i + 1,
            stage_of(
                "cp-2-drops-off",
                command_step(
                    "drop-ssh",
                    &["sh", "-c", &format!("test ${{NODE}} != cp-2 || {{ {lab_bin} fault --dir {dir} --node cp-2 drop-ssh; sleep 5; }}")],
                ),
            ),
        );
    });
    let apply_drop = |state: &Path| {
        apply(&l, state, &snap)
            .playbook(&drop_pb)
            .output("json")
            .spawn()
    };
    let is_lost = |v: &Value| {
        v["event"] == "step-failed" && v["node"] == "cp-2" && v["step"] == "cp-2-drops-off/1"
    };

    // 3. The node comes back while the tool rolls back: it reconnects and the rollback completes.
    let t = Instant::now();
    let state = tmp.path().join("state-drop-back");
    let mut apply = apply_drop(&state);
    let failed = apply
        .until(is_lost)
        .unwrap_or_else(|| panic!("no step failure on cp-2:\n{}", apply.log()));
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("SSH connection") && error.contains("was lost") && error.contains("unknown"),
        "the failure says the connection was lost: {error}"
    );
    l.fault("cp-2", "start-sshd");
    let code = apply.finish();
    assert_eq!(
        code,
        Some(5),
        "rolled back after reconnecting:\n{}",
        apply.log()
    );
    assert_as_before(
        &l,
        &before,
        "connection lost, node back within the reconnect window",
    );
    eprintln!(
        "connection lost, node back: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // 4. The node stays away: the other nodes are rolled back, the run says exactly what is
    //    left on cp-2, and `rollback RUN` finishes once cp-2 is back.
    let t = Instant::now();
    let state = tmp.path().join("state-drop-gone");
    let mut apply = apply_drop(&state);
    apply
        .until(is_lost)
        .unwrap_or_else(|| panic!("no step failure on cp-2:\n{}", apply.log()));
    let code = apply.finish();
    let log = apply.log();
    assert_eq!(code, Some(1), "rollback incomplete:\n{log}");
    let run_id = apply.run_id().expect("run id");
    assert!(
        log.contains("cp-2: undoing")
            && log.contains("still to undo there, newest first: stop-etcd/1, stop-apiserver/1, stage-snapshot/1, preflight/1")
            && log.contains("Fully rolled back: cp-1, cp-3")
            && log.contains(&format!("etcd-recover rollback {run_id}")),
        "says what is left and how to finish:\n{log}"
    );
    assert!(log.contains("reconnection attempt(s) over"), "{log}");
    // cp-1 and cp-3 run the old cluster again (2 of 3 members: quorum); cp-2's etcd is still
    // stopped, its manifests still aside.
    for i in [1, 3] {
        for f in ["etcd.yaml", "kube-apiserver.yaml"] {
            let k = format!("cp-{i}/{f}");
            assert_eq!(
                l.manifests().get(&k),
                before.manifests.get(&k),
                "{k} restored"
            );
        }
    }
    assert!(
        !l.manifests_dir(2).join("etcd.yaml").exists(),
        "cp-2 untouched since the loss"
    );
    for i in [1, 3] {
        assert_eq!(
            l.count_on(i, AFTER_SNAPSHOT),
            150,
            "cp-{i} serves the old cluster (quorum of 2)"
        );
    }
    l.fault("cp-2", "start-sshd");
    etcd_recover()
        .state(&state)
        .rollback(&run_id)
        .yes()
        .output("plain")
        .run()
        .success();
    assert_as_before(&l, &before, "connection lost, node back only after the run");
    eprintln!(
        "connection lost, node gone, rollback later: {:.1}s",
        t.elapsed().as_secs_f64()
    );
}
