//! A throwaway single-member etcd 3.5.1: plain HTTP on 127.0.0.1, free ports, its data under a
//! directory of the caller's. Stopped when dropped, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::free_port;
use crate::util;

/// Where `scripts/setup.sh` installs etcd 3.5.1 (`etcd`, `etcdctl`, `etcdutl`).
pub fn etcd35_dir() -> PathBuf {
    let dir = crate::up::cache_dir().join("etcd-3.5.1");
    assert!(
        ["etcd", "etcdctl", "etcdutl"]
            .iter()
            .all(|b| dir.join(b).is_file()),
        "etcd 3.5.1 binaries are missing from {}; run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// A running etcd; dropped = stopped.
pub struct Etcd {
    child: Option<Child>,
    /// The data dir (`--data-dir`).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    bin: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data dir and log under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Etcd {
        let bin = etcd35_dir();
        let data_dir = dir.join("etcd-data");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log file");
        let child = Command::new(bin.join("etcd"))
            .arg("--name=test")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child: Some(child),
            data_dir,
            endpoint,
            bin,
        };
        super::wait_for(
            &format!("a healthy etcd (log: {})", dir.join("etcd.log").display()),
            Duration::from_secs(30),
            || {
                etcd.ctl(&["endpoint", "health"])
                    .status()
                    .ok()?
                    .success()
                    .then_some(())
            },
        );
        etcd
    }

    /// An etcdctl command against this etcd.
    pub fn ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("etcdctl"));
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// `etcdctl put key value`.
    pub fn put(&self, key: &str, value: &str) {
        let s = self
            .ctl(&["put", key, value])
            .status()
            .expect("run etcdctl");
        assert!(s.success(), "etcdctl put {key} failed");
    }

    /// `etcdctl snapshot save path`.
    pub fn snapshot_save(&self, path: &Path) {
        let p = path.to_str().expect("UTF-8 path");
        let s = self
            .ctl(&["snapshot", "save", p])
            .status()
            .expect("run etcdctl");
        assert!(s.success(), "etcdctl snapshot save failed");
    }

    /// Stops etcd: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            util::signal_pid(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
