//! `etcd-recover check`: connect to every node and report whether it is ready for a restore.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::common::{load_inventory, runtime, SshArgs};
use crate::check::{check_cluster, Check, CheckSettings, ClusterReport, NodeReport};
use crate::error::Exit;

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
pub fn run(args: CheckArgs, ssh: &SshArgs) -> anyhow::Result<Exit> {
    let mut stderr = std::io::stderr();
    let inv = load_inventory(&args.inventory, &mut stderr)?;
    let setup = ssh.setup(&inv, &mut stderr)?;
    let report = runtime()?.block_on(check_cluster(
        &inv.cluster,
        &inv.nodes,
        &setup.targets,
        &setup.connector,
        &CheckSettings::default(),
    ));
    let mut stdout = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report)
                .context("cannot write the report")?;
            writeln!(stdout)?;
        }
        Output::Table => {
            stdout.write_all(render_table(&report).as_bytes())?;
            stdout.flush()?;
            stderr.write_all(render_problems(&report).as_bytes())?;
        }
    }
    Ok(if report.ok {
        Exit::Success
    } else {
        Exit::ChecksFailed
    })
}

/// One row per node, then a line about the cluster and a verdict.
pub fn render_table(report: &ClusterReport) -> String {
    let header = [
        "NODE",
        "ADDRESS",
        "SSH",
        "SUDO",
        "OS",
        "FREE",
        "RESTORE TOOL",
        "MANIFESTS",
        "ETCD",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for n in &report.nodes {
        rows.push(row(n));
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(etcd) = &report.etcd {
        let mut parts = Vec::new();
        if let Some(id) = &etcd.cluster_id {
            parts.push(format!("cluster ID {id}"));
        }
        if let Some(l) = &etcd.leader {
            parts.push(format!("leader {l}"));
        }
        if !etcd.members.is_empty() {
            let names: Vec<&str> = etcd
                .members
                .iter()
                .map(|m| {
                    if m.name.is_empty() {
                        m.id.as_str()
                    } else {
                        m.name.as_str()
                    }
                })
                .collect();
            parts.push(format!("{} members ({})", names.len(), names.join(", ")));
        }
        if !parts.is_empty() {
            out.push_str(&format!("\netcd: {}\n", parts.join(", ")));
        }
    }
    let ready = report.nodes.iter().filter(|n| n.ok).count();
    let total = report.nodes.len();
    out.push('\n');
    if report.ok {
        out.push_str(&format!(
            "{}: all {total} nodes are ready\n",
            report.cluster
        ));
    } else {
        let extra = if report.problems.is_empty() {
            String::new()
        } else {
            format!(" and {} cluster problem(s)", report.problems.len())
        };
        out.push_str(&format!(
            "{}: {ready} of {total} nodes are ready{extra}; details on stderr\n",
            report.cluster
        ));
    }
    out
}

fn row(n: &NodeReport) -> Vec<String> {
    let ssh = match (&n.reachable, &n.authenticated) {
        (Check::Failed { .. }, _) => "unreachable".to_string(),
        (_, Check::Failed { .. }) => "refused".to_string(),
        (_, Check::Ok(_)) => "ok".to_string(),
        _ => "-".to_string(),
    };
    let address = if n.via.is_empty() {
        n.address.clone()
    } else {
        format!("{} via {}", n.address, n.via.join(","))
    };
    vec![
        n.name.clone(),
        address,
        ssh,
        cell(&n.sudo, |s| s.mode.clone()),
        cell(&n.os, |o| format!("{} / {}", o.pretty_name, o.kernel)),
        cell(&n.data_dir, |d| human_bytes(d.free_bytes)),
        cell(&n.restore_tool, |t| format!("{} {}", t.kind, t.version)),
        cell(&n.manifests, |_| "ok".to_string()),
        cell(&n.etcd, |e| {
            format!(
                "{} {} rev {}",
                e.version,
                if e.is_leader { "leader" } else { "follower" },
                e.revision
            )
        }),
    ]
}

fn cell<T>(c: &Check<T>, f: impl Fn(&T) -> String) -> String {
    match c {
        Check::Ok(t) => f(t),
        Check::Failed { .. } => "FAILED".into(),
        Check::Skipped { .. } => "-".into(),
    }
}

/// `512 B`, `1.5 KiB`, `12.3 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Every failure with its hint, notes, and the cluster problems, for stderr.
pub fn render_problems(report: &ClusterReport) -> String {
    let mut out = String::new();
    for n in &report.nodes {
        for note in &n.notes {
            out.push_str(&format!("note: {}: {note}\n", n.name));
        }
        for (error, hint) in n.failures() {
            out.push_str(&format!("error: {error}\n"));
            if let Some(h) = hint {
                out.push_str(&format!("hint: {h}\n"));
            }
        }
    }
    for p in &report.problems {
        out.push_str(&format!("error: {p}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(52 << 30), "52.0 GiB");
    }
}
