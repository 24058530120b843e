//! Run reports: `report.md` (for the postmortem and the change ticket) and `report.json`,
//! rebuilt from the plan and the journal after every `apply`, `resume` and `rollback`.
//! Reports hold no secrets: no keys, no snapshot contents, only paths, hashes and commands.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::journal::{Entry, Journal, Record};
use crate::plan::{Plan, Scope, Severity};

/// One step on one node (or the cluster), as it happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepRecord {
    /// Step id.
    pub step: String,
    /// Node or `cluster`.
    pub node: String,
    /// First start.
    pub started_at: Option<String>,
    /// Last end.
    pub ended_at: Option<String>,
    /// `done`, `already-done`, `failed`, `failed, rolled back`, `rolled-back`, `rollback-failed`,
    /// `not-run`, `skipped`.
    pub outcome: String,
    /// Error, when failed.
    pub error: Option<String>,
    /// The commands and checks of the step, as planned.
    pub actions: Vec<String>,
}

/// A run report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Run id.
    pub run_id: String,
    /// Cluster.
    pub cluster: String,
    /// Who ran what, when: (time, command, operator).
    pub sessions: Vec<(String, String, String)>,
    /// First record's time.
    pub started_at: Option<String>,
    /// Last record's time.
    pub ended_at: Option<String>,
    /// Seconds from the first record to the last.
    pub total_seconds: Option<f64>,
    /// Last outcome.
    pub outcome: String,
    /// Inventory fingerprint.
    pub inventory_sha256: String,
    /// Snapshot path, SHA-256, size, revision.
    pub snapshot: crate::plan::SnapshotSummary,
    /// Restore parameters.
    pub restore: crate::plan::RestoreParams,
    /// Per node facts.
    pub nodes: Vec<crate::plan::NodeSummary>,
    /// Warnings and errors found in preflight.
    pub warnings: Vec<String>,
    /// Per stage: steps in order.
    pub stages: Vec<(String, Vec<StepRecord>)>,
    /// What the user still has to do.
    pub follow_ups: Vec<String>,
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Builds the report.
pub fn build(plan: &Plan, entries: &[Entry], extra_follow_ups: &[String]) -> Report {
    let mut records: BTreeMap<(String, String), StepRecord> = BTreeMap::new();
    let mut sessions = Vec::new();
    let mut outcome = "not started".to_string();
    let mut follow_ups = Vec::new();
    for e in entries {
        let key = |step: &str, node: &Option<String>| {
            (
                step.to_string(),
                node.clone().unwrap_or_else(|| "cluster".into()),
            )
        };
        match &e.record {
            Record::RunStarted { command, operator } => {
                sessions.push((e.at.clone(), command.clone(), operator.clone()))
            }
            Record::StepStarted { step, node } => {
                let r = records
                    .entry(key(step, node))
                    .or_insert_with(|| StepRecord {
                        step: step.clone(),
                        node: node.clone().unwrap_or_else(|| "cluster".into()),
                        started_at: None,
                        ended_at: None,
                        outcome: "started".into(),
                        error: None,
                        actions: vec![],
                    });
                r.started_at.get_or_insert_with(|| e.at.clone());
                r.outcome = "started".into();
            }
            Record::StepDone {
                step,
                node,
                skipped,
            } => {
                if let Some(r) = records.get_mut(&key(step, node)) {
                    r.ended_at = Some(e.at.clone());
                    r.outcome = if *skipped {
                        "already-done".into()
                    } else {
                        "done".into()
                    };
                }
            }
            Record::StepFailed { step, node, error } => {
                if let Some(r) = records.get_mut(&key(step, node)) {
                    r.ended_at = Some(e.at.clone());
                    r.outcome = "failed".into();
                    r.error = Some(error.clone());
                }
            }
            Record::RolledBack { step, node } => {
                if let Some(r) = records.get_mut(&key(step, node)) {
                    r.ended_at = Some(e.at.clone());
                    r.outcome = if r.outcome == "failed" {
                        "failed, rolled back".into()
                    } else {
                        "rolled-back".into()
                    };
                }
            }
            Record::RollbackFailed { step, node, error } => {
                if let Some(r) = records.get_mut(&key(step, node)) {
                    r.ended_at = Some(e.at.clone());
                    r.outcome = "rollback-failed".into();
                    r.error = Some(error.clone());
                }
            }
            Record::RollbackStarted { .. } => {}
            Record::FollowUp { text } => {
                if !follow_ups.contains(text) {
                    follow_ups.push(text.clone());
                }
            }
            Record::RunEnded { outcome: o } => outcome = o.clone(),
        }
    }
    for f in extra_follow_ups {
        if !follow_ups.contains(f) {
            follow_ups.push(f.clone());
        }
    }
    if outcome == "completed" {
        for n in &plan.nodes {
            follow_ups.push(format!(
                "{}: the old data directory {} is kept; remove it once the restored cluster is signed off",
                n.name, n.data_dir_old
            ));
            follow_ups.push(format!(
                "{}: the original manifests are kept in {}/original; remove the run directory {} when no longer needed",
                n.name, n.run_dir, n.run_dir
            ));
        }
        if plan.restore.bump_revision.is_none() {
            follow_ups.push("the restore could not bump revisions: check that controllers and kubelets resynchronised (no stale pods, endpoints, leases)".into());
        }
        follow_ups.push("verify workloads: nodes Ready, kube-system pods Running, objects created after the snapshot are gone as expected".into());
    }
    let mut stages = Vec::new();
    for stage in &plan.stages {
        let mut steps = Vec::new();
        for step in &stage.steps {
            let targets: Vec<(String, Vec<String>)> = match &step.scope {
                Scope::Skipped(why) => vec![("cluster".into(), vec![format!("skipped: {why}")])],
                Scope::Cluster(a) => vec![(
                    "cluster".into(),
                    a.actions.iter().map(|x| x.describe()).collect(),
                )],
                Scope::Nodes(m) => m
                    .iter()
                    .map(|(n, a)| (n.clone(), a.actions.iter().map(|x| x.describe()).collect()))
                    .collect(),
            };
            for (node, actions) in targets {
                let mut r =
                    records
                        .remove(&(step.id.clone(), node.clone()))
                        .unwrap_or(StepRecord {
                            step: step.id.clone(),
                            node: node.clone(),
                            started_at: None,
                            ended_at: None,
                            outcome: if matches!(step.scope, Scope::Skipped(_)) {
                                "skipped".into()
                            } else {
                                "not-run".into()
                            },
                            error: None,
                            actions: vec![],
                        });
                r.actions = actions;
                steps.push(r);
            }
        }
        stages.push((stage.name.clone(), steps));
    }
    let started_at = entries.first().map(|e| e.at.clone());
    let ended_at = entries.last().map(|e| e.at.clone());
    let total_seconds = match (
        started_at.as_deref().and_then(parse_time),
        ended_at.as_deref().and_then(parse_time),
    ) {
        (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    Report {
        run_id: plan.run_id.clone(),
        cluster: plan.cluster.clone(),
        sessions,
        started_at,
        ended_at,
        total_seconds,
        outcome,
        inventory_sha256: plan.fingerprints.inventory_sha256.clone(),
        snapshot: plan.snapshot.clone(),
        restore: plan.restore.clone(),
        nodes: plan.nodes.clone(),
        warnings: plan
            .findings_at_least(Severity::Warning)
            .map(|f| {
                format!(
                    "{}: {}{}",
                    f.severity,
                    f.node
                        .as_deref()
                        .map(|n| format!("{n}: "))
                        .unwrap_or_default(),
                    f.message
                )
            })
            .collect(),
        stages,
        follow_ups,
    }
}

impl Report {
    /// Markdown.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# etcd restore report: cluster `{}`, run `{}`",
            self.cluster, self.run_id
        );
        let _ = writeln!(o);
        let _ = writeln!(o, "- Outcome: **{}**", self.outcome);
        if let (Some(a), Some(b)) = (&self.started_at, &self.ended_at) {
            let _ = writeln!(o, "- From {a} to {b}");
        }
        if let Some(t) = self.total_seconds {
            let _ = writeln!(o, "- Total time: {t:.1} s");
        }
        for (at, cmd, who) in &self.sessions {
            let _ = writeln!(o, "- `{cmd}` by {who} at {at}");
        }
        let _ = writeln!(o, "- Inventory SHA-256: `{}`", self.inventory_sha256);
        let _ = writeln!(
            o,
            "- Snapshot: `{}` SHA-256 `{}`, {} bytes, revision {}",
            self.snapshot.path,
            self.snapshot.sha256,
            self.snapshot.size,
            self.snapshot
                .revision
                .map_or("unknown".into(), |r| r.to_string())
        );
        let _ = writeln!(o, "- `--initial-cluster={}`", self.restore.initial_cluster);
        let _ = writeln!(o, "- `--initial-cluster-token={}`", self.restore.token);
        let _ = writeln!(
            o,
            "- Revision bump: {}",
            self.restore
                .bump_revision
                .map_or("not supported by the restore tool".into(), |b| b
                    .to_string())
        );
        let _ = writeln!(o, "- Expected cluster ID: `{}`", self.restore.cluster_id);
        let _ = writeln!(o);
        let _ = writeln!(o, "## Nodes");
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "| Node | Host | etcd | Restore tool | Old data dir (kept) | New data dir |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for n in &self.nodes {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | `{}` | `{}` |",
                n.name,
                n.host,
                n.etcd_version.as_deref().unwrap_or("unknown"),
                n.restore_tool_version,
                n.data_dir_old,
                n.data_dir_new
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "## Warnings");
            let _ = writeln!(o);
            for w in &self.warnings {
                let _ = writeln!(o, "- {w}");
            }
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "## Steps");
        for (stage, steps) in &self.stages {
            let _ = writeln!(o);
            let _ = writeln!(o, "### {stage}");
            let _ = writeln!(o);
            let _ = writeln!(o, "| Step | Node | Start | End | Outcome |");
            let _ = writeln!(o, "|---|---|---|---|---|");
            for s in steps {
                let outcome = match &s.error {
                    Some(e) => format!(
                        "{}: {}",
                        s.outcome,
                        e.replace('|', "\\|").replace('\n', " ")
                    ),
                    None => s.outcome.clone(),
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} |",
                    s.step,
                    s.node,
                    s.started_at.as_deref().unwrap_or("-"),
                    s.ended_at.as_deref().unwrap_or("-"),
                    outcome
                );
            }
            let mut shown = std::collections::BTreeSet::new();
            let mut first = true;
            for s in steps {
                for a in &s.actions {
                    if shown.insert((s.node.clone(), a.clone())) {
                        if std::mem::take(&mut first) {
                            let _ = writeln!(o);
                        }
                        let _ = writeln!(o, "- {}: {}", s.node, a.replace('|', "\\|"));
                    }
                }
            }
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "## Follow-ups");
        let _ = writeln!(o);
        if self.follow_ups.is_empty() {
            let _ = writeln!(o, "None.");
        }
        for f in &self.follow_ups {
            let _ = writeln!(o, "- [ ] {f}");
        }
        o
    }

    /// Writes `report.md` and `report.json` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        let md = dir.join("report.md");
        let js = dir.join("report.json");
        crate::engine::journal::write_synced(&md, self.markdown().as_bytes())?;
        let json = serde_json::to_string_pretty(self)?;
        crate::engine::journal::write_synced(&js, json.as_bytes())?;
        Ok((md, js))
    }
}

/// Rebuilds and writes the report of a journal's run.
pub fn write_for(
    plan: &Plan,
    journal: &Journal,
    extra: &[String],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    build(plan, journal.entries(), extra).write(journal.dir())
}
