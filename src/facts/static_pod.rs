//! The static-pod source: etcd run by the kubelet from a manifest in its `staticPodPath`, as
//! kubeadm sets it up. Reads the member from `etcd.yaml` (flags, the hostPath behind
//! `--data-dir`, the client URL and certificates), and tells what the other static pods listen
//! on and how the kubelet judges them ready.

use std::collections::BTreeMap;

use crate::finding::Severity;
use crate::manifest::{EtcdManifest, HttpScheme, ProbeAction, StaticPod};
use crate::probe::{Endpoint, HttpProbe};
use crate::remote::{Cmd, Remote};

use super::gather;
use super::model::{ClientAccess, DataDir, EtcdMember, EtcdPod, NodeFacts, Topic};

/// Pods the restore stops and starts, and the file names kubeadm gives them.
pub const CONTROL_PLANE_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Problems with the set of files the kubelet runs.
pub(super) fn check_pod_files(f: &mut NodeFacts) {
    let dir = f.static_pods.dir.clone();
    let mut by_pod: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for pf in f.static_pods.files.values() {
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
        f.note(Topic::Manifests, sev, msg, hint);
    }
}

/// Reads etcd's static pod: the member, the data directory's host paths, the client access.
pub(super) async fn read_etcd(f: &mut NodeFacts, r: &dyn Remote) -> anyhow::Result<()> {
    let dir = f.static_pods.dir.clone();
    let Some(pf) = f.static_pods.pod_file("etcd") else {
        f.note(
            Topic::Manifests,
            Severity::Error,
            format!("no etcd static pod in {dir}"),
            Some("this tool restores stacked etcd run by the kubelet; check manifests_dir"),
        );
        return Ok(());
    };
    let etcd_file = pf.file.clone();
    let parsed = EtcdManifest::parse(pf.text.as_bytes());
    if etcd_file != "etcd.yaml" {
        f.note(
            Topic::Manifests,
            Severity::Warning,
            format!("etcd's manifest is {dir}/{etcd_file}, not etcd.yaml"),
            None,
        );
    }
    let etcd = match parsed {
        Ok(m) => m,
        Err(e) => {
            f.note(
                Topic::Manifests,
                Severity::Error,
                format!("{dir}/{etcd_file}: {e}"),
                Some(&e.hint()),
            );
            return Ok(());
        }
    };
    for note in &etcd.notes {
        f.note(
            Topic::Manifests,
            Severity::Info,
            format!("{etcd_file}: {note}"),
            None,
        );
    }
    if etcd.name() != Some(f.name.as_str()) {
        let message = format!(
            "the inventory calls this node {}, but {dir}/{etcd_file} says --name={}",
            f.name,
            etcd.name().unwrap_or("(unset)")
        );
        f.note(
            Topic::Manifests,
            Severity::Error,
            message,
            Some("node names in the inventory are the etcd member names; fix the inventory"),
        );
    }
    match etcd.data_volume() {
        Ok(dv) => {
            f.data = Some(DataDir {
                volume: dv.mapping.volume_host_path.clone(),
                dir: dv.host_data_dir().to_string(),
                is_mount: false,
                free_bytes: None,
                owner: None,
            });
        }
        Err(e) => f.note(
            Topic::DataDir,
            Severity::Error,
            format!("{dir}/{etcd_file}: {e}"),
            Some(&e.hint()),
        ),
    }
    if let Some(wal) = etcd.wal_dir() {
        f.note(
            Topic::DataDir,
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
    f.etcd = Some(EtcdMember {
        name: etcd.name().map(String::from),
        peer_urls: etcd.initial_advertise_peer_urls().map(String::from),
        initial_cluster: etcd.initial_cluster().map(String::from),
        version: etcd.version,
        listeners: listeners(&etcd),
        static_pod: Some(EtcdPod {
            file: etcd_file,
            manifest: etcd,
        }),
    });
    Ok(())
}

/// Where etcd listens: its client and peer listen URLs.
fn listeners(m: &EtcdManifest) -> Vec<Endpoint> {
    let mut eps = Vec::new();
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
    eps
}

/// Picks etcd's client endpoint as reachable from the node: a loopback listener when there is
/// one, else the first advertised client URL. The restore's health checks and `check` both
/// use it.
pub fn client_access(m: &EtcdManifest) -> Option<ClientAccess> {
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
            let dir = gather::parent_dir(&ca);
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

/// The endpoints a static pod listens on, as far as its manifest tells: etcd's listen URLs,
/// another pod's readiness probe address.
pub fn endpoints(pod: &str, facts: &NodeFacts) -> Vec<Endpoint> {
    let mut eps = Vec::new();
    if pod == "etcd" {
        if let Some(m) = &facts.etcd {
            eps.extend(m.listeners.iter().cloned());
        }
    } else if let Some(p) = facts.static_pods.pod(pod) {
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
        ProbeAction::HttpGet {
            host,
            port,
            scheme,
            path,
        } => Some(HttpProbe {
            scheme: match scheme {
                HttpScheme::Http => "http".into(),
                HttpScheme::Https => "https".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(flags: &str) -> EtcdManifest {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - etcd\n    - --data-dir=/var/lib/etcd\n{flags}    image: registry.k8s.io/etcd:3.5.9-0\n    name: etcd\n    volumeMounts:\n    - mountPath: /var/lib/etcd\n      name: etcd-data\n  hostNetwork: true\n  volumes:\n  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n    name: etcd-data\n"
        );
        EtcdManifest::parse(text.as_bytes()).unwrap()
    }

    fn pick(m: &EtcdManifest) -> Option<(bool, String, u16)> {
        client_access(m).map(|c| (c.https, c.host, c.port))
    }

    #[test]
    fn the_client_url_is_a_loopback_listener_else_the_first_usable_url() {
        // kubeadm: loopback and the node address; the restore and `check` reach the loopback.
        let m = manifest_with(
            "    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379\n    - --advertise-client-urls=https://10.0.0.1:2379\n",
        );
        assert_eq!(pick(&m), Some((true, "127.0.0.1".into(), 2379)));
        let m = manifest_with(
            "    - --advertise-client-urls=http://10.0.0.1:2379,https://10.0.0.1:2379\n",
        );
        assert_eq!(pick(&m), Some((false, "10.0.0.1".into(), 2379)));
        // A wildcard listener names no address to connect to: the advertised URL is used.
        let m = manifest_with(
            "    - --listen-client-urls=https://0.0.0.0:12379\n    - --advertise-client-urls=https://10.0.0.1:12379\n",
        );
        assert_eq!(pick(&m), Some((true, "10.0.0.1".into(), 12379)));
        let m = manifest_with("    - --advertise-client-urls=https://[fd00::1]:2379\n");
        assert_eq!(pick(&m), Some((true, "fd00::1".into(), 2379)));
        assert_eq!(pick(&manifest_with("")), None);
        assert_eq!(
            pick(&manifest_with(
                "    - --listen-client-urls=https://0.0.0.0:12379\n"
            )),
            None
        );
    }
}
