//! Static-pod manifests: reading them into facts, and the format-preserving rewrite of the
//! `etcd-data` hostPath.
//!
//! Every manifest goes through the same gate before anything is read from it: UTF-8, LF or
//! CRLF line endings, not a template, exactly one YAML document, no duplicate keys, a plain
//! `apiVersion: v1` / `kind: Pod`, and not a Pod as the API server returns it. Each refusal is
//! a distinct [`ManifestError`] that says why and (through [`ManifestError::hint`]) what to do.
//!
//! - [`EtcdManifest`]: everything the restore needs from `etcd.yaml` (R5), including the data
//!   hostPath found by following the volumeMount that holds `--data-dir`.
//! - [`StaticPod`]: name, flags and readiness probe of any other static pod.
//! - [`rewrite_data_hostpath`]: change exactly one value, prove it, keep every other byte.
//! - [`kubelet_static_pod_path`]: `staticPodPath` from the kubelet's config file.

mod error;
mod etcd_manifest;
mod pod;
mod rewrite;
mod yaml;

pub use error::ManifestError;
pub use etcd_manifest::{
    clean_path, DataVolume, EtcdManifest, HostPathMapping, ADVERTISE_CLIENT_URLS_ANNOTATION,
};
pub use pod::{
    ContainerSummary, EnvVar, Flag, HttpScheme, ProbeAction, ProbeSource, Readiness, RunAs,
    StaticPod, Volume, VolumeMount, VolumeSource,
};
pub use rewrite::{rewrite_data_hostpath, validate_new_host_path, Rewrite};

/// The kubelet's `staticPodPath` from its config file (`/var/lib/kubelet/config.yaml`), if the
/// file is YAML and sets it.
pub fn kubelet_static_pod_path(kubelet_config_yaml: &str) -> Option<String> {
    let root = yaml::load(kubelet_config_yaml).ok()?;
    root.get("staticPodPath")
        .and_then(yaml::Node::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_pod_path_from_kubelet_config() {
        let cfg = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: /etc/kubernetes/manifests\n";
        assert_eq!(
            kubelet_static_pod_path(cfg).as_deref(),
            Some("/etc/kubernetes/manifests")
        );
        assert_eq!(
            kubelet_static_pod_path("kind: KubeletConfiguration\n"),
            None
        );
        assert_eq!(kubelet_static_pod_path("staticPodPath: ''\n"), None);
        assert_eq!(kubelet_static_pod_path("{{ nope"), None);
    }
}
