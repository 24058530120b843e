//! A command shell kept open on a node, so that a command costs one round trip instead of a
//! new SSH channel and a new login shell.
//!
//! sshd runs every command through the user's login shell, which reads its rc files each time
//! (`.bashrc` is read for `ssh host cmd` on Debian): on real control-plane nodes that is tens to
//! hundreds of milliseconds per command, and a restore runs about seventy commands per node.
//! A [`Shell`] pays it once: it starts [`SERVER`] on a channel and then feeds it framed
//! requests; each request runs as `sh -c LINE` in a fresh process, exactly the line the
//! channel-per-command path would have run, with its own standard input.
//!
//! Protocol, on the channel's standard input and output:
//! - server: a line `NONCE ready UID` (anything the rc files printed before it is skipped);
//! - request: a line `LEN_CMD LEN_IN`, then the command line and the input, raw;
//! - reply: the command's standard output as one base64 line, then a line `STATUS LEN_ERR`,
//!   then the standard error, raw.
//!
//! Standard output is streamed (base64 keeps its end unambiguous), so what commands print
//! (certificate keys read for the health checks, for one) never touches the node's disk; only
//! the input and standard error pass through files, in a private `mktemp -d` directory the
//! server removes when it ends.

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use crate::remote::ExitStatus;

/// The server. `$1` is the nonce that marks the ready line.
///
/// `read` is a builtin that never reads past the newline, and GNU `head -c N` reads at most N
/// bytes, so the framing stays in step on a pipe. A command's exit status is written to a file
/// because the pipeline into `base64` would otherwise lose it (POSIX `sh` has no `pipefail`).
pub(crate) const SERVER: &str = r#"set -u
umask 077
d=$(mktemp -d "${TMPDIR:-/tmp}/etcd-recover-shell.XXXXXX") || exit 1
trap 'rm -rf -- "$d"' EXIT
trap 'exit 129' HUP INT TERM PIPE
printf '%s ready %s\n' "$1" "$(id -u)"
while IFS= read -r hdr; do
  set -f; set -- $hdr; set +f
  c=$(head -c "$1"; echo x); c=${c%x}
  head -c "$2" > "$d/in"
  { sh -c "$c" < "$d/in" 2> "$d/err"; echo $? > "$d/rc"; } | base64 -w 0
  read -r rc < "$d/rc"
  printf '\n%s %s\n' "$rc" "$(wc -c < "$d/err")"
  cat -- "$d/err"
done
"#;

/// Largest standard output or error kept per command (as in the channel-per-command path).
const MAX_OUTPUT: usize = 64 << 20;

/// How a command run through the shell ended.
pub(crate) struct Reply {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a shell stopped being usable. Either way the shell is dropped; a new one is started for
/// the next command.
#[derive(Debug)]
pub(crate) enum ShellError {
    /// The request never reached the node: the command did not run.
    NotSent(String),
    /// The shell or the connection ended while the command ran: its outcome is unknown.
    Lost(String),
    /// The reply broke the protocol or a limit.
    Protocol(String),
}

/// A started server on one channel, idle between requests.
pub(crate) struct Shell {
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    buf: Vec<u8>,
    /// What the server printed on standard error (rc-file noise, its own errors), last 4 KiB.
    noise: Vec<u8>,
    /// The numeric user id the shell runs as.
    pub uid: u32,
    /// The connection generation the channel belongs to.
    pub generation: u64,
}

impl Shell {
    /// Starts the server on a fresh channel whose command is `line` (which runs [`SERVER`]
    /// with `nonce`), and waits for its ready line.
    pub(crate) async fn start(
        channel: russh::Channel<Msg>,
        line: &str,
        nonce: &str,
        generation: u64,
    ) -> Result<Shell, ShellError> {
        let (read, write) = channel.split();
        write
            .exec(true, line.as_bytes().to_vec())
            .await
            .map_err(|e| ShellError::NotSent(format!("cannot start the command shell: {e}")))?;
        let mut shell = Shell {
            read,
            write,
            buf: Vec::new(),
            noise: Vec::new(),
            uid: 0,
            generation,
        };
        let marker = format!("{nonce} ready ");
        loop {
            let line = shell.read_line(64 << 10).await.map_err(|e| match e {
                ShellError::Lost(r) => ShellError::NotSent(r),
                other => other,
            })?;
            let text = String::from_utf8_lossy(&line);
            if let Some(uid) = text.strip_prefix(&marker) {
                shell.uid = uid.trim().parse().map_err(|_| {
                    ShellError::Protocol(format!("the command shell reported user id `{uid}`"))
                })?;
                return Ok(shell);
            }
        }
    }

    /// Runs one command line with `stdin` as its input. Cancelling the future leaves the
    /// shell out of step: drop it.
    pub(crate) async fn run(&mut self, line: &str, stdin: &[u8]) -> Result<Reply, ShellError> {
        let mut request = format!("{} {}\n", line.len(), stdin.len()).into_bytes();
        request.extend_from_slice(line.as_bytes());
        request.extend_from_slice(stdin);
        self.write
            .data_bytes(request)
            .await
            .map_err(|e| ShellError::NotSent(format!("cannot send the command: {e}")))?;

        // base64 grows 3 bytes to 4.
        let encoded = self.read_line(MAX_OUTPUT / 3 * 4 + 4).await?;
        let stdout = data_encoding::BASE64
            .decode(&encoded)
            .map_err(|e| ShellError::Protocol(format!("garbled standard output: {e}")))?;
        let status_line = self.read_line(256).await?;
        let (status, err_len) =
            parse_status(&String::from_utf8_lossy(&status_line)).ok_or_else(|| {
                ShellError::Protocol(format!(
                    "garbled status line `{}`",
                    String::from_utf8_lossy(&status_line)
                ))
            })?;
        if err_len > MAX_OUTPUT {
            return Err(ShellError::Protocol(format!(
                "the command's standard error exceeds {} MiB",
                MAX_OUTPUT >> 20
            )));
        }
        let stderr = self.read_exact(err_len).await?;
        Ok(Reply {
            status,
            stdout,
            stderr,
        })
    }

    /// False when the shell ended while idle (its channel has closed, or it printed something
    /// no request asked for). Does not wait.
    pub(crate) fn is_idle_and_alive(&mut self) -> bool {
        use futures::FutureExt;
        while let Some(msg) = self.read.wait().now_or_never() {
            match msg {
                Some(ChannelMsg::ExtendedData { .. }) | Some(ChannelMsg::WindowAdjusted { .. }) => {
                }
                _ => return false,
            }
        }
        self.buf.is_empty()
    }

    /// Ends the shell: its input closes, so it exits and removes its directory.
    pub(crate) async fn close(self) {
        let _ = self.write.eof().await;
        let _ = self.write.close().await;
    }

    /// Reads one more message from the channel into the buffer.
    async fn fill(&mut self) -> Result<(), ShellError> {
        loop {
            match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    self.buf.extend_from_slice(&data);
                    return Ok(());
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    self.noise.extend_from_slice(&data);
                    let excess = self.noise.len().saturating_sub(4096);
                    self.noise.drain(..excess);
                }
                Some(ChannelMsg::Failure) => {
                    return Err(ShellError::NotSent(
                        "sshd refused to start the command shell".into(),
                    ))
                }
                Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. })
                | Some(ChannelMsg::Eof | ChannelMsg::Close)
                | None => {
                    let noise = String::from_utf8_lossy(&self.noise);
                    let noise = noise.trim();
                    return Err(ShellError::Lost(if noise.is_empty() {
                        "the command shell ended".into()
                    } else {
                        format!("the command shell ended: {noise}")
                    }));
                }
                Some(_) => {}
            }
        }
    }

    async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>, ShellError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|b| *b == b'\n') {
                let end = scanned + pos;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                return Ok(line);
            }
            scanned = self.buf.len();
            if scanned > limit {
                return Err(ShellError::Protocol(format!(
                    "a reply line exceeds {} bytes",
                    limit
                )));
            }
            self.fill().await?;
        }
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ShellError> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }
}

/// Parses `STATUS LEN_ERR`. Statuses above 128 that name a signal (the shell's way of saying
/// the command was killed) become [`ExitStatus::Signal`], as sshd reports them.
fn parse_status(line: &str) -> Option<(ExitStatus, usize)> {
    let mut words = line.split_whitespace();
    let code: u32 = words.next()?.parse().ok()?;
    let err_len: usize = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    let signal = match code.checked_sub(128) {
        Some(1) => Some("HUP"),
        Some(2) => Some("INT"),
        Some(3) => Some("QUIT"),
        Some(6) => Some("ABRT"),
        Some(9) => Some("KILL"),
        Some(11) => Some("SEGV"),
        Some(13) => Some("PIPE"),
        Some(14) => Some("ALRM"),
        Some(15) => Some("TERM"),
        _ => None,
    };
    let status = match signal {
        Some(name) => ExitStatus::Signal(name.into()),
        None => ExitStatus::Code(code),
    };
    Some((status, err_len))
}

/// A fresh random nonce for the ready line.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 12];
    // Without randomness the nonce is still unlikely to appear in rc-file output.
    let _ = getrandom::fill(&mut bytes);
    format!("etcd-recover-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_codes_signals_and_refuse_garbage() {
        assert!(matches!(
            parse_status("0 0"),
            Some((ExitStatus::Code(0), 0))
        ));
        assert!(matches!(
            parse_status("2      17"),
            Some((ExitStatus::Code(2), 17))
        ));
        let Some((ExitStatus::Signal(s), 3)) = parse_status("137 3") else {
            panic!()
        };
        assert_eq!(s, "KILL");
        assert!(matches!(
            parse_status("200 0"),
            Some((ExitStatus::Code(200), 0))
        ));
        for bad in ["", "0", "x 0", "0 -1", "0 0 0"] {
            assert!(parse_status(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_server_runs_commands_with_their_input_and_frames_the_replies() {
        // The server script itself, run by the local sh, with two requests.
        let mut input = Vec::new();
        for (cmd, stdin) in [
            ("printf 'a\\nb'; echo oops >&2; exit 3", &b""[..]),
            ("cat; printf 'x\\n\\n'", &b"in\x00put\n"[..]),
        ] {
            input.extend_from_slice(format!("{} {}\n", cmd.len(), stdin.len()).as_bytes());
            input.extend_from_slice(cmd.as_bytes());
            input.extend_from_slice(stdin);
        }
        let mut child = std::process::Command::new("sh")
            .args(["-c", SERVER, "sh", "N0NCE"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&input).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(lines[0].starts_with("N0NCE ready "), "{text}");
        assert_eq!(
            data_encoding::BASE64.decode(lines[1].as_bytes()).unwrap(),
            b"a\nb"
        );
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["3", "5"]);
        assert!(lines[3].starts_with("oops"));
        assert_eq!(
            data_encoding::BASE64.decode(lines[4].as_bytes()).unwrap(),
            b"in\x00put\nx\n\n"
        );
        assert_eq!(lines[5].split_whitespace().collect::<Vec<_>>(), ["0", "0"]);
    }
}
