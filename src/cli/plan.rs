//! `etcd-recover plan`: read every node and show the whole restore plan; change nothing.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::args::{Global, PlanOpts};
use super::runtime;
use crate::error::Exit;
use crate::plan::render::{self, Format};
use crate::ui;
use crate::workflow;

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

/// Runs `plan`.
pub(crate) fn run(args: &PlanArgs, global: &Global) -> anyhow::Result<Exit> {
    let s = args.opts.resolve().settings(global, args.inventory.clone());
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Markdown => Format::Markdown,
        FormatArg::Json => Format::Json,
    };
    runtime()?.block_on(async {
        let cluster = workflow::connect(&s).await?;
        ui::warnings(&cluster.inventory.warnings);
        let (plan, _) =
            workflow::make_plan(&s, &cluster, &args.snapshot, workflow::new_run_id()).await?;
        ui::document(render::render(&plan, format, ui::color_stdout()))?;
        if let Some(out) = &args.out {
            std::fs::write(out, plan.to_json())
                .with_context(|| format!("cannot save the plan to `{}`", out.display()))?;
            ui::line(&format!(
                "saved plan {} to {}; apply exactly this plan with: etcd-recover apply -i {} --plan {}",
                plan.run_id,
                out.display(),
                args.inventory.display(),
                out.display()
            ));
        }
        Ok(if plan.is_applicable() {
            Exit::Success
        } else {
            Exit::ChecksFailed
        })
    })
}
