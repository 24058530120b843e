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
//! - request: a line `LEN_CMD LEN_SECRET LEN_IN`, then the command line, the secret (the sudo
//!   password, or nothing) and the input, raw, then a line `end`;
//! - reply: the command's standard output as one base64 line, then a line `STATUS LEN_ERR`,
//!   then the standard error, raw.
//!
//! The server runs nothing unless every announced byte arrived: the `end` line must follow
//! exactly the announced lengths, and the input file must have the announced size. A request
//! cut short (the connection dropped, or the client gave up mid-way) makes the server exit
//! without running it.
//!
//! Standard output is streamed (base64 keeps its end unambiguous), so what commands print
//! (certificate keys read for the health checks, for one) never touches the node's disk; only
//! the input and standard error pass through files, fresh ones for every request, in a private
//! `mktemp -d` directory the server removes when it ends. The secret never touches a file: it
//! stays in a shell variable and reaches `sudo -S` through a pipe.
//!
//! Each command runs in a session and process group of its own (`setsid`); once it has exited,
//! whatever it left running in that group is killed, so a background child can neither hold
//! the reply open nor write into the next one. Standard error is sent as exactly the number of
//! bytes measured, whatever is still appended to the file afterwards.

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use zeroize::Zeroizing;

use crate::remote::ExitStatus;

/// The server. `$1` is the nonce that marks the ready line.
///
/// `read` is a builtin that never reads past the newline, and GNU `head -c N` reads at most N
/// bytes, so the framing stays in step on a pipe. A command's exit status is written to a file
/// because the pipeline into `base64` would otherwise lose it (POSIX `sh` has no `pipefail`).
/// A command started in the background by a non-interactive shell is never a process group
/// leader, so `setsid` makes it the leader of a new session and process group without forking,
/// and `$!` is the group's id. Requests are `exec COMMAND` ([`exec_line`]), so the command
/// itself, and the node-side `timeout` that wraps it, lead that group (a session leader cannot
/// move to another group), and one `kill` of the group, a builtin, ends whatever the command
/// left behind. Every step that would fork only for an empty input, secret or
/// standard error is skipped, and old files are removed in batches, so a request costs about
/// what it did with a shared pair of files.
pub(crate) const SERVER: &str = r#"set -u
umask 077
d=$(mktemp -d "${TMPDIR:-/tmp}/etcd-recover-shell.XXXXXX") || exit 1
trap 'rm -rf -- "$d"' EXIT
trap 'exit 129' HUP INT TERM PIPE
if command -v setsid >/dev/null 2>&1; then g=setsid; else g=; fi
printf '%s ready %s\n' "$1" "$(id -u)"
n=0
while IFS= read -r hdr; do
  case $hdr in *[!0-9\ ]*|'') exit 2 ;; esac
  set -f; set -- $hdr; set +f
  [ $# -eq 3 ] || exit 2
  n=$((n + 1)); f=$d/$n
  [ $((n % 64)) -ne 0 ] || rm -f -- "$d"/*
  c=$(head -c "$1"; echo x); c=${c%x}
  s=
  [ "$2" -eq 0 ] || { s=$(head -c "$2"; echo x); s=${s%x}; }
  if [ "$3" -eq 0 ]; then : > "$f.in"; else head -c "$3" > "$f.in"; fi
  IFS= read -r t || t=
  [ "$t" = end ] || exit 3
  [ "$3" -eq 0 ] || [ "$(wc -c < "$f.in")" -eq "$3" ] || exit 3
  {
    if [ "$2" -eq 0 ]; then
      $g sh -c "$c" < "$f.in" 2> "$f.err" &
    else
      { printf '%s\n' "$s"; cat -- "$f.in"; } | $g sh -c "$c" 2> "$f.err" &
    fi
    p=$!
    wait "$p"; echo $? > "$f.rc"
    kill -KILL "-$p" 2>/dev/null
  } | base64 -w 0
  s=
  read -r rc < "$f.rc"
  if [ -s "$f.err" ]; then e=$(wc -c < "$f.err"); else e=0; fi
  printf '\n%s %s\n' "$rc" "$e"
  [ "$e" -eq 0 ] || head -c "$e" -- "$f.err"
done
"#;

/// `line` (one simple command, as [`crate::remote::shell_join`] builds them) as the server
/// should run it: `exec`ed by `sh -c`, so that the command, and the node-side `timeout` that
/// wraps it, lead the command's process group instead of forking into a group of their own
/// (dash does not exec the last command of `sh -c` by itself). The group kill after the
/// command then reaches everything it left behind.
pub(crate) fn exec_line(line: &str) -> String {
    format!("exec {line}")
}

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

/// The request for one command: header, command line, secret, input, trailer. Wiped when
/// dropped, since it may carry the sudo password.
pub(crate) fn request(line: &str, secret: &[u8], stdin: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut request = Zeroizing::new(Vec::with_capacity(
        line.len() + secret.len() + stdin.len() + 40,
    ));
    request
        .extend_from_slice(format!("{} {} {}\n", line.len(), secret.len(), stdin.len()).as_bytes());
    request.extend_from_slice(line.as_bytes());
    request.extend_from_slice(secret);
    request.extend_from_slice(stdin);
    request.extend_from_slice(b"end\n");
    request
}

/// Parses replies from the bytes the server sends, in whatever pieces they arrive. Never holds
/// more than [`ReplyParser::bound`] bytes, whatever the stream.
pub(crate) struct ReplyParser {
    buf: Vec<u8>,
    max_output: usize,
    /// Where the parser is within the current reply.
    state: ParseState,
}

enum ParseState {
    /// Waiting for the base64 line of standard output.
    Stdout,
    /// Standard output decoded; waiting for the status line.
    Status { stdout: Vec<u8> },
    /// Waiting for `len` bytes of standard error.
    Stderr {
        stdout: Vec<u8>,
        status: ExitStatus,
        len: usize,
    },
}

impl ReplyParser {
    /// A parser that refuses standard output or error larger than `max_output` bytes.
    pub(crate) fn new(max_output: usize) -> Self {
        ReplyParser {
            buf: Vec::new(),
            max_output,
            state: ParseState::Stdout,
        }
    }

    /// The most bytes the parser buffers (besides one decoded standard output).
    pub(crate) fn bound(&self) -> usize {
        // The base64 line of the largest output, its newline, and a status line.
        self.max_output.div_ceil(3) * 4 + 1 + 256
    }

    /// Bytes received but not yet part of a reply.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes more bytes from the server. Refuses them when they would overrun the bound.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), ShellError> {
        if self.buf.len() + data.len() > self.bound() {
            return Err(ShellError::Protocol(format!(
                "the command's output exceeds {} MiB",
                (self.max_output >> 20).max(1)
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete reply, if the bytes so far hold one.
    pub(crate) fn next_reply(&mut self) -> Result<Option<Reply>, ShellError> {
        loop {
            match &mut self.state {
                ParseState::Stdout => {
                    let Some(line) = take_line(&mut self.buf, self.max_output.div_ceil(3) * 4)?
                    else {
                        return Ok(None);
                    };
                    let stdout = data_encoding::BASE64.decode(&line).map_err(|e| {
                        ShellError::Protocol(format!("garbled standard output: {e}"))
                    })?;
                    if stdout.len() > self.max_output {
                        return Err(ShellError::Protocol(format!(
                            "the command's standard output exceeds {} MiB",
                            (self.max_output >> 20).max(1)
                        )));
                    }
                    self.state = ParseState::Status { stdout };
                }
                ParseState::Status { stdout } => {
                    let Some(line) = take_line(&mut self.buf, 255)? else {
                        return Ok(None);
                    };
                    let text = String::from_utf8_lossy(&line);
                    let (status, len) = parse_status(&text).ok_or_else(|| {
                        ShellError::Protocol(format!(
                            "garbled status line `{}`",
                            text.escape_debug()
                        ))
                    })?;
                    if len > self.max_output {
                        return Err(ShellError::Protocol(format!(
                            "the command's standard error exceeds {} MiB",
                            (self.max_output >> 20).max(1)
                        )));
                    }
                    let stdout = std::mem::take(stdout);
                    self.state = ParseState::Stderr {
                        stdout,
                        status,
                        len,
                    };
                }
                ParseState::Stderr { len, .. } => {
                    if self.buf.len() < *len {
                        return Ok(None);
                    }
                    let stderr: Vec<u8> = self.buf.drain(..*len).collect();
                    let ParseState::Stderr { stdout, status, .. } =
                        std::mem::replace(&mut self.state, ParseState::Stdout)
                    else {
                        unreachable!("the state was matched above")
                    };
                    return Ok(Some(Reply {
                        status,
                        stdout,
                        stderr,
                    }));
                }
            }
        }
    }
}

/// Removes and returns the first line of `buf` (without its newline), or `None` when it is
/// not complete yet; an error when it is longer than `limit`.
fn take_line(buf: &mut Vec<u8>, limit: usize) -> Result<Option<Vec<u8>>, ShellError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end <= limit => {
            let line = buf[..end].to_vec();
            buf.drain(..=end);
            Ok(Some(line))
        }
        Some(_) => Err(ShellError::Protocol(format!(
            "a reply line exceeds {limit} bytes"
        ))),
        None if buf.len() > limit => Err(ShellError::Protocol(format!(
            "a reply line exceeds {limit} bytes"
        ))),
        None => Ok(None),
    }
}

/// A started server on one channel, idle between requests.
pub(crate) struct Shell {
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    parser: ReplyParser,
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
            parser: ReplyParser::new(MAX_OUTPUT),
            noise: Vec::new(),
            uid: 0,
            generation,
        };
        let marker = format!("{nonce} ready ");
        loop {
            let line = loop {
                match take_line(&mut shell.parser.buf, 64 << 10) {
                    Ok(Some(line)) => break line,
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
                shell.fill().await.map_err(|e| match e {
                    ShellError::Lost(r) => ShellError::NotSent(r),
                    other => other,
                })?;
            };
            let text = String::from_utf8_lossy(&line);
            if let Some(uid) = text.strip_prefix(&marker) {
                shell.uid = uid.trim().parse().map_err(|_| {
                    ShellError::Protocol(format!(
                        "the command shell reported user id `{}`",
                        uid.escape_debug()
                    ))
                })?;
                return Ok(shell);
            }
        }
    }

    /// Runs one command line with `stdin` as its input; `secret` (the sudo password), if not
    /// empty, is its first line of input, without touching the node's disk. Cancelling the
    /// future leaves the shell out of step: drop it.
    pub(crate) async fn run(
        &mut self,
        line: &str,
        secret: &[u8],
        stdin: &[u8],
    ) -> Result<Reply, ShellError> {
        let request = request(line, secret, stdin);
        self.write
            .data_bytes(request.to_vec())
            .await
            .map_err(|e| ShellError::NotSent(format!("cannot send the command: {e}")))?;
        drop(request);
        loop {
            if let Some(reply) = self.parser.next_reply()? {
                return Ok(reply);
            }
            self.fill().await?;
        }
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
        self.parser.buffered() == 0
    }

    /// Ends the shell: its input closes, so it exits and removes its directory. Waits at most
    /// a few seconds for a session that stopped answering.
    pub(crate) async fn close(self) {
        let bye = async {
            let _ = self.write.eof().await;
            let _ = self.write.close().await;
        };
        let _ = tokio::time::timeout(super::node::CLOSE_WAIT, bye).await;
    }

    /// Reads one more message from the channel into the parser.
    async fn fill(&mut self) -> Result<(), ShellError> {
        loop {
            match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => return self.parser.push(&data),
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
                    let noise = crate::remote::printable(&String::from_utf8_lossy(&self.noise));
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

    /// Runs the server with the local `sh`, feeding it `input` then end of input, and returns
    /// what it printed. Killed after 20 s, so a server that hangs fails the test.
    fn serve(input: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut child = std::process::Command::new("sh")
            .args(["-c", SERVER, "sh", "N0NCE"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the command shell did not finish within 20 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        feeder.join().unwrap();
        reader.join().unwrap()
    }

    /// Every reply in `out`, after the ready line.
    fn replies(out: &[u8]) -> Vec<Reply> {
        let pos = out.iter().position(|b| *b == b'\n').unwrap();
        assert!(out.starts_with(b"N0NCE ready "));
        let mut parser = ReplyParser::new(MAX_OUTPUT);
        parser.push(&out[pos + 1..]).unwrap();
        let mut all = Vec::new();
        while let Some(r) = parser.next_reply().unwrap() {
            all.push(r);
        }
        assert_eq!(parser.buffered(), 0, "bytes no request asked for");
        all
    }

    #[test]
    fn the_server_runs_commands_with_their_input_and_frames_the_replies() {
        let mut input = Vec::new();
        for (cmd, stdin) in [
            ("printf 'a\\nb'; echo oops >&2; exit 3", &b""[..]),
            ("cat; printf 'x\\n\\n'", &b"in\x00put\n"[..]),
        ] {
            input.extend_from_slice(&request(cmd, b"", stdin));
        }
        let replies = replies(&serve(&input));
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].stdout, b"a\nb");
        assert_eq!(replies[0].status, ExitStatus::Code(3));
        assert_eq!(replies[0].stderr, b"oops\n");
        assert_eq!(replies[1].stdout, b"in\x00put\nx\n\n");
        assert_eq!(replies[1].status, ExitStatus::Code(0));
        assert!(replies[1].stderr.is_empty());
    }

    #[test]
    fn the_secret_is_the_first_line_of_input_and_never_a_file() {
        let input = request("read -r pw; echo \"[$pw]\"; cat", b"s3cret", b"rest\n");
        let replies = replies(&serve(&input));
        assert_eq!(replies[0].stdout, b"[s3cret]\nrest\n");
    }

    /// Issue 13, "a truncated request still runs": a third of a 3000-byte body, then end of
    /// input. The command must not run: no file, and no reply.
    #[test]
    fn a_truncated_request_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("etcd.yaml");
        let cmd = format!("cat > '{}'", target.display());
        let body = vec![b'x'; 3000];
        let full = request(&cmd, b"", &body);
        let header_and_cmd = full.len() - body.len() - 4;
        let cut = &full[..header_and_cmd + 1000];
        let out = serve(cut);
        assert!(!target.exists(), "the command ran on a truncated request");
        assert!(replies(&out).is_empty());

        // A request whose trailer is missing does not run either, nor one whose header lies
        // about the input's length.
        let out = serve(&full[..full.len() - 4]);
        assert!(!target.exists());
        assert!(replies(&out).is_empty());
        let mut lying = format!("{} 0 2999\n", cmd.len()).into_bytes();
        lying.extend_from_slice(cmd.as_bytes());
        lying.extend_from_slice(&body);
        lying.extend_from_slice(b"end\n");
        let out = serve(&lying);
        assert!(!target.exists());
        assert!(replies(&out).is_empty());

        // The whole request runs.
        let out = serve(&full);
        assert_eq!(replies(&out).len(), 1);
        assert_eq!(std::fs::read(&target).unwrap().len(), 3000);
    }

    /// Issue 13, "remote shell framing can desync": a command leaves a child behind that keeps
    /// writing to standard error (and holds standard output open). The next reply must be its
    /// own, and the first must not wait for the child.
    #[test]
    fn a_background_child_never_leaks_into_the_next_reply() {
        let mut input = Vec::new();
        input.extend_from_slice(&request(
            "(while :; do echo bg >&2; sleep 0.01; done) & echo first",
            b"",
            b"",
        ));
        // The shape real requests have: `exec`, the node-side `timeout`, then the command.
        input.extend_from_slice(&request(
            &exec_line("timeout -s KILL 20 sh -c '(sleep 0.2; while :; do echo late >&2; sleep 0.01; done) & echo timed'"),
            b"",
            b"",
        ));
        input.extend_from_slice(&request("sleep 0.3; echo second", b"", b""));
        input.extend_from_slice(&request("sleep 0.1; echo third >&2", b"", b""));
        let replies = replies(&serve(&input));
        assert_eq!(replies.len(), 4);
        assert_eq!(replies[0].stdout, b"first\n");
        assert!(
            replies[0]
                .stderr
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l == b"bg"),
            "{:?}",
            String::from_utf8_lossy(&replies[0].stderr)
        );
        assert_eq!(replies[1].stdout, b"timed\n");
        assert!(replies[1].stderr.is_empty(), "{:?}", replies[1].stderr);
        assert_eq!(replies[2].stdout, b"second\n");
        assert!(replies[2].stderr.is_empty(), "{:?}", replies[2].stderr);
        assert_eq!(replies[3].stderr, b"third\n");
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feeds `stream` to a parser in random pieces; the parser must never panic nor buffer
    /// more than its bound, and must stop at the first error.
    fn feed(stream: &[u8], rng: &mut Rng, max_output: usize) -> Vec<Reply> {
        let mut parser = ReplyParser::new(max_output);
        let mut out = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(300));
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            if parser.push(piece).is_err() {
                break;
            }
            assert!(parser.buffered() <= parser.bound());
            match parser.next_reply() {
                Ok(Some(r)) => {
                    assert!(r.stdout.len() <= max_output && r.stderr.len() <= max_output);
                    out.push(r);
                    while let Ok(Some(r)) = parser.next_reply() {
                        out.push(r);
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
            assert!(parser.buffered() <= parser.bound());
        }
        out
    }

    /// The reply parser on arbitrary and on damaged byte streams: no panic, bounded memory,
    /// and well-formed replies still come out whole. (A property test on stable Rust: random
    /// inputs from fixed seeds.)
    #[test]
    fn the_reply_parser_survives_any_byte_stream() {
        let max = 1024;
        let alphabet =
            b"0123456789 \nABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/=\x00\xff";
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            // Random bytes, mostly from the protocol's own alphabet.
            let len = rng.below(4096);
            let stream: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            feed(&stream, &mut rng, max);

            // Valid replies, then one damaged copy (a byte changed, cut, or inserted).
            let mut valid = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let stdout: Vec<u8> = (0..rng.below(max + 1)).map(|_| rng.next() as u8).collect();
                let stderr: Vec<u8> = (0..rng.below(max + 1)).map(|_| rng.next() as u8).collect();
                let code = rng.below(256);
                valid.extend_from_slice(data_encoding::BASE64.encode(&stdout).as_bytes());
                valid.extend_from_slice(format!("\n{code} {}\n", stderr.len()).as_bytes());
                valid.extend_from_slice(&stderr);
                expected.push((stdout, stderr));
            }
            let got = feed(&valid, &mut rng, max);
            assert_eq!(got.len(), expected.len(), "seed {seed}");
            for (r, (stdout, stderr)) in got.iter().zip(&expected) {
                assert_eq!(&r.stdout, stdout);
                assert_eq!(&r.stderr, stderr);
            }
            let mut damaged = valid.clone();
            let at = rng.below(damaged.len());
            match rng.below(3) {
                0 => damaged[at] = rng.next() as u8,
                1 => damaged.truncate(at),
                _ => damaged.insert(at, rng.next() as u8),
            }
            feed(&damaged, &mut rng, max);
        }
        // Announced lengths beyond the limit are refused, not allocated.
        let mut parser = ReplyParser::new(max);
        parser.push(b"\n0 18446744073709551615\n").unwrap();
        assert!(parser.next_reply().is_err());
        let mut parser = ReplyParser::new(max);
        let too_much = vec![b'A'; parser.bound() + 1];
        assert!(parser.push(&too_much).is_err());
    }
}
