//! `etcd-recover apply`: restore the snapshot on every node, or apply a saved plan. Without a
//! snapshot or a plan, on a terminal, it is the guide.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::args::{Global, OutputArg, PlanOpts};
use super::flow::{Session, StartOptions};
use super::guide;
use crate::error::{Exit, ExitWith, HintExt};
use crate::plan::Plan;
use crate::ui::prompt;
use crate::workflow;

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

/// Runs `apply`.
pub(crate) fn run(args: &ApplyArgs, global: &Global) -> anyhow::Result<Exit> {
    if args.snapshot.is_none() && args.plan.is_none() {
        if !args.yes && prompt::can_ask() && !args.dry_run {
            let guide = guide::Settings {
                inventory: args.inventory.clone(),
                step: args.step,
                no_rollback: args.no_rollback,
                style: args.output.style(),
                plan: args.opts.resolve(),
            };
            return guide::start(&guide, global);
        }
        return Err(anyhow::Error::new(ExitWith(Exit::Usage))
            .context("apply needs --snapshot FILE or --plan FILE"))
        .hint("on a terminal, `etcd-recover guide` (or `apply` alone) walks you through picking the snapshot");
    }
    let saved = args.plan.as_deref().map(read_plan).transpose()?;
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
    let mut s = args.opts.resolve().settings(global, inventory);
    if args.dry_run {
        // A dry run journals into a throwaway directory: it leaves no run behind.
        s.state_dir =
            std::env::temp_dir().join(format!("etcd-recover-dry-run-{}", std::process::id()));
    }
    let opts = StartOptions {
        yes: args.yes,
        step: args.step,
        no_rollback: args.no_rollback,
        dry_run: args.dry_run,
        show_summary: true,
    };
    Session::run(args.output.style(), |session| async move {
        let cluster = workflow::connect(&s).await?;
        session.printer.warnings(&cluster.inventory.warnings);
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
        let code = session
            .start(plan, &cluster, &s.state_dir, &snapshot, opts)
            .await;
        if args.dry_run {
            let _ = std::fs::remove_dir_all(&s.state_dir);
        }
        code
    })
}

/// Reads a plan saved by `plan --out`.
fn read_plan(path: &std::path::Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read plan `{}`", path.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a saved plan", path.display()))?;
    if plan.format_version != crate::plan::FORMAT_VERSION {
        anyhow::bail!(
            "`{}` has plan format {}, this tool reads {}",
            path.display(),
            plan.format_version,
            crate::plan::FORMAT_VERSION
        );
    }
    Ok(plan)
}
