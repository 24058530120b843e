//! What the tests share: a lab with data and a snapshot ([`Setup`]); the binary under test
//! as a builder ([`etcd_recover`]), its JSON events ([`Running`]) and its terminal ([`Tty`]);
//! what a restore or a rollback must leave on a lab ([`assert_as_before`]); playbooks with
//! injected steps; the tool's SSH targets for a throwaway sshd; and, from the lab crate, real
//! labs, a throwaway etcd and sshd, and waits.
//!
//! Every module of the test binary starts with `use crate::harness::*;`.

mod cli;
mod events;
mod files;
mod playbook;
mod restore;
mod setup;
mod ssh;
mod tty;

pub use cli::{etcd_recover, ErrorBlock, EtcdRecover, Outcome};
pub use events::Running;
pub use files::{sha256_file, sha256_hex, write_file, write_pseudo_random};
pub use playbook::{builtin_playbook, command_step, playbook_with, stage_index, stage_of};
pub use restore::{
    assert_as_before, assert_no_runs, baseline, lock_files, report_json, run_dir, step_started_ms,
    AFTER_SNAPSHOT,
};
pub use setup::Setup;
pub use ssh::{fingerprint, SshdTarget};
pub use tty::Tty;

pub use etcd_recover_lab::testing::*;
