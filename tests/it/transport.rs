//! The SSH transport against a real OpenSSH sshd on loopback: commands, host keys, keys,
//! timeouts, files, uploads, forwards and jump hosts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_recover::remote::{Cmd, ExitStatus, Remote, RemoteError, WriteOpts};
use etcd_recover::transport::{
    Agent, ConnectOptions, Connector, NoPrompt, PassphrasePrompt, SshNode,
};
use zeroize::Zeroizing;

use crate::harness::*;

/// A connector that uses key files only: the machine's ssh-agent must not influence tests.
fn connector() -> Connector {
    Connector::new(options(false), Arc::new(NoPrompt))
}

fn options(accept_new_host_keys: bool) -> ConnectOptions {
    ConnectOptions {
        accept_new_host_keys,
        agent: Agent::Disabled,
    }
}

async fn connect(sshd: &Sshd) -> SshNode {
    connector()
        .connect(&sshd.target("cp-1"))
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}\n{}", sshd.log()))
}

/// Commands get their arguments byte for byte, and report stdout, stderr and status apart.
#[tokio::test]
async fn exec_keeps_arguments_intact_and_separates_the_streams() {
    let sshd = Sshd::start();
    let node = connect(&sshd).await;
    assert!(node.is_root());
    assert!(!node.uses_sudo());
    let weird = [
        "a b",
        "it's",
        "$(echo pwned)",
        "*",
        "",
        "x;y",
        "\"q\"",
        "tab\there",
    ];
    let mut argv = vec!["printf".to_string(), "%s|".into()];
    argv.extend(weird.iter().map(|s| s.to_string()));
    let out = node.exec(&Cmd::new(argv).unprivileged()).await.unwrap();
    assert_eq!(out.stdout_text(), format!("{}|", weird.join("|")));

    let out = node
        .exec(&Cmd::script(
            "echo out; echo err >&2; exit 7",
            Vec::<String>::new(),
        ))
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(7));
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_text(), "err");
    let err = node
        .run(&Cmd::new(["ls", "/nonexistent-dir"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::Command { status: ExitStatus::Code(2), stderr, .. } if stderr.contains("No such file")),
        "{err}"
    );

    let out = node
        .exec(&Cmd::script("kill -KILL $$", Vec::<String>::new()))
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Signal("KILL".into()));

    // Standard input, larger than one SSH window, comes back unchanged.
    let input: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = node
        .exec(&Cmd::new(["cat"]).stdin(input.clone()))
        .await
        .unwrap();
    assert!(out.stdout == input);
    node.close().await;
}

/// A node whose key is not on record is refused with its fingerprint and the fix; with
/// --accept-new-host-keys the key is recorded, and later strict connections succeed.
#[tokio::test]
async fn unknown_host_key_is_refused_then_accepted_on_request() {
    let sshd = Sshd::start();
    let kh = sshd.dir.path().join("empty_known_hosts");
    let mut target = sshd.target("cp-1");
    target.endpoint.known_hosts = vec![kh.clone()];
    let err = connector().connect(&target).await.unwrap_err();
    let fp = fingerprint(&sshd.host_key_pub);
    let RemoteError::HostKey { node, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(node, "cp-1");
    assert!(
        reason.contains(&format!("no host key for `[127.0.0.1]:{}`", sshd.port)),
        "{reason}"
    );
    assert!(reason.contains(&format!("ED25519 key {fp}")), "{reason}");
    assert!(reason.contains("--accept-new-host-keys"), "{reason}");
    assert!(!kh.exists(), "a refused key must not be recorded");

    let accepting = Connector::new(options(true), Arc::new(NoPrompt));
    let node = accepting.connect(&target).await.unwrap();
    assert_eq!(node.notes().len(), 1);
    assert!(node.notes()[0].contains(&fp), "{:?}", node.notes());
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        recorded,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key_pub)
    );
    node.close().await;
    let node = connector().connect(&target).await.unwrap();
    assert!(node.notes().is_empty());
    node.close().await;
}

/// A changed key is refused even with --accept-new-host-keys, naming file and line.
#[tokio::test]
async fn changed_host_key_is_always_refused() {
    let sshd = Sshd::start();
    let other = sshd.dir.path().join("other_host_key");
    keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let kh = sshd.dir.path().join("changed_known_hosts");
    std::fs::write(
        &kh,
        format!(
            "# managed by hand\nunrelated {}\n[127.0.0.1]:{} {}",
            sshd.host_key_pub, sshd.port, other_pub
        ),
    )
    .unwrap();
    let mut target = sshd.target("cp-1");
    target.endpoint.known_hosts = vec![kh.clone()];
    let accepting = Connector::new(options(true), Arc::new(NoPrompt));
    let err = accepting.connect(&target).await.unwrap_err();
    let RemoteError::HostKey { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("THE HOST KEY HAS CHANGED"), "{reason}");
    assert!(reason.contains(&format!("{}:3", kh.display())), "{reason}");
    assert!(
        reason.contains(&fingerprint(&sshd.host_key_pub)),
        "{reason}"
    );
    assert!(reason.contains(&fingerprint(&other_pub)), "{reason}");
    assert!(reason.contains("ssh-keygen -R"), "{reason}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 3);
}

/// A key the server does not accept gives an authentication error naming the key and the fix.
#[tokio::test]
async fn wrong_user_key_is_refused_with_a_clear_message() {
    let sshd = Sshd::start();
    let wrong = sshd.dir.path().join("wrong_key");
    keygen(&wrong);
    let mut target = sshd.target("cp-1");
    target.endpoint.identity_files = vec![wrong.clone(), sshd.dir.path().join("missing_key")];
    let err = connector().connect(&target).await.unwrap_err();
    let RemoteError::Auth { node, user, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!((node.as_str(), user.as_str()), ("cp-1", "root"));
    assert!(
        reason.contains(&format!(
            "the server refused {} (ED25519 SHA256:",
            wrong.display()
        )),
        "{reason}"
    );
    assert!(reason.contains("missing_key does not exist"), "{reason}");
    assert!(reason.contains("authorized_keys"), "{reason}");
    assert!(
        err.to_string()
            .starts_with("cp-1: authentication failed for user root: "),
        "{err}"
    );
}

/// RSA (with SHA-2 signatures) and ECDSA keys authenticate too.
#[tokio::test]
async fn rsa_and_ecdsa_keys_work() {
    let sshd = Sshd::start();
    let mut authorized = String::new();
    let mut keys = Vec::new();
    for kind in ["rsa", "ecdsa"] {
        let k = sshd.dir.path().join(format!("id_{kind}"));
        keygen_with(&k, "", kind);
        authorized.push_str(&std::fs::read_to_string(k.with_extension("pub")).unwrap());
        keys.push(k);
    }
    std::fs::write(sshd.dir.path().join("authorized_keys"), authorized).unwrap();
    for k in keys {
        let mut target = sshd.target("cp-1");
        target.endpoint.identity_files = vec![k.clone()];
        let node = connector()
            .connect(&target)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", k.display()));
        node.close().await;
    }
}

struct CountingPrompt {
    asked: AtomicU32,
    answer: Option<&'static str>,
}

impl PassphrasePrompt for CountingPrompt {
    fn passphrase(&self, _: &Path, _: u32) -> Option<Zeroizing<String>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.answer.map(|a| Zeroizing::new(a.to_string()))
    }
}

/// A passphrase-protected key is asked for once for all nodes; without a terminal the error
/// says what to do.
#[tokio::test]
async fn passphrase_is_asked_once_per_key_file() {
    let sshd = Sshd::start();
    let locked = sshd.dir.path().join("locked_key");
    keygen_with(&locked, "correct horse", "ed25519");
    std::fs::copy(
        locked.with_extension("pub"),
        sshd.dir.path().join("authorized_keys"),
    )
    .unwrap();
    let targets: Vec<_> = (1..=3)
        .map(|i| {
            let mut t = sshd.target(&format!("cp-{i}"));
            t.endpoint.identity_files = vec![locked.clone()];
            t
        })
        .collect();
    let prompt = Arc::new(CountingPrompt {
        asked: AtomicU32::new(0),
        answer: Some("correct horse"),
    });
    let c = Connector::new(options(false), prompt.clone());
    for node in c.connect_all(&targets).await {
        node.unwrap().close().await;
    }
    assert_eq!(prompt.asked.load(Ordering::SeqCst), 1);

    let err = connector().connect(&targets[0]).await.unwrap_err();
    let RemoteError::Auth { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        reason.contains("it is passphrase-protected and there is no terminal to ask for the passphrase; add it to ssh-agent (`ssh-add"),
        "{reason}"
    );
    assert!(!reason.contains("correct horse"));
}

/// Keys in the ssh-agent are used: a passphrase-protected key file the agent holds needs no
/// prompt, and with no key file at all the agent's keys are offered.
#[tokio::test]
async fn ssh_agent_keys_are_used() {
    let sshd = Sshd::start();
    let plain = sshd.dir.path().join("agent_key");
    keygen(&plain);
    std::fs::copy(
        plain.with_extension("pub"),
        sshd.dir.path().join("authorized_keys"),
    )
    .unwrap();
    let locked = sshd.dir.path().join("agent_key_locked");
    std::fs::copy(&plain, &locked).unwrap();
    let encrypted = std::process::Command::new("ssh-keygen")
        .args(["-q", "-p", "-a", "1", "-P", "", "-N", "secret", "-f"])
        .arg(&locked)
        .output()
        .unwrap();
    assert!(encrypted.status.success());

    let socket = sshd.dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&plain)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let prompt = Arc::new(CountingPrompt {
        asked: AtomicU32::new(0),
        answer: None,
    });
    let c = Connector::new(
        ConnectOptions {
            agent: Agent::Socket(socket.clone()),
            ..Default::default()
        },
        prompt.clone(),
    );
    let mut target = sshd.target("cp-1");
    target.endpoint.identity_files = vec![locked];
    let result = c.connect(&target).await;
    let mut only_agent = sshd.target("cp-2");
    only_agent.endpoint.identity_files = vec![];
    only_agent.endpoint.identities_only = false;
    let result2 = c.connect(&only_agent).await;
    let _ = agent.kill();
    let _ = agent.wait();
    result.unwrap().close().await;
    result2.unwrap().close().await;
    assert_eq!(prompt.asked.load(Ordering::SeqCst), 0);
}

/// A closed port is reported at once as unreachable; a silent address within the timeout.
#[tokio::test]
async fn unreachable_nodes_are_reported_within_the_timeout() {
    let mut sshd = Sshd::start();
    let target = sshd.target("cp-1");
    sshd.stop();
    let started = Instant::now();
    let err = connector().connect(&target).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    let RemoteError::Unreachable { addr, reason, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(addr, &format!("root@127.0.0.1:{}", sshd.port));
    assert!(reason.contains("connection refused"), "{reason}");

    // A listener that never speaks SSH: the handshake runs into the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut target = sshd.target("cp-2");
    target.endpoint.port = silent.local_addr().unwrap().port();
    target.connect_timeout = Duration::from_millis(700);
    let started = Instant::now();
    let err = connector().connect(&target).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        err.to_string().contains("no SSH session within 700ms"),
        "{err}"
    );
}

/// A command that overruns its timeout is killed and reported; the session stays usable.
#[tokio::test]
async fn command_timeout_kills_the_command() {
    let sshd = Sshd::start();
    let node = connect(&sshd).await;
    let marker = sshd.dir.path().join("still-running");
    let script = "sleep 3; touch \"$1\"";
    let started = Instant::now();
    let err = node
        .exec(
            &Cmd::script(script, [marker.display().to_string()])
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, RemoteError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("did not finish within 500ms"),
        "{err}"
    );
    let out = node.run(&Cmd::new(["echo", "alive"])).await.unwrap();
    assert_eq!(out.stdout_text(), "alive\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !marker.exists(),
        "the timed-out command kept running\n{}",
        sshd.log()
    );
}

/// Commands run through a shell kept open on the node: what the login shell's rc files print
/// does not reach a command's output, concurrent commands each get their own shell, and a
/// shell that ends while idle is replaced without the caller noticing.
#[tokio::test]
async fn command_shells_skip_login_noise_run_concurrently_and_are_replaced() {
    // bash reads ~/.bashrc for every command sshd runs (Debian's SSH_SOURCE_BASHRC); this
    // one greets on both streams, as rc files on real nodes do.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".bashrc"),
        "echo 'Welcome to cp-1'\necho 'rc warning' >&2\n",
    )
    .unwrap();
    let sshd = Sshd::start_with(&format!("SetEnv HOME={}\n", home.path().display()));
    // The premise: a plain `ssh host cmd` gets the greeting mixed into its output.
    let plain = std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
        .arg("-i")
        .arg(&sshd.client_key)
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "echo hi"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        "Welcome to cp-1\nhi\n"
    );

    let node = connect(&sshd).await;
    let out = node.run(&Cmd::new(["echo", "hi"])).await.unwrap();
    assert_eq!(out.stdout_text(), "hi\n");
    assert_eq!(out.stderr_text(), "");

    let runs = (0..8).map(|i| {
        let node = &node;
        async move {
            let input = format!("input {i}\n").repeat(1000);
            let out = node
                .run(
                    &Cmd::script("sleep 0.3; cat; echo \"$1\"", [i.to_string()])
                        .stdin(input.clone()),
                )
                .await
                .unwrap();
            assert_eq!(out.stdout_text(), format!("{input}{i}\n"));
        }
    });
    futures::future::join_all(runs).await;

    // At most four stay open; the others end once their input closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while shell_pids(sshd.pid()).len() > 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shells = shell_pids(sshd.pid());
    assert!(
        !shells.is_empty() && shells.len() <= 4,
        "idle shells: {shells:?}"
    );
    for pid in &shells {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shell_pids(sshd.pid()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shell_pids(sshd.pid()).is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = node.run(&Cmd::new(["echo", "again"])).await.unwrap();
    assert_eq!(out.stdout_text(), "again\n");
    assert_eq!(shell_pids(sshd.pid()).len(), 1);
    node.close().await;
}

/// Processes under sshd `root_pid` running the command shell.
fn shell_pids(root_pid: u32) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        // `sh -c SERVER sh NONCE`: the server itself, not the subshells it forks.
        let is_server = args.len() >= 4
            && args[0].ends_with(b"sh")
            && args[2].windows(18).any(|w| w == b"etcd-recover-shell")
            && args[3] == b"sh";
        if !is_server {
            continue;
        }
        let mut p = pid;
        while let Some(pp) = parent(p) {
            if pp == root_pid {
                found.push(pid);
                break;
            }
            if pp <= 1 {
                break;
            }
            p = pp;
        }
    }
    found
}

/// Long silent phases do not end the session: keepalives answer the server's probes.
#[tokio::test]
async fn silent_commands_survive_server_keepalive_probes() {
    let sshd = Sshd::start_with("ClientAliveInterval 1\nClientAliveCountMax 2\n");
    let mut target = sshd.target("cp-1");
    target.keepalive_interval = Some(Duration::from_secs(1));
    let node = connector().connect(&target).await.unwrap();
    let out = node.run(&Cmd::new(["sleep", "4"])).await.unwrap();
    assert!(out.duration >= Duration::from_secs(4));
    node.close().await;
}

/// Atomic writes keep an existing file's mode and owner and use the given mode for new files;
/// `read_file` reads them back.
#[tokio::test]
async fn write_file_atomic_keeps_mode_and_owner() {
    let sshd = Sshd::start();
    let node = connect(&sshd).await;
    let dir = sshd.dir.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    let existing = dir.join("etcd.yaml");
    std::fs::write(&existing, "old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&existing, Some(1), Some(2)).unwrap();
    let path = existing.display().to_string();
    node.write_file_atomic(&path, b"new contents\n", &WriteOpts::default())
        .await
        .unwrap();
    let meta = std::fs::metadata(&existing).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1, 2));
    assert_eq!(node.read_file(&path).await.unwrap(), b"new contents\n");

    let fresh = dir.join("new.yaml");
    let staging = sshd.dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    node.write_file_atomic(
        &fresh.display().to_string(),
        b"x",
        &WriteOpts {
            temp_dir: Some(staging.display().to_string()),
            mode: Some(0o600),
        },
    )
    .await
    .unwrap();
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(&staging).unwrap())
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");

    let err = node
        .read_file(&dir.join("absent").display().to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Command { .. }), "{err}");
}

/// A 256 MiB upload arrives intact (SHA-256 computed locally, by the node, and of the file on
/// disk), with mode 0600, without leaving temporary files behind; with an expected hash, only
/// a copy that matches it replaces the target.
#[tokio::test]
async fn upload_of_256_mib_is_verified() {
    let sshd = Sshd::start();
    let node = connect(&sshd).await;
    let local = sshd.dir.path().join("snapshot.db");
    let expected = write_pseudo_random(&local, 256 << 20);
    let dest_dir = sshd.dir.path().join("dest");
    std::fs::create_dir(&dest_dir).unwrap();
    let remote = dest_dir.join("snapshot.db");
    let remote_path = remote.display().to_string();
    let last = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let progress = |n: u64| {
        assert!(n >= last.load(Ordering::SeqCst));
        last.store(n, Ordering::SeqCst);
        calls.fetch_add(1, Ordering::SeqCst);
    };
    let hash = node
        .upload(&local, &remote_path, 0o600, None, &progress)
        .await
        .unwrap();
    assert_eq!(hash, expected);
    assert_eq!(last.load(Ordering::SeqCst), 256 << 20);
    assert!(calls.load(Ordering::SeqCst) > 100);
    assert_eq!(sha256_file(&remote), expected);
    assert_eq!(std::fs::metadata(&remote).unwrap().mode() & 0o7777, 0o600);
    let names: Vec<_> = std::fs::read_dir(&dest_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("snapshot.db")]);

    // Replacing an existing file, and an empty file.
    let empty = sshd.dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let hash = node
        .upload(&empty, &remote_path, 0o640, None, &|_| {})
        .await
        .unwrap();
    assert_eq!(hex::encode(hash), sha256_hex(b""));
    assert_eq!(std::fs::metadata(&remote).unwrap().len(), 0);
    assert_eq!(std::fs::metadata(&remote).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(std::fs::read_dir(&dest_dir).unwrap().count(), 1);

    // A directory that does not exist: a clear error, nothing written.
    let err = node
        .upload(&local, "/nonexistent-dir/snapshot.db", 0o600, None, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Command { .. }), "{err}");
    assert!(err.to_string().contains("mktemp"), "{err}");

    // With the hash known in advance (as a restore knows its verified snapshot's), the copy
    // lands when the node's hash matches it...
    let hash = node
        .upload(&local, &remote_path, 0o600, Some(expected), &|_| {})
        .await
        .unwrap();
    assert_eq!(hash, expected);
    assert_eq!(sha256_file(&remote), expected);

    // ...and is refused otherwise: the previous file stays, no temporary file is left, and
    // the error says the local file is no longer the one that was verified.
    std::fs::write(&empty, b"not the verified snapshot").unwrap();
    let err = node
        .upload(&empty, &remote_path, 0o600, Some(expected), &|_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("changed after it was verified"), "{text}");
    assert!(text.contains(&hex::encode(&expected[..8])), "{text}");
    assert_eq!(sha256_file(&remote), expected);
    assert_eq!(std::fs::read_dir(&dest_dir).unwrap().count(), 1);
}

/// A forwarded local port reaches a TCP service as seen from the node.
#[tokio::test]
async fn forward_reaches_a_service_through_the_node() {
    let sshd = Sshd::start();
    let node = connect(&sshd).await;
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = service.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let fwd = node.forward("127.0.0.1", service_port).await.unwrap();
    for round in 0..3 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(fwd.local_addr)
            .await
            .unwrap();
        let msg = format!("hello {round}");
        c.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0; msg.len()];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    let addr = fwd.local_addr;
    drop(fwd);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = node.forward("127.0.0.1", closed_port).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("cannot connect to 127.0.0.1:{closed_port}")),
        "{err}"
    );
}

/// A node is reached through a jump host, whose host key is verified too.
#[tokio::test]
async fn proxy_jump_reaches_the_node_and_checks_the_jump_host_key() {
    let jump = Sshd::start();
    let target_sshd = Sshd::start();
    let mut target = target_sshd.target("cp-2");
    target.jumps = vec![jump.endpoint()];
    let node = connector().connect(&target).await.unwrap();
    let out = node.run(&Cmd::new(["echo", "via jump"])).await.unwrap();
    assert_eq!(out.stdout_text(), "via jump\n");
    node.close().await;

    let mut bad_jump = jump.endpoint();
    bad_jump.known_hosts = vec![jump.dir.path().join("nothing")];
    target.jumps = vec![bad_jump];
    let err = connector().connect(&target).await.unwrap_err();
    let RemoteError::HostKey { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        reason.starts_with(&format!(
            "jump host root@127.0.0.1:{}: no host key",
            jump.port
        )),
        "{reason}"
    );
}
