//! etcd knowledge: member and cluster IDs ([`ids`]), versions and the restore command line
//! ([`version`]), both without a connection; and talking to a member through an SSH tunnel
//! with etcd-client ([`client`]).

pub mod client;
pub mod ids;
pub mod version;
