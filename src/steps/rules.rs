//! The safety order of a playbook, from the steps' own rules. Each step type says which
//! [`Condition`]s it brings about and which ones an earlier stage must have brought about first
//! ([`Rule`]); [`check`] walks a playbook's stages and refuses it when a condition is never
//! reached or is needed before a stage that reaches it. A stage boundary is the only point where
//! every node is known to be done, so "earlier" means an earlier stage, never an earlier step of
//! the same stage.

use std::collections::{BTreeMap, BTreeSet};

/// A state of the cluster that a step brings about once its stage is done on every node.
/// Every playbook must reach all of them; the order of the variants is the order in which
/// missing ones are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// Every node passed preflight, holds the lock and has a run directory (first step).
    Checked,
    /// The snapshot is on every node, verified.
    SnapshotStaged,
    /// Every member is restored into a new data directory.
    Restored,
    /// etcd's manifest names the new data directory.
    ManifestRewritten,
    /// The restored cluster is proven healthy.
    EtcdHealthy,
    /// The lock is released and the run recorded as complete.
    Finished,
    /// No etcd member runs.
    EtcdStopped,
    /// etcd runs again.
    EtcdStarted,
    /// No apiserver runs.
    ApiserverStopped,
    /// The apiservers run again.
    ApiserverStarted,
}

impl Condition {
    /// Every condition, in the order missing ones are reported.
    pub const ALL: [Condition; 10] = [
        Condition::Checked,
        Condition::SnapshotStaged,
        Condition::Restored,
        Condition::ManifestRewritten,
        Condition::EtcdHealthy,
        Condition::Finished,
        Condition::EtcdStopped,
        Condition::EtcdStarted,
        Condition::ApiserverStopped,
        Condition::ApiserverStarted,
    ];

    /// Why a playbook that never reaches this condition is refused.
    fn missing(self) -> &'static str {
        match self {
            Condition::Checked => "the first step must be `preflight`: nothing may change before every node passes its checks",
            Condition::SnapshotStaged => "the playbook has no `stage-snapshot` step",
            Condition::Restored => "the playbook has no `restore` step",
            Condition::ManifestRewritten => "the playbook has no `rewrite-manifest` step",
            Condition::EtcdHealthy => "the playbook has no `wait-etcd-healthy` step",
            Condition::Finished => "the playbook has no `finish` step",
            Condition::EtcdStopped | Condition::EtcdStarted => "the playbook must stop etcd, restore, rewrite the manifest, start etcd and wait for it to be healthy",
            Condition::ApiserverStopped => "the playbook never stops kube-apiserver; an apiserver running during the restore writes into the old cluster",
            Condition::ApiserverStarted => "the playbook never starts kube-apiserver again",
        }
    }

    /// What brings the condition about, as the required order names it.
    fn label(self) -> &'static str {
        match self {
            Condition::Checked => "preflight",
            Condition::SnapshotStaged => "stage-snapshot",
            Condition::Restored => "restore",
            Condition::ManifestRewritten => "rewrite-manifest",
            Condition::EtcdHealthy => "wait-etcd-healthy",
            Condition::Finished => "finish",
            Condition::EtcdStopped => "stop etcd",
            Condition::EtcdStarted => "start etcd",
            Condition::ApiserverStopped => "stop kube-apiserver",
            Condition::ApiserverStarted => "start kube-apiserver",
        }
    }
}

/// One thing a step brings about, and what must hold before its stage starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the step brings about once its stage is done.
    pub provides: Condition,
    /// What earlier stages must have brought about.
    pub after: Vec<Condition>,
}

impl Rule {
    /// The step brings `condition` about, whatever came before.
    pub fn provides(condition: Condition) -> Rule {
        Rule {
            provides: condition,
            after: Vec::new(),
        }
    }

    /// ... once an earlier stage brought `earlier` about.
    pub fn after(mut self, earlier: Condition) -> Rule {
        self.after.push(earlier);
        self
    }
}

/// Checks the safety order of a playbook, given the rules of each step of each stage, in
/// order: the first step brings about [`Condition::Checked`], every condition is reached, and
/// every step's needs are met by an earlier stage. The error says what is wrong, without the
/// file name.
pub fn check(stages: &[Vec<Vec<Rule>>]) -> Result<(), String> {
    let first_stage_of = |c: Condition| {
        stages
            .iter()
            .position(|steps| steps.iter().flatten().any(|r| r.provides == c))
    };
    let first = stages.first().and_then(|s| s.first());
    let checked_first =
        first.is_some_and(|rules| rules.iter().any(|r| r.provides == Condition::Checked));
    if !checked_first {
        return Err(Condition::Checked.missing().to_string());
    }
    let reached: BTreeMap<Condition, usize> = Condition::ALL
        .iter()
        .filter_map(|c| first_stage_of(*c).map(|i| (*c, i)))
        .collect();
    if let Some(missing) = Condition::ALL.iter().find(|c| !reached.contains_key(c)) {
        return Err(missing.missing().to_string());
    }
    for (i, steps) in stages.iter().enumerate() {
        for rule in steps.iter().flatten() {
            if rule.after.iter().any(|c| reached[c] >= i) {
                return Err(format!(
                    "stages are out of order; the required order is {}, each in a later stage than the one before",
                    required_order(stages).join(" -> ")
                ));
            }
        }
    }
    Ok(())
}

/// The conditions that depend on one another, each after everything it needs (ties in
/// [`Condition`] order).
fn required_order(stages: &[Vec<Vec<Rule>>]) -> Vec<&'static str> {
    let mut needs: BTreeMap<Condition, BTreeSet<Condition>> = BTreeMap::new();
    for rule in stages.iter().flatten().flatten() {
        for earlier in &rule.after {
            needs.entry(*earlier).or_default();
            needs.entry(rule.provides).or_default().insert(*earlier);
        }
    }
    let mut order = Vec::new();
    while !needs.is_empty() {
        let next = needs
            .iter()
            .find(|(_, n)| n.iter().all(|c| !needs.contains_key(c)))
            .or_else(|| needs.iter().next())
            .map(|(c, _)| *c);
        let Some(next) = next else { break };
        needs.remove(&next);
        order.push(next.label());
    }
    order
}
