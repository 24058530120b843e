//! The one flow behind `apply`, `guide`, `resume` and `rollback`: confirm, run the engine,
//! report. The engine is built here and nowhere else.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::interrupts::Interrupts;
use super::runtime;
use crate::engine::journal::Journal;
use crate::engine::{Engine, Failure, Gate, Mode, OnFailure, Outcome};
use crate::error::{Exit, ExitWith, HintExt};
use crate::plan::render::{self, Format};
use crate::plan::{Plan, Severity};
use crate::remote::Remote;
use crate::ui::{self, prompt, Printer, Style};
use crate::workflow::{self, Cluster};

/// The terminal and the Ctrl-C handling of a command that runs the engine.
pub(crate) struct Session {
    /// Progress, lines and prompts.
    pub printer: Arc<Printer>,
    interrupts: Interrupts,
}

/// How a new run is carried out (`apply` and the guide).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartOptions {
    /// Never prompt.
    pub yes: bool,
    /// Confirm every stage.
    pub step: bool,
    /// On failure, pause instead of rolling back.
    pub no_rollback: bool,
    /// Withhold every change.
    pub dry_run: bool,
    /// Show the plan summary before asking (the guide has shown it already).
    pub show_summary: bool,
}

/// What the engine does.
pub(crate) enum Task<'a> {
    /// Carries out a new run, journaled in `state_dir`.
    Start {
        /// The state directory.
        state_dir: &'a Path,
        /// Apply, or walk the plan with every change withheld.
        mode: Mode,
    },
    /// Continues a run from its journal.
    Resume(Journal),
    /// Undoes a run's completed steps, newest first.
    Rollback(Journal),
}

/// How the engine involves the user while it runs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Policy {
    /// Ask what to do when a step fails (else roll back, or pause with `no_rollback`).
    pub ask_on_failure: bool,
    /// Ask before every stage.
    pub step: bool,
    /// On failure, pause instead of rolling back.
    pub no_rollback: bool,
}

impl Session {
    /// Runs `body` on a new runtime with a printer in `style` and Ctrl-C handled.
    pub(crate) fn run<F, Fut>(style: Style, body: F) -> anyhow::Result<Exit>
    where
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = anyhow::Result<Exit>>,
    {
        let printer = Arc::new(Printer::new(style));
        runtime()?.block_on(async move {
            let interrupts = Interrupts::install(printer.clone());
            body(Session {
                printer,
                interrupts,
            })
            .await
        })
    }

    /// Everything after a new run's plan is decided: the preflight verdict, the summary, the
    /// confirmations, the engine run and the report.
    pub(crate) async fn start(
        &self,
        plan: Plan,
        cluster: &Cluster,
        state_dir: &Path,
        snapshot: &Path,
        opts: StartOptions,
    ) -> anyhow::Result<Exit> {
        if !plan.is_applicable() {
            ui::text(&render::findings(&plan, ui::color_stderr()));
            return Err(
                anyhow::Error::new(ExitWith(Exit::ChecksFailed)).context(format!(
                    "preflight failed on the plan for {}: nothing was changed",
                    plan.cluster
                )),
            )
            .hint(
                "fix the errors above, then run apply again (`etcd-recover plan` shows the whole plan)",
            );
        }
        let asks = !opts.yes && prompt::can_ask() && !opts.dry_run;
        if opts.show_summary && asks {
            self.printer
                .say(&render::summary(&plan, ui::color_stderr()));
        }
        if !opts.dry_run && !self.confirm(&plan, opts.yes)? {
            return Err(declined("not confirmed"));
        }
        if opts.step && !prompt::can_ask() {
            return Err(anyhow::Error::new(ExitWith(Exit::Usage))
                .context("--step needs a terminal to ask on"))
            .hint("run on a terminal, or without --step");
        }
        let mode = if opts.dry_run {
            Mode::DryRun
        } else {
            Mode::Apply
        };
        let policy = Policy {
            ask_on_failure: asks,
            step: opts.step,
            no_rollback: opts.no_rollback,
        };
        let task = Task::Start { state_dir, mode };
        self.run_engine(plan, cluster, snapshot.to_path_buf(), task, policy)
            .await
    }

    /// Asks for consent to warnings and for the cluster name. `Ok(false)` = declined.
    fn confirm(&self, plan: &Plan, yes: bool) -> anyhow::Result<bool> {
        if yes {
            return Ok(true);
        }
        if !prompt::can_ask() {
            return Err(anyhow::Error::new(ExitWith(Exit::Declined))
                .context("apply changes every control-plane node and needs confirmation, but there is no terminal to ask on"))
            .hint("review the plan first (`etcd-recover plan`), then pass --yes");
        }
        let warnings = plan.findings_at_least(Severity::Warning).count();
        if warnings > 0 {
            let prompt = format!("Proceed despite the {warnings} warning(s) above?");
            if prompt::confirm(&self.printer, &prompt) != Some(true) {
                return Ok(false);
            }
        }
        self.printer.say(&format!(
            "This stops kube-apiserver and etcd on {} node(s) and restores snapshot {} (revision {}).",
            plan.nodes.len(),
            plan.snapshot.sha256,
            plan.snapshot.revision.map_or("unknown".into(), |r| r.to_string())
        ));
        let typed = prompt::Text::new(format!(
            "Type the cluster name ({}) to continue",
            plan.cluster
        ))
        .allow_empty()
        .ask(&self.printer);
        Ok(typed.is_some_and(|t| t.trim() == plan.cluster))
    }

    /// Builds the engine for `plan` on the cluster's nodes, runs `task` and writes the report.
    pub(crate) async fn run_engine(
        &self,
        plan: Plan,
        cluster: &Cluster,
        snapshot: PathBuf,
        task: Task<'_>,
        policy: Policy,
    ) -> anyhow::Result<Exit> {
        let remotes = require_all(&plan, cluster)?;
        let checks = workflow::live_checks(&plan, &remotes).await?;
        let cancel = self.interrupts.engine_starts();
        // The command the engine applies the plan for; `None` rolls the run back.
        let (journal, mode, apply_as) = match task {
            Task::Start { state_dir, mode } => {
                let journal = Journal::create(state_dir, &plan)?;
                self.printer.line(&format!(
                    "run {} started; journal in {}",
                    plan.run_id,
                    journal.dir().display()
                ));
                (journal, mode, Some("apply"))
            }
            Task::Resume(journal) => {
                self.printer.line(&format!("resuming run {}", plan.run_id));
                (journal, Mode::Apply, Some("resume"))
            }
            // A rollback does not stop at step boundaries: Ctrl-C only warns, the third exits.
            Task::Rollback(journal) => (journal, Mode::Apply, None),
        };
        let plan = Arc::new(plan);
        let mut engine = Engine::new(
            plan.clone(),
            remotes,
            snapshot,
            Arc::new(checks),
            self.printer.clone(),
        )
        .cancel(cancel)
        .mode(mode);
        if policy.ask_on_failure {
            engine = engine.on_failure(failure_prompt(self.printer.clone(), policy.no_rollback));
        }
        if policy.step {
            engine = engine.gate(step_gate(self.printer.clone(), plan.clone()));
        }
        let journal = Mutex::new(journal);
        let outcome = match apply_as {
            Some(command) => engine.apply(&journal, command, !policy.no_rollback).await?,
            None => {
                engine
                    .rollback(&journal, "requested with `etcd-recover rollback`")
                    .await?
            }
        };
        let journal = journal
            .into_inner()
            .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?;
        let code = finish(&outcome, &plan, &journal, &self.printer)?;
        Ok(match (apply_as, code) {
            // A rollback asked for is a success when it leaves the cluster as it was.
            (None, Exit::RolledBack) => Exit::Success,
            _ => code,
        })
    }
}

/// The error of a question declined or left unanswered: `WHAT: nothing was changed`.
pub(crate) fn declined(what: &str) -> anyhow::Error {
    anyhow::Error::new(ExitWith(Exit::Declined)).context(format!("{what}: nothing was changed"))
}

/// Finds the connections for a plan's nodes, failing when any is missing.
fn require_all(
    plan: &Plan,
    cluster: &Cluster,
) -> anyhow::Result<BTreeMap<String, Arc<dyn Remote>>> {
    if let Some(u) = cluster.unreachable.first() {
        return Err(anyhow::anyhow!(
            "{}: {}",
            u.node.as_deref().unwrap_or("?"),
            u.message
        ))
        .hint(
            u.hint
                .clone()
                .unwrap_or_else(|| "every node must be reachable".into()),
        );
    }
    let mut out = BTreeMap::new();
    for n in &plan.nodes {
        let r = cluster.remotes.get(&n.name).with_context(|| {
            format!(
                "the plan names node {}, which is not in the inventory",
                n.name
            )
        })?;
        out.insert(n.name.clone(), r.clone());
    }
    Ok(out)
}

/// `--step`: before each stage, asks whether to run it, showing its actions on request.
fn step_gate(printer: Arc<Printer>, plan: Arc<Plan>) -> impl Fn(&str) -> Gate + Send + Sync {
    move |stage: &str| loop {
        let items = [
            "continue",
            "show details",
            "pause (resume later)",
            "roll back",
        ];
        match prompt::select(&printer, &format!("Next stage: {stage}"), &items, 0) {
            Some(0) => return Gate::Continue,
            Some(1) => {
                if let Some(s) = plan.stages.iter().find(|s| s.name == stage) {
                    let one = Plan {
                        stages: vec![s.clone()],
                        findings: vec![],
                        ..(*plan).clone()
                    };
                    let text = render::render(&one, Format::Text, ui::color_stderr());
                    let start = text.find("Stage 1/1").unwrap_or(0);
                    let end = text
                        .rfind("\n\n")
                        .filter(|e| *e > start)
                        .unwrap_or(text.len());
                    printer.say(&text[start..end]);
                }
            }
            Some(3) => return Gate::Rollback,
            _ => return Gate::Pause,
        }
    }
}

/// On a terminal, shows what failed where (with the remote stderr) and asks what to do.
fn failure_prompt(
    printer: Arc<Printer>,
    no_rollback: bool,
) -> impl Fn(&[Failure]) -> OnFailure + Send + Sync {
    move |failures: &[Failure]| {
        printer.close_stage();
        let mut text = String::new();
        for f in failures {
            text.push_str(&format!(
                "\nFAILED: {} on {}:",
                f.step,
                f.node.as_deref().unwrap_or("the cluster")
            ));
            for line in f.error.lines() {
                text.push_str(&format!("\n  {line}"));
            }
        }
        printer.say(&text);
        let items = [
            "roll back every completed step on every node",
            "retry the failed step (after fixing its cause)",
            "pause (resume or roll back later)",
        ];
        let default = if no_rollback { 2 } else { 0 };
        match prompt::select(&printer, "What now?", &items, default) {
            Some(0) => OnFailure::Rollback,
            Some(1) => OnFailure::Retry,
            _ => OnFailure::Pause,
        }
    }
}

/// Writes the run's report and says how the run ended; the exit code for its outcome.
fn finish(
    outcome: &Outcome,
    plan: &Plan,
    journal: &Journal,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let (md, js) = crate::report::write_for(plan, journal, &[])?;
    let summary = match outcome {
        Outcome::Completed => format!("restore of {} complete: run {}", plan.cluster, plan.run_id),
        Outcome::RolledBack(f) if f.is_empty() => format!("run {} rolled back: the cluster is as it was before", plan.run_id),
        Outcome::RolledBack(f) => format!(
            "run {} failed at {} on {} and was rolled back: the cluster is as it was before",
            plan.run_id,
            f[0].step,
            f[0].node.as_deref().unwrap_or("cluster")
        ),
        Outcome::Failed(f) => format!(
            "run {} failed at {} on {} and is paused (no rollback): fix the cause, then `etcd-recover resume {}` or `etcd-recover rollback {}`",
            plan.run_id,
            f[0].step,
            f[0].node.as_deref().unwrap_or("cluster"),
            plan.run_id,
            plan.run_id
        ),
        Outcome::RollbackFailed { rollback, .. } => format!(
            "run {}: rollback failed at {} on {}: {}; fix the cause, then run `etcd-recover rollback {}` again",
            plan.run_id,
            rollback[0].step,
            rollback[0].node.as_deref().unwrap_or("cluster"),
            rollback[0].error,
            plan.run_id
        ),
        Outcome::Paused { next_step } => format!(
            "run {} paused before {next_step}; continue with `etcd-recover resume {}` or undo with `etcd-recover rollback {}`",
            plan.run_id, plan.run_id, plan.run_id
        ),
    };
    printer.line(&summary);
    printer.line(&format!("report: {}", md.display()));
    printer.line(&format!("report: {}", js.display()));
    for f in journal.follow_ups() {
        printer.line(&format!("follow-up: {f}"));
    }
    Ok(match outcome {
        Outcome::Completed => Exit::Success,
        Outcome::RolledBack(_) => Exit::RolledBack,
        Outcome::Failed(_) | Outcome::Paused { .. } => Exit::Paused,
        Outcome::RollbackFailed { .. } => Exit::Failure,
    })
}
