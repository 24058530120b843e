//! Drives the real binary in a pseudo-terminal: each [`Tty`] is a tmux server of its own (its
//! own socket), with one 200x50 pane running the command. The pane stays after the command
//! exits (its shell sleeps), so its screen, scrollback and cursor can still be read; the exit
//! status and `stty -a` taken right after the command are written next to the script.
//! Dropping a `Tty` kills exactly that server, and with it the pane.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A command running in a terminal.
pub struct Tty {
    socket: String,
    dir: tempfile::TempDir,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Tty {
    /// Runs `argv` in `cwd` with `env` added, in a fresh 200x50 terminal.
    pub fn start(cwd: &Path, env: &[(&str, &str)], argv: &[&str]) -> Tty {
        let dir = tempfile::Builder::new()
            .prefix("etcd-recover-tty-")
            .tempdir()
            .unwrap();
        let socket = format!(
            "etcd-recover-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let d = dir.path();
        let mut script = String::from("trap ':' INT\n");
        script.push_str(&format!("cd {}\n", quote(&cwd.display().to_string())));
        for (k, v) in env {
            script.push_str(&format!("export {k}={}\n", quote(v)));
        }
        let cmd: Vec<String> = argv.iter().map(|a| quote(a)).collect();
        script.push_str(&cmd.join(" "));
        script.push('\n');
        script.push_str(&format!(
            "code=$?\nstty -a > {stty}\necho $code > {tmp} && mv {tmp} {exit}\n# A dead pane always reports a hidden cursor: stay until the test looked.\nexec sleep 120\n",
            stty = quote(&d.join("stty").display().to_string()),
            tmp = quote(&d.join("exit.tmp").display().to_string()),
            exit = quote(&d.join("exit").display().to_string()),
        ));
        std::fs::write(d.join("run.sh"), script).unwrap();
        std::fs::write(
            d.join("tmux.conf"),
            "set -g remain-on-exit on\nset -g history-limit 100000\nset -g status off\n",
        )
        .unwrap();
        let tty = Tty { socket, dir };
        let out = tty
            .tmux()
            .arg("-f")
            .arg(tty.dir.path().join("tmux.conf"))
            .args(["new-session", "-d", "-s", "t", "-x", "200", "-y", "50"])
            .arg(format!(
                "sh {}",
                quote(&tty.dir.path().join("run.sh").display().to_string())
            ))
            .output()
            .expect("run tmux (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tty
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket);
        c
    }

    /// The whole screen with its scrollback.
    pub fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-S", "-", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The exit status, once the command has exited.
    pub fn exit_code(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("exit"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits until the screen shows `needle`; panics with the screen after `secs` or when the
    /// command exited without showing it.
    #[track_caller]
    pub fn wait_for(&self, needle: &str, secs: u64) -> String {
        self.wait_for_nth(needle, 1, secs)
    }

    /// Like [`Tty::wait_for`], until `needle` shows `n` times (a prompt asked again).
    #[track_caller]
    pub fn wait_for_nth(&self, needle: &str, n: usize, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let exited = self.exit_code();
            let screen = self.screen();
            if screen.matches(needle).count() >= n {
                // Let the prompt reach its read before keys arrive.
                std::thread::sleep(Duration::from_millis(150));
                return screen;
            }
            if let Some(code) = exited {
                panic!("exited with {code} without showing {needle:?} {n} time(s):\n{screen}");
            }
            if Instant::now() > deadline {
                panic!("no {needle:?} after {secs}s:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends tmux key names (`Enter`, `Down`, `C-c`, `y`).
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = self
                .tmux()
                .args(["send-keys", "-t", "t", k])
                .status()
                .unwrap();
            assert!(ok.success());
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        let ok = self
            .tmux()
            .args(["send-keys", "-t", "t", "-l", text])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits up to `secs` for the command to exit with `expected`; returns the final screen.
    #[track_caller]
    pub fn expect_exit(&self, expected: i32, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(code) = self.exit_code() {
                let screen = self.screen();
                assert_eq!(code, expected, "{screen}");
                return screen;
            }
            if Instant::now() > deadline {
                panic!("still running after {secs}s:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `stty -a` of the terminal right after the command exited.
    pub fn stty(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stty")).unwrap_or_default()
    }

    /// Whether the terminal shows its cursor.
    pub fn cursor_visible(&self) -> bool {
        let out = self
            .tmux()
            .args(["display-message", "-p", "-t", "t", "#{cursor_flag}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Asserts the terminal is as a shell expects it: canonical mode with echo (no raw mode
    /// left behind) and a visible cursor.
    pub fn assert_clean(&self) {
        let stty = self.stty();
        let words: Vec<&str> = stty.split_whitespace().collect();
        for flag in ["icanon", "echo", "isig"] {
            assert!(
                words.contains(&flag),
                "terminal left without {flag}: {stty}"
            );
        }
        assert!(self.cursor_visible(), "cursor left hidden");
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self
            .tmux()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}
