//! Shared test fixtures: a throwaway sshd ([`sshd`]) and a throwaway etcd 3.5.1: plain HTTP on 127.0.0.1, free ports, a temporary data
//! dir. The process is stopped when the guard is dropped, also when a test panics.

#![allow(dead_code)]

pub mod sshd;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/setup.sh` installs etcd 3.5.1.
pub fn etcd_bin_dir() -> PathBuf {
    let cache = std::env::var_os("ETCD_RECOVER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/etcd-recover")
        });
    let dir = cache.join("etcd-3.5.1");
    assert!(
        dir.join("etcd").is_file()
            && dir.join("etcdctl").is_file()
            && dir.join("etcdutl").is_file(),
        "etcd 3.5.1 binaries are missing from {}; run scripts/setup.sh",
        dir.display()
    );
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
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
    /// Starts etcd with its data dir under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Etcd {
        let bin = etcd_bin_dir();
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = etcd
                .ctl(&["endpoint", "health"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; see {}",
                dir.join("etcd.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
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
