//! Public-key authentication: key files (ed25519, ECDSA, RSA with SHA-2), passphrases asked
//! once per file and kept in memory for every node, and the ssh-agent.
//!
//! Secrets stay in this module: decrypted keys live in [`KeyStore`] (whose `Debug` shows only
//! paths), passphrases are wiped after use ([`Zeroizing`]), and messages name key files and
//! public fingerprints only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::{Certificate, PublicKey};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use super::handler::ClientHandler;
use super::known_hosts::{fingerprint, key_type};
use crate::inventory::Endpoint;

/// Asks the user for a key's passphrase.
pub trait PassphrasePrompt: Send + Sync {
    /// The passphrase for `key_file`, or `None` when nobody can be asked (no terminal) or the
    /// user gave up. `attempt` counts from 1. Called from a blocking thread, one at a time.
    fn passphrase(&self, key_file: &Path, attempt: u32) -> Option<Zeroizing<String>>;

    /// The sudo password of `users` (comma-separated login users), asked once for the run;
    /// `None` when nobody can be asked. Called from a blocking thread.
    fn sudo_password(&self, users: &str) -> Option<Zeroizing<String>> {
        let _ = users;
        None
    }
}

/// Never asks: passphrase-protected keys must be in the agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPrompt;

impl PassphrasePrompt for NoPrompt {
    fn passphrase(&self, _: &Path, _: u32) -> Option<Zeroizing<String>> {
        None
    }
}

/// How many times a wrong passphrase may be typed for one key file.
const PASSPHRASE_ATTEMPTS: u32 = 3;

/// The longest wait for the ssh-agent to answer one request.
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The agent's identities, or none when it fails or does not answer within [`AGENT_TIMEOUT`].
async fn agent_identities(agent: &mut AgentClient<tokio::net::UnixStream>) -> Vec<AgentIdentity> {
    match tokio::time::timeout(AGENT_TIMEOUT, agent.request_identities()).await {
        Ok(Ok(ids)) => ids,
        _ => Vec::new(),
    }
}

/// What loading a key file gave.
#[derive(Clone)]
enum KeyState {
    /// Decrypted and ready to sign.
    Ready(Arc<PrivateKey>),
    /// Passphrase-protected, but the agent holds it: sign with the agent.
    InAgent(PublicKey),
    /// Passphrase-protected and could not be decrypted (no terminal, or wrong passphrase).
    Locked {
        public: Option<PublicKey>,
        why: String,
    },
    /// The file does not exist.
    Missing,
    /// The file exists but is not a usable private key.
    Unusable(String),
}

/// Loaded key files, shared by every connection of a run so that each passphrase is asked
/// once.
pub struct KeyStore {
    prompt: Arc<dyn PassphrasePrompt>,
    /// The ssh-agent's socket, if an agent is to be used.
    agent_socket: Option<PathBuf>,
    keys: Mutex<HashMap<PathBuf, Arc<OnceCell<KeyState>>>>,
    agent_keys: OnceCell<Vec<PublicKey>>,
    /// One prompt on the terminal at a time.
    prompting: Mutex<()>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    /// An empty store that asks passphrases through `prompt` and uses the ssh-agent listening
    /// on `agent_socket`, if any.
    pub fn new(prompt: Arc<dyn PassphrasePrompt>, agent_socket: Option<PathBuf>) -> Self {
        KeyStore {
            prompt,
            agent_socket,
            keys: Mutex::new(HashMap::new()),
            agent_keys: OnceCell::new(),
            prompting: Mutex::new(()),
        }
    }

    /// Loads every file now (asking passphrases before any connection starts its timeout).
    pub async fn preload(&self, files: &[PathBuf]) {
        for f in files {
            self.load(f).await;
        }
    }

    /// A fresh connection to the agent (each session signs through its own).
    async fn agent(&self) -> Option<AgentClient<tokio::net::UnixStream>> {
        let socket = self.agent_socket.as_ref()?;
        tokio::time::timeout(AGENT_TIMEOUT, AgentClient::connect_uds(socket))
            .await
            .ok()?
            .ok()
    }

    /// The agent's keys, asked once. An agent that does not answer within [`AGENT_TIMEOUT`]
    /// counts as holding none: this runs before any connection, outside every connect timeout.
    async fn agent_public_keys(&self) -> &[PublicKey] {
        self.agent_keys
            .get_or_init(|| async {
                match self.agent().await {
                    Some(mut agent) => agent_identities(&mut agent)
                        .await
                        .iter()
                        .map(|i| i.public_key().into_owned())
                        .collect(),
                    None => Vec::new(),
                }
            })
            .await
    }

    async fn load(&self, path: &Path) -> KeyState {
        let cell = {
            let mut keys = self.keys.lock().await;
            keys.entry(path.to_path_buf())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        cell.get_or_init(|| self.load_uncached(path)).await.clone()
    }

    async fn load_uncached(&self, path: &Path) -> KeyState {
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return KeyState::Missing,
            Err(e) => return KeyState::Unusable(format!("cannot read it: {e}")),
        };
        match russh::keys::decode_secret_key(&text, None) {
            Ok(key) => return KeyState::Ready(Arc::new(key)),
            Err(russh::keys::Error::KeyIsEncrypted) => {}
            Err(e) => return KeyState::Unusable(format!("not a private key russh can use: {e}")),
        }
        // The OpenSSH format keeps the public key in clear; older PEM files need the `.pub`.
        let public = PrivateKey::from_openssh(text.as_bytes())
            .ok()
            .map(|k| k.public_key().clone())
            .or_else(|| {
                let mut pub_path = path.as_os_str().to_owned();
                pub_path.push(".pub");
                russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
            });
        if let Some(p) = &public {
            if self
                .agent_public_keys()
                .await
                .iter()
                .any(|a| a.key_data() == p.key_data())
            {
                return KeyState::InAgent(p.clone());
            }
        }
        let _one_at_a_time = self.prompting.lock().await;
        for attempt in 1..=PASSPHRASE_ATTEMPTS {
            let prompt = self.prompt.clone();
            let file = path.to_path_buf();
            let answer = tokio::task::spawn_blocking(move || prompt.passphrase(&file, attempt))
                .await
                .ok()
                .flatten();
            let Some(passphrase) = answer else {
                return KeyState::Locked {
                    public,
                    why: if attempt == 1 {
                        "it is passphrase-protected and there is no terminal to ask for the passphrase".into()
                    } else {
                        "no passphrase was given".into()
                    },
                };
            };
            let text = text.clone();
            let decoded = tokio::task::spawn_blocking(move || {
                russh::keys::decode_secret_key(&text, Some(passphrase.as_str()))
            })
            .await;
            if let Ok(Ok(key)) = decoded {
                return KeyState::Ready(Arc::new(key));
            }
        }
        KeyState::Locked {
            public,
            why: format!("the passphrase was wrong {PASSPHRASE_ATTEMPTS} times"),
        }
    }
}

/// Why authentication failed, in words for the user.
pub(crate) struct AuthFailure {
    pub(crate) reason: String,
}

/// Tries the endpoint's key files, then (unless `IdentitiesOnly`) the agent's other keys.
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    endpoint: &Endpoint,
    keys: &KeyStore,
) -> Result<(), AuthFailure> {
    let user = endpoint.user.clone();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let mut tried: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut offered: Vec<PublicKey> = Vec::new();
    let mut agent = keys.agent().await;

    for file in &endpoint.identity_files {
        let shown = file.display();
        let state = keys.load(file).await;
        // A certificate for this key (`KEY-cert.pub`, or a `CertificateFile`) goes first; the
        // plain key follows if the server refuses it.
        let cert = match &state {
            KeyState::Ready(key) => certificate_for(file, key.public_key(), endpoint),
            KeyState::InAgent(public) => certificate_for(file, public, endpoint),
            _ => None,
        };
        if let Some((cert, cert_file)) = cert {
            let res = match &state {
                KeyState::Ready(key) => handle
                    .authenticate_openssh_cert(&user, key.clone(), cert.clone())
                    .await
                    .map_err(|e| e.to_string()),
                KeyState::InAgent(_) => match agent.as_mut() {
                    Some(agent) => handle
                        .authenticate_certificate_with(&user, cert.clone(), rsa_hash, agent)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("the ssh-agent does not answer".to_string()),
                },
                _ => Err(String::new()),
            };
            if accepted(res, handle.is_closed(), &mut notes)? {
                return Ok(());
            }
            tried.push(format!(
                "{} (certificate `{}` for {})",
                cert_file.display(),
                crate::remote::printable(cert.key_id()),
                describe(&PublicKey::new(cert.public_key().clone(), ""))
            ));
        }
        match state {
            KeyState::Ready(key) => {
                let public = key.public_key().clone();
                let res = handle
                    .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(key, rsa_hash))
                    .await;
                if accepted(
                    res.map_err(|e| e.to_string()),
                    handle.is_closed(),
                    &mut notes,
                )? {
                    return Ok(());
                }
                tried.push(format!("{shown} ({})", describe(&public)));
                offered.push(public);
            }
            KeyState::InAgent(public) => {
                if let Some(agent) = agent.as_mut() {
                    let res = handle
                        .authenticate_publickey_with(&user, public.clone(), rsa_hash, agent)
                        .await;
                    if accepted(
                        res.map_err(|e| e.to_string()),
                        handle.is_closed(),
                        &mut notes,
                    )? {
                        return Ok(());
                    }
                }
                tried.push(format!("{shown} via ssh-agent ({})", describe(&public)));
                offered.push(public);
            }
            KeyState::Locked { public, why } => {
                notes.push(format!(
                    "{shown} was not used: {why}; add it to ssh-agent (`ssh-add {shown}`) or run on a terminal"
                ));
                if let Some(p) = public {
                    // The agent may still hold it under another file name.
                    offered.retain(|o| o.key_data() != p.key_data());
                }
            }
            KeyState::Missing if endpoint.identities_explicit => {
                notes.push(format!("{shown} does not exist"));
            }
            KeyState::Missing => {}
            KeyState::Unusable(why) => notes.push(format!("{shown} was not used: {why}")),
        }
    }

    if !endpoint.identities_only {
        if let Some(agent_client) = agent.as_mut() {
            let identities = agent_identities(agent_client).await;
            for id in identities {
                let AgentIdentity::PublicKey { key, comment } = &id else {
                    continue;
                };
                if offered.iter().any(|o| o.key_data() == key.key_data()) {
                    continue;
                }
                let res = handle
                    .authenticate_publickey_with(&user, key.clone(), rsa_hash, agent_client)
                    .await;
                if accepted(
                    res.map_err(|e| e.to_string()),
                    handle.is_closed(),
                    &mut notes,
                )? {
                    return Ok(());
                }
                let label = if comment.is_empty() {
                    "ssh-agent key".to_string()
                } else {
                    format!("ssh-agent key `{comment}`")
                };
                tried.push(format!("{label} ({})", describe(key)));
                offered.push(key.clone());
            }
        }
    }

    let mut reason = if tried.is_empty() {
        "no key to offer".to_string()
    } else {
        format!("the server refused {}", tried.join(", "))
    };
    if tried.is_empty() {
        match (&keys.agent_socket, &agent) {
            (None, _) => reason.push_str(" (no ssh-agent: SSH_AUTH_SOCK is not set)"),
            (Some(s), None) => reason.push_str(&format!(
                " (the ssh-agent at {} does not answer)",
                s.display()
            )),
            _ => {}
        }
    }
    for n in &notes {
        reason.push_str("; ");
        reason.push_str(n);
    }
    reason.push_str(&format!(
        "; to fix: install the public key in ~{}/.ssh/authorized_keys on {}, or point `ssh.identity_file` in the inventory at the right key",
        endpoint.user, endpoint.host
    ));
    Err(AuthFailure { reason })
}

/// `Ok(true)` on success, `Ok(false)` when this key was refused, `Err` when the session broke.
fn accepted(
    res: Result<AuthResult, String>,
    closed: bool,
    notes: &mut Vec<String>,
) -> Result<bool, AuthFailure> {
    match res {
        Ok(AuthResult::Success) => Ok(true),
        Ok(AuthResult::Failure { .. }) => Ok(false),
        Err(e) if closed => Err(AuthFailure {
            reason: format!(
                "the server closed the connection during authentication ({e}); it may limit attempts (MaxAuthTries): set `ssh.identity_file` to the one right key"
            ),
        }),
        Err(e) => {
            notes.push(format!("signing failed: {e}"));
            Ok(false)
        }
    }
}

/// The user certificate for `key`: `FILE-cert.pub` next to the key file, else the first of
/// the endpoint's `CertificateFile`s that certifies this key. Files that are missing or not
/// certificates are skipped.
fn certificate_for(
    key_file: &Path,
    key: &PublicKey,
    endpoint: &Endpoint,
) -> Option<(Certificate, PathBuf)> {
    let mut next_to_key = key_file.as_os_str().to_owned();
    next_to_key.push("-cert.pub");
    std::iter::once(PathBuf::from(next_to_key))
        .chain(endpoint.certificate_files.iter().cloned())
        .find_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let cert = Certificate::from_openssh(text.trim()).ok()?;
            (cert.public_key() == key.key_data()).then_some((cert, path))
        })
}

/// `ED25519 SHA256:...`
fn describe(key: &PublicKey) -> String {
    format!("{} {}", key_type(&key.algorithm()), fingerprint(key))
}
