//! Facts: what every node looks like, read from the live node and never assumed. The one
//! gatherer behind `plan`, `apply` (drift detection) and `check`.
//!
//! Per node, in two round trips (three with TLS): the kubelet's `staticPodPath`, every file in
//! it (with its SHA-256), the restore tool and its version, the lock of an earlier run; then the
//! etcd member from its [`Source`] (today a kubeadm static pod, see [`static_pod`]): its flags,
//! the host directory that backs `--data-dir`, how to reach its client port; then free space
//! and ownership around the data directory; at last etcd's own view of its health. Nothing is
//! written. Problems never abort: they become findings on the node concerned, each with the
//! [`Topic`] it is about.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::etcd::client::{self, EtcdEndpoint};
use crate::finding::Severity;
use crate::inventory::{self, Inventory, ManifestsDir};
use crate::manifest::StaticPod;
use crate::remote::Remote;

mod gather;
mod model;
pub mod source;
pub mod static_pod;

pub use model::{
    sha256_hex, ClientAccess, DataDir, EtcdMember, EtcdPod, NodeFacts, PodFile, StaticPods, Topic,
};
pub use source::Source;

/// The hint on findings that stop discovery of a node.
const FIX_AND_PLAN_AGAIN: &str = "fix the node or the inventory, then plan again";

/// Discovers every inventory node in parallel. Never fails as a whole: problems become
/// findings on the node concerned.
pub async fn discover(
    inventory: &Inventory,
    remotes: &BTreeMap<String, Arc<dyn Remote>>,
) -> Vec<NodeFacts> {
    let jobs = inventory
        .nodes
        .iter()
        .map(|n| node(n, remotes.get(&n.name).map(|r| r.as_ref())));
    futures::future::join_all(jobs).await
}

/// Discovers one node (read-only).
pub async fn node(n: &inventory::Node, remote: Option<&dyn Remote>) -> NodeFacts {
    let mut f = NodeFacts::new(n);
    let Some(r) = remote else {
        f.note(Topic::Connection, Severity::Error, "no connection", None);
        return f;
    };
    if let Err(e) = static_pods_and_tool(&mut f, n, r).await {
        f.note(
            Topic::Manifests,
            Severity::Error,
            format!("{e:#}"),
            Some(FIX_AND_PLAN_AGAIN),
        );
        return f;
    }
    if let Err(e) = Source::of(n).read(&mut f, r).await {
        f.note(
            Topic::Etcd,
            Severity::Error,
            format!("{e:#}"),
            Some(FIX_AND_PLAN_AGAIN),
        );
    }
    if let Err(e) = measure_data_dir(&mut f, r).await {
        f.note(
            Topic::DataDir,
            Severity::Error,
            format!("{e:#}"),
            Some(FIX_AND_PLAN_AGAIN),
        );
    }
    tool_findings(&mut f);
    f
}

/// Round trip 1 (twice when the manifests directory is `auto`): the kubelet's config, the
/// manifests, the lock and the restore tool.
async fn static_pods_and_tool(
    f: &mut NodeFacts,
    n: &inventory::Node,
    r: &dyn Remote,
) -> anyhow::Result<()> {
    let wanted_dir = match &n.etcd.manifests_dir {
        ManifestsDir::Path(p) => p.clone(),
        ManifestsDir::Auto => String::new(),
    };
    let tool = match &n.etcd.restore_tool {
        inventory::RestoreTool::Path(p) => p.clone(),
        inventory::RestoreTool::Auto => String::new(),
    };
    let lock = f.layout.lock();
    let g = gather::gather(r, &n.etcd.kubelet_config, &wanted_dir, &lock, &tool).await?;
    let kubelet_dir = g
        .kubelet_config
        .as_ref()
        .and_then(|b| crate::manifest::kubelet_static_pod_path(&String::from_utf8_lossy(b)));
    f.static_pods.dir = match (&n.etcd.manifests_dir, &kubelet_dir) {
        (ManifestsDir::Path(p), Some(k)) if p.trim_end_matches('/') != k.trim_end_matches('/') => {
            f.note(
                Topic::Manifests,
                Severity::Error,
                format!(
                    "the inventory says the manifests directory is {p}, but the kubelet ({}) watches {k}",
                    n.etcd.kubelet_config
                ),
                Some("set etcd.manifests_dir to the kubelet's staticPodPath, or to `auto`"),
            );
            p.clone()
        }
        (ManifestsDir::Path(p), _) => p.clone(),
        (ManifestsDir::Auto, Some(k)) => k.clone(),
        (ManifestsDir::Auto, None) => {
            anyhow::bail!(
                "manifests_dir is `auto` but {} has no staticPodPath",
                n.etcd.kubelet_config
            );
        }
    };
    let g = if wanted_dir.is_empty() {
        gather::gather(r, &n.etcd.kubelet_config, &f.static_pods.dir, &lock, &tool).await?
    } else {
        g
    };
    if !g.dir_exists {
        anyhow::bail!(
            "the manifests directory {} does not exist",
            f.static_pods.dir
        );
    }
    f.lock_owner = g
        .lock
        .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    match g.tool {
        Ok(t) => f.tool = Some(t),
        Err(e) => f.note(
            Topic::RestoreTool,
            Severity::Error,
            format!("{}: {e}", r.node()),
            Some("install etcdutl (etcd 3.5+) or etcdctl (3.4) matching the server version, or set etcd.restore_tool"),
        ),
    }
    for (file, bytes) in g.files {
        // The text must round-trip byte for byte: rollback writes it back.
        let (text, pod) = match String::from_utf8(bytes.clone()) {
            Ok(t) => (t, StaticPod::parse(&bytes).map_err(|e| e.to_string())),
            Err(_) => (String::new(), Err("not UTF-8 text".to_string())),
        };
        f.static_pods.files.insert(
            file.clone(),
            PodFile {
                file,
                sha256: sha256_hex(&bytes),
                text,
                pod,
            },
        );
    }
    static_pod::check_pod_files(f);
    Ok(())
}

/// Round trip 2: device numbers, free space and the owner around the data directory.
async fn measure_data_dir(f: &mut NodeFacts, r: &dyn Remote) -> anyhow::Result<()> {
    let Some(data) = &f.data else {
        return Ok(());
    };
    let vol = data.volume.clone();
    let dir = data.dir.clone();
    let d = gather::data_facts(r, &vol, &gather::parent_dir(&vol), &dir).await?;
    let is_mount = d.dev_vol != d.dev_parent;
    if d.owner.is_none() {
        f.note(
            Topic::DataDir,
            Severity::Warning,
            format!("the data directory {dir} does not exist"),
            None,
        );
    }
    if let Some(data) = &mut f.data {
        data.is_mount = is_mount;
        data.free_bytes = Some(if is_mount { d.free_vol } else { d.free_parent });
        data.owner = d.owner;
    }
    Ok(())
}

/// Whether the restore tool can restore this member's snapshot, and how.
fn tool_findings(f: &mut NodeFacts) {
    let (Some(tool), Some(m)) = (&f.tool, &f.etcd) else {
        return;
    };
    let mut found = Vec::new();
    if !tool.supports_restore() {
        found.push((
            Severity::Error,
            format!(
                "{} {} at {} has no `snapshot restore`",
                tool.kind, tool.version, tool.path
            ),
            Some("use etcdutl from the same etcd minor version as the server"),
        ));
    }
    match &m.version {
        Some(server) if !tool.matches_server(server) => found.push((
            Severity::Error,
            format!("restore tool {} {} does not match the etcd server {server} (major.minor must be equal)", tool.kind, tool.version),
            Some("install etcdutl/etcdctl of the server's minor version and point etcd.restore_tool at it"),
        )),
        Some(_) => {}
        None => found.push((Severity::Warning, "cannot tell the etcd server version from the image tag; the restore tool's version is assumed to match".into(), None)),
    }
    if !tool.supports_bump() {
        found.push((
            Severity::Warning,
            format!("{} {} cannot bump the revision (needs etcdctl >= 3.4.27, >= 3.5.10, or etcdutl 3.6+)", tool.kind, tool.version),
            Some("revisions restart at the snapshot's, so watchers and informers may miss changes: controller-manager, scheduler and every kubelet are restarted after the restore; upgrade the restore tool to avoid this"),
        ));
    }
    for (severity, message, hint) in found {
        f.note(Topic::RestoreTool, severity, message, hint);
    }
}

/// Reads the client TLS material for a node and builds its etcd endpoint.
pub async fn etcd_endpoint(
    facts: &NodeFacts,
    remote: Arc<dyn Remote>,
) -> Result<EtcdEndpoint, String> {
    let access = facts
        .client
        .as_ref()
        .ok_or_else(|| format!("{}: no usable etcd client URL in the manifest", facts.name))?;
    client::endpoint(
        &facts.name,
        remote,
        &access.host,
        access.port,
        access.https,
        access.tls_paths.as_ref(),
    )
    .await
}

/// Asks every member for its status and member list (read-only), filling `health` and
/// `members`. `timeout` bounds connecting and each answer.
pub async fn probe_health(
    facts: &mut [NodeFacts],
    remotes: &BTreeMap<String, Arc<dyn Remote>>,
    timeout: Duration,
) {
    let jobs = facts.iter_mut().map(|f| {
        let remote = remotes.get(&f.name).cloned();
        async move {
            match remote {
                Some(r) => probe_member(f, r, timeout).await,
                None => f.health = Err("no connection".into()),
            }
        }
    });
    futures::future::join_all(jobs).await;
}

/// Asks one member for its status and member list (read-only).
pub async fn probe_member(f: &mut NodeFacts, remote: Arc<dyn Remote>, timeout: Duration) {
    let answer = async {
        let ep = etcd_endpoint(f, remote).await?;
        let (mut c, _tunnel) = client::connect(&ep, timeout).await?;
        let status = tokio::time::timeout(timeout, client::member_status(&mut c, &f.name))
            .await
            .map_err(|_| format!("{}: etcd status did not answer within {timeout:?}", f.name))??;
        let members = tokio::time::timeout(timeout, client::members(&mut c, &f.name))
            .await
            .ok()
            .and_then(Result::ok);
        Ok::<_, String>((status, members))
    };
    match answer.await {
        Ok((status, members)) => {
            f.health = Ok(status);
            f.members = members;
        }
        Err(e) => f.health = Err(e),
    }
}
