//! The lab state file `D/lab.json` and the per-node file layout.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::util::{self, ProcId};

/// Lifecycle phase recorded in `lab.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `up` is running (or died while running).
    Starting,
    /// `up` finished and the control plane was healthy.
    Up,
    /// `up` failed; `down` has been run or must be run.
    Failed,
    /// `down` finished; nothing the lab started is running.
    Down,
}

/// Which etcd the lab runs and where its binaries are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtcdInfo {
    /// Minor series, `3.5` or `3.4`.
    pub series: String,
    /// Full version reported by `etcd --version`, e.g. `3.5.1`.
    pub version: String,
    /// Container image the manifests name (matches `version`).
    pub image: String,
    /// The etcd server binary.
    pub etcd: PathBuf,
    /// The etcdctl binary of the same version.
    pub etcdctl: PathBuf,
    /// The etcdutl binary (3.5 only).
    pub etcdutl: Option<PathBuf>,
}

/// One node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// `cp-<i>`.
    pub name: String,
    /// The node's loopback address.
    pub ip: Ipv4Addr,
    /// The node's root directory `D/nodes/cp-<i>`.
    pub dir: PathBuf,
    /// The node's sshd, when started.
    pub sshd: Option<ProcId>,
    /// The node's static-pod runner, when started.
    pub runner: Option<ProcId>,
}

/// Contents of `D/lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Format version of this file.
    pub format: u32,
    /// Lifecycle phase.
    pub phase: Phase,
    /// The lab directory (absolute).
    pub dir: PathBuf,
    /// Cluster name written to the inventory.
    pub cluster: String,
    /// Base address; node i is base + i.
    pub base_ip: Ipv4Addr,
    /// The SSH login user.
    pub ssh_user: String,
    /// The runners' poll period in milliseconds.
    pub poll_ms: u64,
    /// etcd binaries and image.
    pub etcd: EtcdInfo,
    /// The lab binary the wrappers and inventory call.
    pub lab_bin: PathBuf,
    /// The sshd binary.
    pub sshd_bin: PathBuf,
    /// Image name -> "rootfs bin" directory, used by the runners to resolve `command[0]`.
    pub images: BTreeMap<String, PathBuf>,
    /// The nodes.
    pub nodes: Vec<NodeState>,
}

/// File name of the state file inside the lab directory.
pub const STATE_FILE: &str = "lab.json";

impl LabState {
    /// Loads `D/lab.json`, naming the fix when there is none.
    pub fn load(dir: &Path) -> Result<LabState> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "no lab in {}: cannot read {} (run `etcd-recover-lab up --dir {}` first)",
                dir.display(),
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab state file", path.display()))
    }

    /// Writes `D/lab.json` atomically.
    pub fn save(&self) -> Result<()> {
        let data = serde_json::to_vec_pretty(self)?;
        util::write_atomic(&self.dir.join(STATE_FILE), &data, 0o644)
    }

    /// Reads, modifies and writes the state under the lab lock.
    pub fn update<T>(dir: &Path, f: impl FnOnce(&mut LabState) -> Result<T>) -> Result<T> {
        let _lock = lock_dir(dir)?;
        let mut st = LabState::load(dir)?;
        let out = f(&mut st)?;
        st.save()?;
        Ok(out)
    }

    /// The node called `name`, with the list of valid names in the error.
    pub fn node(&self, name: &str) -> Result<&NodeState> {
        match self.nodes.iter().find(|n| n.name == name) {
            Some(n) => Ok(n),
            None => bail!(
                "no node {name} in the lab at {} (nodes: {})",
                self.dir.display(),
                self.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Takes the lab's exclusive lock file `D/.lab.lock` (blocking).
pub fn lock_dir(dir: &Path) -> Result<Flock<fs::File>> {
    let path = dir.join(".lab.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
}

/// Paths inside one node's root directory, named like on a kubeadm node.
#[derive(Debug, Clone)]
pub struct NodePaths {
    /// The node root `D/nodes/cp-<i>`.
    pub root: PathBuf,
}

impl NodePaths {
    /// Paths for the node rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> NodePaths {
        NodePaths { root: root.into() }
    }
    /// Maps an absolute node path such as `/etc/kubernetes` into the node root.
    pub fn host(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }
    /// `/etc/kubernetes/manifests`.
    pub fn manifests(&self) -> PathBuf {
        self.host("/etc/kubernetes/manifests")
    }
    /// `/etc/kubernetes/pki`.
    pub fn pki(&self) -> PathBuf {
        self.host("/etc/kubernetes/pki")
    }
    /// `/var/lib/etcd`.
    pub fn etcd_data(&self) -> PathBuf {
        self.host("/var/lib/etcd")
    }
    /// `/var/lib/kubelet/config.yaml`.
    pub fn kubelet_config(&self) -> PathBuf {
        self.host("/var/lib/kubelet/config.yaml")
    }
    /// `/var/lib/etcd-recover`: the tool's run directory on this node.
    pub fn run_dir(&self) -> PathBuf {
        self.host("/var/lib/etcd-recover")
    }
    /// Log directory (sshd, runner, one file per container).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Runtime files: runner lock, pod status.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The runner's pod status file.
    pub fn pod_status(&self) -> PathBuf {
        self.run().join("pods.json")
    }
    /// The runner's single-instance lock.
    pub fn runner_lock(&self) -> PathBuf {
        self.run().join("runner.lock")
    }
    /// The sshd configuration and host key directory.
    pub fn ssh(&self) -> PathBuf {
        self.root.join("ssh")
    }
}
