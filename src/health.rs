//! Live health checks through SSH tunnels: etcd through etcd-client (one client per member, TLS
//! with material read from the node and kept in memory only), apiservers through their own
//! readiness probes, judged as the kubelet judges them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    AlarmAction, AlarmType, Certificate, Client, ConnectOptions, Identity, TlsOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::ClusterChecks;
use crate::plan::{HttpProbe, Plan};
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

/// The full post-restore check (R23): exactly the planned members, each with client URLs; the
/// planned cluster ID everywhere; one leader and one term; no errors or alarms; a linearizable
/// read on every member; equal HashKV at one revision. Returns a one-line summary.
pub async fn verify_restored(
    plan: &Plan,
    clients: &mut [(String, Client)],
) -> Result<String, String> {
    let expected_members: BTreeMap<u64, (&str, BTreeSet<&str>)> = plan
        .restore
        .members
        .iter()
        .map(|m| {
            let id = u64::from_str_radix(&m.member_id, 16).unwrap_or(0);
            (
                id,
                (
                    m.name.as_str(),
                    m.peer_urls.iter().map(String::as_str).collect(),
                ),
            )
        })
        .collect();
    let expected_cluster = u64::from_str_radix(&plan.restore.cluster_id, 16).unwrap_or(0);
    let mut statuses = Vec::new();
    for (node, client) in clients.iter_mut() {
        let st = member_status(client, node).await?;
        if !st.errors.is_empty() {
            return Err(format!(
                "{node}: etcd reports errors: {}",
                st.errors.join("; ")
            ));
        }
        if st.cluster_id != expected_cluster {
            return Err(format!(
                "{node}: cluster ID {:x}, expected {expected_cluster:x} (a member with old data or a different token)",
                st.cluster_id
            ));
        }
        if st.leader == 0 {
            return Err(format!("{node}: no leader yet"));
        }
        let members = client
            .member_list()
            .await
            .map_err(|e| format!("{node}: member list: {e}"))?;
        let mut seen = BTreeMap::new();
        for m in members.members() {
            if m.client_urls().is_empty() {
                return Err(format!(
                    "{node}: member {} ({:x}) has no client URLs: it has not started",
                    m.name(),
                    m.id()
                ));
            }
            seen.insert(
                m.id(),
                (
                    m.name().to_string(),
                    m.peer_urls().iter().cloned().collect::<BTreeSet<_>>(),
                ),
            );
        }
        let seen_ids: BTreeSet<u64> = seen.keys().copied().collect();
        let want_ids: BTreeSet<u64> = expected_members.keys().copied().collect();
        if seen_ids != want_ids {
            return Err(format!(
                "{node}: members {} differ from the planned {}",
                hex_ids(&seen_ids),
                hex_ids(&want_ids)
            ));
        }
        for (id, (name, peers)) in &expected_members {
            let (n, p) = &seen[id];
            let p: BTreeSet<&str> = p.iter().map(String::as_str).collect();
            if n != name || &p != peers {
                return Err(format!(
                    "{node}: member {id:x} is {n} {p:?}, planned {name} {peers:?}"
                ));
            }
        }
        let alarms = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .map_err(|e| format!("{node}: alarm list: {e}"))?;
        if !alarms.alarms().is_empty() {
            let list: Vec<String> = alarms
                .alarms()
                .iter()
                .map(|a| format!("{:?} on member {:x}", a.alarm(), a.member_id()))
                .collect();
            return Err(format!("{node}: active alarms: {}", list.join(", ")));
        }
        // Linearizable by default: needs the leader and a quorum, as `etcdctl endpoint health`.
        client
            .get("health", None)
            .await
            .map_err(|e| format!("{node}: linearizable read failed: {e}"))?;
        statuses.push(st);
    }
    let leaders: BTreeSet<u64> = statuses.iter().map(|s| s.leader).collect();
    if leaders.len() != 1 {
        return Err(format!(
            "members disagree on the leader: {}",
            hex_ids(&leaders)
        ));
    }
    let terms: BTreeSet<u64> = statuses.iter().map(|s| s.raft_term).collect();
    if terms.len() != 1 {
        return Err(format!("members disagree on the raft term: {terms:?}"));
    }
    // Compare HashKV at one revision every member has (never "latest": writers may be active).
    let rev = statuses.iter().map(|s| s.revision).min().unwrap_or(0);
    if let (Some(r), Some(b)) = (plan.snapshot.revision, plan.restore.bump_revision) {
        let floor = r.saturating_add(i64::try_from(b).unwrap_or(i64::MAX));
        if rev < floor {
            return Err(format!(
                "revision {rev} is below the bumped revision {floor}"
            ));
        }
    }
    let mut hashes = BTreeMap::new();
    for (node, client) in clients.iter_mut() {
        let h = client
            .hash_kv(rev)
            .await
            .map_err(|e| format!("{node}: hashkv at {rev}: {e}"))?;
        hashes.insert(node.clone(), (h.hash(), h.compact_version()));
    }
    let distinct: BTreeSet<(u32, i64)> = hashes.values().copied().collect();
    if distinct.len() != 1 {
        return Err(format!(
            "HashKV at revision {rev} differs between members: {hashes:?}"
        ));
    }
    let leader = leaders.iter().next().copied().unwrap_or(0);
    Ok(format!(
        "{} members, cluster {expected_cluster:x}, leader {leader:x}, term {}, HashKV {:08x} at revision {rev}",
        statuses.len(),
        terms.iter().next().copied().unwrap_or(0),
        distinct.iter().next().map_or(0, |d| d.0)
    ))
}

fn hex_ids(ids: &BTreeSet<u64>) -> String {
    let v: Vec<String> = ids.iter().map(|i| format!("{i:x}")).collect();
    format!("[{}]", v.join(", "))
}

/// The node whose member leads, from `(node, member ID, leader ID)` answers: the leader every
/// answering member names, when it is one of the answering nodes.
fn leader_node(seen: &[(String, u64, u64)]) -> Option<String> {
    let leaders: BTreeSet<u64> = seen.iter().map(|(_, _, l)| *l).collect();
    let [leader] = leaders.into_iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    seen.iter()
        .find(|(_, id, _)| *id == leader && leader != 0)
        .map(|(n, _, _)| n.clone())
}

/// [`ClusterChecks`] against the real cluster.
pub struct LiveChecks {
    endpoints: Vec<EtcdEndpoint>,
    remotes: BTreeMap<String, Arc<dyn Remote>>,
    timeout: Duration,
    // Tunnels and clients are reused across polls; every fifth failed attempt in a row drops
    // them, in case a tunnel or a connection is what fails.
    cache: tokio::sync::Mutex<HashMap<String, (Client, Forward)>>,
    failures: std::sync::atomic::AtomicUsize,
}

impl LiveChecks {
    /// Checks for `endpoints`, with `remotes` for the apiserver probes.
    pub fn new(endpoints: Vec<EtcdEndpoint>, remotes: BTreeMap<String, Arc<dyn Remote>>) -> Self {
        LiveChecks {
            endpoints,
            remotes,
            timeout: Duration::from_secs(5),
            cache: tokio::sync::Mutex::new(HashMap::new()),
            failures: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ClusterChecks for LiveChecks {
    async fn etcd_health(&self, plan: &Plan) -> Result<String, String> {
        let mut cache = self.cache.lock().await;
        for ep in &self.endpoints {
            if !cache.contains_key(&ep.node) {
                let c = connect(ep, self.timeout).await?;
                cache.insert(ep.node.clone(), c);
            }
        }
        let mut clients: Vec<(String, Client)> = self
            .endpoints
            .iter()
            .filter_map(|ep| {
                cache
                    .get(&ep.node)
                    .map(|(c, _)| (ep.node.clone(), c.clone()))
            })
            .collect();
        let res = verify_restored(plan, &mut clients).await;
        if res.is_err() {
            let n = self
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            if n % 5 == 0 {
                cache.clear();
            }
        } else {
            self.failures.store(0, std::sync::atomic::Ordering::SeqCst);
        }
        res
    }

    async fn etcd_leader(&self) -> Option<String> {
        // Fresh connections: the cached ones are for the restored cluster's checks.
        let timeout = Duration::from_secs(2);
        let asks = self.endpoints.iter().map(|ep| async move {
            let (mut client, _tunnel) = connect(ep, timeout).await.ok()?;
            let st = tokio::time::timeout(timeout, member_status(&mut client, &ep.node))
                .await
                .ok()?
                .ok()?;
            Some((ep.node.clone(), st.member_id, st.leader))
        });
        let seen: Vec<(String, u64, u64)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        leader_node(&seen)
    }

    async fn apiserver_ready(&self, node: &str, probe: &HttpProbe) -> Result<(), String> {
        let remote = self
            .remotes
            .get(node)
            .ok_or_else(|| format!("no connection to {node}"))?;
        let status = http_probe(remote.as_ref(), probe, self.timeout).await?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("{probe} answered HTTP {status}"))
        }
    }
}

/// Runs an HTTP(S) GET probe through a tunnel and returns the status code. HTTPS certificates
/// are not verified, exactly as the kubelet does for probes.
pub async fn http_probe(
    remote: &dyn Remote,
    probe: &HttpProbe,
    timeout: Duration,
) -> Result<u16, String> {
    let fwd = remote
        .forward(&probe.host, probe.port)
        .await
        .map_err(|e| format!("cannot open a tunnel to {}:{}: {e}", probe.host, probe.port))?;
    let host = probe.host.clone();
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(fwd.local_addr)
            .await
            .map_err(|e| format!("{probe}: {e}"))?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: etcd-recover\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            probe.path
        );
        let mut buf = Vec::new();
        if probe.scheme.eq_ignore_ascii_case("https") {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(insecure_client_config()));
            let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap_or_else(|_| {
                rustls::pki_types::ServerName::try_from("localhost".to_string())
                    .expect("valid name")
            });
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{probe}: TLS handshake: {e}"))?;
            tls.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("{probe}: {e}"))?;
            let _ = tls.read_to_end(&mut buf).await;
        } else {
            let mut tcp = tcp;
            tcp.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("{probe}: {e}"))?;
            let _ = tcp.read_to_end(&mut buf).await;
        }
        parse_status(&buf).ok_or_else(|| format!("{probe}: no HTTP response"))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{probe}: no answer within {timeout:?}"))?
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn insecure_client_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))))
                .with_no_client_auth()
        })
}

/// Accepts any server certificate (probe semantics), still checking handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localhost::Localhost;

    #[test]
    fn the_leader_is_the_node_every_member_names() {
        let seen = |v: &[(&str, u64, u64)]| -> Vec<(String, u64, u64)> {
            v.iter().map(|(n, i, l)| (n.to_string(), *i, *l)).collect()
        };
        assert_eq!(
            leader_node(&seen(&[("cp-1", 1, 2), ("cp-2", 2, 2), ("cp-3", 3, 2)])),
            Some("cp-2".into())
        );
        // The leader did not answer: not known which node it is.
        assert_eq!(leader_node(&seen(&[("cp-1", 1, 2), ("cp-3", 3, 2)])), None);
        // Members disagree, or there is no leader.
        assert_eq!(leader_node(&seen(&[("cp-1", 1, 1), ("cp-2", 2, 2)])), None);
        assert_eq!(leader_node(&seen(&[("cp-1", 1, 0), ("cp-2", 2, 0)])), None);
        assert_eq!(leader_node(&[]), None);
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\nok"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 500 Internal\r\n"), Some(500));
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[tokio::test]
    async fn plain_http_probe_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 2\r\n\r\nok").as_bytes())
                    .await;
            }
        });
        let node = Localhost::new("cp-1");
        let probe = HttpProbe {
            scheme: "HTTP".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/readyz".into(),
        };
        assert_eq!(
            http_probe(&node, &probe, Duration::from_secs(5))
                .await
                .unwrap(),
            200
        );
        assert_eq!(
            http_probe(&node, &probe, Duration::from_secs(5))
                .await
                .unwrap(),
            503
        );
    }
}
