//! `etcd-recover guide` (and `apply` without a snapshot on a terminal): walks a user who has
//! only an inventory through picking the snapshot, verifying it, planning, and then the same
//! confirmations and run as `apply` (the shared flow, `cli::flow`). Nothing here restores
//! anything by itself.

use std::path::{Path, PathBuf};

use clap::Args;

use super::args::{Global, OutputArg, PlanOptions, PlanOpts};
use super::flow::{declined, Session, StartOptions};
use crate::error::{Exit, ExitWith, HintExt};
use crate::plan::build::SnapshotInput;
use crate::plan::render::{self, Format};
use crate::ui::{self, prompt, Printer, Style};
use crate::workflow;

/// `etcd-recover guide`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  etcd-recover guide -i inventory.yaml          # run where the snapshots are: *.db files are offered
  etcd-recover guide                            # asks for the inventory too
  etcd-recover guide -i inventory.yaml --step   # and confirm every stage
  etcd-recover apply                            # the same, on a terminal

Four steps: the inventory (every node is reached over SSH), the snapshot (picked, then verified),
the plan (read from every node; its summary and diffs are shown), and the restore, after the
same confirmations as `apply`: consent to warnings, then typing the cluster name. Nothing is
changed before that; Ctrl-C quits.")]
pub struct GuideArgs {
    /// Inventory of the control-plane nodes [default: asked, offering ./inventory.yaml]
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Confirm before every stage (continue, show details, pause, roll back)
    #[arg(long)]
    pub step: bool,

    /// On failure, stop and leave the run paused instead of rolling back
    #[arg(long)]
    pub no_rollback: bool,

    /// Progress output
    #[arg(long, value_enum, default_value_t = OutputArg::Auto)]
    pub output: OutputArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub opts: PlanOpts,
}

impl GuideArgs {
    /// Resolves the arguments.
    fn settings(&self) -> Settings {
        Settings {
            inventory: self.inventory.clone(),
            step: self.step,
            no_rollback: self.no_rollback,
            style: self.output.style(),
            plan: self.opts.resolve(),
        }
    }
}

/// What the guide starts from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Inventory file; asked for when `None`.
    pub inventory: Option<PathBuf>,
    /// Confirm every stage.
    pub step: bool,
    /// On failure, pause instead of rolling back.
    pub no_rollback: bool,
    /// How progress is shown.
    pub style: Style,
    /// The plan options.
    pub plan: PlanOptions,
}

/// Runs `guide`.
pub(crate) fn run(args: &GuideArgs, global: &Global) -> anyhow::Result<Exit> {
    start(&args.settings(), global)
}

fn heading(printer: &Printer, n: usize, what: &str) {
    printer.say(&format!("\n{}", ui::bold(&format!("Step {n}/4: {what}"))));
}

fn expand(input: &str) -> PathBuf {
    let t = input.trim();
    match (t.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(t),
    }
}

/// Why `input` cannot be read as a file, if it cannot.
fn readable_file(input: &str) -> Result<(), String> {
    if input.trim().is_empty() {
        return Err("type a path".into());
    }
    let p = expand(input);
    match std::fs::metadata(&p) {
        Err(e) => Err(format!("{}: {e}", p.display())),
        Ok(m) if !m.is_file() => Err(format!("{} is not a file", p.display())),
        Ok(_) => std::fs::File::open(&p)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", p.display())),
    }
}

fn ask_inventory(printer: &Printer) -> anyhow::Result<PathBuf> {
    let mut question = prompt::Text::new("Inventory file").validate(|s| {
        readable_file(s)?;
        workflow::load_inventory(&expand(s))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    });
    if Path::new("inventory.yaml").is_file() {
        question = question.default("inventory.yaml");
    }
    question
        .ask(printer)
        .map(|t| expand(&t))
        .ok_or_else(|| declined("no inventory given"))
}

/// `*.db` files in the current directory, newest first, with a label.
fn candidates() -> Vec<(PathBuf, String)> {
    let Ok(dir) = std::fs::read_dir(".") else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf, String)> = dir
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            let modified = m.modified().ok()?;
            let when: chrono::DateTime<chrono::Utc> = modified.into();
            let name = e.file_name().to_string_lossy().into_owned();
            let label = format!(
                "{name}  ({}, modified {})",
                ui::binary_bytes(m.len()),
                when.format("%Y-%m-%d %H:%M UTC")
            );
            Some((modified, PathBuf::from(name), label))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, p, l)| (p, l)).collect()
}

fn pick_snapshot(printer: &Printer) -> anyhow::Result<PathBuf> {
    let found = candidates();
    if !found.is_empty() {
        let mut items: Vec<&str> = found.iter().map(|(_, l)| l.as_str()).collect();
        items.push("another file (type its path)");
        let choice = prompt::select(
            printer,
            "Snapshot to restore (*.db here, newest first)",
            &items,
            0,
        )
        .ok_or_else(|| declined("no snapshot chosen"))?;
        if let Some((p, _)) = found.get(choice) {
            return Ok(p.clone());
        }
    }
    let typed = prompt::Text::new("Path of the snapshot file (from `etcdctl snapshot save`)")
        .validate(readable_file)
        .ask(printer)
        .ok_or_else(|| declined("no snapshot chosen"))?;
    Ok(expand(&typed))
}

fn show_verdict(printer: &Printer, snap: &SnapshotInput) {
    let rev = snap.revision.map_or("unknown".into(), |r| r.to_string());
    let keys = snap.total_keys.map_or("unknown".into(), |k| k.to_string());
    let verdict = match &snap.refused {
        None => ui::green(&format!("\u{2714} {}", snap.verdict)),
        Some(_) => ui::red(&format!("\u{2718} {}", snap.verdict)),
    };
    let text = if snap.refused.is_some() {
        format!("  {}\n  {verdict}", snap.path)
    } else {
        format!(
            "  {}\n  sha256 {}\n  {} bytes, revision {rev}, {keys} keys\n  {verdict}",
            snap.path, snap.sha256, snap.size
        )
    };
    printer.say(&text);
}

/// Runs the guide from `guide`'s settings.
pub(crate) fn start(guide: &Settings, global: &Global) -> anyhow::Result<Exit> {
    if !prompt::can_ask() {
        return Err(anyhow::Error::new(ExitWith(Exit::Usage))
            .context("the guide asks questions and needs a terminal"))
        .hint("review with `etcd-recover plan -i INV --snapshot FILE`, then restore with `etcd-recover apply -i INV --snapshot FILE --yes`");
    }
    Session::run(guide.style, |session| async move {
        let printer = &session.printer;
        printer.say(
            "etcd-recover guide: restore etcd from a snapshot on every control-plane node.\nNothing is changed until you type the cluster name at the end; Ctrl-C quits.",
        );

        heading(printer, 1, "inventory");
        let inventory = match &guide.inventory {
            Some(i) => i.clone(),
            None => ask_inventory(printer)?,
        };
        let s = guide.plan.settings(global, inventory.clone());
        printer.say(&format!(
            "  connecting to the nodes of {} ...",
            inventory.display()
        ));
        let cluster = workflow::connect(&s).await?;
        printer.warnings(&cluster.inventory.warnings);
        let mut lines = String::new();
        for n in &cluster.inventory.inventory.nodes {
            match cluster
                .unreachable
                .iter()
                .find(|u| u.node.as_deref() == Some(&n.name))
            {
                None => lines.push_str(&format!(
                    "  {} {} reachable over SSH\n",
                    ui::green("\u{2714}"),
                    n.name
                )),
                Some(u) => lines.push_str(&format!(
                    "  {} {}: {}\n",
                    ui::red("\u{2718}"),
                    n.name,
                    u.message
                )),
            }
        }
        printer.say(lines.trim_end());

        heading(printer, 2, "snapshot");
        let (snapshot, snap) = loop {
            let path = pick_snapshot(printer)?;
            printer.say(&format!("  verifying {} ...", path.display()));
            let snap = workflow::snapshot_input(&path, s.skip_hash_check);
            show_verdict(printer, &snap);
            if snap.refused.is_none() {
                break (path, snap);
            }
            let again = prompt::select(
                printer,
                "This snapshot cannot be restored",
                &["choose another snapshot", "quit"],
                0,
            );
            if again != Some(0) {
                return Err(declined("no valid snapshot chosen")).hint(
                    "a raw copy of member/snap/db has no integrity trailer: pass --skip-hash-check to accept it knowingly",
                );
            }
        };

        heading(printer, 3, "plan");
        printer.say("  reading every node (nothing is changed) ...");
        let (plan, _) =
            workflow::make_plan_with(&s, &cluster, snap, workflow::new_run_id()).await?;
        let color = ui::color_stderr();
        printer.say(&render::summary(&plan, color));
        if plan.is_applicable() {
            review(printer, &plan, color)?;
            heading(printer, 4, "restore");
        }
        let opts = StartOptions {
            yes: false,
            step: guide.step,
            no_rollback: guide.no_rollback,
            dry_run: false,
            show_summary: false,
        };
        session
            .start(plan, &cluster, &s.state_dir, &snapshot, opts)
            .await
    })
}

/// Offers the full plan, as text or saved as Markdown, until the user goes on or quits.
fn review(printer: &Printer, plan: &crate::plan::Plan, color: bool) -> anyhow::Result<()> {
    let items = [
        "go on to the confirmation",
        "show the full plan (every command, move, wait and rollback)",
        "save the full plan as Markdown (for the change ticket)",
        "quit",
    ];
    loop {
        match prompt::select(printer, "Next", &items, 0) {
            Some(0) => return Ok(()),
            Some(1) => printer.say(&render::render(plan, Format::Text, color)),
            Some(2) => {
                let name = format!("etcd-restore-plan-{}.md", plan.run_id);
                if let Some(out) = prompt::Text::new("Save to").default(name).ask(printer) {
                    let out = expand(&out);
                    match std::fs::write(&out, render::render(plan, Format::Markdown, false)) {
                        Ok(()) => printer.say(&format!("  saved {}", out.display())),
                        Err(e) => printer.say(&format!("  cannot write {}: {e}", out.display())),
                    }
                }
            }
            _ => return Err(declined("quit before the restore")),
        }
    }
}
