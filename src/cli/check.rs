//! `etcd-recover check`: connect to every node and report whether it is ready for a restore.

use std::path::PathBuf;

use anyhow::Context;

use super::args::Global;
use super::runtime;
use crate::check::{check_cluster, CheckSettings};
use crate::error::Exit;
use crate::ui;
use crate::workflow;

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Checks, per node: reachable, authenticated (strict host key checking), sudo, OS, the static-pod
manifests (etcd.yaml, kube-apiserver.yaml), free space next to the etcd data directory, the
restore tool and its version, and etcd's status through an SSH tunnel; then that the members
agree on one cluster ID and one leader and match the inventory.

Exit status: 0 when every node is ready, 3 when a check failed, 1 on other errors.

Examples:
  etcd-recover check -i inventory.yaml
  etcd-recover check -i inventory.yaml --accept-new-host-keys
  etcd-recover check -i inventory.yaml -o json | jq '.nodes[] | select(.ok | not) | .name'")]
pub struct CheckArgs {
    /// The inventory file.
    #[arg(short = 'i', long, value_name = "FILE", env = "ETCD_RECOVER_INVENTORY")]
    pub inventory: PathBuf,

    /// Output format: a table for people, JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table on stdout; problems on stderr.
    Table,
    /// The whole report as one JSON document on stdout.
    Json,
}

/// Runs `check`.
pub(crate) fn run(args: &CheckArgs, global: &Global) -> anyhow::Result<Exit> {
    let loaded = workflow::load_inventory(&args.inventory)?;
    ui::warnings(&loaded.warnings);
    let inv = loaded.inventory;
    let setup = workflow::ssh_setup(&inv, &global.ssh)?;
    ui::warnings(&setup.notes);
    let report = runtime()?.block_on(check_cluster(
        &inv.cluster,
        &inv.nodes,
        &setup.targets,
        &setup.connector,
        &CheckSettings::default(),
    ));
    match args.output {
        Output::Json => {
            let json = serde_json::to_string_pretty(&report).context("cannot write the report")?;
            ui::document(format!("{json}\n"))?;
        }
        Output::Table => {
            ui::document(ui::report::check_table(&report))?;
            ui::text(&ui::report::check_problems(&report));
        }
    }
    Ok(if report.ok {
        Exit::Success
    } else {
        Exit::ChecksFailed
    })
}
