//! Argument groups shared by several commands, and the plain settings they resolve to. Each
//! command resolves its arguments once; nothing past `cli` sees a clap type.

use std::path::PathBuf;
use std::time::Duration;

use crate::workflow::{Settings, SshOptions};

/// The global options, resolved: how to reach the nodes and where runs are kept.
#[derive(Debug, Clone)]
pub(crate) struct Global {
    /// SSH behaviour.
    pub ssh: SshOptions,
    /// Where runs are journaled.
    pub state_dir: PathBuf,
}

impl Global {
    /// Resolves the global options.
    pub(crate) fn resolve(ssh: &SshArgs, state: &StateArgs) -> Global {
        Global {
            ssh: SshOptions {
                ssh_config: ssh.ssh_config.clone(),
                accept_new_host_keys: ssh.accept_new_host_keys,
                connect_timeout: ssh.connect_timeout,
                interactive: crate::ui::prompt::can_ask(),
            },
            state_dir: state
                .state_dir
                .clone()
                .unwrap_or_else(crate::engine::journal::default_state_dir),
        }
    }

    /// Settings to reach the nodes of `inventory` and keep its runs, with the plan options at
    /// their defaults.
    pub(crate) fn settings(&self, inventory: PathBuf) -> Settings {
        let mut s = Settings::new(inventory, self.ssh.clone());
        s.state_dir = self.state_dir.clone();
        s
    }
}

/// How to reach the nodes. Flatten into a command with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// OpenSSH client config to honour (Host aliases, HostName, User, Port, IdentityFile,
    /// ProxyJump, UserKnownHostsFile) [default: ~/.ssh/config if it exists]
    #[arg(
        long,
        value_name = "FILE",
        env = "ETCD_RECOVER_SSH_CONFIG",
        global = true
    )]
    pub ssh_config: Option<PathBuf>,

    /// Record host keys of nodes not yet in known_hosts, like OpenSSH's
    /// StrictHostKeyChecking=accept-new. A changed host key is always refused.
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// Seconds to wait for each SSH connection (TCP connect, handshake and login, per hop);
    /// overrides the inventory and the SSH config [default: 10]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, global = true)]
    pub connect_timeout: Option<Duration>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

/// Where run state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Directory for run journals, saved plans and reports
    /// [default: $XDG_STATE_HOME/etcd-recover, else ~/.local/state/etcd-recover]
    #[arg(
        long,
        value_name = "DIR",
        env = "ETCD_RECOVER_STATE_DIR",
        global = true
    )]
    pub state_dir: Option<PathBuf>,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    /// Live progress on a terminal, plain lines otherwise.
    Auto,
    /// Timestamped plain lines, no control characters.
    Plain,
    /// One JSON object per event and line.
    Json,
}

impl OutputArg {
    /// The UI style.
    pub fn style(self) -> crate::ui::Style {
        match self {
            OutputArg::Auto => crate::ui::Style::detect(),
            OutputArg::Plain => crate::ui::Style::Plain,
            OutputArg::Json => crate::ui::Style::Json,
        }
    }
}

/// Output format of an offline report (`manifest show`, `snapshot verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// Options that shape a plan.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanOpts {
    /// Playbook to follow [default: the built-in restore-stacked]
    #[arg(long, value_name = "FILE")]
    pub playbook: Option<PathBuf>,

    /// Revision bump passed as --bump-revision (with --mark-compacted) where the restore tool
    /// supports it; must exceed the writes made since the snapshot
    #[arg(long, value_name = "N", default_value_t = crate::plan::build::DEFAULT_BUMP)]
    pub bump_revision: u64,

    /// Accept a snapshot without the SHA-256 integrity trailer (a raw member/snap/db copy):
    /// nothing then proves the file complete
    #[arg(long)]
    pub skip_hash_check: bool,

    /// Admin kubeconfig on the nodes, used to update kubeadm's ClusterConfiguration
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/kubernetes/admin.conf"
    )]
    pub admin_kubeconfig: String,
}

impl PlanOpts {
    /// Resolves the plan options.
    pub(crate) fn resolve(&self) -> PlanOptions {
        PlanOptions {
            playbook: self.playbook.clone(),
            bump: self.bump_revision,
            skip_hash_check: self.skip_hash_check,
            admin_kubeconfig: self.admin_kubeconfig.clone(),
        }
    }
}

/// The plan options, resolved.
#[derive(Debug, Clone)]
pub(crate) struct PlanOptions {
    /// Playbook file; `None` for the built-in one.
    pub playbook: Option<PathBuf>,
    /// `--bump-revision`.
    pub bump: u64,
    /// Accept a snapshot without integrity trailer.
    pub skip_hash_check: bool,
    /// Admin kubeconfig on the nodes.
    pub admin_kubeconfig: String,
}

impl PlanOptions {
    /// `global`'s settings for `inventory`, with these plan options.
    pub(crate) fn settings(&self, global: &Global, inventory: PathBuf) -> Settings {
        Settings {
            playbook: self.playbook.clone(),
            bump: self.bump,
            skip_hash_check: self.skip_hash_check,
            admin_kubeconfig: self.admin_kubeconfig.clone(),
            ..global.settings(inventory)
        }
    }
}

/// `etcd-recover resume` and `etcd-recover rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Run id (see `etcd-recover status`)
    pub run: String,

    /// Inventory [default: the one the plan was made from]; with it, a run started on another
    /// workstation is picked up from the nodes' run directories
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Never prompt
    #[arg(short, long)]
    pub yes: bool,

    /// On failure, stop and leave the run paused instead of rolling back (resume only)
    #[arg(long)]
    pub no_rollback: bool,

    /// Progress output
    #[arg(long, value_enum, default_value_t = OutputArg::Auto)]
    pub output: OutputArg,
}
