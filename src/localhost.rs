//! [`Remote`] implemented on this machine, without SSH.
//!
//! Commands run as local processes with the same argv the SSH transport would send, so the
//! engine and the node operations can be exercised end to end on directories of this machine.
//! Privileged commands run as the current user (tests run as root or on files they own).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::remote::{Cmd, ExitStatus, Forward, Output, ProgressFn, Remote, RemoteError, WriteOpts};

/// A node that is this machine.
#[derive(Debug, Clone)]
pub struct Localhost {
    name: String,
}

impl Localhost {
    /// A local node called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Localhost { name: name.into() }
    }

    fn other(&self, reason: impl std::fmt::Display) -> RemoteError {
        RemoteError::Other {
            node: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}

#[async_trait]
impl Remote for Localhost {
    fn node(&self) -> &str {
        &self.name
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let start = Instant::now();
        let Some((program, args)) = cmd.argv.split_first() else {
            return Err(self.other("empty command"));
        };
        crate::remote::check_words(cmd).map_err(|e| self.other(e))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.other(format!("cannot run `{cmd}`: {e}")))?;
        if let (Some(input), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let waited = tokio::time::timeout(cmd.timeout, child.wait_with_output()).await;
        let out = match waited {
            Ok(r) => r.map_err(|e| self.other(format!("`{cmd}`: {e}")))?,
            Err(_) => {
                return Err(RemoteError::Timeout {
                    node: self.name.clone(),
                    cmd: cmd.to_string(),
                    timeout: cmd.timeout,
                })
            }
        };
        let status = match out.status.code() {
            Some(c) => ExitStatus::Code(u32::try_from(c).unwrap_or(255)),
            None => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::Signal(out.status.signal().map_or("?".into(), |s| s.to_string()))
            }
        };
        Ok(Output {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
            duration: start.elapsed(),
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, RemoteError> {
        tokio::fs::read(path)
            .await
            .map_err(|e| self.other(format!("cannot read `{path}`: {e}")))
    }

    async fn write_file_atomic(
        &self,
        path: &str,
        contents: &[u8],
        opts: &WriteOpts,
    ) -> Result<(), RemoteError> {
        // The same script the SSH transport runs, so both paths share one behaviour.
        let cmd = crate::remote::atomic_write_cmd(path, contents, opts);
        self.run(&cmd).await.map(|_| ())
    }

    async fn upload(
        &self,
        local: &Path,
        remote_path: &str,
        mode: u32,
        expected: Option<[u8; 32]>,
        progress: ProgressFn<'_>,
    ) -> Result<[u8; 32], RemoteError> {
        let tmp = format!("{remote_path}.part");
        let mut src = tokio::fs::File::open(local)
            .await
            .map_err(|e| self.other(format!("cannot open `{}`: {e}", local.display())))?;
        let mut dst = {
            let mut o = tokio::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true).mode(mode);
            o.open(&tmp)
                .await
                .map_err(|e| self.other(format!("cannot create `{tmp}`: {e}")))?
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .await
                .map_err(|e| self.other(format!("reading `{}`: {e}", local.display())))?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])
                .await
                .map_err(|e| self.other(format!("writing `{tmp}`: {e}")))?;
            sent += n as u64;
            progress(sent);
        }
        dst.sync_all()
            .await
            .map_err(|e| self.other(format!("fsync `{tmp}`: {e}")))?;
        drop(dst);
        // Hash what landed on disk, not what was sent.
        let part = tmp.clone();
        let written = tokio::task::spawn_blocking(move || sha256_file(Path::new(&part)))
            .await
            .map_err(|e| self.other(e))?
            .map_err(|e| self.other(format!("hashing `{tmp}`: {e}")))?;
        if let Some(expected) = expected.filter(|e| *e != written) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.other(format!(
                "`{}` copied to {remote_path} has SHA-256 {}, expected {}; the copy was removed",
                local.display(),
                hex::encode(written),
                hex::encode(expected)
            )));
        }
        tokio::fs::rename(&tmp, remote_path)
            .await
            .map_err(|e| self.other(format!("rename `{tmp}`: {e}")))?;
        Ok(written)
    }

    async fn forward(&self, host: &str, port: u16) -> Result<Forward, RemoteError> {
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|e| self.other(format!("`{host}:{port}` is not an address: {e}")))?;
        Ok(Forward {
            local_addr: addr,
            guard: Box::new(()),
        })
    }
}

/// SHA-256 of a local file, streamed in constant memory.
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
