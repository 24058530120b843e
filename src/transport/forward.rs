//! Local port forwarding: a listener on 127.0.0.1 whose connections are tunnelled to a
//! `host:port` as seen from the node (SSH `direct-tcpip` channels, like `ssh -L`).

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
