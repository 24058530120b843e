//! A running `etcd-recover --output json`, read event by event from its stderr.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr};

use serde_json::Value;

/// A running `etcd-recover` (see [`EtcdRecover::spawn`](super::EtcdRecover::spawn)); killed
/// when dropped while it still runs.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    /// Every stderr line so far.
    pub seen: Vec<String>,
}

impl Running {
    pub(super) fn new(mut child: Child) -> Running {
        let stderr = child.stderr.take().expect("stderr is piped");
        Running {
            child,
            lines: BufReader::new(stderr).lines(),
            seen: Vec::new(),
        }
    }

    /// Reads events until `stop` says so (returns that event) or the output ends (`None`).
    pub fn until(&mut self, mut stop: impl FnMut(&Value) -> bool) -> Option<Value> {
        for line in self.lines.by_ref() {
            let line = line.expect("read stderr");
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if stop(&v) {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Reads to the end and waits; returns the exit code.
    pub fn finish(&mut self) -> Option<i32> {
        self.until(|_| false);
        self.child.wait().expect("wait for etcd-recover").code()
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL etcd-recover");
        let _ = self.child.wait();
    }

    /// The run id from the `run <ID> started` message.
    pub fn run_id(&self) -> Option<String> {
        self.seen.iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let text = v["text"].as_str()?;
            let rest = text.strip_prefix("run ")?;
            let (id, tail) = rest.split_once(' ')?;
            tail.starts_with("started").then(|| id.to_string())
        })
    }

    /// All stderr so far, for failure messages.
    pub fn log(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave the orchestrator running behind a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
