//! etcd facts that need no connection: member and cluster IDs ([`ids`]), versions and the
//! restore command line ([`version`]).

pub mod ids;
pub mod version;
