//! Arguments and setup shared by every command that talks to the nodes: the inventory, the
//! OpenSSH client config, host key policy and connect timeout, and the passphrase prompt.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::inventory::Inventory;
use crate::workflow::SshSetup;

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

    /// Ask once, on the terminal, for the login user's sudo password and feed it to `sudo -S`
    /// on every node (as `ssh.sudo_password: prompt` in the inventory does); it is checked on
    /// every node before anything changes and never stored
    #[arg(long, global = true)]
    pub ask_sudo_password: bool,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

impl SshArgs {
    /// Plain settings for the library.
    pub fn options(&self) -> crate::workflow::SshOptions {
        crate::workflow::SshOptions {
            ssh_config: self.ssh_config.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: self.connect_timeout,
            ask_sudo_password: self.ask_sudo_password,
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    /// Reads the SSH config and resolves every node of `inv`; notes about the SSH config go
    /// to `warnings`.
    pub fn setup(&self, inv: &Inventory, warnings: &mut dyn Write) -> anyhow::Result<SshSetup> {
        let setup = crate::workflow::ssh_setup(inv, &self.options())?;
        for note in &setup.notes {
            let _ = writeln!(warnings, "warning: {note}");
        }
        Ok(setup)
    }
}

/// Loads the inventory, writing its warnings to `warnings`.
pub fn load_inventory(path: &Path, warnings: &mut dyn Write) -> anyhow::Result<Inventory> {
    let loaded = crate::workflow::load_inventory(path)?;
    for w in &loaded.warnings {
        let _ = writeln!(warnings, "warning: {w}");
    }
    Ok(loaded.inventory)
}

/// A multi-threaded runtime for commands that talk to nodes.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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
