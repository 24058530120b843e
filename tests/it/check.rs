//! `etcd-recover check` against real lab clusters (real sshd, real etcd with kubeadm PKI):
//! healthy clusters as root and as a sudo user, host key refusals, a wrong key, a stopped
//! sshd, a silent node, and ProxyJump through one node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// `check -i INVENTORY`, hermetic (see [`EtcdRecover::check`]).
fn check(inventory: &Path) -> EtcdRecover {
    etcd_recover().check(inventory)
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

/// Root on etcd 3.5: every check passes and the JSON says what was found; the table agrees.
/// ProxyJump through cp-1 reaches every node (and fails when cp-1's sshd is down); a stopped
/// sshd and a silent address are reported within the timeout while the others are checked.
#[test]
fn check_root_etcd35_proxy_jump_and_unreachable_nodes() {
    let lab = Lab::up(LabOptions::nodes(3)).expect("lab up");
    let r = check(&lab.inventory)
        .args(["-o", "json"])
        .run()
        .success()
        .json();
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

    let table = check(&lab.inventory)
        .run()
        .success()
        .stdout_contains("lab: all 3 nodes are ready");
    assert!(
        table.stdout.starts_with("NODE  ADDRESS"),
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
    let r = check(&via).args(["-o", "json"]).run().success().json();
    for i in 1..=3 {
        assert_eq!(node(&r, &format!("cp-{i}"))["via"][0], format!("{jump}:22"));
    }

    // cp-1's sshd down: nodes reached through it are unreachable, through the jump host.
    lab.fault("cp-1", "stop-sshd");
    let r = check(&via).args(["-o", "json"]).run().expect_exit(3).json();
    let err = node(&r, "cp-2")["reachable"]["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("jump host {jump}:22: connection refused")),
        "{err}"
    );

    // Directly: cp-1 is unreachable, cp-2 and cp-3 are still checked and pass.
    let run = check(&lab.inventory)
        .args(["-o", "json"])
        .run()
        .expect_exit(3);
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
    lab.fault("cp-1", "start-sshd");

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
    let run = check(&silent_inv).args(["-o", "json"]).run().expect_exit(3);
    assert!(
        run.took >= Duration::from_secs(2) && run.took < Duration::from_secs(15),
        "{:?}",
        run.took
    );
    let r = run.json();
    let err = node(&r, "cp-2")["reachable"]["error"].as_str().unwrap();
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
    let lab = Lab::up(
        LabOptions::nodes(3)
            .etcd(EtcdVersion::V34)
            .ssh_user("erlab"),
    )
    .expect("lab up");
    let r = check(&lab.inventory)
        .args(["-o", "json"])
        .run()
        .success()
        .json();
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
    let lab = Lab::up(LabOptions::nodes(1)).expect("lab up");
    let ip = lab.node_ip(1).to_string();
    let host_key = lab_host_key(&lab, &ip);

    let empty_kh = lab.dir.join("empty_known_hosts");
    let inv = edited_inventory(&lab, "unknown.yaml", |t| {
        set_ssh_default(&t, "known_hosts", &empty_kh.display().to_string())
    });
    check(&inv)
        .run()
        .expect_exit(3)
        .stdout_contains("refused")
        .stderr_contains(&format!(
            "error: cp-1: host key verification failed: no host key for `{ip}` is on record"
        ))
        .stderr_contains(&format!("ED25519 key {}", fingerprint(&host_key)))
        .stderr_contains("--accept-new-host-keys");
    assert!(!empty_kh.exists());

    check(&inv)
        .arg("--accept-new-host-keys")
        .run()
        .success()
        .stderr_contains("note: cp-1: recorded new host key");
    assert_eq!(
        std::fs::read_to_string(&empty_kh).unwrap(),
        format!("{ip} {host_key}\n")
    );
    check(&inv).run().success();

    // A different key on record for the node.
    let changed_kh = lab.dir.join("changed_known_hosts");
    let other = lab.dir.join("other_key");
    keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(&changed_kh, format!("# lab\n{ip} {other_pub}")).unwrap();
    let inv = edited_inventory(&lab, "changed.yaml", |t| {
        set_ssh_default(&t, "known_hosts", &changed_kh.display().to_string())
    });
    let r = check(&inv)
        .args(["--accept-new-host-keys", "-o", "json"])
        .run()
        .expect_exit(3)
        .json();
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
    check(&inv)
        .run()
        .expect_exit(3)
        .stderr_contains(&format!(
            "error: cp-1: authentication failed for user root: the server refused {} (ED25519 SHA256:",
            other.display()
        ))
        .stderr_contains("authorized_keys");
}

/// A broken inventory stops `check` before any connection, naming file, line, column and fix.
#[test]
fn check_reports_inventory_errors_with_position_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let inv = write_file(
        dir.path(),
        "inventory.yaml",
        "cluster: c\nssh:\n  usr: root\nnodes:\n  - {name: cp-1, host: 192.0.2.1}\n",
    );
    let run = check(&inv).run().expect_exit(1);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}:3:3: unknown key `usr` in `ssh`\nhint: did you mean `user`?\n",
            inv.display()
        )
    );
    assert!(run.stdout.is_empty());
}
