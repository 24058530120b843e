//! The inventory file (which nodes, how to reach them, where things are on them) and the user's
//! OpenSSH client config.
//!
//! [`load`] reads and validates an inventory; problems carry file, line, column and a fix
//! ([`InventoryError`]), warnings are returned in [`Loaded::warnings`] for the caller to show.
//! [`resolve_targets`] combines each node's settings with the SSH config into an [`SshTarget`],
//! the transport's input. The format is documented in `docs/inventory.md`.

mod diag;
mod model;
mod parse;
pub mod ssh_config;
mod target;
mod yaml;

use std::path::Path;
use std::time::Duration;

pub use diag::{Diagnostic, InventoryError};
pub use model::{
    Commands, EtcdSettings, Inventory, ManifestsDir, Node, RestoreTool, SshSettings, SudoMode,
    SudoPassword,
};
pub use ssh_config::{HostConfig, SshConfig, SshConfigError};
pub use target::{
    parse_proxy_jump, resolve_target, resolve_targets, Endpoint, JumpSpec, ResolveError,
    ResolveOptions, SshTarget, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_MAX,
};
pub use yaml::Pos;

/// A loaded inventory and the warnings found while reading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The inventory.
    pub inventory: Inventory,
    /// Things that work but are probably not what the user wants (even member count, ...).
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the inventory at `path`. Relative local paths in it are taken relative
/// to the file's directory; `~` is the local user's home.
pub fn load(path: &Path) -> Result<Loaded, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    from_str(&text, &abs, &base, dirs::home_dir().as_deref())
}

/// Parses inventory text as if read from `file`; `base_dir` anchors relative local paths and
/// `home` expands `~`.
pub fn from_str(
    text: &str,
    file: &Path,
    base_dir: &Path,
    home: Option<&Path>,
) -> Result<Loaded, InventoryError> {
    match parse::parse(text, file, base_dir, home) {
        Ok((inventory, warnings)) => Ok(Loaded {
            inventory,
            warnings,
        }),
        Err(problems) => Err(InventoryError::Invalid { problems }),
    }
}

/// Reads the OpenSSH client config: `explicit` if given (it must exist), else `~/.ssh/config`
/// if it exists, else an empty config.
pub fn load_ssh_config(explicit: Option<&Path>) -> Result<SshConfig, SshConfigError> {
    let home = dirs::home_dir();
    match explicit {
        Some(path) => SshConfig::load(path, home.as_deref()),
        None => {
            let default = home.as_ref().map(|h| h.join(".ssh").join("config"));
            match default {
                Some(p) if p.is_file() => SshConfig::load(&p, home.as_deref()),
                _ => Ok(SshConfig::default()),
            }
        }
    }
}

impl ResolveOptions {
    /// Options for this process: its home directory and user name, the given SSH config, and
    /// an optional connect-timeout override.
    pub fn from_environment(ssh_config: SshConfig, connect_timeout: Option<Duration>) -> Self {
        ResolveOptions {
            ssh_config,
            home: dirs::home_dir(),
            local_user: local_user_name(),
            connect_timeout,
        }
    }
}

/// The name of the user running this process (OpenSSH's default login name).
pub fn local_user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        // Without a name the login fails with "user unknown", which points at `ssh.user`.
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests;
