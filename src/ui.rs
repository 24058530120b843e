//! The one writer of progress to the terminal.
//!
//! Three renderings of the engine's [`Event`]s:
//! - a TTY gets live progress (indicatif): a header per stage, one line per node with bytes and
//!   rate while staging, the wait condition and elapsed time while waiting, a tick or a cross;
//! - anything else (CI, `| tee`, change-ticket logs) gets plain timestamped lines, one per node
//!   per step, with no control characters;
//! - `--output json` streams one JSON object per event and line, for automation.
//!
//! Progress goes to stderr; stdout stays free for data. Prompts suspend the bars first.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// Renders events.
pub struct Printer {
    style: Style,
    multi: MultiProgress,
    bars: Mutex<HashMap<(String, String), (ProgressBar, Instant)>>,
    out: Mutex<Box<dyn Write + Send>>,
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
            out: Mutex::new(out),
        }
    }

    /// The style in use.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Prints a line above the bars (or as a plain line).
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

    /// Runs `f` with the bars hidden (for prompts), then redraws them.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    fn write(&self, line: &str) {
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn bar(&self, step: &str, node: &str) -> ProgressBar {
        let mut bars = match self.bars.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let key = (step.to_string(), node.to_string());
        if let Some((b, _)) = bars.get(&key) {
            return b.clone();
        }
        let b = self.multi.add(ProgressBar::new_spinner());
        b.set_style(
            ProgressStyle::with_template("  {spinner} {prefix:<8} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_prefix(node.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        bars.insert(key, (b.clone(), Instant::now()));
        b
    }

    fn finish_bar(&self, step: &str, node: &str, text: String) {
        let b = self.bar(step, node);
        b.set_style(
            ProgressStyle::with_template("  {prefix:<8} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.finish_with_message(text);
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

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB", n as f64 / MIB)
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
                    Event::FollowUp { text } => format!("follow-up: {text}"),
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
            Style::Live => match e {
                Event::StageStarted {
                    stage,
                    index,
                    total,
                } => {
                    let _ = self
                        .multi
                        .println(format!("Stage {index}/{total}: {stage}"));
                }
                Event::StageDone { stage, elapsed } => {
                    let _ = self
                        .multi
                        .println(format!("  {stage} done in {}", secs(*elapsed)));
                }
                Event::StepStarted { step, title, node } => {
                    self.bar(step, who(node)).set_message(title.clone());
                }
                Event::Action {
                    step, node, text, ..
                } => {
                    self.bar(step, who(node)).set_message(text.clone());
                }
                Event::Upload { node, sent, total } => {
                    let bars = self.bars.lock().ok();
                    let started = bars
                        .as_ref()
                        .and_then(|b| b.iter().find(|((_, n), _)| n == node).map(|(_, (_, t))| *t));
                    drop(bars);
                    let rate = started
                        .map(|t| *sent as f64 / t.elapsed().as_secs_f64().max(0.001))
                        .unwrap_or(0.0);
                    if let Some(step) = self.current_step(node) {
                        self.bar(&step, node).set_message(format!(
                            "staging snapshot {} / {} ({}/s)",
                            bytes(*sent),
                            bytes(*total),
                            bytes(rate as u64)
                        ));
                    }
                }
                Event::Waiting {
                    node,
                    what,
                    elapsed,
                    detail,
                } => {
                    if let Some(step) = self.current_step(who(node)) {
                        self.bar(&step, who(node)).set_message(format!(
                            "waiting for {what}: {} ({detail})",
                            secs(*elapsed)
                        ));
                    }
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
                        secs(*elapsed)
                    };
                    self.finish_bar(step, who(node), format!("\u{2714} {step} {how}"));
                }
                Event::StepFailed { step, node, error } => {
                    self.finish_bar(step, who(node), format!("\u{2718} {step}: {error}"));
                }
                Event::RollbackStarted { reason } => {
                    let _ = self.multi.println(format!("Rolling back: {reason}"));
                }
                Event::RolledBack { step, node } => {
                    let _ = self
                        .multi
                        .println(format!("  {} {step} rolled back", who(node)));
                }
                Event::FollowUp { text } => {
                    let _ = self.multi.println(format!("follow-up: {text}"));
                }
            },
        }
    }
}

impl Printer {
    fn current_step(&self, node: &str) -> Option<String> {
        let bars = self.bars.lock().ok()?;
        bars.iter()
            .filter(|((_, n), (b, _))| n == node && !b.is_finished())
            .max_by_key(|(_, (_, t))| *t)
            .map(|((s, _), _)| s.clone())
    }
}

/// Asks for SSH key passphrases on the terminal, without echo. The passphrase never reaches a
/// log, an argv or a report.
pub struct TerminalPassphrase;

impl crate::transport::PassphrasePrompt for TerminalPassphrase {
    fn passphrase(
        &self,
        key_file: &std::path::Path,
        attempt: u32,
    ) -> Option<zeroize::Zeroizing<String>> {
        let prompt = if attempt > 1 {
            format!(
                "Wrong passphrase; passphrase for {} (try {attempt})",
                key_file.display()
            )
        } else {
            format!("Passphrase for {}", key_file.display())
        };
        dialoguer::Password::new()
            .with_prompt(prompt)
            .allow_empty_password(true)
            .interact()
            .ok()
            .map(zeroize::Zeroizing::new)
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

    #[test]
    fn plain_lines_have_no_control_characters_and_one_line_per_node_step() {
        let buf = Buf::default();
        let p = Printer::to_writer(Style::Plain, Box::new(buf.clone()));
        for e in events() {
            p.event(&e);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
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
        let buf = Buf::default();
        let p = Printer::to_writer(Style::Json, Box::new(buf.clone()));
        for e in events() {
            p.event(&e);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[2]["event"], "waiting");
        assert_eq!(parsed[2]["elapsed_ms"], 3200);
    }
}
