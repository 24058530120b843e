//! Resolving each node's SSH settings: the inventory first, then the OpenSSH client config, then
//! built-in defaults. The result, [`SshTarget`], is everything the transport needs to connect.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{Inventory, Node, SudoMode, SudoPassword};
use super::ssh_config::{HostConfig, SshConfig};

/// Default limit for TCP connect, handshake and authentication.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for one remote command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default keepalive interval. Restores have long silent phases (a multi-GiB restore, an etcd
/// that takes a minute to come up); keepalives keep NAT and firewalls from dropping the session
/// and detect a dead peer.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Default number of unanswered keepalives before the session is considered dead.
pub const DEFAULT_KEEPALIVE_MAX: u32 = 4;

/// Key files OpenSSH tries when none is configured, in its order; missing ones are skipped.
const DEFAULT_IDENTITIES: &[&str] = &["id_rsa", "id_ecdsa", "id_ed25519"];

/// One SSH server to authenticate to: a node, or a jump host on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Address to connect to (after `HostName`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key files to offer, in order.
    pub identity_files: Vec<PathBuf>,
    /// True when the key files were configured (a missing one is then an error); false for
    /// OpenSSH's default key names (missing ones are skipped).
    pub identities_explicit: bool,
    /// Offer only `identity_files`, not every key in the agent (`IdentitiesOnly`).
    pub identities_only: bool,
    /// known_hosts files consulted; newly accepted keys are added to the first.
    pub known_hosts: Vec<PathBuf>,
    /// System-wide known_hosts files, consulted too, never written.
    pub global_known_hosts: Vec<PathBuf>,
    /// Name to look up in known_hosts instead of `host` (`HostKeyAlias`).
    pub host_key_alias: Option<String>,
    /// User certificates to offer with the keys (`CertificateFile`); a key's own
    /// `KEY-cert.pub` is offered as well.
    pub certificate_files: Vec<PathBuf>,
    /// A local command to run and talk SSH over (`ProxyCommand`, tokens expanded), instead of
    /// a TCP connection. Only the first hop is connected this way.
    pub proxy_command: Option<String>,
}

impl Endpoint {
    /// The name under which the host key is recorded (`HostKeyAlias`, else the host).
    pub fn host_key_name(&self) -> &str {
        self.host_key_alias.as_deref().unwrap_or(&self.host)
    }
}

impl fmt::Display for Endpoint {
    /// `user@host:port` (IPv6 addresses in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// Everything needed to reach one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Node name from the inventory.
    pub node: String,
    /// The node's SSH server.
    pub endpoint: Endpoint,
    /// Jump hosts, first hop first (`ProxyJump`).
    pub jumps: Vec<Endpoint>,
    /// When to use sudo.
    pub sudo: SudoMode,
    /// Whether sudo gets the user's password (asked once, up front).
    pub sudo_password: SudoPassword,
    /// Limit for TCP connect, handshake and authentication (per hop).
    pub connect_timeout: Duration,
    /// Default limit for one remote command.
    pub command_timeout: Duration,
    /// Keepalive interval; `None` turns keepalives off.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the session is considered dead.
    pub keepalive_max: u32,
}

impl SshTarget {
    /// How the node is reached besides its own address, for `check`: the jump hosts, first
    /// hop first, or the ProxyCommand.
    pub fn via(&self) -> Vec<String> {
        match &self.endpoint.proxy_command {
            Some(command) if self.jumps.is_empty() => vec![format!("ProxyCommand `{command}`")],
            _ => {
                let mut via: Vec<String> = self.jumps.iter().map(ToString::to_string).collect();
                if let Some(command) = self.jumps.first().and_then(|j| j.proxy_command.as_ref()) {
                    via.insert(0, format!("ProxyCommand `{command}`"));
                }
                via
            }
        }
    }
}

/// Inputs to resolution besides the inventory.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The OpenSSH client config (empty if there is none).
    pub ssh_config: SshConfig,
    /// The local user's home directory, for `~` and default key files.
    pub home: Option<PathBuf>,
    /// The local user name: OpenSSH's default login name.
    pub local_user: String,
    /// Overrides every connect timeout (from the command line).
    pub connect_timeout: Option<Duration>,
}

/// Why a node's SSH settings cannot be resolved.
#[derive(Debug, thiserror::Error)]
#[error("{node}: invalid ProxyJump `{value}` from {source_name}: {reason}")]
pub struct ResolveError {
    /// Node name.
    pub node: String,
    /// The offending value.
    pub value: String,
    /// Where it came from (the inventory or the SSH config).
    pub source_name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Resolves every node of the inventory.
pub fn resolve_targets(
    inv: &Inventory,
    opts: &ResolveOptions,
) -> Result<Vec<SshTarget>, ResolveError> {
    inv.nodes.iter().map(|n| resolve_target(n, opts)).collect()
}

/// Resolves one node: inventory value, else SSH config value, else default.
pub fn resolve_target(node: &Node, opts: &ResolveOptions) -> Result<SshTarget, ResolveError> {
    let s = &node.ssh;
    let cfg = opts.ssh_config.lookup(&node.host);
    let host = cfg.hostname.clone().unwrap_or_else(|| node.host.clone());
    let user = s
        .user
        .clone()
        .or_else(|| cfg.user.clone())
        .unwrap_or_else(|| opts.local_user.clone());
    let port = s.port.or(cfg.port).unwrap_or(22);
    let tokens = Tokens {
        home: opts.home.as_deref(),
        local_user: &opts.local_user,
        host: &host,
        original: &node.host,
        user: &user,
        port,
    };
    let (identity_files, identities_explicit) = match &s.identity_files {
        Some(files) => (files.clone(), true),
        None if !cfg.identity_files.is_empty() => (
            cfg.identity_files.iter().map(|f| tokens.path(f)).collect(),
            true,
        ),
        None => (default_identities(opts.home.as_deref()), false),
    };
    let known_hosts = match &s.known_hosts {
        Some(files) => files.clone(),
        None => match &cfg.user_known_hosts {
            Some(files) => files.iter().map(|f| tokens.path(f)).collect(),
            None => default_known_hosts(opts.home.as_deref()),
        },
    };
    let global_known_hosts = global_known_hosts(&cfg, &tokens);
    // ProxyJump and ProxyCommand are one setting: the inventory's (either) wins, else the SSH
    // config's first one.
    let inventory_proxy = s.proxy_jump.is_some() || s.proxy_command.is_some();
    let (jump_value, command_value, jump_source) = if inventory_proxy {
        (
            s.proxy_jump.clone(),
            s.proxy_command.clone(),
            "the inventory".to_string(),
        )
    } else {
        (
            cfg.proxy_jump.clone(),
            cfg.proxy_command.clone(),
            "the SSH config".to_string(),
        )
    };
    let endpoint = Endpoint {
        host: host.clone(),
        port,
        user: user.clone(),
        identity_files,
        identities_explicit,
        identities_only: cfg.identities_only.unwrap_or(false),
        known_hosts,
        global_known_hosts,
        host_key_alias: cfg.host_key_alias.clone(),
        certificate_files: cfg
            .certificate_files
            .iter()
            .map(|f| tokens.path(f))
            .collect(),
        proxy_command: proxy_command(command_value.as_deref(), &tokens),
    };
    let jumps = match jump_value {
        None => Vec::new(),
        Some(value) => {
            let hops = parse_proxy_jump(&value).map_err(|reason| ResolveError {
                node: node.name.clone(),
                value: value.clone(),
                source_name: jump_source,
                reason,
            })?;
            hops.iter()
                .map(|hop| resolve_jump(hop, &endpoint, opts))
                .collect()
        }
    };

    let keepalive = s
        .keepalive_interval
        .or(cfg.server_alive_interval)
        .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL);
    Ok(SshTarget {
        node: node.name.clone(),
        endpoint,
        jumps,
        sudo: s.sudo.unwrap_or_default(),
        sudo_password: s.sudo_password.unwrap_or_default(),
        connect_timeout: opts
            .connect_timeout
            .or(s.connect_timeout)
            .or(cfg.connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        command_timeout: s.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
        keepalive_interval: (!keepalive.is_zero()).then_some(keepalive),
        keepalive_max: s
            .keepalive_max
            .or(cfg.server_alive_count_max.filter(|n| *n > 0))
            .unwrap_or(DEFAULT_KEEPALIVE_MAX),
    })
}

/// A jump host: the hop's own values, then the SSH config for the hop's host; key files and
/// known_hosts files not set there are the node's, so one inventory setting covers both.
fn resolve_jump(hop: &JumpSpec, node: &Endpoint, opts: &ResolveOptions) -> Endpoint {
    let cfg = opts.ssh_config.lookup(&hop.host);
    let host = cfg.hostname.clone().unwrap_or_else(|| hop.host.clone());
    let user = hop
        .user
        .clone()
        .or_else(|| cfg.user.clone())
        .unwrap_or_else(|| opts.local_user.clone());
    let port = hop.port.or(cfg.port).unwrap_or(22);
    let tokens = Tokens {
        home: opts.home.as_deref(),
        local_user: &opts.local_user,
        host: &host,
        original: &hop.host,
        user: &user,
        port,
    };
    let (identity_files, identities_explicit) = if cfg.identity_files.is_empty() {
        (node.identity_files.clone(), node.identities_explicit)
    } else {
        (
            cfg.identity_files.iter().map(|f| tokens.path(f)).collect(),
            true,
        )
    };
    let known_hosts = match &cfg.user_known_hosts {
        Some(files) => files.iter().map(|f| tokens.path(f)).collect(),
        None => node.known_hosts.clone(),
    };
    let certificate_files = if cfg.certificate_files.is_empty() {
        node.certificate_files.clone()
    } else {
        cfg.certificate_files
            .iter()
            .map(|f| tokens.path(f))
            .collect()
    };
    Endpoint {
        certificate_files,
        // A jump host's own ProxyCommand (from the SSH config) reaches it when it is the
        // first hop.
        proxy_command: proxy_command(cfg.proxy_command.as_deref(), &tokens),
        global_known_hosts: global_known_hosts(&cfg, &tokens),
        host,
        port,
        user,
        identity_files,
        identities_explicit,
        identities_only: cfg.identities_only.unwrap_or(node.identities_only),
        known_hosts,
        host_key_alias: cfg.host_key_alias.clone(),
    }
}

/// A ProxyCommand with its tokens expanded; `none` (any case) means no command.
fn proxy_command(raw: Option<&str>, tokens: &Tokens<'_>) -> Option<String> {
    let raw = raw?.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("none") {
        return None;
    }
    Some(tokens.expand(raw))
}

fn default_identities(home: Option<&Path>) -> Vec<PathBuf> {
    match home {
        Some(h) => DEFAULT_IDENTITIES
            .iter()
            .map(|n| h.join(".ssh").join(n))
            .collect(),
        None => Vec::new(),
    }
}

fn default_known_hosts(home: Option<&Path>) -> Vec<PathBuf> {
    match home {
        Some(h) => vec![
            h.join(".ssh").join("known_hosts"),
            h.join(".ssh").join("known_hosts2"),
        ],
        None => Vec::new(),
    }
}

fn global_known_hosts(cfg: &HostConfig, tokens: &Tokens<'_>) -> Vec<PathBuf> {
    match &cfg.global_known_hosts {
        Some(files) => files.iter().map(|f| tokens.path(f)).collect(),
        None => vec![
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2"),
        ],
    }
}

/// Values for the `%` tokens of `ssh_config(5)` path keywords.
struct Tokens<'a> {
    home: Option<&'a Path>,
    local_user: &'a str,
    host: &'a str,
    original: &'a str,
    user: &'a str,
    port: u16,
}

impl Tokens<'_> {
    /// Expands `%d %u %h %n %r %p %%` and a leading `~`.
    fn path(&self, raw: &str) -> PathBuf {
        let out = self.expand(raw);
        match (out.strip_prefix('~'), self.home) {
            (Some(""), Some(h)) => h.to_path_buf(),
            (Some(rest), Some(h)) if rest.starts_with('/') => h.join(&rest[1..]),
            _ => PathBuf::from(out),
        }
    }

    /// Expands `%d %u %h %n %r %p %%`; other `%` sequences stay as written.
    fn expand(&self, raw: &str) -> String {
        let mut out = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('d') => out.push_str(
                    &self
                        .home
                        .map(|h| h.display().to_string())
                        .unwrap_or_default(),
                ),
                Some('u') => out.push_str(self.local_user),
                Some('h') => out.push_str(self.host),
                Some('n') => out.push_str(self.original),
                Some('r') => out.push_str(self.user),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

/// One hop of a `ProxyJump` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    /// User, if given.
    pub user: Option<String>,
    /// Host or `Host` alias.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
}

/// Parses `[user@]host[:port][,...]` (IPv6 as `[addr]:port`); `none` means no jump.
pub fn parse_proxy_jump(value: &str) -> Result<Vec<JumpSpec>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value.split(',').map(|hop| parse_hop(hop.trim())).collect()
}

fn parse_hop(hop: &str) -> Result<JumpSpec, String> {
    let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
    if hop.is_empty() {
        return Err("empty hop".into());
    }
    let (user, rest) = match hop.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(format!("empty user in `{hop}`")),
        None => (None, hop),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{hop}`"))?;
        match after.strip_prefix(':') {
            Some(p) => (h.to_string(), Some(p)),
            None if after.is_empty() => (h.to_string(), None),
            None => return Err(format!("unexpected `{after}` in `{hop}`")),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("bad host in `{hop}`"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(format!("bad port `{p}` in `{hop}`")),
        },
    };
    Ok(JumpSpec { user, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::model::SshSettings;

    fn node(host: &str, ssh: SshSettings) -> Node {
        Node {
            name: "cp-1".into(),
            host: host.into(),
            ssh,
            etcd: Default::default(),
            commands: Default::default(),
            line: 1,
        }
    }

    fn opts(config: &str) -> ResolveOptions {
        ResolveOptions {
            ssh_config: SshConfig::parse(config, Path::new("/home/me/.ssh/config"), None).unwrap(),
            home: Some(PathBuf::from("/home/me")),
            local_user: "me".into(),
            connect_timeout: None,
        }
    }

    #[test]
    fn defaults_follow_openssh() {
        let t = resolve_target(&node("10.0.0.11", SshSettings::default()), &opts("")).unwrap();
        assert_eq!(t.endpoint.to_string(), "me@10.0.0.11:22");
        assert_eq!(
            t.endpoint.identity_files,
            [
                PathBuf::from("/home/me/.ssh/id_rsa"),
                PathBuf::from("/home/me/.ssh/id_ecdsa"),
                PathBuf::from("/home/me/.ssh/id_ed25519"),
            ]
        );
        assert!(!t.endpoint.identities_explicit);
        assert_eq!(
            t.endpoint.known_hosts[0],
            PathBuf::from("/home/me/.ssh/known_hosts")
        );
        assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(t.keepalive_interval, Some(DEFAULT_KEEPALIVE_INTERVAL));
        assert_eq!(t.sudo, SudoMode::Auto);
        assert!(t.jumps.is_empty());
    }

    #[test]
    fn ssh_config_fills_what_the_inventory_leaves_open() {
        let config = "Host cp-*\n  HostName %h.dc1\n  User ops\n  Port 2222\n  \
                      IdentityFile ~/.ssh/cp_%r\n  UserKnownHostsFile ~/.ssh/kh_%h\n  \
                      ProxyJump jump\n  ConnectTimeout 3\n  ServerAliveInterval 0\n\
                      Host jump\n  HostName 192.0.2.1\n  User j\n";
        let t = resolve_target(&node("cp-1", SshSettings::default()), &opts(config)).unwrap();
        assert_eq!(t.endpoint.to_string(), "ops@cp-1.dc1:2222");
        assert_eq!(
            t.endpoint.identity_files,
            [PathBuf::from("/home/me/.ssh/cp_ops")]
        );
        assert!(t.endpoint.identities_explicit);
        assert_eq!(
            t.endpoint.known_hosts,
            [PathBuf::from("/home/me/.ssh/kh_cp-1.dc1")]
        );
        assert_eq!(t.connect_timeout, Duration::from_secs(3));
        assert_eq!(t.keepalive_interval, None);
        assert_eq!(t.jumps.len(), 1);
        assert_eq!(t.jumps[0].to_string(), "j@192.0.2.1:22");
        // The jump host has no key settings of its own: it uses the node's.
        assert_eq!(t.jumps[0].identity_files, t.endpoint.identity_files);
        assert_eq!(t.jumps[0].known_hosts, t.endpoint.known_hosts);
    }

    #[test]
    fn the_inventory_wins_where_both_speak() {
        let config = "Host cp-1\n  User ops\n  Port 2222\n  IdentityFile ~/.ssh/other\n  \
                      ProxyJump bastion\n";
        let ssh = SshSettings {
            user: Some("root".into()),
            port: Some(22),
            identity_files: Some(vec![PathBuf::from("/keys/id")]),
            proxy_jump: Some("none".into()),
            connect_timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let mut o = opts(config);
        let t = resolve_target(&node("cp-1", ssh.clone()), &o).unwrap();
        assert_eq!(t.endpoint.to_string(), "root@cp-1:22");
        assert_eq!(t.endpoint.identity_files, [PathBuf::from("/keys/id")]);
        assert!(t.jumps.is_empty());
        assert_eq!(t.connect_timeout, Duration::from_secs(5));
        // The command line wins over both.
        o.connect_timeout = Some(Duration::from_secs(1));
        let t = resolve_target(&node("cp-1", ssh), &o).unwrap();
        assert_eq!(t.connect_timeout, Duration::from_secs(1));
    }

    /// ProxyCommand from the inventory or the SSH config, tokens expanded; the inventory's
    /// proxy (either kind) wins over the config's; `none` turns it off.
    #[test]
    fn proxy_command_expands_tokens_and_follows_the_first_proxy_setting() {
        let config = "Host cp-*\n  HostName %h.dc1\n  User ops\n  Port 2222\n  \
                      ProxyCommand ssh -W %h:%p -l %r bastion # 100%%\n  ProxyJump other\n";
        let t = resolve_target(&node("cp-1", SshSettings::default()), &opts(config)).unwrap();
        assert_eq!(
            t.endpoint.proxy_command.as_deref(),
            Some("ssh -W cp-1.dc1:2222 -l ops bastion # 100%")
        );
        assert!(t.jumps.is_empty());
        assert_eq!(
            t.via(),
            ["ProxyCommand `ssh -W cp-1.dc1:2222 -l ops bastion # 100%`"]
        );
        // The inventory's jump host wins over the config's command, and `none` turns a
        // command off.
        let ssh = SshSettings {
            proxy_jump: Some("j".into()),
            ..Default::default()
        };
        let t = resolve_target(&node("cp-1", ssh), &opts(config)).unwrap();
        assert_eq!(t.endpoint.proxy_command, None);
        assert_eq!(t.via(), ["me@j:22"]);
        let ssh = SshSettings {
            proxy_command: Some("none".into()),
            ..Default::default()
        };
        let t = resolve_target(&node("cp-1", ssh), &opts(config)).unwrap();
        assert_eq!(t.endpoint.proxy_command, None);
        assert!(t.jumps.is_empty() && t.via().is_empty());
    }

    #[test]
    fn proxy_jump_syntax() {
        assert_eq!(parse_proxy_jump("none").unwrap(), []);
        let hops = parse_proxy_jump("ops@bastion.example.com:2200, [2001:db8::1]:22,b").unwrap();
        assert_eq!(
            hops,
            [
                JumpSpec {
                    user: Some("ops".into()),
                    host: "bastion.example.com".into(),
                    port: Some(2200)
                },
                JumpSpec {
                    user: None,
                    host: "2001:db8::1".into(),
                    port: Some(22)
                },
                JumpSpec {
                    user: None,
                    host: "b".into(),
                    port: None
                },
            ]
        );
        assert!(parse_proxy_jump("a:0").is_err());
        assert!(parse_proxy_jump("a,,b").is_err());
        assert!(parse_proxy_jump("@a").is_err());
        assert!(parse_proxy_jump("[::1").is_err());
    }

    #[test]
    fn bad_proxy_jump_in_ssh_config_names_the_source() {
        let err = resolve_target(
            &node("cp-1", SshSettings::default()),
            &opts("Host *\n  ProxyJump a:banana\n"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cp-1: invalid ProxyJump `a:banana` from the SSH config: bad port `banana` in `a:banana`"
        );
    }
}
