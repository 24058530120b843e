//! Establishing an authenticated SSH session to a node, through its jump hosts if any, with
//! strict host key checking at every hop.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Config, Handle};
use russh::keys::ssh_key::{Algorithm, HashAlg};
use russh::{cipher, Preferred};

use super::auth::{authenticate, KeyStore};
use super::handler::ClientHandler;
use super::known_hosts::{self, host_pattern_name};
use super::proxy::{self, ProxyChild};
use crate::inventory::{Endpoint, SshTarget};
use crate::remote::RemoteError;

/// Symmetric ciphers, fastest first on hardware with AES instructions (nearly every server and
/// laptop); ChaCha20-Poly1305 is as safe and faster without them. CBC modes are left out.
const CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

/// russh settings for one hop.
fn client_config(target: &SshTarget, endpoint: &Endpoint) -> Arc<Config> {
    let files: Vec<PathBuf> = endpoint
        .known_hosts
        .iter()
        .chain(&endpoint.global_known_hosts)
        .cloned()
        .collect();
    let name = host_pattern_name(endpoint.host_key_name(), endpoint.port);
    // Ask for a host key type we have on record first, as OpenSSH does; otherwise a server
    // with several keys could offer one we cannot verify.
    let mut keys: Vec<Algorithm> = Vec::new();
    for alg in known_hosts::recorded_algorithms(&files, &name) {
        match alg {
            Algorithm::Rsa { .. } => {
                keys.push(Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                });
                keys.push(Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                });
            }
            other => keys.push(other),
        }
    }
    for alg in Preferred::DEFAULT.key.iter() {
        if !keys.contains(alg) {
            keys.push(alg.clone());
        }
    }
    // Host certificates are asked for only where an @cert-authority line could verify them.
    let certificates = if known_hosts::has_cert_authority(&files, &name) {
        keys.clone()
    } else {
        Vec::new()
    };
    let preferred = Preferred {
        key: Cow::Owned(keys),
        host_key_certificates: Cow::Owned(certificates),
        cipher: Cow::Borrowed(CIPHERS),
        ..Preferred::DEFAULT
    };
    Arc::new(Config {
        preferred,
        // Never drop a quiet session on our side: restores have long silent phases.
        // Dead peers are found by keepalives instead.
        inactivity_timeout: None,
        keepalive_interval: target.keepalive_interval,
        keepalive_max: target.keepalive_max as usize,
        nodelay: true,
        ..Config::default()
    })
}

/// A connected, authenticated session and the jump sessions it runs through.
pub(crate) struct Connected {
    pub(crate) handle: Handle<ClientHandler>,
    pub(crate) jumps: Vec<Handle<ClientHandler>>,
    /// The first hop's ProxyCommand, killed when this is dropped.
    pub(crate) proxy: Option<ProxyChild>,
    pub(crate) notes: Vec<String>,
}

/// Connects to the target through its jump hosts; each hop gets `connect_timeout` for TCP
/// connect (or tunnel), handshake and authentication.
pub(crate) async fn connect(
    target: &SshTarget,
    keys: &KeyStore,
    accept_new: bool,
) -> Result<Connected, RemoteError> {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let mut jumps: Vec<Handle<ClientHandler>> = Vec::new();
    let mut proxy = None;
    let hops: Vec<&Endpoint> = target
        .jumps
        .iter()
        .chain(std::iter::once(&target.endpoint))
        .collect();
    let last = hops.len() - 1;
    for (i, endpoint) in hops.iter().enumerate() {
        let via = if i == last {
            String::new()
        } else {
            format!("jump host {endpoint}: ")
        };
        let (handle, child) = tokio::time::timeout(
            target.connect_timeout,
            connect_hop(target, endpoint, jumps.last(), keys, accept_new, &notes),
        )
        .await
        .map_err(|_| RemoteError::Unreachable {
            node: target.node.clone(),
            addr: endpoint.to_string(),
            reason: format!(
                "{via}no SSH session within {} (connect_timeout); check that the node is up and sshd listens on port {}",
                human_duration(target.connect_timeout),
                endpoint.port
            ),
        })?
        .map_err(|e| with_prefix(e, &via))?;
        proxy = proxy.or(child);
        jumps.push(handle);
    }
    let handle = jumps.pop().ok_or_else(|| RemoteError::Other {
        node: target.node.clone(),
        reason: "no hop to connect to".into(),
    })?;
    let notes = notes.lock().map(|n| n.clone()).unwrap_or_default();
    Ok(Connected {
        handle,
        jumps,
        proxy,
        notes,
    })
}

fn with_prefix(e: RemoteError, via: &str) -> RemoteError {
    if via.is_empty() {
        return e;
    }
    match e {
        RemoteError::Unreachable { node, addr, reason } => RemoteError::Unreachable {
            node,
            addr,
            reason: format!("{via}{reason}"),
        },
        RemoteError::HostKey { node, reason } => RemoteError::HostKey {
            node,
            reason: format!("{via}{reason}"),
        },
        RemoteError::Auth { node, user, reason } => RemoteError::Auth {
            node,
            user,
            reason: format!("{via}{reason}"),
        },
        other => other,
    }
}

/// Connects and authenticates one hop: over TCP, through its ProxyCommand (first hop only),
/// or tunnelled through the previous hop. Returns the ProxyCommand's process with the session.
async fn connect_hop(
    target: &SshTarget,
    endpoint: &Endpoint,
    through: Option<&Handle<ClientHandler>>,
    keys: &KeyStore,
    accept_new: bool,
    notes: &Arc<Mutex<Vec<String>>>,
) -> Result<(Handle<ClientHandler>, Option<ProxyChild>), RemoteError> {
    let node = target.node.clone();
    let refusal = Arc::new(Mutex::new(None));
    let handler = ClientHandler {
        lookup_name: host_pattern_name(endpoint.host_key_name(), endpoint.port),
        user_files: endpoint.known_hosts.clone(),
        all_files: endpoint
            .known_hosts
            .iter()
            .chain(&endpoint.global_known_hosts)
            .cloned()
            .collect(),
        accept_new,
        refusal: refusal.clone(),
        notes: notes.clone(),
        principals: vec![endpoint.host_key_name().to_string(), endpoint.host.clone()],
    };
    let config = client_config(target, endpoint);
    let unreachable = |reason: String| RemoteError::Unreachable {
        node: node.clone(),
        addr: endpoint.to_string(),
        reason,
    };
    let mut child = None;
    let connected = match through {
        None => match &endpoint.proxy_command {
            Some(command) => {
                let (stream, spawned) = proxy::spawn(command).map_err(|e| {
                    unreachable(format!("cannot start the ProxyCommand `{command}`: {e}"))
                })?;
                child = Some(spawned);
                client::connect_stream(config, stream, handler).await
            }
            None => {
                let stream =
                    tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                        .await
                        .map_err(|e| unreachable(io_reason(&e)))?;
                client::connect_stream(config, stream, handler).await
            }
        },
        Some(jump) => {
            let channel = jump
                .channel_open_direct_tcpip(
                    endpoint.host.clone(),
                    u32::from(endpoint.port),
                    "127.0.0.1",
                    0,
                )
                .await
                .map_err(|e| {
                    unreachable(format!(
                        "the jump host cannot open a connection to {}:{}: {e}",
                        endpoint.host, endpoint.port
                    ))
                })?;
            client::connect_stream(config, channel.into_stream(), handler).await
        }
    };
    let mut handle = match connected {
        Ok(h) => h,
        Err(e) => {
            let refused = refusal.lock().ok().and_then(|mut r| r.take());
            return Err(match (refused, child.as_mut()) {
                (Some(reason), _) => RemoteError::HostKey { node, reason },
                (None, Some(proxy)) => unreachable(format!(
                    "SSH handshake through the ProxyCommand `{}` failed: {}; {}",
                    endpoint.proxy_command.as_deref().unwrap_or_default(),
                    russh_reason(&e),
                    proxy.failure().await
                )),
                (None, None) => unreachable(format!("SSH handshake failed: {}", russh_reason(&e))),
            });
        }
    };
    if let Err(failure) = authenticate(&mut handle, endpoint, keys).await {
        return Err(RemoteError::Auth {
            node,
            user: endpoint.user.clone(),
            reason: failure.reason,
        });
    }
    Ok((handle, child))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is sshd running and listening on that port?)".into()
        }
        std::io::ErrorKind::TimedOut => "TCP connection timed out".into(),
        _ => e.to_string(),
    }
}

fn russh_reason(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io_reason(io),
        other => other.to_string(),
    }
}

/// `10s`, `1.5s`, `250ms`.
pub(crate) fn human_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
