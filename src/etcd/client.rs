//! One etcd member through an SSH tunnel: its address and client certificate, the connection,
//! and what the member says about itself and the cluster. Certificates are read from the node
//! and kept in memory only.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::remote::{Forward, Remote};

/// Client certificate material for one member, read from its node.
#[derive(Clone)]
pub struct TlsMaterial {
    /// CA bundle (PEM).
    pub ca: Vec<u8>,
    /// Client certificate (PEM).
    pub cert: Vec<u8>,
    /// Client key (PEM). Never printed.
    pub key: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

/// How to reach one etcd member from here.
#[derive(Clone)]
pub struct EtcdEndpoint {
    /// Node (and member) name.
    pub node: String,
    /// The node's connection.
    pub remote: Arc<dyn Remote>,
    /// Client URL host as seen from the node.
    pub host: String,
    /// Client URL port.
    pub port: u16,
    /// TLS material; `None` for plain http client URLs.
    pub tls: Option<TlsMaterial>,
}

/// What one member says about itself and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node name.
    pub node: String,
    /// Member ID of the answering member.
    pub member_id: u64,
    /// Cluster ID from the response header.
    pub cluster_id: u64,
    /// Leader's member ID (0 = none).
    pub leader: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Current revision.
    pub revision: i64,
    /// Server version.
    pub version: String,
    /// Errors the member reports.
    pub errors: Vec<String>,
}

/// Connects to one member through a fresh tunnel; the tunnel lives as long as the returned guard.
pub async fn connect(ep: &EtcdEndpoint, timeout: Duration) -> Result<(Client, Forward), String> {
    let fwd = ep.remote.forward(&ep.host, ep.port).await.map_err(|e| {
        format!(
            "{}: cannot open a tunnel to {}:{}: {e}",
            ep.node, ep.host, ep.port
        )
    })?;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    let scheme = if let Some(tls) = &ep.tls {
        // The server certificate names the node's IP, 127.0.0.1, localhost and the node name;
        // the tunnel's local address is none of those, so verify against the original host.
        let domain = ep
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        opts = opts.with_tls(
            TlsOptions::new()
                .domain_name(domain)
                .ca_certificate(Certificate::from_pem(&tls.ca))
                .identity(Identity::from_pem(&tls.cert, &tls.key)),
        );
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", fwd.local_addr);
    let client = tokio::time::timeout(timeout, Client::connect([url], Some(opts)))
        .await
        .map_err(|_| format!("{}: etcd did not answer within {timeout:?}", ep.node))?
        .map_err(|e| format!("{}: cannot connect to etcd: {e}", ep.node))?;
    Ok((client, fwd))
}

/// `Status` of one member.
pub async fn member_status(client: &mut Client, node: &str) -> Result<MemberStatus, String> {
    let s = client
        .status()
        .await
        .map_err(|e| format!("{node}: status: {e}"))?;
    let h = s
        .header()
        .ok_or_else(|| format!("{node}: status response without header"))?;
    Ok(MemberStatus {
        node: node.to_string(),
        member_id: h.member_id(),
        cluster_id: h.cluster_id(),
        leader: s.leader(),
        raft_term: s.raft_term(),
        revision: h.revision(),
        version: s.version().to_string(),
        errors: s.errors().to_vec(),
    })
}

/// One member as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Member name (empty until the member has started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until the member has started).
    pub client_urls: Vec<String>,
}

/// The member list, as one member sees it.
pub async fn members(client: &mut Client, node: &str) -> Result<Vec<Member>, String> {
    let list = client
        .member_list()
        .await
        .map_err(|e| format!("{node}: member list: {e}"))?;
    Ok(list
        .members()
        .iter()
        .map(|m| Member {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
        })
        .collect())
}

/// Builds the endpoint of member `name`, reading its TLS material (kept in memory only) from the
/// node. `tls_paths` are host paths of the CA, client certificate and key.
pub async fn endpoint(
    name: &str,
    remote: Arc<dyn Remote>,
    host: &str,
    port: u16,
    https: bool,
    tls_paths: Option<&(String, String, String)>,
) -> Result<EtcdEndpoint, String> {
    let tls = match (https, tls_paths) {
        (false, _) => None,
        (true, None) => {
            return Err(format!(
                "{name}: etcd uses https but no client certificate was found"
            ))
        }
        (true, Some((ca, cert, key))) => {
            let mut read = Vec::new();
            for p in [ca, cert, key] {
                read.push(
                    remote
                        .read_file(p)
                        .await
                        .map_err(|e| format!("{name}: cannot read {p}: {e}"))?,
                );
            }
            let key = read.pop().unwrap_or_default();
            let cert = read.pop().unwrap_or_default();
            let ca = read.pop().unwrap_or_default();
            Some(TlsMaterial { ca, cert, key })
        }
    };
    Ok(EtcdEndpoint {
        node: name.to_string(),
        remote,
        host: host.to_string(),
        port,
        tls,
    })
}
