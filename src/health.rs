//! Is the restored cluster healthy? The checks the engine waits on ([`ClusterChecks`]) and
//! their live implementation: etcd through etcd-client over SSH tunnels (one client per member,
//! TLS with material read from the node and kept in memory only), apiservers through their own
//! readiness probes, judged as the kubelet judges them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{AlarmAction, AlarmType, Client};

use crate::etcd::client::{connect, member_status, EtcdEndpoint};
use crate::plan::Plan;
use crate::probe::{http_probe, HttpProbe};
use crate::remote::{Forward, Remote};

/// Cluster-wide checks that need more than one node's shell.
#[async_trait]
pub trait ClusterChecks: Send + Sync {
    /// One attempt at the full etcd health check against the plan's expectations. `Ok` carries
    /// a one-line summary; `Err` says what is not right yet.
    async fn etcd_health(&self, plan: &Plan) -> Result<String, String>;

    /// One attempt at a node's apiserver readiness probe.
    async fn apiserver_ready(&self, node: &str, probe: &HttpProbe) -> Result<(), String>;

    /// The node whose etcd member leads right now, when that can be found out within a few
    /// seconds (see [`crate::plan::StepOrder::LeaderLast`]).
    async fn etcd_leader(&self) -> Option<String> {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
