//! The flows shared by `plan`, `apply`, `resume`, `rollback`, `status` and `guide`: connect,
//! discover, verify the snapshot, build the plan, detect drift, run the engine, write reports.
//! Plain settings in, results out; the CLI decides how to present them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::error::{Exit, ExitWith, HintExt};
use crate::facts::{self, NodeFacts};
use crate::health::LiveChecks;
use crate::inventory::{self, Inventory};
use crate::plan::build::{PlanInputs, SnapshotInput, DEFAULT_BUMP};
use crate::plan::{Finding, Plan, Severity};
use crate::playbook::Playbook;
use crate::remote::Remote;
use crate::snapshot;

/// Everything a command needs to reach the cluster and make a plan.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Inventory file.
    pub inventory: PathBuf,
    /// SSH behaviour (host keys, ssh config, timeouts).
    pub ssh: SshOptions,
    /// Where runs are journaled.
    pub state_dir: PathBuf,
    /// Playbook file; `None` for the built-in `restore-stacked`.
    pub playbook: Option<PathBuf>,
    /// `--bump-revision` where the restore tool supports it.
    pub bump: u64,
    /// Restore a snapshot without integrity trailer.
    pub skip_hash_check: bool,
    /// Admin kubeconfig on the nodes (kubeadm-config step).
    pub admin_kubeconfig: String,
}

impl Settings {
    /// Settings with defaults for everything but the inventory.
    pub fn new(inventory: PathBuf, ssh: SshOptions) -> Settings {
        Settings {
            inventory,
            ssh,
            state_dir: crate::engine::journal::default_state_dir(),
            playbook: None,
            bump: DEFAULT_BUMP,
            skip_hash_check: false,
            admin_kubeconfig: "/etc/kubernetes/admin.conf".into(),
        }
    }
}

/// How to treat SSH, beyond what the inventory says.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// OpenSSH client config to honour (default `~/.ssh/config` when it exists).
    pub ssh_config: Option<PathBuf>,
    /// Add unknown host keys to known_hosts (like `StrictHostKeyChecking=accept-new`).
    pub accept_new_host_keys: bool,
    /// Overrides the connect timeout.
    pub connect_timeout: Option<std::time::Duration>,
    /// Ask for the sudo password on every node (`ssh.sudo_password: prompt`).
    pub ask_sudo_password: bool,
    /// Ask for key passphrases on the terminal (else such keys must be in ssh-agent).
    pub interactive: bool,
}

/// A loaded inventory with its fingerprint.
pub struct LoadedInventory {
    /// The inventory.
    pub inventory: Inventory,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Warnings to show.
    pub warnings: Vec<String>,
}

/// Loads and fingerprints the inventory.
pub fn load_inventory(path: &Path) -> anyhow::Result<LoadedInventory> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read inventory `{}`", path.display()))
        .hint(
            "pass the inventory with -i FILE; see inventory.example.yaml and docs/inventory.md",
        )?;
    let loaded = inventory::load(path).map_err(|e| {
        let hint = e.hint();
        anyhow::Error::new(e).context(crate::error::Hint(hint))
    })?;
    Ok(LoadedInventory {
        inventory: loaded.inventory,
        sha256: facts::sha256_hex(&bytes),
        warnings: loaded
            .warnings
            .iter()
            .map(|w| match &w.fix {
                Some(fix) => format!("{w}\nhint: {fix}"),
                None => w.to_string(),
            })
            .collect(),
    })
}

/// The playbook and the SHA-256 of its text.
pub fn load_playbook(path: Option<&Path>) -> anyhow::Result<(Playbook, String)> {
    match path {
        None => Ok((
            Playbook::restore_stacked(),
            facts::sha256_hex(crate::playbook::RESTORE_STACKED.as_bytes()),
        )),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read playbook `{}`", p.display()))?;
            Ok((
                Playbook::parse(&text, &p.display().to_string())?,
                facts::sha256_hex(text.as_bytes()),
            ))
        }
    }
}

/// Verifies the snapshot locally and turns the verdict into plan input.
pub fn snapshot_input(path: &Path, skip_hash_check: bool) -> SnapshotInput {
    let opts = snapshot::VerifyOptions {
        skip_hash_check,
        etcdutl: snapshot::find_etcdutl(),
    };
    let report = snapshot::examine(path, &opts);
    let refused = report.problem.as_ref().map(ToString::to_string);
    let verdict = match &refused {
        None if report.structure_only => {
            "no integrity trailer; bbolt structure only (--skip-hash-check)".to_string()
        }
        None => "valid etcd snapshot (SHA-256 trailer and bbolt meta pages check out)".to_string(),
        Some(why) => format!("REFUSED: {why}"),
    };
    SnapshotInput {
        path: std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string(),
        size: report.size.unwrap_or(0),
        sha256: report.sha256.clone().unwrap_or_default(),
        revision: report.status.as_ref().map(|s| s.revision),
        total_keys: report.status.as_ref().map(|s| s.total_key),
        verdict,
        refused,
        skip_hash_check: skip_hash_check && report.structure_only,
    }
}

/// A connected cluster: one [`Remote`] per reachable node, findings for the others.
pub struct Cluster {
    /// The inventory.
    pub inventory: LoadedInventory,
    /// Connections by node name.
    pub remotes: BTreeMap<String, Arc<dyn Remote>>,
    /// Why some nodes could not be reached.
    pub unreachable: Vec<Finding>,
}

/// Loads the inventory and connects to every node in parallel.
pub async fn connect(settings: &Settings) -> anyhow::Result<Cluster> {
    let mut inventory = load_inventory(&settings.inventory)?;
    let (remotes, errors, notes) = connect_all(&inventory.inventory, &settings.ssh).await?;
    inventory.warnings.extend(notes);
    let unreachable = errors
        .into_iter()
        .map(|(node, err, hint)| Finding {
            severity: Severity::Error,
            node: Some(node),
            message: err,
            hint: Some(hint),
        })
        .collect();
    Ok(Cluster {
        inventory,
        remotes,
        unreachable,
    })
}

/// Connections to every inventory node that answered, (node, error, hint) for the rest, and
/// notes about the SSH client config.
pub type Connected = (
    BTreeMap<String, Arc<dyn Remote>>,
    Vec<(String, String, String)>,
    Vec<String>,
);

/// Everything needed to connect: per-node targets and a connector.
pub struct SshSetup {
    /// Per-node connection settings, in inventory order.
    pub targets: Vec<crate::inventory::SshTarget>,
    /// Opens the sessions (shares loaded keys, so each passphrase is asked once).
    pub connector: crate::transport::Connector,
    /// Notes about the OpenSSH client config, to show as warnings.
    pub notes: Vec<String>,
}

/// Reads the OpenSSH client config and resolves every node of `inv` to an SSH target.
pub fn ssh_setup(inv: &Inventory, opts: &SshOptions) -> anyhow::Result<SshSetup> {
    use crate::transport::{ConnectOptions, Connector};
    let config = inventory::load_ssh_config(opts.ssh_config.as_deref())
        .hint("fix the SSH config, or pass another one with --ssh-config FILE")?;
    let notes = config.notes.clone();
    let resolve = inventory::ResolveOptions::from_environment(config, opts.connect_timeout);
    let mut targets = inventory::resolve_targets(inv, &resolve)
        .hint("fix `proxy_jump` in the inventory or ProxyJump in the SSH config")?;
    if opts.ask_sudo_password {
        for t in &mut targets {
            t.sudo_password = inventory::SudoPassword::Prompt;
        }
    }
    let prompt: Arc<dyn crate::transport::PassphrasePrompt> = if opts.interactive {
        Arc::new(crate::ui::TerminalPassphrase)
    } else {
        Arc::new(crate::transport::NoPrompt)
    };
    let connector = Connector::new(
        ConnectOptions {
            accept_new_host_keys: opts.accept_new_host_keys,
            agent: crate::transport::Agent::FromEnvironment,
        },
        prompt,
    );
    Ok(SshSetup {
        targets,
        connector,
        notes,
    })
}

/// Connects to every node over SSH in parallel.
async fn connect_all(inv: &Inventory, opts: &SshOptions) -> anyhow::Result<Connected> {
    let setup = ssh_setup(inv, opts)?;
    let results = setup.connector.connect_all(&setup.targets).await;
    let mut remotes: BTreeMap<String, Arc<dyn Remote>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (t, r) in setup.targets.iter().zip(results) {
        match r {
            Ok(node) => {
                remotes.insert(t.node.clone(), Arc::new(node));
            }
            Err(e) => errors.push((t.node.clone(), e.to_string(), hint_for(&e))),
        }
    }
    Ok((remotes, errors, setup.notes))
}

/// What to do about a connection error.
pub fn hint_for(e: &crate::remote::RemoteError) -> String {
    use crate::remote::RemoteError as E;
    match e {
        E::Unreachable { .. } => "check that the node is up, sshd runs and the address and port in the inventory are right; other nodes are unaffected".into(),
        E::HostKey { .. } => "compare the fingerprint with the node's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on its console); accept a new host with --accept-new-host-keys; a changed key is never accepted automatically".into(),
        E::Auth { .. } => "check ssh.user and ssh.identity_file in the inventory, or load the key into ssh-agent".into(),
        E::Sudo { .. } => "allow passwordless sudo for this user on the node (NOPASSWD), connect as root, or type the password once with `ssh.sudo_password: prompt` / --ask-sudo-password".into(),
        _ => "see the error above".into(),
    }
}

/// Discovery on every reachable node, with findings for the unreachable ones.
pub async fn discover(cluster: &Cluster) -> Vec<NodeFacts> {
    let mut found = facts::discover(&cluster.inventory.inventory, &cluster.remotes).await;
    for f in &mut found {
        if let Some(u) = cluster
            .unreachable
            .iter()
            .find(|u| u.node.as_deref() == Some(&f.name))
        {
            f.unreachable(u.clone());
        }
    }
    facts::probe_health(&mut found, &cluster.remotes, Duration::from_secs(3)).await;
    found
}

/// A fresh run id: UTC time plus 4 random hex digits.
pub fn new_run_id() -> String {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        hex::encode(b)
    )
}

/// Builds a plan for `snapshot` against the live cluster.
pub async fn make_plan(
    settings: &Settings,
    cluster: &Cluster,
    snapshot: &Path,
    run_id: String,
) -> anyhow::Result<(Plan, Vec<NodeFacts>)> {
    let snap = snapshot_input(snapshot, settings.skip_hash_check);
    make_plan_with(settings, cluster, snap, run_id).await
}

/// Builds a plan for a snapshot verified already (see [`snapshot_input`]).
pub async fn make_plan_with(
    settings: &Settings,
    cluster: &Cluster,
    snap: SnapshotInput,
    run_id: String,
) -> anyhow::Result<(Plan, Vec<NodeFacts>)> {
    let (playbook, playbook_sha256) = load_playbook(settings.playbook.as_deref())?;
    let facts = discover(cluster).await;
    let inputs = PlanInputs {
        run_id,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cluster: cluster.inventory.inventory.cluster.clone(),
        inventory: cluster.inventory.inventory.path.display().to_string(),
        inventory_sha256: cluster.inventory.sha256.clone(),
        playbook: &playbook,
        playbook_sha256,
        snapshot: snap,
        bump: settings.bump,
        admin_kubeconfig: settings.admin_kubeconfig.clone(),
    };
    let plan = crate::plan::build::build(&inputs, &facts);
    Ok((plan, facts))
}

/// What changed between a saved plan and the cluster now. Empty means no drift.
pub fn drift(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&saved.fingerprints, &fresh.fingerprints);
    if a.inventory_sha256 != b.inventory_sha256 {
        out.push("the inventory file changed".to_string());
    }
    if a.snapshot_sha256 != b.snapshot_sha256 {
        out.push(format!(
            "the snapshot changed: SHA-256 was {}, is {}",
            a.snapshot_sha256, b.snapshot_sha256
        ));
    }
    if a.playbook_sha256 != b.playbook_sha256 {
        out.push("the playbook changed".to_string());
    }
    for (node, files) in &a.manifests {
        let now = b.manifests.get(node);
        for (file, sha) in files {
            match now.and_then(|m| m.get(file)) {
                Some(s) if s == sha => {}
                Some(s) => out.push(format!(
                    "{node}: {file} changed (SHA-256 was {sha}, is {s})"
                )),
                None => out.push(format!(
                    "{node}: {file} is gone from the manifests directory"
                )),
            }
        }
        if let Some(now) = now {
            for file in now.keys().filter(|f| !files.contains_key(*f)) {
                out.push(format!(
                    "{node}: {file} appeared in the manifests directory"
                ));
            }
        }
    }
    for node in b.manifests.keys().filter(|n| !a.manifests.contains_key(*n)) {
        out.push(format!("node {node} is new"));
    }
    out
}

/// Refuses a stale saved plan.
pub fn refuse_drift(saved: &Plan, fresh: &Plan) -> anyhow::Result<()> {
    let d = drift(saved, fresh);
    if d.is_empty() {
        return Ok(());
    }
    Err(
        anyhow::Error::new(ExitWith(Exit::PlanDrift)).context(format!(
            "the cluster no longer matches the saved plan {}:\n  - {}",
            saved.run_id,
            d.join("\n  - ")
        )),
    )
    .hint("make a new plan with `etcd-recover plan`, review it, then apply that one")
}

/// Live health checks for a plan's nodes, from what the plan recorded (so they work mid-run,
/// when the manifests are moved aside).
pub async fn live_checks(
    plan: &Plan,
    remotes: &BTreeMap<String, Arc<dyn Remote>>,
) -> anyhow::Result<LiveChecks> {
    let mut endpoints = Vec::new();
    for n in &plan.nodes {
        let Some(r) = remotes.get(&n.name) else {
            continue;
        };
        let Some((https, host, port)) = facts::static_pod::split_url(&n.client_endpoint) else {
            anyhow::bail!("{}: the plan has no etcd client URL", n.name);
        };
        let ep = crate::etcd::client::endpoint(
            &n.name,
            r.clone(),
            &host,
            port,
            https,
            n.client_tls.as_ref(),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        endpoints.push(ep);
    }
    Ok(LiveChecks::new(endpoints, remotes.clone()))
}
