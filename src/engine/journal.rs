//! The local run journal: append-only JSON lines, one fsync per record.
//!
//! Every run has a directory under the state dir (`$XDG_STATE_HOME/etcd-recover/runs/<run-id>`,
//! or `--state-dir`) holding `plan.json`, `journal.jsonl` and the reports. The journal is the
//! source of truth for `resume`, `rollback` and `status` on this workstation; each node's run
//! directory holds a copy of the plan and that node's step state for use from elsewhere.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::HintExt;
use crate::plan::Plan;

/// What happened, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Record {
    /// A run, resume or rollback began.
    RunStarted {
        /// `apply`, `resume` or `rollback`.
        command: String,
        /// Who ran it (`user@host`).
        operator: String,
    },
    /// A step began on a node (`node` = None for cluster steps).
    StepStarted {
        /// Step id.
        step: String,
        /// Node, or `None` for a cluster step.
        node: Option<String>,
    },
    /// A step finished on a node.
    StepDone {
        /// Step id.
        step: String,
        /// Node, or `None` for a cluster step.
        node: Option<String>,
        /// True when it was found already done.
        skipped: bool,
    },
    /// A step failed on a node.
    StepFailed {
        /// Step id.
        step: String,
        /// Node, or `None`.
        node: Option<String>,
        /// The error chain, rendered.
        error: String,
    },
    /// A step's rollback began.
    RollbackStarted {
        /// Step id.
        step: String,
        /// Node, or `None`.
        node: Option<String>,
    },
    /// A step was rolled back.
    RolledBack {
        /// Step id.
        step: String,
        /// Node, or `None`.
        node: Option<String>,
    },
    /// A step's rollback failed.
    RollbackFailed {
        /// Step id.
        step: String,
        /// Node, or `None`.
        node: Option<String>,
        /// The error chain.
        error: String,
    },
    /// Something the user must do later.
    FollowUp {
        /// What to do.
        text: String,
    },
    /// The run ended (for now).
    RunEnded {
        /// `completed`, `rolled-back`, `paused`, `failed`, `rollback-failed`.
        outcome: String,
    },
}

/// A record with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
}

/// Directory holding every run's local state.
pub fn default_state_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("etcd-recover")
}

/// An open journal for one run.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    entries: Vec<Entry>,
}

impl Journal {
    /// Creates the run directory and saves the plan; fails if the run already exists.
    pub fn create(state_dir: &Path, plan: &Plan) -> anyhow::Result<Journal> {
        let dir = state_dir.join("runs").join(&plan.run_id);
        if dir.join("journal.jsonl").exists() {
            anyhow::bail!(
                "run {} already has a journal in `{}`",
                plan.run_id,
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create run directory `{}`", dir.display()))?;
        write_synced(&dir.join("plan.json"), plan.to_json().as_bytes())?;
        Journal::open_dir(dir)
    }

    /// Opens an existing run by id.
    pub fn open(state_dir: &Path, run_id: &str) -> anyhow::Result<(Journal, Plan)> {
        let dir = state_dir.join("runs").join(run_id);
        let plan_path = dir.join("plan.json");
        let text = std::fs::read_to_string(&plan_path)
            .with_context(|| format!("no run {run_id} in `{}`", state_dir.display()))
            .hint("list runs with `etcd-recover status`; a run started on another workstation is resumed with `-i INVENTORY`, which reads the plan from the nodes")?;
        let plan: Plan = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not a plan", plan_path.display()))?;
        Ok((Journal::open_dir(dir)?, plan))
    }

    /// Opens (or starts) the journal in a run directory that already holds `plan.json`.
    pub fn open_dir(dir: PathBuf) -> anyhow::Result<Journal> {
        let path = dir.join("journal.jsonl");
        let mut entries = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read journal `{}`", path.display()))?;
            let mut good_len = 0usize;
            let mut offset = 0usize;
            for (i, line) in text.split_inclusive('\n').enumerate() {
                offset += line.len();
                if line.trim().is_empty() {
                    good_len = offset;
                    continue;
                }
                match serde_json::from_str::<Entry>(line) {
                    Ok(e) => {
                        entries.push(e);
                        good_len = offset;
                    }
                    // A torn last record (crash mid-write) is cut off; anything else is corruption.
                    Err(_) if offset == text.len() && !line.ends_with('\n') => break,
                    Err(e) => {
                        anyhow::bail!("journal `{}` line {}: {e}", path.display(), i + 1)
                    }
                }
            }
            if good_len < text.len() {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("cannot repair journal `{}`", path.display()))?;
                f.set_len(good_len as u64)
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot repair journal `{}`", path.display()))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open journal `{}`", path.display()))?;
        Ok(Journal { dir, file, entries })
    }

    /// Appends a record and fsyncs it before returning.
    pub fn record(&mut self, record: Record) -> anyhow::Result<()> {
        let entry = Entry {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            record,
        };
        let mut line = serde_json::to_string(&entry).context("cannot encode journal record")?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write journal in `{}`", self.dir.display()))?;
        self.entries.push(entry);
        Ok(())
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every record so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// (step, node) pairs that completed and were not rolled back since.
    pub fn done(&self) -> BTreeSet<(String, Option<String>)> {
        let mut done = BTreeSet::new();
        for e in &self.entries {
            match &e.record {
                Record::StepDone { step, node, .. } => {
                    done.insert((step.clone(), node.clone()));
                }
                Record::RolledBack { step, node } => {
                    done.remove(&(step.clone(), node.clone()));
                }
                _ => {}
            }
        }
        done
    }

    /// (step, node) pairs that started (completed or not) and were not rolled back since: what
    /// a rollback must undo.
    pub fn touched(&self) -> BTreeSet<(String, Option<String>)> {
        let mut t = BTreeSet::new();
        for e in &self.entries {
            match &e.record {
                Record::StepStarted { step, node } => {
                    t.insert((step.clone(), node.clone()));
                }
                Record::RolledBack { step, node } => {
                    t.remove(&(step.clone(), node.clone()));
                }
                _ => {}
            }
        }
        t
    }

    /// Follow-ups recorded so far, without repeats.
    pub fn follow_ups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.entries {
            if let Record::FollowUp { text } = &e.record {
                if !out.contains(text) {
                    out.push(text.clone());
                }
            }
        }
        out
    }

    /// The last `RunEnded` outcome, if any.
    pub fn last_outcome(&self) -> Option<&str> {
        self.entries.iter().rev().find_map(|e| match &e.record {
            Record::RunEnded { outcome } => Some(outcome.as_str()),
            _ => None,
        })
    }
}

/// Writes a file and fsyncs it (and its directory).
pub fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Runs recorded under a state directory, newest first.
pub fn list_runs(state_dir: &Path) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(state_dir.join("runs"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join("plan.json").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs.reverse();
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny_plan(run_id: &str) -> Plan {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "tool_version": "0", "run_id": run_id, "created_at": "t",
            "cluster": "c", "inventory": "i", "playbook": "p",
            "fingerprints": {"inventory_sha256": "", "snapshot_sha256": "", "playbook_sha256": "", "manifests": {}},
            "snapshot": {"path": "s", "size": 0, "sha256": "", "revision": null, "total_keys": null, "verdict": ""},
            "restore": {"initial_cluster": "", "token": "", "bump_revision": null, "members": [], "cluster_id": ""},
            "nodes": [], "findings": [], "stages": []
        }))
        .unwrap()
    }

    #[test]
    fn records_survive_reopen_and_rollback_clears_done() {
        let dir = tempfile::tempdir().unwrap();
        let plan = tiny_plan("r1");
        let mut j = Journal::create(dir.path(), &plan).unwrap();
        let n = Some("cp-1".to_string());
        j.record(Record::StepStarted {
            step: "a/1".into(),
            node: n.clone(),
        })
        .unwrap();
        j.record(Record::StepDone {
            step: "a/1".into(),
            node: n.clone(),
            skipped: false,
        })
        .unwrap();
        j.record(Record::StepStarted {
            step: "b/1".into(),
            node: n.clone(),
        })
        .unwrap();
        drop(j);
        let (mut j, p) = Journal::open(dir.path(), "r1").unwrap();
        assert_eq!(p.run_id, "r1");
        assert_eq!(j.done().len(), 1);
        assert_eq!(j.touched().len(), 2);
        j.record(Record::RolledBack {
            step: "a/1".into(),
            node: n,
        })
        .unwrap();
        assert!(j.done().is_empty());
        assert_eq!(list_runs(dir.path()), ["r1"]);
        assert!(Journal::create(dir.path(), &plan).is_err());
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let plan = tiny_plan("r2");
        let mut j = Journal::create(dir.path(), &plan).unwrap();
        j.record(Record::StepDone {
            step: "a/1".into(),
            node: None,
            skipped: false,
        })
        .unwrap();
        let path = j.dir().join("journal.jsonl");
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at\":\"2026").unwrap();
        let (mut j, _) = Journal::open(dir.path(), "r2").unwrap();
        assert_eq!(j.done().len(), 1);
        j.record(Record::StepDone {
            step: "b/1".into(),
            node: None,
            skipped: false,
        })
        .unwrap();
        drop(j);
        let (j, _) = Journal::open(dir.path(), "r2").unwrap();
        assert_eq!(j.done().len(), 2);
    }
}
