//! `etcd-recover` under test: a builder for one call, and what the call printed.
//!
//! ```ignore
//! etcd_recover()
//!     .state(&state)
//!     .apply(&lab.inventory)
//!     .snapshot(&snap)
//!     .yes()
//!     .output("plain")
//!     .run()
//!     .expect_exit(3)
//!     .stderr_contains("nothing was changed");
//! ```

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Running, Tty};

/// The binary under test.
fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_etcd-recover"))
}

/// Starts a call of `etcd-recover`, with no arguments yet.
pub fn etcd_recover() -> EtcdRecover {
    EtcdRecover::default()
}

/// One call of `etcd-recover`: arguments and environment, then [`run`](EtcdRecover::run),
/// [`spawn`](EtcdRecover::spawn) or [`in_terminal`](EtcdRecover::in_terminal).
#[must_use]
#[derive(Debug, Default)]
pub struct EtcdRecover {
    args: Vec<OsString>,
    /// Variables to set (`Some`) or remove (`None`), in order.
    env: Vec<(OsString, Option<OsString>)>,
    clear_env: bool,
}

impl EtcdRecover {
    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.into(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Starts from an empty environment (help texts show the values of the `ETCD_RECOVER_*`
    /// variables they read).
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Keeps runs and journals in `dir` (`ETCD_RECOVER_STATE_DIR`).
    pub fn state(self, dir: &Path) -> Self {
        self.env("ETCD_RECOVER_STATE_DIR", dir)
    }

    /// `plan -i INVENTORY`.
    pub fn plan(self, inventory: &Path) -> Self {
        self.arg("plan").arg("-i").arg(inventory)
    }

    /// `apply -i INVENTORY`.
    pub fn apply(self, inventory: &Path) -> Self {
        self.arg("apply").arg("-i").arg(inventory)
    }

    /// `check -i INVENTORY`, hermetic: no SSH config of this machine (`--ssh-config
    /// /dev/null`) and no ssh-agent.
    pub fn check(self, inventory: &Path) -> Self {
        self.arg("check")
            .arg("-i")
            .arg(inventory)
            .args(["--ssh-config", "/dev/null"])
            .env_remove("SSH_AUTH_SOCK")
    }

    /// `resume RUN`.
    pub fn resume(self, run: &str) -> Self {
        self.args(["resume", run])
    }

    /// `rollback RUN`.
    pub fn rollback(self, run: &str) -> Self {
        self.args(["rollback", run])
    }

    /// `--snapshot FILE`.
    pub fn snapshot(self, file: &Path) -> Self {
        self.arg("--snapshot").arg(file)
    }

    /// `--plan FILE`: a saved plan.
    pub fn plan_file(self, file: &Path) -> Self {
        self.arg("--plan").arg(file)
    }

    /// `--playbook FILE`.
    pub fn playbook(self, file: &Path) -> Self {
        self.arg("--playbook").arg(file)
    }

    /// `--yes`.
    pub fn yes(self) -> Self {
        self.arg("--yes")
    }

    /// `--output MODE` (`plain`, `json`, ...).
    pub fn output(self, mode: &str) -> Self {
        self.args(["--output", mode])
    }

    /// `--format FORMAT` (`text`, `markdown`, `json`).
    pub fn format(self, format: &str) -> Self {
        self.args(["--format", format])
    }

    /// Runs to the end with stdin closed; captures what it printed.
    pub fn run(self) -> Outcome {
        let call = self.to_string();
        let started = Instant::now();
        let out = self.command().output().expect("run etcd-recover");
        let text = |bytes: Vec<u8>, stream: &str| {
            String::from_utf8(bytes)
                .unwrap_or_else(|e| panic!("{call}: {stream} is not UTF-8: {e}"))
        };
        Outcome {
            code: out.status.code(),
            stdout: text(out.stdout, "stdout"),
            stderr: text(out.stderr, "stderr"),
            took: started.elapsed(),
            call,
        }
    }

    /// Starts it with stdin and stdout closed, reading stderr as it comes (`--output json`
    /// events, one a line).
    pub fn spawn(self) -> Running {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Running::new(cmd.spawn().expect("start etcd-recover"))
    }

    /// Runs it in a fresh terminal (see [`Tty`]) in `cwd`, with only the variables this call
    /// sets added to the environment.
    pub fn in_terminal(self, cwd: &Path) -> Tty {
        assert!(!self.clear_env, "a terminal keeps its environment");
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| {
                let v = v.as_deref().expect("a terminal call only adds variables");
                (utf8(k), utf8(v))
            })
            .collect();
        let mut argv = vec![utf8(bin().as_os_str())];
        argv.extend(self.args.iter().map(|a| utf8(a)));
        Tty::start(cwd, &env, &argv)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        if self.clear_env {
            cmd.env_clear();
        }
        // Output is captured, never a terminal: no colours in any case.
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.args(&self.args);
        cmd
    }
}

fn utf8(s: &OsStr) -> &str {
    s.to_str().expect("a UTF-8 argument")
}

impl std::fmt::Display for EtcdRecover {
    /// The call as a shell line, for failure messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("etcd-recover")?;
        for a in &self.args {
            write!(f, " {}", a.to_string_lossy())?;
        }
        Ok(())
    }
}

/// What a finished call printed, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
    /// Wall time from start to exit.
    pub took: Duration,
    call: String,
}

impl Outcome {
    /// Asserts the exit code; otherwise panics with the call and everything it printed.
    #[track_caller]
    pub fn expect_exit(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(self) -> Self {
        self.expect_exit(0)
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Self {
        self.assert_contains(&self.stdout, "stdout", needle);
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Self {
        self.assert_contains(&self.stderr, "stderr", needle);
        self
    }

    #[track_caller]
    fn assert_contains(&self, text: &str, stream: &str, needle: &str) {
        assert!(text.contains(needle), "no {needle:?} on {stream} of {self}");
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not JSON ({e}): {self}"),
        }
    }

    /// The error block on stderr, checking its form: `error:` first, then only `caused by:`
    /// lines, then one `hint:` last.
    #[track_caller]
    pub fn error_block(&self) -> ErrorBlock {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let Some(start) = lines.iter().position(|l| l.starts_with("error: ")) else {
            panic!("no error line: {self}");
        };
        let block = &lines[start..];
        let Some(hint) = block[block.len() - 1].strip_prefix("hint: ") else {
            panic!("the error does not end with a hint: {self}");
        };
        let mut causes = Vec::new();
        for line in &block[1..block.len() - 1] {
            let Some(cause) = line.strip_prefix("caused by: ") else {
                panic!("not a cause: {line:?} in {self}");
            };
            causes.push(cause.to_string());
        }
        ErrorBlock {
            error: block[0]["error: ".len()..].to_string(),
            causes,
            hint: hint.to_string(),
        }
    }
}

impl std::fmt::Display for Outcome {
    /// The call, its exit code and everything it printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.call, self.code, self.stdout, self.stderr
        )
    }
}

/// An error as the tool renders it (`error:` / `caused by:` / `hint:`), without the prefixes.
#[derive(Debug)]
pub struct ErrorBlock {
    /// What failed.
    pub error: String,
    /// Why, outermost first.
    pub causes: Vec<String>,
    /// What to do.
    pub hint: String,
}
