//! `etcd-recover check`: is every control-plane node ready for a restore?
//!
//! Connects to every node in parallel and, per node, checks: reachable, authenticated, sudo,
//! OS; then shows the same facts the restore plans with ([`crate::facts`]): the static-pod
//! manifests, free space next to the etcd data directory, the restore tool, and etcd's own
//! status through an SSH tunnel. Then it compares what the members say (one cluster ID, one
//! leader, the inventory's nodes as members). Read-only: every failure is collected and
//! reported; nothing stops the other nodes from being checked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::etcd::client::Member;
use crate::etcd::version::RestoreToolKind;
use crate::facts::{self, NodeFacts, Topic};
use crate::finding::Severity;
use crate::inventory::{Node, SshTarget};
use crate::remote::{Cmd, Remote, RemoteError};
use crate::transport::{Connector, SshNode};

/// The outcome of one check on one node.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Check<T> {
    /// Passed, with what was found.
    Ok(T),
    /// Failed.
    Failed {
        /// What went wrong (names the node).
        error: String,
        /// What to do about it.
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// Not run because an earlier check failed.
    Skipped {
        /// Which earlier check.
        reason: String,
    },
}

impl<T> Check<T> {
    /// True for [`Check::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Check::Ok(_))
    }

    /// The facts, if passed.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Check::Ok(t) => Some(t),
            _ => None,
        }
    }

    fn failed(error: impl Into<String>, hint: Option<&str>) -> Self {
        Check::Failed {
            error: error.into(),
            hint: hint.map(str::to_string),
        }
    }

    fn skipped(reason: &str) -> Self {
        Check::Skipped {
            reason: reason.to_string(),
        }
    }
}

/// A check that only passes or fails.
#[derive(Debug, Clone, Serialize)]
pub struct Passed {}

/// Who we are on the node.
#[derive(Debug, Clone, Serialize)]
pub struct Login {
    /// SSH user.
    pub user: String,
}

/// How privileged commands run.
#[derive(Debug, Clone, Serialize)]
pub struct SudoFacts {
    /// `root` (no sudo needed), `sudo` (`sudo -n` works) or `off` (`sudo: never`).
    pub mode: String,
}

/// The node's operating system.
#[derive(Debug, Clone, Serialize)]
pub struct OsFacts {
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub pretty_name: String,
    /// `uname -r`.
    pub kernel: String,
}

/// The static-pod manifests.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestFacts {
    /// The kubelet's static-pod directory.
    pub dir: String,
    /// Path of etcd's manifest.
    pub etcd: String,
    /// Path of the kube-apiserver manifest, when there is one.
    pub kube_apiserver: Option<String>,
    /// `--name` in etcd.yaml.
    pub member_name: Option<String>,
}

/// Where etcd keeps its data, and the room next to it.
#[derive(Debug, Clone, Serialize)]
pub struct DataDirFacts {
    /// The data directory on the host.
    pub path: String,
    /// Free bytes on the filesystem where the restored data directory will go.
    pub free_bytes: u64,
}

/// The binary that restores the snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ToolFacts {
    /// Path on the node.
    pub path: String,
    /// `etcdutl` or `etcdctl`.
    pub kind: RestoreToolKind,
    /// Its version.
    pub version: String,
}

/// What the member says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdFacts {
    /// The client URL probed, as seen from the node.
    pub endpoint: String,
    /// Member ID (hex, as etcdctl prints it).
    pub member_id: String,
    /// Cluster ID (hex).
    pub cluster_id: String,
    /// Leader's member ID (hex; `0` = no leader).
    pub leader: String,
    /// True when this member leads.
    pub is_leader: bool,
    /// Current revision.
    pub revision: i64,
    /// Raft term.
    pub raft_term: u64,
    /// Server version.
    pub version: String,
}

/// Everything checked on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Node name.
    pub name: String,
    /// `user@host:port`.
    pub address: String,
    /// Jump hosts, first hop first, or the ProxyCommand.
    pub via: Vec<String>,
    /// True when every check passed.
    pub ok: bool,
    /// TCP connection and SSH handshake.
    pub reachable: Check<Passed>,
    /// Host key and user authentication.
    pub authenticated: Check<Login>,
    /// Privileged commands.
    pub sudo: Check<SudoFacts>,
    /// Operating system.
    pub os: Check<OsFacts>,
    /// Static-pod manifests.
    pub manifests: Check<ManifestFacts>,
    /// Free space next to the data directory.
    pub data_dir: Check<DataDirFacts>,
    /// Restore tool.
    pub restore_tool: Check<ToolFacts>,
    /// etcd status.
    pub etcd: Check<EtcdFacts>,
    /// Things worth knowing that are not failures (a newly recorded host key, ...).
    pub notes: Vec<String>,
}

impl NodeReport {
    fn new(target: &SshTarget) -> Self {
        const PENDING: &str = "not connected";
        NodeReport {
            name: target.node.clone(),
            address: target.endpoint.to_string(),
            via: target.via(),
            ok: false,
            reachable: Check::skipped("not tried"),
            authenticated: Check::skipped(PENDING),
            sudo: Check::skipped(PENDING),
            os: Check::skipped(PENDING),
            manifests: Check::skipped(PENDING),
            data_dir: Check::skipped(PENDING),
            restore_tool: Check::skipped(PENDING),
            etcd: Check::skipped(PENDING),
            notes: Vec::new(),
        }
    }

    fn finish(&mut self) {
        self.ok = self.reachable.is_ok()
            && self.authenticated.is_ok()
            && self.sudo.is_ok()
            && self.os.is_ok()
            && self.manifests.is_ok()
            && self.data_dir.is_ok()
            && self.restore_tool.is_ok()
            && self.etcd.is_ok();
    }

    /// Every failure of this node as `(error, hint)`.
    pub fn failures(&self) -> Vec<(String, Option<String>)> {
        fn f<T>(c: &Check<T>, out: &mut Vec<(String, Option<String>)>) {
            if let Check::Failed { error, hint } = c {
                out.push((error.clone(), hint.clone()));
            }
        }
        let mut out = Vec::new();
        f(&self.reachable, &mut out);
        f(&self.authenticated, &mut out);
        f(&self.sudo, &mut out);
        f(&self.os, &mut out);
        f(&self.manifests, &mut out);
        f(&self.data_dir, &mut out);
        f(&self.restore_tool, &mut out);
        f(&self.etcd, &mut out);
        out
    }
}

/// One etcd member as the cluster lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    /// Member ID (hex).
    pub id: String,
    /// Member name (empty until the member has started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
}

/// What the members agree on.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFacts {
    /// Cluster ID (hex), when the members agree.
    pub cluster_id: Option<String>,
    /// Leader's node name, when known.
    pub leader: Option<String>,
    /// The member list, from the first member that answered.
    pub members: Vec<MemberInfo>,
}

/// The result of `check`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Cluster name from the inventory.
    pub cluster: String,
    /// True when every node passed and the members agree.
    pub ok: bool,
    /// Per node, in inventory order.
    pub nodes: Vec<NodeReport>,
    /// What the members say together, if any member answered.
    pub etcd: Option<ClusterFacts>,
    /// Problems that involve several nodes (disagreeing members, missing members).
    pub problems: Vec<String>,
}

/// Limits for the checks.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// Limit for reaching etcd through the tunnel and getting its status.
    pub etcd_timeout: Duration,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            etcd_timeout: Duration::from_secs(10),
        }
    }
}

/// Checks every node in parallel. `targets` are the resolved SSH settings of `nodes`, in the
/// same order.
pub async fn check_cluster(
    cluster: &str,
    nodes: &[Node],
    targets: &[SshTarget],
    connector: &Connector,
    settings: &CheckSettings,
) -> ClusterReport {
    // Passphrases are asked before any connection starts its timeout.
    connector.preload(targets).await;
    let results = futures::future::join_all(
        nodes
            .iter()
            .zip(targets)
            .map(|(node, target)| check_node(node, target, connector, settings)),
    )
    .await;
    let (reports, member_lists): (Vec<NodeReport>, Vec<Option<Vec<MemberInfo>>>) =
        results.into_iter().unzip();
    let members = member_lists.into_iter().flatten().next();
    let (etcd, problems) = compare_members(nodes, &reports, members);
    let ok = reports.iter().all(|r| r.ok) && problems.is_empty();
    ClusterReport {
        cluster: cluster.to_string(),
        ok,
        nodes: reports,
        etcd,
        problems,
    }
}

/// Connects to one node and runs its checks.
async fn check_node(
    node: &Node,
    target: &SshTarget,
    connector: &Connector,
    settings: &CheckSettings,
) -> (NodeReport, Option<Vec<MemberInfo>>) {
    let mut report = NodeReport::new(target);
    let ssh = match connector.connect(target).await {
        Ok(ssh) => ssh,
        Err(e) => {
            let (reachable, authenticated) = connect_failure(&e);
            report.reachable = reachable;
            report.authenticated = authenticated;
            report.finish();
            return (report, None);
        }
    };
    report.reachable = Check::Ok(Passed {});
    report.authenticated = Check::Ok(Login {
        user: target.endpoint.user.clone(),
    });
    report.notes.extend(ssh.notes().iter().cloned());
    let ssh = Arc::new(ssh);
    let members = run_checks(node, target, ssh.clone(), settings, &mut report).await;
    if let Ok(ssh) = Arc::try_unwrap(ssh) {
        ssh.close().await;
    }
    report.finish();
    (report, members)
}

fn connect_failure(e: &RemoteError) -> (Check<Passed>, Check<Login>) {
    let text = e.to_string();
    match e {
        RemoteError::Unreachable { .. } => (
            Check::failed(text, Some("check that the node is up, that `host` and `port` are right, and that sshd runs")),
            Check::skipped("not reachable"),
        ),
        RemoteError::HostKey { .. } => (Check::Ok(Passed {}), Check::failed(text, None)),
        RemoteError::Auth { .. } => (Check::Ok(Passed {}), Check::failed(text, None)),
        _ => (Check::Ok(Passed {}), Check::failed(text, None)),
    }
}

/// The checks after login. Returns the member list if etcd answered.
async fn run_checks(
    node: &Node,
    target: &SshTarget,
    ssh: Arc<SshNode>,
    settings: &CheckSettings,
    report: &mut NodeReport,
) -> Option<Vec<MemberInfo>> {
    let remote: &dyn Remote = ssh.as_ref();
    let limit = target.command_timeout;

    report.sudo = if !ssh.uses_sudo() {
        Check::Ok(SudoFacts {
            mode: if ssh.is_root() { "root" } else { "off" }.into(),
        })
    } else {
        match ssh.check_sudo().await {
            Ok(()) => Check::Ok(SudoFacts {
                mode: "sudo".into(),
            }),
            Err(e) => Check::failed(e.to_string(), None),
        }
    };
    if !report.sudo.is_ok() {
        report.os = os_facts(remote, limit).await;
        for c in [
            &mut report.manifests as &mut dyn SkipExt,
            &mut report.data_dir,
            &mut report.restore_tool,
            &mut report.etcd,
        ] {
            c.skip("sudo does not work");
        }
        return None;
    }

    // The OS, and the same facts the restore plans with, side by side on the one session.
    let (os, mut facts) = tokio::join!(os_facts(remote, limit), facts::node(node, Some(remote)));
    report.os = os;
    if facts.etcd.is_some() {
        let remote: Arc<dyn Remote> = ssh.clone();
        facts::probe_member(&mut facts, remote, settings.etcd_timeout).await;
    }
    report.manifests = manifests(&facts);
    report.restore_tool = restore_tool(&facts);
    if facts.etcd.is_none() {
        report.data_dir.skip("etcd.yaml could not be read");
        report.etcd.skip("etcd.yaml could not be read");
        return None;
    }
    report.data_dir = data_dir(&facts);
    report.etcd = etcd(&facts);
    facts
        .members
        .map(|list| list.iter().map(MemberInfo::from).collect())
}

/// Marks a check skipped, whatever its facts type.
trait SkipExt {
    fn skip(&mut self, reason: &str);
}

impl<T> SkipExt for Check<T> {
    fn skip(&mut self, reason: &str) {
        *self = Check::skipped(reason);
    }
}

async fn os_facts(remote: &dyn Remote, limit: Duration) -> Check<OsFacts> {
    let release = remote
        .run(
            &Cmd::script(
                "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release",
                Vec::<String>::new(),
            )
            .unprivileged()
            .timeout(limit),
        )
        .await;
    let kernel = remote
        .run(&Cmd::new(["uname", "-r"]).unprivileged().timeout(limit))
        .await;
    match (release, kernel) {
        (Ok(release), Ok(kernel)) => Check::Ok(OsFacts {
            pretty_name: pretty_name(&release.stdout_text())
                .unwrap_or_else(|| "unknown".to_string()),
            kernel: kernel.stdout_text().trim().to_string(),
        }),
        (Err(e), _) | (_, Err(e)) => Check::failed(e.to_string(), None),
    }
}

/// `PRETTY_NAME` from os-release text (shell-style quoting, `os-release(5)`).
fn pretty_name(text: &str) -> Option<String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let v = value.trim();
    let unquoted = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\"))
}

/// The first error the facts hold about `topic`, naming the node.
fn failure<T>(f: &NodeFacts, topic: Topic) -> Option<Check<T>> {
    let e = f
        .findings_about(topic)
        .find(|x| x.severity == Severity::Error)?;
    let prefix = format!("{}: ", f.name);
    let error = if e.message.starts_with(&prefix) {
        e.message.clone()
    } else {
        format!("{prefix}{}", e.message)
    };
    Some(Check::Failed {
        error,
        hint: e.hint.clone(),
    })
}

/// The manifests: the kubelet's directory, etcd's manifest and the member it runs.
fn manifests(f: &NodeFacts) -> Check<ManifestFacts> {
    if let Some(failed) = failure(f, Topic::Manifests) {
        return failed;
    }
    let Some((m, pod)) = f
        .etcd
        .as_ref()
        .and_then(|m| Some((m, m.static_pod.as_ref()?)))
    else {
        return failure(f, Topic::Etcd).unwrap_or_else(|| {
            Check::failed(
                format!("{}: etcd's manifest could not be read", f.name),
                None,
            )
        });
    };
    Check::Ok(ManifestFacts {
        dir: f.static_pods.dir.clone(),
        etcd: f.static_pods.path(&pod.file),
        kube_apiserver: f
            .static_pods
            .pod_file("kube-apiserver")
            .map(|p| f.static_pods.path(&p.file)),
        member_name: m.name.clone(),
    })
}

/// The restore tool, and whether it fits the server.
fn restore_tool(f: &NodeFacts) -> Check<ToolFacts> {
    let tool = f.tool.as_ref();
    view(
        f,
        Topic::RestoreTool,
        tool,
        "the manifests directory could not be read",
        |t| ToolFacts {
            path: t.path.clone(),
            kind: t.kind,
            version: t.version.to_string(),
        },
    )
}

/// The data directory and the room where the restored one goes.
fn data_dir(f: &NodeFacts) -> Check<DataDirFacts> {
    let data = f.data.as_ref();
    view(
        f,
        Topic::DataDir,
        data,
        "etcd.yaml could not be read",
        |d| DataDirFacts {
            path: d.dir.clone(),
            free_bytes: d.free_bytes.unwrap_or(0),
        },
    )
}

/// The check of one topic: its first error, else what `ok` makes of the fact, else skipped
/// because the fact could not be read.
fn view<F, T>(
    f: &NodeFacts,
    topic: Topic,
    fact: Option<&F>,
    unread: &str,
    ok: impl FnOnce(&F) -> T,
) -> Check<T> {
    if let Some(failed) = failure(f, topic) {
        return failed;
    }
    fact.map_or_else(|| Check::skipped(unread), |x| Check::Ok(ok(x)))
}

/// What the member says about itself.
fn etcd(f: &NodeFacts) -> Check<EtcdFacts> {
    if let Some(failed) = failure(f, Topic::Etcd) {
        return failed;
    }
    let name = &f.name;
    let status = match &f.health {
        Ok(s) => s,
        Err(e) => {
            return Check::failed(
                e.clone(),
                Some("check that etcd runs on the node (its static pod) and listens on that URL"),
            )
        }
    };
    if !status.errors.is_empty() {
        return Check::failed(
            format!("{name}: etcd reports errors: {}", status.errors.join("; ")),
            None,
        );
    }
    Check::Ok(EtcdFacts {
        endpoint: f.client.as_ref().map(|c| c.url()).unwrap_or_default(),
        member_id: format!("{:x}", status.member_id),
        cluster_id: format!("{:x}", status.cluster_id),
        leader: format!("{:x}", status.leader),
        is_leader: status.leader != 0 && status.leader == status.member_id,
        revision: status.revision,
        raft_term: status.raft_term,
        version: status.version.clone(),
    })
}

impl From<&Member> for MemberInfo {
    fn from(m: &Member) -> MemberInfo {
        MemberInfo {
            id: format!("{:x}", m.id),
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
        }
    }
}

/// Cluster-wide agreement: one cluster ID, one leader, members = inventory nodes.
fn compare_members(
    nodes: &[Node],
    reports: &[NodeReport],
    members: Option<Vec<MemberInfo>>,
) -> (Option<ClusterFacts>, Vec<String>) {
    let mut problems = Vec::new();
    let answered: Vec<(&str, &EtcdFacts)> = reports
        .iter()
        .filter_map(|r| r.etcd.ok().map(|e| (r.name.as_str(), e)))
        .collect();
    if answered.is_empty() {
        return (None, problems);
    }
    let cluster_ids: BTreeMap<&str, Vec<&str>> =
        answered.iter().fold(BTreeMap::new(), |mut m, (n, e)| {
            m.entry(e.cluster_id.as_str())
                .or_insert_with(Vec::new)
                .push(n);
            m
        });
    let cluster_id = if cluster_ids.len() == 1 {
        cluster_ids.keys().next().map(|k| k.to_string())
    } else {
        let parts: Vec<String> = cluster_ids
            .iter()
            .map(|(id, ns)| format!("{id} on {}", ns.join(", ")))
            .collect();
        problems.push(format!(
            "the members disagree on the cluster ID ({}): these nodes run different etcd clusters",
            parts.join("; ")
        ));
        None
    };
    let leaders: BTreeSet<&str> = answered.iter().map(|(_, e)| e.leader.as_str()).collect();
    let by_id: BTreeMap<&str, &str> = answered
        .iter()
        .map(|(n, e)| (e.member_id.as_str(), *n))
        .collect();
    let leader = match leaders.iter().collect::<Vec<_>>().as_slice() {
        [only] if **only != "0" => Some(
            by_id
                .get(*only)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("member {only}")),
        ),
        [_] => {
            problems.push("etcd has no leader".into());
            None
        }
        _ => {
            problems.push(format!(
                "the members disagree on the leader ({})",
                leaders.iter().copied().collect::<Vec<_>>().join(", ")
            ));
            None
        }
    };
    let members = members.unwrap_or_default();
    if !members.is_empty() {
        let inventory: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        for m in &members {
            if m.name.is_empty() {
                problems.push(format!(
                    "etcd member {} has not started (no name yet)",
                    m.id
                ));
            } else if !inventory.contains(m.name.as_str()) {
                problems.push(format!(
                    "etcd member `{}` ({}) is not in the inventory; every member must be restored together",
                    m.name, m.id
                ));
            }
        }
        let listed: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        for n in nodes {
            if !listed.contains(n.name.as_str()) {
                problems.push(format!(
                    "inventory node `{}` is not a member of the etcd cluster",
                    n.name
                ));
            }
        }
    }
    (
        Some(ClusterFacts {
            cluster_id,
            leader,
            members,
        }),
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name_unquotes() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            pretty_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            pretty_name("PRETTY_NAME=Alpine\n").as_deref(),
            Some("Alpine")
        );
        assert_eq!(
            pretty_name("PRETTY_NAME='a \"b\"'\n").as_deref(),
            Some("a \"b\"")
        );
        assert_eq!(pretty_name("NAME=x\n"), None);
    }

    fn facts(member: &str, cluster: &str, leader: &str) -> EtcdFacts {
        EtcdFacts {
            endpoint: String::new(),
            member_id: member.into(),
            cluster_id: cluster.into(),
            leader: leader.into(),
            is_leader: member == leader,
            revision: 1,
            raft_term: 2,
            version: "3.5.1".into(),
        }
    }

    fn report(name: &str, etcd: Check<EtcdFacts>) -> NodeReport {
        let target = SshTarget {
            node: name.into(),
            endpoint: crate::inventory::Endpoint {
                host: "h".into(),
                port: 22,
                user: "root".into(),
                identity_files: vec![],
                identities_explicit: false,
                identities_only: false,
                known_hosts: vec![],
                global_known_hosts: vec![],
                host_key_alias: None,
                certificate_files: vec![],
                proxy_command: None,
            },
            jumps: vec![],
            sudo: Default::default(),
            sudo_password: Default::default(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            keepalive_interval: None,
            keepalive_max: 1,
        };
        let mut r = NodeReport::new(&target);
        r.etcd = etcd;
        r
    }

    fn inv_node(name: &str) -> Node {
        Node {
            name: name.into(),
            host: name.into(),
            ssh: Default::default(),
            etcd: Default::default(),
            commands: Default::default(),
            line: 1,
        }
    }

    fn member(id: &str, name: &str) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            name: name.into(),
            peer_urls: vec![],
            client_urls: vec![],
        }
    }

    #[test]
    fn members_must_agree_and_match_the_inventory() {
        let nodes = [inv_node("cp-1"), inv_node("cp-2"), inv_node("cp-3")];
        let reports = [
            report("cp-1", Check::Ok(facts("a1", "c", "a1"))),
            report("cp-2", Check::Ok(facts("b2", "c", "a1"))),
            report("cp-3", Check::failed("cp-3: down", None)),
        ];
        let members = vec![
            member("a1", "cp-1"),
            member("b2", "cp-2"),
            member("c3", "cp-3"),
        ];
        let (facts_, problems) = compare_members(&nodes, &reports, Some(members));
        let f = facts_.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(f.cluster_id.as_deref(), Some("c"));
        assert_eq!(f.leader.as_deref(), Some("cp-1"));

        let reports = [
            report("cp-1", Check::Ok(facts("a1", "c", "a1"))),
            report("cp-2", Check::Ok(facts("b2", "d", "b2"))),
        ];
        let members = vec![member("a1", "cp-1"), member("e5", "cp-9"), member("f6", "")];
        let (_, problems) = compare_members(&nodes, &reports, Some(members));
        assert_eq!(
            problems,
            [
                "the members disagree on the cluster ID (c on cp-1; d on cp-2): these nodes run different etcd clusters",
                "the members disagree on the leader (a1, b2)",
                "etcd member `cp-9` (e5) is not in the inventory; every member must be restored together",
                "etcd member f6 has not started (no name yet)",
                "inventory node `cp-2` is not a member of the etcd cluster",
                "inventory node `cp-3` is not a member of the etcd cluster",
            ]
        );
    }

    #[test]
    fn json_shape_of_a_check() {
        let ok: Check<DataDirFacts> = Check::Ok(DataDirFacts {
            path: "/var/lib/etcd".into(),
            free_bytes: 5,
        });
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"status": "ok", "path": "/var/lib/etcd", "free_bytes": 5})
        );
        let failed: Check<Passed> = Check::failed("cp-1: x", Some("do y"));
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({"status": "failed", "error": "cp-1: x", "hint": "do y"})
        );
        assert_eq!(
            serde_json::to_value(Check::<Passed>::skipped("not connected")).unwrap(),
            serde_json::json!({"status": "skipped", "reason": "not connected"})
        );
    }
}
