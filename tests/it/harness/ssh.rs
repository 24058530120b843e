//! The throwaway [`Sshd`] as the tool's SSH targets, and host key fingerprints as the tool
//! prints them.

use std::time::Duration;

use etcd_recover::inventory::{Endpoint, SshTarget, SudoMode};
use etcd_recover_lab::testing::Sshd;

/// An [`Sshd`] as the tool addresses it.
pub trait SshdTarget {
    /// An endpoint for this server, as root with the client key and only this server's host
    /// key on record.
    fn endpoint(&self) -> Endpoint;
    /// A target for this server named `node`.
    fn target(&self, node: &str) -> SshTarget;
}

impl SshdTarget for Sshd {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            identity_files: vec![self.client_key.clone()],
            identities_explicit: true,
            identities_only: true,
            known_hosts: vec![self.known_hosts.clone()],
            global_known_hosts: vec![],
            host_key_alias: None,
        }
    }

    fn target(&self, node: &str) -> SshTarget {
        SshTarget {
            node: node.into(),
            endpoint: self.endpoint(),
            jumps: vec![],
            sudo: SudoMode::Auto,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
        }
    }
}

/// The fingerprint the tool prints for an OpenSSH public key line (`ssh-ed25519 AAAA...`).
pub fn fingerprint(pub_line: &str) -> String {
    let b64 = pub_line.split_whitespace().nth(1).unwrap();
    etcd_recover::transport::known_hosts::fingerprint(
        &russh::keys::parse_public_key_base64(b64).unwrap(),
    )
}
