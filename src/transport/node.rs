//! [`SshNode`]: one authenticated session to a node, implementing [`Remote`].
//!
//! One russh `Handle` per node, shared by every operation. Commands run through command shells
//! ([`super::shell`]) kept open on the node, one per concurrent command; uploads and forwarded
//! connections open channels of their own. Command lines are built by
//! [`crate::remote::shell_join`] only; privileged commands are prefixed with `sudo -n --` when
//! the node needs it, or with `sudo -S -k -p '' --` when the user opted in to typing the sudo
//! password (which then travels as the first line of input, never on a command line); never
//! with a PTY.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect, Sig};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use zeroize::Zeroizing;

use super::auth::{KeyStore, PassphrasePrompt};
use super::forward;
use super::handler::ClientHandler;
use super::scripts;
use super::session;
use super::shell::{self, Shell, ShellError};
use crate::inventory::{SshTarget, SudoMode, SudoPassword};
use crate::remote::{
    atomic_write_cmd, check_words, shell_join, Cmd, ExitStatus, Forward, Output, ProgressFn,
    Remote, RemoteError, WriteOpts,
};

/// Largest output `exec` keeps per stream; beyond it the command fails rather than filling
/// memory (`read_file` is for small files; large ones go through streaming operations).
const MAX_OUTPUT: usize = 64 << 20;

/// Upload chunk size: large enough that per-chunk overhead vanishes, small enough to keep a
/// few in flight without noticeable memory.
const UPLOAD_CHUNK: usize = 256 << 10;

/// Chunks read ahead of the network; with [`UPLOAD_CHUNK`] this bounds upload buffers to 1 MiB
/// on our side, plus the SSH channel window on the wire.
const UPLOAD_QUEUE: usize = 4;

/// Seconds the node-side `timeout` backstop waits beyond a command's own limit.
const REMOTE_GRACE_SECS: u64 = 2;

/// How long a lost connection is redialled before the operation that needs it fails. Long
/// enough to ride out an sshd restart or a short network blip, short enough that a rollback
/// does not hang on a node that is gone (it rolls back the others and says what is left).
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Pause between two reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Idle command shells kept per node; more are started while commands run concurrently.
const IDLE_SHELLS: usize = 4;

/// The longest wait for a polite goodbye (closing a channel or a session) to be sent.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The slowest transfer rate an upload is given time for, beyond the command timeout: a node
/// that takes longer (a disk that hangs in `dd` or `sync`) fails the upload instead of
/// hanging the run. 1 MiB/s gives an 8 GiB snapshot (etcd's largest quota) 2 h 16 min.
const UPLOAD_MIN_RATE: u64 = 1 << 20;

/// How connections are made.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Record unknown host keys (`StrictHostKeyChecking=accept-new`). A changed key is always
    /// refused.
    pub accept_new_host_keys: bool,
    /// Which ssh-agent to use.
    pub agent: Agent,
}

/// Which ssh-agent signs with its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Agent {
    /// The one `SSH_AUTH_SOCK` names, if set.
    #[default]
    FromEnvironment,
    /// The one listening on this socket.
    Socket(PathBuf),
    /// None: only key files.
    Disabled,
}

impl Agent {
    fn socket(&self) -> Option<PathBuf> {
        match self {
            Agent::FromEnvironment => std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            Agent::Socket(p) => Some(p.clone()),
            Agent::Disabled => None,
        }
    }
}

/// Opens sessions to nodes; shares loaded keys (and so passphrase prompts) and the sudo
/// password between them.
#[derive(Clone)]
pub struct Connector {
    keys: Arc<KeyStore>,
    options: ConnectOptions,
    prompt: Arc<dyn PassphrasePrompt>,
    /// The sudo password, asked at most once per run (`None` inside: nobody could be asked).
    sudo_password: Arc<tokio::sync::OnceCell<Option<Secret>>>,
}

/// A password kept in memory only, wiped when the last holder lets go.
type Secret = Arc<Zeroizing<String>>;

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector that asks for key passphrases through `prompt`.
    pub fn new(options: ConnectOptions, prompt: Arc<dyn PassphrasePrompt>) -> Self {
        Connector {
            keys: Arc::new(KeyStore::new(prompt.clone(), options.agent.socket())),
            options,
            prompt,
            sudo_password: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// Loads every key file the targets use, asking passphrases now, and the sudo password if
    /// a target needs it, so that connections started afterwards do not run their timeouts
    /// while the user types.
    pub async fn preload(&self, targets: &[SshTarget]) {
        self.keys.preload(&key_files(targets)).await;
        let mut users: Vec<&str> = Vec::new();
        for t in targets {
            if t.sudo_password == SudoPassword::Prompt && !users.contains(&t.endpoint.user.as_str())
            {
                users.push(&t.endpoint.user);
            }
        }
        if !users.is_empty() {
            self.sudo_password(&users.join(", ")).await;
        }
    }

    /// The sudo password, asked once through the prompt.
    async fn sudo_password(&self, users: &str) -> Option<Secret> {
        self.sudo_password
            .get_or_init(|| async {
                let prompt = self.prompt.clone();
                let users = users.to_string();
                tokio::task::spawn_blocking(move || prompt.sudo_password(&users))
                    .await
                    .ok()
                    .flatten()
                    .map(Arc::new)
            })
            .await
            .clone()
    }

    /// Connects to every target in parallel. Key files are loaded (and passphrases asked) first,
    /// so that connection timeouts do not run while the user types.
    pub async fn connect_all(&self, targets: &[SshTarget]) -> Vec<Result<SshNode, RemoteError>> {
        self.preload(targets).await;
        futures::future::join_all(targets.iter().map(|t| self.connect_loaded(t))).await
    }

    /// Connects to one target.
    pub async fn connect(&self, target: &SshTarget) -> Result<SshNode, RemoteError> {
        self.preload(std::slice::from_ref(target)).await;
        self.connect_loaded(target).await
    }

    async fn connect_loaded(&self, target: &SshTarget) -> Result<SshNode, RemoteError> {
        let connected =
            session::connect(target, &self.keys, self.options.accept_new_host_keys).await?;
        let mut node = SshNode {
            target: target.clone(),
            conn: std::sync::RwLock::new(Conn {
                handle: Arc::new(connected.handle),
                jumps: Arc::new(connected.jumps),
                _proxy: Arc::new(connected.proxy),
                generation: 0,
            }),
            redial: Redial {
                keys: self.keys.clone(),
                accept_new: self.options.accept_new_host_keys,
                window: RECONNECT_WINDOW,
            },
            redialing: tokio::sync::Mutex::new(()),
            shells: std::sync::Mutex::new(Vec::new()),
            no_shell: std::sync::atomic::AtomicBool::new(false),
            is_root: false,
            sudo: Sudo::Off,
            sudo_password: None,
            notes: connected.notes,
        };
        // The first command shell says who we are; without one, `id -u` does. Either way a
        // command like any other: on a busy node the login shell alone (its rc files run for
        // every channel) can take longer than the connect timeout.
        let uid = match node.shell(target.command_timeout).await {
            Ok(Some(shell)) => {
                let uid = shell.uid;
                node.put_back(shell).await;
                uid.to_string()
            }
            Ok(None) | Err(_) => node
                .run(
                    &Cmd::new(["id", "-u"])
                        .unprivileged()
                        .timeout(target.command_timeout),
                )
                .await?
                .stdout_text()
                .trim()
                .to_string(),
        };
        node.is_root = uid == "0";
        let use_sudo = match target.sudo {
            SudoMode::Auto => !node.is_root,
            SudoMode::Always => true,
            SudoMode::Never => false,
        };
        node.sudo = if use_sudo {
            Sudo::NoPassword
        } else {
            Sudo::Off
        };
        if use_sudo && target.sudo_password == SudoPassword::Prompt {
            let password = self.sudo_password(&target.endpoint.user).await;
            node.use_sudo_password(password).await?;
        }
        Ok(node)
    }
}

fn key_files(targets: &[SshTarget]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for t in targets {
        for e in t.jumps.iter().chain(std::iter::once(&t.endpoint)) {
            for f in &e.identity_files {
                if !files.contains(f) {
                    files.push(f.clone());
                }
            }
        }
    }
    files
}

/// The live session to a node.
#[derive(Clone)]
struct Conn {
    handle: Arc<Handle<ClientHandler>>,
    /// Sessions to the jump hosts; the node's session is tunnelled through them.
    jumps: Arc<Vec<Handle<ClientHandler>>>,
    /// The ProxyCommand the first hop runs over; killed once the last user of this
    /// connection lets go of it.
    _proxy: Arc<Option<super::proxy::ProxyChild>>,
    /// Bumped on every reconnection, so concurrent users redial once.
    generation: u64,
}

/// What is needed to open the session again after it was lost.
#[derive(Debug, Clone)]
struct Redial {
    keys: Arc<KeyStore>,
    accept_new: bool,
    window: Duration,
}

/// An authenticated SSH session to one node. When the connection is lost, the next operation
/// reconnects (for up to [`RECONNECT_WINDOW`]); an operation that was running when it was lost
/// fails, saying that its outcome is unknown.
pub struct SshNode {
    target: SshTarget,
    conn: std::sync::RwLock<Conn>,
    redial: Redial,
    redialing: tokio::sync::Mutex<()>,
    /// Idle command shells ([`shell`]), most recently used last.
    shells: std::sync::Mutex<Vec<Shell>>,
    /// Set when a command shell cannot start on this node: commands then get a channel each.
    no_shell: std::sync::atomic::AtomicBool,
    is_root: bool,
    sudo: Sudo,
    /// The sudo password, when [`Sudo::Password`].
    sudo_password: Option<Secret>,
    notes: Vec<String>,
}

/// How privileged commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sudo {
    /// As the login user (root, or `sudo: never`).
    Off,
    /// `sudo -n --`: sudo must not ask.
    NoPassword,
    /// `sudo -S -k -p '' --` with the password as the first line of input.
    Password,
}

impl std::fmt::Debug for SshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshNode")
            .field("node", &self.target.node)
            .field("endpoint", &self.target.endpoint.to_string())
            .field("jumps", &self.target.jumps.len())
            .field("sudo", &self.sudo)
            .finish()
    }
}

/// How a channel ended, before it becomes an [`Output`] or an error.
struct Ended {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl SshNode {
    /// The resolved settings this session was opened with.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// True when the SSH user is root.
    pub fn is_root(&self) -> bool {
        self.is_root
    }

    /// True when privileged commands go through sudo.
    pub fn uses_sudo(&self) -> bool {
        self.sudo != Sudo::Off
    }

    /// Switches privileged commands to `sudo -S` with `password`, unless sudo needs no
    /// password on this node (`sudo -n true` succeeds; then a note says the password is not
    /// used). The password is checked here, before anything else runs: a wrong one is a
    /// [`RemoteError::Sudo`].
    async fn use_sudo_password(&mut self, password: Option<Secret>) -> Result<(), RemoteError> {
        let probe = Cmd::new(["true"]).timeout(self.target.command_timeout);
        let without = match self.exec(&probe).await {
            Ok(out) => out.status.success(),
            // sudo said it needs a password (or a terminal): exactly the case for one.
            Err(RemoteError::Sudo { .. }) => false,
            Err(other) => return Err(other),
        };
        if without {
            self.notes.push(format!(
                "sudo needs no password for {} on this node; the sudo password is not used",
                self.target.endpoint.user
            ));
            return Ok(());
        }
        let user = self.target.endpoint.user.clone();
        let Some(password) = password else {
            return Err(RemoteError::Sudo {
                node: self.target.node.clone(),
                user,
                reason: "sudo needs a password (`sudo_password: prompt`) and none was given: no terminal to ask on, or the prompt was left".into(),
            });
        };
        self.sudo = Sudo::Password;
        self.sudo_password = Some(password);
        let said = match self.exec(&probe).await {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => out.stderr_text(),
            Err(RemoteError::Sudo { reason, .. }) => reason,
            Err(other) => return Err(other),
        };
        self.sudo = Sudo::NoPassword;
        self.sudo_password = None;
        let said = said.lines().next().unwrap_or("no message").to_string();
        Err(RemoteError::Sudo {
            node: self.target.node.clone(),
            user: user.clone(),
            reason: format!(
                "sudo refused the password for {user} ({}); nothing was changed on the node: run again and type {user}'s password on the node",
                crate::remote::printable(said.split("; without").next().unwrap_or_default())
            ),
        })
    }

    /// What a privileged command gets before its input: the sudo password, or nothing.
    fn secret(&self, cmd: &Cmd) -> Zeroizing<Vec<u8>> {
        match (
            &self.sudo_password,
            cmd.privileged && self.sudo == Sudo::Password,
        ) {
            (Some(p), true) => Zeroizing::new(p.as_bytes().to_vec()),
            _ => Zeroizing::new(Vec::new()),
        }
    }

    /// Things the user should know about this connection (e.g. a newly recorded host key).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Checks that privileged commands can run (`sudo -n true` when sudo is used).
    pub async fn check_sudo(&self) -> Result<(), RemoteError> {
        let out = self
            .exec(&Cmd::new(["true"]).timeout(self.target.command_timeout))
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RemoteError::Command {
                node: self.target.node.clone(),
                cmd: "true".into(),
                stderr: out.stderr_text(),
                status: out.status,
            })
        }
    }

    /// Ends the session (and the jump sessions) politely, waiting at most [`CLOSE_WAIT`] for
    /// each.
    pub async fn close(self) {
        let conn = self.current();
        let _ = tokio::time::timeout(
            CLOSE_WAIT,
            conn.handle.disconnect(Disconnect::ByApplication, "", "en"),
        )
        .await;
        for j in conn.jumps.iter().rev() {
            let _ = tokio::time::timeout(
                CLOSE_WAIT,
                j.disconnect(Disconnect::ByApplication, "", "en"),
            )
            .await;
        }
    }

    /// Sets how long a lost connection is redialled (default [`RECONNECT_WINDOW`]).
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.redial.window = window;
        self
    }

    /// How many times the session was re-established after being lost.
    pub fn reconnections(&self) -> u64 {
        self.current().generation
    }

    fn current(&self) -> Conn {
        match self.conn.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The session, reconnected first if it was lost.
    async fn live(&self) -> Result<Conn, RemoteError> {
        let conn = self.current();
        if conn.handle.is_closed() {
            return self.reconnect(conn.generation).await;
        }
        Ok(conn)
    }

    /// Opens the session again, unless another task already did since generation `seen`.
    /// Retries unreachable errors for the reconnect window; a host key or authentication
    /// refusal ends it at once (it will not go away by waiting).
    async fn reconnect(&self, seen: u64) -> Result<Conn, RemoteError> {
        let _one_at_a_time = self.redialing.lock().await;
        let conn = self.current();
        if conn.generation != seen && !conn.handle.is_closed() {
            return Ok(conn);
        }
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match session::connect(&self.target, &self.redial.keys, self.redial.accept_new).await {
                Ok(connected) => {
                    let fresh = Conn {
                        handle: Arc::new(connected.handle),
                        jumps: Arc::new(connected.jumps),
                        _proxy: Arc::new(connected.proxy),
                        generation: conn.generation + 1,
                    };
                    match self.conn.write() {
                        Ok(mut c) => *c = fresh.clone(),
                        Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
                    }
                    return Ok(fresh);
                }
                Err(RemoteError::Unreachable { node, addr, reason })
                    if started.elapsed() + RECONNECT_PAUSE >= self.redial.window =>
                {
                    return Err(RemoteError::Unreachable {
                        node,
                        addr,
                        reason: format!(
                            "the SSH connection was lost and {attempts} reconnection attempt(s) over {} failed; last: {reason}",
                            session::human_duration(started.elapsed())
                        ),
                    });
                }
                Err(RemoteError::Unreachable { .. }) => tokio::time::sleep(RECONNECT_PAUSE).await,
                Err(other) => return Err(other),
            }
        }
    }

    /// Opens a session channel, reconnecting once when the connection turns out to be lost.
    /// The node must answer within `connect_timeout`: a session that stopped answering (a hung
    /// sshd, a dead peer while keepalives are off) fails here instead of waiting forever.
    async fn open_channel(&self) -> Result<(russh::Channel<Msg>, Conn), RemoteError> {
        let conn = self.live().await?;
        let limit = self.target.connect_timeout;
        let opened = tokio::time::timeout(limit, conn.handle.channel_open_session()).await;
        let first = match opened {
            Ok(Ok(ch)) => return Ok((ch, conn)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => return Err(self.no_answer("open an SSH channel", limit)),
        };
        // A connection that just died may not be marked closed yet.
        for _ in 0..10 {
            if conn.handle.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !conn.handle.is_closed() {
            return Err(self.other(format!("cannot open an SSH channel: {first}")));
        }
        let conn = self.reconnect(conn.generation).await?;
        let ch = tokio::time::timeout(limit, conn.handle.channel_open_session())
            .await
            .map_err(|_| self.no_answer("open an SSH channel", limit))?
            .map_err(|e| {
                self.other(format!(
                    "cannot open an SSH channel right after reconnecting: {e}"
                ))
            })?;
        Ok((ch, conn))
    }

    /// The error for a session that did not answer `what` within `limit`.
    fn no_answer(&self, what: &str, limit: Duration) -> RemoteError {
        self.other(format!(
            "the SSH session to {} did not answer within {} (connect_timeout) when asked to {what}; the node or its sshd may hang",
            self.target.endpoint,
            session::human_duration(limit)
        ))
    }

    /// The one place a command line is built: `[sudo -n --] [timeout -s KILL N] argv...`.
    ///
    /// `limit` arms coreutils `timeout` on the node as a backstop: closing an SSH channel does
    /// not stop a command without a PTY, and sshd refuses signal requests in common setups
    /// (root logins: "session signalling requires privilege separation"). The node-side limit
    /// is a little longer than ours, so our timeout reports first.
    fn command_line(&self, cmd: &Cmd, limit: Option<Duration>) -> String {
        command_line(cmd, self.sudo, limit)
    }

    /// The error for a channel that ended without an exit status: when the connection is
    /// gone, say so plainly (the command may or may not have finished on the node).
    async fn lost_or(&self, conn: &Conn, command: &str, reason: String) -> RemoteError {
        for _ in 0..10 {
            if conn.handle.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !conn.handle.is_closed() {
            return self.other(reason);
        }
        let shown: String = command.chars().take(200).collect();
        let more = if shown.len() < command.len() {
            "..."
        } else {
            ""
        };
        self.other(format!(
            "the SSH connection to {} was lost while `{shown}{more}` ran: whether it finished on the node is unknown; the next operation reconnects",
            self.target.endpoint
        ))
    }

    fn other(&self, reason: impl Into<String>) -> RemoteError {
        RemoteError::Other {
            node: self.target.node.clone(),
            reason: reason.into(),
        }
    }

    /// Turns sudo's own refusal into [`RemoteError::Sudo`]; anything else is the command's.
    fn sudo_refusal(&self, cmd: &Cmd, ended: &Ended) -> Option<RemoteError> {
        if !(cmd.privileged && self.sudo != Sudo::Off) || ended.status != ExitStatus::Code(1) {
            return None;
        }
        let stderr = String::from_utf8_lossy(&ended.stderr);
        let refusals = [
            "a password is required",
            "incorrect password",
            "no password was provided",
            "a terminal is required",
            "is not in the sudoers file",
            "is not allowed to execute",
            "may not run sudo",
        ];
        let line = stderr
            .lines()
            .find(|l| l.starts_with("sudo:") && refusals.iter().any(|r| l.contains(r)))?;
        Some(RemoteError::Sudo {
            node: self.target.node.clone(),
            user: self.target.endpoint.user.clone(),
            reason: format!(
                "{}; without `ssh.sudo_password: prompt` etcd-recover runs `sudo -n` and never types a password: allow {} passwordless sudo (a NOPASSWD rule in /etc/sudoers.d/), connect as root, or set `sudo_password: prompt` in the inventory's `ssh` section (or pass --ask-sudo-password) to type the password once",
                line.trim(),
                self.target.endpoint.user
            ),
        })
    }

    /// Opens a channel, starts `command`, and collects its output while `feed` writes its
    /// standard input. Gives up after `timeout`, killing the command (best effort).
    async fn run_channel<F, Fut>(
        &self,
        command: &str,
        timeout: Duration,
        feed: F,
    ) -> Result<Ended, RemoteError>
    where
        F: FnOnce(Arc<ChannelWriteHalf<Msg>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), FeedError>>,
    {
        let (channel, conn) = self.open_channel().await?;
        let (read, write) = channel.split();
        let write = Arc::new(write);
        write
            .exec(true, command.as_bytes().to_vec())
            .await
            .map_err(|e| self.other(format!("cannot start a command: {e}")))?;
        let work = async {
            let reader = collect(read, None);
            let writer = feed(write.clone());
            tokio::pin!(reader, writer);
            let mut writer_done = false;
            loop {
                tokio::select! {
                    fed = &mut writer, if !writer_done => {
                        writer_done = true;
                        match fed {
                            Ok(()) => {}
                            // A command may exit without reading all its input; what it
                            // printed and its exit status tell what happened.
                            Err(FeedError::Closed) => {}
                            Err(FeedError::Local(e)) => return Err(e),
                        }
                    }
                    ended = &mut reader => return match ended {
                        Ok(ended) => Ok(ended),
                        Err(r) => Err(self.lost_or(&conn, command, r).await),
                    },
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, work).await;
        match outcome {
            Ok(Ok(ended)) => Ok(ended),
            Ok(Err(e)) => {
                // Closing the channel ends the command's input, so it stops too.
                let _ = write.close().await;
                Err(e)
            }
            Err(_) => {
                let _ = write.signal(Sig::KILL).await;
                let _ = write.close().await;
                Err(RemoteError::Timeout {
                    node: self.target.node.clone(),
                    cmd: command.to_string(),
                    timeout,
                })
            }
        }
    }
}

/// Why feeding a command's standard input stopped early.
enum FeedError {
    /// The channel closed first; the command's exit status tells why.
    Closed,
    /// A problem on our side; the command is abandoned.
    Local(RemoteError),
}

fn append(buf: &mut Vec<u8>, data: &[u8], what: &str) -> Result<(), String> {
    if buf.len() + data.len() > MAX_OUTPUT {
        return Err(format!(
            "the command's {what} exceeds {} MiB",
            MAX_OUTPUT >> 20
        ));
    }
    buf.extend_from_slice(data);
    Ok(())
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

#[async_trait::async_trait]
impl Remote for SshNode {
    fn node(&self) -> &str {
        &self.target.node
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        check_words(cmd).map_err(|e| self.other(e))?;
        let line = self.command_line(cmd, Some(cmd.timeout));
        let started = Instant::now();
        let stdin = cmd.stdin.as_deref().unwrap_or_default();
        let timed_out = || RemoteError::Timeout {
            node: self.target.node.clone(),
            cmd: cmd.to_string(),
            timeout: cmd.timeout,
        };
        // A request that never reached its shell (the shell had ended while idle) goes once
        // more to a fresh one: it did not run.
        let mut attempts = 0;
        let reply = loop {
            attempts += 1;
            let left = cmd.timeout.saturating_sub(started.elapsed());
            let Some(mut sh) = self.shell(left).await.map_err(|e| match e {
                RemoteError::Timeout { .. } => timed_out(),
                other => other,
            })?
            else {
                return self.exec_channel(cmd).await;
            };
            let left = cmd.timeout.saturating_sub(started.elapsed());
            let secret = self.secret(cmd);
            match tokio::time::timeout(left, sh.run(&shell::exec_line(&line), &secret, stdin)).await
            {
                Ok(Ok(reply)) => {
                    self.put_back(sh).await;
                    break reply;
                }
                Ok(Err(ShellError::NotSent(_))) if attempts < 2 => sh.close().await,
                Ok(Err(ShellError::NotSent(reason) | ShellError::Lost(reason))) => {
                    sh.close().await;
                    return Err(self.lost_or(&self.current(), &line, reason).await);
                }
                Ok(Err(ShellError::Protocol(reason))) => {
                    sh.close().await;
                    return Err(self.other(format!("`{cmd}`: {reason}")));
                }
                Err(_) => {
                    // The node-side `timeout` backstop stops the command; the shell then
                    // reads the end of its input and exits.
                    sh.close().await;
                    return Err(timed_out());
                }
            }
        };
        let ended = Ended {
            status: reply.status,
            stdout: reply.stdout,
            stderr: reply.stderr,
        };
        if let Some(refusal) = self.sudo_refusal(cmd, &ended) {
            return Err(refusal);
        }
        Ok(Output {
            status: ended.status,
            stdout: ended.stdout,
            stderr: ended.stderr,
            duration: started.elapsed(),
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, RemoteError> {
        let out = self
            .run(&Cmd::new(["cat", "--", path]).timeout(self.target.command_timeout))
            .await?;
        Ok(out.stdout)
    }

    async fn write_file_atomic(
        &self,
        path: &str,
        contents: &[u8],
        opts: &WriteOpts,
    ) -> Result<(), RemoteError> {
        let cmd = atomic_write_cmd(path, contents, opts).timeout(self.target.command_timeout);
        self.run(&cmd).await.map(|_| ())
    }

    async fn upload(
        &self,
        local: &Path,
        remote_path: &str,
        mode: u32,
        expected: Option<[u8; 32]>,
        progress: ProgressFn<'_>,
    ) -> Result<[u8; 32], RemoteError> {
        self.upload_file(local, remote_path, mode, expected, progress)
            .await
    }

    async fn forward(&self, host: &str, port: u16) -> Result<Forward, RemoteError> {
        let conn = self.live().await?;
        forward::open(
            conn.handle.clone(),
            &self.target.node,
            host,
            port,
            self.target.connect_timeout,
        )
        .await
    }
}

impl SshNode {
    /// Runs `cmd` on a channel of its own (when no command shell can run on the node).
    async fn exec_channel(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let line = self.command_line(cmd, Some(cmd.timeout));
        let started = Instant::now();
        let secret = self.secret(cmd);
        let mut input = secret_line(&secret);
        input.extend_from_slice(cmd.stdin.as_deref().unwrap_or_default());
        let ended = self
            .run_channel(&line, cmd.timeout, |w| async move {
                if !input.is_empty() {
                    w.data_bytes(input.to_vec())
                        .await
                        .map_err(|_| FeedError::Closed)?;
                }
                w.eof().await.map_err(|_| FeedError::Closed)
            })
            .await
            .map_err(|e| match e {
                RemoteError::Timeout { node, timeout, .. } => RemoteError::Timeout {
                    node,
                    cmd: cmd.to_string(),
                    timeout,
                },
                other => other,
            })?;
        if let Some(refusal) = self.sudo_refusal(cmd, &ended) {
            return Err(refusal);
        }
        Ok(Output {
            status: ended.status,
            stdout: ended.stdout,
            stderr: ended.stderr,
            duration: started.elapsed(),
        })
    }

    /// An idle command shell, or a new one. `None` when shells cannot run on this node (it
    /// lacks `base64`, say): commands then get a channel each.
    async fn shell(&self, timeout: Duration) -> Result<Option<Shell>, RemoteError> {
        let conn = self.live().await?;
        {
            let mut idle = match self.shells.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Shells of a lost connection went with it.
            idle.retain(|s| s.generation == conn.generation);
            while let Some(mut sh) = idle.pop() {
                if sh.is_idle_and_alive() {
                    return Ok(Some(sh));
                }
            }
        }
        if self.no_shell.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        let (channel, conn) = self.open_channel().await?;
        let nonce = shell::nonce();
        let server = Cmd::script(shell::SERVER, [nonce.as_str()]).unprivileged();
        let line = self.command_line(&server, None);
        let start = Shell::start(channel, &line, &nonce, conn.generation);
        match tokio::time::timeout(timeout, start).await {
            Ok(Ok(sh)) => Ok(Some(sh)),
            Ok(Err(_)) if conn.handle.is_closed() => Ok(None),
            Ok(Err(_)) => {
                self.no_shell
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(None)
            }
            Err(_) => Err(RemoteError::Timeout {
                node: self.target.node.clone(),
                cmd: "sh (the command shell)".into(),
                timeout,
            }),
        }
    }

    /// Returns a shell to the idle pool (or ends it when the pool is full).
    async fn put_back(&self, sh: Shell) {
        let surplus = {
            let mut idle = match self.shells.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if idle.len() < IDLE_SHELLS {
                idle.push(sh);
                None
            } else {
                Some(sh)
            }
        };
        if let Some(sh) = surplus {
            let _ = tokio::time::timeout(CLOSE_WAIT, sh.close()).await;
        }
    }

    async fn upload_file(
        &self,
        local: &Path,
        remote_path: &str,
        mode: u32,
        expected: Option<[u8; 32]>,
        progress: ProgressFn<'_>,
    ) -> Result<[u8; 32], RemoteError> {
        let local_err = |what: &str, e: std::io::Error| {
            self.other(format!(
                "cannot {what} local file `{}`: {e}",
                local.display()
            ))
        };
        let file = std::fs::File::open(local).map_err(|e| local_err("open", e))?;
        let size = file.metadata().map_err(|e| local_err("inspect", e))?.len();

        // Reading (and hashing, unless the caller knows the hash) runs on a blocking thread, a
        // few chunks ahead of the network, so disk, SHA-256 and encryption overlap.
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(UPLOAD_QUEUE);
        let hash_locally = expected.is_none();
        let reader = tokio::task::spawn_blocking(move || read_and_hash(file, tx, hash_locally));

        let mode_text = format!("{mode:o}");
        let size_text = size.to_string();
        let cmd = Cmd::script(scripts::UPLOAD, [remote_path, &mode_text, &size_text]);
        check_words(&cmd).map_err(|e| self.other(e))?;
        let line = self.command_line(&cmd, None);
        let (channel, conn) = self.open_channel().await?;
        let (read, write) = channel.split();
        write
            .exec(true, line.as_bytes().to_vec())
            .await
            .map_err(|e| self.other(format!("cannot start the upload: {e}")))?;

        // The node prints its SHA-256 once the file is written and synced, then waits for our
        // verdict on the same standard input: `commit` (rename into place) or `abort`.
        let (hash_tx, hash_rx) = oneshot::channel::<String>();
        let node = self.target.node.clone();
        let shown = local.display().to_string();
        let password = secret_line(&self.secret(&cmd));
        let writer = async {
            if !password.is_empty() {
                write
                    .data_bytes(password.to_vec())
                    .await
                    .map_err(|_| FeedError::Closed)?;
            }
            let mut sent = 0u64;
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.map_err(|e| {
                    FeedError::Local(RemoteError::Other {
                        node: node.clone(),
                        reason: format!("cannot read local file `{shown}`: {e}"),
                    })
                })?;
                sent += chunk.len() as u64;
                write
                    .data_bytes(chunk)
                    .await
                    .map_err(|_| FeedError::Closed)?;
                progress(sent);
            }
            if sent != size {
                return Err(FeedError::Local(RemoteError::Other {
                    node: node.clone(),
                    reason: format!(
                        "local file `{shown}` changed size during the upload ({size} bytes expected, {sent} read)"
                    ),
                }));
            }
            let local_hash = reader
                .await
                .map_err(|e| {
                    FeedError::Local(RemoteError::Other {
                        node: node.clone(),
                        reason: format!("the local reader stopped: {e}"),
                    })
                })?
                .map_err(|e| {
                    FeedError::Local(RemoteError::Other {
                        node: node.clone(),
                        reason: format!("cannot read local file `{shown}`: {e}"),
                    })
                })?;
            // The node's file must match what the caller expects, else what was read here.
            let reference = expected.or(local_hash).unwrap_or_default();
            // No line means the node gave up; its exit status and stderr say why.
            let reply = hash_rx.await.map_err(|_| FeedError::Closed)?;
            let mut remote_hash = [0u8; 32];
            let parsed = hex::decode_to_slice(reply.trim(), &mut remote_hash).is_ok();
            let good = parsed && remote_hash == reference;
            let answer: &[u8] = if good { b"commit\n" } else { b"abort\n" };
            write
                .data_bytes(answer.to_vec())
                .await
                .map_err(|_| FeedError::Closed)?;
            write.eof().await.map_err(|_| FeedError::Closed)?;
            Ok::<_, FeedError>((reference, parsed.then_some(remote_hash), reply))
        };
        let mut verdict = None;
        let work = async {
            let collector = collect(read, Some(hash_tx));
            tokio::pin!(collector, writer);
            let mut writer_done = false;
            loop {
                tokio::select! {
                    biased;
                    fed = &mut writer, if !writer_done => {
                        writer_done = true;
                        match fed {
                            Ok(v) => verdict = Some(v),
                            Err(FeedError::Closed) => {}
                            Err(FeedError::Local(e)) => return Err(e),
                        }
                    }
                    ended = &mut collector => return match ended {
                        Ok(ended) => Ok(ended),
                        Err(r) => Err(self.lost_or(&conn, &line, r).await),
                    },
                }
            }
        };
        let limit = upload_limit(self.target.command_timeout, size);
        let outcome = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(self.other(format!(
                "the upload to {remote_path} did not finish within {} (the command timeout plus 1 s per MiB); the node may hang writing or syncing its disk; the node removes the partial file when the connection ends",
                session::human_duration(limit)
            )))
        });
        let ended = match outcome {
            Ok(ended) => ended,
            Err(e) => {
                // Closing the channel ends the node's input: it sees a short file and cleans up.
                let _ = tokio::time::timeout(CLOSE_WAIT, write.close()).await;
                return Err(e);
            }
        };
        if let Some(refusal) = self.sudo_refusal(&cmd, &ended) {
            return Err(refusal);
        }
        match verdict {
            Some((reference, Some(remote_hash), _)) if remote_hash != reference => {
                Err(self.other(self.mismatch(local, remote_path, expected, reference, remote_hash).await))
            }
            Some((_, None, reply)) => Err(self.other(format!(
                "unexpected reply from the upload to {remote_path}: `{}`; the node removed the file",
                reply.trim()
            ))),
            Some((_, Some(remote_hash), _))
                if ended.status.success()
                    && String::from_utf8_lossy(&ended.stdout).contains("\ncommitted") =>
            {
                Ok(remote_hash)
            }
            _ => Err(RemoteError::Command {
                node: self.target.node.clone(),
                cmd: format!("upload to {remote_path}"),
                status: ended.status,
                stderr: String::from_utf8_lossy(&ended.stderr).trim().to_string(),
            }),
        }
    }

    /// Why an upload's written file does not match: damaged on the way, or (when the caller
    /// gave the expected hash) the local file is no longer what was verified. Only this
    /// failure path hashes the local file again.
    async fn mismatch(
        &self,
        local: &Path,
        remote_path: &str,
        expected: Option<[u8; 32]>,
        reference: [u8; 32],
        written: [u8; 32],
    ) -> String {
        let short = |h: &[u8; 32]| hex::encode(&h[..8]);
        let shown = local.display();
        if expected.is_some() {
            let path = local.to_path_buf();
            let now = tokio::task::spawn_blocking(move || crate::localhost::sha256_file(&path))
                .await
                .ok()
                .and_then(Result::ok);
            if let Some(now) = now.filter(|now| *now != reference) {
                return format!(
                    "`{shown}` changed after it was verified (SHA-256 expected {}..., now {}...); \
                     the node removed its copy at {remote_path}. Verify the snapshot again and \
                     make sure nothing writes to it",
                    short(&reference),
                    short(&now)
                );
            }
        }
        format!(
            "upload of `{shown}` to {remote_path} is corrupt: SHA-256 sent {}..., written {}...; \
             the node removed the file",
            short(&reference),
            short(&written)
        )
    }
}

/// Reads a channel to its end: standard output, standard error, exit status. The first line
/// of standard output also goes to `first_line` as soon as it is complete.
async fn collect(
    mut read: ChannelReadHalf,
    mut first_line: Option<oneshot::Sender<String>>,
) -> Result<Ended, String> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut status = None;
    // The loop must run until the channel closes: data can follow the exit status.
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                append(&mut stdout, &data, "standard output")?;
                if let Some(pos) = stdout.iter().position(|b| *b == b'\n') {
                    if let Some(tx) = first_line.take() {
                        let _ = tx.send(String::from_utf8_lossy(&stdout[..pos]).into_owned());
                    }
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                append(&mut stderr, &data, "standard error")?
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(ExitStatus::Code(exit_status)),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                status = Some(ExitStatus::Signal(signal_text(&signal_name)))
            }
            ChannelMsg::Failure => return Err("sshd refused to run the command".into()),
            _ => {}
        }
    }
    match status {
        Some(status) => Ok(Ended {
            status,
            stdout,
            stderr,
        }),
        None => Err("the command ended without an exit status (connection lost?)".into()),
    }
}

/// Reads `file` in chunks into `tx`, hashing as it goes when `hash` is set. Memory stays at
/// the queue's bound.
fn read_and_hash(
    mut file: std::fs::File,
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    hash: bool,
) -> std::io::Result<Option<[u8; 32]>> {
    use std::io::Read;
    let mut hasher = hash.then(Sha256::new);
    loop {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = e.kind();
                    let text = e.to_string();
                    let _ = tx.blocking_send(Err(e));
                    return Err(std::io::Error::new(kind, text));
                }
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&buf);
        }
        if tx.blocking_send(Ok(buf)).is_err() {
            return Err(std::io::Error::other("the upload stopped"));
        }
    }
    Ok(hasher.map(|h| h.finalize().into()))
}

/// The sudo password as the first line of a command's input (`sudo -S` reads one line), or
/// nothing.
fn secret_line(secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut line = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
    if !secret.is_empty() {
        line.extend_from_slice(secret);
        line.push(b'\n');
    }
    line
}

/// How long an upload of `size` bytes may take: the command timeout for starting, hashing and
/// committing, plus the time to move the bytes at [`UPLOAD_MIN_RATE`].
fn upload_limit(command_timeout: Duration, size: u64) -> Duration {
    command_timeout + Duration::from_secs(size.div_ceil(UPLOAD_MIN_RATE))
}

/// See [`SshNode::command_line`].
fn command_line(cmd: &Cmd, sudo: Sudo, limit: Option<Duration>) -> String {
    let mut argv: Vec<String> = Vec::new();
    match sudo {
        _ if !cmd.privileged => {}
        Sudo::Off => {}
        Sudo::NoPassword => argv.extend(["sudo", "-n", "--"].map(String::from)),
        // `-k` ignores cached credentials, so sudo always reads the password line and the
        // command gets exactly its own input; `-p ''` keeps the prompt out of standard error.
        Sudo::Password => argv.extend(["sudo", "-S", "-k", "-p", "", "--"].map(String::from)),
    }
    if let Some(limit) = limit {
        let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0) + REMOTE_GRACE_SECS;
        argv.extend([
            "timeout".to_string(),
            "-s".into(),
            "KILL".into(),
            secs.to_string(),
        ]);
    }
    argv.extend(cmd.argv.iter().cloned());
    shell_join(&argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_once_and_add_sudo_and_the_backstop_timeout() {
        let cmd = Cmd::new(["cat", "--", "/etc/kubernetes/it's here.yaml"]);
        assert_eq!(
            command_line(&cmd, Sudo::NoPassword, Some(Duration::from_millis(1500))),
            "sudo -n -- timeout -s KILL 4 cat -- '/etc/kubernetes/it'\\''s here.yaml'"
        );
        assert_eq!(
            command_line(&cmd, Sudo::Off, None),
            "cat -- '/etc/kubernetes/it'\\''s here.yaml'"
        );
        let plain = Cmd::new(["id", "-u"]).unprivileged();
        assert_eq!(
            command_line(&plain, Sudo::Password, Some(Duration::from_secs(60))),
            "timeout -s KILL 62 id -u"
        );
        let script = Cmd::script("echo \"$1\"", ["$(reboot)"]);
        assert_eq!(
            command_line(&script, Sudo::NoPassword, None),
            "sudo -n -- sh -c 'echo \"$1\"' sh '$(reboot)'"
        );
        assert_eq!(
            command_line(&cmd, Sudo::Password, None),
            "sudo -S -k -p '' -- cat -- '/etc/kubernetes/it'\\''s here.yaml'"
        );
    }
}
