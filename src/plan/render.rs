//! Renders a [`Plan`] as text (optionally colored), Markdown for change tickets, or JSON.

use std::fmt::Write as _;

use super::{Action, Plan, Scope, Severity};

/// Output format of a rendered plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Terminal text.
    Text,
    /// Markdown, for change tickets.
    Markdown,
    /// The saved-plan JSON.
    Json,
}

/// Renders `plan` in `format`. `color` applies to text only.
pub fn render(plan: &Plan, format: Format, color: bool) -> String {
    match format {
        Format::Text => text(plan, color),
        Format::Markdown => markdown(plan),
        Format::Json => {
            let mut s = plan.to_json();
            s.push('\n');
            s
        }
    }
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn diff_line(&self, line: &str) -> String {
        if line.starts_with("+++") || line.starts_with("---") {
            self.bold(line)
        } else if line.starts_with('+') {
            self.green(line)
        } else if line.starts_with('-') {
            self.red(line)
        } else if line.starts_with("@@") {
            self.wrap("36", line)
        } else {
            line.to_string()
        }
    }
}

fn bump_text(plan: &Plan) -> String {
    match plan.restore.bump_revision {
        Some(b) => format!("--bump-revision={b} --mark-compacted"),
        None => "NOT SUPPORTED by the restore tool: revisions restart from the snapshot's; \
                 clients that cached newer revisions (watches, informers) must be restarted"
            .to_string(),
    }
}

fn text(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} for cluster {} (run {}, playbook {})",
        p.bold("Restore plan"),
        p.bold(&plan.cluster),
        plan.run_id,
        plan.playbook
    );
    let _ = writeln!(o);
    let s = &plan.snapshot;
    let _ = writeln!(o, "{}", p.bold("Snapshot"));
    let _ = writeln!(o, "  file      {}", s.path);
    let _ = writeln!(o, "  sha256    {}", s.sha256);
    let _ = writeln!(o, "  size      {} bytes", s.size);
    if let Some(r) = s.revision {
        let _ = writeln!(o, "  revision  {r}");
    }
    if let Some(k) = s.total_keys {
        let _ = writeln!(o, "  keys      {k}");
    }
    let _ = writeln!(o, "  verdict   {}", s.verdict);
    let _ = writeln!(o);
    let r = &plan.restore;
    let _ = writeln!(
        o,
        "{}",
        p.bold("Restore parameters (identical on every node)")
    );
    let _ = writeln!(o, "  --initial-cluster        {}", r.initial_cluster);
    let _ = writeln!(o, "  --initial-cluster-token  {}", r.token);
    let bump = bump_text(plan);
    let bump = if r.bump_revision.is_some() {
        bump
    } else {
        p.yellow(&bump)
    };
    let _ = writeln!(o, "  revision bump            {bump}");
    let _ = writeln!(o, "  expected cluster ID      {}", r.cluster_id);
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", p.bold("Nodes"));
    for n in &plan.nodes {
        let member = r.members.iter().find(|m| m.name == n.name);
        let _ = writeln!(o, "  {} ({})", p.bold(&n.name), n.host);
        if let Some(m) = member {
            let _ = writeln!(
                o,
                "    member ID     {}  peer {}",
                m.member_id,
                m.peer_urls.join(",")
            );
        }
        let _ = writeln!(
            o,
            "    etcd          {}  restore tool {} {}",
            n.etcd_version.as_deref().unwrap_or("unknown"),
            n.restore_tool,
            n.restore_tool_version
        );
        let _ = writeln!(
            o,
            "    data dir      {} (kept)  ->  {} (new)",
            n.data_dir_old, n.data_dir_new
        );
        let _ = writeln!(o, "    run dir       {}", n.run_dir);
    }
    let _ = writeln!(o);
    o.push_str(&findings(plan, color));
    let total = plan.stages.len();
    for (i, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{}",
            p.bold(&format!("Stage {}/{total}: {}", i + 1, stage.name))
        );
        for step in &stage.steps {
            let _ = writeln!(o, "  step {} ({})", step.id, step.title);
            if let Some(order) = step.order.describe() {
                let _ = writeln!(o, "    order: {order}");
            }
            match &step.scope {
                Scope::Skipped(why) => {
                    let _ = writeln!(o, "    skipped: {why}");
                }
                Scope::Cluster(a) => {
                    let _ = writeln!(o, "    cluster:");
                    write_actions(&mut o, &p, &a.actions, "      ");
                    write_rollback(&mut o, &p, &a.rollback, "      ");
                }
                Scope::Nodes(map) => {
                    for n in &plan.nodes {
                        let Some(a) = map.get(&n.name) else { continue };
                        let _ = writeln!(o, "    {}:", n.name);
                        write_actions(&mut o, &p, &a.actions, "      ");
                        write_rollback(&mut o, &p, &a.rollback, "      ");
                    }
                }
            }
        }
    }
    let _ = writeln!(o);
    if plan.is_applicable() {
        let _ = writeln!(
            o,
            "{}",
            p.green("No blocking findings: this plan can be applied.")
        );
    } else {
        let n = plan.findings_at_least(Severity::Error).count();
        let _ = writeln!(
            o,
            "{}",
            p.red(&format!(
                "{n} blocking finding(s): apply will refuse this plan."
            ))
        );
    }
    o
}

fn write_actions(o: &mut String, p: &Paint, actions: &[Action], indent: &str) {
    for a in actions {
        let _ = writeln!(o, "{indent}- {}", a.describe());
        if let Action::WriteFile { diff, .. } = a {
            for line in diff.lines() {
                let _ = writeln!(o, "{indent}    {}", p.diff_line(line));
            }
        }
    }
}

fn write_rollback(o: &mut String, p: &Paint, actions: &[Action], indent: &str) {
    if actions.is_empty() {
        return;
    }
    let _ = writeln!(o, "{indent}{}", p.dim("rollback:"));
    for a in actions {
        let _ = writeln!(o, "{indent}  {}", p.dim(&format!("- {}", a.describe())));
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# etcd restore plan: cluster `{}`", plan.cluster);
    let _ = writeln!(o);
    let _ = writeln!(o, "- Run: `{}`", plan.run_id);
    let _ = writeln!(o, "- Playbook: `{}`", plan.playbook);
    let _ = writeln!(
        o,
        "- Created: {} by etcd-recover {}",
        plan.created_at, plan.tool_version
    );
    let _ = writeln!(
        o,
        "- Inventory SHA-256: `{}`",
        plan.fingerprints.inventory_sha256
    );
    let _ = writeln!(o);
    let s = &plan.snapshot;
    let _ = writeln!(o, "## Snapshot");
    let _ = writeln!(o);
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| File | `{}` |", md_escape(&s.path));
    let _ = writeln!(o, "| SHA-256 | `{}` |", s.sha256);
    let _ = writeln!(o, "| Size | {} bytes |", s.size);
    let rev = s.revision.map_or("unknown".into(), |r| r.to_string());
    let _ = writeln!(o, "| Revision | {rev} |");
    let keys = s.total_keys.map_or("unknown".into(), |k| k.to_string());
    let _ = writeln!(o, "| Keys | {keys} |");
    let _ = writeln!(o, "| Verdict | {} |", md_escape(&s.verdict));
    let _ = writeln!(o);
    let r = &plan.restore;
    let _ = writeln!(o, "## Restore parameters (identical on every node)");
    let _ = writeln!(o);
    let _ = writeln!(o, "- `--initial-cluster={}`", r.initial_cluster);
    let _ = writeln!(o, "- `--initial-cluster-token={}`", r.token);
    let _ = writeln!(o, "- Revision bump: {}", bump_text(plan));
    let _ = writeln!(o, "- Expected cluster ID: `{}`", r.cluster_id);
    let _ = writeln!(o);
    let _ = writeln!(o, "## Nodes");
    let _ = writeln!(o);
    let _ = writeln!(o, "| Node | Host | Member ID | Peer URLs | etcd | Restore tool | Data dir (kept) | New data dir |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for n in &plan.nodes {
        let m = r.members.iter().find(|m| m.name == n.name);
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {} | `{}` {} | `{}` | `{}` |",
            n.name,
            n.host,
            m.map_or("", |m| m.member_id.as_str()),
            m.map_or(String::new(), |m| m.peer_urls.join(",")),
            n.etcd_version.as_deref().unwrap_or("unknown"),
            n.restore_tool,
            n.restore_tool_version,
            n.data_dir_old,
            n.data_dir_new
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## Preflight findings");
    let _ = writeln!(o);
    if plan.findings.is_empty() {
        let _ = writeln!(o, "None.");
    }
    for f in &plan.findings {
        let who = f
            .node
            .as_deref()
            .map(|n| format!("{n}: "))
            .unwrap_or_default();
        let hint = f
            .hint
            .as_deref()
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        let _ = writeln!(o, "- **{}** {who}{}{hint}", f.severity, f.message);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## Stages");
    for (i, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(o);
        let _ = writeln!(o, "### {}. {}", i + 1, stage.name);
        for step in &stage.steps {
            let _ = writeln!(o);
            let _ = writeln!(o, "**{}** ({})", step.id, step.title);
            let _ = writeln!(o);
            if let Some(order) = step.order.describe() {
                let _ = writeln!(o, "Order: {}.", md_escape(order));
                let _ = writeln!(o);
            }
            let mut emit = |who: &str, a: &super::Actions| {
                let _ = writeln!(o, "- {who}");
                for act in &a.actions {
                    let _ = writeln!(o, "  - {}", md_escape(&act.describe()));
                    if let Action::WriteFile { diff, .. } = act {
                        let _ = writeln!(o, "\n    ```diff");
                        for line in diff.lines() {
                            let _ = writeln!(o, "    {line}");
                        }
                        let _ = writeln!(o, "    ```\n");
                    }
                }
                for act in &a.rollback {
                    let _ = writeln!(o, "  - rollback: {}", md_escape(&act.describe()));
                }
            };
            match &step.scope {
                Scope::Skipped(why) => {
                    let _ = writeln!(o, "- skipped: {why}");
                }
                Scope::Cluster(a) => emit("cluster", a),
                Scope::Nodes(map) => {
                    for n in &plan.nodes {
                        if let Some(a) = map.get(&n.name) {
                            emit(&format!("`{}`", n.name), a);
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(o);
    if plan.is_applicable() {
        let _ = writeln!(o, "**No blocking findings: this plan can be applied.**");
    } else {
        let _ = writeln!(o, "**Blocking findings: apply will refuse this plan.**");
    }
    o
}

/// The "Preflight findings" section of the text plan.
pub fn findings(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let mut o = String::new();
    let _ = writeln!(o, "{}", p.bold("Preflight findings"));
    if plan.findings.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for f in &plan.findings {
        let sev = match f.severity {
            Severity::Error => p.red("error"),
            Severity::Warning => p.yellow("warning"),
            Severity::Info => p.dim("info"),
        };
        let who = f
            .node
            .as_deref()
            .map(|n| format!("{n}: "))
            .unwrap_or_default();
        let _ = writeln!(o, "  {sev}: {who}{}", f.message);
        if let Some(h) = &f.hint {
            let _ = writeln!(o, "    hint: {h}");
        }
    }
    o
}

/// The pods a plan stops, in the order it stops them.
fn stopped_pods(plan: &Plan) -> Vec<String> {
    let mut pods: Vec<String> = Vec::new();
    for stage in &plan.stages {
        for step in &stage.steps {
            let Scope::Nodes(map) = &step.scope else {
                continue;
            };
            for a in map.values().flat_map(|a| a.actions.iter()) {
                if let Action::WaitStopped { pod, .. } = a {
                    if !pods.contains(pod) {
                        pods.push(pod.clone());
                    }
                }
            }
        }
    }
    pods
}

/// The short form shown before `apply` asks for confirmation: nodes, snapshot (SHA-256 and
/// revision), what is stopped, the stages, every file diff and the findings. The full plan is
/// [`render`]'s.
pub fn summary(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} for cluster {} (run {}, playbook {})",
        p.bold("Restore plan"),
        p.bold(&plan.cluster),
        plan.run_id,
        plan.playbook
    );
    let _ = writeln!(o);
    let s = &plan.snapshot;
    let rev = s.revision.map_or("unknown".into(), |r| r.to_string());
    let keys = s.total_keys.map_or("unknown".into(), |k| k.to_string());
    let _ = writeln!(o, "  snapshot   {}", s.path);
    let _ = writeln!(o, "             sha256 {}", s.sha256);
    let _ = writeln!(
        o,
        "             {} bytes, revision {rev}, {keys} keys",
        s.size
    );
    let _ = writeln!(o, "             {}", s.verdict);
    let r = &plan.restore;
    let bump = bump_text(plan);
    let bump = if r.bump_revision.is_some() {
        bump
    } else {
        p.yellow(&bump)
    };
    let _ = writeln!(o, "  revisions  {bump}");
    let _ = writeln!(o, "  cluster ID {} (new)", r.cluster_id);
    let _ = writeln!(o, "  nodes      {}", plan.nodes.len());
    for n in &plan.nodes {
        let _ = writeln!(
            o,
            "    {} ({}, etcd {}): data dir {} (kept) -> {} (new)",
            p.bold(&n.name),
            n.host,
            n.etcd_version.as_deref().unwrap_or("unknown"),
            n.data_dir_old,
            n.data_dir_new
        );
    }
    let pods = stopped_pods(plan);
    if !pods.is_empty() {
        let _ = writeln!(
            o,
            "  stops      {} on every node, until the restored etcd is healthy",
            pods.join(", ")
        );
    }
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(o, "  stages     {}", names.join(" -> "));
    let mut diffs = Vec::new();
    for stage in &plan.stages {
        for step in &stage.steps {
            let Scope::Nodes(map) = &step.scope else {
                continue;
            };
            for n in &plan.nodes {
                for a in map
                    .get(&n.name)
                    .map(|a| a.actions.as_slice())
                    .unwrap_or(&[])
                {
                    if let Action::WriteFile { diff, .. } = a {
                        diffs.push((n.name.clone(), diff.clone()));
                    }
                }
            }
        }
    }
    if !diffs.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{}", p.bold("Files changed"));
        for (node, diff) in diffs {
            let _ = writeln!(o, "  {node}:");
            for line in diff.lines() {
                let _ = writeln!(o, "    {}", p.diff_line(line));
            }
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", p.bold("Preflight findings"));
    let shown: Vec<_> = plan.findings_at_least(Severity::Warning).collect();
    if shown.is_empty() {
        let _ = writeln!(o, "  no errors or warnings");
    }
    for f in shown {
        let sev = match f.severity {
            Severity::Error => p.red("error"),
            _ => p.yellow("warning"),
        };
        let who = f
            .node
            .as_deref()
            .map(|n| format!("{n}: "))
            .unwrap_or_default();
        let _ = writeln!(o, "  {sev}: {who}{}", f.message);
        if let Some(h) = &f.hint {
            let _ = writeln!(o, "    hint: {h}");
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Every command, move, wait and rollback action: `etcd-recover plan` (or \"show details\" with --step)."
    );
    o
}
