//! Engine tests on local "nodes" (directories of this machine, real commands, no SSH).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::localhost::Localhost;
use crate::plan::{Actions, Fingerprints, NodeSummary, RestoreParams, SnapshotSummary, StagePlan};
use crate::probe::HttpProbe;

struct Healthy;

#[async_trait]
impl ClusterChecks for Healthy {
    async fn etcd_health(&self, _: &Plan) -> Result<String, String> {
        Ok("ok".into())
    }
    async fn apiserver_ready(&self, _: &str, _: &HttpProbe) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::StepDone {
                step,
                node,
                skipped,
                ..
            } => {
                format!("done {step} {} {skipped}", node.as_deref().unwrap_or("-"))
            }
            Event::StepFailed { step, node, .. } => {
                format!("failed {step} {}", node.as_deref().unwrap_or("-"))
            }
            Event::RolledBack { step, node } => {
                format!("rolledback {step} {}", node.as_deref().unwrap_or("-"))
            }
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: String,
    nodes: Vec<String>,
}

const ORIGINAL: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n# keep me\nspec:\n  volumes:\n  - hostPath:\n      path: /var/lib/etcd\n    name: etcd-data\n";

impl Fixture {
    fn new(n: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_str().unwrap().to_string();
        let nodes: Vec<String> = (1..=n).map(|i| format!("cp-{i}")).collect();
        for node in &nodes {
            std::fs::create_dir_all(format!("{root}/{node}/manifests")).unwrap();
            std::fs::write(format!("{root}/{node}/manifests/etcd.yaml"), ORIGINAL).unwrap();
            std::fs::write(
                format!("{root}/{node}/manifests/kube-apiserver.yaml"),
                "kind: Pod\n",
            )
            .unwrap();
        }
        Fixture {
            _tmp: tmp,
            root,
            nodes,
        }
    }

    fn sha(s: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    }

    /// A plan shaped like the real one: lock, move out, rewrite, a command, move in, unlock.
    fn plan(&self, command: &[&str]) -> Plan {
        let after = ORIGINAL.replace("path: /var/lib/etcd\n", "path: /var/lib/etcd-restored-r1\n");
        let per_node = |f: &dyn Fn(&str, &str) -> Actions| -> Scope {
            Scope::Nodes(
                self.nodes
                    .iter()
                    .map(|n| (n.clone(), f(n, &format!("{}/{n}", self.root))))
                    .collect(),
            )
        };
        let step = |id: &str, scope: Scope| StepPlan {
            id: id.into(),
            kind: "test".into(),
            title: id.into(),
            destructive: true,
            order: crate::plan::StepOrder::Parallel,
            scope,
        };
        let stages = vec![
            StagePlan {
                name: "preflight".into(),
                steps: vec![step(
                    "preflight/1",
                    per_node(&|_, d| Actions {
                        actions: vec![
                            Action::MakeDir {
                                path: format!("{d}/run/manifests"),
                                mode: 0o700,
                            },
                            Action::AcquireLock {
                                path: format!("{d}/lock"),
                            },
                            Action::SaveRunState {
                                dir: format!("{d}/run"),
                            },
                        ],
                        rollback: vec![Action::ReleaseLock {
                            path: format!("{d}/lock"),
                        }],
                    }),
                )],
            },
            StagePlan {
                name: "stop-etcd".into(),
                steps: vec![step(
                    "stop-etcd/1",
                    per_node(&|_, d| Actions {
                        actions: vec![
                            Action::CopyFile {
                                from: format!("{d}/manifests/etcd.yaml"),
                                to: format!("{d}/run/etcd.yaml.orig"),
                            },
                            Action::MoveFile {
                                from: format!("{d}/manifests/etcd.yaml"),
                                to: format!("{d}/run/manifests/etcd.yaml"),
                            },
                            Action::WaitStopped {
                                pod: "etcd".into(),
                                endpoints: vec![],
                                dirs: vec![format!("{d}/data")],
                                timeout: 5,
                            },
                        ],
                        rollback: vec![Action::MoveFile {
                            from: format!("{d}/run/manifests/etcd.yaml"),
                            to: format!("{d}/manifests/etcd.yaml"),
                        }],
                    }),
                )],
            },
            StagePlan {
                name: "rewrite".into(),
                steps: vec![step(
                    "rewrite/1",
                    per_node(&|_, d| Actions {
                        actions: vec![Action::WriteFile {
                            path: format!("{d}/run/manifests/etcd.yaml"),
                            before_sha256: Self::sha(ORIGINAL),
                            after_sha256: Self::sha(&after),
                            content: after.clone(),
                            diff: String::new(),
                            temp_dir: format!("{d}/run"),
                        }],
                        rollback: vec![Action::WriteFile {
                            path: format!("{d}/run/manifests/etcd.yaml"),
                            before_sha256: Self::sha(&after),
                            after_sha256: Self::sha(ORIGINAL),
                            content: ORIGINAL.into(),
                            diff: String::new(),
                            temp_dir: format!("{d}/run"),
                        }],
                    }),
                )],
            },
            StagePlan {
                name: "custom".into(),
                steps: vec![step(
                    "custom/1",
                    per_node(&|n, _| Actions {
                        actions: vec![Action::Run {
                            argv: command.iter().map(|s| s.replace("NODE", n)).collect(),
                            timeout: 10,
                        }],
                        rollback: vec![],
                    }),
                )],
            },
            StagePlan {
                name: "start-etcd".into(),
                steps: vec![
                    step(
                        "start-etcd/1",
                        per_node(&|_, d| Actions {
                            actions: vec![Action::MoveFile {
                                from: format!("{d}/run/manifests/etcd.yaml"),
                                to: format!("{d}/manifests/etcd.yaml"),
                            }],
                            rollback: vec![Action::MoveFile {
                                from: format!("{d}/manifests/etcd.yaml"),
                                to: format!("{d}/run/manifests/etcd.yaml"),
                            }],
                        }),
                    ),
                    step(
                        "start-etcd/2",
                        Scope::Cluster(Actions {
                            actions: vec![Action::Step(
                                crate::action::StepAction::WaitEtcdHealthy(
                                    crate::action::WaitEtcdHealthy { timeout: 5 },
                                ),
                            )],
                            rollback: vec![],
                        }),
                    ),
                ],
            },
            StagePlan {
                name: "finish".into(),
                steps: vec![step(
                    "finish/1",
                    per_node(&|_, d| Actions {
                        actions: vec![Action::ReleaseLock {
                            path: format!("{d}/lock"),
                        }],
                        rollback: vec![],
                    }),
                )],
            },
        ];
        Plan {
            format_version: crate::plan::FORMAT_VERSION,
            tool_version: "test".into(),
            run_id: "r1".into(),
            created_at: "now".into(),
            cluster: "test".into(),
            inventory: "inventory.yaml".into(),
            playbook: "test".into(),
            fingerprints: Fingerprints {
                inventory_sha256: String::new(),
                snapshot_sha256: String::new(),
                playbook_sha256: String::new(),
                manifests: BTreeMap::new(),
            },
            snapshot: SnapshotSummary {
                path: String::new(),
                size: 0,
                sha256: String::new(),
                revision: None,
                total_keys: None,
                verdict: String::new(),
            },
            restore: RestoreParams {
                initial_cluster: String::new(),
                token: String::new(),
                bump_revision: None,
                members: vec![],
                cluster_id: String::new(),
            },
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeSummary {
                    name: n.clone(),
                    host: "local".into(),
                    etcd_version: None,
                    restore_tool: String::new(),
                    restore_tool_version: String::new(),
                    manifests_dir: format!("{}/{n}/manifests", self.root),
                    data_dir_old: String::new(),
                    data_dir_new: String::new(),
                    run_dir: format!("{}/{n}/run", self.root),
                    client_endpoint: String::new(),
                    client_tls: None,
                })
                .collect(),
            findings: vec![],
            stages,
        }
    }

    fn engine(&self, plan: Plan, obs: Arc<Recorder>) -> Engine {
        self.engine_with_snapshot(plan, obs, std::path::PathBuf::new())
    }

    /// An engine whose plan stages the local file `snapshot`.
    fn engine_with_snapshot(
        &self,
        plan: Plan,
        obs: Arc<Recorder>,
        snapshot: std::path::PathBuf,
    ) -> Engine {
        let nodes: BTreeMap<String, Arc<dyn Remote>> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Arc::new(Localhost::new(n.clone())) as Arc<dyn Remote>,
                )
            })
            .collect();
        Engine::new(Arc::new(plan), nodes, snapshot, Arc::new(Healthy), obs)
    }

    fn manifest(&self, node: &str) -> Option<String> {
        std::fs::read_to_string(format!("{}/{node}/manifests/etcd.yaml", self.root)).ok()
    }

    fn exists(&self, rel: &str) -> bool {
        std::path::Path::new(&format!("{}/{rel}", self.root)).exists()
    }
}

fn journal(plan: &Plan) -> (tempfile::TempDir, Mutex<Journal>) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::create(dir.path(), plan).unwrap();
    (dir, Mutex::new(j))
}

#[tokio::test]
async fn a_run_completes_and_every_step_is_journaled() {
    let fx = Fixture::new(3);
    let plan = fx.plan(&["true"]);
    let (_d, j) = journal(&plan);
    let obs = Arc::new(Recorder::default());
    let engine = fx.engine(plan.clone(), obs.clone());
    let out = engine.apply(&j, "apply", true).await.unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    for n in &fx.nodes {
        let m = fx.manifest(n).unwrap();
        assert!(m.contains("/var/lib/etcd-restored-r1"), "{m}");
        assert!(m.contains("# keep me"));
        assert!(fx.exists(&format!("{n}/run/etcd.yaml.orig")));
        assert!(!fx.exists(&format!("{n}/lock")), "lock released");
        assert!(fx.exists(&format!("{n}/run/plan.json")));
        assert!(fx.exists(&format!("{n}/run/state.json")));
    }
    // 6 node steps x 3 nodes + 1 cluster step.
    assert_eq!(j.lock().unwrap().done().len(), 6 * 3 - 3 + 3 + 1);
    assert_eq!(j.lock().unwrap().last_outcome(), Some("completed"));
}

#[tokio::test]
async fn a_failure_on_one_node_rolls_every_node_back_to_the_original_bytes() {
    let fx = Fixture::new(3);
    // The custom command fails on cp-2 only.
    let plan = fx.plan(&[
        "sh",
        "-c",
        "test NODE != cp-2 || { echo boom >&2; exit 7; }",
    ]);
    let (_d, j) = journal(&plan);
    let obs = Arc::new(Recorder::default());
    let out = fx
        .engine(plan, obs.clone())
        .apply(&j, "apply", true)
        .await
        .unwrap();
    let Outcome::RolledBack(failures) = out else {
        panic!("{out:?}")
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].node.as_deref(), Some("cp-2"));
    assert!(failures[0].error.contains("boom"), "{}", failures[0].error);
    for n in &fx.nodes {
        assert_eq!(fx.manifest(n).as_deref(), Some(ORIGINAL), "{n}");
        assert!(!fx.exists(&format!("{n}/run/manifests/etcd.yaml")));
        assert!(!fx.exists(&format!("{n}/lock")));
    }
    let events = obs.0.lock().unwrap().clone();
    // No node went past the failed stage.
    assert!(
        !events.iter().any(|e| e.starts_with("done start-etcd")),
        "{events:?}"
    );
    assert_eq!(j.lock().unwrap().last_outcome(), Some("rolled-back"));
    assert!(j.lock().unwrap().touched().is_empty());
}

#[tokio::test]
async fn no_rollback_leaves_the_run_failed_and_a_later_rollback_restores() {
    let fx = Fixture::new(2);
    let plan = fx.plan(&["false"]);
    let (_d, j) = journal(&plan);
    let engine = fx.engine(plan, Arc::new(Recorder::default()));
    let out = engine.apply(&j, "apply", false).await.unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    assert!(
        fx.manifest("cp-1").is_none(),
        "etcd.yaml stays out while paused"
    );
    let out = engine.rollback(&j, "user asked").await.unwrap();
    assert!(matches!(out, Outcome::RolledBack(_)), "{out:?}");
    assert_eq!(fx.manifest("cp-1").as_deref(), Some(ORIGINAL));
    assert_eq!(fx.manifest("cp-2").as_deref(), Some(ORIGINAL));
}

#[tokio::test]
async fn cancel_pauses_at_a_boundary_and_resume_skips_done_steps() {
    let fx = Fixture::new(2);
    let plan = fx.plan(&["true"]);
    let (_d, j) = journal(&plan);
    let cancel = Cancel::default();
    let c2 = cancel.clone();
    let engine = fx
        .engine(plan.clone(), Arc::new(Recorder::default()))
        .cancel(cancel)
        .gate(move |stage| {
            if stage == "rewrite" {
                c2.request();
            }
            Gate::Continue
        });
    let out = engine.apply(&j, "apply", true).await.unwrap();
    let Outcome::Paused { next_step } = out else {
        panic!("{out:?}")
    };
    assert_eq!(next_step, "rewrite/1");
    // A fresh engine (a new process) resumes from the journal.
    let obs = Arc::new(Recorder::default());
    let out = fx
        .engine(plan, obs.clone())
        .apply(&j, "resume", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    let events = obs.0.lock().unwrap().clone();
    assert!(
        events.contains(&"done stop-etcd/1 cp-1 true".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"done rewrite/1 cp-1 false".to_string()),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_step_interrupted_midway_is_completed_by_probing_each_action() {
    let fx = Fixture::new(1);
    let plan = fx.plan(&["true"]);
    let (_d, j) = journal(&plan);
    // Simulate a crash after the move inside stop-etcd: journal says started, files say moved.
    fx.engine(plan.clone(), Arc::new(Recorder::default()))
        .gate(|s| {
            if s == "stop-etcd" {
                Gate::Pause
            } else {
                Gate::Continue
            }
        })
        .apply(&j, "apply", true)
        .await
        .unwrap();
    let d = format!("{}/cp-1", fx.root);
    std::fs::copy(
        format!("{d}/manifests/etcd.yaml"),
        format!("{d}/run/etcd.yaml.orig"),
    )
    .unwrap();
    std::fs::rename(
        format!("{d}/manifests/etcd.yaml"),
        format!("{d}/run/manifests/etcd.yaml"),
    )
    .unwrap();
    j.lock()
        .unwrap()
        .record(Record::StepStarted {
            step: "stop-etcd/1".into(),
            node: Some("cp-1".into()),
        })
        .unwrap();
    let out = fx
        .engine(plan, Arc::new(Recorder::default()))
        .apply(&j, "resume", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    assert!(fx.manifest("cp-1").unwrap().contains("etcd-restored-r1"));
}

#[tokio::test]
async fn a_second_run_is_refused_by_the_lock_and_names_the_owner() {
    let fx = Fixture::new(1);
    let plan = fx.plan(&["true"]);
    let d = format!("{}/cp-1", fx.root);
    std::fs::write(
        format!("{d}/lock"),
        "{\"run_id\":\"other\",\"operator\":\"alice@ws\",\"since\":\"2026-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let (_d, j) = journal(&plan);
    let out = fx
        .engine(plan, Arc::new(Recorder::default()))
        .apply(&j, "apply", true)
        .await
        .unwrap();
    let Outcome::RolledBack(f) = out else {
        panic!("{out:?}")
    };
    assert!(f[0].error.contains("alice@ws"), "{}", f[0].error);
    assert!(f[0].error.contains("run other"), "{}", f[0].error);
    // The other run's lock is left alone and nothing moved.
    assert!(fx.exists("cp-1/lock"));
    assert_eq!(fx.manifest("cp-1").as_deref(), Some(ORIGINAL));
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let fx = Fixture::new(2);
    let plan = fx.plan(&["touch", "/nonexistent/should-not-run"]);
    let (_d, j) = journal(&plan);
    let out = fx
        .engine(plan, Arc::new(Recorder::default()))
        .mode(Mode::DryRun)
        .apply(&j, "apply", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    for n in &fx.nodes {
        assert_eq!(fx.manifest(n).as_deref(), Some(ORIGINAL));
        assert!(!fx.exists(&format!("{n}/run")));
    }
}

#[tokio::test]
async fn the_report_shows_every_node_step_with_its_outcome() {
    let fx = Fixture::new(2);
    let plan = fx.plan(&[
        "sh",
        "-c",
        "test NODE != cp-2 || { echo 'disk on fire' >&2; exit 3; }",
    ]);
    let (_d, j) = journal(&plan);
    fx.engine(plan.clone(), Arc::new(Recorder::default()))
        .apply(&j, "apply", true)
        .await
        .unwrap();
    let j = j.lock().unwrap();
    let report = crate::report::build(&plan, j.entries(), &[]);
    assert_eq!(report.outcome, "rolled-back");
    let steps: Vec<_> = report.stages.iter().flat_map(|(_, s)| s.iter()).collect();
    let failed = steps
        .iter()
        .find(|s| s.outcome == "failed, rolled back")
        .unwrap();
    assert_eq!(
        (failed.step.as_str(), failed.node.as_str()),
        ("custom/1", "cp-2")
    );
    assert!(failed.error.as_deref().unwrap().contains("disk on fire"));
    assert!(steps
        .iter()
        .any(|s| s.step == "stop-etcd/1" && s.outcome == "rolled-back"));
    assert!(steps
        .iter()
        .any(|s| s.step == "finish/1" && s.outcome == "not-run"));
    let md = report.markdown();
    assert!(md.contains("Outcome: **rolled-back**"), "{md}");
    let (md_path, json_path) = report.write(j.dir()).unwrap();
    assert!(md_path.exists() && json_path.exists());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    assert_eq!(v["run_id"], "r1");
}

#[tokio::test]
async fn a_failed_step_can_be_retried_once_its_cause_is_fixed() {
    let fx = Fixture::new(2);
    let flag = format!("{}/fixed", fx.root);
    let plan = fx.plan(&["test", "-e", &flag]);
    let (_d, j) = journal(&plan);
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a2 = asked.clone();
    let flag2 = flag.clone();
    let engine = fx
        .engine(plan, Arc::new(Recorder::default()))
        .on_failure(move |f| {
            assert_eq!(f[0].step, "custom/1");
            a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::fs::write(&flag2, "").unwrap();
            OnFailure::Retry
        });
    let out = engine.apply(&j, "apply", true).await.unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pausing_after_a_failure_keeps_the_run_resumable() {
    let fx = Fixture::new(1);
    let flag = format!("{}/fixed", fx.root);
    let plan = fx.plan(&["test", "-e", &flag]);
    let (_d, j) = journal(&plan);
    let out = fx
        .engine(plan.clone(), Arc::new(Recorder::default()))
        .on_failure(|_| OnFailure::Pause)
        .apply(&j, "apply", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    assert!(fx.manifest("cp-1").is_none(), "nothing was rolled back");
    std::fs::write(&flag, "").unwrap();
    let out = fx
        .engine(plan, Arc::new(Recorder::default()))
        .apply(&j, "resume", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
}

#[tokio::test]
async fn a_node_whose_rollback_fails_is_left_alone_while_the_others_are_rolled_back() {
    let fx = Fixture::new(3);
    let plan = fx.plan(&["sh", "-c", "test NODE != cp-2"]);
    let (_d, j) = journal(&plan);
    let engine = fx.engine(plan, Arc::new(Recorder::default()));
    let out = engine.apply(&j, "apply", false).await.unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    // Someone edits cp-2's moved-aside etcd.yaml: undoing the rewrite there must refuse.
    let aside = format!("{}/cp-2/run/manifests/etcd.yaml", fx.root);
    let rewritten = std::fs::read_to_string(&aside).unwrap();
    std::fs::write(&aside, "edited by hand\n").unwrap();

    let out = engine.rollback(&j, "user asked").await.unwrap();
    let Outcome::RollbackFailed { rollback, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(rollback.len(), 1, "{rollback:?}");
    assert_eq!(rollback[0].node.as_deref(), Some("cp-2"));
    assert_eq!(rollback[0].step, "rewrite/1");
    // The other nodes are rolled back completely, cp-2 is left as it was.
    for n in ["cp-1", "cp-3"] {
        assert_eq!(fx.manifest(n).as_deref(), Some(ORIGINAL), "{n}");
        assert!(!fx.exists(&format!("{n}/lock")), "{n} lock released");
    }
    assert!(
        fx.manifest("cp-2").is_none(),
        "cp-2's etcd.yaml stays aside"
    );
    assert!(fx.exists("cp-2/lock"), "cp-2 keeps its lock");
    let follow = engine.follow_ups().join("\n");
    assert!(
        follow.contains("cp-2: undoing rewrite/1 failed")
            && follow.contains("newest first: rewrite/1, stop-etcd/1, preflight/1")
            && follow.contains("Fully rolled back: cp-1, cp-3")
            && follow.contains("etcd-recover rollback r1"),
        "{follow}"
    );
    {
        let touched = j.lock().unwrap().touched();
        assert!(touched.iter().all(|(_, n)| n.as_deref() == Some("cp-2")));
        assert_eq!(touched.len(), 3, "{touched:?}");
    }

    // Once the cause is fixed, a second rollback undoes only what is left.
    std::fs::write(&aside, rewritten).unwrap();
    let out = engine.rollback(&j, "again").await.unwrap();
    assert!(matches!(out, Outcome::RolledBack(_)), "{out:?}");
    for n in &fx.nodes {
        assert_eq!(fx.manifest(n).as_deref(), Some(ORIGINAL), "{n}");
        assert!(!fx.exists(&format!("{n}/lock")));
    }
    assert!(j.lock().unwrap().touched().is_empty());
}

/// Knows which node leads, and records the order in which steps start and end.
#[derive(Default)]
struct LeaderOn(Mutex<Vec<String>>);

#[async_trait]
impl ClusterChecks for LeaderOn {
    async fn etcd_health(&self, _: &Plan) -> Result<String, String> {
        Ok("ok".into())
    }
    async fn apiserver_ready(&self, _: &str, _: &HttpProbe) -> Result<(), String> {
        Ok(())
    }
    async fn etcd_leader(&self) -> Option<String> {
        Some("cp-2".into())
    }
}

impl Observer for LeaderOn {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::StepStarted {
                step,
                node: Some(n),
                ..
            } if step == "stop-etcd/1" => format!("start {n}"),
            Event::StepDone {
                step,
                node: Some(n),
                ..
            } if step == "stop-etcd/1" => format!("done {n}"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

fn leader_last_engine(fx: &Fixture, plan: Plan, checks: Arc<LeaderOn>) -> Engine {
    let nodes: BTreeMap<String, Arc<dyn Remote>> = fx
        .nodes
        .iter()
        .map(|n| {
            (
                n.clone(),
                Arc::new(Localhost::new(n.clone())) as Arc<dyn Remote>,
            )
        })
        .collect();
    Engine::new(
        Arc::new(plan),
        nodes,
        std::path::PathBuf::new(),
        checks.clone(),
        checks,
    )
}

fn with_leader_last(mut plan: Plan) -> Plan {
    for stage in &mut plan.stages {
        for step in &mut stage.steps {
            if step.id == "stop-etcd/1" {
                step.order = crate::plan::StepOrder::LeaderLast;
            }
        }
    }
    plan
}

#[tokio::test]
async fn the_etcd_leader_is_stopped_after_the_other_members() {
    let fx = Fixture::new(3);
    let plan = with_leader_last(fx.plan(&["true"]));
    let (_d, j) = journal(&plan);
    let checks = Arc::new(LeaderOn::default());
    let engine = leader_last_engine(&fx, plan, checks.clone());
    let out = engine.apply(&j, "apply", true).await.unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    let order = checks.0.lock().unwrap().clone();
    let at = |l: &str| order.iter().position(|o| o == l).unwrap();
    assert_eq!(order.len(), 6, "{order:?}");
    assert!(at("start cp-2") > at("done cp-1"), "{order:?}");
    assert!(at("start cp-2") > at("done cp-3"), "{order:?}");
    assert_eq!(order.last().map(String::as_str), Some("done cp-2"));
}

#[tokio::test]
async fn the_etcd_leader_is_not_stopped_when_another_member_failed_to_stop() {
    let fx = Fixture::new(3);
    let plan = with_leader_last(fx.plan(&["true"]));
    // cp-3's manifest cannot be copied aside: its stop fails.
    std::fs::remove_file(format!("{}/cp-3/manifests/etcd.yaml", fx.root)).unwrap();
    let (_d, j) = journal(&plan);
    let checks = Arc::new(LeaderOn::default());
    let engine = leader_last_engine(&fx, plan, checks.clone());
    let out = engine.apply(&j, "apply", true).await.unwrap();
    assert!(!matches!(out, Outcome::Completed), "{out:?}");
    let order = checks.0.lock().unwrap().clone();
    assert!(!order.iter().any(|o| o.ends_with("cp-2")), "{order:?}");
    assert_eq!(fx.manifest("cp-2").as_deref(), Some(ORIGINAL));
}

/// The plan with a `stage-snapshot` stage after preflight that uploads `snapshot` to every
/// node, expecting `sha256`; the engine reads the snapshot from `local`.
fn with_upload(fx: &Fixture, mut plan: Plan, sha256: &str, size: u64) -> Plan {
    let scope = Scope::Nodes(
        fx.nodes
            .iter()
            .map(|n| {
                let to = format!("{}/{n}/run/snapshot.db", fx.root);
                let actions = Actions {
                    actions: vec![Action::Upload {
                        to,
                        sha256: sha256.into(),
                        size,
                        mode: 0o600,
                    }],
                    // No rollback: what is left on a node is what the upload let through.
                    rollback: vec![],
                };
                (n.clone(), actions)
            })
            .collect(),
    );
    let stage = StagePlan {
        name: "stage-snapshot".into(),
        steps: vec![StepPlan {
            id: "stage-snapshot/1".into(),
            kind: "stage-snapshot".into(),
            title: "stage the snapshot".into(),
            destructive: false,
            order: crate::plan::StepOrder::Parallel,
            scope,
        }],
    };
    plan.stages.insert(1, stage);
    plan
}

#[tokio::test]
async fn the_snapshot_is_staged_only_if_it_is_still_the_one_that_was_verified() {
    let fx = Fixture::new(2);
    let snapshot = format!("{}/snapshot.db", fx.root);
    std::fs::write(&snapshot, b"the verified snapshot").unwrap();
    let verified = Fixture::sha("the verified snapshot");
    let engine_for = |plan: Plan| {
        fx.engine_with_snapshot(plan, Arc::default(), std::path::PathBuf::from(&snapshot))
    };

    // Unchanged: every node gets a byte-identical copy, mode 0600.
    let plan = with_upload(&fx, fx.plan(&["true"]), &verified, 21);
    let (_d, j) = journal(&plan);
    let out = engine_for(plan).apply(&j, "apply", true).await.unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    for n in &fx.nodes {
        let staged = format!("{}/{n}/run/snapshot.db", fx.root);
        assert_eq!(std::fs::read(&staged).unwrap(), b"the verified snapshot");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&staged).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&staged).unwrap();
    }

    // Changed after it was verified: the stage fails on every node, nothing is left staged,
    // and the run is rolled back before anything was stopped (the manifests stay as they are).
    std::fs::write(&snapshot, b"a different snapshot!").unwrap();
    let before: Vec<_> = fx.nodes.iter().map(|n| fx.manifest(n)).collect();
    let plan = with_upload(&fx, fx.plan(&["true"]), &verified, 21);
    let (_d, j) = journal(&plan);
    let out = engine_for(plan).apply(&j, "apply", true).await.unwrap();
    let Outcome::RolledBack(failures) = out else {
        panic!("{out:?}")
    };
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        assert!(f.error.contains(&verified), "{}", f.error);
    }
    for (n, before) in fx.nodes.iter().zip(before) {
        assert!(!fx.exists(&format!("{n}/run/snapshot.db")), "{n}");
        assert!(!fx.exists(&format!("{n}/run/snapshot.db.part")), "{n}");
        assert_eq!(fx.manifest(n), before, "{n}");
    }
}
