//! `etcd-recover status`: the runs on this workstation, or one run's stage and step per node
//! (with an inventory, also each node's own record of it).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::args::Global;
use super::runs;
use super::runtime;
use crate::engine::journal::{self, Journal};
use crate::error::Exit;
use crate::plan::Plan;
use crate::ui::report::{NodeLock, NodeRun, RunRow};
use crate::ui::{self, report};
use crate::workflow;

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

/// Runs `status`.
pub(crate) fn run(args: &StatusArgs, global: &Global) -> anyhow::Result<Exit> {
    let Some(run) = &args.run else {
        return list(global, args.output);
    };
    let dir = &global.state_dir;
    let nodes_view = match &args.inventory {
        Some(inv) => {
            let settings = global.settings(inv.clone());
            Some(runtime()?.block_on(async {
                let cluster = workflow::connect(&settings).await?;
                anyhow::Ok(runs::node_records(&cluster, run, true).await)
            })?)
        }
        None => None,
    };
    let (entries, plan) = match (Journal::open(dir, run), &nodes_view) {
        (Ok((j, p)), _) => (j.entries().to_vec(), p),
        (Err(_), Some((Some(p), _))) => (Vec::new(), p.clone()),
        (Err(e), _) => return Err(e),
    };
    let report = crate::report::build(&plan, &entries, &[]);
    if args.output == StatusFormat::Json {
        ui::document(format!("{}\n", serde_json::to_string_pretty(&report)?))?;
        return Ok(Exit::Success);
    }
    let mut text = String::new();
    if let Some((_, records)) = &nodes_view {
        text.push_str(&node_lines(records));
    }
    text.push_str(&report::run_status(&report));
    ui::document(text)?;
    Ok(Exit::Success)
}

/// The runs in the state directory.
fn list(global: &Global, format: StatusFormat) -> anyhow::Result<Exit> {
    let dir = &global.state_dir;
    let names = journal::list_runs(dir);
    let runs: Vec<(Journal, Plan)> = names
        .iter()
        .filter_map(|r| Journal::open(dir, r).ok())
        .collect();
    if format == StatusFormat::Json {
        let list: Vec<serde_json::Value> = runs
            .iter()
            .map(|(j, p)| serde_json::json!({"run_id": p.run_id, "cluster": p.cluster, "created_at": p.created_at, "outcome": outcome(j)}))
            .collect();
        ui::document(format!("{}\n", serde_json::to_string_pretty(&list)?))?;
        return Ok(Exit::Success);
    }
    if names.is_empty() {
        ui::line(&format!("no runs in {}", dir.display()));
    }
    let rows: Vec<RunRow> = runs
        .iter()
        .map(|(j, p)| RunRow {
            run_id: &p.run_id,
            cluster: &p.cluster,
            outcome: outcome(j),
            created_at: &p.created_at,
        })
        .collect();
    ui::document(report::run_list(&rows))?;
    Ok(Exit::Success)
}

/// A run's last outcome as `status` shows it.
fn outcome(journal: &Journal) -> &str {
    journal.last_outcome().unwrap_or("in progress")
}

/// Each node's record of the run, one line per node.
fn node_lines(records: &[runs::NodeRecord]) -> String {
    let nodes: Vec<(&str, NodeRun)> = records
        .iter()
        .map(|n| {
            let view = match &n.reached {
                None => NodeRun::Unreachable,
                Some(r) => NodeRun::Reached {
                    done: r.state.as_ref().map(|v| {
                        (
                            v["done"].as_array().map_or(0, Vec::len),
                            v["updated_at"].as_str().unwrap_or("?"),
                        )
                    }),
                    lock: r.lock.as_ref().map(|v| NodeLock {
                        run: v["run_id"].as_str().unwrap_or("?"),
                        operator: v["operator"].as_str().unwrap_or("?"),
                        since: v["since"].as_str().unwrap_or("?"),
                    }),
                },
            };
            (n.name.as_str(), view)
        })
        .collect();
    report::node_runs(&nodes)
}
