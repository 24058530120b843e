//! Guided mode, driven like a user would: the real binary in a pseudo-terminal (tmux), keys
//! typed into its prompts, against real lab clusters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::harness::*;

/// A lab of `nodes` nodes with 200 keys and a snapshot.
fn setup(nodes: usize) -> Setup {
    Setup::new(LabOptions::nodes(nodes).poll_ms(200), 200)
}

/// `apply -i INV --snapshot SNAP EXTRA...` in a terminal, in the setup's directory.
fn apply(s: &Setup, extra: &[&str]) -> Tty {
    s.cli()
        .apply(&s.lab.inventory)
        .snapshot(&s.snap)
        .args(extra)
        .in_terminal(s.tmp.path())
}

/// What must stay as it is when a run is declined: the manifests and the cluster ID.
struct Untouched {
    manifests: BTreeMap<String, String>,
    cluster: String,
}

impl Untouched {
    fn record(s: &Setup) -> Untouched {
        Untouched {
            manifests: s.lab.manifests(),
            cluster: s.lab.healthy_cluster_id(),
        }
    }

    /// Nothing was changed: manifests byte-identical, no run (local or on the nodes), no
    /// lock, the same cluster, healthy.
    fn assert_still(&self, s: &Setup) {
        assert_eq!(s.lab.manifests(), self.manifests, "manifests changed");
        let runs = s.state().join("runs");
        let local: Vec<_> = std::fs::read_dir(&runs)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(local.is_empty(), "local runs left: {local:?}");
        for i in 1..=s.lab.nodes {
            let run_dir = s.lab.node_dir(i).join("var/lib/etcd-recover");
            for e in std::fs::read_dir(&run_dir).unwrap() {
                let p = e.unwrap().path();
                assert!(
                    !p.to_string_lossy().ends_with(".lock"),
                    "lock left: {}",
                    p.display()
                );
                if p.is_dir() {
                    let inside: Vec<_> = walk(&p);
                    assert!(inside.is_empty(), "run files left on cp-{i}: {inside:?}");
                }
            }
        }
        assert_eq!(
            s.lab.healthy_cluster_id(),
            self.cluster,
            "the cluster changed"
        );
    }
}

/// A declined run ends within `secs` with `code` and `message`, leaves the terminal clean
/// and changes nothing.
fn assert_declined(s: &Setup, before: &Untouched, t: &Tty, code: i32, message: &str, secs: u64) {
    let screen = t.expect_exit(code, secs);
    assert!(screen.contains(message), "{screen}");
    t.assert_clean();
    before.assert_still(s);
}

/// Answers the consent to the lab's warnings (a healthy cluster, no revision bump) and types
/// `name` as the cluster name.
fn confirm(t: &Tty, name: &str) {
    t.wait_for("Proceed despite the", 120);
    t.keys(&["y"]);
    t.wait_for("Type the cluster name (lab) to continue", 30);
    t.type_text(name);
    t.keys(&["Enter"]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Asserts no spinner glyph is left on the screen.
fn assert_no_spinner(screen: &str) {
    assert!(
        !screen
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "a spinner was left: {screen}"
    );
}

#[test]
fn wrong_cluster_name_aborts_and_changes_nothing() {
    let s = setup(1);
    let before = Untouched::record(&s);
    let t = apply(&s, &[]);
    let screen = t.wait_for("Proceed despite the", 120);
    // The summary comes first: nodes, snapshot SHA-256 and revision, what stops, the diff.
    let sha = hex::encode(sha256_file(&s.snap));
    assert!(screen.contains(&format!("sha256 {sha}")), "{screen}");
    assert!(screen.contains(", revision "), "{screen}");
    assert!(
        screen.contains("stops      kube-apiserver, kube-controller-manager, kube-scheduler, etcd on every node"),
        "{screen}"
    );
    assert!(
        screen.contains("+      path: "),
        "the etcd.yaml diff: {screen}"
    );
    confirm(&t, "prod");
    let message = "error: not confirmed: nothing was changed";
    assert_declined(&s, &before, &t, 7, message, 60);
}

#[test]
fn ctrl_c_at_a_prompt_leaves_the_terminal_clean_and_changes_nothing() {
    let s = setup(1);
    let before = Untouched::record(&s);
    let t = apply(&s, &[]);
    // A yes/no prompt hides the cursor and puts the terminal in raw mode while it waits.
    t.wait_for("Proceed despite the", 120);
    assert!(!t.cursor_visible(), "the prompt hides the cursor");
    t.keys(&["C-c"]);
    assert_declined(&s, &before, &t, 130, "interrupted: nothing was changed", 30);
}

#[test]
fn the_right_name_restores_with_live_progress() {
    let s = setup(3);
    let old = s.lab.healthy_cluster_id();
    let t = apply(&s, &[]);
    confirm(&t, "lab");
    let screen = t.expect_exit(0, 300);
    assert!(screen.contains("restore of lab complete"), "{screen}");
    let new = s.lab.healthy_cluster_id();
    assert_ne!(new, old);

    // Live progress as it stays on the terminal: a header per stage, then one final line per
    // node and step with a tick, then the stage's summary with its wall time.
    let report = report_json(&s.state());
    let lines: Vec<&str> = screen.lines().collect();
    for (i, stage) in report["stages"].as_array().unwrap().iter().enumerate() {
        let name = stage[0].as_str().unwrap();
        let header = format!("Stage {}/12: {name}", i + 1);
        let start = lines
            .iter()
            .position(|l| l.trim_end() == header)
            .unwrap_or_else(|| panic!("no {header:?} in:\n{screen}"));
        let end = lines[start..]
            .iter()
            .position(|l| l.starts_with(&format!("  \u{2500}\u{2500} {name}: ")))
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("no summary of {name} in:\n{screen}"));
        assert!(
            lines[end].contains(" in ") && lines[end].trim_end().ends_with(" s"),
            "{}",
            lines[end]
        );
        let body = &lines[start + 1..end];
        let mut expected = 0;
        for step in stage[1].as_array().unwrap() {
            let (id, node) = (
                step["step"].as_str().unwrap(),
                step["node"].as_str().unwrap(),
            );
            if step["outcome"] == "skipped" {
                continue;
            }
            expected += 1;
            let n = body
                .iter()
                .filter(|l| {
                    l.starts_with(&format!("  \u{2714} {node:<8} {id}  "))
                        && (l.contains("done in ") || l.contains("already done"))
                })
                .count();
            assert_eq!(n, 1, "{node} {id} under {header}:\n{}", body.join("\n"));
        }
        assert_eq!(
            body.len(),
            expected,
            "stray lines under {header}:\n{}",
            body.join("\n")
        );
    }
    assert_no_spinner(&screen);
    t.assert_clean();
}

#[test]
fn step_pause_then_resume_completes() {
    let s = setup(1);
    let t = apply(&s, &["--step"]);
    confirm(&t, "lab");
    for stage in ["preflight", "stage-snapshot", "stop-apiserver"] {
        t.wait_for(&format!("Next stage: {stage}"), 120);
        t.keys(&["Enter"]);
    }
    t.wait_for("Next stage: stop-etcd", 120);
    // "show details" prints the stage's actions and asks again.
    t.keys(&["Down", "Enter"]);
    t.wait_for("step stop-etcd/1 (stop etcd by moving", 10);
    t.wait_for_nth("Next stage: stop-etcd", 2, 10);
    t.keys(&["Down", "Down", "Enter"]);
    let screen = t.expect_exit(6, 60);
    assert!(screen.contains("paused before stop-etcd/1"), "{screen}");
    t.assert_clean();
    // Paused where asked: the apiserver is stopped, etcd is not.
    let m = s.lab.manifests_dir(1);
    assert!(!m.join("kube-apiserver.yaml").exists());
    assert!(m.join("etcd.yaml").exists());

    let run = run_dir(&s.state());
    let run = run.file_name().unwrap().to_str().unwrap();
    s.cli()
        .resume(run)
        .yes()
        .output("plain")
        .run()
        .success()
        .stderr_contains(&format!("restore of lab complete: run {run}"))
        // Stages done before the pause are not done again.
        .stderr_contains("cp-1 stop-apiserver/1 already done");
    s.lab.healthy_cluster_id();
    let etcd = std::fs::read_to_string(m.join("etcd.yaml")).unwrap();
    assert!(
        etcd.contains(&format!("var/lib/etcd-restored-{run}")),
        "{etcd}"
    );
    assert!(m.join("kube-apiserver.yaml").exists());
}

#[test]
fn a_failed_step_offers_rollback_and_rollback_restores_the_cluster() {
    let s = setup(3);
    let before = s.lab.manifests();
    let old = s.lab.healthy_cluster_id();
    // The built-in playbook with a site check that fails after etcd was restored and started.
    let playbook = builtin_playbook().replace(
        "  - name: start-apiserver\n",
        "  - name: site-check\n    steps:\n      - type: command\n        name: site-check\n        run: [\"sh\", \"-c\", \"echo 'site check: quota service unreachable' >&2; exit 3\"]\n\n  - name: start-apiserver\n",
    );
    assert!(playbook.contains("site-check"));
    let pb = s.tmp.path().join("failing.yaml");
    std::fs::write(&pb, playbook).unwrap();
    let t = apply(&s, &["--playbook", pb.to_str().unwrap()]);
    confirm(&t, "lab");
    let screen = t.wait_for("What now?", 300);
    for i in 1..=3 {
        assert!(
            screen.contains(&format!("FAILED: site-check/1 on cp-{i}:")),
            "{screen}"
        );
    }
    assert!(
        screen.contains("site check: quota service unreachable"),
        "the remote stderr: {screen}"
    );
    assert!(
        screen.contains("roll back every completed step on every node"),
        "{screen}"
    );
    assert!(screen.contains("retry the failed step"), "{screen}");
    // The failed stage is summed up before the question.
    assert!(
        screen.contains("\u{2500}\u{2500} site-check: FAILED on cp-1, cp-2, cp-3 after "),
        "{screen}"
    );
    t.keys(&["Enter"]);
    let screen = t.expect_exit(5, 300);
    assert!(
        screen.contains("was rolled back: the cluster is as it was before"),
        "{screen}"
    );
    // One line per node and undone step, none left spinning.
    assert!(
        screen.contains("Rolling back every completed step on every node, newest first"),
        "{screen}"
    );
    for i in 1..=3 {
        for step in [
            "site-check/1",
            "start-etcd/1",
            "rewrite-manifest/1",
            "restore/1",
            "stop-etcd/1",
            "stop-apiserver/1",
            "stage-snapshot/1",
            "preflight/1",
        ] {
            let line = format!("  \u{21a9} cp-{i}     {step}  rolled back");
            assert_eq!(
                screen.lines().filter(|l| l.trim_end() == line).count(),
                1,
                "{line:?} in:\n{screen}"
            );
        }
    }
    assert_no_spinner(&screen);
    t.assert_clean();
    assert_eq!(
        s.lab.manifests(),
        before,
        "manifests are byte-identical again"
    );
    assert_eq!(s.lab.wait_healthy(), old, "the old cluster is back");
}

#[test]
fn guide_picks_verifies_plans_and_restores() {
    let s = setup(1);
    let old = s.lab.healthy_cluster_id();
    // An older damaged candidate next to the good snapshot.
    let broken = write_file(s.tmp.path(), "broken.db", vec![7u8; 64 * 1024]);
    let old_time = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&broken)
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    let t = s
        .cli()
        .arg("guide")
        .arg("-i")
        .arg(&s.lab.inventory)
        .in_terminal(s.tmp.path());
    let screen = t.wait_for("Snapshot to restore (*.db here, newest first)", 120);
    assert!(screen.contains("cp-1 reachable over SSH"), "{screen}");
    assert!(screen.contains("snap.db  ("), "{screen}");
    assert!(screen.contains("broken.db  ("), "{screen}");
    // The damaged one is refused with its verdict.
    t.keys(&["Down", "Enter"]);
    let screen = t.wait_for("This snapshot cannot be restored", 60);
    assert!(screen.contains("REFUSED"), "{screen}");
    t.keys(&["Enter"]);
    t.wait_for_nth("Snapshot to restore (*.db here, newest first)", 2, 10);
    // A typed path is validated before it is taken.
    t.keys(&["Down", "Down", "Enter"]);
    t.wait_for("Path of the snapshot file", 10);
    t.type_text("/nonexistent/snap.db");
    t.keys(&["Enter"]);
    // The error replaces the answer and the same prompt asks again.
    t.wait_for("/nonexistent/snap.db: No such file or directory", 10);
    t.type_text(s.snap.to_str().unwrap());
    t.keys(&["Enter"]);
    let screen = t.wait_for("go on to the confirmation", 120);
    assert!(screen.contains("valid etcd snapshot"), "{screen}");
    assert!(screen.contains("Restore plan for cluster lab"), "{screen}");
    assert!(screen.contains("+      path: "), "the diff: {screen}");
    t.keys(&["Enter"]);
    confirm(&t, "lab");
    let screen = t.expect_exit(0, 300);
    assert!(screen.contains("Step 4/4: restore"), "{screen}");
    assert!(screen.contains("restore of lab complete"), "{screen}");
    assert_ne!(s.lab.healthy_cluster_id(), old);
    let report = report_json(&s.state());
    assert_eq!(report["outcome"], "completed");
    assert_eq!(
        report["snapshot"]["path"].as_str().unwrap(),
        s.snap.to_str().unwrap()
    );
    t.assert_clean();
}

#[test]
fn apply_alone_on_a_terminal_is_the_guide() {
    let tmp = tempfile::tempdir().unwrap();
    let t = etcd_recover()
        .state(&tmp.path().join("state"))
        .arg("apply")
        .in_terminal(tmp.path());
    t.wait_for("Step 1/4: inventory", 30);
    t.wait_for("Inventory file", 30);
    t.type_text("missing.yaml");
    t.keys(&["Enter"]);
    t.wait_for("missing.yaml: No such file or directory", 10);
    t.keys(&["C-c"]);
    let screen = t.expect_exit(130, 30);
    assert!(
        screen.contains("interrupted: nothing was changed"),
        "{screen}"
    );
    t.assert_clean();
    assert!(!tmp.path().join("state").exists());
}
