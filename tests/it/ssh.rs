//! Transport hardening against a real OpenSSH sshd on loopback: deadlines on every network
//! wait, host key policy (key types, hashed names), the port forward's local listener, host
//! and user certificates, ProxyCommand and sudo with a password.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_recover::remote::{Remote, RemoteError};
use etcd_recover::transport::{Agent, ConnectOptions, Connector, NoPrompt, SshNode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

fn connector(accept_new_host_keys: bool) -> Connector {
    Connector::new(
        ConnectOptions {
            accept_new_host_keys,
            agent: Agent::Disabled,
        },
        Arc::new(NoPrompt),
    )
}

async fn connect(sshd: &Sshd, target: &etcd_recover::inventory::SshTarget) -> SshNode {
    connector(false)
        .connect(target)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}\n{}", sshd.log()))
}

/// Every process below `root`, found through `/proc/*/stat`.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parent = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').unwrap_or(0) + 1..close].to_string();
        let ppid: u32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parent.push((pid, ppid, comm));
    }
    let mut found: Vec<(u32, String)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, comm) in &parent {
            if *ppid == p && !found.iter().any(|(f, _)| f == pid) {
                found.push((*pid, comm.clone()));
                frontier.push(*pid);
            }
        }
    }
    found
}

fn signal_all(pids: &[u32], sig: Signal) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid as i32), sig);
    }
}

/// Resumes stopped processes when dropped, also when the test fails.
struct Resume(Vec<u32>);

impl Drop for Resume {
    fn drop(&mut self) {
        signal_all(&self.0, Signal::SIGCONT);
    }
}

/// Awaits `fut`, failing the test when it takes longer than `secs` seconds (a hang).
async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung past {secs} s"))
}

/// A target with keepalives off: nothing but the transport's own deadlines can end a wait.
fn quiet_target(sshd: &Sshd) -> etcd_recover::inventory::SshTarget {
    let mut t = sshd.target("cp-1");
    t.keepalive_interval = None;
    t.connect_timeout = Duration::from_secs(2);
    t.command_timeout = Duration::from_secs(2);
    t
}

/// Issue 13, "waits without a deadline": a node whose disk hangs in `dd` (stopped here) makes
/// the upload fail within its deadline (command timeout plus 1 s per MiB), with keepalives off.
#[tokio::test]
async fn an_upload_to_a_node_hanging_in_dd_fails_within_its_deadline() {
    let sshd = Sshd::start();
    let node = connect(&sshd, &quiet_target(&sshd)).await;
    let local = sshd.dir.path().join("snapshot.db");
    std::fs::write(&local, vec![7u8; 8 << 20]).unwrap();
    let remote = sshd.dir.path().join("uploaded.db");
    let remote = remote.to_str().unwrap().to_string();

    let started = Instant::now();
    let upload = node.upload(&local, &remote, 0o600, None, &|_| {});
    tokio::pin!(upload);
    let mut stopped = Resume(Vec::new());
    let outcome = within(60, "the upload", async {
        loop {
            tokio::select! {
                r = &mut upload => return r,
                _ = tokio::time::sleep(Duration::from_millis(10)), if stopped.0.is_empty() => {
                    let dd: Vec<u32> = descendants(sshd.pid())
                        .into_iter()
                        .filter(|(_, comm)| comm == "dd")
                        .map(|(pid, _)| pid)
                        .collect();
                    signal_all(&dd, Signal::SIGSTOP);
                    stopped.0 = dd;
                }
            }
        }
    })
    .await;
    assert!(!stopped.0.is_empty(), "dd was never seen on the node");
    let err = outcome.expect_err("the upload cannot succeed while dd is stopped");
    assert!(
        err.to_string().contains("did not finish within 10s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    signal_all(&stopped.0, Signal::SIGKILL);
    drop(stopped);
    assert!(!Path::new(&remote).exists());
}

/// Issue 13, "waits without a deadline": with the node's sshd stopped and keepalives off,
/// opening a channel (an upload) and opening a port forward fail within connect_timeout.
#[tokio::test]
async fn channel_and_forward_opens_fail_within_connect_timeout_when_sshd_hangs() {
    let sshd = Sshd::start();
    let node = connect(&sshd, &quiet_target(&sshd)).await;
    let local = sshd.dir.path().join("small");
    std::fs::write(&local, b"x").unwrap();
    let sessions: Vec<u32> = descendants(sshd.pid())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(!sessions.is_empty());
    signal_all(&sessions, Signal::SIGSTOP);
    let _resume = Resume(sessions);

    let forward = node.forward("127.0.0.1", 9);
    let err = fails_soon("opening a forward", forward).await;
    assert!(err.contains("within 2s (connect_timeout)"), "{err}");
    let upload = node.upload(&local, "/tmp/never", 0o600, None, &|_| {});
    let err = fails_soon("opening a channel", upload).await;
    assert!(err.contains("did not answer within 2s"), "{err}");
}

/// The error of `fut`, which must fail within 10 s.
async fn fails_soon<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, RemoteError>>,
) -> String {
    let started = Instant::now();
    let Err(err) = within(30, what, fut).await else {
        panic!("{what} succeeded")
    };
    assert!(started.elapsed() < Duration::from_secs(10), "{what}");
    err.to_string()
}

/// Issue 13, "request_identities() on the agent runs before any timeout": an agent that
/// accepts connections and never answers delays a connection by its bounded wait only.
#[tokio::test]
async fn an_agent_that_never_answers_does_not_hang_the_connection() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // Bound and listening, never accepting: connects succeed, requests are never answered.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let key = dir.path().join("id_locked");
    keygen_with(&key, "a passphrase", "ed25519");
    let mut target = sshd.target("cp-1");
    target.endpoint.identity_files = vec![key];
    let hanging_agent = Connector::new(
        ConnectOptions {
            agent: Agent::Socket(socket),
            ..Default::default()
        },
        Arc::new(NoPrompt),
    );
    let started = Instant::now();
    let err = within(
        60,
        "connecting with a silent agent",
        hanging_agent.connect(&target),
    )
    .await
    .expect_err("the only key is locked");
    assert!(matches!(err, RemoteError::Auth { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 13: the port forward's listener on 127.0.0.1 serves this user only; a connection
/// from another local user (nobody, through bash's /dev/tcp) is closed before any tunnel.
#[tokio::test]
async fn the_port_forward_refuses_other_local_users() {
    use std::os::unix::process::CommandExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sshd = Sshd::start();
    let node = connect(&sshd, &sshd.target("cp-1")).await;
    // Stands in for etcd on the node: echoes what it gets.
    let echo_port = echo_service().await;
    let forward = node.forward("127.0.0.1", echo_port).await.unwrap();
    let port = forward.local_addr.port();

    let mut mine = tokio::net::TcpStream::connect(forward.local_addr)
        .await
        .unwrap();
    mine.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within(10, "the echo", mine.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"ping");

    let other = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 9; printf ping >&3; timeout 3 cat <&3"
            ))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_ne!(
        other.status.code(),
        Some(9),
        "nobody could not even connect"
    );
    assert!(
        other.stdout.is_empty(),
        "another user got through the tunnel: {:?}",
        String::from_utf8_lossy(&other.stdout)
    );
    // The listener still serves its own user afterwards.
    let mut again = tokio::net::TcpStream::connect(forward.local_addr)
        .await
        .unwrap();
    again.write_all(b"pong").await.unwrap();
    within(10, "the echo", again.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"pong");
}

/// ProxyCommand: the session runs over a local command's standard input and output (socat
/// here); the command is killed when the session ends.
#[tokio::test]
async fn a_proxy_command_carries_the_session_and_ends_with_it() {
    let sshd = Sshd::start();
    let mut target = sshd.target("cp-1");
    let marker = format!("TCP:127.0.0.1:{}", sshd.port);
    target.endpoint.proxy_command = Some(format!("socat - {marker}"));
    let node = connect(&sshd, &target).await;
    let out = node
        .run(&etcd_recover::remote::Cmd::new(["echo", "through the proxy"]).unprivileged())
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "through the proxy\n");
    let socat = || {
        descendants(std::process::id())
            .into_iter()
            .filter(|(_, comm)| comm == "socat")
            .count()
    };
    assert_eq!(socat(), 1);
    node.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while socat() > 0 {
        assert!(
            Instant::now() < deadline,
            "the ProxyCommand outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A ProxyCommand that fails: the error names the command and shows what it printed, with
/// control characters escaped.
#[tokio::test]
async fn a_failing_proxy_command_is_named_with_its_stderr() {
    let sshd = Sshd::start();
    let mut target = sshd.target("cp-1");
    // Run as OpenSSH does, `exec COMMAND`: the inner shell is what exits with 3.
    target.endpoint.proxy_command =
        Some("sh -c 'printf \"bastion says no\\033[31m\\n\" >&2; exit 3'".into());
    let err = connector(false).connect(&target).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RemoteError::Unreachable { .. }), "{text}");
    assert!(text.contains("through the ProxyCommand `sh -c"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("bastion says no\\u{1b}[31m"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
}

/// `etcd-recover check -o json -i INVENTORY`, hermetic: no SSH config, no agent.
fn check_json(inventory: &Path) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-recover"))
        .args(["check", "-o", "json", "--ssh-config", "/dev/null", "-i"])
        .arg(inventory)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run etcd-recover");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// The lab's inventory with the `ssh:` defaults line `key: ...` replaced by `key: value` (or
/// appended), written next to it as `name`.
fn lab_inventory(lab: &Lab, name: &str, settings: &[(&str, String)]) -> PathBuf {
    let text = std::fs::read_to_string(&lab.inventory).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (key, value) in settings {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("  {key}:")));
        let line = format!("  {key}: {value}");
        match at {
            Some(i) => lines[i] = line,
            None => {
                let ssh = lines.iter().position(|l| l == "ssh:").unwrap();
                lines.insert(ssh + 1, line);
            }
        }
    }
    let path = lab.dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Against the lab (real sshd, real etcd): `check` through a ProxyCommand shows it under
/// `via`; host certificates signed by the lab's CA verify through an `@cert-authority` line
/// alone (no `--accept-new-host-keys`, nothing recorded); a user certificate signed by the
/// lab's CA logs in with a key that is not in authorized_keys.
#[test]
fn lab_proxy_command_host_certificates_and_user_certificates() {
    let lab = Lab::up(LabOptions {
        nodes: 1,
        ..Default::default()
    })
    .expect("lab up");
    let ip = lab.node_ip(1);
    let ssh_dir = lab.dir.join("ssh");

    let proxied = lab_inventory(
        &lab,
        "proxy.yaml",
        &[("proxy_command", "socat - TCP:%h:%p".to_string())],
    );
    let (code, r, stderr) = check_json(&proxied);
    assert_eq!(code, 0, "{r}\n{stderr}");
    assert_eq!(
        r["nodes"][0]["via"],
        serde_json::json!([format!("ProxyCommand `socat - TCP:{ip}:22`")])
    );

    let ca_only = ssh_dir.join("known_hosts_ca");
    let before = std::fs::read_to_string(&ca_only).unwrap();
    assert!(before.starts_with("@cert-authority "), "{before}");
    let certified = lab_inventory(
        &lab,
        "ca.yaml",
        &[("known_hosts", ca_only.display().to_string())],
    );
    let (code, r, stderr) = check_json(&certified);
    assert_eq!(code, 0, "{r}\n{stderr}");
    assert_eq!(std::fs::read_to_string(&ca_only).unwrap(), before);
    // The same file with the CA line for other hosts only: refused as unknown.
    let elsewhere = lab.dir.join("known_hosts_ca_elsewhere");
    std::fs::write(&elsewhere, before.replacen(&ip.to_string(), "192.0.2.1", 1)).unwrap();
    let refused = lab_inventory(
        &lab,
        "ca-elsewhere.yaml",
        &[("known_hosts", elsewhere.display().to_string())],
    );
    let (code, r, _) = check_json(&refused);
    assert_ne!(code, 0);
    let failure = r["nodes"][0]["authenticated"].to_string();
    assert!(failure.contains("no host key"), "{failure}");

    // A key that sshd does not know; only its certificate gets it in.
    let user_key = lab.dir.join("id_certified");
    keygen_with(&user_key, "", "ed25519");
    let inventory = lab_inventory(
        &lab,
        "usercert.yaml",
        &[("identity_file", user_key.display().to_string())],
    );
    let (code, r, _) = check_json(&inventory);
    assert_ne!(code, 0, "a key without certificate must be refused: {r}");
    let signed = std::process::Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ssh_dir.join("ca"))
        .args(["-I", "sre@example", "-n", "root"])
        .arg(user_key.with_extension("pub"))
        .status()
        .unwrap();
    assert!(signed.success());
    assert!(lab.dir.join("id_certified-cert.pub").is_file());
    let (code, r, stderr) = check_json(&inventory);
    assert_eq!(code, 0, "{r}\n{stderr}");
}

/// A prompt that knows the sudo password (as the terminal prompt would be answered).
struct SudoPrompt(&'static str);

impl etcd_recover::transport::PassphrasePrompt for SudoPrompt {
    fn passphrase(&self, _: &Path, _: u32) -> Option<zeroize::Zeroizing<String>> {
        None
    }
    fn sudo_password(&self, _: &str) -> Option<zeroize::Zeroizing<String>> {
        Some(zeroize::Zeroizing::new(self.0.to_string()))
    }
}

/// A login user whose sudo asks for a password; the sudoers rule is removed on drop.
struct PasswordSudoUser;

impl PasswordSudoUser {
    const RULE: &'static str = "/etc/sudoers.d/etcd-recover-test-sudo-password";

    fn create(name: &'static str, password: &str) -> Self {
        let exists = std::process::Command::new("id")
            .arg(name)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let ok = std::process::Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", name])
                .status()
                .unwrap()
                .success();
            assert!(ok, "useradd {name}");
        }
        let mut chpasswd = std::process::Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success());
        std::fs::write(Self::RULE, format!("{name} ALL=(ALL) ALL\n")).unwrap();
        std::fs::set_permissions(
            Self::RULE,
            std::os::unix::fs::PermissionsExt::from_mode(0o440),
        )
        .unwrap();
        PasswordSudoUser
    }
}

impl Drop for PasswordSudoUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Self::RULE);
    }
}

/// sudo with a password: asked once, checked at connect time, fed to `sudo -S` so that
/// privileged commands, atomic writes and uploads run as root, while each command's own input
/// arrives intact (the password never leaks into it). A wrong password fails the connection
/// with a sudo error before any command runs.
#[tokio::test]
async fn sudo_with_a_password_runs_privileged_commands_and_refuses_a_wrong_one() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = Sshd::start();
    let _user = PasswordSudoUser::create("etcdrecsudopw", "Right-Pass-1");
    // sshd reads authorized_keys as the user: let it in.
    std::fs::set_permissions(sshd.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut target = sshd.target("cp-1");
    target.endpoint.user = "etcdrecsudopw".into();
    target.sudo_password = etcd_recover::inventory::SudoPassword::Prompt;
    let connector = |password: &'static str| {
        Connector::new(
            ConnectOptions {
                accept_new_host_keys: false,
                agent: Agent::Disabled,
            },
            Arc::new(SudoPrompt(password)),
        )
    };

    let node = connector("Right-Pass-1")
        .connect(&target)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(!node.is_root() && node.uses_sudo());
    let out = node
        .run(&etcd_recover::remote::Cmd::new(["id", "-u"]))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "0\n");
    let out = node
        .run(&etcd_recover::remote::Cmd::new(["cat"]).stdin("only this\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "only this\n");
    let dir = sshd.dir.path().join("root-only");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let written = dir.join("etcd.yaml");
    node.write_file_atomic(
        written.to_str().unwrap(),
        b"apiVersion: v1\n",
        &etcd_recover::remote::WriteOpts::default(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&written).unwrap(), b"apiVersion: v1\n");
    let local = sshd.dir.path().join("snap");
    std::fs::write(&local, vec![3u8; 300_000]).unwrap();
    let uploaded = dir.join("snap");
    node.upload(&local, uploaded.to_str().unwrap(), 0o600, None, &|_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&uploaded).unwrap(), vec![3u8; 300_000]);
    node.close().await;

    let err = connector("Wrong-Pass")
        .connect(&target)
        .await
        .expect_err("a wrong sudo password must fail the connection");
    let text = err.to_string();
    assert!(matches!(err, RemoteError::Sudo { .. }), "{text}");
    assert!(
        text.contains("sudo refused the password for etcdrecsudopw"),
        "{text}"
    );
    assert!(!text.contains("Wrong-Pass"), "{text}");
}
