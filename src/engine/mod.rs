//! The engine: executes a [`Plan`] stage by stage, all nodes in parallel, with a barrier after
//! every step; journals every transition; rolls completed steps back in reverse order on failure.
//!
//! The engine knows nodes only through [`Remote`], cluster health only through
//! [`ClusterChecks`], and the terminal only through [`Observer`]. It never decides *what* to do:
//! that is the plan. It decides only whether a step is already done, in what order, and when to
//! stop. It executes generic actions (move, copy, write, run, wait, upload, probe) itself and
//! hands an action that belongs to a step type to that step ([`crate::steps::execute`]), lending
//! it its primitives; it knows no kubectl, etcd or kubeadm.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::health::ClusterChecks;
use crate::layout::RunDir;
use crate::plan::{Action, Actions, Plan, Scope, StepOrder, StepPlan};
use crate::remote::Remote;

mod actions;
pub mod journal;

use journal::{Journal, Record};

/// Whether node-changing actions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything runs.
    Apply,
    /// The same walk through the plan, with every node-changing call and every wait withheld.
    DryRun,
}

/// Something the engine reports while it works. The UI renders these; the engine never prints.
#[derive(Debug, Clone)]
pub enum Event {
    /// A stage began.
    StageStarted {
        /// Stage name.
        stage: String,
        /// 1-based index.
        index: usize,
        /// Number of stages.
        total: usize,
    },
    /// A stage finished on every node.
    StageDone {
        /// Stage name.
        stage: String,
        /// Wall time.
        elapsed: Duration,
    },
    /// A step began on a node (`None` = cluster step).
    StepStarted {
        /// Step id.
        step: String,
        /// Step title.
        title: String,
        /// Node.
        node: Option<String>,
    },
    /// An action began.
    Action {
        /// Step id.
        step: String,
        /// Node.
        node: Option<String>,
        /// What it does.
        text: String,
        /// True when withheld (dry run).
        withheld: bool,
    },
    /// Bytes sent so far while staging the snapshot.
    Upload {
        /// Node.
        node: String,
        /// Bytes sent.
        sent: u64,
        /// Total bytes.
        total: u64,
    },
    /// Still waiting for a condition.
    Waiting {
        /// Node.
        node: Option<String>,
        /// The condition, e.g. `etcd to stop`.
        what: String,
        /// Time waited so far.
        elapsed: Duration,
        /// Why it is not met yet.
        detail: String,
    },
    /// A step finished on a node.
    StepDone {
        /// Step id.
        step: String,
        /// Node.
        node: Option<String>,
        /// True when found already done.
        skipped: bool,
        /// Wall time.
        elapsed: Duration,
    },
    /// A step failed on a node.
    StepFailed {
        /// Step id.
        step: String,
        /// Node.
        node: Option<String>,
        /// Rendered error chain.
        error: String,
    },
    /// Rollback of the run began.
    RollbackStarted {
        /// Why.
        reason: String,
    },
    /// A step was rolled back on a node.
    RolledBack {
        /// Step id.
        step: String,
        /// Node.
        node: Option<String>,
    },
    /// Something the user must do later (recorded in the report).
    FollowUp {
        /// What to do.
        text: String,
    },
}

/// Receives [`Event`]s.
pub trait Observer: Send + Sync {
    /// Called for every event, from any task.
    fn event(&self, event: &Event);
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &Event) {}
}

/// Asks a running engine to stop at the next step boundary.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicUsize>);

impl Cancel {
    /// Records one more interrupt; returns how many there were.
    pub fn request(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// True once an interrupt was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// A failed step.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Step id.
    pub step: String,
    /// Node, or `None` for a cluster step.
    pub node: Option<String>,
    /// Rendered error chain.
    pub error: String,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every step done and verified.
    Completed,
    /// A step failed; every touched step was rolled back.
    RolledBack(Vec<Failure>),
    /// A step failed and rollback was not wanted: the run is paused where it failed.
    Failed(Vec<Failure>),
    /// A rollback step failed too; the run is paused and `rollback` can be run again.
    RollbackFailed {
        /// What failed first.
        failures: Vec<Failure>,
        /// What failed during rollback.
        rollback: Vec<Failure>,
    },
    /// Stopped at a step boundary on request; resumable.
    Paused {
        /// The next step that would have run.
        next_step: String,
    },
}

impl Outcome {
    /// The word recorded in the journal.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::RolledBack(_) => "rolled-back",
            Outcome::Failed(_) => "failed",
            Outcome::RollbackFailed { .. } => "rollback-failed",
            Outcome::Paused { .. } => "paused",
        }
    }
}

/// Options for one engine run.
pub struct Engine {
    plan: Arc<Plan>,
    nodes: BTreeMap<String, Arc<dyn Remote>>,
    snapshot: PathBuf,
    checks: Arc<dyn ClusterChecks>,
    observer: Arc<dyn Observer>,
    cancel: Cancel,
    mode: Mode,
    operator: String,
    follow_ups: Mutex<Vec<String>>,
    /// Called before each stage (used by `--step`).
    gate: Option<GateFn>,
    /// Called when a step fails; decides between rollback, retry and pause.
    on_failure: Option<FailureFn>,
}

/// Decides, before a stage, whether to run it.
type GateFn = Box<dyn Fn(&str) -> Gate + Send + Sync>;

/// Decides what to do after a step failed.
type FailureFn = Box<dyn Fn(&[Failure]) -> OnFailure + Send + Sync>;

/// What to do after a step failed (asked in guided mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Undo every completed step on every node.
    Rollback,
    /// Run the failed step again on the nodes where it failed.
    Retry,
    /// Stop here; the run stays resumable (or can be rolled back later).
    Pause,
}

/// What a stage gate decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Run the stage.
    Continue,
    /// Stop here; the run stays resumable.
    Pause,
    /// Undo what was done.
    Rollback,
}

impl Engine {
    /// An engine for `plan` on `nodes` (one [`Remote`] per plan node).
    pub fn new(
        plan: Arc<Plan>,
        nodes: BTreeMap<String, Arc<dyn Remote>>,
        snapshot: PathBuf,
        checks: Arc<dyn ClusterChecks>,
        observer: Arc<dyn Observer>,
    ) -> Engine {
        Engine {
            plan,
            nodes,
            snapshot,
            checks,
            observer,
            cancel: Cancel::default(),
            mode: Mode::Apply,
            operator: operator(),
            follow_ups: Mutex::new(Vec::new()),
            gate: None,
            on_failure: None,
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Uses this cancel handle (wired to Ctrl-C by the CLI).
    pub fn cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// Asks `gate` before each stage.
    pub fn gate(mut self, gate: impl Fn(&str) -> Gate + Send + Sync + 'static) -> Self {
        self.gate = Some(Box::new(gate));
        self
    }

    /// Asks `decide` what to do when a step fails (instead of the fixed rollback policy).
    pub fn on_failure(
        mut self,
        decide: impl Fn(&[Failure]) -> OnFailure + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Box::new(decide));
        self
    }

    /// Follow-ups collected so far.
    pub fn follow_ups(&self) -> Vec<String> {
        self.follow_ups
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn emit(&self, e: Event) {
        self.observer.event(&e);
    }

    fn node(&self, name: &str) -> anyhow::Result<&Arc<dyn Remote>> {
        self.nodes
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("the plan names node {name}, which has no connection"))
    }

    /// Runs (or resumes) the plan. Steps the journal records as done are skipped; every other
    /// step probes whether its actions are already done. On failure, rolls back every touched
    /// step when `rollback_on_failure`.
    pub async fn apply(
        &self,
        journal: &Mutex<Journal>,
        command: &str,
        rollback_on_failure: bool,
    ) -> anyhow::Result<Outcome> {
        record(
            journal,
            Record::RunStarted {
                command: command.to_string(),
                operator: self.operator.clone(),
            },
        )?;
        let total = self.plan.stages.len();
        for (i, stage) in self.plan.stages.iter().enumerate() {
            let done = lock(journal)?.done();
            let stage_done = stage.steps.iter().all(|s| self.step_complete(s, &done));
            if !stage_done {
                if self.cancel.requested() {
                    return self.end(
                        journal,
                        Outcome::Paused {
                            next_step: stage.steps[0].id.clone(),
                        },
                    );
                }
                if let Some(gate) = &self.gate {
                    match gate(&stage.name) {
                        Gate::Continue => {}
                        Gate::Pause => {
                            return self.end(
                                journal,
                                Outcome::Paused {
                                    next_step: stage.steps[0].id.clone(),
                                },
                            )
                        }
                        Gate::Rollback => {
                            let failure = Failure {
                                step: stage.steps[0].id.clone(),
                                node: None,
                                error: "rollback requested by the user".into(),
                            };
                            return self.fail(journal, vec![failure], true).await;
                        }
                    }
                }
            }
            self.emit(Event::StageStarted {
                stage: stage.name.clone(),
                index: i + 1,
                total,
            });
            let started = Instant::now();
            for step in &stage.steps {
                if self.cancel.requested() && !self.step_complete(step, &lock(journal)?.done()) {
                    return self.end(
                        journal,
                        Outcome::Paused {
                            next_step: step.id.clone(),
                        },
                    );
                }
                loop {
                    let failures = self.run_step(journal, step).await?;
                    if failures.is_empty() {
                        break;
                    }
                    match self.on_failure.as_ref().map(|decide| decide(&failures)) {
                        Some(OnFailure::Retry) => continue,
                        Some(OnFailure::Pause) => return self.fail(journal, failures, false).await,
                        Some(OnFailure::Rollback) => {
                            return self.fail(journal, failures, true).await
                        }
                        None => return self.fail(journal, failures, rollback_on_failure).await,
                    }
                }
            }
            self.emit(Event::StageDone {
                stage: stage.name.clone(),
                elapsed: started.elapsed(),
            });
        }
        self.end(journal, Outcome::Completed)
    }

    /// Rolls back every touched step of the run, newest first.
    pub async fn rollback(
        &self,
        journal: &Mutex<Journal>,
        reason: &str,
    ) -> anyhow::Result<Outcome> {
        record(
            journal,
            Record::RunStarted {
                command: "rollback".into(),
                operator: self.operator.clone(),
            },
        )?;
        let errors = self.rollback_touched(journal, reason).await?;
        let outcome = if errors.is_empty() {
            Outcome::RolledBack(Vec::new())
        } else {
            Outcome::RollbackFailed {
                failures: Vec::new(),
                rollback: errors,
            }
        };
        self.end(journal, outcome)
    }

    fn end(&self, journal: &Mutex<Journal>, outcome: Outcome) -> anyhow::Result<Outcome> {
        let recorded = lock(journal)?.follow_ups();
        for text in self.follow_ups() {
            if !recorded.contains(&text) {
                record(journal, Record::FollowUp { text })?;
            }
        }
        record(
            journal,
            Record::RunEnded {
                outcome: outcome.word().to_string(),
            },
        )?;
        Ok(outcome)
    }

    async fn fail(
        &self,
        journal: &Mutex<Journal>,
        failures: Vec<Failure>,
        rollback: bool,
    ) -> anyhow::Result<Outcome> {
        if !rollback {
            return self.end(journal, Outcome::Failed(failures));
        }
        let reason = failures
            .iter()
            .map(|f| {
                format!(
                    "{} on {}: {}",
                    f.step,
                    f.node.as_deref().unwrap_or("cluster"),
                    f.error
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let errors = self.rollback_touched(journal, &reason).await?;
        if errors.is_empty() {
            self.end(journal, Outcome::RolledBack(failures))
        } else {
            self.end(
                journal,
                Outcome::RollbackFailed {
                    failures,
                    rollback: errors,
                },
            )
        }
    }

    fn step_complete(&self, step: &StepPlan, done: &BTreeSet<(String, Option<String>)>) -> bool {
        match &step.scope {
            Scope::Skipped(_) => true,
            Scope::Cluster(_) => done.contains(&(step.id.clone(), None)),
            Scope::Nodes(map) => map
                .keys()
                .all(|n| done.contains(&(step.id.clone(), Some(n.clone())))),
        }
    }

    /// Runs one step on every node in parallel (or once for the cluster); returns failures.
    async fn run_step(
        &self,
        journal: &Mutex<Journal>,
        step: &StepPlan,
    ) -> anyhow::Result<Vec<Failure>> {
        let done = lock(journal)?.done();
        let targets: Vec<(Option<String>, &Actions)> = match &step.scope {
            Scope::Skipped(_) => return Ok(Vec::new()),
            Scope::Cluster(a) => vec![(None, a)],
            Scope::Nodes(map) => map.iter().map(|(n, a)| (Some(n.clone()), a)).collect(),
        };
        let pending = |n: &Option<String>| !done.contains(&(step.id.clone(), n.clone()));
        let several = targets.iter().filter(|(n, _)| pending(n)).count() > 1;
        let waves: Vec<Vec<(Option<String>, &Actions)>> = match step.order {
            StepOrder::OneAtATime if several => targets.into_iter().map(|t| vec![t]).collect(),
            StepOrder::LeaderLast if several && self.mode == Mode::Apply => {
                match self.checks.etcd_leader().await {
                    Some(leader) => {
                        let (last, first): (Vec<_>, Vec<_>) = targets
                            .into_iter()
                            .partition(|(n, _)| n.as_deref() == Some(leader.as_str()));
                        if !last.is_empty() {
                            self.emit(Event::Waiting {
                                node: Some(leader.clone()),
                                what: "the other etcd members to stop first".into(),
                                elapsed: Duration::ZERO,
                                detail: "this member leads: stopped last, it has no peer to hand leadership to and stops at once".into(),
                            });
                        }
                        vec![first, last]
                    }
                    None => vec![targets],
                }
            }
            _ => vec![targets],
        };
        let mut failures = Vec::new();
        for wave in waves {
            failures = self.run_wave(journal, step, &done, wave).await?;
            if !failures.is_empty() {
                break;
            }
        }
        Ok(failures)
    }

    /// Runs one step on `targets` in parallel; returns failures.
    async fn run_wave(
        &self,
        journal: &Mutex<Journal>,
        step: &StepPlan,
        done: &BTreeSet<(String, Option<String>)>,
        targets: Vec<(Option<String>, &Actions)>,
    ) -> anyhow::Result<Vec<Failure>> {
        let runs = targets.into_iter().map(|(node, acts)| {
            let already = done.contains(&(step.id.clone(), node.clone()));
            async move {
                let started = Instant::now();
                if already {
                    self.emit(Event::StepDone {
                        step: step.id.clone(),
                        node: node.clone(),
                        skipped: true,
                        elapsed: Duration::ZERO,
                    });
                    return Ok(None);
                }
                record(
                    journal,
                    Record::StepStarted {
                        step: step.id.clone(),
                        node: node.clone(),
                    },
                )?;
                self.emit(Event::StepStarted {
                    step: step.id.clone(),
                    title: step.title.clone(),
                    node: node.clone(),
                });
                let mut skipped_all = true;
                let mut result = Ok(());
                for action in &acts.actions {
                    match self.execute(step, node.as_deref(), action).await {
                        Ok(skipped) => skipped_all &= skipped,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                match result {
                    Ok(()) => {
                        record(
                            journal,
                            Record::StepDone {
                                step: step.id.clone(),
                                node: node.clone(),
                                skipped: skipped_all,
                            },
                        )?;
                        if let (Some(n), Mode::Apply) = (&node, self.mode) {
                            // Best effort: the local journal is authoritative.
                            let _ = self.save_node_state(journal, n).await;
                        }
                        self.emit(Event::StepDone {
                            step: step.id.clone(),
                            node: node.clone(),
                            skipped: skipped_all,
                            elapsed: started.elapsed(),
                        });
                        Ok(None)
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        record(
                            journal,
                            Record::StepFailed {
                                step: step.id.clone(),
                                node: node.clone(),
                                error: error.clone(),
                            },
                        )?;
                        self.emit(Event::StepFailed {
                            step: step.id.clone(),
                            node: node.clone(),
                            error: error.clone(),
                        });
                        Ok(Some(Failure {
                            step: step.id.clone(),
                            node,
                            error,
                        }))
                    }
                }
            }
        });
        let results: Vec<anyhow::Result<Option<Failure>>> = futures::future::join_all(runs).await;
        let mut failures = Vec::new();
        for r in results {
            if let Some(f) = r? {
                failures.push(f);
            }
        }
        Ok(failures)
    }

    /// Undoes every touched (step, node), newest step first, nodes in parallel. A node whose
    /// rollback fails is left alone from then on (its later undo steps assume the earlier ones
    /// worked), while the other nodes are still rolled back completely; a failed cluster step
    /// stops the whole rollback. What is left stays touched in the journal, so running
    /// `rollback` again finishes it.
    async fn rollback_touched(
        &self,
        journal: &Mutex<Journal>,
        reason: &str,
    ) -> anyhow::Result<Vec<Failure>> {
        self.emit(Event::RollbackStarted {
            reason: reason.to_string(),
        });
        let steps: Vec<&StepPlan> = self
            .plan
            .stages
            .iter()
            .flat_map(|s| s.steps.iter())
            .collect();
        let mut errors: Vec<Failure> = Vec::new();
        for step in steps.into_iter().rev() {
            let touched = lock(journal)?.touched();
            let targets: Vec<(Option<String>, &Actions)> = match &step.scope {
                Scope::Skipped(_) => continue,
                Scope::Cluster(a) => vec![(None, a)],
                Scope::Nodes(map) => map.iter().map(|(n, a)| (Some(n.clone()), a)).collect(),
            };
            let targets: Vec<_> = targets
                .into_iter()
                .filter(|(n, _)| touched.contains(&(step.id.clone(), n.clone())))
                .filter(|(n, _)| !errors.iter().any(|f| &f.node == n))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let runs = targets.into_iter().map(|(node, acts)| async move {
                record(
                    journal,
                    Record::RollbackStarted {
                        step: step.id.clone(),
                        node: node.clone(),
                    },
                )?;
                for action in &acts.rollback {
                    if let Err(e) = self.execute(step, node.as_deref(), action).await {
                        let error = format!("{e:#}");
                        record(
                            journal,
                            Record::RollbackFailed {
                                step: step.id.clone(),
                                node: node.clone(),
                                error: error.clone(),
                            },
                        )?;
                        self.emit(Event::StepFailed {
                            step: format!("rollback of {}", step.id),
                            node: node.clone(),
                            error: error.clone(),
                        });
                        return anyhow::Ok(Some(Failure {
                            step: step.id.clone(),
                            node,
                            error,
                        }));
                    }
                }
                record(
                    journal,
                    Record::RolledBack {
                        step: step.id.clone(),
                        node: node.clone(),
                    },
                )?;
                if let (Some(n), Mode::Apply) = (&node, self.mode) {
                    let _ = self.save_node_state(journal, n).await;
                }
                self.emit(Event::RolledBack {
                    step: step.id.clone(),
                    node,
                });
                Ok(None)
            });
            for r in futures::future::join_all(runs).await {
                if let Some(f) = r? {
                    errors.push(f);
                }
            }
            if errors.iter().any(|f| f.node.is_none()) {
                break;
            }
        }
        if !errors.is_empty() {
            let text = {
                let j = lock(journal)?;
                self.left_to_undo(&j, &errors)
            };
            self.follow_up(text);
        }
        Ok(errors)
    }

    /// Says exactly what a rollback that failed on some nodes left undone, and how to finish.
    fn left_to_undo(&self, journal: &Journal, errors: &[Failure]) -> String {
        let touched = journal.touched();
        let order: Vec<&StepPlan> = self
            .plan
            .stages
            .iter()
            .flat_map(|s| s.steps.iter())
            .rev()
            .collect();
        let mut parts = Vec::new();
        for f in errors {
            let left: Vec<&str> = order
                .iter()
                .filter(|s| touched.contains(&(s.id.clone(), f.node.clone())))
                .map(|s| s.id.as_str())
                .collect();
            parts.push(format!(
                "{}: undoing {} failed ({}); still to undo there, newest first: {}",
                f.node.as_deref().unwrap_or("the cluster"),
                f.step,
                f.error,
                left.join(", ")
            ));
        }
        let done: Vec<String> = self
            .plan
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| {
                !touched
                    .iter()
                    .any(|(_, t)| t.as_deref() == Some(n.as_str()))
            })
            .collect();
        format!(
            "rollback is incomplete. {}. {}Fix the cause (e.g. bring the node's sshd back), then run `etcd-recover rollback {}` to finish; it undoes only what is left",
            parts.join(". "),
            if done.is_empty() {
                String::new()
            } else {
                format!("Fully rolled back: {}. ", done.join(", "))
            },
            self.plan.run_id
        )
    }

    /// Writes the node's step state into its run directory, for resume from elsewhere.
    async fn save_node_state(&self, journal: &Mutex<Journal>, node: &str) -> anyhow::Result<()> {
        let Some(summary) = self.plan.node(node) else {
            return Ok(());
        };
        let done: Vec<String> = lock(journal)?
            .done()
            .into_iter()
            .filter(|(_, n)| n.as_deref() == Some(node))
            .map(|(s, _)| s)
            .collect();
        let state = serde_json::json!({
            "run_id": self.plan.run_id,
            "node": node,
            "done": done,
            "updated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let remote = self.node(node)?;
        let path = RunDir::at(&summary.run_dir).state();
        // Before the run directory exists this fails; the local journal is authoritative.
        remote
            .write_file_atomic(
                &path,
                state.to_string().as_bytes(),
                &crate::remote::WriteOpts {
                    temp_dir: None,
                    mode: Some(0o600),
                },
            )
            .await?;
        Ok(())
    }
}

fn lock(journal: &Mutex<Journal>) -> anyhow::Result<std::sync::MutexGuard<'_, Journal>> {
    journal
        .lock()
        .map_err(|_| anyhow::anyhow!("journal lock poisoned by an earlier panic"))
}

fn record(journal: &Mutex<Journal>, r: Record) -> anyhow::Result<()> {
    lock(journal)?.record(r)
}

/// `user@host` of whoever runs the tool.
pub fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{host}")
}

/// True when the action is withheld in a dry run.
fn withheld(mode: Mode, action: &Action) -> bool {
    mode == Mode::DryRun && !matches!(action, Action::Note { .. })
}

#[cfg(test)]
mod tests;
