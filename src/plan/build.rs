//! Building the plan from the inventory, the discovered node facts, the snapshot and the
//! playbook. Pure: no I/O, so the same inputs always give the same plan (except the run id and
//! the time, which are inputs too).

use std::collections::BTreeMap;

use super::{
    Action, Actions, ExpectedMember, Finding, Fingerprints, HttpProbe, NodeSummary, Plan,
    RestoreParams, Scope, Severity, SnapshotSummary, StagePlan, StepOrder, StepPlan,
    FORMAT_VERSION,
};
use crate::etcd::ids::{self, InitialCluster, Urls};
use crate::etcd::version;
use crate::facts::static_pod::{endpoints, probe_of};
use crate::facts::{sha256_hex, NodeFacts};
use crate::layout::RunDir;
use crate::playbook::{Playbook, StepSpec, When};

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

struct NodePlanData<'a> {
    facts: &'a NodeFacts,
    run: RunDir,
    snapshot_path: String,
    new_volume_host_path: String,
    data_dir_new: String,
    rewritten: Option<(String, String)>, // (new text, diff)
}

/// Builds the plan. Problems never abort: they become findings, and a plan with error findings
/// is rendered for review but refused by `apply`.
pub fn build(inputs: &PlanInputs<'_>, facts: &[NodeFacts]) -> Plan {
    let mut findings: Vec<Finding> = facts.iter().flat_map(|f| f.findings().cloned()).collect();
    let mut add = |severity, node: Option<&str>, message: String, hint: Option<&str>| {
        findings.push(Finding {
            severity,
            node: node.map(String::from),
            message,
            hint: hint.map(String::from),
        });
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
            if let Ok(MemberStatusView {
                cluster_id: old, ..
            }) = status_view(f)
            {
                if ids::format_id(old) == cluster_id {
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

    // Per-node paths, free space, locks, rewrite.
    let mut per_node: Vec<NodePlanData<'_>> = Vec::new();
    for f in facts {
        let run = f.layout.run(&inputs.run_id);
        let snapshot_path = run.snapshot();
        let Some(data) = &f.data else {
            continue;
        };
        let vol_trim = data.volume.trim_end_matches('/');
        let new_vol = restored_path(vol_trim, &inputs.run_id, data.is_mount);
        let rel = data.dir.strip_prefix(vol_trim).unwrap_or("");
        let data_new = format!("{new_vol}{rel}");
        if let Some(free) = data.free_bytes {
            let need = snap.size.saturating_mul(2);
            if free < need {
                add(Severity::Error, Some(&f.name), format!("only {free} bytes free where {data_new} goes; the restore needs at least {need} (2x the snapshot)"), Some("free space on that filesystem"));
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
        let etcd_file = f
            .etcd
            .as_ref()
            .and_then(|m| m.static_pod.as_ref())
            .map(|p| &p.file);
        let rewritten = match (
            etcd_file,
            etcd_file.and_then(|e| f.static_pods.files.get(e)),
        ) {
            (Some(file), Some(pf)) => {
                match crate::manifest::rewrite_data_hostpath(pf.text.as_bytes(), &new_vol) {
                    Ok(rw) => {
                        let diff = rw.unified_diff(&format!(
                            "{}/{file}",
                            f.static_pods.dir.trim_start_matches('/')
                        ));
                        Some((rw.rewritten, diff))
                    }
                    Err(e) => {
                        add(
                            Severity::Error,
                            Some(&f.name),
                            format!("cannot rewrite {}/{file}: {e}", f.static_pods.dir),
                            Some(&e.hint()),
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        per_node.push(NodePlanData {
            facts: f,
            run,
            snapshot_path,
            new_volume_host_path: new_vol,
            data_dir_new: data_new,
            rewritten,
        });
    }

    // Restore argv per node.
    let mut restore_argv: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(ic) = &initial_cluster {
        for d in &per_node {
            let (Some(tool), Some(m)) = (&d.facts.tool, &d.facts.etcd) else {
                continue;
            };
            let (Some(name), Some(peers)) = (&m.name, &m.peer_urls) else {
                continue;
            };
            let Ok(peers) = Urls::parse(peers) else {
                add(
                    Severity::Error,
                    Some(&d.facts.name),
                    format!("--initial-advertise-peer-urls={peers} is not a valid URL list"),
                    None,
                );
                continue;
            };
            let params = version::RestoreParams {
                snapshot_path: &d.snapshot_path,
                name,
                initial_cluster: ic,
                token: &token,
                peer_urls: &peers,
                data_dir: &d.data_dir_new,
                wal_dir: None,
                bump,
                skip_hash_check: snap.skip_hash_check,
            };
            match version::restore_argv(tool, &params) {
                Ok(argv) => {
                    restore_argv.insert(d.facts.name.clone(), argv);
                }
                Err(e) => add(
                    Severity::Error,
                    Some(&d.facts.name),
                    format!("cannot build the restore command: {e}"),
                    None,
                ),
            }
        }
    }

    let stages = stages(inputs, &per_node, &restore_argv, bump.is_some());

    let nodes = facts
        .iter()
        .map(|f| {
            let d = per_node.iter().find(|d| d.facts.name == f.name);
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
                data_dir_new: d.map(|d| d.data_dir_new.clone()).unwrap_or_default(),
                run_dir: d.map(|d| d.run.path().to_string()).unwrap_or_default(),
                client_endpoint: f
                    .client
                    .as_ref()
                    .map(|c| {
                        format!(
                            "{}://{}",
                            if c.https { "https" } else { "http" },
                            crate::plan::Endpoint {
                                host: c.host.clone(),
                                port: c.port
                            }
                        )
                    })
                    .unwrap_or_default(),
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
        nodes,
        findings,
        stages,
    }
}

struct MemberStatusView {
    cluster_id: u64,
}

fn status_view(f: &NodeFacts) -> Result<MemberStatusView, ()> {
    f.health
        .as_ref()
        .map(|s| MemberStatusView {
            cluster_id: s.cluster_id,
        })
        .map_err(|_| ())
}

fn stages(
    inputs: &PlanInputs<'_>,
    nodes: &[NodePlanData<'_>],
    restore_argv: &BTreeMap<String, Vec<String>>,
    bumps: bool,
) -> Vec<StagePlan> {
    let mut out = Vec::new();
    for stage in &inputs.playbook.stages {
        let mut steps = Vec::new();
        for (i, spec) in stage.steps.iter().enumerate() {
            let id = format!("{}/{}", stage.name, i + 1);
            let per = |f: &dyn Fn(&NodePlanData<'_>) -> Actions| -> Scope {
                Scope::Nodes(nodes.iter().map(|d| (d.facts.name.clone(), f(d))).collect())
            };
            let (title, destructive, scope) = match spec {
                StepSpec::Preflight => (
                    "lock every node, create the run directory, keep a copy of every manifest".to_string(),
                    false,
                    per(&|d| {
                        let mut actions = vec![
                            Action::MakeDir { path: d.facts.layout.base().to_string(), mode: 0o700 },
                            Action::AcquireLock { path: d.facts.layout.lock() },
                            Action::MakeDir { path: d.run.originals(), mode: 0o700 },
                            Action::MakeDir { path: d.run.aside_dir(), mode: 0o700 },
                            Action::SaveRunState { dir: d.run.path().to_string() },
                        ];
                        for file in d.facts.static_pods.files.keys() {
                            actions.push(Action::CopyFile {
                                from: d.facts.static_pods.path(file),
                                to: d.run.original(file),
                            });
                        }
                        Actions { actions, rollback: vec![Action::ReleaseLock { path: d.facts.layout.lock() }] }
                    }),
                ),
                StepSpec::StageSnapshot => (
                    "copy the snapshot to every node and prove the copies identical".to_string(),
                    false,
                    per(&|d| Actions {
                        actions: vec![
                            Action::Upload { to: d.snapshot_path.clone(), sha256: inputs.snapshot.sha256.clone(), size: inputs.snapshot.size, mode: 0o600 },
                            Action::CheckSha256 { path: d.snapshot_path.clone(), sha256: inputs.snapshot.sha256.clone() },
                        ],
                        rollback: vec![Action::RemoveOwnFile { path: d.snapshot_path.clone() }],
                    }),
                ),
                StepSpec::StopStaticPods { pods, timeout } => (
                    format!("stop {} by moving their manifests out of the manifests directory", pods.join(", ")),
                    true,
                    per(&|d| move_pods(d, pods, *timeout, Direction::Stop)),
                ),
                StepSpec::StartStaticPods { pods, timeout } => (
                    format!("start {} by moving their manifests back", pods.join(", ")),
                    true,
                    per(&|d| move_pods(d, pods, *timeout, Direction::Start)),
                ),
                StepSpec::Restore { timeout } => (
                    "restore the snapshot into a new data directory (the old one is not touched)".to_string(),
                    true,
                    per(&|d| match restore_argv.get(&d.facts.name) {
                        Some(argv) => Actions {
                            actions: vec![Action::Restore {
                                argv: argv.clone(),
                                env: vec![],
                                data_dir: d.data_dir_new.clone(),
                                wal_dir: None,
                                owner_like: d.facts.data.as_ref().map(|x| x.dir.clone()).unwrap_or_default(),
                                timeout: *timeout,
                            }],
                            rollback: vec![Action::Note { text: format!("keep the restored directory {} (remove it when no longer needed)", d.data_dir_new) }],
                        },
                        None => Actions { actions: vec![Action::Note { text: "no restore command (see findings)".into() }], rollback: vec![] },
                    }),
                ),
                StepSpec::RewriteManifest => (
                    "point etcd's data hostPath at the new directory (one value changes)".to_string(),
                    true,
                    per(&|d| {
                        let file = d.facts.etcd.as_ref().and_then(|m| m.static_pod.as_ref()).map(|p| &p.file);
                        let (Some(file), Some((new_text, diff))) = (file, &d.rewritten) else {
                            return Actions { actions: vec![Action::Note { text: "no rewrite (see findings)".into() }], rollback: vec![] };
                        };
                        let old = &d.facts.static_pods.files[file];
                        let path = d.run.aside(file);
                        let new_sha = sha256_hex(new_text.as_bytes());
                        Actions {
                            actions: vec![Action::WriteFile {
                                path: path.clone(),
                                before_sha256: old.sha256.clone(),
                                after_sha256: new_sha.clone(),
                                content: new_text.clone(),
                                diff: diff.clone(),
                                temp_dir: d.run.path().to_string(),
                            }],
                            rollback: vec![Action::WriteFile {
                                path,
                                before_sha256: new_sha,
                                after_sha256: old.sha256.clone(),
                                content: old.text.clone(),
                                diff: String::new(),
                                temp_dir: d.run.path().to_string(),
                            }],
                        }
                    }),
                ),
                StepSpec::WaitEtcdHealthy { timeout } => (
                    "prove the restored cluster healthy and consistent".to_string(),
                    false,
                    Scope::Cluster(Actions { actions: vec![Action::WaitEtcdHealthy { timeout: *timeout }], rollback: vec![] }),
                ),
                StepSpec::WaitApiserverReady { timeout } => {
                    let probes: BTreeMap<String, _> = nodes
                        .iter()
                        .filter_map(|d| {
                            let pod = d.facts.static_pods.pod("kube-apiserver")?;
                            Some((d.facts.name.clone(), probe_of(pod, &d.facts.host)?))
                        })
                        .collect();
                    (
                        "wait until every apiserver is ready, by its own readiness probe".to_string(),
                        false,
                        Scope::Cluster(Actions { actions: vec![Action::WaitApiserverReady { probes, timeout: *timeout }], rollback: vec![] }),
                    )
                }
                StepSpec::Command { name, run, rollback, when, timeout } => {
                    if *when == When::NoRevisionBump && bumps {
                        (format!("command {name}"), false, Scope::Skipped("the restore bumps revisions, so this is not needed".into()))
                    } else {
                        (
                            format!("command {name}"),
                            true,
                            per(&|d| Actions {
                                actions: vec![Action::Run { argv: expand(run, d, &inputs.run_id), timeout: *timeout }],
                                rollback: rollback
                                    .as_ref()
                                    .map(|rb| vec![Action::Run { argv: expand(rb, d, &inputs.run_id), timeout: *timeout }])
                                    .unwrap_or_default(),
                            }),
                        )
                    }
                }
                StepSpec::KubeadmConfig => {
                    let scope = match nodes.first() {
                        Some(first) => Scope::Cluster(Actions {
                            actions: vec![Action::KubeadmConfig {
                                node: first.facts.name.clone(),
                                kubeconfig: inputs.admin_kubeconfig.clone(),
                                data_dirs: nodes
                                    .iter()
                                    .map(|d| (d.facts.name.clone(), d.new_volume_host_path.clone()))
                                    .collect(),
                            }],
                            rollback: vec![],
                        }),
                        None => Scope::Skipped("no nodes".into()),
                    };
                    ("keep kubeadm's ClusterConfiguration in step with etcd.yaml".to_string(), false, scope)
                }
                StepSpec::Finish => (
                    "remove the staged snapshot, release the lock (old data and original manifests stay)".to_string(),
                    false,
                    per(&|d| Actions {
                        actions: vec![
                            Action::RemoveOwnFile { path: d.snapshot_path.clone() },
                            Action::ReleaseLock { path: d.facts.layout.lock() },
                        ],
                        rollback: vec![],
                    }),
                ),
            };
            let several = matches!(&scope, Scope::Nodes(map) if map.len() > 1);
            let order = match spec {
                StepSpec::StopStaticPods { pods, .. }
                    if several && pods.iter().any(|p| p == "etcd") =>
                {
                    StepOrder::LeaderLast
                }
                StepSpec::StartStaticPods { pods, .. }
                    if several
                        && pods.iter().any(|p| p == "etcd")
                        && nodes.iter().all(|d| etcd_serving_probe(d).is_some()) =>
                {
                    StepOrder::OneAtATime
                }
                _ => StepOrder::Parallel,
            };
            steps.push(StepPlan {
                id,
                kind: spec.type_name().to_string(),
                title,
                destructive,
                order,
                scope,
            });
        }
        out.push(StagePlan {
            name: stage.name.clone(),
            steps,
        });
    }
    out
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

/// Whether a step takes static pods down or brings them back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Stop,
    Start,
}

/// Moves pods' manifests out of (or back into) the manifests directory, then waits until they
/// are gone (or listen again); the rollback does the opposite.
fn move_pods(d: &NodePlanData<'_>, pods: &[String], timeout: u64, direction: Direction) -> Actions {
    let mut actions = Vec::new();
    let mut waits = Vec::new();
    let mut rollback = Vec::new();
    let mut rollback_waits = Vec::new();
    for pod in pods {
        let Some(pf) = d.facts.static_pods.pod_file(pod) else {
            let verb = if direction == Direction::Stop {
                "stop"
            } else {
                "start"
            };
            actions.push(Action::Note {
                text: format!("{pod}: no manifest on this node, nothing to {verb}"),
            });
            continue;
        };
        let inside = d.facts.static_pods.path(&pf.file);
        let aside = d.run.aside(&pf.file);
        let endpoints = endpoints(pod, d.facts);
        // What etcd must let go of: the old data directory when stopping the original, the new
        // one when a rollback stops the restored member.
        let stopped = |data_dir: Option<&String>| Action::WaitStopped {
            pod: pod.clone(),
            endpoints: endpoints.clone(),
            dirs: data_dir
                .filter(|_| pod == "etcd")
                .cloned()
                .into_iter()
                .collect(),
            timeout,
        };
        let listening = (!endpoints.is_empty()).then(|| Action::WaitListening {
            pod: pod.clone(),
            endpoints: endpoints.clone(),
            timeout,
        });
        let (out, back) = match direction {
            Direction::Stop => (
                Action::MoveFile {
                    from: inside.clone(),
                    to: aside.clone(),
                },
                Action::MoveFile {
                    from: aside,
                    to: inside,
                },
            ),
            Direction::Start => (
                Action::MoveFile {
                    from: aside.clone(),
                    to: inside.clone(),
                },
                Action::MoveFile {
                    from: inside,
                    to: aside,
                },
            ),
        };
        actions.push(out);
        rollback.push(back);
        match direction {
            Direction::Stop => {
                waits.push(stopped(d.facts.data.as_ref().map(|x| &x.dir)));
                rollback_waits.extend(listening);
            }
            Direction::Start => {
                waits.extend(listening);
                if pod == "etcd" {
                    waits.extend(etcd_serving_probe(d).map(|probe| Action::WaitServing {
                        pod: pod.clone(),
                        probe,
                        timeout,
                    }));
                }
                rollback_waits.push(stopped(Some(&d.data_dir_new)));
            }
        }
    }
    if direction == Direction::Stop {
        rollback.reverse();
    }
    actions.extend(waits);
    rollback.extend(rollback_waits);
    Actions { actions, rollback }
}

/// The HTTP probe that tells when etcd serves, for members that run the initial corruption
/// check (see [`StepOrder::OneAtATime`]): `None` without the check or without an HTTP probe.
fn etcd_serving_probe(d: &NodePlanData<'_>) -> Option<HttpProbe> {
    let pod = d.facts.static_pods.pod("etcd")?;
    corrupt_check_probe(pod, &d.facts.host)
}

/// See [`etcd_serving_probe`].
fn corrupt_check_probe(pod: &crate::manifest::StaticPod, host: &str) -> Option<HttpProbe> {
    // A boolean flag is on when given bare or as `=true` (the last occurrence counts).
    let flag = "experimental-initial-corrupt-check";
    let on = pod.has_flag(flag) && matches!(pod.flag(flag), None | Some("true"));
    let gate = pod.flag("feature-gates").is_some_and(|g| {
        g.split(',')
            .any(|kv| kv.trim() == "InitialCorruptCheck=true")
    });
    if !(on || gate) {
        return None;
    }
    probe_of(pod, host)
}

/// Substitutes `@NAME` (an inventory command) and `${NODE}`, `${HOST}`, `${RUN_ID}`, `${RUN_DIR}`.
fn expand(argv: &[String], d: &NodePlanData<'_>, run_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for a in argv {
        if let Some(name) = a.strip_prefix('@') {
            match name {
                "restart_kubelet" => out.extend(d.facts.commands.restart_kubelet.iter().cloned()),
                other => out.push(format!("@{other}")),
            }
            continue;
        }
        out.push(
            a.replace("${NODE}", &d.facts.name)
                .replace("${HOST}", &d.facts.host)
                .replace("${RUN_ID}", run_id)
                .replace("${RUN_DIR}", d.run.path()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_with_the_initial_corruption_check_are_started_one_by_one() {
        let load = |text: &str| crate::manifest::StaticPod::parse(text.as_bytes()).unwrap();
        // kubeadm's manifest (Kubernetes 1.2x) has the check and an HTTP startup probe.
        let kubeadm = include_str!("../../tests/fixtures/manifests/014.yaml");
        let probe = corrupt_check_probe(&load(kubeadm), "10.0.0.1").unwrap();
        assert_eq!(probe.port, 2381);
        assert!(probe.path.starts_with("/health"), "{probe}");
        let off = kubeadm.replace(
            "--experimental-initial-corrupt-check=true",
            "--experimental-initial-corrupt-check=false",
        );
        assert_ne!(off, kubeadm);
        assert!(corrupt_check_probe(&load(&off), "10.0.0.1").is_none());
        let bare = kubeadm.replace(
            "--experimental-initial-corrupt-check=true",
            "--experimental-initial-corrupt-check",
        );
        assert!(corrupt_check_probe(&load(&bare), "10.0.0.1").is_some());
        let gate = kubeadm.replace(
            "--experimental-initial-corrupt-check=true",
            "--feature-gates=StopGRPCServiceOnDefrag=true,InitialCorruptCheck=true",
        );
        assert!(corrupt_check_probe(&load(&gate), "10.0.0.1").is_some());
        // An older manifest without the check: started together.
        let old = include_str!("../../tests/fixtures/manifests/001.yaml");
        assert!(corrupt_check_probe(&load(old), "10.0.0.1").is_none());
    }

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
