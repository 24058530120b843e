//! `restore`: every member is restored from the same snapshot into a new data directory, with
//! one shared `--initial-cluster` and a fresh token. The old data directory is never touched;
//! a partial directory from an interrupted attempt is moved aside, never deleted.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::exec::{poll, Exec, Wait};
use super::rules::{Condition, Rule};
use super::step::{NodeCx, PlanCx, Planned, Step};
use crate::action::{self, Action, Actions, StepAction};
use crate::etcd::ids::Urls;
use crate::etcd::version::{self, RestoreParams};
use crate::finding::Severity;
use crate::node;
use crate::remote::{Cmd, Remote};

/// Restores the snapshot into a new data directory on every node (`etcdutl snapshot restore`,
/// or `etcdctl` on 3.4). The old data directory is never touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// Seconds the restore may take on one node.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    900
}

impl Step for Restore {
    fn rules(&self) -> Vec<Rule> {
        // A member still running would keep serving (and writing) the old data.
        vec![Rule::provides(Condition::Restored).after(Condition::EtcdStopped)]
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Planned {
        let scope = cx.per_node(|n| match restore_argv(cx, n) {
            Some(argv) => Actions {
                actions: vec![Action::Step(StepAction::Restore(action::Restore {
                    argv,
                    env: vec![],
                    data_dir: n.data_dir_new.clone(),
                    wal_dir: None,
                    owner_like: n.data_dir_old.clone(),
                    timeout: self.timeout,
                }))],
                rollback: vec![Action::Note {
                    text: format!(
                        "keep the restored directory {} (remove it when no longer needed)",
                        n.data_dir_new
                    ),
                }],
            },
            None => Actions::note("no restore command (see findings)"),
        });
        Planned::new(
            "restore the snapshot into a new data directory (the old one is not touched)",
            true,
            scope,
        )
    }
}

/// The exact restore command for one node, or `None` (with a finding when something is wrong
/// that the facts did not already report).
fn restore_argv(cx: &PlanCx<'_>, n: &NodeCx<'_>) -> Option<Vec<String>> {
    let initial_cluster = cx.initial_cluster?;
    let (Some(tool), Some(m)) = (&n.facts.tool, &n.facts.etcd) else {
        return None;
    };
    let (Some(name), Some(peers)) = (&m.name, &m.peer_urls) else {
        return None;
    };
    let node = &n.facts.name;
    let Ok(peers) = Urls::parse(peers) else {
        cx.finding(
            Severity::Error,
            node,
            format!("--initial-advertise-peer-urls={peers} is not a valid URL list"),
            None,
        );
        return None;
    };
    let snapshot_path = n.run.snapshot();
    let params = RestoreParams {
        snapshot_path: &snapshot_path,
        name,
        initial_cluster,
        token: cx.token,
        peer_urls: &peers,
        data_dir: &n.data_dir_new,
        wal_dir: None,
        bump: cx.bump,
        skip_hash_check: cx.skip_hash_check,
    };
    match version::restore_argv(tool, &params) {
        Ok(argv) => Some(argv),
        Err(e) => {
            cx.finding(
                Severity::Error,
                node,
                format!("cannot build the restore command: {e}"),
                None,
            );
            None
        }
    }
}

/// Runs the restore on `node` unless a complete restore is already there.
pub(super) async fn execute(
    a: &action::Restore,
    node: Option<&str>,
    cx: &dyn Exec,
) -> anyhow::Result<bool> {
    let name = node.context("a node action in a cluster step")?;
    let remote = cx.remote(name)?;
    let r = remote.as_ref();
    let data_dir = a.data_dir.as_str();
    let wal_dir = a.wal_dir.as_deref();
    let wal = wal_dir.map_or_else(|| format!("{data_dir}/member/wal"), String::from);
    // A run that was killed mid-restore leaves the restore tool running on the node (closing
    // an SSH channel does not stop it): let it finish before judging what it left.
    wait_for_running_restore(cx, r, data_dir, a.timeout).await?;
    if complete(r, data_dir, &wal).await? {
        // Done before, perhaps without the ownership fix that follows a restore.
        own_like(r, data_dir, wal_dir, &a.owner_like).await?;
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
    if !a.env.is_empty() {
        full.push("env".to_string());
        full.extend(a.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    full.extend(a.argv.iter().cloned());
    let out = r
        .exec(&Cmd::new(full).timeout(Duration::from_secs(a.timeout)))
        .await?;
    // Success is the exit code alone: etcdctl 3.5 prints a deprecation notice on stderr.
    if !out.status.success() {
        bail!(
            "{name}: restore failed ({}): {}",
            out.status,
            out.stderr_text()
        );
    }
    if !complete(r, data_dir, &wal).await? {
        bail!("{name}: the restore exited 0 but `{data_dir}` lacks member/snap/db or a WAL file");
    }
    own_like(r, data_dir, wal_dir, &a.owner_like).await?;
    Ok(false)
}

/// True when `data_dir` holds a restored member: `member/snap/db` and a WAL file.
async fn complete(r: &dyn Remote, data_dir: &str, wal: &str) -> anyhow::Result<bool> {
    let db = node::exists(r, &format!("{data_dir}/member/snap/db")).await?;
    let out = r
        .run(&Cmd::script(
            r#"ls -- "$1" 2>/dev/null | grep -c '\.wal$' || true"#,
            [wal],
        ))
        .await?;
    let wals: u32 = out.stdout_text().trim().parse().unwrap_or(0);
    Ok(db && wals > 0)
}

/// The restored tree belongs to whoever owns the old data directory (etcd may run as a
/// non-root user), with etcd's own modes. Idempotent.
async fn own_like(
    r: &dyn Remote,
    data_dir: &str,
    wal_dir: Option<&str>,
    owner_like: &str,
) -> anyhow::Result<()> {
    for d in std::iter::once(data_dir).chain(wal_dir) {
        r.run(&Cmd::script(
            r#"chown -R --reference="$1" -- "$2" && chmod 0700 -- "$2""#,
            [owner_like, d],
        ))
        .await?;
    }
    Ok(())
}

/// Waits (up to `timeout` seconds) while a restore into `data_dir` is still running on the
/// node: a process with the arguments `restore` and `--data-dir=<data_dir>`.
async fn wait_for_running_restore(
    cx: &dyn Exec,
    r: &dyn Remote,
    data_dir: &str,
    timeout: u64,
) -> anyhow::Result<()> {
    let wait = Wait::new(Some(r.node()), "an interrupted restore to finish", timeout);
    let last = std::sync::Mutex::new(String::new());
    let check = || async {
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
            return anyhow::Ok(None);
        }
        let pids = pids.join(",");
        if let Ok(mut l) = last.lock() {
            l.clone_from(&pids);
        }
        Ok(Some(format!("pid {pids} still restoring into {data_dir}")))
    };
    if poll(cx, &wait, check).await?.is_some() {
        bail!(
            "{}: a restore into `{data_dir}` from an earlier, interrupted attempt is still running after {timeout}s (pid {}); stop it or wait, then resume",
            r.node(),
            last.lock().map(|l| l.clone()).unwrap_or_default(),
        );
    }
    Ok(())
}
