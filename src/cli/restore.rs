//! `plan`, `apply`, `resume`, `rollback` and `status`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::common::{OutputArg, SshArgs, StateArgs};
use crate::engine::journal::{self, Journal, Record};
use crate::engine::{Cancel, Engine, Failure, Gate, Mode, OnFailure, Outcome};
use crate::error::{Exit, ExitWith, HintExt};
use crate::layout::RunLayout;
use crate::plan::render::{self, Format};
use crate::plan::{Plan, Severity};
use crate::remote::Remote;
use crate::ui::Printer;
use crate::workflow::{self, Settings};

/// Options that shape a plan.
#[derive(Debug, Clone, Args)]
pub struct PlanOpts {
    /// Playbook to follow [default: the built-in restore-stacked]
    #[arg(long, value_name = "FILE")]
    pub playbook: Option<PathBuf>,

    /// Revision bump passed as --bump-revision (with --mark-compacted) where the restore tool
    /// supports it; must exceed the writes made since the snapshot
    #[arg(long, value_name = "N", default_value_t = crate::plan::build::DEFAULT_BUMP)]
    pub bump_revision: u64,

    /// Accept a snapshot without the SHA-256 integrity trailer (a raw member/snap/db copy):
    /// nothing then proves the file complete
    #[arg(long)]
    pub skip_hash_check: bool,

    /// Admin kubeconfig on the nodes, used to update kubeadm's ClusterConfiguration
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kubernetes/admin.conf"
    )]
    pub admin_kubeconfig: String,
}

/// Plan output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Terminal text, colored on a TTY unless NO_COLOR is set.
    Text,
    /// Markdown for a change ticket.
    Markdown,
    /// JSON (the saved-plan format).
    Json,
}

/// `etcd-recover plan`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  etcd-recover plan -i inventory.yaml --snapshot /backups/etcd-2026-11-22.db
  etcd-recover plan -i inventory.yaml --snapshot snap.db --format markdown > CHANGE-1234.md
  etcd-recover plan -i inventory.yaml --snapshot snap.db --out plan.json

Reads every node (nothing is changed) and prints every command, file move, wait and rollback
action the restore would take, with unified diffs of every file it would change.
Exit code 0: the plan can be applied; 3: it has blocking findings.")]
pub struct PlanArgs {
    /// Inventory of the control-plane nodes
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,

    /// Snapshot to restore (from `etcdctl snapshot save`)
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,

    /// Output format
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,

    /// Also save the plan (JSON, with fingerprints) for `apply --plan`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub opts: PlanOpts,
}

/// `etcd-recover apply`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  etcd-recover apply -i inventory.yaml --snapshot snap.db           # guided: review, type the cluster name
  etcd-recover apply -i inventory.yaml --plan plan.json             # exactly the reviewed plan; refused on drift
  etcd-recover apply -i inventory.yaml --snapshot snap.db --step    # confirm every stage
  etcd-recover apply -i inventory.yaml --snapshot snap.db --yes --output plain   # scripts and CI
  etcd-recover apply -i inventory.yaml --snapshot snap.db --dry-run  # walk the plan, change nothing
  etcd-recover apply                                                # on a terminal: the guide

On failure every completed step is rolled back on every node, newest first, unless --no-rollback.
Ctrl-C finishes the current step and pauses; `etcd-recover resume RUN` continues.")]
pub struct ApplyArgs {
    /// Inventory of the control-plane nodes
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Snapshot to restore [without it and --plan, on a terminal: the guide picks one]
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,

    /// Apply a plan saved by `plan --out`; refused when the cluster, snapshot, inventory or
    /// playbook changed since
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,

    /// Never prompt: accept warnings and skip typing the cluster name
    #[arg(short, long)]
    pub yes: bool,

    /// Confirm before every stage (continue, show details, pause, roll back)
    #[arg(long)]
    pub step: bool,

    /// On failure, stop and leave the run paused instead of rolling back
    #[arg(long)]
    pub no_rollback: bool,

    /// Walk the whole plan through the engine with every change and wait withheld
    #[arg(long)]
    pub dry_run: bool,

    /// Progress output
    #[arg(long, value_enum, default_value_t = OutputArg::Auto)]
    pub output: OutputArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub opts: PlanOpts,
}

/// `etcd-recover resume` and `etcd-recover rollback`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Run id (see `etcd-recover status`)
    pub run: String,

    /// Inventory [default: the one the plan was made from]; with it, a run started on another
    /// workstation is picked up from the nodes' run directories
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Never prompt
    #[arg(short, long)]
    pub yes: bool,

    /// On failure, stop and leave the run paused instead of rolling back (resume only)
    #[arg(long)]
    pub no_rollback: bool,

    /// Progress output
    #[arg(long, value_enum, default_value_t = OutputArg::Auto)]
    pub output: OutputArg,
}

/// `etcd-recover status`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  etcd-recover status                 # every run on this workstation
  etcd-recover status 20261122-031500-1a2b
  etcd-recover status 20261122-031500-1a2b -o json
  etcd-recover status 20261122-031500-1a2b -i inventory.yaml   # also each node's own record")]
pub struct StatusArgs {
    /// Run id; without it, list runs
    pub run: Option<String>,

    /// Inventory: also read each node's own record of the run (its done steps and lock), and
    /// show a run started on another workstation
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = StatusFormat::Text)]
    pub output: StatusFormat,
}

/// `status` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// Human text.
    Text,
    /// The report as JSON.
    Json,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn settings(
    inventory: &Path,
    ssh: &SshArgs,
    state: &StateArgs,
    opts: Option<&PlanOpts>,
) -> Settings {
    let mut s = Settings::new(inventory.to_path_buf(), ssh.options());
    s.state_dir = state.dir();
    if let Some(o) = opts {
        s.playbook = o.playbook.clone();
        s.bump = o.bump_revision;
        s.skip_hash_check = o.skip_hash_check;
        s.admin_kubeconfig = o.admin_kubeconfig.clone();
    }
    s
}

fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn eprint_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Warnings through the printer (so `--output json` stays one JSON object per line).
pub(crate) fn warn_all(printer: &Printer, warnings: &[String]) {
    for w in warnings {
        printer.warning(w);
    }
}

/// `plan`.
pub fn plan(args: &PlanArgs, ssh: &SshArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let s = settings(&args.inventory, ssh, state, Some(&args.opts));
    runtime()?.block_on(async {
        let cluster = workflow::connect(&s).await?;
        eprint_warnings(&cluster.inventory.warnings);
        let (plan, _) = workflow::make_plan(&s, &cluster, &args.snapshot, workflow::new_run_id()).await?;
        let format = match args.format {
            FormatArg::Text => Format::Text,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Json => Format::Json,
        };
        let text = render::render(&plan, format, color_stdout());
        std::io::stdout().write_all(text.as_bytes()).context("cannot write to stdout")?;
        if let Some(out) = &args.out {
            std::fs::write(out, plan.to_json())
                .with_context(|| format!("cannot save the plan to `{}`", out.display()))?;
            eprintln!(
                "saved plan {} to {}; apply exactly this plan with: etcd-recover apply -i {} --plan {}",
                plan.run_id,
                out.display(),
                args.inventory.display(),
                out.display()
            );
        }
        Ok(if plan.is_applicable() { Exit::Success } else { Exit::ChecksFailed })
    })
}

pub(crate) fn interactive(yes: bool) -> bool {
    !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Set once the engine may change nodes; until then Ctrl-C exits with nothing changed.
static ENGINE_RUNNING: AtomicBool = AtomicBool::new(false);

/// Restores the terminal and exits with [`Exit::Interrupted`]: nothing was changed.
fn exit_interrupted() -> ! {
    crate::ui::restore_terminal();
    eprintln!("\ninterrupted: nothing was changed");
    std::process::exit(Exit::Interrupted as i32)
}

/// Runs one dialoguer prompt with the progress bars suspended. `None` when the prompt failed
/// or was interrupted once the engine runs (the caller treats it as "no" / pause); Ctrl-C
/// before that exits at once with nothing changed. The cursor is shown again either way.
pub(crate) fn ask<T>(
    printer: &Printer,
    f: impl FnOnce(&dialoguer::theme::ColorfulTheme) -> dialoguer::Result<T>,
) -> Option<T> {
    printer.suspend(|| {
        let theme = dialoguer::theme::ColorfulTheme::default();
        match f(&theme) {
            Ok(v) => Some(v),
            Err(dialoguer::Error::IO(e))
                if e.kind() == std::io::ErrorKind::Interrupted
                    && !ENGINE_RUNNING.load(Ordering::SeqCst) =>
            {
                exit_interrupted()
            }
            Err(_) => {
                crate::ui::restore_terminal();
                None
            }
        }
    })
}

/// Asks for consent to warnings and for the cluster name. `Ok(false)` = declined.
pub(crate) fn confirm(plan: &Plan, yes: bool, printer: &Printer) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !interactive(yes) {
        return Err(anyhow::Error::new(ExitWith(Exit::Declined))
            .context("apply changes every control-plane node and needs confirmation, but there is no terminal to ask on"))
        .hint("review the plan first (`etcd-recover plan`), then pass --yes");
    }
    let warnings = plan.findings_at_least(Severity::Warning).count();
    if warnings > 0 {
        let go = ask(printer, |theme| {
            dialoguer::Confirm::with_theme(theme)
                .with_prompt(format!("Proceed despite the {warnings} warning(s) above?"))
                .default(false)
                .interact()
        });
        if go != Some(true) {
            return Ok(false);
        }
    }
    let typed = ask(printer, |theme| {
        eprintln!(
            "This stops kube-apiserver and etcd on {} node(s) and restores snapshot {} (revision {}).",
            plan.nodes.len(),
            plan.snapshot.sha256,
            plan.snapshot.revision.map_or("unknown".into(), |r| r.to_string())
        );
        dialoguer::Input::<String>::with_theme(theme)
            .with_prompt(format!(
                "Type the cluster name ({}) to continue",
                plan.cluster
            ))
            .allow_empty(true)
            .interact_text()
    });
    Ok(typed.is_some_and(|t| t.trim() == plan.cluster))
}

/// Finds the connections for a plan's nodes, failing when any is missing.
fn require_all(
    plan: &Plan,
    cluster: &workflow::Cluster,
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

/// Ctrl-C for a command's whole life. Before the engine runs nothing has changed: the terminal
/// is restored and the command exits with [`Exit::Interrupted`]. Once it runs, the first Ctrl-C
/// finishes the current step on every node and pauses, the third exits at once.
#[derive(Clone)]
pub(crate) struct Interrupts {
    cancel: Cancel,
}

impl Interrupts {
    /// Installs the handler; call inside the runtime, before the first prompt.
    pub(crate) fn install(printer: Arc<Printer>) -> Interrupts {
        let me = Interrupts {
            cancel: Cancel::default(),
        };
        let cancel = me.cancel.clone();
        tokio::spawn(async move {
            loop {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                if printer.prompting() && !ENGINE_RUNNING.load(Ordering::SeqCst) {
                    // The prompt sees the interrupt too and exits (see `ask`).
                    continue;
                }
                if !ENGINE_RUNNING.load(Ordering::SeqCst) {
                    exit_interrupted();
                }
                let n = cancel.request();
                if printer.prompting() {
                    // The prompt answers "pause" by itself.
                    continue;
                }
                match n {
                    1 => printer.line("interrupt: finishing the current step on every node, then pausing; `etcd-recover resume` continues"),
                    2 => printer.line("interrupt again: the current step is still finishing; stopping now could leave it half done (resume would complete it). Press Ctrl-C once more to exit at once"),
                    _ => {
                        crate::ui::restore_terminal();
                        std::process::exit(130);
                    }
                }
            }
        });
        me
    }

    /// From now on Ctrl-C pauses the run (at the next step boundary) instead of exiting.
    pub(crate) fn engine_starts(&self) -> Cancel {
        ENGINE_RUNNING.store(true, Ordering::SeqCst);
        self.cancel.clone()
    }
}

fn step_gate(printer: Arc<Printer>, plan: Arc<Plan>) -> impl Fn(&str) -> Gate + Send + Sync {
    move |stage: &str| loop {
        let choice = ask(&printer, |theme| {
            dialoguer::Select::with_theme(theme)
                .with_prompt(format!("Next stage: {stage}"))
                .items([
                    "continue",
                    "show details",
                    "pause (resume later)",
                    "roll back",
                ])
                .default(0)
                .interact()
        });
        match choice {
            Some(0) => return Gate::Continue,
            Some(1) => {
                if let Some(s) = plan.stages.iter().find(|s| s.name == stage) {
                    let one = Plan {
                        stages: vec![s.clone()],
                        findings: vec![],
                        ..(*plan).clone()
                    };
                    let text = render::render(&one, Format::Text, std::io::stderr().is_terminal());
                    let start = text.find("Stage 1/1").unwrap_or(0);
                    let end = text
                        .rfind("\n\n")
                        .filter(|e| *e > start)
                        .unwrap_or(text.len());
                    printer.suspend(|| eprintln!("{}", &text[start..end]));
                }
            }
            Some(3) => return Gate::Rollback,
            _ => return Gate::Pause,
        }
    }
}

/// In guided mode, shows what failed where (with the remote stderr) and asks what to do.
fn failure_prompt(
    printer: Arc<Printer>,
    no_rollback: bool,
) -> impl Fn(&[Failure]) -> OnFailure + Send + Sync {
    move |failures: &[Failure]| {
        printer.close_stage();
        printer.suspend(|| {
            eprintln!();
            for f in failures {
                eprintln!(
                    "FAILED: {} on {}:",
                    f.step,
                    f.node.as_deref().unwrap_or("the cluster")
                );
                for line in f.error.lines() {
                    eprintln!("  {line}");
                }
            }
        });
        let default = if no_rollback { 2 } else { 0 };
        let choice = ask(&printer, |theme| {
            dialoguer::Select::with_theme(theme)
                .with_prompt("What now?")
                .items([
                    "roll back every completed step on every node",
                    "retry the failed step (after fixing its cause)",
                    "pause (resume or roll back later)",
                ])
                .default(default)
                .interact()
        });
        match choice {
            Some(0) => OnFailure::Rollback,
            Some(1) => OnFailure::Retry,
            _ => OnFailure::Pause,
        }
    }
}

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

/// How a plan is carried out, by `apply` and by the guide.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApplyFlow {
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

/// Everything after the plan is decided: the preflight verdict, the summary, the
/// confirmations, the engine run and the report. Shared by `apply` and the guide.
pub(crate) async fn execute(
    plan: Plan,
    cluster: &workflow::Cluster,
    state_dir: &Path,
    snapshot: &Path,
    flow: ApplyFlow,
    printer: Arc<Printer>,
    interrupts: &Interrupts,
) -> anyhow::Result<Exit> {
    if !plan.is_applicable() {
        eprint!(
            "{}",
            render::findings(&plan, std::io::stderr().is_terminal())
        );
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
    let asks = interactive(flow.yes) && !flow.dry_run;
    if flow.show_summary && asks {
        let text = render::summary(&plan, std::io::stderr().is_terminal());
        printer.suspend(|| eprintln!("{text}"));
    }
    if !flow.dry_run && !confirm(&plan, flow.yes, &printer)? {
        return Err(anyhow::Error::new(ExitWith(Exit::Declined))
            .context("not confirmed: nothing was changed"));
    }
    if flow.step && !interactive(false) {
        return Err(
            anyhow::Error::new(ExitWith(Exit::Usage)).context("--step needs a terminal to ask on")
        )
        .hint("run on a terminal, or without --step");
    }
    let remotes = require_all(&plan, cluster)?;
    let checks = workflow::live_checks(&plan, &remotes).await?;
    let cancel = interrupts.engine_starts();
    let journal = Journal::create(state_dir, &plan)?;
    let plan = Arc::new(plan);
    let mut engine = Engine::new(
        plan.clone(),
        remotes,
        snapshot.to_path_buf(),
        Arc::new(checks),
        printer.clone(),
    )
    .cancel(cancel)
    .mode(if flow.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    });
    if asks {
        engine = engine.on_failure(failure_prompt(printer.clone(), flow.no_rollback));
    }
    if flow.step {
        engine = engine.gate(step_gate(printer.clone(), plan.clone()));
    }
    printer.line(&format!(
        "run {} started; journal in {}",
        plan.run_id,
        journal.dir().display()
    ));
    let journal = Mutex::new(journal);
    let outcome = engine.apply(&journal, "apply", !flow.no_rollback).await?;
    let journal = journal
        .into_inner()
        .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?;
    finish(&outcome, &plan, &journal, &printer)
}

/// `apply`.
pub fn apply(args: &ApplyArgs, ssh: &SshArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    if args.snapshot.is_none() && args.plan.is_none() {
        if interactive(args.yes) && !args.dry_run {
            return super::guide::run(
                &super::guide::GuideArgs {
                    inventory: args.inventory.clone(),
                    step: args.step,
                    no_rollback: args.no_rollback,
                    output: args.output,
                    opts: args.opts.clone(),
                },
                ssh,
                state,
            );
        }
        return Err(anyhow::Error::new(ExitWith(Exit::Usage))
            .context("apply needs --snapshot FILE or --plan FILE"))
        .hint("on a terminal, `etcd-recover guide` (or `apply` alone) walks you through picking the snapshot");
    }
    let saved: Option<Plan> = match &args.plan {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read plan `{}`", p.display()))?;
            let plan: Plan = serde_json::from_str(&text)
                .with_context(|| format!("`{}` is not a saved plan", p.display()))?;
            if plan.format_version != crate::plan::FORMAT_VERSION {
                anyhow::bail!(
                    "`{}` has plan format {}, this tool reads {}",
                    p.display(),
                    plan.format_version,
                    crate::plan::FORMAT_VERSION
                );
            }
            Some(plan)
        }
        None => None,
    };
    let inventory = match (&args.inventory, &saved) {
        (Some(i), _) => i.clone(),
        (None, Some(p)) => PathBuf::from(&p.inventory),
        (None, None) => {
            return Err(
                anyhow::Error::new(ExitWith(Exit::Usage)).context("apply needs an inventory")
            )
            .hint("pass -i INVENTORY, or run `etcd-recover guide`");
        }
    };
    let snapshot = match (&args.snapshot, &saved) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => PathBuf::from(&p.snapshot.path),
        (None, None) => anyhow::bail!("apply needs --snapshot FILE or --plan FILE"),
    };
    let mut s = settings(&inventory, ssh, state, Some(&args.opts));
    if args.dry_run {
        // A dry run journals into a throwaway directory: it leaves no run behind.
        s.state_dir =
            std::env::temp_dir().join(format!("etcd-recover-dry-run-{}", std::process::id()));
    }
    let printer = Arc::new(Printer::new(args.output.style()));
    runtime()?.block_on(async {
        let interrupts = Interrupts::install(printer.clone());
        let cluster = workflow::connect(&s).await?;
        warn_all(&printer, &cluster.inventory.warnings);
        let run_id = saved
            .as_ref()
            .map_or_else(workflow::new_run_id, |p| p.run_id.clone());
        let (fresh, _) = workflow::make_plan(&s, &cluster, &snapshot, run_id).await?;
        let plan = match saved {
            Some(saved) => {
                workflow::refuse_drift(&saved, &fresh)?;
                saved
            }
            None => fresh,
        };
        let flow = ApplyFlow {
            yes: args.yes,
            step: args.step,
            no_rollback: args.no_rollback,
            dry_run: args.dry_run,
            show_summary: true,
        };
        let code = execute(
            plan,
            &cluster,
            &s.state_dir,
            &snapshot,
            flow,
            printer,
            &interrupts,
        )
        .await;
        if args.dry_run {
            let _ = std::fs::remove_dir_all(&s.state_dir);
        }
        code
    })
}

/// Opens a run: the local journal, or (with an inventory) the plan and step state saved on
/// the nodes by a run started elsewhere.
async fn open_run(
    args: &RunArgs,
    ssh: &SshArgs,
    state: &StateArgs,
    printer: &Printer,
) -> anyhow::Result<(Journal, Plan, workflow::Cluster)> {
    let state_dir = state.dir();
    match Journal::open(&state_dir, &args.run) {
        Ok((journal, plan)) => {
            let inventory = args
                .inventory
                .clone()
                .unwrap_or_else(|| PathBuf::from(&plan.inventory));
            let s = settings(&inventory, ssh, state, None);
            let cluster = workflow::connect(&s).await?;
            warn_all(printer, &cluster.inventory.warnings);
            if cluster.inventory.sha256 != plan.fingerprints.inventory_sha256 {
                printer.warning(&format!(
                    "the inventory changed since run {} was planned",
                    plan.run_id
                ));
            }
            Ok((journal, plan, cluster))
        }
        Err(local) => {
            let Some(inventory) = &args.inventory else {
                return Err(local);
            };
            let s = settings(inventory, ssh, state, None);
            let cluster = workflow::connect(&s).await?;
            let (plan, done) = fetch_remote_run(&cluster, &args.run).await?;
            let mut journal = Journal::create(&state_dir, &plan)?;
            for (node, steps) in done {
                for step in steps {
                    journal.record(Record::StepDone {
                        step,
                        node: Some(node.clone()),
                        skipped: true,
                    })?;
                }
            }
            warn_all(printer, &cluster.inventory.warnings);
            printer.line(&format!(
                "picked up run {} from the nodes' run directories",
                plan.run_id
            ));
            Ok((journal, plan, cluster))
        }
    }
}

/// Reads a run's plan and per-node step state from the nodes.
async fn fetch_remote_run(
    cluster: &workflow::Cluster,
    run: &str,
) -> anyhow::Result<(Plan, BTreeMap<String, Vec<String>>)> {
    let mut plan: Option<Plan> = None;
    let mut done = BTreeMap::new();
    for n in &cluster.inventory.inventory.nodes {
        let Some(r) = cluster.remotes.get(&n.name) else {
            continue;
        };
        let dir = RunLayout::new(&n.etcd.run_dir, &n.name).run(run);
        if plan.is_none() {
            if let Ok(bytes) = r.read_file(&dir.plan()).await {
                plan = serde_json::from_slice(&bytes).ok();
            }
        }
        if let Ok(bytes) = r.read_file(&dir.state()).await {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let steps: Vec<String> = v["done"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            done.insert(n.name.clone(), steps);
        }
    }
    let plan = plan
        .with_context(|| format!("no node has run {run} in its run directory"))
        .hint("check the run id with `etcd-recover status` on the workstation that started it")?;
    Ok((plan, done))
}

/// `resume`.
pub fn resume(args: &RunArgs, ssh: &SshArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let printer = Arc::new(Printer::new(args.output.style()));
    runtime()?.block_on(async {
        let interrupts = Interrupts::install(printer.clone());
        let (journal, plan, cluster) = open_run(args, ssh, state, &printer).await?;
        match journal.last_outcome() {
            Some("completed") => {
                printer.line(&format!("run {} is already complete", plan.run_id));
                return Ok(Exit::Success);
            }
            Some("rolled-back") => {
                anyhow::bail!(
                    "run {} was rolled back; plan a new run instead",
                    plan.run_id
                )
            }
            _ => {}
        }
        let remotes = require_all(&plan, &cluster)?;
        let checks = workflow::live_checks(&plan, &remotes).await?;
        let plan = Arc::new(plan);
        let cancel = interrupts.engine_starts();
        let snapshot = PathBuf::from(&plan.snapshot.path);
        let mut engine = Engine::new(
            plan.clone(),
            remotes,
            snapshot,
            Arc::new(checks),
            printer.clone(),
        )
        .cancel(cancel);
        if interactive(args.yes) {
            engine = engine.on_failure(failure_prompt(printer.clone(), args.no_rollback));
        }
        printer.line(&format!("resuming run {}", plan.run_id));
        let journal = Mutex::new(journal);
        let outcome = engine.apply(&journal, "resume", !args.no_rollback).await?;
        let journal = journal
            .into_inner()
            .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?;
        finish(&outcome, &plan, &journal, &printer)
    })
}

/// `rollback`.
pub fn rollback(args: &RunArgs, ssh: &SshArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let printer = Arc::new(Printer::new(args.output.style()));
    runtime()?.block_on(async {
        let interrupts = Interrupts::install(printer.clone());
        let (journal, plan, cluster) = open_run(args, ssh, state, &printer).await?;
        if journal.touched().is_empty() {
            printer.line(&format!("run {} has nothing to roll back", plan.run_id));
            return Ok(Exit::Success);
        }
        if !args.yes && interactive(false) {
            let ok = ask(&printer, |theme| {
                dialoguer::Confirm::with_theme(theme)
                    .with_prompt(format!(
                        "Roll back run {} on {} node(s)?",
                        plan.run_id,
                        plan.nodes.len()
                    ))
                    .default(false)
                    .interact()
            });
            if ok != Some(true) {
                return Err(anyhow::Error::new(ExitWith(Exit::Declined))
                    .context("not confirmed: nothing was changed"));
            }
        }
        let remotes = require_all(&plan, &cluster)?;
        let checks = workflow::live_checks(&plan, &remotes).await?;
        // Rollback does not stop at step boundaries: Ctrl-C only warns, the third exits.
        let _ = interrupts.engine_starts();
        let plan = Arc::new(plan);
        let snapshot = PathBuf::from(&plan.snapshot.path);
        let engine = Engine::new(
            plan.clone(),
            remotes,
            snapshot,
            Arc::new(checks),
            printer.clone(),
        );
        let journal = Mutex::new(journal);
        let outcome = engine
            .rollback(&journal, "requested with `etcd-recover rollback`")
            .await?;
        let journal = journal
            .into_inner()
            .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?;
        let code = finish(&outcome, &plan, &journal, &printer)?;
        Ok(if code == Exit::RolledBack {
            Exit::Success
        } else {
            code
        })
    })
}

/// What each node records about a run: its plan, done steps and lock.
async fn node_records(
    inventory: &Path,
    run: &str,
    ssh: &SshArgs,
    state: &StateArgs,
) -> anyhow::Result<(Option<Plan>, Vec<String>)> {
    let s = settings(inventory, ssh, state, None);
    let cluster = workflow::connect(&s).await?;
    let mut lines = Vec::new();
    let mut plan = None;
    for n in &cluster.inventory.inventory.nodes {
        let Some(r) = cluster.remotes.get(&n.name) else {
            lines.push(format!("node {}: unreachable", n.name));
            continue;
        };
        let layout = RunLayout::new(&n.etcd.run_dir, &n.name);
        let dir = layout.run(run);
        if plan.is_none() {
            if let Ok(bytes) = r.read_file(&dir.plan()).await {
                plan = serde_json::from_slice::<Plan>(&bytes).ok();
            }
        }
        let done = match r.read_file(&dir.state()).await {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let steps = v["done"].as_array().map_or(0, Vec::len);
                format!(
                    "{steps} steps done (updated {})",
                    v["updated_at"].as_str().unwrap_or("?")
                )
            }
            Err(_) => "no record of this run".to_string(),
        };
        let lock = match r.read_file(&layout.lock()).await {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                format!(
                    "lock held by run {} ({}, since {})",
                    v["run_id"].as_str().unwrap_or("?"),
                    v["operator"].as_str().unwrap_or("?"),
                    v["since"].as_str().unwrap_or("?")
                )
            }
            Err(_) => "no lock".to_string(),
        };
        lines.push(format!("node {}: {done}; {lock}", n.name));
    }
    Ok((plan, lines))
}

/// `status`.
pub fn status(args: &StatusArgs, ssh: &SshArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    let dir = state.dir();
    let Some(run) = &args.run else {
        let runs = journal::list_runs(&dir);
        if args.output == StatusFormat::Json {
            let list: Vec<serde_json::Value> = runs
                .iter()
                .filter_map(|r| Journal::open(&dir, r).ok())
                .map(|(j, p)| serde_json::json!({"run_id": p.run_id, "cluster": p.cluster, "created_at": p.created_at, "outcome": j.last_outcome().unwrap_or("in progress")}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(Exit::Success);
        }
        if runs.is_empty() {
            eprintln!("no runs in {}", dir.display());
        }
        for r in runs {
            if let Ok((j, p)) = Journal::open(&dir, &r) {
                println!(
                    "{}  {:<12}  {:<16}  {}",
                    p.run_id,
                    p.cluster,
                    j.last_outcome().unwrap_or("in progress"),
                    p.created_at
                );
            }
        }
        return Ok(Exit::Success);
    };
    let nodes_view = match &args.inventory {
        Some(inv) => Some(runtime()?.block_on(node_records(inv, run, ssh, state))?),
        None => None,
    };
    let (entries, plan) = match (Journal::open(&dir, run), &nodes_view) {
        (Ok((j, p)), _) => (j.entries().to_vec(), p),
        (Err(_), Some((Some(p), _))) => (Vec::new(), p.clone()),
        (Err(e), _) => return Err(e),
    };
    let report = crate::report::build(&plan, &entries, &[]);
    if let Some((_, records)) = &nodes_view {
        if args.output == StatusFormat::Text {
            for line in records {
                println!("{line}");
            }
        }
    }
    if args.output == StatusFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(Exit::Success);
    }
    println!(
        "run {} of cluster {}: {}",
        plan.run_id, plan.cluster, report.outcome
    );
    for (stage, steps) in &report.stages {
        let mut by_node: Vec<String> = steps
            .iter()
            .map(|s| format!("{}={}", s.node, s.outcome))
            .collect();
        by_node.dedup();
        println!("  {stage:<22} {}", by_node.join("  "));
    }
    for f in &report.follow_ups {
        println!("follow-up: {f}");
    }
    Ok(Exit::Success)
}
