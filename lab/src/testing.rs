//! Test harness: bring a lab up in a free address slot, talk to it, read its etcd, manifests
//! and health, and always tear it down; plus the real processes that transport and snapshot
//! tests want alone (a throwaway [`Sshd`] and [`Etcd`]) and the waits tests share.
//!
//! ```no_run
//! use etcd_recover_lab::testing::{Lab, LabOptions};
//! let lab = Lab::up(LabOptions::nodes(3).poll_ms(200))?;
//! let st = lab.status()?;
//! assert_eq!(st["summary"]["healthy_members"], 3);
//! lab.seed(100);
//! assert!(lab.count("/registry/") >= 100);
//! lab.fault("cp-2", "stop-sshd");
//! lab.down();
//! # anyhow::Ok(())
//! ```
//!
//! Each lab takes a slot `n` in 1..=250 by holding an exclusive `flock` on
//! `/tmp/etcd-recover-lab-slots/<n>.lock` for its whole life and uses the addresses
//! `127.0.<n>.11...`; labs in parallel threads or processes never collide. The lab lives in a
//! fresh temporary directory that is removed on drop, unless `ETCD_RECOVER_KEEP_LAB=1`.
//!
//! Apart from [`Lab::up`], [`Lab::lab`] and [`Lab::status`], which return errors, the helpers
//! here panic with what failed: they are for tests.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::state::NodePaths;

mod cluster;
mod etcd;
mod process;
mod sshd;

pub use crate::up::cache_dir;
pub use etcd::{etcd35_dir, Etcd};
pub use process::{cmdline, free_port, ok, pid_alive, port_open, wait_for};
pub use sshd::{keygen, keygen_with, Sshd};

/// Directory of the slot lock files.
pub const SLOT_DIR: &str = "/tmp/etcd-recover-lab-slots";
/// Number of address slots.
pub const SLOTS: u8 = 250;

/// Which etcd the lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdVersion {
    /// etcd 3.5.1 from the setup cache (`etcdutl` is the restore tool).
    V35,
    /// etcd 3.4 from `/usr/bin` (`etcdctl snapshot restore`).
    V34,
}

impl EtcdVersion {
    /// The `--etcd` argument of `up`.
    pub fn as_arg(self) -> &'static str {
        match self {
            EtcdVersion::V35 => "3.5",
            EtcdVersion::V34 => "3.4",
        }
    }
}

/// Options of [`Lab::up`].
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Number of control-plane nodes (1..=7).
    pub nodes: usize,
    /// etcd version.
    pub etcd: EtcdVersion,
    /// SSH user; `None` is root. A non-root user is created with passwordless sudo.
    pub ssh_user: Option<String>,
    /// The static-pod runners' poll period in milliseconds.
    pub poll_ms: u64,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            nodes: 3,
            etcd: EtcdVersion::V35,
            ssh_user: None,
            poll_ms: 1000,
        }
    }
}

impl LabOptions {
    /// `nodes` control-plane nodes, everything else by default.
    pub fn nodes(nodes: usize) -> LabOptions {
        LabOptions {
            nodes,
            ..LabOptions::default()
        }
    }

    /// With this etcd version.
    pub fn etcd(self, etcd: EtcdVersion) -> LabOptions {
        LabOptions { etcd, ..self }
    }

    /// With this SSH user (created with passwordless sudo) instead of root.
    pub fn ssh_user(self, user: &str) -> LabOptions {
        LabOptions {
            ssh_user: Some(user.to_string()),
            ..self
        }
    }

    /// With this poll period of the static-pod runners, in milliseconds.
    pub fn poll_ms(self, poll_ms: u64) -> LabOptions {
        LabOptions { poll_ms, ..self }
    }
}

/// A running lab. Dropping it runs `down` (also while a test panics) and removes the
/// directory unless `ETCD_RECOVER_KEEP_LAB=1`.
pub struct Lab {
    /// The lab directory.
    pub dir: PathBuf,
    /// `dir/inventory.yaml`, ready for `etcd-recover -i`.
    pub inventory: PathBuf,
    /// The base address; node i is base + i.
    pub base_ip: Ipv4Addr,
    /// Number of nodes.
    pub nodes: usize,
    /// The SSH user of the inventory.
    pub ssh_user: String,
    tempdir: Option<tempfile::TempDir>,
    _slot: Option<Flock<File>>,
    downed: bool,
}

/// The `etcd-recover-lab` binary: `$ETCD_RECOVER_LAB_BIN`, else next to the running test
/// executable (`<target>/debug/deps/..` or `<target>/debug/`).
pub fn lab_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD_RECOVER_LAB_BIN") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        let cand = dir.join("etcd-recover-lab");
        if cand.is_file() {
            return cand;
        }
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("etcd-recover-lab"))
        .unwrap_or_else(|| PathBuf::from("etcd-recover-lab"))
}

/// Takes the lowest free slot. Every free slot that still names a lab directory is
/// reclaimed on the way (see [`reclaim`]).
fn take_slot() -> Result<Option<(u8, Flock<File>)>> {
    crate::util::mkdir(Path::new(SLOT_DIR))?;
    let _ = crate::util::chmod(Path::new(SLOT_DIR), 0o1777);
    let mut taken = None;
    for n in 1..=SLOTS {
        let path = Path::new(SLOT_DIR).join(format!("{n}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            reclaim(&path, &lock);
            if taken.is_none() {
                taken = Some((n, lock));
            }
        }
    }
    Ok(taken)
}

/// A slot whose lock was free but which names a lab directory belongs to a test process that
/// died without running Drop (SIGKILL, Ctrl-C): stop that lab's processes and remove it.
fn reclaim(lock_path: &Path, lock: &Flock<File>) {
    let Ok(text) = std::fs::read_to_string(lock_path) else {
        return;
    };
    if text.trim().is_empty() {
        return;
    }
    record_slot(lock, None);
    let dir = PathBuf::from(text.trim());
    if !dir.is_absolute() || !dir.join("lab.json").is_file() {
        return;
    }
    if let Ok(r) = crate::down::down(&dir) {
        if r.stopped > 0 {
            eprintln!(
                "etcd-recover-lab: stopped {} processes of the abandoned lab {}",
                r.stopped,
                dir.display()
            );
        }
    }
    if !keep() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Records the lab directory in the slot's lock file (for [`reclaim`]), or clears it.
fn record_slot(lock: &Flock<File>, dir: Option<&Path>) {
    use std::io::{Seek, Write};
    let mut f: &File = lock;
    let _ = f.set_len(0);
    let _ = f.seek(std::io::SeekFrom::Start(0));
    if let Some(d) = dir {
        let _ = writeln!(f, "{}", d.display());
    }
}

fn keep() -> bool {
    std::env::var("ETCD_RECOVER_KEEP_LAB").is_ok_and(|v| v == "1")
}

impl Lab {
    /// Brings a lab up with the real `etcd-recover-lab up` in a free slot and a fresh
    /// temporary directory. The error of a failed `up` carries its output and log tails.
    pub fn up(opts: LabOptions) -> Result<Lab> {
        let bin = lab_bin();
        if !bin.is_file() {
            bail!(
                "the etcd-recover-lab binary is not at {}: build it (`cargo build -p etcd-recover-lab`) or set ETCD_RECOVER_LAB_BIN",
                bin.display()
            );
        }
        let mut busy = Vec::new();
        for _attempt in 0..20 {
            let Some((n, lock)) = take_slot()? else {
                bail!("all {SLOTS} lab slots in {SLOT_DIR} are taken");
            };
            let base_ip = Ipv4Addr::new(127, 0, n, 10);
            let tempdir = tempfile::Builder::new()
                .prefix(&format!("etcd-recover-lab-{n}-"))
                .tempdir()
                .context("cannot create a temporary lab directory")?;
            let dir = tempdir.path().to_path_buf();
            record_slot(&lock, Some(&dir));
            let mut cmd = Command::new(&bin);
            cmd.arg("up")
                .arg("--dir")
                .arg(&dir)
                .arg("--nodes")
                .arg(opts.nodes.to_string())
                .arg("--etcd")
                .arg(opts.etcd.as_arg())
                .arg("--base-ip")
                .arg(base_ip.to_string())
                .arg("--poll-ms")
                .arg(opts.poll_ms.to_string());
            if let Some(u) = &opts.ssh_user {
                cmd.arg("--ssh-user").arg(u);
            }
            let mut lab = Lab {
                dir: dir.clone(),
                inventory: dir.join("inventory.yaml"),
                base_ip,
                nodes: opts.nodes,
                ssh_user: opts.ssh_user.clone().unwrap_or_else(|| "root".to_string()),
                tempdir: Some(tempdir),
                _slot: Some(lock),
                downed: false,
            };
            let out = cmd
                .output()
                .with_context(|| format!("cannot run {}", bin.display()))?;
            if out.status.success() {
                return Ok(lab);
            }
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.code() == Some(3) {
                // Someone outside the slot protocol uses these addresses: keep this slot
                // locked (so we do not pick it again) and try the next one.
                busy.push(lab._slot.take());
                lab.downed = true;
                continue;
            }
            lab.finish(true);
            lab.downed = true;
            bail!(
                "etcd-recover-lab up --dir {} failed ({}){}:\n{text}",
                dir.display(),
                out.status,
                if keep() {
                    " (kept the directory: ETCD_RECOVER_KEEP_LAB=1)"
                } else {
                    ""
                }
            );
        }
        bail!("no free lab slot: the addresses of 20 slots were all in use by other programs")
    }

    /// Address of node `i` (1-based).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        let o = self.base_ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], o[3] + i as u8)
    }

    /// Root directory of node `i` (1-based): `dir/nodes/cp-<i>`.
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join("nodes").join(format!("cp-{i}"))
    }

    /// The node's manifests directory (`/etc/kubernetes/manifests` of node `i`).
    pub fn manifests_dir(&self, i: usize) -> PathBuf {
        NodePaths::new(self.node_dir(i)).manifests()
    }

    /// The SSH private key of the lab.
    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("ssh/id_ed25519")
    }

    /// The known_hosts file with every node's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("ssh/known_hosts")
    }

    /// Runs `etcd-recover-lab <args> --dir <dir>` and returns its output (whatever the exit
    /// status).
    pub fn lab(&self, args: &[&str]) -> Result<Output> {
        let bin = lab_bin();
        Command::new(&bin)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))
    }

    /// The parsed `status --json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.lab(&["status", "--json"])?;
        if !out.status.success() {
            bail!(
                "etcd-recover-lab status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("status --json printed invalid JSON")
    }

    /// Stops everything the lab started and removes its directory (unless kept).
    pub fn down(mut self) {
        self.finish(false);
        self.downed = true;
    }

    fn finish(&mut self, failed: bool) {
        if self.downed {
            return;
        }
        // In-process, so that teardown works even when the binary is gone.
        if let Err(e) = crate::down::down(&self.dir) {
            eprintln!(
                "etcd-recover-lab: down --dir {} failed: {e:#}",
                self.dir.display()
            );
        }
        if failed && keep() {
            if let Some(t) = self.tempdir.take() {
                let p = t.keep();
                eprintln!("etcd-recover-lab: kept lab directory {}", p.display());
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        self.finish(panicking);
        if panicking && !keep() {
            eprintln!(
                "etcd-recover-lab: test failed; set ETCD_RECOVER_KEEP_LAB=1 to keep the lab directory ({})",
                self.dir.display()
            );
        }
    }
}
