//! etcd identity math: URL normalisation as etcd's `types.NewURLs`, member and cluster IDs,
//! and the `--initial-cluster` value (R6, R7, R31, Appendix B of the restore research).
//!
//! - A member ID is `SHA-1(sorted peer URLs concatenated ‖ token)`, first 8 bytes big-endian.
//! - A cluster ID is `SHA-1(sorted member IDs, 8 bytes big-endian each)`, first 8 bytes
//!   big-endian.
//!
//! URLs are compared and hashed in etcd's `url.URL.String()` form: the scheme lower-cased, the
//! rest as written. This module is stricter than etcd in a few corner cases that no working
//! cluster uses (user info, query, fragment, empty or non-numeric port are refused).

use std::collections::BTreeSet;
use std::fmt;

use sha1::{Digest, Sha1};
use thiserror::Error;

/// A URL, a URL list or an `--initial-cluster` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdsError {
    /// Scheme other than http, https, unix, unixs (etcd's own wording).
    #[error("URL scheme must be http, https, unix, or unixs: {0}")]
    Scheme(String),
    /// No `host:port` (etcd's own wording).
    #[error("URL address does not have the form \"host:port\": {0}")]
    HostPort(String),
    /// A path after the address (etcd's own wording).
    #[error("URL must not contain a path: {0}")]
    Path(String),
    /// A part etcd tolerates but no peer URL should have.
    #[error("URL must not contain {part}: {url}")]
    Unsupported {
        /// `user info`, `a query` or `a fragment`.
        part: &'static str,
        /// The URL.
        url: String,
    },
    /// An empty list.
    #[error("no valid URLs given")]
    Empty,
    /// The same URL twice (etcd: `has duplicate url`).
    #[error("initial cluster {cluster} has duplicate url {url}")]
    DuplicateUrl {
        /// The whole value.
        cluster: String,
        /// The repeated URL.
        url: String,
    },
    /// A `--initial-cluster` entry without a name.
    #[error("`--initial-cluster` entry `{0}` has no member name (expected name=url)")]
    NoName(String),
    /// The same member name from two different nodes.
    #[error(
        "member name `{0}` is used by more than one node; every member needs its own `--name`"
    )]
    DuplicateName(String),
    /// etcd's `VerifyBootstrap`: the local name is not in the cluster.
    #[error("couldn't find local name {name:?} in the initial cluster configuration ({cluster})")]
    NameNotInCluster {
        /// The member name.
        name: String,
        /// The whole value.
        cluster: String,
    },
    /// etcd's `VerifyBootstrap`: the member's URLs differ from its advertised peer URLs.
    #[error("--initial-cluster has {name}={cluster_urls} but missing from --initial-advertise-peer-urls={peer_urls}")]
    PeerUrlMismatch {
        /// The member name.
        name: String,
        /// Its URLs in `--initial-cluster`.
        cluster_urls: String,
        /// Its `--initial-advertise-peer-urls`.
        peer_urls: String,
    },
}

/// Parses one URL as etcd does and returns it in the form etcd hashes (`url.URL.String()`).
pub fn normalize_url(input: &str) -> Result<String, IdsError> {
    let s = input.trim();
    let (scheme, rest) = s
        .split_once(':')
        .ok_or_else(|| IdsError::Scheme(s.to_string()))?;
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "unix" | "unixs" => return Ok(format!("{scheme}:{rest}")),
        "http" | "https" => {}
        _ => return Err(IdsError::Scheme(s.to_string())),
    }
    let after = rest
        .strip_prefix("//")
        .ok_or_else(|| IdsError::HostPort(s.to_string()))?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    if tail.starts_with('/') {
        return Err(IdsError::Path(s.to_string()));
    }
    if tail.starts_with('?') {
        return Err(IdsError::Unsupported {
            part: "a query",
            url: s.to_string(),
        });
    }
    if tail.starts_with('#') {
        return Err(IdsError::Unsupported {
            part: "a fragment",
            url: s.to_string(),
        });
    }
    if authority.contains('@') {
        return Err(IdsError::Unsupported {
            part: "user info",
            url: s.to_string(),
        });
    }
    let host_port_err = || IdsError::HostPort(s.to_string());
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after_host) = bracketed.split_once(']').ok_or_else(host_port_err)?;
        if host.is_empty() || host.contains(['[', ']']) {
            return Err(host_port_err());
        }
        after_host.strip_prefix(':').ok_or_else(host_port_err)?
    } else {
        let (host, port) = authority.split_once(':').ok_or_else(host_port_err)?;
        if host.contains(['[', ']']) || port.contains(':') {
            // An IPv6 address without brackets: "too many colons in address".
            return Err(host_port_err());
        }
        port
    };
    if port.is_empty()
        || port.len() > 5
        || !port.bytes().all(|b| b.is_ascii_digit())
        || port.parse::<u32>().map_or(true, |p| p > 65535)
    {
        return Err(host_port_err());
    }
    Ok(format!("{scheme}://{authority}"))
}

/// A sorted list of normalised URLs, as etcd's `types.URLs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Urls(Vec<String>);

impl Urls {
    /// Parses a comma-separated list (`--initial-advertise-peer-urls`, `--listen-client-urls`).
    pub fn parse(list: &str) -> Result<Urls, IdsError> {
        Urls::from_list(list.split(',').filter(|s| !s.trim().is_empty()))
    }

    /// Parses each URL and sorts them.
    pub fn from_list<I, S>(urls: I) -> Result<Urls, IdsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut all = urls
            .into_iter()
            .map(|u| normalize_url(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if all.is_empty() {
            return Err(IdsError::Empty);
        }
        all.sort();
        Ok(Urls(all))
    }

    /// The URLs, sorted.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Urls {
    /// Comma-separated, as etcd prints `types.URLs`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// etcd's member ID for a member with `peer_urls` in a cluster created with `token`.
pub fn member_id(peer_urls: &Urls, token: &str) -> u64 {
    // `Urls` is sorted already; etcd sorts the strings again, which is the same order.
    let mut hasher = Sha1::new();
    for u in &peer_urls.0 {
        hasher.update(u.as_bytes());
    }
    hasher.update(token.as_bytes());
    first_8_be(&hasher.finalize())
}

/// etcd's cluster ID for a cluster of these members.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_8_be(&hasher.finalize())
}

fn first_8_be(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// An ID as etcd prints it (`types.ID.String()`: lower-case hex, no padding).
pub fn format_id(id: u64) -> String {
    format!("{id:x}")
}

/// An `--initial-cluster` value: member names with their peer URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    /// Members in order of first appearance; names are unique.
    members: Vec<(String, Urls)>,
}

impl InitialCluster {
    /// Parses `name=url,name=url,...` as etcd's `types.NewURLsMap` does: a name given more
    /// than once means a member with several peer URLs. The same URL twice is refused.
    pub fn parse(value: &str) -> Result<InitialCluster, IdsError> {
        let mut raw: Vec<(String, Vec<String>)> = Vec::new();
        for pair in value.split(',') {
            if pair.is_empty() {
                continue;
            }
            let (name, url) = pair.split_once('=').unwrap_or((pair, ""));
            if name.is_empty() {
                return Err(IdsError::NoName(pair.to_string()));
            }
            match raw.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => raw.push((name.to_string(), vec![url.to_string()])),
            }
        }
        if raw.is_empty() {
            return Err(IdsError::Empty);
        }
        let members = raw
            .into_iter()
            .map(|(n, urls)| Ok((n, Urls::from_list(urls)?)))
            .collect::<Result<Vec<_>, IdsError>>()?;
        let ic = InitialCluster { members };
        ic.check_duplicate_urls()?;
        Ok(ic)
    }

    /// Builds the value from each node's own `--name` and peer URLs. Refuses a name or a URL
    /// used twice.
    pub fn from_members<I, S>(members: I) -> Result<InitialCluster, IdsError>
    where
        I: IntoIterator<Item = (S, Urls)>,
        S: Into<String>,
    {
        let mut out: Vec<(String, Urls)> = Vec::new();
        for (name, urls) in members {
            let name = name.into();
            if name.is_empty() {
                return Err(IdsError::NoName(format!("={urls}")));
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(IdsError::DuplicateName(name));
            }
            out.push((name, urls));
        }
        if out.is_empty() {
            return Err(IdsError::Empty);
        }
        let ic = InitialCluster { members: out };
        ic.check_duplicate_urls()?;
        Ok(ic)
    }

    fn check_duplicate_urls(&self) -> Result<(), IdsError> {
        let mut seen = BTreeSet::new();
        for (_, urls) in &self.members {
            for u in urls.as_slice() {
                if !seen.insert(u.as_str()) {
                    return Err(IdsError::DuplicateUrl {
                        cluster: self.to_string(),
                        url: u.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The members, in order of first appearance.
    pub fn members(&self) -> &[(String, Urls)] {
        &self.members
    }

    /// The peer URLs of member `name`.
    pub fn urls_of(&self, name: &str) -> Option<&Urls> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, u)| u)
    }

    /// etcd's `VerifyBootstrap` for one node: its `--name` is a member and that member's URLs
    /// are exactly its `--initial-advertise-peer-urls` (R6).
    pub fn verify_member(&self, name: &str, peer_urls: &Urls) -> Result<(), IdsError> {
        let urls = self
            .urls_of(name)
            .ok_or_else(|| IdsError::NameNotInCluster {
                name: name.to_string(),
                cluster: self.to_string(),
            })?;
        if urls != peer_urls {
            return Err(IdsError::PeerUrlMismatch {
                name: name.to_string(),
                cluster_urls: urls.to_string(),
                peer_urls: peer_urls.to_string(),
            });
        }
        Ok(())
    }

    /// Every member's ID under `token`, in member order.
    pub fn member_ids(&self, token: &str) -> Vec<(String, u64)> {
        self.members
            .iter()
            .map(|(n, u)| (n.clone(), member_id(u, token)))
            .collect()
    }

    /// The cluster ID a restore with `token` produces.
    pub fn cluster_id(&self, token: &str) -> u64 {
        let ids: Vec<u64> = self
            .member_ids(token)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        cluster_id(&ids)
    }
}

impl fmt::Display for InitialCluster {
    /// `name=url` pairs sorted as strings, as etcd's `URLsMap.String()`: the same members give
    /// the same text whatever order they were listed in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs: Vec<String> = self
            .members
            .iter()
            .flat_map(|(n, urls)| urls.as_slice().iter().map(move |u| format!("{n}={u}")))
            .collect();
        pairs.sort();
        f.write_str(&pairs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_identity_matches_etcd() {
        let urls = Urls::parse("http://localhost:2380").unwrap();
        let m = member_id(&urls, "etcd-cluster");
        assert_eq!(m, 0x8e9e05c52164694d);
        assert_eq!(cluster_id(&[m]), 0xcdf818194e3a8c32);
        assert_eq!(format_id(m), "8e9e05c52164694d");
        let ic = InitialCluster::parse("default=http://localhost:2380").unwrap();
        assert_eq!(ic.cluster_id("etcd-cluster"), 0xcdf818194e3a8c32);
    }

    #[test]
    fn member_id_sorts_urls_and_concatenates_without_separator() {
        let a = Urls::parse("https://10.0.0.2:2380,https://10.0.0.1:2380").unwrap();
        let b = Urls::parse("https://10.0.0.1:2380, https://10.0.0.2:2380").unwrap();
        assert_eq!(a, b);
        let mut h = Sha1::new();
        h.update(b"https://10.0.0.1:2380https://10.0.0.2:2380tok");
        assert_eq!(member_id(&a, "tok"), first_8_be(&h.finalize()));
        assert_ne!(member_id(&a, "tok"), member_id(&a, "tok2"));
    }

    #[test]
    fn cluster_id_ignores_member_order() {
        assert_eq!(cluster_id(&[3, 1, 2]), cluster_id(&[1, 2, 3]));
        let mut h = Sha1::new();
        for id in [1u64, 2, 3] {
            h.update(id.to_be_bytes());
        }
        assert_eq!(cluster_id(&[2, 3, 1]), first_8_be(&h.finalize()));
    }

    #[test]
    fn urls_are_checked_like_etcd() {
        assert_eq!(
            normalize_url(" HTTPS://[fd00::1]:2380 ").unwrap(),
            "https://[fd00::1]:2380"
        );
        assert_eq!(
            normalize_url("http://Node-1:2380").unwrap(),
            "http://Node-1:2380"
        );
        assert_eq!(
            normalize_url("unix://localhost:2380").unwrap(),
            "unix://localhost:2380"
        );
        assert!(matches!(
            normalize_url("ftp://a:1"),
            Err(IdsError::Scheme(_))
        ));
        assert!(matches!(
            normalize_url("10.0.0.1:2380"),
            Err(IdsError::Scheme(_))
        ));
        assert!(matches!(
            normalize_url("http://10.0.0.1"),
            Err(IdsError::HostPort(_))
        ));
        assert!(matches!(
            normalize_url("http://fd00::1:2380"),
            Err(IdsError::HostPort(_))
        ));
        assert!(matches!(
            normalize_url("http://a:99999"),
            Err(IdsError::HostPort(_))
        ));
        assert!(matches!(
            normalize_url("http://a:2380/"),
            Err(IdsError::Path(_))
        ));
        assert!(matches!(
            normalize_url("http://a:2380?x"),
            Err(IdsError::Unsupported { .. })
        ));
        assert!(matches!(
            normalize_url("http://u@a:2380"),
            Err(IdsError::Unsupported { .. })
        ));
        assert_eq!(Urls::parse(""), Err(IdsError::Empty));
    }

    #[test]
    fn initial_cluster_parse_render_and_verify() {
        let ic = InitialCluster::parse(
            "m3=https://10.0.0.3:2380,m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380",
        )
        .unwrap();
        assert_eq!(
            ic.to_string(),
            "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380"
        );
        let own = Urls::parse("https://10.0.0.2:2380").unwrap();
        ic.verify_member("m2", &own).unwrap();
        assert!(matches!(
            ic.verify_member("m1", &own),
            Err(IdsError::PeerUrlMismatch { .. })
        ));
        assert!(matches!(
            ic.verify_member("m9", &own),
            Err(IdsError::NameNotInCluster { .. })
        ));
        // A repeated name is one member with two URLs (etcd's NewURLsMap).
        let two = InitialCluster::parse("a=http://h1:2380,a=http://h2:2380").unwrap();
        assert_eq!(two.members().len(), 1);
        assert_eq!(two.urls_of("a").unwrap().as_slice().len(), 2);
        assert!(matches!(
            InitialCluster::parse("a=http://h:2380,b=http://h:2380"),
            Err(IdsError::DuplicateUrl { .. })
        ));
        assert!(matches!(
            InitialCluster::parse("=http://h:2380"),
            Err(IdsError::NoName(_))
        ));
        assert!(matches!(
            InitialCluster::parse("a"),
            Err(IdsError::Scheme(_))
        ));
    }

    #[test]
    fn from_members_refuses_duplicates_and_is_order_independent() {
        let u = |s: &str| Urls::parse(s).unwrap();
        let a = InitialCluster::from_members([
            ("cp-2", u("https://[fd00::2]:2380")),
            ("cp-1", u("https://[fd00::1]:2380")),
        ])
        .unwrap();
        let b = InitialCluster::from_members([
            ("cp-1", u("https://[fd00::1]:2380")),
            ("cp-2", u("https://[fd00::2]:2380")),
        ])
        .unwrap();
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.cluster_id("t"), b.cluster_id("t"));
        assert_eq!(
            InitialCluster::from_members([("x", u("http://a:1")), ("x", u("http://b:1"))]),
            Err(IdsError::DuplicateName("x".into()))
        );
        assert!(matches!(
            InitialCluster::from_members([("x", u("http://a:1")), ("y", u("http://a:1"))]),
            Err(IdsError::DuplicateUrl { .. })
        ));
    }
}
