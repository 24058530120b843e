//! Arguments and setup shared by every command that talks to the nodes: the inventory, the
//! OpenSSH client config, host key policy and connect timeout, and the passphrase prompt.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use zeroize::Zeroizing;

use crate::error::HintExt;
use crate::inventory::{self, Inventory, ResolveOptions, SshTarget};
use crate::transport::{Agent, ConnectOptions, Connector, PassphrasePrompt};

/// How to reach the nodes. Flatten into a command with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// OpenSSH client config to honour (Host aliases, HostName, User, Port, IdentityFile,
    /// ProxyJump, UserKnownHostsFile) [default: ~/.ssh/config if it exists]
    #[arg(long, value_name = "FILE", env = "ETCD_RECOVER_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,

    /// Record host keys of nodes not yet in known_hosts, like OpenSSH's
    /// StrictHostKeyChecking=accept-new. A changed host key is always refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// Seconds to wait for each SSH connection (TCP connect, handshake and login, per hop);
    /// overrides the inventory and the SSH config [default: 10]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub connect_timeout: Option<Duration>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

/// Everything needed to connect, resolved from [`SshArgs`] and the inventory.
pub struct SshSetup {
    /// Per-node connection settings, in inventory order.
    pub targets: Vec<SshTarget>,
    /// Opens the sessions.
    pub connector: Connector,
}

impl SshArgs {
    /// Reads the SSH config, resolves every node of `inv`, and prepares a connector that asks
    /// passphrases on the terminal. Notes about the SSH config go to `warnings`.
    pub fn setup(&self, inv: &Inventory, warnings: &mut dyn Write) -> anyhow::Result<SshSetup> {
        let ssh_config = inventory::load_ssh_config(self.ssh_config.as_deref())
            .hint("fix the SSH config, or pass another one with --ssh-config FILE")?;
        for note in &ssh_config.notes {
            let _ = writeln!(warnings, "warning: {note}");
        }
        let resolve = ResolveOptions::from_environment(ssh_config, self.connect_timeout);
        let targets = inventory::resolve_targets(inv, &resolve)
            .hint("fix `proxy_jump` in the inventory or ProxyJump in the SSH config")?;
        let connector = Connector::new(
            ConnectOptions {
                accept_new_host_keys: self.accept_new_host_keys,
                agent: Agent::FromEnvironment,
            },
            Arc::new(TerminalPrompt),
        );
        Ok(SshSetup { targets, connector })
    }
}

/// Loads the inventory, writing its warnings to `warnings`.
pub fn load_inventory(path: &Path, warnings: &mut dyn Write) -> anyhow::Result<Inventory> {
    let loaded = match inventory::load(path) {
        Ok(l) => l,
        Err(e) => {
            let hint = e.hint();
            return Err(e).hint(hint);
        }
    };
    for w in &loaded.warnings {
        let _ = writeln!(warnings, "warning: {w}");
        if let Some(fix) = &w.fix {
            let _ = writeln!(warnings, "hint: {fix}");
        }
    }
    Ok(loaded.inventory)
}

/// Asks for key passphrases on the terminal (stderr), never echoing them.
pub struct TerminalPrompt;

impl PassphrasePrompt for TerminalPrompt {
    fn passphrase(&self, key_file: &Path, attempt: u32) -> Option<Zeroizing<String>> {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return None;
        }
        let prompt = if attempt == 1 {
            format!("Passphrase for {}", key_file.display())
        } else {
            format!("Wrong passphrase; try again for {}", key_file.display())
        };
        dialoguer::Password::new()
            .with_prompt(prompt)
            .allow_empty_password(true)
            .interact()
            .ok()
            .filter(|p| !p.is_empty())
            .map(Zeroizing::new)
    }
}

/// A multi-threaded runtime for commands that talk to nodes.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
