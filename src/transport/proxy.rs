//! `ProxyCommand`: a local command whose standard input and output carry the SSH connection
//! (AWS SSM, Teleport, `ssh -W`, corporate bastion wrappers), as OpenSSH runs it.
//!
//! The command runs as `sh -c 'exec COMMAND'` in a process group of its own; its standard error
//! is kept (the last [`STDERR_KEPT`] bytes) for error messages, never printed. The group is
//! killed when the [`ProxyChild`] is dropped, that is when the session ends, fails or is
//! replaced by a reconnection.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, Join};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How much of the command's standard error is kept for messages.
const STDERR_KEPT: usize = 4096;

/// The stream russh talks over: the command's standard output and input.
pub(crate) type ProxyStream = Join<ChildStdout, ChildStdin>;

/// A running ProxyCommand; killed (with its process group) when dropped.
pub(crate) struct ProxyChild {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for ProxyChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyChild")
            .field("pid", &self.child.id())
            .finish()
    }
}

/// Starts `command` (tokens already expanded) and returns the stream to talk SSH over.
pub(crate) fn spawn(command: &str) -> std::io::Result<(ProxyStream, ProxyChild)> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout), Some(mut err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("the command's pipes were not set up"));
    };
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let kept = stderr.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Ok(mut kept) = kept.lock() {
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(STDERR_KEPT);
                kept.drain(..excess);
            }
        }
    });
    Ok((tokio::io::join(stdout, stdin), ProxyChild { child, stderr }))
}

impl ProxyChild {
    /// Why the command failed, for a message: its exit status if it ended (waiting up to
    /// 200 ms for it), and what it printed on standard error, control characters escaped.
    pub(crate) async fn failure(&mut self) -> String {
        let status =
            tokio::time::timeout(std::time::Duration::from_millis(200), self.child.wait()).await;
        // Let the reader take what the command printed last.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let said = self
            .stderr
            .lock()
            .map(|s| String::from_utf8_lossy(&s).trim().to_string())
            .unwrap_or_default();
        let said = crate::remote::printable(&said);
        let mut out = match status {
            Ok(Ok(s)) => format!("the ProxyCommand ended ({s})"),
            _ => "the ProxyCommand is still running".to_string(),
        };
        if !said.is_empty() {
            out.push_str(&format!("; it said: {said}"));
        }
        out
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        // The whole group: `ssh -W` and wrapper scripts start children of their own.
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_command_is_the_stream_and_dies_with_its_guard() {
        let (mut stream, child) = spawn("cat").unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        let pid = child.child.id().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(child);
        let mut rest = Vec::new();
        // The stream ends because the command is gone.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut rest),
        )
        .await
        .unwrap()
        .unwrap();
    }

    #[tokio::test]
    async fn failures_show_the_status_and_the_escaped_stderr() {
        let (_stream, mut child) =
            spawn("sh -c 'printf \"no route\\033[2J\" >&2; exit 7'").unwrap();
        let why = child.failure().await;
        assert!(why.contains("exit status: 7"), "{why}");
        assert!(why.contains("no route\\u{1b}[2J"), "{why}");
    }
}
