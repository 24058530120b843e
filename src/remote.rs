//! The one boundary between the restore logic and the nodes.
//!
//! Everything above this module (discovery, plan, engine, steps) talks to a node through the
//! [`Remote`] trait and never knows how bytes travel. [`crate::transport`] implements it over SSH;
//! unit tests implement it in memory. Commands are argument vectors, never shell strings: the
//! implementation quotes them in exactly one place.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

/// A command to run on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program and arguments. Never a shell string; quoting is the transport's job.
    pub argv: Vec<String>,
    /// Run with root privileges (through `sudo -n` when the SSH user is not root).
    pub privileged: bool,
    /// Bytes written to the command's standard input, then EOF.
    pub stdin: Option<Vec<u8>>,
    /// Give up (and report a timeout) after this long.
    pub timeout: Duration,
}

impl Cmd {
    /// A privileged command with the default timeout of 60 s.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            privileged: true,
            stdin: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Runs as the SSH user, without sudo.
    pub fn unprivileged(mut self) -> Self {
        self.privileged = false;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Feeds `input` to standard input.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// A `sh -c SCRIPT` command. Only for fixed scripts written in this crate; variable parts go
    /// in as positional parameters (`$1`, `$2`, ...) so they are never parsed by the shell.
    pub fn script<I, S>(script: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "sh".to_string(),
        ];
        argv.extend(args.into_iter().map(Into::into));
        Cmd::new(argv)
    }
}

impl fmt::Display for Cmd {
    /// Renders the argv the way a reader would type it in a POSIX shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_join(&self.argv))
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// Exited with this code.
    Code(u32),
    /// Killed by this signal (name as reported by sshd, e.g. `KILL`).
    Signal(String),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// What a remote command produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Wall time from sending the request to the channel closing.
    pub duration: Duration,
}

impl Output {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Options for [`Remote::write_file_atomic`].
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Directory for the temporary file; must be on the same filesystem as the target and must
    /// not be a directory the kubelet watches. `None` means the target's parent directory with a
    /// dot-prefixed temporary name (the kubelet ignores dot files).
    pub temp_dir: Option<String>,
    /// Mode for a new file (an existing file keeps its mode and owner).
    pub mode: Option<u32>,
}

/// Why a remote operation failed. Callers branch on the variant; the message names the node.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// TCP connection or SSH handshake did not complete.
    #[error("{node}: cannot reach {addr}: {reason}")]
    Unreachable {
        /// Node name from the inventory.
        node: String,
        /// Address tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The server's host key is not the one on record, or there is no record.
    #[error("{node}: host key verification failed: {reason}")]
    HostKey {
        /// Node name.
        node: String,
        /// What was found, with fingerprint and the fix.
        reason: String,
    },
    /// The server refused every key offered.
    #[error("{node}: authentication failed for user {user}: {reason}")]
    Auth {
        /// Node name.
        node: String,
        /// SSH user.
        user: String,
        /// Which keys were tried, and the fix.
        reason: String,
    },
    /// sudo needs a password or is not allowed.
    #[error("{node}: sudo failed for user {user}: {reason}")]
    Sudo {
        /// Node name.
        node: String,
        /// SSH user.
        user: String,
        /// What sudo said.
        reason: String,
    },
    /// The command did not finish in time.
    #[error("{node}: `{cmd}` did not finish within {timeout:?}")]
    Timeout {
        /// Node name.
        node: String,
        /// The command line.
        cmd: String,
        /// The limit.
        timeout: Duration,
    },
    /// A command this operation relies on failed.
    #[error("{node}: `{cmd}` failed ({status}): {stderr}")]
    Command {
        /// Node name.
        node: String,
        /// The command line.
        cmd: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Anything else (channel closed, I/O error on the local side, ...).
    #[error("{node}: {reason}")]
    Other {
        /// Node name.
        node: String,
        /// What happened.
        reason: String,
    },
}

/// A local TCP listener whose connections are forwarded to `host:port` as seen from the node.
/// Dropping it stops forwarding.
pub struct Forward {
    /// Where local clients connect.
    pub local_addr: SocketAddr,
    /// Keeps the forwarding task alive; aborted on drop.
    pub guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Progress callback for uploads: total bytes sent so far.
pub type ProgressFn<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// What the restore logic needs from one node.
#[async_trait]
pub trait Remote: Send + Sync {
    /// The node's name in the inventory.
    fn node(&self) -> &str;

    /// Runs a command and returns its output whatever the exit status. Errors only when the
    /// command could not be run or did not finish in time.
    async fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError>;

    /// Reads a whole (small) file with root privileges.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, RemoteError>;

    /// Replaces `path` atomically: temporary file, fsync, rename, fsync of the directory.
    /// An existing file keeps its mode and owner.
    async fn write_file_atomic(
        &self,
        path: &str,
        contents: &[u8],
        opts: &WriteOpts,
    ) -> Result<(), RemoteError>;

    /// Streams a local file to `remote_path` (created with `mode`) in constant memory. The node
    /// hashes what it wrote (SHA-256) and the file replaces `remote_path` only if that hash is
    /// `expected`, or, without `expected`, the hash computed here while reading the file.
    /// Passing the hash a verification already computed spares hashing the file again for
    /// every node, and guarantees that what lands is exactly what was verified. Returns the
    /// SHA-256 computed on the node.
    async fn upload(
        &self,
        local: &Path,
        remote_path: &str,
        mode: u32,
        expected: Option<[u8; 32]>,
        progress: ProgressFn<'_>,
    ) -> Result<[u8; 32], RemoteError>;

    /// Opens a local port forwarded to `host:port` as seen from the node.
    async fn forward(&self, host: &str, port: u16) -> Result<Forward, RemoteError>;

    /// Runs `cmd` and turns a non-zero exit into [`RemoteError::Command`].
    async fn run(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let out = self.exec(cmd).await?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(RemoteError::Command {
                node: self.node().to_string(),
                cmd: cmd.to_string(),
                status: out.status.clone(),
                stderr: out.stderr_text(),
            })
        }
    }
}

/// The node-side script behind [`Remote::write_file_atomic`]: `contents` must arrive on the
/// command's standard input (the returned command carries it).
///
/// The temporary file is created 0600 in `opts.temp_dir` when that is on the same filesystem as
/// the target (so the final `mv` is a `rename(2)`), else as a dot file next to the target (the
/// kubelet ignores dot files). Nothing replaces the target unless what arrived has exactly the
/// size and SHA-256 of `contents`: a request cut short (a dropped connection) leaves the target
/// as it was. An existing target's mode and owner carry over; the data and then the directory
/// are fsynced.
pub fn atomic_write_cmd(path: &str, contents: &[u8], opts: &WriteOpts) -> Cmd {
    const SCRIPT: &str = r#"set -eu
target=$1; tmpdir=$2; mode=$3; size=$4; sha=$5
dir=$(dirname -- "$target"); base=$(basename -- "$target")
if [ -z "$tmpdir" ] || [ ! -d "$tmpdir" ] || [ "$(stat -c %d -- "$tmpdir")" != "$(stat -c %d -- "$dir")" ]; then
  tmpdir=$dir
fi
tmp=$(mktemp -p "$tmpdir" ".$base.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
got=$(stat -c %s -- "$tmp")
if [ "$got" != "$size" ]; then
  echo "received $got of $size bytes; $target was left unchanged" >&2
  exit 1
fi
if command -v sha256sum >/dev/null 2>&1; then
  sum=$(sha256sum < "$tmp")
else
  sum=$(openssl dgst -sha256 -r < "$tmp")
fi
if [ "${sum%% *}" != "$sha" ]; then
  echo "what arrived has SHA-256 ${sum%% *}, expected $sha; $target was left unchanged" >&2
  exit 1
fi
if [ -e "$target" ]; then
  chmod --reference="$target" -- "$tmp"
  chown --reference="$target" -- "$tmp"
elif [ -n "$mode" ]; then
  chmod "$mode" -- "$tmp"
fi
sync -- "$tmp"
mv -f -T -- "$tmp" "$target"
trap - EXIT
sync -- "$dir"
"#;
    use sha2::Digest;
    let mode = opts.mode.map(|m| format!("{m:o}")).unwrap_or_default();
    Cmd::script(
        SCRIPT,
        [
            path.to_string(),
            opts.temp_dir.clone().unwrap_or_default(),
            mode,
            contents.len().to_string(),
            hex::encode(sha2::Sha256::digest(contents)),
        ],
    )
    .stdin(contents)
}

/// Checks that every word of `cmd` can reach a node intact: a NUL byte would be dropped (or
/// cut the word) on the way, and other control characters (but the newlines and tabs of the
/// crate's own scripts) have no business in a path or an argument. The error names the word
/// and the command.
pub fn check_words(cmd: &Cmd) -> Result<(), String> {
    for (i, word) in cmd.argv.iter().enumerate() {
        if let Some(c) = word
            .chars()
            .find(|c| c.is_control() && *c != '\n' && *c != '\t')
        {
            let program = cmd.argv.first().map(String::as_str).unwrap_or_default();
            let what = if c == '\0' {
                "a NUL byte".to_string()
            } else {
                format!("the control character {}", c.escape_unicode())
            };
            return Err(format!(
                "argument {i} of `{}` (`{}`) contains {what}; it cannot be passed to the node intact",
                printable(program),
                printable(word)
            ));
        }
    }
    Ok(())
}

/// `text` with every control character but newline and tab escaped (`\u{1b}`), so that text
/// from a node or a local command cannot drive the terminal it is shown on.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes one word for a POSIX shell: unchanged when it is plainly safe, else single-quoted.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins an argv into one POSIX shell command line. The only place command lines are built.
pub fn shell_join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_safe_words_and_escapes_the_rest() {
        assert_eq!(shell_quote("/var/lib/etcd"), "/var/lib/etcd");
        assert_eq!(shell_quote("--name=cp-1"), "--name=cp-1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_join(&["echo", "a;b", "c"]), "echo 'a;b' c");
    }

    /// Issue 13, "a truncated request still runs": the atomic write commits only what has the
    /// announced size and SHA-256; a third of the body then end of input leaves the target as
    /// it was.
    #[test]
    fn a_truncated_atomic_write_leaves_the_target_unchanged() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("etcd.yaml");
        std::fs::write(&target, "old\n").unwrap();
        let body = vec![b'y'; 3000];
        let cmd = atomic_write_cmd(target.to_str().unwrap(), &body, &WriteOpts::default());
        let run = |input: &[u8]| {
            let mut child = std::process::Command::new(&cmd.argv[0])
                .args(&cmd.argv[1..])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            child.wait_with_output().unwrap()
        };
        let out = run(&body[..1000]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("received 1000 of 3000 bytes"), "{stderr}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old\n");
        // Same size, other bytes: refused by the hash.
        let out = run(&[b'z'; 3000]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("SHA-256"));
        assert_eq!(std::fs::read(&target).unwrap(), b"old\n");
        // Only the dot-prefixed temporary files would be left, and they are removed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let out = run(&body);
        assert!(out.status.success());
        assert_eq!(std::fs::read(&target).unwrap(), body);
    }

    /// Issue 13, "NUL passes `shell_quote`": words with NUL or control characters are refused
    /// with the word and the command named; the scripts' own newlines and tabs pass.
    #[test]
    fn words_with_nul_or_control_characters_are_refused() {
        let err = check_words(&Cmd::new(["cat", "--", "/etc/kubernetes/a\0b"])).unwrap_err();
        assert!(err.contains("argument 2 of `cat`"), "{err}");
        assert!(err.contains("a NUL byte"), "{err}");
        let err = check_words(&Cmd::new(["ls", "x\u{1b}[2J"])).unwrap_err();
        assert!(err.contains("\\u{1b}"), "{err}");
        assert!(check_words(&Cmd::script("echo 1\n\techo 2", ["a b"])).is_ok());
        assert_eq!(printable("a\u{7}b\nc"), "a\\u{7}b\nc");
    }

    #[test]
    fn script_passes_variables_as_positional_parameters() {
        let cmd = Cmd::script("test -e \"$1\"", ["/tmp/x y"]);
        assert_eq!(cmd.argv, ["sh", "-c", "test -e \"$1\"", "sh", "/tmp/x y"]);
        assert_eq!(cmd.to_string(), "sh -c 'test -e \"$1\"' sh '/tmp/x y'");
    }
}
