//! A throwaway OpenSSH sshd on 127.0.0.1 with its own host key and an authorized client key,
//! for transport tests. Runs as the current user (root in CI); stopped by pid when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running sshd.
pub struct Sshd {
    /// Holds keys, config, log and `authorized_keys`.
    pub dir: tempfile::TempDir,
    /// Listening port on 127.0.0.1.
    pub port: u16,
    /// Private key whose public half is authorized.
    pub client_key: PathBuf,
    /// A known_hosts file with this server's host key.
    pub known_hosts: PathBuf,
    /// The host key's public line (`ssh-ed25519 AAAA...`).
    pub host_key_pub: String,
    child: Child,
}

/// Runs `ssh-keygen` to make an unencrypted ed25519 key at `path`.
pub fn keygen(path: &Path) {
    keygen_with(path, "", "ed25519");
}

/// Runs `ssh-keygen` for a key of `kind` with `passphrase` (one KDF round, to keep tests fast).
pub fn keygen_with(path: &Path, passphrase: &str, kind: &str) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q", "-t", kind, "-a", "1", "-N", passphrase, "-C", "test", "-f",
        ])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Sshd {
    /// Starts sshd with default settings.
    pub fn start() -> Sshd {
        Self::start_with("")
    }

    /// Starts sshd with extra `sshd_config` lines.
    pub fn start_with(extra_config: &str) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key);
        let client_key = dir.path().join("id_ed25519");
        keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let host_key_pub = std::fs::read_to_string(host_key.with_extension("pub"))
            .expect("host pub")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::create_dir_all("/run/sshd").ok();
        let known_hosts = dir.path().join("known_hosts");
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile none\n\
                     AuthorizedKeysFile {}\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                     LogLevel VERBOSE\n{extra_config}\n",
                    host_key.display(),
                    authorized.display()
                ),
            )
            .expect("write config");
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(dir.path().join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("start sshd");
            if wait_ready(&mut child, port) {
                std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key_pub}\n"))
                    .expect("known_hosts");
                return Sshd {
                    dir,
                    port,
                    client_key,
                    known_hosts,
                    host_key_pub,
                    child,
                };
            }
            // The port was taken in between, or sshd refused the config: try another port.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd did not start: {}",
            std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    /// The pid of the listening sshd: every session process descends from it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sshd log so far (for failing assertions).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Stops the server (by pid).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
