//! `etcd-recover guide` (and `apply` without a snapshot on a terminal): walks a user who has
//! only an inventory through picking the snapshot, verifying it, planning, and then the same
//! confirmations and run as `apply` ([`super::restore::execute`]). Nothing here restores
//! anything by itself.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::common::{OutputArg, SshArgs, StateArgs};
use super::restore::{self, ask, interactive, ApplyFlow, Interrupts, PlanOpts};
use crate::error::{Exit, ExitWith, HintExt};
use crate::plan::build::SnapshotInput;
use crate::plan::render::{self, Format};
use crate::ui::Printer;
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

fn heading(printer: &Printer, n: usize, what: &str) {
    let text = format!("Step {n}/4: {what}");
    let text = console::style(text).for_stderr().bold().to_string();
    printer.suspend(|| eprintln!("\n{text}"));
}

fn say(printer: &Printer, text: &str) {
    printer.suspend(|| eprintln!("{text}"));
}

fn declined(what: &str) -> anyhow::Error {
    anyhow::Error::new(ExitWith(Exit::Declined)).context(format!("{what}: nothing was changed"))
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
    let default = Path::new("inventory.yaml").is_file();
    let typed = ask(printer, |theme| {
        let mut input = dialoguer::Input::<String>::with_theme(theme)
            .with_prompt("Inventory file")
            .validate_with(|s: &String| -> Result<(), String> {
                readable_file(s)?;
                workflow::load_inventory(&expand(s))
                    .map(|_| ())
                    .map_err(|e| format!("{e:#}"))
            });
        if default {
            input = input.default("inventory.yaml".into());
        }
        input.interact_text()
    });
    typed
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
                indicatif::BinaryBytes(m.len()),
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
        let mut items: Vec<String> = found.iter().map(|(_, l)| l.clone()).collect();
        items.push("another file (type its path)".into());
        let choice = ask(printer, |theme| {
            dialoguer::Select::with_theme(theme)
                .with_prompt("Snapshot to restore (*.db here, newest first)")
                .items(&items)
                .default(0)
                .interact()
        })
        .ok_or_else(|| declined("no snapshot chosen"))?;
        if let Some((p, _)) = found.get(choice) {
            return Ok(p.clone());
        }
    }
    let typed = ask(printer, |theme| {
        dialoguer::Input::<String>::with_theme(theme)
            .with_prompt("Path of the snapshot file (from `etcdctl snapshot save`)")
            .validate_with(|s: &String| readable_file(s))
            .interact_text()
    })
    .ok_or_else(|| declined("no snapshot chosen"))?;
    Ok(expand(&typed))
}

fn show_verdict(printer: &Printer, snap: &SnapshotInput) {
    let rev = snap.revision.map_or("unknown".into(), |r| r.to_string());
    let keys = snap.total_keys.map_or("unknown".into(), |k| k.to_string());
    let verdict = match &snap.refused {
        None => console::style(format!("\u{2714} {}", snap.verdict))
            .for_stderr()
            .green(),
        Some(_) => console::style(format!("\u{2718} {}", snap.verdict))
            .for_stderr()
            .red(),
    };
    let text = if snap.refused.is_some() {
        format!("  {}\n  {verdict}", snap.path)
    } else {
        format!(
            "  {}\n  sha256 {}\n  {} bytes, revision {rev}, {keys} keys\n  {verdict}",
            snap.path, snap.sha256, snap.size
        )
    };
    say(printer, &text);
}

/// `guide`.
pub fn run(args: &GuideArgs, ssh: &SshArgs, state: &StateArgs) -> anyhow::Result<Exit> {
    if !interactive(false) {
        return Err(anyhow::Error::new(ExitWith(Exit::Usage))
            .context("the guide asks questions and needs a terminal"))
        .hint("review with `etcd-recover plan -i INV --snapshot FILE`, then restore with `etcd-recover apply -i INV --snapshot FILE --yes`");
    }
    let printer = Arc::new(Printer::new(args.output.style()));
    restore::runtime()?.block_on(async {
        let interrupts = Interrupts::install(printer.clone());
        say(
            &printer,
            "etcd-recover guide: restore etcd from a snapshot on every control-plane node.\nNothing is changed until you type the cluster name at the end; Ctrl-C quits.",
        );

        heading(&printer, 1, "inventory");
        let inventory = match &args.inventory {
            Some(i) => i.clone(),
            None => ask_inventory(&printer)?,
        };
        let s = restore::settings(&inventory, ssh, state, Some(&args.opts));
        say(&printer, &format!("  connecting to the nodes of {} ...", inventory.display()));
        let cluster = workflow::connect(&s).await?;
        restore::warn_all(&printer, &cluster.inventory.warnings);
        let mut lines = String::new();
        for n in &cluster.inventory.inventory.nodes {
            match cluster.unreachable.iter().find(|u| u.node.as_deref() == Some(&n.name)) {
                None => lines.push_str(&format!(
                    "  {} {} reachable over SSH\n",
                    console::style("\u{2714}").for_stderr().green(),
                    n.name
                )),
                Some(u) => lines.push_str(&format!(
                    "  {} {}: {}\n",
                    console::style("\u{2718}").for_stderr().red(),
                    n.name,
                    u.message
                )),
            }
        }
        say(&printer, lines.trim_end());

        heading(&printer, 2, "snapshot");
        let (snapshot, snap) = loop {
            let path = pick_snapshot(&printer)?;
            say(&printer, &format!("  verifying {} ...", path.display()));
            let snap = workflow::snapshot_input(&path, args.opts.skip_hash_check);
            show_verdict(&printer, &snap);
            if snap.refused.is_none() {
                break (path, snap);
            }
            let again = ask(&printer, |theme| {
                dialoguer::Select::with_theme(theme)
                    .with_prompt("This snapshot cannot be restored")
                    .items(["choose another snapshot", "quit"])
                    .default(0)
                    .interact()
            });
            if again != Some(0) {
                return Err(declined("no valid snapshot chosen")).hint(
                    "a raw copy of member/snap/db has no integrity trailer: pass --skip-hash-check to accept it knowingly",
                );
            }
        };

        heading(&printer, 3, "plan");
        say(&printer, "  reading every node (nothing is changed) ...");
        let (plan, _) =
            workflow::make_plan_with(&s, &cluster, snap, workflow::new_run_id()).await?;
        let color = std::io::stderr().is_terminal();
        say(&printer, &render::summary(&plan, color));
        if plan.is_applicable() {
            loop {
                let choice = ask(&printer, |theme| {
                    dialoguer::Select::with_theme(theme)
                        .with_prompt("Next")
                        .items([
                            "go on to the confirmation",
                            "show the full plan (every command, move, wait and rollback)",
                            "save the full plan as Markdown (for the change ticket)",
                            "quit",
                        ])
                        .default(0)
                        .interact()
                });
                match choice {
                    Some(0) => break,
                    Some(1) => say(&printer, &render::render(&plan, Format::Text, color)),
                    Some(2) => {
                        let name = format!("etcd-restore-plan-{}.md", plan.run_id);
                        let out = ask(&printer, |theme| {
                            dialoguer::Input::<String>::with_theme(theme)
                                .with_prompt("Save to")
                                .default(name)
                                .interact_text()
                        });
                        if let Some(out) = out {
                            let out = expand(&out);
                            match std::fs::write(&out, render::render(&plan, Format::Markdown, false)) {
                                Ok(()) => say(&printer, &format!("  saved {}", out.display())),
                                Err(e) => say(&printer, &format!("  cannot write {}: {e}", out.display())),
                            }
                        }
                    }
                    _ => return Err(declined("quit before the restore")),
                }
            }
            heading(&printer, 4, "restore");
        }
        let flow = ApplyFlow {
            yes: false,
            step: args.step,
            no_rollback: args.no_rollback,
            dry_run: false,
            show_summary: false,
        };
        restore::execute(plan, &cluster, &s.state_dir, &snapshot, flow, printer, &interrupts).await
    })
}
