//! The usual scene of a test against a lab: the lab with data, a snapshot of it, and a
//! temporary directory for the tool's state and whatever else the test writes.

use std::path::PathBuf;

use etcd_recover_lab::testing::{Lab, LabOptions};

use super::{etcd_recover, EtcdRecover, AFTER_SNAPSHOT};

/// A lab, a snapshot of it in a temporary directory, and a state directory there for the
/// tool's runs. Dropping it tears the lab down and removes the directory.
pub struct Setup {
    /// The lab.
    pub lab: Lab,
    /// The temporary directory (`snap.db`, `state/`, and the test's own files).
    pub tmp: tempfile::TempDir,
    /// The snapshot, `TMP/snap.db`.
    pub snap: PathBuf,
}

impl Setup {
    /// Brings a lab up, writes `keys` keys (none for 0) and takes a snapshot.
    pub fn new(opts: LabOptions, keys: usize) -> Setup {
        let lab = Lab::up(opts).expect("lab up");
        let tmp = tempfile::tempdir().unwrap();
        if keys > 0 {
            lab.seed(keys);
        }
        let snap = lab.snapshot(tmp.path().join("snap.db"));
        Setup { lab, tmp, snap }
    }

    /// The 3-node lab of the long failure and interrupt loops: 400 keys, the snapshot, then
    /// 150 more under [`AFTER_SNAPSHOT`] (a restore removes those; a rollback keeps them). Its
    /// SSH user is a plain user through sudo: every remote command skips root's heavy login
    /// shell setup on this machine, which keeps these long loops short.
    pub fn for_loops() -> Setup {
        let s = Setup::new(LabOptions::nodes(3).poll_ms(200).ssh_user("erlab"), 400);
        s.lab.seed_under(AFTER_SNAPSHOT, 150);
        s
    }

    /// The state directory, `TMP/state`.
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// `etcd-recover` keeping its runs in [`Setup::state`].
    pub fn cli(&self) -> EtcdRecover {
        etcd_recover().state(&self.state())
    }
}
