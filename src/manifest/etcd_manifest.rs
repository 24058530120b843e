//! The facts read from an etcd static-pod manifest, and container → host path translation.

use serde::Serialize;

use super::error::ManifestError;
use super::pod::{
    self, EnvVar, Flag, PodDocument, Readiness, RunAs, Volume, VolumeMount, VolumeSource,
};
use crate::etcd::version::EtcdVersion;

/// etcd's boolean flags: they never take the following word as their value.
const ETCD_BOOL_FLAGS: &[&str] = &[
    "auto-tls",
    "client-cert-auth",
    "debug",
    "enable-grpc-gateway",
    "enable-pprof",
    "enable-v2",
    "experimental-enable-distributed-tracing",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-initial-corrupt-check",
    "experimental-memory-mlock",
    "experimental-peer-skip-client-san-verification",
    "experimental-txn-mode-write-with-shared-buffer",
    "force-new-cluster",
    "help",
    "peer-auto-tls",
    "peer-client-cert-auth",
    "pre-vote",
    "socket-reuse-address",
    "socket-reuse-port",
    "strict-reconfig-check",
    "unsafe-no-fsync",
    "version",
];

/// The annotation kubeadm uses to find etcd's client endpoints (must be kept, R20).
pub const ADVERTISE_CLIENT_URLS_ANNOTATION: &str =
    "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// What an etcd static-pod manifest says (R5). Read from the live file, never from defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdManifest {
    /// `metadata.name`.
    pub pod_name: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// The name of the container that runs etcd.
    pub container: String,
    /// Its image.
    pub image: Option<String>,
    /// The etcd version from the image tag (`registry.k8s.io/etcd:3.5.10-0` → 3.5.10).
    pub version: Option<EtcdVersion>,
    /// Every flag from `command` + `args`, in order.
    pub flags: Vec<Flag>,
    /// The container's environment (etcd reads `ETCD_<FLAG>` variables for unset flags).
    pub env: Vec<EnvVar>,
    /// Pod-level `securityContext` user and group.
    pub pod_run_as: RunAs,
    /// Container-level `securityContext` user and group (these win).
    pub container_run_as: RunAs,
    /// The etcd container's volumeMounts.
    pub volume_mounts: Vec<VolumeMount>,
    /// `spec.volumes`.
    pub volumes: Vec<Volume>,
    /// The `kubeadm.kubernetes.io/etcd.advertise-client-urls` annotation.
    pub advertise_client_urls_annotation: Option<String>,
    /// How the kubelet judges etcd ready.
    pub readiness: Option<Readiness>,
    /// Things worth telling the user that do not stop anything.
    pub notes: Vec<String>,
    /// Mounts of every container (`container`, mount), for checks on shared volumes.
    #[serde(skip)]
    pub(crate) all_mounts: Vec<(String, VolumeMount)>,
}

/// Where a container path is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPathMapping {
    /// The path inside the container.
    pub container_path: String,
    /// The same place on the host.
    pub host_path: String,
    /// The volume that backs it.
    pub volume: String,
    /// That volume's index in `spec.volumes`.
    pub volume_index: usize,
    /// The volume's `hostPath.path`.
    pub volume_host_path: String,
    /// The volumeMount's `mountPath` (the longest one that holds the path).
    pub mount_path: String,
    /// The volumeMount's `subPath`, if any.
    pub sub_path: Option<String>,
    /// The mount is read-only.
    pub read_only: bool,
}

/// The data directory and the hostPath volume that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataVolume {
    /// `--data-dir`, cleaned (inside the container).
    pub data_dir: String,
    /// How it maps to the host.
    pub mapping: HostPathMapping,
}

impl DataVolume {
    /// The data directory on the host.
    pub fn host_data_dir(&self) -> &str {
        &self.mapping.host_path
    }
}

impl EtcdManifest {
    /// Reads an etcd static-pod manifest.
    pub fn parse(bytes: &[u8]) -> Result<EtcdManifest, ManifestError> {
        let doc = pod::load(bytes)?;
        Self::from_document(&doc)
    }

    pub(crate) fn from_document(doc: &PodDocument) -> Result<EtcdManifest, ManifestError> {
        let containers = doc.containers()?;
        let names = || {
            containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let runs_etcd = |c: &pod::Container| {
            c.command
                .first()
                .is_some_and(|p| p.rsplit('/').next() == Some("etcd"))
        };
        let etcd_image = |c: &pod::Container| {
            c.image.as_deref().is_some_and(|i| {
                let repo = i.split(['@']).next().unwrap_or(i);
                let last = repo.rsplit('/').next().unwrap_or(repo);
                last.split(':').next().unwrap_or(last).starts_with("etcd")
            })
        };
        // Ranked: the program is etcd, else the container is named etcd, else the image is etcd.
        let ranked: [Vec<&pod::Container>; 3] = [
            containers.iter().filter(|c| runs_etcd(c)).collect(),
            containers.iter().filter(|c| c.name == "etcd").collect(),
            containers.iter().filter(|c| etcd_image(c)).collect(),
        ];
        let container = match ranked.iter().find(|r| !r.is_empty()).map(Vec::as_slice) {
            Some([one]) => *one,
            Some(_) => return Err(ManifestError::AmbiguousEtcdContainer { names: names() }),
            None => return Err(ManifestError::NoEtcdContainer { names: names() }),
        };
        if let Some(program) = container.command.first() {
            let base = program.rsplit('/').next().unwrap_or(program);
            if ["sh", "bash", "ash", "dash", "zsh", "busybox"].contains(&base)
                && container
                    .command
                    .iter()
                    .chain(&container.args)
                    .any(|a| a == "-c")
            {
                return Err(ManifestError::EtcdThroughShell {
                    program: program.clone(),
                });
            }
        }
        let (flags, stray) = pod::parse_flags(&container.command, &container.args, ETCD_BOOL_FLAGS);
        let mut notes = Vec::new();
        if !stray.is_empty() {
            notes.push(format!(
                "etcd's command line has words that are not flags ({}); etcd stops reading flags at the first one",
                stray.join(" ")
            ));
        }
        let image = container.image.clone();
        let version = image.as_deref().and_then(EtcdVersion::from_image);
        if version.is_none() {
            notes.push(format!(
                "the etcd version cannot be read from the image `{}`",
                image.as_deref().unwrap_or("(none)")
            ));
        }
        let m = EtcdManifest {
            pod_name: doc.name()?,
            namespace: doc.namespace(),
            container: container.name.clone(),
            image,
            version,
            flags,
            env: container.env.clone(),
            pod_run_as: doc.pod_run_as()?,
            container_run_as: container.run_as,
            volume_mounts: container.mounts.clone(),
            volumes: doc.volumes()?,
            advertise_client_urls_annotation: doc.annotation(ADVERTISE_CLIENT_URLS_ANNOTATION),
            readiness: container.readiness.clone(),
            notes,
            all_mounts: doc.all_mounts()?,
        };
        if let Some(path) = m.flag("config-file") {
            return Err(ManifestError::EtcdConfigFile {
                path: path.to_string(),
            });
        }
        Ok(m)
    }

    /// The value of etcd flag `name` (without dashes): the last `--name=value` on the command
    /// line, else the container's literal `ETCD_<NAME>` environment variable, as etcd reads it.
    pub fn flag(&self, name: &str) -> Option<&str> {
        if let Some(f) = self.flags.iter().rev().find(|f| f.name == name) {
            return f.value.as_deref();
        }
        let env_name = format!("ETCD_{}", name.to_ascii_uppercase().replace('-', "_"));
        self.env
            .iter()
            .rev()
            .find(|e| e.name == env_name)
            .and_then(|e| e.value.as_deref())
    }

    /// `--name`.
    pub fn name(&self) -> Option<&str> {
        self.flag("name")
    }

    /// `--initial-advertise-peer-urls`.
    pub fn initial_advertise_peer_urls(&self) -> Option<&str> {
        self.flag("initial-advertise-peer-urls")
    }

    /// `--initial-cluster`.
    pub fn initial_cluster(&self) -> Option<&str> {
        self.flag("initial-cluster")
    }

    /// `--initial-cluster-token` as written (kubeadm never sets it; etcd then uses
    /// `etcd-cluster`).
    pub fn initial_cluster_token(&self) -> Option<&str> {
        self.flag("initial-cluster-token")
    }

    /// `--listen-client-urls`.
    pub fn listen_client_urls(&self) -> Option<&str> {
        self.flag("listen-client-urls")
    }

    /// `--advertise-client-urls`.
    pub fn advertise_client_urls(&self) -> Option<&str> {
        self.flag("advertise-client-urls")
    }

    /// `--listen-metrics-urls`.
    pub fn listen_metrics_urls(&self) -> Option<&str> {
        self.flag("listen-metrics-urls")
    }

    /// `--wal-dir`, if the server keeps its WAL apart from the data dir.
    pub fn wal_dir(&self) -> Option<&str> {
        self.flag("wal-dir").filter(|s| !s.is_empty())
    }

    /// `--cert-file`.
    pub fn cert_file(&self) -> Option<&str> {
        self.flag("cert-file")
    }

    /// `--key-file`.
    pub fn key_file(&self) -> Option<&str> {
        self.flag("key-file")
    }

    /// `--trusted-ca-file`.
    pub fn trusted_ca_file(&self) -> Option<&str> {
        self.flag("trusted-ca-file")
    }

    /// `--peer-cert-file`.
    pub fn peer_cert_file(&self) -> Option<&str> {
        self.flag("peer-cert-file")
    }

    /// `--peer-key-file`.
    pub fn peer_key_file(&self) -> Option<&str> {
        self.flag("peer-key-file")
    }

    /// `--peer-trusted-ca-file`.
    pub fn peer_trusted_ca_file(&self) -> Option<&str> {
        self.flag("peer-trusted-ca-file")
    }

    /// The user etcd runs as: container `runAsUser`, else the pod's.
    pub fn run_as_user(&self) -> Option<i64> {
        self.container_run_as.user.or(self.pod_run_as.user)
    }

    /// The group etcd runs as: container `runAsGroup`, else the pod's.
    pub fn run_as_group(&self) -> Option<i64> {
        self.container_run_as.group.or(self.pod_run_as.group)
    }

    /// `--data-dir`, cleaned. Required: without it etcd writes to `<name>.etcd` in its working
    /// directory, inside the container, and there is nothing on the host to restore into.
    pub fn data_dir(&self) -> Result<String, ManifestError> {
        let mut values: Vec<&str> = self
            .flags
            .iter()
            .filter(|f| f.name == "data-dir")
            .filter_map(|f| f.value.as_deref())
            .collect();
        values.dedup();
        if values.len() > 1 {
            return Err(ManifestError::ConflictingDataDir {
                values: values.join(", "),
            });
        }
        let dir = self
            .flag("data-dir")
            .filter(|d| !d.is_empty())
            .ok_or(ManifestError::NoDataDir)?;
        if !dir.starts_with('/') {
            return Err(ManifestError::RelativeDataDir {
                dir: dir.to_string(),
            });
        }
        Ok(clean_path(dir))
    }

    /// Where `container_path` (absolute) is on the host: through the etcd container's
    /// volumeMount with the longest `mountPath` that holds it, to that volume's hostPath.
    pub fn host_path(&self, container_path: &str) -> Result<HostPathMapping, ManifestError> {
        let path = clean_path(container_path);
        let candidates: Vec<&VolumeMount> = self
            .volume_mounts
            .iter()
            .filter(|m| path_within(&path, &clean_path(&m.mount_path)).is_some())
            .collect();
        let best_len = candidates
            .iter()
            .map(|m| clean_path(&m.mount_path).len())
            .max()
            .ok_or_else(|| ManifestError::NoMount {
                path: path.clone(),
                container: self.container.clone(),
            })?;
        let best: Vec<&&VolumeMount> = candidates
            .iter()
            .filter(|m| clean_path(&m.mount_path).len() == best_len)
            .collect();
        let mount = match best.as_slice() {
            [one] => **one,
            many => {
                return Err(ManifestError::AmbiguousMount {
                    path,
                    mount_path: many
                        .first()
                        .map(|m| clean_path(&m.mount_path))
                        .unwrap_or_default(),
                    volumes: many
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        };
        let mount_path = clean_path(&mount.mount_path);
        let volumes: Vec<&Volume> = self
            .volumes
            .iter()
            .filter(|v| v.name == mount.name)
            .collect();
        let volume = match volumes.as_slice() {
            [] => {
                return Err(ManifestError::MissingVolume {
                    volume: mount.name.clone(),
                    mount_path,
                })
            }
            [one] => *one,
            _ => {
                return Err(ManifestError::DuplicateVolume {
                    volume: mount.name.clone(),
                })
            }
        };
        let host_root = match &volume.source {
            VolumeSource::HostPath { path: hp, .. } => hp.clone(),
            VolumeSource::Other { kind } => {
                return Err(ManifestError::NotHostPath {
                    path,
                    volume: volume.name.clone(),
                    source_kind: kind.clone(),
                })
            }
        };
        if let Some(sub) = &mount.sub_path {
            if sub.contains("$(") || sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                return Err(pod::bad(
                    format!("volumeMount `{mount_path}` subPath"),
                    format!("`{sub}` cannot be mapped to the host"),
                ));
            }
        }
        let rest = path_within(&path, &mount_path).unwrap_or_default();
        let mut host = clean_path(&host_root);
        for part in mount
            .sub_path
            .iter()
            .map(String::as_str)
            .chain([rest.as_str()])
        {
            if !part.is_empty() {
                host = clean_path(&format!("{host}/{part}"));
            }
        }
        Ok(HostPathMapping {
            container_path: path,
            host_path: host,
            volume: volume.name.clone(),
            volume_index: volume.index,
            volume_host_path: host_root,
            mount_path,
            sub_path: mount.sub_path.clone(),
            read_only: mount.read_only,
        })
    }

    /// The data directory and the hostPath volume behind it: found by following the volumeMount
    /// that holds `--data-dir` (longest mountPath), never by the volume's name.
    pub fn data_volume(&self) -> Result<DataVolume, ManifestError> {
        let data_dir = self.data_dir()?;
        let mapping = self.host_path(&data_dir)?;
        Ok(DataVolume { data_dir, mapping })
    }
}

/// Lexically cleans an absolute or relative slash path (Go's `path.Clean`): collapses `//`,
/// drops `.`, resolves `..`, removes a trailing `/`.
pub fn clean_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The rest of `path` below `dir` (both cleaned), or `None` when `path` is not within `dir`.
fn path_within(path: &str, dir: &str) -> Option<String> {
    if dir == "/" {
        return Some(path.trim_start_matches('/').to_string());
    }
    if path == dir {
        return Some(String::new());
    }
    path.strip_prefix(dir)
        .and_then(|r| r.strip_prefix('/'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --name=cp-1
    - --data-dir=/var/lib/etcd
    image: registry.k8s.io/etcd:3.5.10-0
    name: etcd
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
    - mountPath: /etc/kubernetes/pki/etcd
      name: etcd-certs
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki/etcd
    name: etcd-certs
  - hostPath:
      path: /var/lib/etcd
    name: etcd-data
";

    fn parse(t: &str) -> Result<EtcdManifest, ManifestError> {
        EtcdManifest::parse(t.as_bytes())
    }

    #[test]
    fn reads_basic_facts() {
        let m = parse(BASE).unwrap();
        assert_eq!(m.pod_name, "etcd");
        assert_eq!(m.name(), Some("cp-1"));
        assert_eq!(m.version, Some(EtcdVersion::new(3, 5, 10)));
        let d = m.data_volume().unwrap();
        assert_eq!(d.host_data_dir(), "/var/lib/etcd");
        assert_eq!(d.mapping.volume, "etcd-data");
        assert_eq!(
            m.host_path("/etc/kubernetes/pki/etcd/ca.crt")
                .unwrap()
                .host_path,
            "/etc/kubernetes/pki/etcd/ca.crt"
        );
        assert!(matches!(
            m.host_path("/tmp/x"),
            Err(ManifestError::NoMount { .. })
        ));
    }

    #[test]
    fn longest_mount_wins_and_translation_follows_the_host_path() {
        let t = BASE
            .replace(
                "- mountPath: /var/lib/etcd\n",
                "- mountPath: /var/lib\n      name: lib\n    - mountPath: /var/lib/etcd\n",
            )
            .replace(
                "  volumes:\n",
                "  volumes:\n  - hostPath:\n      path: /srv/lib\n    name: lib\n",
            )
            .replace("      path: /var/lib/etcd\n", "      path: /data/etcd\n");
        let m = parse(&t).unwrap();
        let d = m.data_volume().unwrap();
        assert_eq!(d.mapping.volume, "etcd-data");
        assert_eq!(d.host_data_dir(), "/data/etcd");
        assert_eq!(
            m.host_path("/var/lib/other").unwrap().host_path,
            "/srv/lib/other"
        );
    }

    #[test]
    fn refusals_for_the_data_volume() {
        let pvc = BASE.replace(
            "  - hostPath:\n      path: /var/lib/etcd\n    name: etcd-data\n",
            "  - name: etcd-data\n    persistentVolumeClaim:\n      claimName: x\n",
        );
        assert!(matches!(
            parse(&pvc).unwrap().data_volume(),
            Err(ManifestError::NotHostPath { ref source_kind, .. }) if source_kind == "persistentVolumeClaim"
        ));
        let empty = BASE.replace(
            "  - hostPath:\n      path: /var/lib/etcd\n    name: etcd-data\n",
            "  - name: etcd-data\n    emptyDir: {}\n",
        );
        assert!(matches!(
            parse(&empty).unwrap().data_volume(),
            Err(ManifestError::NotHostPath { ref source_kind, .. }) if source_kind == "emptyDir"
        ));
        let twice = BASE.replace(
            "    - mountPath: /etc/kubernetes/pki/etcd\n      name: etcd-certs\n",
            "    - mountPath: /var/lib/etcd/\n      name: etcd-certs\n",
        );
        assert!(matches!(
            parse(&twice).unwrap().data_volume(),
            Err(ManifestError::AmbiguousMount { .. })
        ));
        let none = BASE.replace("    - --data-dir=/var/lib/etcd\n", "");
        assert_eq!(
            parse(&none).unwrap().data_volume(),
            Err(ManifestError::NoDataDir)
        );
        let rel = BASE.replace("--data-dir=/var/lib/etcd", "--data-dir=data");
        assert!(matches!(
            parse(&rel).unwrap().data_volume(),
            Err(ManifestError::RelativeDataDir { .. })
        ));
        let nomount = BASE.replace("--data-dir=/var/lib/etcd", "--data-dir=/opt/etcd");
        assert!(matches!(
            parse(&nomount).unwrap().data_volume(),
            Err(ManifestError::NoMount { .. })
        ));
        let missing = BASE.replace(
            "/var/lib/etcd\n    name: etcd-data\n",
            "/var/lib/etcd\n    name: etcd-other\n",
        );
        assert!(matches!(
            parse(&missing).unwrap().data_volume(),
            Err(ManifestError::MissingVolume { .. })
        ));
    }

    #[test]
    fn flags_from_args_space_form_and_env() {
        let t = BASE
            .replace("    - --name=cp-1\n    - --data-dir=/var/lib/etcd\n", "    args:\n    - --name\n    - cp-1\n    - --client-cert-auth\n    - --data-dir\n    - /var/lib/etcd\n")
            .replace("    - etcd\n", "    - /usr/local/bin/etcd\n")
            .replace("    image:", "    env:\n    - name: ETCD_INITIAL_CLUSTER_TOKEN\n      value: tok\n    image:");
        let m = parse(&t).unwrap();
        assert_eq!(m.name(), Some("cp-1"));
        assert_eq!(m.data_dir().unwrap(), "/var/lib/etcd");
        assert_eq!(m.flag("client-cert-auth"), None);
        assert_eq!(m.initial_cluster_token(), Some("tok"));
    }

    #[test]
    fn container_choice() {
        let apiserver = BASE
            .replace("    - etcd\n", "    - kube-apiserver\n")
            .replace(
                "    name: etcd\n    volumeMounts",
                "    name: kube-apiserver\n    volumeMounts",
            )
            .replace(
                "registry.k8s.io/etcd:3.5.10-0",
                "registry.k8s.io/kube-apiserver:v1.29.0",
            );
        assert!(matches!(
            parse(&apiserver),
            Err(ManifestError::NoEtcdContainer { .. })
        ));
        let sidecar = BASE.replace(
            "  volumes:\n",
            "  - name: etcd-backup\n    image: registry.k8s.io/etcd:3.5.10-0\n    command: [sh]\n  volumes:\n",
        );
        assert_eq!(parse(&sidecar).unwrap().container, "etcd");
        let two = BASE.replace(
            "  volumes:\n",
            "  - name: etcd2\n    image: x\n    command: [/usr/bin/etcd]\n  volumes:\n",
        );
        assert!(matches!(
            parse(&two),
            Err(ManifestError::AmbiguousEtcdContainer { .. })
        ));
    }

    #[test]
    fn shell_and_config_file_are_refused() {
        let sh = BASE.replace(
            "    - etcd\n",
            "    - /bin/sh\n    - -c\n    - etcd --data-dir=/var/lib/etcd\n",
        );
        assert!(matches!(
            parse(&sh),
            Err(ManifestError::EtcdThroughShell { .. })
        ));
        let cfg = BASE.replace(
            "    - --name=cp-1\n",
            "    - --config-file=/etc/etcd.yaml\n",
        );
        assert!(matches!(
            parse(&cfg),
            Err(ManifestError::EtcdConfigFile { .. })
        ));
    }

    #[test]
    fn security_context_levels() {
        let t = BASE
            .replace(
                "    name: etcd\n    volumeMounts",
                "    name: etcd\n    securityContext:\n      runAsUser: 2000\n    volumeMounts",
            )
            .replace(
                "  volumes:\n",
                "  securityContext:\n    runAsUser: 1000\n    runAsGroup: 1001\n  volumes:\n",
            );
        let m = parse(&t).unwrap();
        assert_eq!(m.run_as_user(), Some(2000));
        assert_eq!(m.run_as_group(), Some(1001));
    }

    #[test]
    fn clean_paths() {
        for (i, o) in [
            ("/var/lib/etcd/", "/var/lib/etcd"),
            ("//var//lib/./etcd", "/var/lib/etcd"),
            ("/var/lib/../etcd", "/var/etcd"),
            ("/..", "/"),
            ("/", "/"),
        ] {
            assert_eq!(clean_path(i), o, "{i}");
        }
        assert_eq!(
            path_within("/var/lib/etcd", "/var/lib").as_deref(),
            Some("etcd")
        );
        assert_eq!(path_within("/var/lib2", "/var/lib"), None);
        assert_eq!(path_within("/x", "/").as_deref(), Some("x"));
    }
}
