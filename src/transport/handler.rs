//! The russh client handler: checks each hop's host key against known_hosts and records why it
//! refused (russh itself only reports "unknown key"). Shared by the modules that hold session
//! handles (`session`, `auth`, `forward`, `node`), and depending on none of them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::ssh_key::{Algorithm, PublicKey};
use russh::keys::PublicKeyOrCertificate;

use super::known_hosts::{self, fingerprint, key_type, CertVerdict, Verdict};

/// Checks the server's host key against known_hosts; records why it refused.
pub(crate) struct ClientHandler {
    /// `host` or `[host]:port`: the name the key is recorded under.
    pub(crate) lookup_name: String,
    /// The user's known_hosts files; new keys go to the first.
    pub(crate) user_files: Vec<PathBuf>,
    /// The user's files followed by the system-wide ones.
    pub(crate) all_files: Vec<PathBuf>,
    pub(crate) accept_new: bool,
    /// Why the key was refused, for the error message (russh only reports "unknown key").
    pub(crate) refusal: Arc<Mutex<Option<String>>>,
    /// Things the user should know (a newly recorded key).
    pub(crate) notes: Arc<Mutex<Vec<String>>>,
    /// Names a host certificate may be issued to: the host name (or `HostKeyAlias`) and the
    /// address connected to.
    pub(crate) principals: Vec<String>,
}

impl ClientHandler {
    fn refuse(&self, reason: String) -> Result<bool, russh::Error> {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(reason);
        }
        Ok(false)
    }

    fn files_list(&self) -> String {
        let files: Vec<String> = self
            .all_files
            .iter()
            .filter(|f| f.exists())
            .map(|f| f.display().to_string())
            .collect();
        if files.is_empty() {
            let first = self
                .user_files
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "~/.ssh/known_hosts".into());
            format!("{first} (which does not exist)")
        } else {
            files.join(", ")
        }
    }
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let inner;
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let name = &self.lookup_name;
                match known_hosts::check_certificate(
                    &self.all_files,
                    name,
                    &self.principals,
                    cert,
                    now,
                ) {
                    CertVerdict::Trusted(_) => return Ok(true),
                    CertVerdict::Refused(why) => {
                        let ca = PublicKey::new(cert.signature_key().clone(), "");
                        return self.refuse(format!(
                            "the server presented a host certificate `{}` signed by the CA {} {}; it is refused for `{name}`: {why}",
                            crate::remote::printable(cert.key_id()),
                            key_type(&ca.algorithm()),
                            fingerprint(&ca)
                        ));
                    }
                    // No CA is trusted for this host: verify the certified key as a plain
                    // host key, as OpenSSH does.
                    CertVerdict::NoAuthority => {
                        inner = PublicKey::new(cert.public_key().clone(), "");
                        &inner
                    }
                }
            }
        };
        let offered = format!("{} key {}", key_type(&key.algorithm()), fingerprint(key));
        let name = &self.lookup_name;
        match known_hosts::check(&self.all_files, name, key) {
            Verdict::Trusted(_) => Ok(true),
            Verdict::Changed { at, recorded } => self.refuse(format!(
                "THE HOST KEY HAS CHANGED: the server offered {offered}, but {} records {recorded} for `{name}`; \
                 someone may be intercepting the connection, or the node was reinstalled; \
                 a changed key is never accepted: confirm the new key on the node's console \
                 (`ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub`), then remove the old entry with \
                 `ssh-keygen -R '{name}' -f {}` and connect again",
                at,
                key_file_stem(&key.algorithm()),
                at.file.display()
            )),
            Verdict::Revoked(at) => self.refuse(format!(
                "the server offered {offered}, which {at} marks as @revoked"
            )),
            Verdict::Unknown { other_types } if self.accept_new && !other_types.is_empty() => {
                let recorded: Vec<String> = other_types
                    .iter()
                    .map(|(at, kind)| format!("a {kind} key at {at}"))
                    .collect();
                self.refuse(format!(
                    "the server offered {offered}, but {} is on record for `{name}`; \
                     --accept-new-host-keys records keys of hosts that have none, never a second \
                     key type for a known host (OpenSSH refuses this too): confirm the new key on \
                     the node's console (`ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub`) and add \
                     it to known_hosts yourself, or make sshd offer the recorded key type",
                    recorded.join(" and "),
                    key_file_stem(&key.algorithm()),
                ))
            }
            Verdict::Unknown { .. } if self.accept_new => {
                let Some(file) = self.user_files.first() else {
                    return self.refuse("no known_hosts file is configured to record the key in".into());
                };
                match known_hosts::append(file, name, key) {
                    Ok(line) => {
                        if let Ok(mut notes) = self.notes.lock() {
                            notes.push(format!(
                                "recorded new host key for `{name}` ({offered}) in {}:{line}",
                                file.display()
                            ));
                        }
                        Ok(true)
                    }
                    Err(e) => self.refuse(format!(
                        "cannot record the host key in {}: {e}",
                        file.display()
                    )),
                }
            }
            Verdict::Unknown { other_types } => {
                let mut reason = format!(
                    "no host key for `{name}` is on record in {}; the server offered {offered}",
                    self.files_list()
                );
                for (at, kind) in &other_types {
                    reason.push_str(&format!(" ({at} has a {kind} key for it)"));
                }
                reason.push_str(&format!(
                    "; to trust it, compare that fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub` on the node's console, then rerun with --accept-new-host-keys (records it in {})",
                    key_file_stem(&key.algorithm()),
                    self.user_files
                        .first()
                        .map(|f| f.display().to_string())
                        .unwrap_or_else(|| "known_hosts".into())
                ));
                self.refuse(reason)
            }
        }
    }
}

/// `ed25519`, `ecdsa`, `rsa`: the middle of `/etc/ssh/ssh_host_*_key.pub`.
fn key_file_stem(alg: &Algorithm) -> String {
    key_type(alg).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::Handler;

    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIOIIXPt09XK+Layg8m/D9P2tW+4Du2RBe6RaENWF68x";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBASdKK0aYk7wFqyWo1jr6kkR4OIk4sh5qai8cDYTEvEsKNzzUcIXkAxRUqwlVmzQS26jzi3j73ZyGGlBNODP6hI=";

    fn handler(files: Vec<PathBuf>, accept_new: bool) -> ClientHandler {
        ClientHandler {
            lookup_name: "cp-1".into(),
            user_files: files.clone(),
            all_files: files,
            accept_new,
            refusal: Arc::new(Mutex::new(None)),
            notes: Arc::new(Mutex::new(Vec::new())),
            principals: vec!["cp-1".into()],
        }
    }

    /// Issue 13: with --accept-new-host-keys, a key of a new type is refused while the host
    /// has a key of another type on record; a host with no key at all is recorded.
    #[tokio::test]
    async fn accept_new_never_adds_a_second_key_type_to_a_known_host() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        let recorded = format!("cp-1 ecdsa-sha2-nistp256 {ECDSA}\n");
        std::fs::write(&kh, &recorded).unwrap();
        let offered = russh::keys::parse_public_key_base64(ED25519).unwrap();
        let mut h = handler(vec![kh.clone()], true);
        let trusted = h
            .check_server_key(&PublicKeyOrCertificate::from(offered.clone()))
            .await
            .unwrap();
        assert!(!trusted);
        let reason = h.refusal.lock().unwrap().clone().unwrap();
        assert!(reason.contains("a ECDSA key at"), "{reason}");
        assert!(reason.contains("never a second key type"), "{reason}");
        assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded);

        let mut h = handler(vec![dir.path().join("new_known_hosts")], true);
        assert!(h
            .check_server_key(&PublicKeyOrCertificate::from(offered))
            .await
            .unwrap());
    }
}
