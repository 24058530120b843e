//! Where a run keeps its files on a node. One home for the node-side layout, used by the
//! facts (the lock), the steps (what they create and move), the engine (saved state) and the
//! commands that read a run back from the nodes:
//!
//! ```text
//! <run_dir>/                      etcd.run_dir from the inventory
//!   <node>.lock                   the per-node lock
//!   runs/<run-id>/<node>/         one run on this node
//!     plan.json                   the plan
//!     state.json                  the steps done on this node
//!     snapshot.db                 the staged snapshot
//!     original/                   a copy of every manifest as it was
//!     manifests/                  manifests moved out of the kubelet's directory
//! ```

/// The node-side layout under one inventory `run_dir` for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    base: String,
    node: String,
}

impl RunLayout {
    /// The layout under `base` (the inventory's `etcd.run_dir`) for `node`.
    pub fn new(base: &str, node: &str) -> RunLayout {
        RunLayout {
            base: base.to_string(),
            node: node.to_string(),
        }
    }

    /// The base directory as the inventory writes it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The per-node lock file.
    pub fn lock(&self) -> String {
        format!("{}/{}.lock", self.trimmed(), self.node)
    }

    /// The directory of run `run_id` on this node.
    pub fn run(&self, run_id: &str) -> RunDir {
        RunDir(format!("{}/runs/{run_id}/{}", self.trimmed(), self.node))
    }

    fn trimmed(&self) -> &str {
        self.base.trim_end_matches('/')
    }
}

/// One run's directory on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(String);

impl RunDir {
    /// The run directory at `path`, as a plan records it ([`crate::plan::NodeSummary::run_dir`]).
    pub fn at(path: &str) -> RunDir {
        RunDir(path.to_string())
    }

    /// The directory itself.
    pub fn path(&self) -> &str {
        &self.0
    }

    /// The plan saved on the node.
    pub fn plan(&self) -> String {
        format!("{}/plan.json", self.0)
    }

    /// The node's step state.
    pub fn state(&self) -> String {
        format!("{}/state.json", self.0)
    }

    /// The staged snapshot.
    pub fn snapshot(&self) -> String {
        format!("{}/snapshot.db", self.0)
    }

    /// Where copies of the original manifests go.
    pub fn originals(&self) -> String {
        format!("{}/original", self.0)
    }

    /// The copy of manifest `file` as it was before the run.
    pub fn original(&self, file: &str) -> String {
        format!("{}/{file}", self.originals())
    }

    /// Where manifests moved out of the kubelet's directory wait.
    pub fn aside_dir(&self) -> String {
        format!("{}/manifests", self.0)
    }

    /// Manifest `file` while it is moved aside.
    pub fn aside(&self, file: &str) -> String {
        format!("{}/{file}", self.aside_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_of_a_run_derives_from_the_base_and_the_node() {
        let l = RunLayout::new("/var/lib/etcd-recover/", "cp-1");
        assert_eq!(l.base(), "/var/lib/etcd-recover/");
        assert_eq!(l.lock(), "/var/lib/etcd-recover/cp-1.lock");
        let r = l.run("r1");
        assert_eq!(r.path(), "/var/lib/etcd-recover/runs/r1/cp-1");
        assert_eq!(r.plan(), "/var/lib/etcd-recover/runs/r1/cp-1/plan.json");
        assert_eq!(r.state(), "/var/lib/etcd-recover/runs/r1/cp-1/state.json");
        assert_eq!(
            r.snapshot(),
            "/var/lib/etcd-recover/runs/r1/cp-1/snapshot.db"
        );
        assert_eq!(
            r.original("etcd.yaml"),
            "/var/lib/etcd-recover/runs/r1/cp-1/original/etcd.yaml"
        );
        assert_eq!(
            r.aside("etcd.yaml"),
            "/var/lib/etcd-recover/runs/r1/cp-1/manifests/etcd.yaml"
        );
        assert_eq!(RunDir::at(r.path()), r);
    }
}
