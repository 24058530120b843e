//! Static-pod manifests in the layout kubeadm 1.28+ writes, and the kubelet configuration.
//!
//! Every hostPath points into the node's own root directory (`D/nodes/cp-<i>/...`). The only
//! other differences from kubeadm are forced by all nodes sharing one host: etcd's client and
//! metrics listeners, the probes, the apiserver's `--etcd-servers` and the controller-manager's
//! and scheduler's `--bind-address` use the node IP instead of 127.0.0.1.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::state::NodePaths;
use crate::util;

/// The Kubernetes version whose kubeadm layout and images the lab writes.
pub const KUBERNETES_VERSION: &str = "v1.28.15";

/// Image of a Kubernetes control-plane component.
pub fn k8s_image(component: &str) -> String {
    format!("registry.k8s.io/{component}:{KUBERNETES_VERSION}")
}

/// Image of etcd for an etcd version such as `3.5.1`.
pub fn etcd_image(version: &str) -> String {
    format!("registry.k8s.io/etcd:{version}-0")
}

/// A hostPath volume: name, path inside the node, type, mounted read-only.
struct Vol<'a> {
    name: &'a str,
    path: &'a str,
    kind: &'a str,
    read_only: bool,
}

/// An httpGet probe as kubeadm writes it.
struct Probe<'a> {
    kind: &'a str,
    path: &'a str,
    port: u16,
    scheme: &'a str,
    failure: u32,
    initial: bool,
    period: u32,
}

fn probe(out: &mut String, host: &str, p: Probe<'_>) {
    let Probe {
        kind,
        path,
        port,
        scheme,
        failure,
        initial,
        period,
    } = p;
    let _ = writeln!(out, "    {kind}:");
    let _ = writeln!(out, "      failureThreshold: {failure}");
    let _ = writeln!(out, "      httpGet:");
    let _ = writeln!(out, "        host: {host}");
    let _ = writeln!(out, "        path: {path}");
    let _ = writeln!(out, "        port: {port}");
    let _ = writeln!(out, "        scheme: {scheme}");
    if initial {
        let _ = writeln!(out, "      initialDelaySeconds: 10");
    }
    let _ = writeln!(out, "      periodSeconds: {period}");
    let _ = writeln!(out, "      timeoutSeconds: 15");
}

fn volumes(out: &mut String, node: &NodePaths, vols: &[Vol<'_>]) {
    let _ = writeln!(out, "    volumeMounts:");
    for v in vols {
        let _ = writeln!(out, "    - mountPath: {}", v.path);
        let _ = writeln!(out, "      name: {}", v.name);
        if v.read_only {
            let _ = writeln!(out, "      readOnly: true");
        }
    }
    let _ = writeln!(out, "  hostNetwork: true");
    let _ = writeln!(out, "  priority: 2000001000");
    let _ = writeln!(out, "  priorityClassName: system-node-critical");
    let _ = writeln!(out, "  securityContext:");
    let _ = writeln!(out, "    seccompProfile:");
    let _ = writeln!(out, "      type: RuntimeDefault");
    let _ = writeln!(out, "  volumes:");
    for v in vols {
        let _ = writeln!(out, "  - hostPath:");
        let _ = writeln!(out, "      path: {}", node.host(v.path).display());
        let _ = writeln!(out, "      type: {}", v.kind);
        let _ = writeln!(out, "    name: {}", v.name);
    }
    let _ = writeln!(out, "status: {{}}");
}

fn header(out: &mut String, annotation: Option<(&str, String)>, component: &str) {
    let _ = writeln!(out, "apiVersion: v1");
    let _ = writeln!(out, "kind: Pod");
    let _ = writeln!(out, "metadata:");
    if let Some((k, v)) = annotation {
        let _ = writeln!(out, "  annotations:");
        let _ = writeln!(out, "    {k}: {v}");
    }
    let _ = writeln!(out, "  creationTimestamp: null");
    let _ = writeln!(out, "  labels:");
    let _ = writeln!(out, "    component: {component}");
    let _ = writeln!(out, "    tier: control-plane");
    let _ = writeln!(out, "  name: {component}");
    let _ = writeln!(out, "  namespace: kube-system");
    let _ = writeln!(out, "spec:");
    let _ = writeln!(out, "  containers:");
}

fn command(out: &mut String, args: &[String]) {
    let _ = writeln!(out, "  - command:");
    for a in args {
        let _ = writeln!(out, "    - {a}");
    }
}

/// `etcd.yaml` for node `name` at `ip`; `cluster` lists every member as (name, ip).
pub fn etcd(
    node: &NodePaths,
    name: &str,
    ip: Ipv4Addr,
    cluster: &[(String, Ipv4Addr)],
    image: &str,
) -> String {
    let initial_cluster = cluster
        .iter()
        .map(|(n, i)| format!("{n}=https://{i}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    let args = vec![
        "etcd".to_string(),
        format!("--advertise-client-urls=https://{ip}:2379"),
        "--cert-file=/etc/kubernetes/pki/etcd/server.crt".into(),
        "--client-cert-auth=true".into(),
        "--data-dir=/var/lib/etcd".into(),
        "--experimental-initial-corrupt-check=true".into(),
        "--experimental-watch-progress-notify-interval=5s".into(),
        format!("--initial-advertise-peer-urls=https://{ip}:2380"),
        format!("--initial-cluster={initial_cluster}"),
        "--initial-cluster-state=new".into(),
        "--key-file=/etc/kubernetes/pki/etcd/server.key".into(),
        format!("--listen-client-urls=https://{ip}:2379"),
        format!("--listen-metrics-urls=http://{ip}:2381"),
        format!("--listen-peer-urls=https://{ip}:2380"),
        format!("--name={name}"),
        "--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt".into(),
        "--peer-client-cert-auth=true".into(),
        "--peer-key-file=/etc/kubernetes/pki/etcd/peer.key".into(),
        "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt".into(),
        "--snapshot-count=10000".into(),
        "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt".into(),
    ];
    let mut out = String::new();
    header(
        &mut out,
        Some((
            "kubeadm.kubernetes.io/etcd.advertise-client-urls",
            format!("https://{ip}:2379"),
        )),
        "etcd",
    );
    command(&mut out, &args);
    let host = ip.to_string();
    let _ = writeln!(out, "    image: {image}");
    let _ = writeln!(out, "    imagePullPolicy: IfNotPresent");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "livenessProbe",
            path: "/health?exclude=NOSPACE&serializable=true",
            port: 2381,
            scheme: "HTTP",
            failure: 8,
            initial: true,
            period: 10,
        },
    );
    let _ = writeln!(out, "    name: etcd");
    let _ = writeln!(out, "    resources:");
    let _ = writeln!(out, "      requests:");
    let _ = writeln!(out, "        cpu: 100m");
    let _ = writeln!(out, "        memory: 100Mi");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "startupProbe",
            path: "/health?serializable=false",
            port: 2381,
            scheme: "HTTP",
            failure: 24,
            initial: true,
            period: 10,
        },
    );
    volumes(
        &mut out,
        node,
        &[
            Vol {
                name: "etcd-data",
                path: "/var/lib/etcd",
                kind: "DirectoryOrCreate",
                read_only: false,
            },
            Vol {
                name: "etcd-certs",
                path: "/etc/kubernetes/pki/etcd",
                kind: "DirectoryOrCreate",
                read_only: false,
            },
        ],
    );
    // kubeadm lists the volumes (not the mounts) sorted by name.
    sort_volumes_like_kubeadm(out)
}

/// kubeadm writes `volumeMounts` in insertion order for etcd but `volumes` sorted by name;
/// our helper wrote both in insertion order, so swap the two etcd volumes.
fn sort_volumes_like_kubeadm(out: String) -> String {
    let marker = "  volumes:\n";
    let Some(pos) = out.find(marker) else {
        return out;
    };
    let (head, tail) = out.split_at(pos + marker.len());
    let end = tail.find("status: {}").unwrap_or(tail.len());
    let (vols, rest) = tail.split_at(end);
    let mut items: Vec<String> = Vec::new();
    for line in vols.lines() {
        if line.starts_with("  - ") {
            items.push(String::new());
        }
        if let Some(last) = items.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    items.sort_by_key(|item| {
        item.lines()
            .find_map(|l| l.strip_prefix("    name: ").map(str::to_string))
            .unwrap_or_default()
    });
    format!("{head}{}{rest}", items.concat())
}

const CA_VOLS: [(&str, &str); 4] = [
    ("ca-certs", "/etc/ssl/certs"),
    ("etc-ca-certificates", "/etc/ca-certificates"),
    (
        "usr-local-share-ca-certificates",
        "/usr/local/share/ca-certificates",
    ),
    ("usr-share-ca-certificates", "/usr/share/ca-certificates"),
];

/// `kube-apiserver.yaml` for node `ip`.
pub fn kube_apiserver(node: &NodePaths, ip: Ipv4Addr) -> String {
    let args: Vec<String> = vec![
        "kube-apiserver".into(),
        format!("--advertise-address={ip}"),
        "--allow-privileged=true".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--client-ca-file=/etc/kubernetes/pki/ca.crt".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--enable-bootstrap-token-auth=true".into(),
        "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt".into(),
        "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt".into(),
        "--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key".into(),
        format!("--etcd-servers=https://{ip}:2379"),
        "--kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt".into(),
        "--kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key".into(),
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
        "--proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt".into(),
        "--proxy-client-key-file=/etc/kubernetes/pki/front-proxy-client.key".into(),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--secure-port=6443".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-account-key-file=/etc/kubernetes/pki/sa.pub".into(),
        "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key".into(),
        "--service-cluster-ip-range=10.96.0.0/12".into(),
        "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt".into(),
        "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key".into(),
    ];
    let mut out = String::new();
    header(
        &mut out,
        Some((
            "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint",
            format!("{ip}:6443"),
        )),
        "kube-apiserver",
    );
    command(&mut out, &args);
    let host = ip.to_string();
    let _ = writeln!(out, "    image: {}", k8s_image("kube-apiserver"));
    let _ = writeln!(out, "    imagePullPolicy: IfNotPresent");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "livenessProbe",
            path: "/livez",
            port: 6443,
            scheme: "HTTPS",
            failure: 8,
            initial: true,
            period: 10,
        },
    );
    let _ = writeln!(out, "    name: kube-apiserver");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "readinessProbe",
            path: "/readyz",
            port: 6443,
            scheme: "HTTPS",
            failure: 3,
            initial: false,
            period: 1,
        },
    );
    let _ = writeln!(out, "    resources:");
    let _ = writeln!(out, "      requests:");
    let _ = writeln!(out, "        cpu: 250m");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "startupProbe",
            path: "/livez",
            port: 6443,
            scheme: "HTTPS",
            failure: 24,
            initial: true,
            period: 10,
        },
    );
    let mut vols: Vec<Vol<'_>> = CA_VOLS
        .iter()
        .map(|(n, p)| Vol {
            name: n,
            path: p,
            kind: "DirectoryOrCreate",
            read_only: true,
        })
        .collect();
    vols.push(Vol {
        name: "k8s-certs",
        path: "/etc/kubernetes/pki",
        kind: "DirectoryOrCreate",
        read_only: true,
    });
    vols.sort_by_key(|v| v.name);
    volumes(&mut out, node, &vols);
    out
}

/// `kube-controller-manager.yaml` for node `ip`.
pub fn kube_controller_manager(node: &NodePaths, ip: Ipv4Addr) -> String {
    let args: Vec<String> = vec![
        "kube-controller-manager".into(),
        "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
        "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
        format!("--bind-address={ip}"),
        "--client-ca-file=/etc/kubernetes/pki/ca.crt".into(),
        "--cluster-name=kubernetes".into(),
        "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt".into(),
        "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key".into(),
        "--controllers=*,bootstrapsigner,tokencleaner".into(),
        "--kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
        "--leader-elect=true".into(),
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt".into(),
        "--root-ca-file=/etc/kubernetes/pki/ca.crt".into(),
        "--service-account-private-key-file=/etc/kubernetes/pki/sa.key".into(),
        "--use-service-account-credentials=true".into(),
    ];
    let mut out = String::new();
    header(&mut out, None, "kube-controller-manager");
    command(&mut out, &args);
    let host = ip.to_string();
    let _ = writeln!(out, "    image: {}", k8s_image("kube-controller-manager"));
    let _ = writeln!(out, "    imagePullPolicy: IfNotPresent");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "livenessProbe",
            path: "/healthz",
            port: 10257,
            scheme: "HTTPS",
            failure: 8,
            initial: true,
            period: 10,
        },
    );
    let _ = writeln!(out, "    name: kube-controller-manager");
    let _ = writeln!(out, "    resources:");
    let _ = writeln!(out, "      requests:");
    let _ = writeln!(out, "        cpu: 200m");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "startupProbe",
            path: "/healthz",
            port: 10257,
            scheme: "HTTPS",
            failure: 24,
            initial: true,
            period: 10,
        },
    );
    let mut vols: Vec<Vol<'_>> = CA_VOLS
        .iter()
        .map(|(n, p)| Vol {
            name: n,
            path: p,
            kind: "DirectoryOrCreate",
            read_only: true,
        })
        .collect();
    vols.push(Vol {
        name: "flexvolume-dir",
        path: "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
        kind: "DirectoryOrCreate",
        read_only: false,
    });
    vols.push(Vol {
        name: "k8s-certs",
        path: "/etc/kubernetes/pki",
        kind: "DirectoryOrCreate",
        read_only: true,
    });
    vols.push(Vol {
        name: "kubeconfig",
        path: "/etc/kubernetes/controller-manager.conf",
        kind: "FileOrCreate",
        read_only: true,
    });
    vols.sort_by_key(|v| v.name);
    volumes(&mut out, node, &vols);
    out
}

/// `kube-scheduler.yaml` for node `ip`.
pub fn kube_scheduler(node: &NodePaths, ip: Ipv4Addr) -> String {
    let args: Vec<String> = vec![
        "kube-scheduler".into(),
        "--authentication-kubeconfig=/etc/kubernetes/scheduler.conf".into(),
        "--authorization-kubeconfig=/etc/kubernetes/scheduler.conf".into(),
        format!("--bind-address={ip}"),
        "--kubeconfig=/etc/kubernetes/scheduler.conf".into(),
        "--leader-elect=true".into(),
    ];
    let mut out = String::new();
    header(&mut out, None, "kube-scheduler");
    command(&mut out, &args);
    let host = ip.to_string();
    let _ = writeln!(out, "    image: {}", k8s_image("kube-scheduler"));
    let _ = writeln!(out, "    imagePullPolicy: IfNotPresent");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "livenessProbe",
            path: "/healthz",
            port: 10259,
            scheme: "HTTPS",
            failure: 8,
            initial: true,
            period: 10,
        },
    );
    let _ = writeln!(out, "    name: kube-scheduler");
    let _ = writeln!(out, "    resources:");
    let _ = writeln!(out, "      requests:");
    let _ = writeln!(out, "        cpu: 100m");
    probe(
        &mut out,
        &host,
        Probe {
            kind: "startupProbe",
            path: "/healthz",
            port: 10259,
            scheme: "HTTPS",
            failure: 24,
            initial: true,
            period: 10,
        },
    );
    volumes(
        &mut out,
        node,
        &[Vol {
            name: "kubeconfig",
            path: "/etc/kubernetes/scheduler.conf",
            kind: "FileOrCreate",
            read_only: true,
        }],
    );
    out
}

/// `/var/lib/kubelet/config.yaml`: a KubeletConfiguration as kubeadm writes it, with the
/// node's manifests directory as `staticPodPath` and the runner's poll period as
/// `fileCheckFrequency`.
pub fn kubelet_config(node: &NodePaths, poll: Duration) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: {pki}/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: \"\"
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: {poll}
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMinimumGCAge: 0s
kind: KubeletConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
  verbosity: 0
memorySwap: {{}}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: {manifests}
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
",
        pki = node.pki().display(),
        poll = util::format_duration(poll),
        manifests = node.manifests().display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_manifest_has_kubeadm_layout() {
        let node = NodePaths::new("/lab/nodes/cp-1");
        let ip = Ipv4Addr::new(127, 0, 0, 11);
        let cluster = vec![
            ("cp-1".to_string(), ip),
            ("cp-2".to_string(), Ipv4Addr::new(127, 0, 0, 12)),
        ];
        let y = etcd(&node, "cp-1", ip, &cluster, "registry.k8s.io/etcd:3.5.1-0");
        assert!(y.contains("    - --initial-cluster=cp-1=https://127.0.0.11:2380,cp-2=https://127.0.0.12:2380\n    - --initial-cluster-state=new\n"));
        assert!(y.contains("  volumes:\n  - hostPath:\n      path: /lab/nodes/cp-1/etc/kubernetes/pki/etcd\n      type: DirectoryOrCreate\n    name: etcd-certs\n  - hostPath:\n      path: /lab/nodes/cp-1/var/lib/etcd\n      type: DirectoryOrCreate\n    name: etcd-data\nstatus: {}\n"));
        assert!(y.contains("    volumeMounts:\n    - mountPath: /var/lib/etcd\n      name: etcd-data\n    - mountPath: /etc/kubernetes/pki/etcd\n      name: etcd-certs\n"));
        let v: serde_yaml::Value = serde_yaml::from_str(&y).expect("valid yaml");
        assert_eq!(v["spec"]["priority"].as_u64(), Some(2_000_001_000));
        assert_eq!(
            v["spec"]["containers"][0]["startupProbe"]["httpGet"]["host"].as_str(),
            Some("127.0.0.11")
        );
    }

    #[test]
    fn other_manifests_parse() {
        let node = NodePaths::new("/lab/nodes/cp-1");
        let ip = Ipv4Addr::new(127, 0, 0, 11);
        for y in [
            kube_apiserver(&node, ip),
            kube_controller_manager(&node, ip),
            kube_scheduler(&node, ip),
        ] {
            let v: serde_yaml::Value = serde_yaml::from_str(&y).expect("valid yaml");
            let vols = v["spec"]["volumes"].as_sequence().expect("volumes");
            let names: Vec<&str> = vols.iter().filter_map(|v| v["name"].as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
        }
        let cfg: serde_yaml::Value =
            serde_yaml::from_str(&kubelet_config(&node, Duration::from_millis(200)))
                .expect("valid yaml");
        assert_eq!(
            cfg["staticPodPath"].as_str(),
            Some("/lab/nodes/cp-1/etc/kubernetes/manifests")
        );
        assert_eq!(cfg["fileCheckFrequency"].as_str(), Some("200ms"));
    }
}
