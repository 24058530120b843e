//! What commands report, rendered for people: the `check` table and its problems, and the
//! `status` of runs. Callers print the text with [`super::document`] or [`super::text`].

use crate::check::{Check, ClusterReport, NodeReport};
use crate::report::Report;

/// One row per node, then a line about the cluster and a verdict.
pub fn check_table(report: &ClusterReport) -> String {
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
pub fn check_problems(report: &ClusterReport) -> String {
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

/// One run in `status`'s list of runs.
pub struct RunRow<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// The run's last outcome, or `in progress`.
    pub outcome: &'a str,
    /// When the run was planned.
    pub created_at: &'a str,
}

/// The list of runs: one line each.
pub fn run_list(rows: &[RunRow<'_>]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{}  {:<12}  {:<16}  {}\n",
            r.run_id, r.cluster, r.outcome, r.created_at
        ));
    }
    out
}

/// What one node records about a run, for `status -i`.
pub enum NodeRun<'a> {
    /// No connection to the node.
    Unreachable,
    /// The node's record.
    Reached {
        /// `(steps done, last update)` from its step state, if it has one.
        done: Option<(usize, &'a str)>,
        /// Its lock, if it holds one.
        lock: Option<NodeLock<'a>>,
    },
}

/// A node's lock, as `status -i` shows it.
pub struct NodeLock<'a> {
    /// The run holding it.
    pub run: &'a str,
    /// Who started that run.
    pub operator: &'a str,
    /// Since when.
    pub since: &'a str,
}

/// One line per node: its steps done and its lock.
pub fn node_runs(nodes: &[(&str, NodeRun<'_>)]) -> String {
    let mut out = String::new();
    for (name, node) in nodes {
        let line = match node {
            NodeRun::Unreachable => format!("node {name}: unreachable"),
            NodeRun::Reached { done, lock } => {
                let done = match done {
                    Some((steps, updated)) => format!("{steps} steps done (updated {updated})"),
                    None => "no record of this run".to_string(),
                };
                let lock = match lock {
                    Some(l) => format!(
                        "lock held by run {} ({}, since {})",
                        l.run, l.operator, l.since
                    ),
                    None => "no lock".to_string(),
                };
                format!("node {name}: {done}; {lock}")
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// One run: its outcome, each stage's outcome per node, and the follow-ups.
pub fn run_status(report: &Report) -> String {
    let mut out = format!(
        "run {} of cluster {}: {}\n",
        report.run_id, report.cluster, report.outcome
    );
    for (stage, steps) in &report.stages {
        let mut by_node: Vec<String> = steps
            .iter()
            .map(|s| format!("{}={}", s.node, s.outcome))
            .collect();
        by_node.dedup();
        out.push_str(&format!("  {stage:<22} {}\n", by_node.join("  ")));
    }
    for f in &report.follow_ups {
        out.push_str(&format!("follow-up: {f}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_runs_name_steps_and_lock_or_their_absence() {
        let nodes = [
            (
                "cp-1",
                NodeRun::Reached {
                    done: Some((7, "2026-11-22T03:15:00Z")),
                    lock: Some(NodeLock {
                        run: "20261122-031500-1a2b",
                        operator: "alice@ws",
                        since: "2026-11-22T03:14:58Z",
                    }),
                },
            ),
            (
                "cp-2",
                NodeRun::Reached {
                    done: None,
                    lock: None,
                },
            ),
            ("cp-3", NodeRun::Unreachable),
        ];
        assert_eq!(
            node_runs(&nodes),
            "node cp-1: 7 steps done (updated 2026-11-22T03:15:00Z); lock held by run 20261122-031500-1a2b (alice@ws, since 2026-11-22T03:14:58Z)\n\
             node cp-2: no record of this run; no lock\n\
             node cp-3: unreachable\n"
        );
    }

    #[test]
    fn runs_are_listed_in_columns() {
        let rows = [
            RunRow {
                run_id: "20261122-031500-1a2b",
                cluster: "prod",
                outcome: "completed",
                created_at: "2026-11-22T03:15:00Z",
            },
            RunRow {
                run_id: "20261123-101010-ffff",
                cluster: "staging-eu-1",
                outcome: "in progress",
                created_at: "2026-11-23T10:10:10Z",
            },
        ];
        assert_eq!(
            run_list(&rows),
            "20261122-031500-1a2b  prod          completed         2026-11-22T03:15:00Z\n\
             20261123-101010-ffff  staging-eu-1  in progress       2026-11-23T10:10:10Z\n"
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(52 << 30), "52.0 GiB");
    }
}
