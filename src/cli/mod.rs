//! Command-line interface: clap types live here and in the per-command files, and never leave
//! this module. Each command resolves its arguments once into plain settings
//! (`args::Global`, [`workflow::Settings`](crate::workflow::Settings), ...) and calls the
//! library; `apply`, `guide`, `resume` and `rollback` share one flow (`flow`: confirm, engine,
//! report). Everything shown to the user goes through [`crate::ui`].

pub mod apply;
pub mod args;
pub mod check;
pub mod completions;
mod flow;
pub mod guide;
mod interrupts;
pub mod manifest;
pub mod plan;
pub mod resume;
pub mod rollback;
mod runs;
pub mod snapshot;
pub mod status;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::error::{self, Exit};

/// Restore a Kubernetes control plane's etcd from a snapshot on every control-plane node at
/// once, over SSH, as a staged plan you can preview, pause, resume and roll back.
#[derive(Debug, Parser)]
#[command(
    name = "etcd-recover",
    version,
    propagate_version = true,
    after_help = "Examples:
  etcd-recover guide -i inventory.yaml                       # guided: pick, verify, plan, restore
  etcd-recover plan -i inventory.yaml --snapshot snap.db     # review every action, change nothing
  etcd-recover apply -i inventory.yaml --snapshot snap.db    # restore (asks for the cluster name)
  etcd-recover status                                        # runs on this workstation
  etcd-recover resume RUN                                    # continue a paused run

The procedure from \"etcd lost quorum\" to \"cluster back\" is in docs/runbook.md; exit codes are in
docs/exit-codes.md."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub ssh: args::SshArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: args::StateArgs,
}

/// All commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the complete restore plan (every command, move, wait, rollback and diff); change nothing
    Plan(plan::PlanArgs),
    /// Restore the snapshot on every node: guided, staged, resumable, rolled back on failure
    Apply(apply::ApplyArgs),
    /// Walk through the whole restore: pick and verify the snapshot, review the plan, apply it
    Guide(guide::GuideArgs),
    /// Continue a paused or interrupted run
    #[command(
        after_help = "Examples:\n  etcd-recover resume 20261122-031500-1a2b\n  etcd-recover resume 20261122-031500-1a2b -i inventory.yaml   # run started on another workstation"
    )]
    Resume(args::RunArgs),
    /// Undo a run's completed steps on every node, newest first
    #[command(
        after_help = "Examples:\n  etcd-recover rollback 20261122-031500-1a2b\n  etcd-recover rollback 20261122-031500-1a2b -i inventory.yaml --yes"
    )]
    Rollback(args::RunArgs),
    /// Show runs, or one run's stage and step per node
    Status(status::StatusArgs),
    /// Print shell completions
    #[command(
        after_help = "Examples:\n  etcd-recover completions bash > /etc/bash_completion.d/etcd-recover\n  etcd-recover completions zsh > \"${fpath[1]}/_etcd-recover\"\n  etcd-recover completions fish > ~/.config/fish/completions/etcd-recover.fish"
    )]
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Connect to every node and check it is ready for a restore
    Check(check::CheckArgs),
    /// Read a static-pod manifest, or rewrite its etcd data hostPath
    #[command(
        after_help = "Examples:\n  etcd-recover manifest show /etc/kubernetes/manifests/etcd.yaml\n  etcd-recover manifest rewrite --data-hostpath /var/lib/etcd-restored etcd.yaml --diff"
    )]
    Manifest(manifest::ManifestArgs),
    /// Verify a snapshot file
    #[command(
        after_help = "Examples:\n  etcd-recover snapshot verify /backup/snapshot.db\n  etcd-recover snapshot verify -o json /backup/snapshot.db"
    )]
    Snapshot(snapshot::SnapshotArgs),
}

/// Parses the command line, runs the command, prints errors, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            crate::ui::error::print(&err);
            error::exit_code(&err).into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    let Cli {
        command,
        ssh,
        state,
    } = cli;
    let global = args::Global::resolve(&ssh, &state);
    match command {
        Command::Plan(a) => plan::run(&a, &global),
        Command::Apply(a) => apply::run(&a, &global),
        Command::Guide(a) => guide::run(&a, &global),
        Command::Resume(a) => resume::run(&a, &global),
        Command::Rollback(a) => rollback::run(&a, &global),
        Command::Status(a) => status::run(&a, &global),
        Command::Completions { shell } => completions::run(shell),
        Command::Check(a) => check::run(&a, &global),
        Command::Manifest(a) => manifest::run(a),
        Command::Snapshot(a) => snapshot::run(a),
    }
}

/// A multi-threaded runtime for commands that talk to nodes.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
