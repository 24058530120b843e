//! Local port forwarding: a listener on 127.0.0.1 whose connections are tunnelled to a
//! `host:port` as seen from the node (SSH `direct-tcpip` channels, like `ssh -L`).
//!
//! Any local user can connect to a port on 127.0.0.1. So on Linux each accepted connection is
//! checked against the kernel's socket table (`/proc/net/tcp`): the connecting socket must
//! belong to the user running etcd-recover, else it is closed before any tunnel opens. (etcd
//! behind the tunnel would still demand the client certificate, which only this process holds;
//! the check keeps other users from reaching the node's etcd port at all.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::Handle;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::handler::ClientHandler;
use crate::remote::{Forward, RemoteError};

/// Stops the forwarding task, and with it every tunnelled connection, when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens on an ephemeral port of 127.0.0.1 and forwards each connection to `host:port`
/// through the node. One tunnel is opened first so that an unreachable target is reported now
/// rather than as a reset connection later. Every tunnel must open within `limit`.
pub(crate) async fn open(
    handle: Arc<Handle<ClientHandler>>,
    node: &str,
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<Forward, RemoteError> {
    let other = |reason: String| RemoteError::Other {
        node: node.to_string(),
        reason,
    };
    let probe = tokio::time::timeout(
        limit,
        handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0),
    )
    .await
    .map_err(|_| {
        other(format!(
            "the node did not open a tunnel to {host}:{port} within {} (connect_timeout); the node or its sshd may hang",
            super::session::human_duration(limit)
        ))
    })?
    .map_err(|e| other(format!("the node cannot connect to {host}:{port}: {e}")))?;
    let _ = tokio::time::timeout(super::node::CLOSE_WAIT, probe.close()).await;

    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| other(format!("cannot listen on 127.0.0.1: {e}")))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| other(format!("cannot listen on 127.0.0.1: {e}")))?;
    let host = host.to_string();
    let task = tokio::spawn(async move {
        // Owned by this task: aborting the task drops the set, which aborts every connection.
        let mut connections = JoinSet::new();
        while let Ok((mut socket, peer)) = listener.accept().await {
            if !owned_by_us(peer, local_addr) {
                drop(socket);
                continue;
            }
            let handle = handle.clone();
            let host = host.clone();
            connections.spawn(async move {
                let opening = handle.channel_open_direct_tcpip(
                    host,
                    u32::from(port),
                    peer.ip().to_string(),
                    u32::from(peer.port()),
                );
                // A tunnel that does not open in time drops the local connection: the client
                // sees a reset and its own timeout and retry logic apply.
                let Ok(Ok(channel)) = tokio::time::timeout(limit, opening).await else {
                    return;
                };
                let mut stream = channel.into_stream();
                let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
            });
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(Forward {
        local_addr,
        guard: Box::new(AbortOnDrop(task)),
    })
}

/// True when the local socket `peer`, connected to `listener`, belongs to this process's
/// effective user. Linux only: elsewhere there is no socket table to read, and every local
/// connection is accepted.
fn owned_by_us(peer: SocketAddr, listener: SocketAddr) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    socket_owner(&table, peer, listener) == Some(nix::unistd::geteuid().as_raw())
}

/// The uid of the socket `local` connected to `remote`, from the text of `/proc/net/tcp`.
fn socket_owner(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else {
        return None;
    };
    // The kernel prints the address as the u32 it holds, in the machine's byte order.
    let hex = |a: std::net::SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (want_local, want_remote) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&want_local.as_str())
            && fields.get(2) == Some(&want_remote.as_str()))
        .then(|| fields.get(7)?.parse().ok())
        .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_table_names_the_owner_of_a_connection() {
        // Two lines of a real /proc/net/tcp (little-endian): 127.0.0.1:34567 -> 127.0.0.1:2379
        // owned by uid 1000, and the listener.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:0953 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
           1: 0100007F:8707 0100007F:0953 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0000000000000000 20 4 30 10 -1\n";
        let peer: SocketAddr = "127.0.0.1:34567".parse().unwrap();
        let listener: SocketAddr = "127.0.0.1:2387".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(socket_owner(table, peer, listener), Some(1000));
            assert_eq!(socket_owner(table, listener, peer), None);
        }
    }

    #[test]
    fn our_own_connections_are_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(owned_by_us(peer, addr));
    }
}
