//! The inventory after parsing: every node with its defaults already merged in.

use std::path::PathBuf;
use std::time::Duration;

/// A parsed, validated inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    /// Absolute path of the file it was read from.
    pub path: PathBuf,
    /// The cluster's name; the user types it to confirm destructive steps.
    pub cluster: String,
    /// The control-plane nodes, in file order.
    pub nodes: Vec<Node>,
}

impl Inventory {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// One control-plane node: defaults overlaid with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The etcd member name (`--name` in the node's etcd.yaml).
    pub name: String,
    /// The SSH address: a host name, an IP address, or a `Host` alias from the SSH config.
    pub host: String,
    /// SSH settings from the inventory. Unset fields fall back to the OpenSSH client config,
    /// then to built-in defaults (see [`crate::inventory::resolve_targets`]).
    pub ssh: SshSettings,
    /// Where things are on the node.
    pub etcd: EtcdSettings,
    /// Site-specific commands.
    pub commands: Commands,
    /// Line of the node's entry in the file, for messages.
    pub line: usize,
}

/// How privileged commands are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SudoMode {
    /// `sudo -n` only when the SSH user is not root.
    #[default]
    Auto,
    /// Always `sudo -n`, even as root.
    Always,
    /// Never sudo; privileged commands run as the SSH user.
    Never,
}

/// Whether privileged commands get the login user's sudo password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SudoPassword {
    /// Never: sudo must not ask (`sudo -n`).
    #[default]
    None,
    /// Ask it once, on the terminal, before connecting; feed it to `sudo -S`.
    Prompt,
}

/// SSH settings as written in the inventory; `None` means "not said here".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SshSettings {
    /// Login user.
    pub user: Option<String>,
    /// TCP port.
    pub port: Option<u16>,
    /// Private key files, tried in order (absolute paths).
    pub identity_files: Option<Vec<PathBuf>>,
    /// known_hosts files (absolute paths); new keys are added to the first.
    pub known_hosts: Option<Vec<PathBuf>>,
    /// `[user@]host[:port]` hops, comma-separated, or `none`.
    pub proxy_jump: Option<String>,
    /// A local command whose standard input and output carry the SSH connection (OpenSSH's
    /// `ProxyCommand`, with `%h %p %r %n %%`), or `none`.
    pub proxy_command: Option<String>,
    /// When to use sudo.
    pub sudo: Option<SudoMode>,
    /// Whether sudo gets a password.
    pub sudo_password: Option<SudoPassword>,
    /// Limit for TCP connect, SSH handshake and authentication.
    pub connect_timeout: Option<Duration>,
    /// Default limit for one remote command.
    pub command_timeout: Option<Duration>,
    /// Keepalive interval; zero turns keepalives off.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is considered dead.
    pub keepalive_max: Option<u32>,
}

impl SshSettings {
    /// `self` with every field that `over` sets replaced.
    pub fn overlay(&self, over: &SshSettings) -> SshSettings {
        SshSettings {
            user: over.user.clone().or_else(|| self.user.clone()),
            port: over.port.or(self.port),
            identity_files: over
                .identity_files
                .clone()
                .or_else(|| self.identity_files.clone()),
            known_hosts: over
                .known_hosts
                .clone()
                .or_else(|| self.known_hosts.clone()),
            // The proxy is one setting: a node that names either kind replaces both.
            proxy_jump: if over.proxy_jump.is_some() || over.proxy_command.is_some() {
                over.proxy_jump.clone()
            } else {
                self.proxy_jump.clone()
            },
            proxy_command: if over.proxy_jump.is_some() || over.proxy_command.is_some() {
                over.proxy_command.clone()
            } else {
                self.proxy_command.clone()
            },
            sudo: over.sudo.or(self.sudo),
            sudo_password: over.sudo_password.or(self.sudo_password),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            command_timeout: over.command_timeout.or(self.command_timeout),
            keepalive_interval: over.keepalive_interval.or(self.keepalive_interval),
            keepalive_max: over.keepalive_max.or(self.keepalive_max),
        }
    }
}

/// Where the static-pod manifests are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestsDir {
    /// Read `staticPodPath` from the kubelet config.
    Auto,
    /// This directory on the node.
    Path(String),
}

/// Which binary restores the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTool {
    /// `etcdutl`, else `etcdctl`, from the node's `PATH`.
    Auto,
    /// This binary on the node.
    Path(String),
}

/// Node-side locations. All paths are absolute paths on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The kubelet's static-pod directory.
    pub manifests_dir: ManifestsDir,
    /// The kubelet's config file (for `staticPodPath`).
    pub kubelet_config: String,
    /// etcdutl/etcdctl.
    pub restore_tool: RestoreTool,
    /// State for runs; the run id and node name are appended.
    pub run_dir: String,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        EtcdSettings {
            manifests_dir: ManifestsDir::Path("/etc/kubernetes/manifests".into()),
            kubelet_config: "/var/lib/kubelet/config.yaml".into(),
            restore_tool: RestoreTool::Auto,
            run_dir: "/var/lib/etcd-recover".into(),
        }
    }
}

/// Site-specific commands, as argument vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    /// Restarts the kubelet.
    pub restart_kubelet: Vec<String>,
}

impl Default for Commands {
    fn default() -> Self {
        Commands {
            restart_kubelet: vec!["systemctl".into(), "restart".into(), "kubelet".into()],
        }
    }
}
