//! Engine tests on local "nodes" (directories of this machine, real commands, no SSH).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::facts::NodeFacts;
use crate::inventory;
use crate::localhost::Localhost;
use crate::plan::build::{PlanInputs, SnapshotInput, DEFAULT_BUMP};
use crate::playbook::Playbook;
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

/// etcd's manifest on every fixture node: `NODE` and `ROOT` are filled in. No listen URLs, so
/// stopping and starting wait for the data directory alone, not for ports of this machine.
const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
# keep me
spec:
  containers:
  - command:
    - etcd
    - --name=NODE
    - --data-dir=/var/lib/etcd
    - --initial-advertise-peer-urls=https://127.0.0.1:2380
    image: registry.k8s.io/etcd:3.5.1-0
    name: etcd
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  hostNetwork: true
  volumes:
  - hostPath:
      path: ROOT/NODE/var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
";

const APISERVER: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.30.0
    name: kube-apiserver
  hostNetwork: true
";

/// The engine tests' playbook, shaped like the real one around the steps that need no etcd:
/// lock, stop etcd, rewrite its manifest, a site command, start etcd and wait for it, unlock.
/// (The restore itself needs a real snapshot and etcd: the lab tests cover it.) Built without
/// the safety order check, which requires the restore.
fn playbook(command: &[&str], stage_snapshot: bool) -> Playbook {
    use crate::playbook::Stage;
    use crate::steps::{self, StepSpec};
    let stage = |name: &str, steps: Vec<StepSpec>| Stage {
        name: name.into(),
        steps,
    };
    let etcd = vec!["etcd".to_string()];
    let mut stages = vec![
        stage("preflight", vec![StepSpec::Preflight(steps::Preflight {})]),
        stage(
            "stop-etcd",
            vec![StepSpec::StopStaticPods(steps::StopStaticPods {
                pods: etcd.clone(),
                timeout: 5,
            })],
        ),
        stage(
            "rewrite",
            vec![StepSpec::RewriteManifest(steps::RewriteManifest {})],
        ),
        stage(
            "custom",
            vec![StepSpec::Command(steps::Command {
                name: "custom".into(),
                run: command
                    .iter()
                    .map(|s| s.replace("NODE", "${NODE}"))
                    .collect(),
                rollback: None,
                when: steps::When::Always,
                timeout: 10,
            })],
        ),
        stage(
            "start-etcd",
            vec![
                StepSpec::StartStaticPods(steps::StartStaticPods {
                    pods: etcd,
                    timeout: 5,
                }),
                StepSpec::WaitEtcdHealthy(steps::WaitEtcdHealthy { timeout: 5 }),
            ],
        ),
        stage("finish", vec![StepSpec::Finish(steps::Finish {})]),
    ];
    if stage_snapshot {
        stages.insert(
            1,
            stage(
                "stage-snapshot",
                vec![StepSpec::StageSnapshot(steps::StageSnapshot {})],
            ),
        );
    }
    Playbook {
        name: "engine-test".into(),
        description: String::new(),
        stages,
    }
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_str().unwrap().to_string();
        let nodes: Vec<String> = (1..=n).map(|i| format!("cp-{i}")).collect();
        for node in &nodes {
            std::fs::create_dir_all(format!("{root}/{node}/manifests")).unwrap();
            std::fs::create_dir_all(format!("{root}/{node}/var/lib/etcd")).unwrap();
            std::fs::write(
                format!("{root}/{node}/manifests/etcd.yaml"),
                Self::original(&root, node),
            )
            .unwrap();
            std::fs::write(
                format!("{root}/{node}/manifests/kube-apiserver.yaml"),
                APISERVER,
            )
            .unwrap();
        }
        Fixture {
            _tmp: tmp,
            root,
            nodes,
        }
    }

    /// etcd's manifest on `node` before the run.
    fn original(root: &str, node: &str) -> String {
        MANIFEST.replace("ROOT", root).replace("NODE", node)
    }

    fn sha(s: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    }

    fn remotes(&self) -> BTreeMap<String, Arc<dyn Remote>> {
        self.nodes
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Arc::new(Localhost::new(n.clone())) as Arc<dyn Remote>,
                )
            })
            .collect()
    }

    /// The facts of every fixture node, gathered as for a real plan (on this machine).
    async fn facts(&self) -> Vec<NodeFacts> {
        let nodes = self.nodes.iter().map(|n| inventory::Node {
            name: n.clone(),
            host: "127.0.0.1".into(),
            ssh: Default::default(),
            etcd: inventory::EtcdSettings {
                manifests_dir: inventory::ManifestsDir::Path(format!(
                    "{}/{n}/manifests",
                    self.root
                )),
                kubelet_config: format!("{}/{n}/kubelet.yaml", self.root),
                restore_tool: inventory::RestoreTool::Auto,
                run_dir: format!("{}/{n}/run", self.root),
            },
            commands: Default::default(),
            line: 1,
        });
        let remotes = self.remotes();
        let jobs = nodes.map(|n| {
            let remote = remotes[&n.name].clone();
            async move { crate::facts::node(&n, Some(remote.as_ref())).await }
        });
        futures::future::join_all(jobs).await
    }

    /// The plan `plan::build` makes for the fixture nodes, running `command` (with `NODE` for
    /// the node name) in the stage `custom`.
    async fn plan(&self, command: &[&str]) -> Plan {
        self.plan_with(playbook(command, false), ("", 0)).await
    }

    /// The plan for `playbook`, with a snapshot of this SHA-256 and size.
    async fn plan_with(&self, playbook: Playbook, snapshot: (&str, u64)) -> Plan {
        let facts = self.facts().await;
        let inputs = PlanInputs {
            run_id: "r1".into(),
            created_at: "now".into(),
            cluster: "test".into(),
            inventory: "inventory.yaml".into(),
            inventory_sha256: String::new(),
            playbook: &playbook,
            playbook_sha256: String::new(),
            snapshot: SnapshotInput {
                path: format!("{}/snapshot.db", self.root),
                size: snapshot.1,
                sha256: snapshot.0.into(),
                revision: None,
                total_keys: None,
                verdict: "test".into(),
                refused: None,
                skip_hash_check: false,
            },
            bump: DEFAULT_BUMP,
            admin_kubeconfig: "/etc/kubernetes/admin.conf".into(),
        };
        crate::plan::build::build(&inputs, &facts)
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
        Engine::new(
            Arc::new(plan),
            self.remotes(),
            snapshot,
            Arc::new(Healthy),
            obs,
        )
    }

    /// An engine that stages the fixture's `snapshot.db`.
    fn staging_engine(&self, plan: Plan) -> Engine {
        let snapshot = std::path::PathBuf::from(format!("{}/snapshot.db", self.root));
        self.engine_with_snapshot(plan, Arc::default(), snapshot)
    }

    /// etcd's manifest in `node`'s manifests directory, if it is there.
    fn manifest(&self, node: &str) -> Option<String> {
        std::fs::read_to_string(format!("{}/{node}/manifests/etcd.yaml", self.root)).ok()
    }

    /// etcd's manifest on `node` before the run.
    fn before(&self, node: &str) -> String {
        Self::original(&self.root, node)
    }

    /// The run's directory on `node`.
    fn run_dir(&self, node: &str) -> String {
        format!("{}/{node}/run/runs/r1/{node}", self.root)
    }

    /// The lock file of `node`.
    fn lock(&self, node: &str) -> String {
        format!("{}/{node}/run/{node}.lock", self.root)
    }

    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }
}

/// A gate that pauses the run before stage `stage`.
fn pause_at(stage: &'static str) -> impl Fn(&str) -> Gate + Send + Sync + 'static {
    move |s| {
        if s == stage {
            Gate::Pause
        } else {
            Gate::Continue
        }
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
    let plan = fx.plan(&["true"]).await;
    let (_d, j) = journal(&plan);
    let obs = Arc::new(Recorder::default());
    let engine = fx.engine(plan.clone(), obs.clone());
    let out = engine.apply(&j, "apply", true).await.unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    for n in &fx.nodes {
        let m = fx.manifest(n).unwrap();
        assert!(
            m.contains(&format!("{}/{n}/var/lib/etcd-restored-r1", fx.root)),
            "{m}"
        );
        assert!(m.contains("# keep me"));
        let run = fx.run_dir(n);
        assert_eq!(
            std::fs::read_to_string(format!("{run}/original/etcd.yaml")).unwrap(),
            fx.before(n)
        );
        assert!(!fx.exists(&fx.lock(n)), "lock released");
        assert!(fx.exists(&format!("{run}/plan.json")));
        assert!(fx.exists(&format!("{run}/state.json")));
    }
    // 6 node steps x 3 nodes + 1 cluster step.
    assert_eq!(j.lock().unwrap().done().len(), 6 * 3 + 1);
    assert_eq!(j.lock().unwrap().last_outcome(), Some("completed"));
}

#[tokio::test]
async fn a_failure_on_one_node_rolls_every_node_back_to_the_original_bytes() {
    let fx = Fixture::new(3);
    // The custom command fails on cp-2 only.
    let plan = fx
        .plan(&[
            "sh",
            "-c",
            "test NODE != cp-2 || { echo boom >&2; exit 7; }",
        ])
        .await;
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
        assert_eq!(fx.manifest(n), Some(fx.before(n)), "{n}");
        assert!(!fx.exists(&format!("{}/manifests/etcd.yaml", fx.run_dir(n))));
        assert!(!fx.exists(&fx.lock(n)));
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
    let plan = fx.plan(&["false"]).await;
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
    assert_eq!(fx.manifest("cp-1"), Some(fx.before("cp-1")));
    assert_eq!(fx.manifest("cp-2"), Some(fx.before("cp-2")));
}

#[tokio::test]
async fn cancel_pauses_at_a_boundary_and_resume_skips_done_steps() {
    let fx = Fixture::new(2);
    let plan = fx.plan(&["true"]).await;
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
    let plan = fx.plan(&["true"]).await;
    let (_d, j) = journal(&plan);
    // Simulate a crash after the move inside stop-etcd: journal says started, files say moved.
    fx.engine(plan.clone(), Arc::new(Recorder::default()))
        .gate(pause_at("stop-etcd"))
        .apply(&j, "apply", true)
        .await
        .unwrap();
    std::fs::rename(
        format!("{}/cp-1/manifests/etcd.yaml", fx.root),
        format!("{}/manifests/etcd.yaml", fx.run_dir("cp-1")),
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
    let plan = fx.plan(&["true"]).await;
    std::fs::create_dir_all(format!("{}/cp-1/run", fx.root)).unwrap();
    std::fs::write(
        fx.lock("cp-1"),
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
    assert!(fx.exists(&fx.lock("cp-1")));
    assert_eq!(fx.manifest("cp-1"), Some(fx.before("cp-1")));
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let fx = Fixture::new(2);
    let plan = fx.plan(&["touch", "/nonexistent/should-not-run"]).await;
    let (_d, j) = journal(&plan);
    let out = fx
        .engine(plan, Arc::new(Recorder::default()))
        .mode(Mode::DryRun)
        .apply(&j, "apply", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed), "{out:?}");
    for n in &fx.nodes {
        assert_eq!(fx.manifest(n), Some(fx.before(n)));
        assert!(!fx.exists(&format!("{}/{n}/run", fx.root)));
    }
}

#[tokio::test]
async fn the_report_shows_every_node_step_with_its_outcome() {
    let fx = Fixture::new(2);
    let plan = fx
        .plan(&[
            "sh",
            "-c",
            "test NODE != cp-2 || { echo 'disk on fire' >&2; exit 3; }",
        ])
        .await;
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
    let plan = fx.plan(&["test", "-e", &flag]).await;
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
    let plan = fx.plan(&["test", "-e", &flag]).await;
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
    let plan = fx.plan(&["sh", "-c", "test NODE != cp-2"]).await;
    let (_d, j) = journal(&plan);
    let engine = fx.engine(plan, Arc::new(Recorder::default()));
    let out = engine.apply(&j, "apply", false).await.unwrap();
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    // Someone edits cp-2's moved-aside etcd.yaml: undoing the rewrite there must refuse.
    let aside = format!("{}/manifests/etcd.yaml", fx.run_dir("cp-2"));
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
        assert_eq!(fx.manifest(n), Some(fx.before(n)), "{n}");
        assert!(!fx.exists(&fx.lock(n)), "{n} lock released");
    }
    assert!(
        fx.manifest("cp-2").is_none(),
        "cp-2's etcd.yaml stays aside"
    );
    assert!(fx.exists(&fx.lock("cp-2")), "cp-2 keeps its lock");
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
        assert_eq!(fx.manifest(n), Some(fx.before(n)), "{n}");
        assert!(!fx.exists(&fx.lock(n)));
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
    Engine::new(
        Arc::new(plan),
        fx.remotes(),
        std::path::PathBuf::new(),
        checks.clone(),
        checks,
    )
}

/// The order in which the plan stops etcd.
fn stop_etcd_order(plan: &Plan) -> StepOrder {
    let step = plan.stages.iter().flat_map(|s| s.steps.iter());
    step.filter(|s| s.id == "stop-etcd/1")
        .map(|s| s.order)
        .next()
        .unwrap()
}

#[tokio::test]
async fn the_etcd_leader_is_stopped_after_the_other_members() {
    let fx = Fixture::new(3);
    let plan = fx.plan(&["true"]).await;
    assert_eq!(stop_etcd_order(&plan), StepOrder::LeaderLast);
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
    let plan = fx.plan(&["true"]).await;
    assert_eq!(stop_etcd_order(&plan), StepOrder::LeaderLast);
    // cp-3's manifest cannot be moved aside: its stop fails.
    std::fs::remove_file(format!("{}/cp-3/manifests/etcd.yaml", fx.root)).unwrap();
    let (_d, j) = journal(&plan);
    let checks = Arc::new(LeaderOn::default());
    let engine = leader_last_engine(&fx, plan, checks.clone());
    let out = engine.apply(&j, "apply", true).await.unwrap();
    assert!(!matches!(out, Outcome::Completed), "{out:?}");
    let order = checks.0.lock().unwrap().clone();
    assert!(!order.iter().any(|o| o.ends_with("cp-2")), "{order:?}");
    assert_eq!(fx.manifest("cp-2"), Some(fx.before("cp-2")));
}

#[tokio::test]
async fn the_snapshot_is_staged_only_if_it_is_still_the_one_that_was_verified() {
    let verified = Fixture::sha("the verified snapshot");
    // Unchanged: every node gets a byte-identical copy, mode 0600 (seen before anything
    // else runs, since `finish` removes it).
    let fx = Fixture::new(2);
    std::fs::write(format!("{}/snapshot.db", fx.root), b"the verified snapshot").unwrap();
    let plan = fx
        .plan_with(playbook(&["true"], true), (&verified, 21))
        .await;
    let (_d, j) = journal(&plan);
    let out = fx
        .staging_engine(plan)
        .gate(pause_at("stop-etcd"))
        .apply(&j, "apply", true)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Paused { .. }), "{out:?}");
    for n in &fx.nodes {
        let staged = format!("{}/snapshot.db", fx.run_dir(n));
        assert_eq!(std::fs::read(&staged).unwrap(), b"the verified snapshot");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&staged).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Changed after it was verified: the stage fails on every node and leaves nothing staged
    // (seen before any rollback), and the rollback finds nothing stopped.
    let fx = Fixture::new(2);
    std::fs::write(format!("{}/snapshot.db", fx.root), b"a different snapshot!").unwrap();
    let plan = fx
        .plan_with(playbook(&["true"], true), (&verified, 21))
        .await;
    let (_d, j) = journal(&plan);
    let engine = fx.staging_engine(plan).on_failure(|_| OnFailure::Pause);
    let out = engine.apply(&j, "apply", true).await.unwrap();
    let Outcome::Failed(failures) = out else {
        panic!("{out:?}")
    };
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        assert_eq!(f.step, "stage-snapshot/1");
        assert!(f.error.contains(&verified), "{}", f.error);
    }
    for n in &fx.nodes {
        assert!(!fx.exists(&format!("{}/snapshot.db", fx.run_dir(n))), "{n}");
        assert!(
            !fx.exists(&format!("{}/snapshot.db.part", fx.run_dir(n))),
            "{n}"
        );
        assert_eq!(fx.manifest(n), Some(fx.before(n)), "{n}");
    }
    let out = engine.rollback(&j, "the snapshot changed").await.unwrap();
    assert!(matches!(out, Outcome::RolledBack(_)), "{out:?}");
    for n in &fx.nodes {
        assert_eq!(fx.manifest(n), Some(fx.before(n)), "{n}");
        assert!(!fx.exists(&fx.lock(n)), "{n}");
    }
}
