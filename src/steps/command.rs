//! `command`: a site-specific command on every node, with an optional undo. Arguments are an
//! argv, never a shell string; `@NAME` takes the inventory's command of that name.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::step::{NodeCx, PlanCx, Planned, Site, Step};
use crate::action::{Action, Actions, Scope};

/// Inventory commands a `command` step can name as `@NAME` (from each node's `commands:`).
pub const INVENTORY_COMMANDS: &[&str] = &["restart_kubelet"];

/// When a `command` step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// On every run.
    #[default]
    Always,
    /// Only when the restore could not bump the revision (old restore tool), so clients with
    /// watches and caches must be restarted to forget revisions that now mean something else.
    NoRevisionBump,
}

/// Runs a site-specific command on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Step name, shown in plans and reports.
    pub name: String,
    /// Argument vector, or `[ "@NAME" ]` to use the inventory's `commands.NAME`.
    /// `${NODE}`, `${HOST}`, `${RUN_ID}` and `${RUN_DIR}` are substituted.
    pub run: Vec<String>,
    /// Undo command, run on rollback (same substitutions). Without it the step is
    /// treated as harmless to leave done.
    #[serde(default)]
    pub rollback: Option<Vec<String>>,
    /// When the step runs.
    #[serde(default)]
    pub when: When,
    /// Seconds the command may take.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    120
}

impl Step for Command {
    fn validate(&self, at: &Site<'_>) -> anyhow::Result<()> {
        let name = &self.name;
        let at = format!("{}{}", at.origin, at.line_of(&format!("name: {name}")));
        if self.run.is_empty() {
            bail!("{at}: command step `{name}` has an empty `run`");
        }
        for arg in self.run.iter().chain(self.rollback.iter().flatten()) {
            if let Some(cmd) = arg.strip_prefix('@') {
                if !INVENTORY_COMMANDS.contains(&cmd) {
                    bail!(
                        "{at}: command step `{name}` uses `{arg}`, but the inventory defines no command `{cmd}`; known: {}",
                        INVENTORY_COMMANDS
                            .iter()
                            .map(|c| format!("@{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        Ok(())
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let title = format!("command {}", self.name);
        if self.when == When::NoRevisionBump && cx.bump.is_some() {
            let why = "the restore bumps revisions, so this is not needed";
            return Planned::new(title, false, Scope::Skipped(why.into()));
        }
        let run = |argv: &[String], n: &NodeCx<'_>| Action::Run {
            argv: expand(argv, n, cx.run_id),
            timeout: self.timeout,
        };
        let scope = cx.per_node(|n| Actions {
            actions: vec![run(&self.run, n)],
            rollback: self.rollback.iter().map(|rb| run(rb, n)).collect(),
        });
        Planned::new(title, true, scope)
    }
}

/// Substitutes `@NAME` (an inventory command) and `${NODE}`, `${HOST}`, `${RUN_ID}`, `${RUN_DIR}`.
fn expand(argv: &[String], n: &NodeCx<'_>, run_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for a in argv {
        if let Some(name) = a.strip_prefix('@') {
            match name {
                "restart_kubelet" => out.extend(n.facts.commands.restart_kubelet.iter().cloned()),
                other => out.push(format!("@{other}")),
            }
            continue;
        }
        out.push(
            a.replace("${NODE}", &n.facts.name)
                .replace("${HOST}", &n.facts.host)
                .replace("${RUN_ID}", run_id)
                .replace("${RUN_DIR}", n.run.path()),
        );
    }
    out
}
