//! Where a node's etcd member is defined, and so how its facts are read. Today every member is
//! a kubeadm static pod ([`Source::StaticPod`]); a member run by a systemd unit on a dedicated
//! etcd host would be a new variant with its own reader, filling the same
//! [`EtcdMember`](super::EtcdMember).

use crate::inventory;
use crate::remote::Remote;

use super::model::NodeFacts;
use super::static_pod;

/// How a node runs its etcd member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A static pod in the kubelet's manifests directory (kubeadm's stacked etcd).
    StaticPod,
}

impl Source {
    /// The source of inventory node `node`'s member.
    pub fn of(_node: &inventory::Node) -> Source {
        Source::StaticPod
    }

    /// Reads the member into `f`: [`NodeFacts::etcd`], [`NodeFacts::data`] (paths only) and
    /// [`NodeFacts::client`], with findings for what is wrong. `Err` only when the node could
    /// not be asked.
    pub(super) async fn read(self, f: &mut NodeFacts, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Source::StaticPod => static_pod::read_etcd(f, r).await,
        }
    }
}
