//! Executing one [`Action`]: probe whether it is already done, act, verify.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{withheld, Engine, Event};
use crate::layout::RunDir;
use crate::node;
use crate::plan::{Action, Endpoint, HttpProbe, StepPlan};
use crate::remote::{Cmd, Remote, WriteOpts};

/// How long to wait before checking again what has waited `elapsed` so far: what is usually
/// quick (a pod going away, a member starting to serve) is seen within 100 ms; what takes
/// longer is checked twice a second. Every check is one short command on the node.
fn poll_pause(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(3) {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(500)
    }
}

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
        // Cluster actions do not need a node connection.
        match action {
            Action::WaitEtcdHealthy { timeout } => {
                return self.wait_etcd(*timeout).await.map(|()| false);
            }
            Action::WaitApiserverReady { probes, timeout } => {
                let deadline = Instant::now() + Duration::from_secs(*timeout);
                let start = Instant::now();
                for (n, probe) in probes {
                    loop {
                        match self.checks.apiserver_ready(n, probe).await {
                            Ok(()) => break,
                            Err(why) if Instant::now() < deadline => {
                                self.emit(Event::Waiting {
                                    node: Some(n.clone()),
                                    what: "kube-apiserver to be ready".into(),
                                    elapsed: start.elapsed(),
                                    detail: why,
                                });
                                tokio::time::sleep(poll_pause(start.elapsed())).await;
                            }
                            Err(why) => bail!(
                                "kube-apiserver on {n} not ready after {timeout}s ({probe}): {why}"
                            ),
                        }
                    }
                }
                return Ok(false);
            }
            Action::Note { .. } => return Ok(true),
            _ => {}
        }
        let name = match action {
            Action::KubeadmConfig { node, .. } => node.as_str(),
            _ => node_name.context("a node action in a cluster step")?,
        };
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
            Action::Restore {
                argv,
                env,
                data_dir,
                wal_dir,
                owner_like,
                timeout,
            } => {
                self.restore(
                    r,
                    argv,
                    env,
                    data_dir,
                    wal_dir.as_deref(),
                    owner_like,
                    *timeout,
                )
                .await
            }
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
            Action::KubeadmConfig {
                node: n,
                kubeconfig,
                data_dirs,
            } => self.kubeadm_config(r, n, kubeconfig, data_dirs).await,
            Action::WaitEtcdHealthy { .. }
            | Action::WaitApiserverReady { .. }
            | Action::Note { .. } => Ok(true),
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
        mut check: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
    {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(timeout);
        let waiting = |elapsed, detail| Event::Waiting {
            node: Some(r.node().to_string()),
            what: what.clone(),
            elapsed,
            detail,
        };
        self.emit(waiting(Duration::ZERO, "first check".into()));
        loop {
            let Some(pending) = check().await? else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                bail!("{}: {}", r.node(), failure(&pending));
            }
            self.emit(waiting(start.elapsed(), pending));
            tokio::time::sleep(poll_pause(start.elapsed())).await;
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

    #[allow(clippy::too_many_arguments)]
    async fn restore(
        &self,
        r: &dyn Remote,
        argv: &[String],
        env: &[(String, String)],
        data_dir: &str,
        wal_dir: Option<&str>,
        owner_like: &str,
        timeout: u64,
    ) -> anyhow::Result<bool> {
        let name = r.node().to_string();
        let wal = wal_dir.map_or_else(|| format!("{data_dir}/member/wal"), String::from);
        let complete = |data_dir: String, wal: String| async move {
            let db = node::exists(r, &format!("{data_dir}/member/snap/db")).await?;
            let out = r
                .run(&Cmd::script(
                    r#"ls -- "$1" 2>/dev/null | grep -c '\.wal$' || true"#,
                    [wal.as_str()],
                ))
                .await?;
            let wals: u32 = out.stdout_text().trim().parse().unwrap_or(0);
            anyhow::Ok(db && wals > 0)
        };
        // A run that was killed mid-restore leaves the restore tool running on the node (closing
        // an SSH channel does not stop it): let it finish before judging what it left.
        self.wait_for_running_restore(r, data_dir, timeout).await?;
        if complete(data_dir.to_string(), wal.clone()).await? {
            // Done before, perhaps without the ownership fix that follows a restore.
            self.own_like(r, data_dir, wal_dir, owner_like).await?;
            return Ok(true);
        }
        // A partial restore from an interrupted run is moved aside, never deleted.
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        for d in std::iter::once(data_dir).chain(wal_dir) {
            if node::exists(r, d).await? {
                node::move_file(r, d, &format!("{d}.partial-{stamp}")).await?;
            }
        }
        let mut full = Vec::new();
        if !env.is_empty() {
            full.push("env".to_string());
            full.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        full.extend(argv.iter().cloned());
        let out = r
            .exec(&Cmd::new(full).timeout(Duration::from_secs(timeout)))
            .await?;
        // Success is the exit code alone: etcdctl 3.5 prints a deprecation notice on stderr.
        if !out.status.success() {
            bail!(
                "{name}: restore failed ({}): {}",
                out.status,
                out.stderr_text()
            );
        }
        if !complete(data_dir.to_string(), wal.clone()).await? {
            bail!(
                "{name}: the restore exited 0 but `{data_dir}` lacks member/snap/db or a WAL file"
            );
        }
        self.own_like(r, data_dir, wal_dir, owner_like).await?;
        Ok(false)
    }

    /// The restored tree belongs to whoever owns the old data directory (etcd may run as a
    /// non-root user), with etcd's own modes. Idempotent.
    async fn own_like(
        &self,
        r: &dyn Remote,
        data_dir: &str,
        wal_dir: Option<&str>,
        owner_like: &str,
    ) -> anyhow::Result<()> {
        let mut dirs = vec![data_dir.to_string()];
        dirs.extend(wal_dir.map(String::from));
        for d in dirs {
            r.run(&Cmd::script(
                r#"chown -R --reference="$1" -- "$2" && chmod 0700 -- "$2""#,
                [owner_like, d.as_str()],
            ))
            .await?;
        }
        Ok(())
    }

    /// Waits (up to `timeout` seconds) while a restore into `data_dir` is still running on the
    /// node: a process with the arguments `restore` and `--data-dir=<data_dir>`.
    async fn wait_for_running_restore(
        &self,
        r: &dyn Remote,
        data_dir: &str,
        timeout: u64,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(timeout);
        loop {
            let out = r
                .run(&Cmd::script(
                    r#"want="--data-dir=$1"
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  args=$(tr '\0' '\n' < "$p/cmdline" 2>/dev/null) || continue
  case "
$args
" in *"
$want
"*) ;; *) continue;; esac
  case "
$args
" in *"
restore
"*) echo "${p#/proc/}";; esac
done
exit 0"#,
                    [data_dir],
                ))
                .await?;
            let pids: Vec<String> = out
                .stdout_text()
                .split_whitespace()
                .map(String::from)
                .collect();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: a restore into `{data_dir}` from an earlier, interrupted attempt is still running after {timeout}s (pid {}); stop it or wait, then resume",
                    r.node(),
                    pids.join(",")
                );
            }
            self.emit(Event::Waiting {
                node: Some(r.node().to_string()),
                what: "an interrupted restore to finish".into(),
                elapsed: start.elapsed(),
                detail: format!("pid {} still restoring into {data_dir}", pids.join(",")),
            });
            tokio::time::sleep(poll_pause(start.elapsed())).await;
        }
    }

    async fn wait_etcd(&self, timeout: u64) -> anyhow::Result<()> {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(timeout);
        self.emit(Event::Waiting {
            node: None,
            what: "etcd to be healthy".into(),
            elapsed: Duration::ZERO,
            detail: "first check".into(),
        });
        loop {
            match self.checks.etcd_health(&self.plan).await {
                Ok(_) => return Ok(()),
                Err(why) if Instant::now() < deadline => {
                    self.emit(Event::Waiting {
                        node: None,
                        what: "etcd to be healthy".into(),
                        elapsed: start.elapsed(),
                        detail: why,
                    });
                    tokio::time::sleep(poll_pause(start.elapsed())).await;
                }
                Err(why) => bail!("etcd is not healthy after {timeout}s: {why}"),
            }
        }
    }

    async fn kubeadm_config(
        &self,
        r: &dyn Remote,
        node_name: &str,
        kubeconfig: &str,
        data_dirs: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<bool> {
        let distinct: std::collections::BTreeSet<&String> = data_dirs.values().collect();
        if distinct.len() != 1 {
            let list: Vec<String> = data_dirs.iter().map(|(n, d)| format!("{n}: {d}")).collect();
            self.follow_up(format!(
                "etcd.yaml now points each node at its own new data directory ({}), but kubeadm's ClusterConfiguration holds one etcd.local.dataDir for all nodes: before the next `kubeadm upgrade`, which regenerates etcd.yaml from it, stop etcd on each node in turn and move its data to one common path, then set that path in the kubeadm-config ConfigMap",
                list.join(", ")
            ));
            return Ok(true);
        }
        let data_dir = distinct.iter().next().map_or("", |d| d.as_str());
        let manual = format!(
            "kubeadm's ClusterConfiguration still names the old etcd data directory; before the next `kubeadm upgrade`, run on a control-plane node: `kubectl -n kube-system edit configmap kubeadm-config` and set `etcd.local.dataDir: {data_dir}` (a later upgrade would otherwise regenerate etcd.yaml with the old directory)"
        );
        let probe = r
            .exec(&Cmd::script(
                r#"command -v kubectl >/dev/null 2>&1 && [ -f "$1" ] && echo yes || echo no"#,
                [kubeconfig],
            ))
            .await?;
        if probe.stdout_text().trim() != "yes" {
            self.follow_up(format!(
                "{manual} (no kubectl with {kubeconfig} on {node_name})"
            ));
            return Ok(true);
        }
        let get = r
            .exec(&Cmd::new([
                "kubectl",
                "--kubeconfig",
                kubeconfig,
                "-n",
                "kube-system",
                "get",
                "configmap",
                "kubeadm-config",
                "-o",
                "json",
            ]))
            .await?;
        if !get.status.success() {
            self.follow_up(format!(
                "{manual} (kubectl get failed: {})",
                get.stderr_text()
            ));
            return Ok(true);
        }
        let mut cm: serde_json::Value = serde_json::from_slice(&get.stdout)
            .with_context(|| format!("{node_name}: kubectl printed something that is not JSON"))?;
        let Some(cc) = cm["data"]["ClusterConfiguration"].as_str() else {
            self.follow_up(format!(
                "{manual} (the ConfigMap has no ClusterConfiguration)"
            ));
            return Ok(true);
        };
        let Some(updated) = set_kubeadm_data_dir(cc, data_dir) else {
            self.follow_up(format!(
                "{manual} (no etcd.local.dataDir line found to update)"
            ));
            return Ok(true);
        };
        if updated == cc {
            return Ok(true);
        }
        cm["data"]["ClusterConfiguration"] = serde_json::Value::String(updated);
        let body = serde_json::to_vec(&cm).context("cannot encode the ConfigMap")?;
        r.run(&Cmd::new(["kubectl", "--kubeconfig", kubeconfig, "replace", "-f", "-"]).stdin(body))
            .await?;
        Ok(false)
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

/// Replaces the value of the `dataDir:` key under `etcd:` / `local:` in a ClusterConfiguration,
/// keeping every other line. `None` when there is no such line.
pub fn set_kubeadm_data_dir(cc: &str, data_dir: &str) -> Option<String> {
    let mut out = String::with_capacity(cc.len() + data_dir.len());
    let mut in_etcd = false;
    let mut in_local = false;
    let mut etcd_indent = 0;
    let mut found = false;
    for line in cc.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key = trimmed.split(':').next().unwrap_or("").trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            if indent == 0 {
                in_etcd = key == "etcd";
                in_local = false;
                etcd_indent = 0;
            } else if in_etcd && (etcd_indent == 0 || indent == etcd_indent) {
                etcd_indent = indent;
                in_local = key == "local";
            }
        }
        if in_etcd && in_local && indent > etcd_indent && key == "dataDir" && !found {
            let nl = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("{}dataDir: {data_dir}{nl}", &line[..indent]));
            found = true;
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_data_dir_is_replaced_in_place() {
        let cc = "apiServer:\n  timeoutForControlPlane: 4m0s\netcd:\n  local:\n    dataDir: /var/lib/etcd\n    extraArgs: {}\nkind: ClusterConfiguration\n";
        let out = set_kubeadm_data_dir(cc, "/var/lib/etcd-restored-r1").unwrap();
        assert_eq!(
            out,
            cc.replace("/var/lib/etcd\n", "/var/lib/etcd-restored-r1\n")
        );
        assert!(set_kubeadm_data_dir("etcd:\n  external:\n    endpoints: []\n", "/x").is_none());
        // A dataDir elsewhere is not touched.
        let other = "foo:\n  local:\n    dataDir: /a\netcd:\n  local:\n    dataDir: /b\n";
        assert_eq!(
            set_kubeadm_data_dir(other, "/c").unwrap(),
            "foo:\n  local:\n    dataDir: /a\netcd:\n  local:\n    dataDir: /c\n"
        );
    }
}
