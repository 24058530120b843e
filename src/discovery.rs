//! Discovery: read-only fact gathering on every node in parallel.
//!
//! Everything the plan needs is read from the live node, never assumed: the kubelet's
//! `staticPodPath`, every file in it (with its SHA-256), etcd's flags and the hostPath that backs
//! `--data-dir`, the restore tool and its version, free space, locks and leftovers of earlier
//! runs, and etcd's own view of its health. Nothing is written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::etcd::client::{self, EtcdEndpoint, MemberStatus};
use crate::etcd::version::{EtcdVersion, RestoreTool, RestoreToolKind};
use crate::finding::{Finding, Severity};
use crate::inventory::{self, Inventory, ManifestsDir};
use crate::layout::RunLayout;
use crate::manifest::{EtcdManifest, StaticPod};
use crate::probe::{Endpoint, HttpProbe};
use crate::remote::{Cmd, Remote};

/// Pods the restore stops and starts, and the file names kubeadm gives them.
pub const CONTROL_PLANE_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

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

/// What one node looks like.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Node name from the inventory.
    pub name: String,
    /// SSH address.
    pub host: String,
    /// The kubelet's static-pod directory.
    pub manifests_dir: String,
    /// Non-dot files in it, by name.
    pub files: BTreeMap<String, PodFile>,
    /// etcd's manifest, parsed.
    pub etcd: Option<EtcdManifest>,
    /// File name of etcd's manifest.
    pub etcd_file: Option<String>,
    /// The restore tool.
    pub tool: Option<RestoreTool>,
    /// Base of node-side run state (from the inventory).
    pub run_base: String,
    /// Lock file path.
    pub lock_path: String,
    /// Contents of a lock left by another run.
    pub lock_owner: Option<String>,
    /// Host path of the volume that backs `--data-dir`.
    pub data_volume_host_path: Option<String>,
    /// `--data-dir` on the host (old).
    pub data_dir_host: Option<String>,
    /// True when the data volume's host path is a mount point (the new directory then goes
    /// inside it, so it stays on the same filesystem).
    pub data_volume_is_mount: bool,
    /// Free bytes where the new data directory goes.
    pub free_bytes: Option<u64>,
    /// Owner of the old data directory, `uid:gid`.
    pub data_owner: Option<String>,
    /// How to reach etcd.
    pub client: Option<ClientAccess>,
    /// etcd's own status before anything changes.
    pub health: Result<MemberStatus, String>,
    /// Commands from the inventory.
    pub commands: inventory::Commands,
    /// Problems and notes.
    pub findings: Vec<Finding>,
}

impl NodeFacts {
    fn finding(&mut self, severity: Severity, message: impl Into<String>, hint: Option<&str>) {
        self.findings.push(Finding {
            severity,
            node: Some(self.name.clone()),
            message: message.into(),
            hint: hint.map(String::from),
        });
    }

    /// The file that defines pod `name`.
    pub fn pod_file(&self, name: &str) -> Option<&PodFile> {
        self.files
            .values()
            .find(|f| f.pod.as_ref().is_ok_and(|p| p.name == name))
    }

    /// File name -> SHA-256, for fingerprints.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(k, v)| (k.clone(), v.sha256.clone()))
            .collect()
    }
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Discovers every inventory node in parallel. Never fails as a whole: problems become
/// findings on the node concerned.
pub async fn discover(
    inventory: &Inventory,
    remotes: &BTreeMap<String, Arc<dyn Remote>>,
) -> Vec<NodeFacts> {
    let jobs = inventory.nodes.iter().map(|n| {
        let remote = remotes.get(&n.name).cloned();
        async move {
            let mut facts = NodeFacts {
                name: n.name.clone(),
                host: n.host.clone(),
                manifests_dir: String::new(),
                files: BTreeMap::new(),
                etcd: None,
                etcd_file: None,
                tool: None,
                run_base: n.etcd.run_dir.clone(),
                lock_path: RunLayout::new(&n.etcd.run_dir, &n.name).lock(),
                lock_owner: None,
                data_volume_host_path: None,
                data_dir_host: None,
                data_volume_is_mount: false,
                free_bytes: None,
                data_owner: None,
                client: None,
                health: Err("not checked".into()),
                commands: n.commands.clone(),
                findings: Vec::new(),
            };
            match remote {
                Some(r) => {
                    if let Err(e) = discover_node(&mut facts, n, r.as_ref()).await {
                        let msg = format!("{e:#}");
                        facts.finding(
                            Severity::Error,
                            msg,
                            Some("fix the node or the inventory, then plan again"),
                        );
                    }
                }
                None => facts.finding(Severity::Error, "no connection", None),
            }
            facts
        }
    });
    futures::future::join_all(jobs).await
}

async fn discover_node(
    f: &mut NodeFacts,
    n: &inventory::Node,
    r: &dyn Remote,
) -> anyhow::Result<()> {
    // Round trip 1: kubelet config, manifests, lock, restore tool (read-only).
    let wanted_dir = match &n.etcd.manifests_dir {
        ManifestsDir::Path(p) => p.clone(),
        ManifestsDir::Auto => String::new(),
    };
    let tool = match &n.etcd.restore_tool {
        inventory::RestoreTool::Path(p) => p.clone(),
        inventory::RestoreTool::Auto => String::new(),
    };
    let g = gather(r, &n.etcd.kubelet_config, &wanted_dir, &f.lock_path, &tool).await?;
    let kubelet_dir = g
        .kubelet_config
        .as_ref()
        .and_then(|b| crate::manifest::kubelet_static_pod_path(&String::from_utf8_lossy(b)));
    f.manifests_dir = match (&n.etcd.manifests_dir, &kubelet_dir) {
        (ManifestsDir::Path(p), Some(k)) if p.trim_end_matches('/') != k.trim_end_matches('/') => {
            f.finding(
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
        gather(
            r,
            &n.etcd.kubelet_config,
            &f.manifests_dir,
            &f.lock_path,
            &tool,
        )
        .await?
    } else {
        g
    };
    let dir = f.manifests_dir.clone();
    if !g.dir_exists {
        anyhow::bail!("the manifests directory {dir} does not exist");
    }
    f.lock_owner = g
        .lock
        .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    match g.tool {
        Ok(t) => f.tool = Some(t),
        Err(e) => f.finding(
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
        f.files.insert(
            file.clone(),
            PodFile {
                file,
                sha256: sha256_hex(&bytes),
                text,
                pod,
            },
        );
    }
    check_pod_files(f);

    // etcd's manifest.
    let etcd_file = f.pod_file("etcd").map(|p| p.file.clone());
    let Some(etcd_file) = etcd_file else {
        f.finding(
            Severity::Error,
            format!("no etcd static pod in {dir}"),
            Some("this tool restores stacked etcd run by the kubelet; check manifests_dir"),
        );
        return Ok(());
    };
    if etcd_file != "etcd.yaml" {
        f.finding(
            Severity::Warning,
            format!("etcd's manifest is {dir}/{etcd_file}, not etcd.yaml"),
            None,
        );
    }
    let etcd = match EtcdManifest::parse(f.files[&etcd_file].text.as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            f.finding(
                Severity::Error,
                format!("{dir}/{etcd_file}: {e}"),
                Some(&e.hint()),
            );
            return Ok(());
        }
    };
    f.etcd_file = Some(etcd_file.clone());
    for note in &etcd.notes {
        f.finding(Severity::Info, format!("{etcd_file}: {note}"), None);
    }
    if etcd.name() != Some(n.name.as_str()) {
        f.finding(
            Severity::Error,
            format!(
                "the inventory calls this node {}, but {dir}/{etcd_file} says --name={}",
                n.name,
                etcd.name().unwrap_or("(unset)")
            ),
            Some("node names in the inventory are the etcd member names; fix the inventory"),
        );
    }
    match etcd.data_volume() {
        Ok(dv) => {
            f.data_volume_host_path = Some(dv.mapping.volume_host_path.clone());
            f.data_dir_host = Some(dv.host_data_dir().to_string());
            let vol = dv.mapping.volume_host_path.clone();
            let parent = parent_dir(&vol);
            let d = data_facts(r, &vol, &parent, dv.host_data_dir()).await?;
            f.data_volume_is_mount = d.dev_vol != d.dev_parent;
            f.free_bytes = Some(if f.data_volume_is_mount {
                d.free_vol
            } else {
                d.free_parent
            });
            match d.owner {
                Some(o) => f.data_owner = Some(o),
                None => f.finding(
                    Severity::Warning,
                    format!("the data directory {} does not exist", dv.host_data_dir()),
                    None,
                ),
            }
        }
        Err(e) => f.finding(
            Severity::Error,
            format!("{dir}/{etcd_file}: {e}"),
            Some(&e.hint()),
        ),
    }
    if let Some(wal) = etcd.wal_dir() {
        f.finding(
            Severity::Error,
            format!(
                "etcd uses --wal-dir={wal}; restoring a separate WAL directory is not supported"
            ),
            Some(
                "restore this member by hand, or move the WAL back under the data directory first",
            ),
        );
    }
    f.client = client_access(&etcd);
    if let Some(c) = &mut f.client {
        if let Some((_, cert, key)) = &c.tls_paths {
            // kubeadm's healthcheck client certificate; else the server certificate, which
            // kubeadm also issues for client authentication.
            let both = r
                .exec(&Cmd::script(
                    r#"[ -f "$1" ] && [ -f "$2" ]"#,
                    [cert.as_str(), key.as_str()],
                ))
                .await?
                .status
                .success();
            if !both {
                let host = |flag: Option<&str>| {
                    flag.and_then(|p| etcd.host_path(p).ok())
                        .map(|h| h.host_path)
                };
                match (host(etcd.cert_file()), host(etcd.key_file())) {
                    (Some(c2), Some(k2)) => {
                        if let Some(t) = &mut c.tls_paths {
                            t.1 = c2;
                            t.2 = k2;
                        }
                    }
                    _ => c.tls_paths = None,
                }
            }
        }
    }
    f.etcd = Some(etcd);

    Ok(())
}

/// Problems with the set of files the kubelet runs.
fn check_pod_files(f: &mut NodeFacts) {
    let dir = f.manifests_dir.clone();
    let mut by_pod: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for pf in f.files.values() {
        match &pf.pod {
            Ok(p) => by_pod.entry(p.name.clone()).or_default().push(pf.file.clone()),
            Err(e) => problems.push((
                Severity::Error,
                format!("unexpected file {dir}/{}: the kubelet would try to run it, but it is not a valid static pod: {e}", pf.file),
                "move it out of the manifests directory (the kubelet runs every non-dot file there), then plan again",
            )),
        }
    }
    for (pod, files) in &by_pod {
        if files.len() > 1 {
            problems.push((
                Severity::Error,
                format!(
                    "unexpected files in {dir}: {} all define pod {pod}; the kubelet runs only one of them",
                    files.join(", ")
                ),
                "keep one manifest per pod; move copies and backups out of the manifests directory",
            ));
        }
    }
    for (pod, files) in &by_pod {
        if !CONTROL_PLANE_PODS.contains(&pod.as_str()) {
            problems.push((
                Severity::Info,
                format!(
                    "{dir}/{} defines pod {pod}, which the restore leaves running",
                    files[0]
                ),
                "",
            ));
        }
    }
    for (sev, msg, hint) in problems {
        let hint = (!hint.is_empty()).then_some(hint);
        f.finding(sev, msg, hint);
    }
}

fn parent_dir(p: &str) -> String {
    match p.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}

/// Picks etcd's client endpoint as reachable from the node: a loopback listener when there is
/// one, else the first advertised client URL.
fn client_access(m: &EtcdManifest) -> Option<ClientAccess> {
    let mut urls: Vec<String> = Vec::new();
    for list in [m.listen_client_urls(), m.advertise_client_urls()]
        .into_iter()
        .flatten()
    {
        urls.extend(
            list.split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
        );
    }
    let parsed: Vec<(bool, String, u16)> = urls.iter().filter_map(|u| split_url(u)).collect();
    let pick = parsed
        .iter()
        .find(|(_, h, _)| h == "127.0.0.1" || h == "localhost" || h == "::1")
        .or_else(|| parsed.iter().find(|(_, h, _)| h != "0.0.0.0" && h != "::"))?
        .clone();
    let (https, host, port) = pick;
    let tls_paths = if https {
        let ca = m
            .trusted_ca_file()
            .and_then(|c| m.host_path(c).ok())
            .map(|h| h.host_path);
        ca.map(|ca| {
            let dir = parent_dir(&ca);
            (
                ca,
                format!("{dir}/healthcheck-client.crt"),
                format!("{dir}/healthcheck-client.key"),
            )
        })
    } else {
        None
    };
    Some(ClientAccess {
        host,
        port,
        https,
        tls_paths,
    })
}

/// `https://10.0.0.1:2379` -> (true, "10.0.0.1", 2379).
pub fn split_url(u: &str) -> Option<(bool, String, u16)> {
    let (scheme, rest) = u.split_once("://")?;
    let https = match scheme {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let hostport = rest.split('/').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some((https, host, port.parse().ok()?))
}

/// The endpoints a static pod listens on, as far as its manifest tells.
pub fn pod_endpoints(pod: &str, facts: &NodeFacts) -> Vec<Endpoint> {
    let mut eps = Vec::new();
    if pod == "etcd" {
        if let Some(m) = &facts.etcd {
            for list in [m.listen_client_urls(), m.flag("listen-peer-urls")]
                .into_iter()
                .flatten()
            {
                for u in list.split(',') {
                    if let Some((_, host, port)) = split_url(u.trim()) {
                        eps.push(Endpoint { host, port });
                    }
                }
            }
        }
    } else if let Some(p) = facts.pod_file(pod).and_then(|f| f.pod.as_ref().ok()) {
        if let Some(probe) = probe_of(p, &facts.host) {
            eps.push(Endpoint {
                host: probe.host,
                port: probe.port,
            });
        }
    }
    eps.sort();
    eps.dedup();
    eps
}

/// The pod's readiness probe as an HTTP probe, when it is one.
pub fn probe_of(pod: &StaticPod, node_address: &str) -> Option<HttpProbe> {
    let r = pod.readiness()?;
    match &r.action {
        crate::manifest::ProbeAction::HttpGet {
            host,
            port,
            scheme,
            path,
        } => Some(HttpProbe {
            scheme: match scheme {
                crate::manifest::HttpScheme::Http => "http".into(),
                crate::manifest::HttpScheme::Https => "https".into(),
            },
            host: host.clone().unwrap_or_else(|| {
                pod.flag("advertise-address")
                    .unwrap_or(node_address)
                    .to_string()
            }),
            port: *port,
            path: if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            },
        }),
        _ => None,
    }
}

/// What the first discovery round trip brings back.
struct Gathered {
    kubelet_config: Option<Vec<u8>>,
    lock: Option<Vec<u8>>,
    dir_exists: bool,
    files: Vec<(String, Vec<u8>)>,
    tool: Result<RestoreTool, String>,
}

/// Reads the kubelet config, every non-dot file of the manifests directory, the lock, and the
/// restore tool's path and version, in one round trip. Contents travel base64-encoded.
async fn gather(
    r: &dyn Remote,
    kubelet_config: &str,
    dir: &str,
    lock: &str,
    tool: &str,
) -> anyhow::Result<Gathered> {
    const SCRIPT: &str = r#"b64() { base64 -w0 -- "$1" 2>/dev/null || printf -; echo; }
printf 'K '; if [ -f "$1" ]; then b64 "$1"; else echo -; fi
printf 'L '; if [ -f "$3" ]; then b64 "$3"; else echo -; fi
if [ -n "$2" ] && [ -d "$2" ]; then
  echo 'D ok'
  for f in "$2"/*; do
    n=${f##*/}
    case "$n" in .*) continue;; esac
    [ -f "$f" ] || continue
    printf 'F %s ' "$(printf %s "$n" | base64 -w0)"; b64 "$f"
  done
else
  echo 'D missing'
fi
t=$4
if [ -z "$t" ]; then t=$(command -v etcdutl || command -v etcdctl || true); fi
if [ -z "$t" ]; then echo 'T -'; exit 0; fi
printf 'T %s
' "$(printf %s "$t" | base64 -w0)"
out=$(ETCDCTL_API=3 timeout 20 "$t" version 2>&1); rc=$?
printf 'V %s %s
' "$rc" "$(printf %s "$out" | base64 -w0)"
"#;
    let out = r
        .run(
            &Cmd::script(SCRIPT, [kubelet_config, dir, lock, tool])
                .timeout(Duration::from_secs(60)),
        )
        .await?;
    let text = out.stdout_text();
    let decode = |v: &str| -> Option<Vec<u8>> {
        if v == "-" {
            None
        } else {
            data_encoding::BASE64.decode(v.trim().as_bytes()).ok()
        }
    };
    let mut g = Gathered {
        kubelet_config: None,
        lock: None,
        dir_exists: false,
        files: Vec::new(),
        tool: Err("neither etcdutl nor etcdctl is on the PATH".into()),
    };
    let mut tool_path = None;
    for line in text.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "K" => g.kubelet_config = decode(rest),
            "L" => g.lock = decode(rest),
            "D" => g.dir_exists = rest == "ok",
            "F" => {
                let (name, content) = rest.split_once(' ').unwrap_or((rest, "-"));
                let name = decode(name).map(|n| String::from_utf8_lossy(&n).into_owned());
                if let (Some(name), Some(content)) = (name, decode(content).or(Some(Vec::new()))) {
                    g.files.push((name, content));
                }
            }
            "T" => tool_path = decode(rest).map(|p| String::from_utf8_lossy(&p).into_owned()),
            "V" => {
                let (rc, b) = rest.split_once(' ').unwrap_or((rest, "-"));
                let output = decode(b)
                    .map(|o| String::from_utf8_lossy(&o).into_owned())
                    .unwrap_or_default();
                let path = tool_path.clone().unwrap_or_default();
                g.tool = if rc != "0" {
                    Err(format!(
                        "`{path} version` failed (exit {rc}): {}",
                        output.trim()
                    ))
                } else {
                    match EtcdVersion::from_tool_output(&output) {
                        Ok((name, version)) => Ok(RestoreTool {
                            kind: if name == "etcdutl" {
                                RestoreToolKind::Etcdutl
                            } else {
                                RestoreToolKind::Etcdctl
                            },
                            path,
                            version,
                        }),
                        Err(e) => Err(format!("`{path} version`: {e}")),
                    }
                };
            }
            _ => {}
        }
    }
    g.files.sort();
    Ok(g)
}

/// Filesystem facts around the data directory.
struct DataFacts {
    dev_vol: String,
    dev_parent: String,
    free_vol: u64,
    free_parent: u64,
    owner: Option<String>,
}

/// Device numbers, free space and the data directory's owner, in one round trip.
async fn data_facts(
    r: &dyn Remote,
    vol: &str,
    parent: &str,
    data_dir: &str,
) -> anyhow::Result<DataFacts> {
    const SCRIPT: &str = r#"near() { p=$1; while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done; printf %s "$p"; }
v=$(near "$1"); p=$(near "$2")
echo "DV $(stat -c %d -- "$v")"
echo "DP $(stat -c %d -- "$p")"
echo "FV $(df -P -B1 -- "$v" | tail -n 1 | awk '{print $4}')"
echo "FP $(df -P -B1 -- "$p" | tail -n 1 | awk '{print $4}')"
if [ -e "$3" ]; then echo "O $(stat -c %u:%g -- "$3")"; else echo "O -"; fi
"#;
    let out = r.run(&Cmd::script(SCRIPT, [vol, parent, data_dir])).await?;
    let text = out.stdout_text();
    let get = |tag: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(tag).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    Ok(DataFacts {
        dev_vol: get("DV "),
        dev_parent: get("DP "),
        free_vol: get("FV ").parse().unwrap_or(0),
        free_parent: get("FP ").parse().unwrap_or(0),
        owner: Some(get("O ")).filter(|o| o != "-" && !o.is_empty()),
    })
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

/// Asks every member for its status (read-only), filling `facts.health`.
pub async fn probe_health(facts: &mut [NodeFacts], remotes: &BTreeMap<String, Arc<dyn Remote>>) {
    let jobs = facts.iter().map(|f| {
        let remote = remotes.get(&f.name).cloned();
        async move {
            let remote = remote.ok_or_else(|| "no connection".to_string())?;
            let ep = etcd_endpoint(f, remote).await?;
            let (mut client, _fwd) = client::connect(&ep, Duration::from_secs(3)).await?;
            client::member_status(&mut client, &f.name).await
        }
    });
    let results = futures::future::join_all(jobs).await;
    for (f, r) in facts.iter_mut().zip(results) {
        f.health = r;
    }
}
