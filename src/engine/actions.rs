//! Executing one [`Action`]: probe whether it is already done, act, verify. Generic primitives
//! run here; an action that belongs to a step type goes to that step's code in
//! [`crate::steps`], with the engine as its [`Exec`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;

use super::{withheld, Engine, Event};
use crate::layout::RunDir;
use crate::node;
use crate::plan::{Action, Endpoint, HttpProbe, StepPlan};
use crate::remote::{Cmd, Remote, WriteOpts};
use crate::steps::{self, Exec, Wait};

impl Engine {
    /// Executes one action of `step` on `node` (`None` for cluster actions). Returns `true` when
    /// the action was found already done (or withheld in a dry run).
    pub(super) async fn execute(
        &self,
        step: &StepPlan,
        node_name: Option<&str>,
        action: &Action,
    ) -> anyhow::Result<bool> {
        let hold = withheld(self.mode, action);
        self.emit(Event::Action {
            step: step.id.clone(),
            node: node_name.map(String::from),
            text: action.describe(),
            withheld: hold,
        });
        if hold {
            return Ok(true);
        }
        match action {
            Action::Note { .. } => return Ok(true),
            Action::Step(own) => return steps::execute(own, node_name, self).await,
            _ => {}
        }
        let name = node_name.context("a node action in a cluster step")?;
        let remote = self.node(name)?.clone();
        let r = remote.as_ref();
        match action {
            Action::AcquireLock { path } => self.acquire_lock(r, path).await,
            Action::ReleaseLock { path } => self.release_lock(r, path).await,
            Action::MakeDir { path, mode } => {
                Ok(node::make_dir_once(r, path, *mode).await? == node::Applied::AlreadyDone)
            }
            Action::SaveRunState { dir } => {
                let opts = WriteOpts {
                    temp_dir: None,
                    mode: Some(0o600),
                };
                r.write_file_atomic(
                    &RunDir::at(dir).plan(),
                    self.plan.to_json().as_bytes(),
                    &opts,
                )
                .await?;
                Ok(false)
            }
            Action::CopyFile { from, to } => {
                Ok(node::copy_once(r, from, to).await? == node::Applied::AlreadyDone)
            }
            Action::MoveFile { from, to } => {
                Ok(node::move_once(r, from, to).await? == node::Applied::AlreadyDone)
            }
            Action::Upload {
                to,
                sha256,
                size,
                mode,
            } => {
                if node::sha256(r, to).await?.as_deref() == Some(sha256.as_str()) {
                    return Ok(true);
                }
                let total = *size;
                let node_owned = name.to_string();
                let observer = self.observer.clone();
                let last = std::sync::Mutex::new(Instant::now() - Duration::from_secs(1));
                let progress = move |sent: u64| {
                    let due = last.lock().map(|mut l| {
                        let due = l.elapsed() >= Duration::from_millis(100) || sent == total;
                        if due {
                            *l = Instant::now();
                        }
                        due
                    });
                    if due.unwrap_or(true) {
                        observer.event(&Event::Upload {
                            node: node_owned.clone(),
                            sent,
                            total,
                        });
                    }
                };
                // The node's copy must be the snapshot preflight verified, byte for byte.
                let mut expected = [0u8; 32];
                hex::decode_to_slice(sha256, &mut expected).with_context(|| {
                    format!("the plan's snapshot SHA-256 `{sha256}` is not hex")
                })?;
                // `upload` replaces `to` only with a copy whose hash is `expected`.
                r.upload(&self.snapshot, to, *mode, Some(expected), &progress)
                    .await?;
                Ok(false)
            }
            Action::CheckSha256 { path, sha256 } => match node::sha256(r, path).await? {
                Some(h) if &h == sha256 => Ok(false),
                Some(h) => bail!("{name}: `{path}` has SHA-256 {h}, expected {sha256}"),
                None => bail!("{name}: `{path}` does not exist"),
            },
            Action::RemoveOwnFile { path } => {
                if !node::exists(r, path).await? {
                    return Ok(true);
                }
                node::remove_own_file(r, path).await?;
                Ok(false)
            }
            Action::WaitStopped {
                pod,
                endpoints,
                dirs,
                timeout,
            } => self
                .wait_stopped(r, pod, endpoints, dirs, *timeout)
                .await
                .map(|()| false),
            Action::WaitListening {
                pod,
                endpoints,
                timeout,
            } => self
                .wait_listening(r, pod, endpoints, *timeout)
                .await
                .map(|()| false),
            Action::WaitServing {
                pod,
                probe,
                timeout,
            } => self
                .wait_serving(r, pod, probe, *timeout)
                .await
                .map(|()| false),
            Action::WriteFile {
                path,
                before_sha256,
                after_sha256,
                content,
                temp_dir,
                ..
            } => {
                let now = node::sha256(r, path).await?;
                match now.as_deref() {
                    Some(h) if h == after_sha256 => Ok(true),
                    Some(h) if h == before_sha256 => {
                        let opts = WriteOpts {
                            temp_dir: Some(temp_dir.clone()),
                            mode: Some(0o600),
                        };
                        r.write_file_atomic(path, content.as_bytes(), &opts).await?;
                        let after = node::sha256(r, path).await?;
                        if after.as_deref() != Some(after_sha256.as_str()) {
                            bail!("{name}: `{path}` does not have the expected contents after writing it");
                        }
                        Ok(false)
                    }
                    Some(h) => bail!(
                        "{name}: `{path}` changed since the plan was made (SHA-256 {h}); refusing to overwrite it"
                    ),
                    None => bail!("{name}: `{path}` does not exist"),
                }
            }
            Action::Run { argv, timeout } => {
                let cmd = Cmd::new(argv.clone()).timeout(Duration::from_secs(*timeout));
                r.run(&cmd).await?;
                Ok(false)
            }
            Action::Note { .. } | Action::Step(_) => Ok(true),
        }
    }

    async fn acquire_lock(&self, r: &dyn Remote, path: &str) -> anyhow::Result<bool> {
        let owner = serde_json::json!({
            "run_id": self.plan.run_id,
            "operator": self.operator,
            "pid": std::process::id(),
            "since": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .to_string();
        // `set -C` makes the redirection fail if the file exists: an atomic create.
        let out = r
            .exec(&Cmd::script(
                r#"set -C
if { printf '%s\n' "$2" > "$1"; } 2>/dev/null; then sync -- "$1"; echo acquired; else cat -- "$1"; fi"#,
                [path, &owner],
            ))
            .await?;
        let text = out.stdout_text();
        if text.trim() == "acquired" {
            return Ok(false);
        }
        let held: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        if held["run_id"] == self.plan.run_id.as_str() {
            return Ok(true);
        }
        bail!(
            "{}: another run holds the lock `{path}`: {} (run {}, by {}, since {}); if that run is over, finish it with `etcd-recover rollback {}` or remove the lock file",
            r.node(),
            text.trim(),
            held["run_id"].as_str().unwrap_or("?"),
            held["operator"].as_str().unwrap_or("?"),
            held["since"].as_str().unwrap_or("?"),
            held["run_id"].as_str().unwrap_or("RUN"),
        )
    }

    async fn release_lock(&self, r: &dyn Remote, path: &str) -> anyhow::Result<bool> {
        let out = r
            .exec(&Cmd::script(
                r#"if [ -e "$1" ]; then cat -- "$1"; fi"#,
                [path],
            ))
            .await?;
        let text = out.stdout_text();
        if text.trim().is_empty() {
            return Ok(true);
        }
        let held: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        if held["run_id"] != self.plan.run_id.as_str() {
            // Not ours: leave it alone.
            return Ok(true);
        }
        node::remove_own_file(r, path).await?;
        Ok(false)
    }

    /// Polls `check` until it reports nothing left to wait for (`Ok(None)`), emitting
    /// `Waiting` events with what is still pending; fails with `failure(pending)` at `timeout`.
    async fn poll_node<F, Fut>(
        &self,
        r: &dyn Remote,
        what: String,
        timeout: u64,
        failure: impl Fn(&str) -> String,
        check: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
    {
        let wait = Wait::new(Some(r.node()), &what, timeout);
        wait.announce(self);
        match steps::poll(self, &wait, check).await? {
            None => Ok(()),
            Some(pending) => bail!("{}: {}", r.node(), failure(&pending)),
        }
    }

    async fn wait_stopped(
        &self,
        r: &dyn Remote,
        pod: &str,
        endpoints: &[Endpoint],
        dirs: &[String],
        timeout: u64,
    ) -> anyhow::Result<()> {
        let check = || async {
            let occ = node::occupancy(r, pod, dirs).await?;
            let mut holding = Vec::new();
            for ep in endpoints {
                if occ.listeners.iter().any(|l| l.serves(&ep.host, ep.port)) {
                    holding.push(format!("{ep} still listening"));
                }
            }
            for (d, pids) in &occ.users {
                holding.push(format!(
                    "pid {} still using {d}",
                    pids.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            if !occ.containers.is_empty() {
                holding.push(format!(
                    "crictl shows container {} running",
                    occ.containers.join(",")
                ));
            }
            anyhow::Ok((!holding.is_empty()).then(|| holding.join("; ")))
        };
        let failure = |pending: &str| format!("{pod} did not stop within {timeout}s: {pending}");
        self.poll_node(r, format!("{pod} to stop"), timeout, failure, check)
            .await
    }

    async fn wait_listening(
        &self,
        r: &dyn Remote,
        pod: &str,
        endpoints: &[Endpoint],
        timeout: u64,
    ) -> anyhow::Result<()> {
        let check = || async {
            let listeners = node::listeners(r).await?;
            let missing: Vec<String> = endpoints
                .iter()
                .filter(|ep| !listeners.iter().any(|l| l.serves(&ep.host, ep.port)))
                .map(ToString::to_string)
                .collect();
            anyhow::Ok((!missing.is_empty()).then(|| format!("waiting for {}", missing.join(", "))))
        };
        let failure = |pending: &str| {
            let missing = pending.trim_start_matches("waiting for ");
            format!("{pod} did not start within {timeout}s: nothing listens on {missing}")
        };
        self.poll_node(r, format!("{pod} to start"), timeout, failure, check)
            .await
    }

    async fn wait_serving(
        &self,
        r: &dyn Remote,
        pod: &str,
        probe: &HttpProbe,
        timeout: u64,
    ) -> anyhow::Result<()> {
        let check = || async {
            // Any HTTP answer will do: etcd answers 503 until it has a quorum, but answers only
            // once its start-up checks are done.
            Ok(crate::probe::http_probe(r, probe, Duration::from_secs(1))
                .await
                .err()
                .map(|e| format!("no answer yet ({e})")))
        };
        let failure =
            |pending: &str| format!("{pod} did not answer {probe} within {timeout}s: {pending}");
        self.poll_node(r, format!("{pod} to serve"), timeout, failure, check)
            .await
    }

    pub(super) fn follow_up(&self, text: String) {
        self.emit(Event::FollowUp { text: text.clone() });
        if let Ok(mut f) = self.follow_ups.lock() {
            if !f.contains(&text) {
                f.push(text);
            }
        }
    }
}

#[async_trait]
impl Exec for Engine {
    fn remote(&self, node: &str) -> anyhow::Result<Arc<dyn Remote>> {
        self.node(node).cloned()
    }

    fn waiting(&self, node: Option<&str>, what: &str, elapsed: Duration, detail: String) {
        self.emit(Event::Waiting {
            node: node.map(String::from),
            what: what.to_string(),
            elapsed,
            detail,
        });
    }

    fn follow_up(&self, text: String) {
        Engine::follow_up(self, text);
    }

    async fn etcd_health(&self) -> Result<String, String> {
        self.checks.etcd_health(&self.plan).await
    }

    async fn apiserver_ready(&self, node: &str, probe: &HttpProbe) -> Result<(), String> {
        self.checks.apiserver_ready(node, probe).await
    }
}
