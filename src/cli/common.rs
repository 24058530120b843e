//! Arguments shared by the commands that reach the cluster.

use std::path::PathBuf;

use clap::Args;

use crate::workflow::SshOptions;

/// SSH options.
#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// OpenSSH client config to honour for Host aliases, HostName, User, Port, IdentityFile
    /// and ProxyJump [default: ~/.ssh/config when it exists]
    #[arg(long, value_name = "FILE", global = true)]
    pub ssh_config: Option<PathBuf>,

    /// Add unknown host keys to known_hosts, like StrictHostKeyChecking=accept-new (a changed
    /// key is always refused)
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// Seconds to wait for each node's TCP connect, SSH handshake and authentication
    #[arg(long, value_name = "SECONDS", global = true)]
    pub connect_timeout: Option<u64>,
}

impl SshArgs {
    /// Plain settings.
    pub fn options(&self) -> SshOptions {
        SshOptions {
            ssh_config: self.ssh_config.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: self.connect_timeout.map(std::time::Duration::from_secs),
            interactive: std::io::IsTerminal::is_terminal(&std::io::stdin())
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

/// Where run state lives.
#[derive(Debug, Clone, Args)]
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

impl StateArgs {
    /// The state directory to use.
    pub fn dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(crate::engine::journal::default_state_dir)
    }
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
