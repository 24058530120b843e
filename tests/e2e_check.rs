//! `etcd-recover check` against real lab clusters (real sshd, real etcd with kubeadm PKI):
//! healthy clusters as root and as a sudo user, host key refusals, a wrong key, a stopped
//! sshd, a silent node, and ProxyJump through one node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_recover_lab::testing::{EtcdVersion, Lab, LabOptions};
use serde_json::Value;

/// What a run of the binary produced.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `etcd-recover check -i INVENTORY ARGS` hermetically: no SSH config of this machine,
/// no agent.
fn check(inventory: &Path, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-recover"))
        .arg("check")
        .arg("-i")
        .arg(inventory)
        .args(["--ssh-config", "/dev/null"])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run etcd-recover");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn lab(nodes: usize, etcd: EtcdVersion, user: Option<&str>) -> Lab {
    Lab::up(LabOptions {
        nodes,
        etcd,
        ssh_user: user.map(str::to_string),
        poll_ms: 1000,
    })
    .expect("lab up")
}

/// A copy of the lab's inventory with `edit` applied, in the lab directory.
fn edited_inventory(lab: &Lab, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(&lab.inventory).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    let path = lab.dir.join(name);
    std::fs::write(&path, edited).unwrap();
    path
}

/// Replaces the `key:` line of the `ssh:` defaults.
fn set_ssh_default(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key}:"))
                && l.starts_with("  ")
                && !l.starts_with("    ")
            {
                format!("  {key}: {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn node<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {report}"))
}

/// The host key of `ip` as recorded by the lab: `ssh-ed25519 AAAA...`.
fn lab_host_key(lab: &Lab, ip: &str) -> String {
    let kh = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let line = kh
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|h| h.split(',').any(|x| x == ip))
        })
        .unwrap_or_else(|| panic!("{ip} not in the lab's known_hosts:\n{kh}"));
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fingerprint(pub_line: &str) -> String {
    let b64 = pub_line.split_whitespace().nth(1).unwrap();
    etcd_recover::transport::known_hosts::fingerprint(
        &russh::keys::parse_public_key_base64(b64).unwrap(),
    )
}

/// Root on etcd 3.5: every check passes and the JSON says what was found; the table agrees.
/// ProxyJump through cp-1 reaches every node (and fails when cp-1's sshd is down); a stopped
/// sshd and a silent address are reported within the timeout while the others are checked.
#[test]
fn check_root_etcd35_proxy_jump_and_unreachable_nodes() {
    let lab = lab(3, EtcdVersion::V35, None);
    let run = check(&lab.inventory, &["-o", "json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["ok"], true);
    assert_eq!(r["cluster"], "lab");
    let mut leaders = 0;
    let mut cluster_ids = std::collections::BTreeSet::new();
    for i in 1..=3 {
        let n = node(&r, &format!("cp-{i}"));
        assert_eq!(n["ok"], true, "{n}");
        assert_eq!(n["address"], format!("root@{}:22", lab.node_ip(i)));
        assert_eq!(n["sudo"]["mode"], "root");
        assert_eq!(n["restore_tool"]["kind"], "etcdutl");
        assert_eq!(n["restore_tool"]["version"], "3.5.1");
        assert_eq!(n["etcd"]["version"], "3.5.1");
        assert_eq!(
            n["etcd"]["endpoint"],
            format!("https://{}:2379", lab.node_ip(i))
        );
        assert!(n["os"]["pretty_name"].as_str().unwrap().len() > 3);
        assert!(n["data_dir"]["free_bytes"].as_u64().unwrap() > 0);
        assert_eq!(
            n["data_dir"]["path"],
            lab.node_dir(i).join("var/lib/etcd").display().to_string()
        );
        assert_eq!(n["manifests"]["member_name"], format!("cp-{i}"));
        leaders += usize::from(n["etcd"]["is_leader"] == true);
        cluster_ids.insert(n["etcd"]["cluster_id"].as_str().unwrap().to_string());
    }
    assert_eq!(leaders, 1);
    assert_eq!(cluster_ids.len(), 1);
    assert_eq!(r["etcd"]["members"].as_array().unwrap().len(), 3);
    assert!(r["etcd"]["leader"].as_str().unwrap().starts_with("cp-"));

    let table = check(&lab.inventory, &[]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.starts_with("NODE  ADDRESS"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("lab: all 3 nodes are ready"),
        "{}",
        table.stdout
    );
    assert_eq!(
        table.stdout.matches(" leader rev ").count(),
        1,
        "{}",
        table.stdout
    );

    // Every node through cp-1.
    let jump = format!("root@{}", lab.node_ip(1));
    let via = edited_inventory(&lab, "jump.yaml", |t| {
        t.replace(
            "  sudo: auto\n",
            &format!("  sudo: auto\n  proxy_jump: {jump}\n"),
        )
    });
    let run = check(&via, &["-o", "json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    for i in 1..=3 {
        assert_eq!(node(&r, &format!("cp-{i}"))["via"][0], format!("{jump}:22"));
    }

    // cp-1's sshd down: nodes reached through it are unreachable, through the jump host.
    let out = lab.lab(&["fault", "--node", "cp-1", "stop-sshd"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = check(&via, &["-o", "json"]);
    assert_eq!(run.code, 3);
    let r = run.json();
    let err = node(&r, "cp-2")["reachable"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!("jump host {jump}:22: connection refused")),
        "{err}"
    );

    // Directly: cp-1 is unreachable, cp-2 and cp-3 are still checked and pass.
    let run = check(&lab.inventory, &["-o", "json"]);
    assert_eq!(run.code, 3);
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
    let r = run.json();
    let cp1 = node(&r, "cp-1");
    assert_eq!(cp1["ok"], false);
    assert_eq!(cp1["reachable"]["status"], "failed");
    assert!(cp1["reachable"]["error"]
        .as_str()
        .unwrap()
        .starts_with(&format!(
            "cp-1: cannot reach root@{}:22: connection refused",
            lab.node_ip(1)
        )));
    assert_eq!(cp1["etcd"]["status"], "skipped");
    assert_eq!(node(&r, "cp-2")["ok"], true, "{}", node(&r, "cp-2"));
    assert_eq!(node(&r, "cp-3")["ok"], true, "{}", node(&r, "cp-3"));
    let out = lab.lab(&["fault", "--node", "cp-1", "start-sshd"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A node whose address accepts TCP but never speaks SSH: reported after the connect
    // timeout, while the others finish.
    let silent = std::net::TcpListener::bind((lab.node_ip(2).to_string(), 0)).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let silent_inv = edited_inventory(&lab, "silent.yaml", |t| {
        t.replacen(
            &format!("    host: {}\n", lab.node_ip(2)),
            &format!(
                "    host: {}\n    ssh: {{port: {silent_port}, connect_timeout: 2}}\n",
                lab.node_ip(2)
            ),
            1,
        )
    });
    let run = check(&silent_inv, &["-o", "json"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.took >= Duration::from_secs(2) && run.took < Duration::from_secs(15),
        "{:?}",
        run.took
    );
    let r = run.json();
    let err = node(&r, "cp-2")["reachable"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no SSH session within 2s (connect_timeout)"),
        "{err}"
    );
    assert_eq!(node(&r, "cp-1")["ok"], true, "{}", node(&r, "cp-1"));
    assert_eq!(node(&r, "cp-3")["ok"], true, "{}", node(&r, "cp-3"));
    drop(silent);
}

/// A sudo user on etcd 3.4: checks pass through `sudo -n` with etcdctl as the restore tool,
/// and a 256 MiB upload into a root-owned directory arrives intact with mode 0600.
#[test]
fn check_sudo_user_etcd34_and_upload_through_sudo() {
    let lab = lab(3, EtcdVersion::V34, Some("erlab"));
    let run = check(&lab.inventory, &["-o", "json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    for i in 1..=3 {
        let n = node(&r, &format!("cp-{i}"));
        assert_eq!(n["ok"], true, "{n}");
        assert_eq!(n["authenticated"]["user"], "erlab");
        assert_eq!(n["sudo"]["mode"], "sudo");
        assert_eq!(n["restore_tool"]["kind"], "etcdctl");
        assert!(n["restore_tool"]["version"]
            .as_str()
            .unwrap()
            .starts_with("3.4."));
        assert!(n["etcd"]["version"].as_str().unwrap().starts_with("3.4."));
    }

    // The upload, through the library: inventory → targets → connector → SshNode.
    let inv = etcd_recover::inventory::load(&lab.inventory)
        .unwrap()
        .inventory;
    let opts = etcd_recover::inventory::ResolveOptions {
        ssh_config: Default::default(),
        home: None,
        local_user: "nobody".into(),
        connect_timeout: None,
    };
    let targets = etcd_recover::inventory::resolve_targets(&inv, &opts).unwrap();
    let local = lab.dir.join("upload.bin");
    let expected = write_pseudo_random(&local, 256 << 20);
    let dest_dir = lab.node_dir(2).join("var/lib/etcd-recover");
    std::fs::create_dir_all(&dest_dir).unwrap();
    std::fs::set_permissions(
        &dest_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let dest = dest_dir.join("snapshot.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hash = rt.block_on(async {
        use etcd_recover::remote::Remote;
        let connector = etcd_recover::transport::Connector::new(
            etcd_recover::transport::ConnectOptions {
                accept_new_host_keys: false,
                agent: etcd_recover::transport::Agent::Disabled,
            },
            Arc::new(etcd_recover::transport::NoPrompt),
        );
        let node = connector.connect(&targets[1]).await.unwrap();
        assert!(node.uses_sudo());
        let hash = node
            .upload(&local, &dest.display().to_string(), 0o600, None, &|_| {})
            .await
            .unwrap();
        node.close().await;
        hash
    });
    assert_eq!(hash, expected);
    let meta = std::fs::metadata(&dest).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), 0, "written through sudo, owned by root");
    assert_eq!(meta.len(), 256 << 20);
    assert_eq!(sha256_file(&dest), expected);
}

/// Host keys: unknown is refused with the fingerprint and the fix; --accept-new-host-keys
/// records it; a changed key is refused even then, naming file and line. A key the node does
/// not accept is refused with a clear message.
#[test]
fn check_refuses_unknown_and_changed_host_keys_and_wrong_user_keys() {
    let lab = lab(1, EtcdVersion::V35, None);
    let ip = lab.node_ip(1).to_string();
    let host_key = lab_host_key(&lab, &ip);

    let empty_kh = lab.dir.join("empty_known_hosts");
    let inv = edited_inventory(&lab, "unknown.yaml", |t| {
        set_ssh_default(&t, "known_hosts", &empty_kh.display().to_string())
    });
    let run = check(&inv, &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.contains("refused"), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "error: cp-1: host key verification failed: no host key for `{ip}` is on record"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("ED25519 key {}", fingerprint(&host_key))),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--accept-new-host-keys"),
        "{}",
        run.stderr
    );
    assert!(!empty_kh.exists());

    let run = check(&inv, &["--accept-new-host-keys"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("note: cp-1: recorded new host key"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&empty_kh).unwrap(),
        format!("{ip} {host_key}\n")
    );
    assert_eq!(check(&inv, &[]).code, 0);

    // A different key on record for the node.
    let changed_kh = lab.dir.join("changed_known_hosts");
    let other = lab.dir.join("other_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(&changed_kh, format!("# lab\n{ip} {other_pub}")).unwrap();
    let inv = edited_inventory(&lab, "changed.yaml", |t| {
        set_ssh_default(&t, "known_hosts", &changed_kh.display().to_string())
    });
    let run = check(&inv, &["--accept-new-host-keys", "-o", "json"]);
    assert_eq!(run.code, 3);
    let r = run.json();
    let n = node(&r, "cp-1");
    assert_eq!(n["reachable"]["status"], "ok");
    let err = n["authenticated"]["error"].as_str().unwrap();
    assert!(err.contains("THE HOST KEY HAS CHANGED"), "{err}");
    assert!(
        err.contains(&format!("{}:2", changed_kh.display())),
        "{err}"
    );
    assert!(err.contains(&fingerprint(&other_pub)), "{err}");
    assert!(err.contains(&fingerprint(&host_key)), "{err}");
    assert_eq!(
        std::fs::read_to_string(&changed_kh)
            .unwrap()
            .lines()
            .count(),
        2
    );

    // A user key the node does not know.
    let inv = edited_inventory(&lab, "wrong_key.yaml", |t| {
        set_ssh_default(&t, "identity_file", &other.display().to_string())
    });
    let run = check(&inv, &[]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains(&format!(
            "error: cp-1: authentication failed for user root: the server refused {} (ED25519 SHA256:",
            other.display()
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("authorized_keys"), "{}", run.stderr);
}

/// A broken inventory stops `check` before any connection, naming file, line, column and fix.
#[test]
fn check_reports_inventory_errors_with_position_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        "cluster: c\nssh:\n  usr: root\nnodes:\n  - {name: cp-1, host: 192.0.2.1}\n",
    )
    .unwrap();
    let run = check(&inv, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}:3:3: unknown key `usr` in `ssh`\nhint: did you mean `user`?\n",
            inv.display()
        )
    );
    assert!(run.stdout.is_empty());
}

fn write_pseudo_random(path: &Path, size: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size / block.len() {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        hasher.update(&block);
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    hasher.finalize().into()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut h = [0u8; 32];
    hex::decode_to_slice(text.split_whitespace().next().unwrap(), &mut h).unwrap();
    h
}
