//! etcd-recover restores a Kubernetes control plane's etcd from a snapshot on every
//! control-plane node at once, over SSH.
//!
//! # Layout
//! - [`cli`]: argument parsing and the per-command front ends (the only place clap is used).
//! - [`error`]: error rendering (`error:` / `caused by:` / `hint:`) and exit codes.
//! - [`remote`]: the [`remote::Remote`] trait, the only way the rest of the crate touches a node.
//! - [`transport`]: `Remote` over SSH (russh): host keys, auth, sudo, upload, port forwards.
//! - [`inventory`]: the inventory file and the user's OpenSSH client config.
//! - [`layout`]: where a run keeps its files on a node (run directory, lock, plan, state).
//! - [`manifest`]: reading static-pod manifests and the format-preserving `etcd-data` rewrite.
//! - [`snapshot`]: snapshot file verification (SHA-256 trailer, bbolt meta pages).
//! - [`check`]: `etcd-recover check`: is every node reachable and ready for a restore, a view of
//!   the [`facts`].
//! - [`facts`]: the one fact gatherer: what every node looks like, its etcd from a source.
//! - [`etcd`]: etcd facts: member/cluster IDs, versions, health checks through etcd-client.
//! - [`finding`]: findings and their severity.
//! - [`probe`]: HTTP(S) probes through a tunnel, as the kubelet runs them.
#![warn(missing_docs)]

pub mod action;
pub mod check;
pub mod cli;
pub mod engine;
pub mod error;
pub mod etcd;
pub mod facts;
pub mod finding;
pub mod health;
pub mod inventory;
pub mod layout;
pub mod localhost;
pub mod manifest;
pub mod node;
pub mod plan;
pub mod playbook;
pub mod probe;
pub mod remote;
pub mod report;
pub mod snapshot;
pub mod steps;
pub mod transport;
pub mod ui;
pub mod workflow;
