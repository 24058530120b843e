//! `etcd-recover-lab`: a real multi-node Kubernetes control plane on one machine, for the
//! end-to-end tests of etcd-recover.
//!
//! Real: OpenSSH `sshd` per node, etcd (3.5 or 3.4) with a kubeadm-like TLS PKI, `etcdctl`
//! / `etcdutl`, the kubeadm file layout and static-pod manifests. Emulated: the kubelet's
//! file source (the static-pod runner), containers (host processes), and the apiserver,
//! controller-manager and scheduler (small stand-ins). See `docs/lab.md`.
//!
//! [`testing`] is the harness the end-to-end tests use.

#![warn(missing_docs)]

/// `println!` that ignores a closed stdout (e.g. `status | head`) instead of panicking.
#[macro_export]
#[doc(hidden)]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
#[macro_export]
#[doc(hidden)]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod cli;
pub mod testing;

mod data;
mod down;
mod etcdc;
mod manifests;
mod pki;
mod procs;
mod runner;
mod standin;
mod state;
mod status;
mod tls;
mod up;
mod util;
