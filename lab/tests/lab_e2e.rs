//! End-to-end tests of the lab: real sshd, real etcd, real etcdctl, real processes.
//!
//! All tests live in this one binary so that they run in parallel threads; each lab takes
//! its own address slot.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_recover_lab::testing::*;
use serde_json::Value;

fn assert_healthy_cluster(status: &Value, nodes: usize, version_prefix: &str) {
    let s = &status["summary"];
    assert_eq!(
        s["healthy_members"], nodes,
        "all members healthy: {status:#}"
    );
    assert_eq!(
        s["cluster_ids"].as_array().map(Vec::len),
        Some(1),
        "one cluster id: {status:#}"
    );
    assert_eq!(
        s["leaders"].as_array().map(Vec::len),
        Some(1),
        "one leader: {status:#}"
    );
    assert_eq!(s["hashkv_equal"], true, "equal hashkv: {status:#}");
    assert_eq!(s["apiservers_ready"], nodes, "apiservers ready: {status:#}");
    let leaders = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["etcd"]["is_leader"] == true)
        .count();
    assert_eq!(leaders, 1);
    for n in status["nodes"].as_array().expect("nodes") {
        assert!(
            n["etcd"]["version"]
                .as_str()
                .unwrap_or("")
                .starts_with(version_prefix),
            "{n:#}"
        );
        assert_eq!(n["etcd"]["members"], nodes);
        assert_eq!(n["runner"]["alive"], true);
        assert_eq!(n["sshd"]["alive"], true);
        assert_eq!(n["manifest"]["present"], true);
    }
}

/// TLS is enforced: plaintext and certificate-less clients are refused, the lab's client
/// certificate is accepted.
fn assert_tls_only(lab: &Lab, i: usize) {
    ok(
        &lab.etcdctl(i, &["endpoint", "health"]),
        "etcdctl endpoint health with client cert",
    );
    let st = lab.state();
    let ca = lab.node_dir(i).join("etc/kubernetes/pki/etcd/ca.crt");
    let no_cert = Command::new(st["etcd"]["etcdctl"].as_str().expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}:2379", lab.node_ip(i)))
        .arg(format!("--cacert={}", ca.display()))
        .args(["--dial-timeout=1s", "--command-timeout=1s", "get", "x"])
        .output()
        .expect("etcdctl");
    assert!(
        !no_cert.status.success(),
        "etcd must refuse a client without certificate"
    );
    let plain = Command::new(st["etcd"]["etcdctl"].as_str().expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}:2379", lab.node_ip(i)))
        .args(["--dial-timeout=1s", "--command-timeout=1s", "get", "x"])
        .output()
        .expect("etcdctl");
    assert!(!plain.status.success(), "etcd must refuse plaintext");
}

fn assert_ssh(lab: &Lab, user: &str) {
    for i in 1..=lab.nodes {
        let out = lab.ssh(user, lab.node_ip(i), &lab.known_hosts(), "id -un; hostname");
        let text = ok(&out, &format!("ssh {user}@{}", lab.node_ip(i)));
        assert!(text.starts_with(user), "{text}");
    }
    // OpenSSH refuses a host it has no key for when StrictHostKeyChecking=yes.
    let empty = lab.dir.join("empty_known_hosts");
    fs::write(&empty, "").expect("write empty known_hosts");
    let out = lab.ssh(user, lab.node_ip(1), &empty, "true");
    assert!(
        !out.status.success(),
        "ssh with an empty known_hosts must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");
}

/// Every pid the lab recorded: pods (from the status), runners and sshds.
fn recorded_pids(status: &Value) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for n in status["nodes"].as_array().expect("nodes") {
        let name = n["name"].as_str().unwrap_or("?");
        for (pod, p) in n["pods"].as_object().expect("pods") {
            if let Some(pid) = p["pid"].as_i64() {
                out.push((format!("{name}/{pod}"), pid));
            }
        }
        for d in ["runner", "sshd"] {
            if let Some(pid) = n[d]["pid"].as_i64() {
                out.push((format!("{name}/{d}"), pid));
            }
        }
    }
    out
}

fn assert_down_leaves_nothing(lab: Lab) {
    let status = lab.status().expect("status");
    let pids = recorded_pids(&status);
    assert!(
        pids.len() >= lab.nodes * 6,
        "pods, runner and sshd recorded per node: {pids:?}"
    );
    for (what, pid) in &pids {
        assert!(
            pid_alive(*pid),
            "{what} (pid {pid}) should be running before down"
        );
    }
    let ips: Vec<Ipv4Addr> = (1..=lab.nodes).map(|i| lab.node_ip(i)).collect();
    lab.run(&["down"]);
    for (what, pid) in &pids {
        assert!(
            !pid_alive(*pid),
            "{what} (pid {pid}) still running after down"
        );
    }
    for ip in ips {
        for port in [22, 2379, 2380, 6443] {
            assert!(!port_open(ip, port), "{ip}:{port} still open after down");
        }
    }
    // Idempotent.
    lab.run(&["down"]);
    lab.down();
}

/// Brings a lab up (saying how long it took) and checks it: healthy on etcd `version_prefix`,
/// TLS only (on node `tls_node`), and SSH as its user with strict host keys.
fn up_healthy(opts: LabOptions, version_prefix: &str, tls_node: usize) -> Lab {
    let what = format!("{opts:?}");
    let t0 = Instant::now();
    let lab = Lab::up(opts).expect("lab up");
    eprintln!("lab {what} up in {:.1}s", t0.elapsed().as_secs_f64());
    let status = lab.status().expect("status");
    assert_healthy_cluster(&status, lab.nodes, version_prefix);
    assert_tls_only(&lab, tls_node);
    assert_ssh(&lab, &lab.ssh_user);
    lab
}

#[test]
fn etcd35_three_nodes_tls_ssh_seed_snapshot_down() {
    let lab = up_healthy(LabOptions::nodes(3), "3.5.", 2);

    // The inventory works as is for the tool.
    let inv: serde_yaml::Value =
        serde_yaml::from_slice(&fs::read(&lab.inventory).expect("inventory"))
            .expect("inventory yaml");
    assert_eq!(inv["ssh"]["user"].as_str(), Some("root"));
    assert!(inv["etcd"]["restore_tool"]
        .as_str()
        .unwrap_or("")
        .ends_with("/etcdutl"));
    assert_eq!(
        inv["nodes"][2]["host"].as_str(),
        Some(lab.node_ip(3).to_string().as_str())
    );
    let restart = inv["nodes"][0]["commands"]["restart_kubelet"]
        .as_sequence()
        .expect("restart_kubelet");
    assert_eq!(restart[1].as_str(), Some("kubelet-restart"));

    // Every apiserver writes its heartbeat (unix ms) to etcd.
    for i in 1..=3 {
        let key = format!("/registry/lab-heartbeat/cp-{i}");
        let out = ok(
            &lab.etcdctl(1, &["get", &key, "--print-value-only"]),
            "get heartbeat",
        );
        let ms: u128 = out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("heartbeat {key} = {out:?}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        assert!(
            now.abs_diff(ms) < 5_000,
            "heartbeat {key} is stale: {ms} vs {now}"
        );
    }

    // Seed 10 000 keys quickly; every member sees them (plus the 3 heartbeat keys, which
    // all exist by now: checked above).
    let t = Instant::now();
    let out = lab.seed(10_000);
    let took = t.elapsed();
    eprintln!("{}", out.trim());
    assert!(
        took < Duration::from_secs(30),
        "seeding 10000 keys took {took:?}"
    );
    let status = lab.status().expect("status");
    assert_healthy_cluster(&status, 3, "3.5.");
    for n in status["nodes"].as_array().expect("nodes") {
        assert_eq!(n["etcd"]["keys"].as_i64(), Some(3 + 10_000), "{n:#}");
    }
    let cms = ok(
        &lab.etcdctl(
            3,
            &[
                "get",
                "/registry/configmaps/",
                "--prefix",
                "--count-only",
                "-w",
                "fields",
            ],
        ),
        "count configmaps",
    );
    assert!(cms.lines().any(|l| l.trim() == "\"Count\" : 5000"), "{cms}");

    // A real snapshot with the real etcdctl; etcdutl reads it back.
    let snap = lab.dir.join("snap.db");
    lab.run(&[
        "snapshot",
        "--out",
        snap.to_str().expect("utf8"),
        "--node",
        "cp-2",
    ]);
    let st = lab.state();
    let etcdutl = st["etcd"]["etcdutl"].as_str().expect("etcdutl");
    let out = ok(
        &Command::new(etcdutl)
            .args(["snapshot", "status", "-w", "json"])
            .arg(&snap)
            .output()
            .expect("etcdutl"),
        "etcdutl snapshot status",
    );
    let v: Value = serde_json::from_str(out.trim()).expect("snapshot status json");
    assert!(v["totalKey"].as_i64().unwrap_or(0) >= 10_000, "{v}");

    // The text status renders.
    let text = lab.run(&["status"]);
    assert!(text.contains("3/3 members healthy"), "{text}");

    assert_down_leaves_nothing(lab);
}

#[test]
fn etcd34_three_nodes_with_a_sudo_user() {
    let opts = LabOptions::nodes(3)
        .etcd(EtcdVersion::V34)
        .ssh_user("erlab");
    let lab = up_healthy(opts, "3.4.", 1);
    let out = lab.ssh("erlab", lab.node_ip(2), &lab.known_hosts(), "sudo -n id -u");
    assert_eq!(ok(&out, "sudo over ssh").trim(), "0");
    let inv = fs::read_to_string(&lab.inventory).expect("inventory");
    assert!(inv.contains("  user: erlab\n"), "{inv}");
    assert!(inv.contains("  restore_tool: auto\n"), "{inv}");
    let yaml = fs::read_to_string(lab.manifests_dir(1).join("etcd.yaml")).expect("etcd.yaml");
    assert!(yaml.contains("image: registry.k8s.io/etcd:3.4."), "{yaml}");
    assert_down_leaves_nothing(lab);
}

fn etcd_pid(lab: &Lab) -> Option<i64> {
    let p = lab.pods(1);
    let pid = p["etcd"]["pid"].as_i64()?;
    (pid_alive(pid) && p["etcd"]["state"] == "running").then_some(pid)
}

fn wait_etcd_serving(lab: &Lab, what: &str) -> i64 {
    wait_for(what, Duration::from_secs(20), || {
        let pid = etcd_pid(lab)?;
        lab.etcdctl(1, &["endpoint", "health", "--command-timeout=1s"])
            .status
            .success()
            .then_some(pid)
    })
}

fn write_into(dir: &std::path::Path, name: &str, text: &str) {
    // Written elsewhere and renamed in, as editors and careful tools do.
    let tmp = dir.parent().expect("parent").join(format!(".{name}.tmp"));
    fs::write(&tmp, text).expect("write manifest");
    fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

#[test]
fn runner_stops_starts_and_restarts_etcd_like_the_kubelet() {
    let lab = Lab::up(LabOptions::nodes(1).poll_ms(200)).expect("lab up");
    let ip = lab.node_ip(1);
    let mdir = lab.manifests_dir(1);
    let etcd_yaml = mdir.join("etcd.yaml");
    let original = fs::read_to_string(&etcd_yaml).expect("etcd.yaml");
    let p1 = wait_etcd_serving(&lab, "etcd running");

    // Moving etcd.yaml out stops etcd: pid gone, port closed; the apiserver turns unready.
    let parked = lab.node_dir(1).join("etcd.yaml.parked");
    fs::rename(&etcd_yaml, &parked).expect("move etcd.yaml out");
    wait_for("etcd stopped", Duration::from_secs(15), || {
        (!pid_alive(p1) && !port_open(ip, 2379)).then_some(())
    });
    wait_for(
        "no etcd pod while its manifest is out",
        Duration::from_secs(5),
        || lab.pods(1).get("etcd").is_none().then_some(()),
    );
    wait_for(
        "apiserver unready without etcd",
        Duration::from_secs(10),
        || {
            let s = lab.status().ok()?;
            (s["nodes"][0]["apiserver_ready"] == false && s["nodes"][0]["apiserver"]["code"] == 500)
                .then_some(())
        },
    );

    // Moving it back starts etcd again.
    fs::rename(&parked, &etcd_yaml).expect("move etcd.yaml back");
    let p2 = wait_etcd_serving(&lab, "etcd restarted");
    assert_ne!(p1, p2);
    wait_for("apiserver ready again", Duration::from_secs(10), || {
        (lab.status().ok()?["nodes"][0]["apiserver_ready"] == true).then_some(())
    });

    // A changed etcd-data hostPath restarts etcd on the new directory.
    let new_data = lab.node_dir(1).join("var/lib/etcd-restored");
    let old_data = lab.node_dir(1).join("var/lib/etcd");
    let changed = original.replace(
        &format!("path: {}\n", old_data.display()),
        &format!("path: {}\n", new_data.display()),
    );
    assert_ne!(changed, original, "hostPath found in etcd.yaml");
    write_into(&mdir, "etcd.yaml", &changed);
    let p3 = wait_for("etcd on the new data dir", Duration::from_secs(20), || {
        let pid = etcd_pid(&lab)?;
        (pid != p2 && cmdline(pid).contains(&format!("--data-dir={}", new_data.display())))
            .then_some(pid)
    });
    wait_etcd_serving(&lab, "etcd serving from the new data dir");
    assert!(
        new_data.join("member").is_dir(),
        "etcd created its data in {}",
        new_data.display()
    );
    let cwd_fds: Vec<String> = fs::read_dir(format!("/proc/{p3}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        cwd_fds
            .iter()
            .any(|f| f.starts_with(&new_data.display().to_string())),
        "etcd has files open in the new dir: {cwd_fds:?}"
    );
    assert!(
        !cwd_fds
            .iter()
            .any(|f| f.starts_with(&format!("{}/", old_data.display()))),
        "etcd still uses the old dir"
    );
    let status = lab.status().expect("status");
    assert_eq!(
        status["nodes"][0]["manifest"]["etcd_data_host_path"],
        new_data.display().to_string()
    );

    // A killed container comes back (back-off 1 s), with the restart counted.
    lab.fault("cp-1", "kill-etcd");
    assert!(!pid_alive(p3));
    let p4 = wait_etcd_serving(&lab, "etcd restarted after kill");
    assert_ne!(p3, p4);
    assert_eq!(lab.pods(1)["etcd"]["restarts"], 1);
    assert!(cmdline(p4).contains(&format!("--data-dir={}", new_data.display())));

    assert_down_leaves_nothing(lab);
}

#[test]
fn runner_resolves_names_and_adopts_pods_like_the_kubelet() {
    let lab = Lab::up(LabOptions::nodes(1).poll_ms(200)).expect("lab up");
    let ip = lab.node_ip(1);
    let mdir = lab.manifests_dir(1);
    let changed = fs::read_to_string(mdir.join("etcd.yaml")).expect("etcd.yaml");
    let p3 = wait_etcd_serving(&lab, "etcd running");

    // A later file with the same pod name (etcd.yaml.bak sorts after etcd.yaml) is ignored.
    let bak = changed.replace("--snapshot-count=10000", "--snapshot-count=20000");
    fs::write(mdir.join("etcd.yaml.bak"), &bak).expect("write etcd.yaml.bak");
    // Dot-files are not pods at all, even with another name.
    fs::write(
        mdir.join(".etcd.yaml.swp"),
        bak.replace("--snapshot-count=20000", "--snapshot-count=40000"),
    )
    .expect("swp");
    fs::write(
        mdir.join(".hidden.yaml"),
        bak.replace("name: etcd\n", "name: hidden\n"),
    )
    .expect("hidden");
    // Subdirectories are not recursed into.
    fs::create_dir_all(mdir.join("sub")).expect("subdir");
    fs::write(
        mdir.join("sub/other.yaml"),
        bak.replace("name: etcd\n", "name: other\n"),
    )
    .expect("sub pod");
    let runner_log = lab.node_dir(1).join("logs/runner.log");
    wait_for("duplicate reported", Duration::from_secs(10), || {
        fs::read_to_string(&runner_log)
            .ok()?
            .contains("etcd.yaml.bak failed validation due to duplicate pod name")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        etcd_pid(&lab),
        Some(p3),
        "the first file by name keeps running"
    );
    let p = lab.pods(1);
    assert!(
        p.get("hidden").is_none() && p.get("other").is_none(),
        "{p:#}"
    );
    assert!(cmdline(p3).contains("--snapshot-count=10000"));
    fs::remove_file(mdir.join("etcd.yaml.bak")).expect("rm bak");

    // etcd-copy.yaml sorts before etcd.yaml: it wins, as in the kubelet.
    write_into(
        &mdir,
        "etcd-copy.yaml",
        &changed.replace("--snapshot-count=10000", "--snapshot-count=30000"),
    );
    let p4 = wait_for("etcd from etcd-copy.yaml", Duration::from_secs(20), || {
        let pid = etcd_pid(&lab)?;
        (pid != p3 && cmdline(pid).contains("--snapshot-count=30000")).then_some(pid)
    });
    assert!(lab.pods(1)["etcd"]["manifest"]
        .as_str()
        .unwrap_or("")
        .ends_with("/etcd-copy.yaml"));
    fs::remove_file(mdir.join("etcd-copy.yaml")).expect("rm copy");
    let p5 = wait_for("etcd back on etcd.yaml", Duration::from_secs(20), || {
        let pid = etcd_pid(&lab)?;
        (pid != p4 && cmdline(pid).contains("--snapshot-count=10000")).then_some(pid)
    });
    wait_etcd_serving(&lab, "etcd serving again");

    // A kubelet restart adopts running pods instead of restarting them.
    let before = lab.pods(1);
    let runner_before = lab.state()["nodes"][0]["runner"]["pid"]
        .as_i64()
        .expect("runner pid");
    let out = lab.run(&["kubelet-restart", "--node", "cp-1"]);
    assert!(out.contains("adopted: etcd"), "{out}");
    let runner_after = lab.state()["nodes"][0]["runner"]["pid"]
        .as_i64()
        .expect("runner pid");
    assert_ne!(runner_before, runner_after);
    assert!(!pid_alive(runner_before));
    let after = lab.pods(1);
    for pod in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert_eq!(
            before[pod]["pid"], after[pod]["pid"],
            "{pod} was adopted, not restarted"
        );
        assert!(pid_alive(after[pod]["pid"].as_i64().expect("pid")));
    }
    // The new runner still supervises the adopted pods: a killed etcd comes back.
    lab.fault("cp-1", "kill-etcd");
    assert!(!pid_alive(p5));
    let p6 = wait_etcd_serving(&lab, "etcd restarted after kill");
    assert_ne!(p5, p6);
    assert_eq!(lab.pods(1)["etcd"]["restarts"], 1);

    // Stopping the runner leaves the pods running; sshd faults work.
    lab.fault("cp-1", "stop-runner");
    assert!(pid_alive(p6), "pods survive a stopped runner");
    lab.fault("cp-1", "stop-sshd");
    assert!(!port_open(ip, 22));
    lab.fault("cp-1", "start-sshd");
    assert!(port_open(ip, 22));
    lab.fault("cp-1", "start-runner");
    assert_eq!(etcd_pid(&lab), Some(p6), "restarted runner adopts etcd");

    assert_down_leaves_nothing(lab);
}

/// An address range outside the harness's slots (127.0.1-250.x), distinct per test.
fn private_base(offset: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (std::process::id() % 100) as u8 + offset, 10)
}

#[test]
fn up_refuses_an_address_in_use() {
    let base = private_base(0);
    let o = base.octets();
    let taken = Ipv4Addr::new(o[0], o[1], o[2], o[3] + 2);
    let _holder = TcpListener::bind((taken, 2380)).expect("bind the blocking listener");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(lab_bin())
        .args([
            "up",
            "--nodes",
            "3",
            "--base-ip",
            &base.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run up");
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 for an address in use"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{taken}:2380 is already in use")),
        "{err}"
    );
    assert!(
        err.contains("--base-ip") && err.contains("down"),
        "the message names the fix: {err}"
    );
    assert!(!dir.path().join("lab.json").exists(), "nothing was started");
    assert!(!port_open(Ipv4Addr::new(o[0], o[1], o[2], o[3] + 1), 22));
}

#[test]
fn failed_up_tears_everything_down_and_shows_logs() {
    let base = private_base(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("fake-etcd");
    fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'etcd Version: 3.5.1'; exit 0; fi\necho 'fake etcd: refusing to start' >&2\nexit 1\n",
    )
    .expect("write fake etcd");
    fs::set_permissions(
        &fake,
        <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    let lab_dir = dir.path().join("lab");
    let t0 = Instant::now();
    let out = Command::new(lab_bin())
        .args([
            "up",
            "--nodes",
            "2",
            "--timeout",
            "3",
            "--base-ip",
            &base.to_string(),
            "--dir",
        ])
        .arg(&lab_dir)
        .arg("--etcd-bin")
        .arg(&fake)
        .output()
        .expect("run up");
    assert!(!out.status.success());
    assert!(t0.elapsed() < Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not healthy after"), "{err}");
    assert!(
        err.contains("fake etcd: refusing to start"),
        "the error carries the etcd log: {err}"
    );
    let st: Value = serde_json::from_slice(&fs::read(lab_dir.join("lab.json")).expect("lab.json"))
        .expect("json");
    assert_eq!(st["phase"], "failed");
    for n in st["nodes"].as_array().expect("nodes") {
        assert!(n["sshd"].is_null() && n["runner"].is_null(), "{n}");
        let ip: Ipv4Addr = n["ip"].as_str().expect("ip").parse().expect("ip");
        assert!(
            !port_open(ip, 22) && !port_open(ip, 6443),
            "{ip} still serving"
        );
    }
    // No process that carries the lab's marker is left.
    let marker = format!("ETCD_RECOVER_LAB_DIR={}", lab_dir.display());
    for e in fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(env) = fs::read(e.path().join("environ")) {
            let pid: i64 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let marked = env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
            assert!(
                !(marked && pid_alive(pid)),
                "pid {pid} of the failed lab is still running"
            );
        }
    }
    // down after a failed up is fine.
    let out = Command::new(lab_bin())
        .arg("down")
        .arg("--dir")
        .arg(&lab_dir)
        .output()
        .expect("down");
    ok(&out, "down after failed up");
}

/// Set for the child process of [`abandoned_lab_is_reclaimed_by_the_next_lab`] only.
const ABANDON: &str = "ETCD_RECOVER_LAB_TEST_ABANDON";

/// The child's part: brings a lab up, says where, and dies without running any destructor,
/// like a test process killed by SIGKILL or Ctrl-C.
fn abandon_a_lab() -> ! {
    let lab = Lab::up(LabOptions::nodes(1)).expect("lab up");
    println!("ABANDONED {}", lab.dir.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::abort();
}

/// A test process that dies without running destructors leaves its lab running; the next
/// `Lab::up` anywhere stops it and removes it. The process that dies is this test itself, run
/// again as a child with [`ABANDON`] set.
#[test]
fn abandoned_lab_is_reclaimed_by_the_next_lab() {
    if std::env::var_os(ABANDON).is_some() {
        abandon_a_lab();
    }
    let out = Command::new(std::env::current_exe().expect("test exe"))
        .args([
            "--exact",
            "abandoned_lab_is_reclaimed_by_the_next_lab",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ABANDON, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.split_once("ABANDONED ").map(|(_, d)| d.trim()))
        .unwrap_or_else(|| {
            panic!(
                "child printed no lab dir: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string();
    assert!(!out.status.success(), "the child aborted");
    let st: Value = serde_json::from_slice(&fs::read(format!("{dir}/lab.json")).expect("lab.json"))
        .expect("json");
    let runner = st["nodes"][0]["runner"]["pid"]
        .as_i64()
        .expect("runner pid");
    let sshd = st["nodes"][0]["sshd"]["pid"].as_i64().expect("sshd pid");
    assert!(
        pid_alive(runner) && pid_alive(sshd),
        "the abandoned lab runs"
    );
    let etcd: Value =
        serde_json::from_slice(&fs::read(format!("{dir}/nodes/cp-1/run/pods.json")).expect("pods"))
            .expect("json");
    let etcd = etcd["etcd"]["pid"].as_i64().expect("etcd pid");

    // The next lab anywhere reclaims every abandoned slot before taking its own.
    let lab = Lab::up(LabOptions::nodes(1)).expect("lab up");
    // (A lab of a parallel test may be the one that reclaims it; allow it to finish.)
    wait_for(
        "the abandoned lab to be stopped and removed",
        Duration::from_secs(20),
        || {
            let gone = [runner, sshd, etcd].iter().all(|p| !pid_alive(*p));
            (gone && !std::path::Path::new(&dir).exists()).then_some(())
        },
    );
    lab.down();
}
