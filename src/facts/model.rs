//! The facts themselves: what one node looks like ([`NodeFacts`]) and its parts, whatever
//! gathered them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::etcd::client::{Member, MemberStatus};
use crate::etcd::version::{EtcdVersion, RestoreTool};
use crate::finding::{Finding, Severity};
use crate::inventory;
use crate::layout::RunLayout;
use crate::manifest::{EtcdManifest, StaticPod};
use crate::probe::Endpoint;

/// One file in the manifests directory.
#[derive(Debug, Clone)]
pub struct PodFile {
    /// File name (no directory).
    pub file: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Its text (manifests hold paths and flags, no secrets).
    pub text: String,
    /// The pod it defines, or why it does not parse.
    pub pod: Result<StaticPod, String>,
}

/// The kubelet's static pods on a node.
#[derive(Debug, Clone, Default)]
pub struct StaticPods {
    /// The kubelet's static-pod directory (empty when it could not be found out).
    pub dir: String,
    /// Non-dot files in it, by name.
    pub files: BTreeMap<String, PodFile>,
}

impl StaticPods {
    /// The file that defines pod `name`.
    pub fn pod_file(&self, name: &str) -> Option<&PodFile> {
        self.files
            .values()
            .find(|f| f.pod.as_ref().is_ok_and(|p| p.name == name))
    }

    /// The parsed pod `name`.
    pub fn pod(&self, name: &str) -> Option<&StaticPod> {
        self.pod_file(name)?.pod.as_ref().ok()
    }

    /// The full path of file `file` in the directory.
    pub fn path(&self, file: &str) -> String {
        format!("{}/{file}", self.dir)
    }
}

/// The data directory on the host and the room around it.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Host path of the volume that backs `--data-dir` (the directory itself when no volume
    /// maps it).
    pub volume: String,
    /// `--data-dir` on the host (old; never changed).
    pub dir: String,
    /// True when the volume's host path is a mount point (the new directory then goes inside
    /// it, so it stays on the same filesystem).
    pub is_mount: bool,
    /// Free bytes where the new data directory goes.
    pub free_bytes: Option<u64>,
    /// Owner of the old data directory, `uid:gid`; `None` when it does not exist.
    pub owner: Option<String>,
}

/// etcd's client endpoint as reachable from the node, with TLS paths on the host.
#[derive(Debug, Clone)]
pub struct ClientAccess {
    /// Host as seen from the node.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `https` or `http`.
    pub https: bool,
    /// Host paths of CA, client certificate and key.
    pub tls_paths: Option<(String, String, String)>,
}

impl ClientAccess {
    /// `https://host:port` (brackets around IPv6 hosts).
    pub fn url(&self) -> String {
        let endpoint = Endpoint {
            host: self.host.clone(),
            port: self.port,
        };
        format!("{}://{endpoint}", if self.https { "https" } else { "http" })
    }
}

/// What a finding is about (the column `check` shows it in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Reaching the node.
    Connection,
    /// The kubelet's manifests directory and the pods in it.
    Manifests,
    /// The data directory and the room next to it.
    DataDir,
    /// The restore tool.
    RestoreTool,
    /// etcd itself: its definition, client access, health.
    Etcd,
}

/// What one node looks like.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Node name from the inventory.
    pub name: String,
    /// SSH address.
    pub host: String,
    /// Where runs keep their files on the node.
    pub layout: RunLayout,
    /// Commands from the inventory.
    pub commands: inventory::Commands,
    /// Contents of a lock left by another run.
    pub lock_owner: Option<String>,
    /// The kubelet's static pods.
    pub static_pods: StaticPods,
    /// The restore tool.
    pub tool: Option<RestoreTool>,
    /// The etcd member, as its source defines it.
    pub etcd: Option<EtcdMember>,
    /// The data directory.
    pub data: Option<DataDir>,
    /// How to reach etcd.
    pub client: Option<ClientAccess>,
    /// etcd's own status before anything changes.
    pub health: Result<MemberStatus, String>,
    /// The member list as this member sees it, when it answered.
    pub members: Option<Vec<Member>>,
    /// Problems and notes, with what they are about.
    notes: Vec<(Topic, Finding)>,
}

impl NodeFacts {
    /// Facts about inventory node `n` before anything is read from it.
    pub fn new(n: &inventory::Node) -> NodeFacts {
        NodeFacts {
            name: n.name.clone(),
            host: n.host.clone(),
            layout: RunLayout::new(&n.etcd.run_dir, &n.name),
            commands: n.commands.clone(),
            lock_owner: None,
            static_pods: StaticPods::default(),
            tool: None,
            etcd: None,
            data: None,
            client: None,
            health: Err("not checked".into()),
            members: None,
            notes: Vec::new(),
        }
    }

    /// Records a finding about this node.
    pub fn note(
        &mut self,
        topic: Topic,
        severity: Severity,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        let finding = Finding::new(severity, Some(&self.name), message, hint);
        self.notes.push((topic, finding));
    }

    /// Every finding about this node.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.notes.iter().map(|(_, f)| f)
    }

    /// The findings about `topic`.
    pub fn findings_about(&self, topic: Topic) -> impl Iterator<Item = &Finding> {
        self.notes
            .iter()
            .filter(move |(t, _)| *t == topic)
            .map(|(_, f)| f)
    }

    /// Replaces what discovery said about the connection with why the node is unreachable.
    pub fn unreachable(&mut self, why: Finding) {
        self.notes.retain(|(t, _)| *t != Topic::Connection);
        self.notes.push((Topic::Connection, why));
    }

    /// File name -> SHA-256 of every file in the manifests directory, for fingerprints.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        self.static_pods
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.sha256.clone()))
            .collect()
    }
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An etcd member as its definition says, whatever the source.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    /// `--name`.
    pub name: Option<String>,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: Option<String>,
    /// `--initial-cluster`.
    pub initial_cluster: Option<String>,
    /// The server version, when known.
    pub version: Option<EtcdVersion>,
    /// Where it listens (client and peer URLs), as reachable on the node.
    pub listeners: Vec<Endpoint>,
    /// The static pod that runs it ([`super::Source::StaticPod`]).
    pub static_pod: Option<EtcdPod>,
}

/// The static pod that runs an etcd member.
#[derive(Debug, Clone)]
pub struct EtcdPod {
    /// File name in the manifests directory.
    pub file: String,
    /// The manifest, parsed.
    pub manifest: EtcdManifest,
}
