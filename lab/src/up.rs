//! `up`: builds the nodes (PKI, manifests, kubelet config, sshd, images), starts one sshd and
//! one static-pod runner per node, and waits until the control plane is healthy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::manifests;
use crate::pki::ClusterPki;
use crate::procs;
use crate::state::{self, EtcdInfo, LabState, NodePaths, NodeState, Phase};
use crate::status;
use crate::util;

/// The ports every node listens on.
pub const NODE_PORTS: [u16; 7] = [22, 2379, 2380, 2381, 6443, 10257, 10259];

/// Error returned when an address the lab needs is taken (exit code 3).
#[derive(Debug)]
pub struct AddrInUse(pub String);

impl std::fmt::Display for AddrInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for AddrInUse {}

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Lab directory.
    pub dir: PathBuf,
    /// Number of control-plane nodes (1..=7).
    pub nodes: usize,
    /// `3.5` or `3.4`.
    pub etcd: String,
    /// SSH login user.
    pub ssh_user: String,
    /// Base address; node i gets base + i.
    pub base_ip: Ipv4Addr,
    /// Runner poll period.
    pub poll_ms: u64,
    /// Cluster name for the inventory.
    pub cluster: String,
    /// How long to wait for health.
    pub timeout: Duration,
    /// Override for the etcd binary.
    pub etcd_bin: Option<PathBuf>,
    /// Override for etcdctl.
    pub etcdctl_bin: Option<PathBuf>,
    /// Override for etcdutl.
    pub etcdutl_bin: Option<PathBuf>,
    /// The sshd binary.
    pub sshd_bin: PathBuf,
}

/// The cache directory the setup script fills (`$ETCD_RECOVER_CACHE` or
/// `~/.cache/etcd-recover`).
pub fn cache_dir() -> PathBuf {
    if let Ok(c) = std::env::var("ETCD_RECOVER_CACHE") {
        if !c.is_empty() {
            return PathBuf::from(c);
        }
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
    PathBuf::from(home).join(".cache/etcd-recover")
}

fn binary_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("etcd Version:")
                .or_else(|| l.strip_prefix("etcdctl version:"))
                .or_else(|| l.strip_prefix("etcdutl version:"))
        })
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{} --version printed no version: {text}", bin.display()))
}

fn resolve_etcd(o: &UpOptions) -> Result<EtcdInfo> {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let (etcd, etcdctl, etcdutl) = match o.etcd.as_str() {
        "3.5" => {
            let d = cache_dir().join("etcd-3.5.1");
            (d.join("etcd"), d.join("etcdctl"), Some(d.join("etcdutl")))
        }
        "3.4" => (
            PathBuf::from("/usr/bin/etcd"),
            PathBuf::from("/usr/bin/etcdctl"),
            None,
        ),
        other => bail!("--etcd {other} is not supported: use 3.5 or 3.4"),
    };
    let etcd = o
        .etcd_bin
        .clone()
        .or_else(|| env("ETCD_RECOVER_LAB_ETCD"))
        .unwrap_or(etcd);
    let etcdctl = o
        .etcdctl_bin
        .clone()
        .or_else(|| env("ETCD_RECOVER_LAB_ETCDCTL"))
        .unwrap_or(etcdctl);
    let etcdutl = o
        .etcdutl_bin
        .clone()
        .or_else(|| env("ETCD_RECOVER_LAB_ETCDUTL"))
        .or(etcdutl);
    for b in [Some(&etcd), Some(&etcdctl), etcdutl.as_ref()]
        .into_iter()
        .flatten()
    {
        if !b.is_file() {
            bail!(
                "etcd {} binary {} not found: run scripts/setup.sh (it installs etcd 3.4 in /usr/bin and etcd 3.5.1 in {}), or point --etcd-bin/--etcdctl-bin/--etcdutl-bin (or ETCD_RECOVER_LAB_ETCD/_ETCDCTL/_ETCDUTL) at them",
                o.etcd,
                b.display(),
                cache_dir().join("etcd-3.5.1").display()
            );
        }
    }
    let version = binary_version(&etcd)?;
    if !version.starts_with(&format!("{}.", o.etcd)) {
        bail!(
            "{} is etcd {version}, not {}: pass the right binary with --etcd-bin",
            etcd.display(),
            o.etcd
        );
    }
    Ok(EtcdInfo {
        series: o.etcd.clone(),
        image: manifests::etcd_image(&version),
        version,
        etcd: util::absolute(&etcd)?,
        etcdctl: util::absolute(&etcdctl)?,
        etcdutl: etcdutl.map(|p| util::absolute(&p)).transpose()?,
    })
}

/// Refuses addresses that are already taken, naming the address and the fix.
pub fn check_addresses(ips: &[Ipv4Addr]) -> Result<()> {
    for ip in ips {
        for port in NODE_PORTS {
            let addr = SocketAddr::from((*ip, port));
            if let Err(e) = TcpListener::bind(addr) {
                let hint = format!(
                    "{addr} is already in use ({e}): another lab or another program listens there. Pick another range with --base-ip (e.g. --base-ip 127.0.42.10), or stop the lab that uses it with `etcd-recover-lab down --dir <its dir>`"
                );
                return Err(AddrInUse(hint).into());
            }
        }
    }
    Ok(())
}

fn node_ips(base: Ipv4Addr, n: usize) -> Result<Vec<Ipv4Addr>> {
    let o = base.octets();
    if o[0] != 127 {
        bail!("--base-ip {base} is not a loopback address: use one in 127.0.0.0/8");
    }
    if usize::from(o[3]) + n > 254 {
        bail!("--base-ip {base} leaves no room for {n} nodes (the last octet + {n} must stay below 255)");
    }
    Ok((1..=n)
        .map(|i| Ipv4Addr::new(o[0], o[1], o[2], o[3] + i as u8))
        .collect())
}

fn ssh_keygen(path: &Path, comment: &str) -> Result<()> {
    run_ssh_keygen(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        &format!("-f {}", path.display()),
    )
}

/// Runs `ssh-keygen` with its arguments; `what` names the call in the error.
fn run_ssh_keygen(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .context("cannot run ssh-keygen (install openssh-client)")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Signs the host key `key` (its `.pub`) with the lab's SSH CA `ca`, for the node's address and
/// name; writes `KEY-cert.pub`.
fn sign_host_key(ca: &Path, key: &Path, name: &str, ip: Ipv4Addr) -> Result<()> {
    run_ssh_keygen(
        Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(ca)
            .args(["-h", "-I", &format!("{name} host key"), "-n"])
            .arg(format!("{ip},{name}"))
            .arg(key.with_extension("pub")),
        &format!("-s {}", ca.display()),
    )
}

fn pubkey(path: &Path) -> Result<String> {
    let text = util::read_to_string(&path.with_extension("pub"))?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(t), Some(k)) => Ok(format!("{t} {k}")),
        _ => bail!("{}.pub is not an OpenSSH public key", path.display()),
    }
}

fn sshd_config(st: &LabState, node: &NodeState) -> String {
    let p = NodePaths::new(&node.dir);
    format!(
        "# sshd for lab node {name} (etcd-recover-lab)
ListenAddress {ip}:22
AddressFamily inet
HostKey {hostkey}
HostCertificate {hostkey}-cert.pub
PidFile {pid}
AuthorizedKeysFile {auth}
TrustedUserCAKeys {ca}.pub
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitRootLogin prohibit-password
PermitEmptyPasswords no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowAgentForwarding yes
PermitOpen any
GatewayPorts no
X11Forwarding no
PermitTunnel no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
LoginGraceTime 30
LogLevel VERBOSE
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
",
        name = node.name,
        ip = node.ip,
        hostkey = p.ssh().join("ssh_host_ed25519_key").display(),
        pid = p.run().join("sshd.pid").display(),
        auth = st.dir.join("ssh/authorized_keys").display(),
        ca = st.dir.join("ssh/ca").display(),
    )
}

fn sanitize_image(image: &str) -> String {
    image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes the per-image "rootfs bin" directories and returns image -> bin dir.
fn write_images(dir: &Path, etcd: &EtcdInfo, lab_bin: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut images = BTreeMap::new();
    let root = dir.join("images");
    // etcd images: the real binaries (the real image ships etcd, etcdctl and etcdutl).
    let mut etcd_images = vec![(
        etcd.image.clone(),
        etcd.etcd.clone(),
        etcd.etcdctl.clone(),
        etcd.etcdutl.clone(),
    )];
    // The other series too, when installed, so a manifest may name it (as an upgrade would).
    let other = if etcd.series == "3.5" {
        let d = PathBuf::from("/usr/bin");
        (d.join("etcd"), d.join("etcdctl"), None)
    } else {
        let d = cache_dir().join("etcd-3.5.1");
        (d.join("etcd"), d.join("etcdctl"), Some(d.join("etcdutl")))
    };
    if other.0.is_file() && other.0 != etcd.etcd {
        if let Ok(v) = binary_version(&other.0) {
            etcd_images.push((manifests::etcd_image(&v), other.0, other.1, other.2));
        }
    }
    for (image, e, ctl, utl) in etcd_images {
        let bin = root.join(sanitize_image(&image)).join("bin");
        util::mkdir(&bin)?;
        for (name, target) in [("etcd", Some(e)), ("etcdctl", Some(ctl)), ("etcdutl", utl)] {
            let Some(target) = target else { continue };
            let link = bin.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).with_context(|| {
                format!("cannot link {} -> {}", link.display(), target.display())
            })?;
        }
        images.insert(image, bin);
    }
    for (component, sub) in [
        ("kube-apiserver", "apiserver".to_string()),
        (
            "kube-controller-manager",
            "component kube-controller-manager".to_string(),
        ),
        ("kube-scheduler", "component kube-scheduler".to_string()),
    ] {
        let image = manifests::k8s_image(component);
        let bin = root.join(sanitize_image(&image)).join("bin");
        let script = format!(
            "#!/bin/sh\n# {component} of {image}: the lab's stand-in (etcd-recover-lab).\nexec {} {sub} \"$@\"\n",
            shell_quote(&lab_bin.display().to_string())
        );
        util::write_file(&bin.join(component), script.as_bytes(), 0o755)?;
        images.insert(image, bin);
    }
    Ok(images)
}

fn users_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = Path::new("/tmp/etcd-recover-lab-users.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Creates the non-root SSH user if missing, makes sure sshd (without PAM) accepts it, and
/// gives it passwordless sudo.
fn ensure_user(name: &str) -> Result<()> {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || name.starts_with('-')
    {
        bail!("--ssh-user {name:?} is not a valid user name");
    }
    if Command::new("sudo").arg("--version").output().is_err() {
        bail!("sudo is not installed: run scripts/setup.sh (a non-root --ssh-user needs sudo)");
    }
    let _lock = users_lock()?;
    let exists = Command::new("getent")
        .args(["passwd", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        run(
            Command::new("useradd").args(["--create-home", "--shell", "/bin/bash", name]),
            &format!("useradd {name}"),
        )?;
    }
    // Without PAM, sshd refuses accounts whose password field is locked ("!"); "*" means
    // "no password" without locking.
    let shadow = run(
        Command::new("getent").args(["shadow", name]),
        &format!("getent shadow {name}"),
    )?;
    let pw = shadow.split(':').nth(1).unwrap_or("");
    if pw.starts_with('!') || pw.is_empty() {
        run(
            Command::new("usermod").args(["-p", "*", name]),
            &format!("usermod -p '*' {name}"),
        )?;
    }
    let sudoers = PathBuf::from(format!("/etc/sudoers.d/etcd-recover-lab-{name}"));
    let want = format!("# written by etcd-recover-lab\n{name} ALL=(ALL) NOPASSWD:ALL\n");
    if std::fs::read_to_string(&sudoers).ok().as_deref() != Some(want.as_str()) {
        util::write_atomic(&sudoers, want.as_bytes(), 0o440)?;
    }
    Ok(())
}

/// For a non-root user, sshd reads the authorized keys as that user: every directory above
/// the lab must be traversable.
fn check_traversable(dir: &Path, user: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut p = dir.parent();
    while let Some(d) = p {
        let mode = std::fs::metadata(d)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o755);
        if mode & 0o001 == 0 {
            bail!(
                "{} (mode {:o}) cannot be entered by {user}, so sshd cannot read the lab's authorized_keys as {user}: put --dir elsewhere (e.g. under /tmp)",
                d.display(),
                mode & 0o7777
            );
        }
        p = d.parent();
    }
    Ok(())
}

fn inventory(st: &LabState) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# written by etcd-recover-lab up; lab state in {}",
        st.dir.join(state::STATE_FILE).display()
    );
    let _ = writeln!(s, "cluster: {}", st.cluster);
    let _ = writeln!(s, "ssh:");
    let _ = writeln!(s, "  user: {}", st.ssh_user);
    let _ = writeln!(s, "  port: 22");
    let _ = writeln!(
        s,
        "  identity_file: {}",
        st.dir.join("ssh/id_ed25519").display()
    );
    let _ = writeln!(
        s,
        "  known_hosts: {}",
        st.dir.join("ssh/known_hosts").display()
    );
    let _ = writeln!(s, "  sudo: auto");
    let _ = writeln!(s, "etcd:");
    match &st.etcd.etcdutl {
        Some(u) => {
            let _ = writeln!(s, "  restore_tool: {}", u.display());
        }
        None => {
            let _ = writeln!(s, "  restore_tool: auto");
        }
    }
    let _ = writeln!(s, "nodes:");
    for n in &st.nodes {
        let p = NodePaths::new(&n.dir);
        let _ = writeln!(s, "  - name: {}", n.name);
        let _ = writeln!(s, "    host: {}", n.ip);
        let _ = writeln!(s, "    etcd:");
        let _ = writeln!(s, "      manifests_dir: {}", p.manifests().display());
        let _ = writeln!(s, "      kubelet_config: {}", p.kubelet_config().display());
        let _ = writeln!(s, "      run_dir: {}", p.run_dir().display());
        let _ = writeln!(s, "    commands:");
        let cmd = [
            st.lab_bin.display().to_string(),
            "kubelet-restart".into(),
            "--dir".into(),
            st.dir.display().to_string(),
            "--node".into(),
            n.name.clone(),
        ];
        let quoted: Vec<String> = cmd
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .collect();
        let _ = writeln!(s, "      restart_kubelet: [{}]", quoted.join(", "));
    }
    s
}

/// Builds every file of the lab (no process is started).
fn build(st: &LabState) -> Result<()> {
    let dir = &st.dir;
    let cluster: Vec<(String, Ipv4Addr)> =
        st.nodes.iter().map(|n| (n.name.clone(), n.ip)).collect();
    let pki = ClusterPki::generate()?;
    let ssh_dir = dir.join("ssh");
    util::mkdir(&ssh_dir)?;
    util::chmod(&ssh_dir, 0o755)?;
    let user_key = ssh_dir.join("id_ed25519");
    ssh_keygen(&user_key, &format!("etcd-recover-lab@{}", dir.display()))?;
    util::write_file(
        &ssh_dir.join("authorized_keys"),
        format!("{}\n", pubkey(&user_key)?).as_bytes(),
        0o644,
    )?;
    let ca = ssh_dir.join("ca");
    ssh_keygen(&ca, &format!("etcd-recover-lab SSH CA@{}", dir.display()))?;
    let mut known_hosts = String::new();
    for n in &st.nodes {
        let p = NodePaths::new(&n.dir);
        for d in [
            p.manifests(),
            p.pki().join("etcd"),
            p.logs(),
            p.run(),
            p.ssh(),
            p.host("/var/lib/kubelet"),
        ] {
            util::mkdir(&d)?;
        }
        for d in [p.etcd_data(), p.run_dir()] {
            util::mkdir(&d)?;
            util::chmod(&d, 0o700)?;
        }
        pki.write_node(&p.pki(), &n.name, n.ip)?;
        util::write_file(
            &p.kubelet_config(),
            manifests::kubelet_config(&p, Duration::from_millis(st.poll_ms)).as_bytes(),
            0o644,
        )?;
        let host_key = p.ssh().join("ssh_host_ed25519_key");
        ssh_keygen(&host_key, &format!("root@{}", n.name))?;
        sign_host_key(&ca, &host_key, &n.name, n.ip)?;
        let _ = writeln!(known_hosts, "{} {}", n.ip, pubkey(&host_key)?);
        util::write_file(
            &p.ssh().join("sshd_config"),
            sshd_config(st, n).as_bytes(),
            0o644,
        )?;
        let m = p.manifests();
        util::write_file(
            &m.join("etcd.yaml"),
            manifests::etcd(&p, &n.name, n.ip, &cluster, &st.etcd.image).as_bytes(),
            0o600,
        )?;
        util::write_file(
            &m.join("kube-apiserver.yaml"),
            manifests::kube_apiserver(&p, n.ip).as_bytes(),
            0o600,
        )?;
        util::write_file(
            &m.join("kube-controller-manager.yaml"),
            manifests::kube_controller_manager(&p, n.ip).as_bytes(),
            0o600,
        )?;
        util::write_file(
            &m.join("kube-scheduler.yaml"),
            manifests::kube_scheduler(&p, n.ip).as_bytes(),
            0o600,
        )?;
    }
    util::write_file(&ssh_dir.join("known_hosts"), known_hosts.as_bytes(), 0o644)?;
    let ips: Vec<String> = st.nodes.iter().map(|n| n.ip.to_string()).collect();
    util::write_file(
        &ssh_dir.join("known_hosts_ca"),
        format!("@cert-authority {} {}\n", ips.join(","), pubkey(&ca)?).as_bytes(),
        0o644,
    )?;
    util::write_file(&dir.join("inventory.yaml"), inventory(st).as_bytes(), 0o644)?;
    Ok(())
}

/// Log tails of every node, for error messages.
pub fn log_tails(st: &LabState, lines: usize) -> String {
    let mut s = String::new();
    for n in &st.nodes {
        let logs = NodePaths::new(&n.dir).logs();
        for f in ["runner.log", "etcd.log", "kube-apiserver.log", "sshd.log"] {
            let p = logs.join(f);
            if p.exists() {
                let _ = writeln!(
                    s,
                    "---- {} ({}):\n{}",
                    p.display(),
                    n.name,
                    util::tail(&p, lines)
                );
            }
        }
    }
    s
}

/// What is not healthy yet, or `None` when everything is.
async fn pending(st: &LabState) -> Option<String> {
    let timeout = Duration::from_secs(1);
    let mut problems = Vec::new();
    let mut handles = Vec::new();
    for n in st.nodes.clone() {
        handles.push(tokio::spawn(async move {
            let e = status::probe_etcd(&n, timeout).await;
            let a = status::probe_apiserver(&n, timeout).await;
            let ssh = tokio::task::spawn_blocking({
                let ip = n.ip;
                move || procs::ssh_banner(ip, Duration::from_millis(500))
            })
            .await
            .unwrap_or(false);
            (n, e, a, ssh)
        }));
    }
    let mut cluster_ids = Vec::new();
    let mut leaders = Vec::new();
    for h in handles {
        let Ok((n, e, a, ssh)) = h.await else {
            problems.push("a probe task failed".to_string());
            continue;
        };
        if !e.healthy {
            problems.push(format!(
                "{}: etcd not healthy: {}",
                n.name,
                e.error.unwrap_or_default()
            ));
        } else {
            if e.members != Some(st.nodes.len()) {
                problems.push(format!(
                    "{}: etcd lists {:?} members, want {}",
                    n.name,
                    e.members,
                    st.nodes.len()
                ));
            }
            cluster_ids.push(e.cluster_id.clone());
            leaders.push(e.leader.clone());
        }
        match a {
            Ok((200, _)) => {}
            Ok((code, body)) => problems.push(format!(
                "{}: apiserver /readyz {code}: {}",
                n.name,
                body.trim()
            )),
            Err(err) => problems.push(format!("{}: apiserver: {err:#}", n.name)),
        }
        if !ssh {
            problems.push(format!("{}: sshd does not answer on {}:22", n.name, n.ip));
        }
    }
    cluster_ids.dedup();
    leaders.dedup();
    if cluster_ids.len() > 1 {
        problems.push(format!(
            "members report different cluster ids: {cluster_ids:?}"
        ));
    }
    if leaders.len() > 1 || leaders.first().is_some_and(|l| l.is_none()) {
        problems.push(format!("members do not agree on a leader: {leaders:?}"));
    }
    (!problems.is_empty()).then(|| problems.join("\n  "))
}

async fn wait_healthy(st: &LabState, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let cur = LabState::load(&st.dir)?;
        for n in &cur.nodes {
            if let Some(p) = n.runner {
                if !p.alive() {
                    bail!("the runner for {} died", n.name);
                }
            }
            if let Some(p) = n.sshd {
                if !p.alive() {
                    bail!("sshd for {} died", n.name);
                }
            }
        }
        let Some(problems) = pending(st).await else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            bail!("the lab is not healthy after {timeout:?}:\n  {problems}");
        }
        tokio::select! {
            _ = interrupt.recv() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Runs `up`.
pub fn up(o: UpOptions) -> Result<()> {
    let t0 = Instant::now();
    if !(1..=7).contains(&o.nodes) {
        bail!(
            "--nodes {} is out of range: a lab has 1 to 7 nodes",
            o.nodes
        );
    }
    if o.poll_ms == 0 {
        bail!("--poll-ms must be at least 1");
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "etcd-recover-lab up must run as root (it starts sshd on port 22 and may create users)"
        );
    }
    let dir = util::absolute(&o.dir)?;
    if let Ok(prev) = LabState::load(&dir) {
        let running = prev
            .nodes
            .iter()
            .any(|n| n.sshd.is_some_and(|p| p.alive()) || n.runner.is_some_and(|p| p.alive()))
            || !util::marked_processes(&dir).is_empty();
        if running || !matches!(prev.phase, Phase::Down | Phase::Failed) {
            bail!(
                "{} already holds a lab (phase {:?}): run `etcd-recover-lab down --dir {}` first, or use another --dir",
                dir.display(),
                prev.phase,
                dir.display()
            );
        }
        for sub in ["nodes", "images", "ssh"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("cannot clear {}", p.display()))?;
            }
        }
    } else if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        bail!(
            "{} is not empty and holds no lab: pass an empty or new --dir",
            dir.display()
        );
    }
    let sshd_bin = o.sshd_bin.clone();
    if !sshd_bin.is_file() {
        bail!(
            "{} not found: run scripts/setup.sh (it installs openssh-server)",
            sshd_bin.display()
        );
    }
    let etcd = resolve_etcd(&o)?;
    let ips = node_ips(o.base_ip, o.nodes)?;
    check_addresses(&ips)?;
    if o.ssh_user != "root" {
        check_traversable(&dir, &o.ssh_user)?;
        ensure_user(&o.ssh_user)?;
    }
    util::mkdir(&dir)?;
    util::chmod(&dir, 0o755)?;
    util::mkdir(Path::new("/run/sshd"))?;
    let lab_bin = std::env::current_exe().context("cannot find the etcd-recover-lab binary")?;
    let images = write_images(&dir, &etcd, &lab_bin)?;
    let st = LabState {
        format: 1,
        phase: Phase::Starting,
        dir: dir.clone(),
        cluster: o.cluster.clone(),
        base_ip: o.base_ip,
        ssh_user: o.ssh_user.clone(),
        poll_ms: o.poll_ms,
        etcd,
        lab_bin,
        sshd_bin,
        images,
        nodes: ips
            .iter()
            .enumerate()
            .map(|(i, ip)| NodeState {
                name: format!("cp-{}", i + 1),
                ip: *ip,
                dir: dir.join("nodes").join(format!("cp-{}", i + 1)),
                sshd: None,
                runner: None,
            })
            .collect(),
    };
    {
        let _lock = state::lock_dir(&dir)?;
        st.save()?;
    }
    match start(&st, o.timeout) {
        Ok(()) => {
            LabState::update(&dir, |s| {
                s.phase = Phase::Up;
                Ok(())
            })?;
            crate::outln!(
                "lab up in {:.1}s: {} node{} ({}), etcd {}, ssh user {}\ninventory: {}\nstatus:    etcd-recover-lab status --dir {}\nstop:      etcd-recover-lab down --dir {}",
                t0.elapsed().as_secs_f64(),
                st.nodes.len(),
                if st.nodes.len() == 1 { "" } else { "s" },
                st.nodes.iter().map(|n| format!("{}={}", n.name, n.ip)).collect::<Vec<_>>().join(" "),
                st.etcd.version,
                st.ssh_user,
                dir.join("inventory.yaml").display(),
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Err(e) => {
            let cur = LabState::load(&dir).unwrap_or(st);
            let tails = log_tails(&cur, 20);
            let _ = LabState::update(&dir, |s| {
                s.phase = Phase::Failed;
                Ok(())
            });
            let down = crate::down::down(&dir);
            let cleanup = match down {
                Ok(r) => format!("stopped the {} processes it had started", r.stopped),
                Err(e) => format!(
                    "cleanup failed too: {e:#}; run `etcd-recover-lab down --dir {}`",
                    dir.display()
                ),
            };
            Err(anyhow::anyhow!(
                "lab up failed: {e:#}\n({cleanup})\n\nlogs:\n{tails}"
            ))
        }
    }
}

fn start(st: &LabState, timeout: Duration) -> Result<()> {
    build(st)?;
    for n in &st.nodes {
        let p = procs::spawn_sshd(st, n)?;
        LabState::update(&st.dir, |s| {
            if let Some(x) = s.nodes.iter_mut().find(|x| x.name == n.name) {
                x.sshd = Some(p);
            }
            Ok(())
        })?;
    }
    for n in &st.nodes {
        let p = procs::spawn_runner(st, n)?;
        LabState::update(&st.dir, |s| {
            if let Some(x) = s.nodes.iter_mut().find(|x| x.name == n.name) {
                x.runner = Some(p);
            }
            Ok(())
        })?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the event loop")?;
    rt.block_on(wait_healthy(st, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_names() {
        let ips = node_ips(Ipv4Addr::new(127, 0, 3, 10), 3).expect("ips");
        assert_eq!(
            ips,
            vec![
                Ipv4Addr::new(127, 0, 3, 11),
                Ipv4Addr::new(127, 0, 3, 12),
                Ipv4Addr::new(127, 0, 3, 13)
            ]
        );
        assert!(node_ips(Ipv4Addr::new(10, 0, 0, 1), 1).is_err());
        assert!(node_ips(Ipv4Addr::new(127, 0, 0, 250), 7).is_err());
        assert_eq!(
            sanitize_image("registry.k8s.io/etcd:3.5.1-0"),
            "registry.k8s.io_etcd_3.5.1-0"
        );
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
