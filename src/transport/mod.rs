//! [`crate::remote::Remote`] over SSH with russh: the only module that knows russh.
//!
//! - [`Connector`] opens [`SshNode`]s from [`crate::inventory::SshTarget`]s, in parallel,
//!   through jump hosts or a ProxyCommand, sharing loaded keys (so each passphrase is asked
//!   once) and the sudo password.
//! - Host keys are checked strictly against known_hosts ([`known_hosts`]); unknown keys are
//!   refused unless `accept_new_host_keys` is set, changed keys always; host certificates are
//!   trusted through `@cert-authority` lines.
//! - [`SshNode`] implements [`crate::remote::Remote`]: commands (through `sudo -n`, or
//!   `sudo -S` with the password, when needed), atomic file writes and streaming uploads
//!   verified by size and SHA-256, and local port forwards for this user only.
//!
//! Modules depend in one direction: `node` on `session`, `shell`, `forward`, `proxy` and
//! `scripts`; `session` on `auth` and `handler`; `auth` and `forward` on `handler`; `handler`
//! on `known_hosts`.
//!
//! Design notes: one russh `Handle` per node, shared by every operation (channels are cheap);
//! commands run through a command shell kept open on the node (module `shell`), so the login shell
//! and its rc files run once per node rather than once per command;
//! keepalives instead of an inactivity timeout, because restores have long silent phases; no
//! PTY, so standard error stays separate and output is byte-exact.

mod auth;
mod forward;
mod handler;
pub mod known_hosts;
mod node;
mod proxy;
mod scripts;
mod session;
mod shell;

pub use auth::{KeyStore, NoPrompt, PassphrasePrompt};
pub use node::{Agent, ConnectOptions, Connector, SshNode};
