//! The one writer of progress to the terminal.
//!
//! Three renderings of the engine's [`Event`]s:
//! - a TTY gets live progress (indicatif): a header per stage, one line per node with bytes and
//!   rate while staging, the wait condition and elapsed time while waiting, a tick or a cross;
//! - anything else (CI, `| tee`, change-ticket logs) gets plain timestamped lines, one per node
//!   per step, with no control characters;
//! - `--output json` streams one JSON object per event and line, for automation.
//!
//! Progress goes to stderr; stdout stays free for data. Prompts suspend the bars first
//! (see [`super::prompt`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::json;

use crate::engine::{Event, Observer};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Live bars (a terminal).
    Live,
    /// Timestamped lines.
    Plain,
    /// One JSON object per line.
    Json,
}

impl Style {
    /// Live on a terminal, plain otherwise.
    pub fn detect() -> Style {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
        {
            Style::Live
        } else {
            Style::Plain
        }
    }
}

/// A command's progress on stderr: renders events, lines and warnings, and hides the bars
/// while a prompt or a block of text owns the terminal.
pub struct Printer {
    style: Style,
    multi: MultiProgress,
    bars: Mutex<HashMap<(String, String), Bar>>,
    stage: Mutex<StageTally>,
    prompting: AtomicBool,
    /// Set once the engine may change nodes (see [`Printer::engine_starts`]).
    engine_running: AtomicBool,
    out: Mutex<Box<dyn Write + Send>>,
}

/// A node's live line for one step.
struct Bar {
    bar: ProgressBar,
    started: Instant,
    /// True while the line shows the snapshot upload as a bar.
    uploading: bool,
}

/// What happened in the current stage, for its summary line.
#[derive(Default)]
struct StageTally {
    /// The stage being run and since when.
    open: Option<(String, Instant)>,
    /// True when its failures have been summed up already (see [`Printer::close_stage`]).
    reported: bool,
    nodes: Vec<String>,
    failed: Vec<String>,
    already: usize,
    steps: usize,
}

/// Elapsed time of the current action, `{secs}` in the live templates.
fn secs_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:>5.1} s", state.elapsed().as_secs_f64());
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("  {spinner:.cyan} {prefix:<8} {secs}  {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", secs_key)
}

fn upload_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {spinner:.cyan} {prefix:<8} {secs}  staging snapshot [{bar:24.cyan/blue}] {binary_bytes}/{binary_total_bytes} at {binary_bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("secs", secs_key)
    .progress_chars("=> ")
}

impl Printer {
    /// A printer writing to stderr in `style`.
    pub fn new(style: Style) -> Printer {
        Printer::to_writer(style, Box::new(std::io::stderr()))
    }

    /// A printer writing plain or JSON lines to `out` (live bars always draw on stderr).
    pub fn to_writer(style: Style, out: Box<dyn Write + Send>) -> Printer {
        let target = if style == Style::Live {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Printer {
            style,
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            stage: Mutex::new(StageTally::default()),
            prompting: AtomicBool::new(false),
            engine_running: AtomicBool::new(false),
            out: Mutex::new(out),
        }
    }

    /// The style in use.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Prints a line above the bars (or as a plain line, or as a JSON `message` event).
    pub fn line(&self, text: &str) {
        match self.style {
            Style::Live => {
                let _ = self.multi.println(text);
            }
            Style::Plain => self.write(&format!("{} {text}", now())),
            Style::Json => {
                self.write(&json!({"at": now(), "event": "message", "text": text}).to_string())
            }
        }
    }

    /// Prints a warning: `warning: ...` (a `warning` event in JSON).
    pub fn warning(&self, text: &str) {
        match self.style {
            Style::Json => {
                self.write(&json!({"at": now(), "event": "warning", "text": text}).to_string())
            }
            _ => self.line(&format!("warning: {text}")),
        }
    }

    /// Prints each of `warnings` with [`Printer::warning`] (so that with `--output json`
    /// every line stays one JSON object).
    pub fn warnings(&self, warnings: &[String]) {
        for w in warnings {
            self.warning(w);
        }
    }

    /// Prints `text` and a newline on stderr as it is (whatever the style), with the bars
    /// hidden while it prints: headings, summaries and details between prompts.
    pub fn say(&self, text: &str) {
        self.suspend(|| eprintln!("{text}"));
    }

    /// Runs `f` with the bars hidden (for prompts), then redraws them. While `f` runs,
    /// [`Printer::prompting`] is true.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.prompting.store(true, Ordering::SeqCst);
        let r = self.multi.suspend(f);
        self.prompting.store(false, Ordering::SeqCst);
        r
    }

    /// True while a prompt owns the terminal.
    pub fn prompting(&self) -> bool {
        self.prompting.load(Ordering::SeqCst)
    }

    /// Marks that the engine runs and may change nodes: from now on Ctrl-C at a prompt gets
    /// "no answer" (the caller pauses) instead of quitting with nothing changed.
    pub fn engine_starts(&self) {
        self.engine_running.store(true, Ordering::SeqCst);
    }

    /// True once [`Printer::engine_starts`] was called.
    pub fn engine_running(&self) -> bool {
        self.engine_running.load(Ordering::SeqCst)
    }

    fn write(&self, line: &str) {
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Bar>> {
        match self.bars.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, StageTally> {
        match self.stage.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        }
    }

    /// The live line of `node` for `step`, created on first use.
    fn bar(&self, step: &str, node: &str) -> ProgressBar {
        let mut bars = self.bars();
        let key = (step.to_string(), node.to_string());
        if let Some(b) = bars.get(&key) {
            return b.bar.clone();
        }
        let b = self.multi.add(ProgressBar::new_spinner());
        b.set_style(spinner_style());
        b.set_prefix(node.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        bars.insert(
            key,
            Bar {
                bar: b.clone(),
                started: Instant::now(),
                uploading: false,
            },
        );
        b
    }

    /// Replaces a node's live line by its final line, printed above the remaining bars.
    fn finish_bar(&self, step: &str, node: &str, text: String) {
        let removed = self.bars().remove(&(step.to_string(), node.to_string()));
        if let Some(b) = removed {
            b.bar.finish_and_clear();
            self.multi.remove(&b.bar);
        }
        let _ = self.multi.println(text);
    }

    /// Ends the current stage's block with a summary line when it did not complete: which
    /// nodes failed, after how long. Called before a rollback and before the failure prompt.
    pub fn close_stage(&self) {
        if self.style != Style::Live {
            return;
        }
        let mut t = self.tally();
        let Some((stage, since)) = t.open.clone() else {
            return;
        };
        if t.reported {
            return;
        }
        t.reported = true;
        let mut failed = t.failed.clone();
        failed.sort();
        let how = if failed.is_empty() {
            "stopped".to_string()
        } else {
            format!("FAILED on {}", failed.join(", "))
        };
        let line = format!(
            "  {} {stage}: {how} after {}",
            console::style("\u{2500}\u{2500}").for_stderr().dim(),
            live_secs(since.elapsed())
        );
        drop(t);
        let _ = self.multi.println(line);
    }

    fn live(&self, e: &Event) {
        match e {
            Event::StageStarted {
                stage,
                index,
                total,
            } => {
                *self.tally() = StageTally {
                    open: Some((stage.clone(), Instant::now())),
                    ..StageTally::default()
                };
                let _ = self.multi.println(format!(
                    "{}",
                    console::style(format!("Stage {index}/{total}: {stage}"))
                        .for_stderr()
                        .bold()
                ));
            }
            Event::StageDone { stage, elapsed } => {
                let t = std::mem::take(&mut *self.tally());
                let nodes: Vec<&String> = t.nodes.iter().filter(|n| *n != "cluster").collect();
                let who = match (nodes.len(), t.steps) {
                    (_, 0) => "nothing to do".to_string(),
                    (0, _) => "ok".to_string(),
                    (1, _) => format!("ok on {}", nodes[0]),
                    (n, _) => format!("ok on {n} nodes"),
                };
                let who = if t.failed.is_empty() {
                    who
                } else {
                    format!("{who} (after a retry on {})", t.failed.join(", "))
                };
                let already = if t.already > 0 && t.already == t.steps {
                    " (already done)"
                } else {
                    ""
                };
                let _ = self.multi.println(format!(
                    "  {} {stage}: {who}{already} in {}",
                    console::style("\u{2500}\u{2500}").for_stderr().dim(),
                    live_secs(*elapsed)
                ));
            }
            Event::StepStarted { step, title, node } => {
                let b = self.bar(step, who(node));
                b.reset_elapsed();
                b.set_message(title.clone());
            }
            Event::Action {
                step, node, text, ..
            } => {
                let b = self.bar(step, who(node));
                let mut bars = self.bars();
                if let Some(entry) = bars.get_mut(&(step.clone(), who(node).to_string())) {
                    if entry.uploading {
                        entry.uploading = false;
                        b.set_style(spinner_style());
                    }
                }
                drop(bars);
                b.reset_elapsed();
                b.set_message(text.clone());
            }
            Event::Upload { node, sent, total } => {
                let Some(step) = self.current_step(node) else {
                    return;
                };
                let b = self.bar(&step, node);
                let mut bars = self.bars();
                if let Some(entry) = bars.get_mut(&(step.clone(), node.clone())) {
                    if !entry.uploading {
                        entry.uploading = true;
                        b.set_style(upload_style());
                        b.set_length(*total);
                        b.reset_eta();
                    }
                }
                drop(bars);
                b.set_position(*sent);
            }
            Event::Waiting {
                node, what, detail, ..
            } => {
                if let Some(step) = self.current_step(who(node)) {
                    self.bar(&step, who(node))
                        .set_message(format!("waiting for {what}: {detail}"));
                }
            }
            Event::StepDone {
                step,
                node,
                skipped,
                elapsed,
            } => {
                {
                    let mut t = self.tally();
                    t.steps += 1;
                    if *skipped {
                        t.already += 1;
                    }
                    let n = who(node).to_string();
                    if !t.nodes.contains(&n) {
                        t.nodes.push(n);
                    }
                }
                let how = if *skipped {
                    "already done".to_string()
                } else {
                    format!("done in {}", live_secs(*elapsed))
                };
                self.finish_bar(
                    step,
                    who(node),
                    format!(
                        "  {} {:<8} {step}  {how}",
                        console::style("\u{2714}").for_stderr().green(),
                        who(node)
                    ),
                );
            }
            Event::StepFailed { step, node, error } => {
                let n = who(node).to_string();
                let elapsed = self
                    .bars()
                    .get(&(step.clone(), n.clone()))
                    .map(|b| b.started.elapsed());
                {
                    let mut t = self.tally();
                    t.reported = false;
                    if !t.failed.contains(&n) {
                        t.failed.push(n.clone());
                    }
                }
                let after = elapsed
                    .map(|d| format!(" after {}", live_secs(d)))
                    .unwrap_or_default();
                let mut lines = error.lines();
                let first = lines.next().unwrap_or("");
                let mut text = format!(
                    "  {} {n:<8} {step}  FAILED{after}: {first}",
                    console::style("\u{2718}").for_stderr().red()
                );
                for l in lines {
                    text.push_str(&format!("\n             {l}"));
                }
                // A failed undo reports `rollback of STEP`; its live line is STEP's.
                let bar_step = step.strip_prefix("rollback of ").unwrap_or(step);
                if bar_step != step {
                    if let Some(b) = self.bars().remove(&(bar_step.to_string(), n.clone())) {
                        b.bar.finish_and_clear();
                        self.multi.remove(&b.bar);
                    }
                }
                self.finish_bar(step, &n, text);
            }
            Event::RollbackStarted { .. } => {
                // What failed is on the lines above (and in the report).
                self.close_stage();
                let _ = self.multi.println(format!(
                    "{}",
                    console::style("Rolling back every completed step on every node, newest first")
                        .for_stderr()
                        .bold()
                ));
            }
            Event::RolledBack { step, node } => {
                let text = format!(
                    "  {} {:<8} {step}  rolled back",
                    console::style("\u{21a9}").for_stderr().yellow(),
                    who(node)
                );
                self.finish_bar(step, who(node), text);
            }
            // Follow-ups are listed once, at the end of the run (and in the report).
            Event::FollowUp { .. } => {}
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn who(node: &Option<String>) -> &str {
    node.as_deref().unwrap_or("cluster")
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Seconds as the live view shows them: `3.2 s`.
fn live_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The JSON form of an event.
pub fn event_json(e: &Event) -> serde_json::Value {
    match e {
        Event::StageStarted {
            stage,
            index,
            total,
        } => {
            json!({"event": "stage-started", "stage": stage, "index": index, "total": total})
        }
        Event::StageDone { stage, elapsed } => {
            json!({"event": "stage-done", "stage": stage, "elapsed_ms": elapsed.as_millis() as u64})
        }
        Event::StepStarted { step, title, node } => {
            json!({"event": "step-started", "step": step, "title": title, "node": node})
        }
        Event::Action {
            step,
            node,
            text,
            withheld,
        } => {
            json!({"event": "action", "step": step, "node": node, "text": text, "withheld": withheld})
        }
        Event::Upload { node, sent, total } => {
            json!({"event": "upload", "node": node, "sent": sent, "total": total})
        }
        Event::Waiting {
            node,
            what,
            elapsed,
            detail,
        } => json!({
            "event": "waiting", "node": node, "what": what,
            "elapsed_ms": elapsed.as_millis() as u64, "detail": detail
        }),
        Event::StepDone {
            step,
            node,
            skipped,
            elapsed,
        } => json!({
            "event": "step-done", "step": step, "node": node, "skipped": skipped,
            "elapsed_ms": elapsed.as_millis() as u64
        }),
        Event::StepFailed { step, node, error } => {
            json!({"event": "step-failed", "step": step, "node": node, "error": error})
        }
        Event::RollbackStarted { reason } => json!({"event": "rollback-started", "reason": reason}),
        Event::RolledBack { step, node } => {
            json!({"event": "rolled-back", "step": step, "node": node})
        }
        Event::FollowUp { text } => json!({"event": "follow-up", "text": text}),
    }
}

impl Observer for Printer {
    fn event(&self, e: &Event) {
        match self.style {
            Style::Json => {
                let mut v = event_json(e);
                v["at"] = json!(now());
                self.write(&v.to_string());
            }
            Style::Plain => {
                let line = match e {
                    Event::StageStarted {
                        stage,
                        index,
                        total,
                    } => format!("stage {index}/{total} {stage}"),
                    Event::StageDone { stage, elapsed } => {
                        format!("stage {stage} done in {}", secs(*elapsed))
                    }
                    Event::StepDone {
                        step,
                        node,
                        skipped,
                        elapsed,
                    } => {
                        let how = if *skipped {
                            "already done".to_string()
                        } else {
                            format!("ok in {}", secs(*elapsed))
                        };
                        format!("{} {step} {how}", who(node))
                    }
                    Event::StepFailed { step, node, error } => {
                        format!("{} {step} FAILED: {error}", who(node))
                    }
                    Event::RollbackStarted { reason } => format!("rolling back: {reason}"),
                    Event::RolledBack { step, node } => format!("{} {step} rolled back", who(node)),
                    // Listed once at the end of the run (and in the report).
                    Event::FollowUp { .. } => return,
                    Event::Action {
                        step,
                        node,
                        text,
                        withheld: true,
                    } => {
                        format!("{} {step} would: {text}", who(node))
                    }
                    _ => return,
                };
                self.write(&format!("{} {line}", now()));
            }
            Style::Live => self.live(e),
        }
    }
}

impl Printer {
    fn current_step(&self, node: &str) -> Option<String> {
        let bars = self.bars.lock().ok()?;
        bars.iter()
            .filter(|((_, n), b)| n == node && !b.bar.is_finished())
            .max_by_key(|(_, b)| b.started)
            .map(|((s, _), _)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() -> Vec<Event> {
        vec![
            Event::StageStarted {
                stage: "stop-etcd".into(),
                index: 4,
                total: 12,
            },
            Event::StepStarted {
                step: "stop-etcd/1".into(),
                title: "t".into(),
                node: Some("cp-1".into()),
            },
            Event::Waiting {
                node: Some("cp-1".into()),
                what: "etcd to stop".into(),
                elapsed: Duration::from_millis(3200),
                detail: "x".into(),
            },
            Event::StepDone {
                step: "stop-etcd/1".into(),
                node: Some("cp-1".into()),
                skipped: false,
                elapsed: Duration::from_millis(3300),
            },
            Event::StageDone {
                stage: "stop-etcd".into(),
                elapsed: Duration::from_millis(3400),
            },
        ]
    }

    /// What a printer in `style` writes for [`events`].
    fn rendered(style: Style) -> String {
        let buf = Buf::default();
        let p = Printer::to_writer(style, Box::new(buf.clone()));
        for e in events() {
            p.event(&e);
        }
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_lines_have_no_control_characters_and_one_line_per_node_step() {
        let text = rendered(Style::Plain);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].ends_with("cp-1 stop-etcd/1 ok in 3.3s"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn json_lines_parse_one_by_one() {
        let text = rendered(Style::Json);
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[2]["event"], "waiting");
        assert_eq!(parsed[2]["elapsed_ms"], 3200);
    }
}
