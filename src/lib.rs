//! etcd-recover restores a Kubernetes control plane's etcd from a snapshot on every
//! control-plane node at once, over SSH.
//!
//! # Layout
//! Each module uses only modules further down this list (no import cycles outside `cli`).
//!
//! - [`cli`]: argument parsing and one front end per command (the only place clap is used);
//!   `apply`, `guide`, `resume` and `rollback` share one flow that builds and runs the engine.
//! - [`workflow`]: the flows the commands share: connect, gather facts, plan, detect drift.
//! - [`ui`]: the terminal (the only place that prints, prompts or colours): progress, prompts,
//!   error rendering (`error:` / `caused by:` / `hint:`), documents on stdout.
//! - [`check`]: `etcd-recover check`: the readiness report, a view of the [`facts`].
//! - [`report`]: `report.md` and `report.json` from the plan and the journal.
//! - [`engine`]: executes a plan: barriers, journal, resume, rollback, dry run; generic actions.
//! - [`health`]: is the restored cluster healthy ([`health::ClusterChecks`] and its live checks).
//! - [`plan`]: the plan model, the builder that asks every step for its actions, rendering.
//! - [`playbook`]: the YAML playbook: stages of steps, validated against the steps' rules.
//! - [`steps`]: one file per step type: spec, validation, safety rules, actions, own execution.
//! - [`facts`]: the one fact gatherer: what every node looks like, its etcd from a source.
//! - [`action`]: what a step does: actions with rollbacks, scope, node order.
//! - [`layout`]: where a run keeps its files on a node (run directory, lock, plan, state).
//! - [`probe`]: HTTP(S) probes through a tunnel, as the kubelet runs them.
//! - [`finding`]: findings and their severity.
//! - [`node`]: typed, idempotent node operations (move once, copy once, occupancy, ...).
//! - [`manifest`]: reading static-pod manifests and the format-preserving `etcd-data` rewrite.
//! - [`snapshot`]: snapshot file verification (SHA-256 trailer, bbolt meta pages).
//! - [`etcd`]: etcd knowledge: member/cluster IDs, versions, the restore argv, etcd-client.
//! - [`transport`]: `Remote` over SSH (russh): host keys, auth, sudo, upload, port forwards.
//! - [`inventory`]: the inventory file and the user's OpenSSH client config.
//! - [`localhost`]: `Remote` on this machine (tests and local runs).
//! - [`remote`]: the [`remote::Remote`] trait, the only way the rest of the crate touches a node.
//! - [`error`]: hints and exit codes carried by errors.
#![deny(missing_docs)]

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
