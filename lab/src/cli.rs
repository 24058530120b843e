//! Command line of `etcd-recover-lab`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use crate::state::{LabState, NodePaths};
use crate::{data, down, procs, runner, standin, status, up, util};

/// A real multi-node Kubernetes control plane on loopback (real sshd, real etcd over TLS,
/// kubeadm manifests, a kubelet-like static-pod runner) for testing etcd-recover.
#[derive(Debug, Parser)]
#[command(name = "etcd-recover-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fault {
    /// Stop the node's sshd listener (established sessions survive).
    StopSshd,
    /// Stop the node's sshd and kill its established sessions (the node drops off the
    /// network: open connections break, new ones are refused; commands keep running).
    DropSsh,
    /// Start the node's sshd again.
    StartSshd,
    /// Stop the node's static-pod runner (pods keep running).
    StopRunner,
    /// Start the node's runner (it adopts running pods whose manifest is unchanged).
    StartRunner,
    /// SIGKILL the etcd container (the runner restarts it with back-off).
    KillEtcd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build and start a lab: N nodes with sshd, etcd, apiserver and components.
    Up {
        /// Lab directory (created; must be empty or hold a lab that is down).
        #[arg(long)]
        dir: PathBuf,
        /// Number of control-plane nodes (1..7).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// etcd series: 3.5 (etcd 3.5.1 from the cache) or 3.4 (/usr/bin/etcd).
        #[arg(long, default_value = "3.5", value_parser = ["3.5", "3.4"])]
        etcd: String,
        /// SSH login user; a non-root user is created with passwordless sudo.
        #[arg(long, default_value = "root")]
        ssh_user: String,
        /// Base address: node i is base + i.
        #[arg(long, default_value = "127.0.0.10")]
        base_ip: Ipv4Addr,
        /// The runners' poll period (the kubelet's fileCheckFrequency; 20000 is the kubelet's default).
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// Cluster name written to the inventory.
        #[arg(long, default_value = "lab")]
        cluster: String,
        /// Seconds to wait for the control plane to become healthy.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// etcd binary [env: ETCD_RECOVER_LAB_ETCD]
        #[arg(long)]
        etcd_bin: Option<PathBuf>,
        /// etcdctl binary [env: ETCD_RECOVER_LAB_ETCDCTL]
        #[arg(long)]
        etcdctl_bin: Option<PathBuf>,
        /// etcdutl binary [env: ETCD_RECOVER_LAB_ETCDUTL]
        #[arg(long)]
        etcdutl_bin: Option<PathBuf>,
        /// sshd binary.
        #[arg(long, default_value = "/usr/sbin/sshd")]
        sshd_bin: PathBuf,
    },
    /// Show every node: etcd health, ids, revision, hashkv, keys, leader, apiserver, daemons.
    Status {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write keys under real Kubernetes prefixes.
    Seed {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Number of keys.
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Key prefix (repeatable); default /registry/configmaps/ and /registry/secrets/.
        #[arg(long)]
        prefix: Vec<String>,
        /// Write through this node only (default: all endpoints).
        #[arg(long)]
        node: Option<String>,
        /// Pad every value to at least this many bytes (to grow the database, e.g. for
        /// benchmarks: 10 MiB is about 2500 keys of 4096 bytes).
        #[arg(long, default_value_t = 0)]
        value_size: usize,
    },
    /// Take a snapshot with the real `etcdctl snapshot save`.
    Snapshot {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Snapshot file to write.
        #[arg(long)]
        out: PathBuf,
        /// Node to take it from (default cp-1).
        #[arg(long, default_value = "cp-1")]
        node: String,
    },
    /// Inject a fault on one node.
    Fault {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Node name, e.g. cp-2.
        #[arg(long)]
        node: String,
        /// What to do.
        action: Fault,
    },
    /// Restart a node's runner the way a kubelet restart happens: running pods whose
    /// manifest is unchanged are adopted, not restarted.
    KubeletRestart {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Node name.
        #[arg(long)]
        node: String,
    },
    /// Stop everything the lab started (idempotent).
    Down {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) The static-pod runner of one node.
    #[command(hide = true)]
    Runner {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Node name.
        #[arg(long)]
        node: String,
    },
    /// (internal) The stand-in kube-apiserver; takes kube-apiserver's flags.
    #[command(hide = true)]
    Apiserver {
        /// kube-apiserver flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) The stand-in kube-controller-manager / kube-scheduler.
    #[command(hide = true)]
    Component {
        /// kube-controller-manager or kube-scheduler.
        name: String,
        /// The component's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the event loop")
}

fn abs(p: &std::path::Path) -> Result<PathBuf> {
    util::absolute(p)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Up {
            dir,
            nodes,
            etcd,
            ssh_user,
            base_ip,
            poll_ms,
            cluster,
            timeout,
            etcd_bin,
            etcdctl_bin,
            etcdutl_bin,
            sshd_bin,
        } => up::up(up::UpOptions {
            dir,
            nodes,
            etcd,
            ssh_user,
            base_ip,
            poll_ms,
            cluster,
            timeout: Duration::from_secs(timeout),
            etcd_bin,
            etcdctl_bin,
            etcdutl_bin,
            sshd_bin,
        }),
        Cmd::Status { dir, json } => {
            let st = LabState::load(&abs(&dir)?)?;
            let v = rt()?.block_on(status::collect(&st));
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::out!("{}", status::render(&v));
            }
            Ok(())
        }
        Cmd::Seed {
            dir,
            keys,
            prefix,
            node,
            value_size,
        } => {
            let st = LabState::load(&abs(&dir)?)?;
            let n = node.as_deref().map(|n| st.node(n)).transpose()?;
            let (took, rev) = rt()?.block_on(data::seed(&st, keys, &prefix, n, value_size))?;
            let secs = took.as_secs_f64();
            crate::outln!(
                "seeded {keys} keys under {} in {secs:.2}s ({:.0} keys/s), revision {rev}",
                if prefix.is_empty() {
                    data::DEFAULT_PREFIXES.join(", ")
                } else {
                    prefix.join(", ")
                },
                keys as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Cmd::Snapshot { dir, out, node } => {
            let st = LabState::load(&abs(&dir)?)?;
            let n = st.node(&node)?;
            let out = abs(&out)?;
            let text = data::snapshot(&st, n, &out)?;
            let bytes =
                std::fs::read(&out).with_context(|| format!("cannot read {}", out.display()))?;
            crate::outln!(
                "snapshot of {} (etcd {}) saved to {}: {} bytes, sha256 {}",
                n.name,
                st.etcd.version,
                out.display(),
                bytes.len(),
                util::sha256_hex(&bytes)
            );
            for l in text.lines().filter(|l| l.contains("Snapshot saved")) {
                crate::outln!("{l}");
            }
            Ok(())
        }
        Cmd::Fault { dir, node, action } => {
            let dir = abs(&dir)?;
            match action {
                Fault::StopSshd => match procs::stop_sshd(&dir, &node)? {
                    Some(p) => crate::outln!("{node}: sshd (pid {}) stopped", p.pid),
                    None => crate::outln!("{node}: sshd was not running"),
                },
                Fault::DropSsh => {
                    let (listener, sessions) = procs::drop_ssh(&dir, &node)?;
                    crate::outln!(
                        "{node}: sshd {} and {sessions} session process(es) killed",
                        listener.map_or("was not running".to_string(), |p| format!(
                            "(pid {}) stopped",
                            p.pid
                        ))
                    );
                }
                Fault::StartSshd => {
                    let (p, new) = procs::start_sshd(&dir, &node)?;
                    crate::outln!(
                        "{node}: sshd {} (pid {})",
                        if new { "started" } else { "already running" },
                        p.pid
                    );
                }
                Fault::StopRunner => match procs::stop_runner(&dir, &node)? {
                    Some(p) => {
                        crate::outln!("{node}: runner (pid {}) stopped; pods keep running", p.pid)
                    }
                    None => crate::outln!("{node}: runner was not running"),
                },
                Fault::StartRunner => {
                    let (p, new) = procs::start_runner(&dir, &node)?;
                    crate::outln!(
                        "{node}: runner {} (pid {})",
                        if new { "started" } else { "already running" },
                        p.pid
                    );
                }
                Fault::KillEtcd => {
                    let st = LabState::load(&dir)?;
                    let n = st.node(&node)?;
                    let pods = runner::read_status(&NodePaths::new(&n.dir).pod_status());
                    let pid = pods
                        .get("etcd")
                        .and_then(|p| p.pid.zip(p.start_time))
                        .map(|(pid, start_time)| util::ProcId { pid, start_time })
                        .filter(|p| p.alive())
                        .with_context(|| {
                            format!(
                                "{node}: no etcd pod is running (see {})",
                                NodePaths::new(&n.dir).pod_status().display()
                            )
                        })?;
                    util::signal_group(pid.pid, Signal::SIGKILL);
                    util::wait_gone(&[(pid, true)], Duration::from_secs(5));
                    crate::outln!("{node}: etcd (pid {}) killed with SIGKILL", pid.pid);
                }
            }
            Ok(())
        }
        Cmd::KubeletRestart { dir, node } => {
            let dir = abs(&dir)?;
            let st = LabState::load(&dir)?;
            let paths = NodePaths::new(&st.node(&node)?.dir);
            let before = runner::read_status(&paths.pod_status());
            let old = procs::stop_runner(&dir, &node)?;
            let (new, _) = procs::start_runner(&dir, &node)?;
            let after = runner::read_status(&paths.pod_status());
            let adopted: Vec<String> = after
                .iter()
                .filter(|(k, v)| v.pid.is_some() && before.get(*k).map(|b| b.pid) == Some(v.pid))
                .map(|(k, v)| format!("{k} (pid {})", v.pid.unwrap_or_default()))
                .collect();
            crate::outln!(
                "{node}: kubelet (runner) restarted, pid {} -> {}; adopted: {}",
                old.map(|p| p.pid.to_string())
                    .unwrap_or_else(|| "none".into()),
                new.pid,
                if adopted.is_empty() {
                    "none".to_string()
                } else {
                    adopted.join(", ")
                }
            );
            Ok(())
        }
        Cmd::Down { dir } => {
            let dir = abs(&dir)?;
            if !dir.exists() {
                crate::outln!("{}: no such directory, nothing to stop", dir.display());
                return Ok(());
            }
            let r = down::down(&dir)?;
            crate::outln!(
                "lab {} down: stopped {} process(es){}",
                dir.display(),
                r.stopped,
                if r.had_state {
                    ""
                } else {
                    " (no lab.json; searched processes by marker only)"
                }
            );
            Ok(())
        }
        Cmd::Runner { dir, node } => runner::run(&abs(&dir)?, &node),
        Cmd::Apiserver { args } => standin::apiserver(&args),
        Cmd::Component { name, args } => standin::component(&name, &args),
    }
}

/// Runs the command line; exit code 1 on errors, 3 when an address is already in use.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-recover-lab: error: {e:#}");
            if e.downcast_ref::<up::AddrInUse>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
