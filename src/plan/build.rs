//! Building the plan from the inventory, the discovered node facts, the snapshot and the
//! playbook. Pure: no I/O, so the same inputs always give the same plan (except the run id and
//! the time, which are inputs too).
//!
//! The builder works out what every step shares (membership, cluster ID, revision bump, each
//! node's run directory and new data directory, findings that block the restore), then asks
//! each step of the playbook for its actions ([`crate::steps::Step::plan`]).

use super::{
    ExpectedMember, Finding, Fingerprints, NodeSummary, Plan, RestoreParams, Severity,
    SnapshotSummary, StagePlan, StepPlan, FORMAT_VERSION,
};
use crate::etcd::ids::{self, InitialCluster, Urls};
use crate::etcd::version;
use crate::facts::NodeFacts;
use crate::playbook::Playbook;
use crate::steps::{NodeCx, PlanCx};

/// Default `--bump-revision`: covers a week-old snapshot at ~1 600 writes/s.
pub const DEFAULT_BUMP: u64 = 1_000_000_000;

/// The snapshot as the plan sees it.
#[derive(Debug, Clone)]
pub struct SnapshotInput {
    /// Local path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// Highest revision, when known.
    pub revision: Option<i64>,
    /// Key count, when known.
    pub total_keys: Option<u64>,
    /// One-line verdict.
    pub verdict: String,
    /// Why it must not be restored, if so.
    pub refused: Option<String>,
    /// Restore without the integrity trailer (explicit opt-in).
    pub skip_hash_check: bool,
}

/// Everything besides the node facts.
#[derive(Debug, Clone)]
pub struct PlanInputs<'a> {
    /// Run id.
    pub run_id: String,
    /// Creation time.
    pub created_at: String,
    /// Cluster name.
    pub cluster: String,
    /// Inventory path.
    pub inventory: String,
    /// SHA-256 of the inventory file.
    pub inventory_sha256: String,
    /// The playbook and the SHA-256 of its text.
    pub playbook: &'a Playbook,
    /// SHA-256 of the playbook text.
    pub playbook_sha256: String,
    /// The snapshot.
    pub snapshot: SnapshotInput,
    /// Revision bump to use where supported.
    pub bump: u64,
    /// Admin kubeconfig path on the nodes, for the kubeadm-config step.
    pub admin_kubeconfig: String,
}

/// Builds the plan. Problems never abort: they become findings, and a plan with error findings
/// is rendered for review but refused by `apply`.
pub fn build(inputs: &PlanInputs<'_>, facts: &[NodeFacts]) -> Plan {
    let mut findings: Vec<Finding> = facts.iter().flat_map(|f| f.findings().cloned()).collect();
    let mut add = |severity, node: Option<&str>, message: String, hint: Option<&str>| {
        findings.push(Finding::new(severity, node, message, hint));
    };
    let snap = &inputs.snapshot;
    if let Some(why) = &snap.refused {
        add(
            Severity::Error,
            None,
            format!("snapshot {}: {why}", snap.path),
            Some("take a fresh snapshot with `etcdctl snapshot save`, or pick another file"),
        );
    }
    if snap.skip_hash_check {
        add(Severity::Warning, None, "the snapshot has no integrity trailer and is restored with --skip-hash-check: nothing proves it is complete".into(), None);
    }

    // Membership and identity: one --initial-cluster from every node's own flags.
    let token = format!("etcd-recover-{}", inputs.run_id);
    let mut members: Vec<(String, String)> = Vec::new();
    for f in facts {
        let Some(m) = &f.etcd else { continue };
        match (&m.name, &m.peer_urls) {
            (Some(n), Some(p)) => members.push((n.clone(), p.clone())),
            _ => add(
                Severity::Error,
                Some(&f.name),
                "etcd.yaml lacks --name or --initial-advertise-peer-urls".into(),
                Some("the restore needs both, exactly as the running member uses them"),
            ),
        }
        if let Some(ic) = &m.initial_cluster {
            if let Ok(ic) = InitialCluster::parse(ic) {
                for (name, _) in ic.members() {
                    if !facts.iter().any(|x| &x.name == name) {
                        add(
                            Severity::Error,
                            Some(&f.name),
                            format!("etcd.yaml lists member {name} in --initial-cluster, but the inventory has no node {name}"),
                            Some("every member must be restored from the same snapshot: add the node to the inventory, or remove the member from the cluster first"),
                        );
                    }
                }
            }
        }
    }
    let parsed: Result<Vec<(String, Urls)>, _> = members
        .iter()
        .map(|(n, p)| Urls::parse(p).map(|u| (n.clone(), u)))
        .collect();
    let initial_cluster = match parsed.and_then(InitialCluster::from_members) {
        Ok(ic) => Some(ic),
        Err(e) => {
            add(
                Severity::Error,
                None,
                format!("cannot build --initial-cluster: {e}"),
                None,
            );
            None
        }
    };
    let mut expected = Vec::new();
    let mut cluster_id = String::new();
    if let Some(ic) = &initial_cluster {
        let ids = ic.member_ids(&token);
        for (name, id) in &ids {
            expected.push(ExpectedMember {
                name: name.clone(),
                peer_urls: ic
                    .urls_of(name)
                    .map(|u| u.as_slice().to_vec())
                    .unwrap_or_default(),
                member_id: ids::format_id(*id),
            });
        }
        let id_list: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
        cluster_id = ids::format_id(ids::cluster_id(&id_list));
        for f in facts {
            if let Ok(status) = &f.health {
                if ids::format_id(status.cluster_id) == cluster_id {
                    add(
                        Severity::Error,
                        Some(&f.name),
                        "the restored cluster would keep the running cluster's ID".into(),
                        None,
                    );
                }
            }
        }
    }

    // The revision bump, where every restore tool supports it (the facts warn where not).
    let bump_ok = facts.iter().all(|f| match (&f.tool, &f.etcd) {
        (Some(tool), Some(_)) => tool.supports_bump(),
        _ => true,
    });
    let bump = bump_ok.then_some(inputs.bump);
    if let (Some(b), Some(r)) = (bump, snap.revision) {
        if let Err(e) = version::check_bump(r, b) {
            add(
                Severity::Error,
                None,
                format!("revision bump: {e}"),
                Some("choose a smaller --bump-revision"),
            );
        }
    }

    // Health before the restore: a healthy cluster is rarely what one wants to restore over.
    let healthy: Vec<&str> = facts
        .iter()
        .filter(|f| {
            f.health
                .as_ref()
                .is_ok_and(|s| s.leader != 0 && s.errors.is_empty())
        })
        .map(|f| f.name.as_str())
        .collect();
    if !healthy.is_empty() && healthy.len() * 2 > facts.len() {
        add(
            Severity::Warning,
            None,
            format!("etcd is healthy with a leader on {} of {} members: restoring discards every write made since the snapshot", healthy.len(), facts.len()),
            Some("restore only after losing quorum or data, or as a deliberate rollback or drill"),
        );
    }

    // Per node: the run directory, the new data directory, free space, locks.
    let mut nodes: Vec<NodeCx<'_>> = Vec::new();
    for f in facts {
        let Some(data) = &f.data else {
            continue;
        };
        let vol = data.volume.trim_end_matches('/');
        let new_volume = restored_path(vol, &inputs.run_id, data.is_mount);
        let rel = data.dir.strip_prefix(vol).unwrap_or("");
        let data_dir_new = format!("{new_volume}{rel}");
        if let Some(free) = data.free_bytes {
            let need = snap.size.saturating_mul(2);
            if free < need {
                add(Severity::Error, Some(&f.name), format!("only {free} bytes free where {data_dir_new} goes; the restore needs at least {need} (2x the snapshot)"), Some("free space on that filesystem"));
            }
        }
        if let Some(owner) = &f.lock_owner {
            add(
                Severity::Error,
                Some(&f.name),
                format!("a lock from an earlier run is still in place: {} holds {owner}", f.layout.lock()),
                Some("finish that run with `etcd-recover resume RUN` or `etcd-recover rollback RUN`; remove the lock file only if that run is certainly over"),
            );
        }
        nodes.push(NodeCx {
            facts: f,
            run: f.layout.run(&inputs.run_id),
            new_volume,
            data_dir_new,
            data_dir_old: data.dir.clone(),
        });
    }

    // Every step's actions.
    let cx = PlanCx::new(
        &inputs.run_id,
        &token,
        initial_cluster.as_ref(),
        bump,
        (&snap.sha256, snap.size, snap.skip_hash_check),
        &inputs.admin_kubeconfig,
        &nodes,
    );
    let stages = inputs
        .playbook
        .stages
        .iter()
        .map(|stage| StagePlan {
            name: stage.name.clone(),
            steps: stage
                .steps
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let planned = spec.step().plan(&cx);
                    StepPlan {
                        id: format!("{}/{}", stage.name, i + 1),
                        kind: spec.type_name().to_string(),
                        title: planned.title,
                        destructive: planned.destructive,
                        order: planned.order,
                        scope: planned.scope,
                    }
                })
                .collect(),
        })
        .collect();
    findings.extend(cx.into_findings());

    let summaries = facts
        .iter()
        .map(|f| {
            let n = nodes.iter().find(|n| n.facts.name == f.name);
            NodeSummary {
                name: f.name.clone(),
                host: f.host.clone(),
                etcd_version: f
                    .etcd
                    .as_ref()
                    .and_then(|m| m.version)
                    .map(|v| v.to_string()),
                restore_tool: f.tool.as_ref().map(|t| t.path.clone()).unwrap_or_default(),
                restore_tool_version: f
                    .tool
                    .as_ref()
                    .map(|t| format!("{} {}", t.kind, t.version))
                    .unwrap_or_default(),
                manifests_dir: f.static_pods.dir.clone(),
                data_dir_old: f.data.as_ref().map(|d| d.dir.clone()).unwrap_or_default(),
                data_dir_new: n.map(|n| n.data_dir_new.clone()).unwrap_or_default(),
                run_dir: n.map(|n| n.run.path().to_string()).unwrap_or_default(),
                client_endpoint: f.client.as_ref().map(|c| c.url()).unwrap_or_default(),
                client_tls: f.client.as_ref().and_then(|c| c.tls_paths.clone()),
            }
        })
        .collect();

    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.node.cmp(&b.node))
            .then(a.message.cmp(&b.message))
    });
    findings.dedup();

    Plan {
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        run_id: inputs.run_id.clone(),
        created_at: inputs.created_at.clone(),
        cluster: inputs.cluster.clone(),
        inventory: inputs.inventory.clone(),
        playbook: inputs.playbook.name.clone(),
        fingerprints: Fingerprints {
            inventory_sha256: inputs.inventory_sha256.clone(),
            snapshot_sha256: snap.sha256.clone(),
            playbook_sha256: inputs.playbook_sha256.clone(),
            manifests: facts
                .iter()
                .map(|f| (f.name.clone(), f.fingerprint()))
                .collect(),
        },
        snapshot: SnapshotSummary {
            path: snap.path.clone(),
            size: snap.size,
            sha256: snap.sha256.clone(),
            revision: snap.revision,
            total_keys: snap.total_keys,
            verdict: snap.verdict.clone(),
        },
        restore: RestoreParams {
            initial_cluster: initial_cluster.map(|ic| ic.to_string()).unwrap_or_default(),
            token,
            bump_revision: bump,
            members: expected,
            cluster_id,
        },
        nodes: summaries,
        findings,
        stages,
    }
}

/// Where a run restores to, next to (or, for a mount point, inside) the data volume. A volume
/// that is itself an earlier run's restore is named after its origin, so repeated restores do
/// not grow the name: `/var/lib/etcd-restored-A` restored again becomes
/// `/var/lib/etcd-restored-B`.
fn restored_path(volume: &str, run_id: &str, is_mount_point: bool) -> String {
    if is_mount_point {
        return format!("{volume}/etcd-restored-{run_id}");
    }
    let mut base = volume;
    while let Some(i) = base.rfind("-restored-") {
        if !is_run_id(&base[i + "-restored-".len()..]) {
            break;
        }
        base = &base[..i];
    }
    format!("{base}-restored-{run_id}")
}

/// `YYYYMMDD-HHMMSS-xxxx`, as made by `workflow::new_run_id`.
fn is_run_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
        && b[16..].iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_restores_do_not_grow_the_directory_name() {
        let r1 = "20261122-063024-9f6f";
        let r2 = "20261122-063038-f663";
        assert_eq!(
            restored_path("/var/lib/etcd", r1, false),
            format!("/var/lib/etcd-restored-{r1}")
        );
        let once = restored_path("/var/lib/etcd", r1, false);
        assert_eq!(
            restored_path(&once, r2, false),
            format!("/var/lib/etcd-restored-{r2}")
        );
        // Only run ids are stripped: a name that merely contains the word stays.
        assert_eq!(
            restored_path("/data/etcd-restored-by-hand", r2, false),
            format!("/data/etcd-restored-by-hand-restored-{r2}")
        );
        // A mount point gets the new directory inside, on the same filesystem.
        assert_eq!(
            restored_path("/mnt/etcd", r1, true),
            format!("/mnt/etcd/etcd-restored-{r1}")
        );
    }
}
