//! The integration tests of etcd-recover, in one test binary (one build, one link, one run): the
//! real binary on files, against a throwaway sshd or etcd, and against real lab clusters (real
//! sshd, real etcd, a kubelet-like runner; see docs/lab.md).
//!
//! One module per area; [`harness`] holds everything they share. Lab tests run in parallel
//! threads, each lab in its own address slot.

mod harness;

mod check;
mod cli_errors;
mod failures;
mod guided;
mod interrupt;
mod manifest_fixtures;
mod plan;
mod restore;
mod snapshot_verify;
mod snapshots;
mod transport;
