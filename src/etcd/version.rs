//! etcd versions and what each restore tool can do.
//!
//! Facts (see R4, R8 and §1.1–1.2 of the restore research):
//! - `etcdctl snapshot restore` exists up to 3.5 (deprecated there) and was removed in 3.6.
//! - `etcdutl` exists from 3.5.0.
//! - `--bump-revision` / `--mark-compacted` exist from 3.4.27 (etcdctl) and 3.5.10
//!   (etcdctl and etcdutl), and in every etcdutl from 3.6 on.
//! - The restore tool must have the same major.minor as the server that will run the data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::etcd::ids::{InitialCluster, Urls};

/// A release version `major.minor.patch`. Pre-release and build suffixes (`-rc.0`, the `-0` of
/// image tags) are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EtcdVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

/// A version string or tool output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VersionError {
    /// Not `major.minor.patch`.
    #[error("`{0}` is not an etcd version (expected major.minor.patch, e.g. 3.5.10)")]
    Malformed(String),
    /// No version line in a tool's output.
    #[error(
        "no `etcd Version:`, `etcdctl version:` or `etcdutl version:` line in the output: {0:?}"
    )]
    NoVersionLine(String),
}

impl EtcdVersion {
    /// A version from its parts.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        EtcdVersion {
            major,
            minor,
            patch,
        }
    }

    /// True when `self` and `other` share major.minor (a different patch is fine, R4).
    pub fn same_minor(&self, other: &EtcdVersion) -> bool {
        self.major == other.major && self.minor == other.minor
    }

    /// The etcd version in an image reference such as `registry.k8s.io/etcd:3.5.10-0` or
    /// `quay.io/coreos/etcd:v3.5.0@sha256:...`. `None` without a tag or with a tag like
    /// `latest`.
    pub fn from_image(image: &str) -> Option<EtcdVersion> {
        let without_digest = image.split('@').next().unwrap_or(image);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let (_, tag) = last.split_once(':')?;
        tag.parse().ok()
    }

    /// Reads the output of `etcd --version`, `etcdctl version` or `etcdutl version`.
    ///
    /// Returns which program printed it and the version, e.g. `("etcdctl", 3.4.23)` for
    /// `etcdctl version: 3.4.23\nAPI version: 3.4`.
    pub fn from_tool_output(output: &str) -> Result<(&'static str, EtcdVersion), VersionError> {
        const PREFIXES: [(&str, &str); 3] = [
            ("etcd Version:", "etcd"),
            ("etcdctl version:", "etcdctl"),
            ("etcdutl version:", "etcdutl"),
        ];
        for line in output.lines() {
            let line = line.trim();
            for (prefix, program) in PREFIXES {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok((program, rest.trim().parse()?));
                }
            }
        }
        Err(VersionError::NoVersionLine(
            output.chars().take(200).collect::<String>(),
        ))
    }
}

impl FromStr for EtcdVersion {
    type Err = VersionError;

    /// Parses `3.5.10`, `v3.5.10`, `3.5.10-0`, `3.6.0-rc.1`, `3.5.10+build`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || VersionError::Malformed(s.to_string());
        let core = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let core = core.split(['-', '+']).next().unwrap_or(core);
        let mut parts = core.split('.');
        let mut num = || -> Result<u64, VersionError> {
            let p = parts.next().ok_or_else(malformed)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            p.parse().map_err(|_| malformed())
        };
        let v = EtcdVersion::new(num()?, num()?, num()?);
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(v)
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Which program performs the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreToolKind {
    /// `etcdutl snapshot restore` (3.5+).
    Etcdutl,
    /// `etcdctl snapshot restore` (3.4, deprecated in 3.5, removed in 3.6).
    Etcdctl,
}

impl fmt::Display for RestoreToolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestoreToolKind::Etcdutl => "etcdutl",
            RestoreToolKind::Etcdctl => "etcdctl",
        })
    }
}

/// A restore binary on a node: what it is, where it is, which version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTool {
    /// etcdutl or etcdctl.
    pub kind: RestoreToolKind,
    /// Path of the binary.
    pub path: String,
    /// Its version.
    pub version: EtcdVersion,
}

impl RestoreTool {
    /// True when this binary has `snapshot restore`: etcdutl from 3.5, etcdctl 3.x up to 3.5.
    pub fn supports_restore(&self) -> bool {
        let v = self.version;
        match self.kind {
            RestoreToolKind::Etcdutl => v >= EtcdVersion::new(3, 5, 0),
            RestoreToolKind::Etcdctl => v.major == 3 && (3..=5).contains(&v.minor),
        }
    }

    /// True when its restore takes `--bump-revision` and `--mark-compacted`: etcdctl ≥ 3.4.27
    /// on 3.4, etcdutl or etcdctl ≥ 3.5.10 on 3.5, etcdutl on 3.6 and later.
    pub fn supports_bump(&self) -> bool {
        let v = self.version;
        match (self.kind, v.major, v.minor) {
            (_, 3, 5) => v.patch >= 10,
            (RestoreToolKind::Etcdctl, 3, 4) => v.patch >= 27,
            (RestoreToolKind::Etcdutl, major, minor) => (major, minor) > (3, 5),
            _ => false,
        }
    }

    /// True when this tool may restore data for a server of version `server`: same
    /// major.minor.
    pub fn matches_server(&self, server: &EtcdVersion) -> bool {
        self.version.same_minor(server)
    }
}

/// Why a restore command line could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreArgsError {
    /// The tool has no `snapshot restore`.
    #[error("{kind} {version} at {path} has no `snapshot restore` (etcdctl lost it in 3.6; etcdutl exists from 3.5)")]
    NoRestore {
        /// etcdutl or etcdctl.
        kind: RestoreToolKind,
        /// Its version.
        version: EtcdVersion,
        /// Its path.
        path: String,
    },
    /// A bump was asked for but the tool cannot do it.
    #[error("{kind} {version} cannot bump the revision (needs etcdctl >= 3.4.27 on 3.4, >= 3.5.10 on 3.5, or etcdutl on 3.6+)")]
    NoBump {
        /// etcdutl or etcdctl.
        kind: RestoreToolKind,
        /// Its version.
        version: EtcdVersion,
    },
    /// A bump of zero (3.5.10+ refuses `--mark-compacted` without a bump).
    #[error("the revision bump must be greater than 0")]
    ZeroBump,
    /// `R + B` does not fit in etcd's signed 64-bit revision.
    #[error("snapshot revision {revision} + bump {bump} exceeds the largest etcd revision ({max})", max = i64::MAX)]
    BumpOverflow {
        /// The snapshot revision R.
        revision: i64,
        /// The bump B.
        bump: u64,
    },
    /// A negative snapshot revision.
    #[error("snapshot revision {0} is negative")]
    NegativeRevision(i64),
    /// A path that must be absolute is not.
    #[error("{what} `{path}` must be an absolute path")]
    NotAbsolute {
        /// Which argument.
        what: &'static str,
        /// The value.
        path: String,
    },
    /// An argument is empty or could be read as a flag.
    #[error("{what} `{value}` is empty or starts with `-`")]
    BadValue {
        /// Which argument.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The member's name and peer URLs do not match `--initial-cluster`.
    #[error(transparent)]
    Membership(#[from] crate::etcd::ids::IdsError),
}

/// Checks that a revision bump `bump` on a snapshot at revision `revision` is valid (R8) and
/// returns the revision the restored cluster starts at, `R + B`.
pub fn check_bump(revision: i64, bump: u64) -> Result<i64, RestoreArgsError> {
    if revision < 0 {
        return Err(RestoreArgsError::NegativeRevision(revision));
    }
    if bump == 0 {
        return Err(RestoreArgsError::ZeroBump);
    }
    i64::try_from(bump)
        .ok()
        .and_then(|b| revision.checked_add(b))
        .ok_or(RestoreArgsError::BumpOverflow { revision, bump })
}

/// Everything `snapshot restore` is told for one member (R15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreParams<'a> {
    /// The snapshot file on the node (absolute).
    pub snapshot_path: &'a str,
    /// The member's `--name`.
    pub name: &'a str,
    /// The one `--initial-cluster` value shared by every node.
    pub initial_cluster: &'a InitialCluster,
    /// The one `--initial-cluster-token` shared by every node.
    pub token: &'a str,
    /// The member's `--initial-advertise-peer-urls`.
    pub peer_urls: &'a Urls,
    /// The new, not yet existing data directory (absolute).
    pub data_dir: &'a str,
    /// The new, not yet existing WAL directory, when the server uses `--wal-dir`.
    pub wal_dir: Option<&'a str>,
    /// The revision bump B; always passed together with `--mark-compacted`.
    pub bump: Option<u64>,
    /// Restore a snapshot that has no integrity trailer (a raw `member/snap/db` copy).
    pub skip_hash_check: bool,
}

/// The exact argument vector of the restore command for one member.
///
/// - etcdutl: `PATH snapshot restore SNAPSHOT --name=... --initial-cluster=...
///   --initial-cluster-token=... --initial-advertise-peer-urls=... --data-dir=...
///   [--wal-dir=...] [--bump-revision=B --mark-compacted] [--skip-hash-check]`.
/// - etcdctl: the same, prefixed with `env ETCDCTL_API=3` so that the v3 API is used whatever
///   the node's environment says. The vector is meant for an exec (no shell).
///
/// Every value is passed as `--flag=value`. The member's name and peer URLs are checked
/// against `initial_cluster` first, as the restore itself would (R6); a bump needs a tool that
/// supports it (R4, R8).
pub fn restore_argv(
    tool: &RestoreTool,
    p: &RestoreParams<'_>,
) -> Result<Vec<String>, RestoreArgsError> {
    if !tool.supports_restore() {
        return Err(RestoreArgsError::NoRestore {
            kind: tool.kind,
            version: tool.version,
            path: tool.path.clone(),
        });
    }
    for (what, path) in [
        ("the snapshot path", Some(p.snapshot_path)),
        ("the data dir", Some(p.data_dir)),
        ("the WAL dir", p.wal_dir),
        ("the restore tool path", Some(tool.path.as_str())),
    ] {
        if let Some(path) = path {
            if !path.starts_with('/') {
                return Err(RestoreArgsError::NotAbsolute {
                    what,
                    path: path.to_string(),
                });
            }
        }
    }
    for (what, value) in [("the member name", p.name), ("the cluster token", p.token)] {
        if value.is_empty() || value.starts_with('-') {
            return Err(RestoreArgsError::BadValue {
                what,
                value: value.to_string(),
            });
        }
    }
    p.initial_cluster.verify_member(p.name, p.peer_urls)?;
    let mut argv = Vec::new();
    if tool.kind == RestoreToolKind::Etcdctl {
        argv.extend(["env".to_string(), "ETCDCTL_API=3".to_string()]);
    }
    argv.extend([
        tool.path.clone(),
        "snapshot".into(),
        "restore".into(),
        p.snapshot_path.into(),
        format!("--name={}", p.name),
        format!("--initial-cluster={}", p.initial_cluster),
        format!("--initial-cluster-token={}", p.token),
        format!("--initial-advertise-peer-urls={}", p.peer_urls),
        format!("--data-dir={}", p.data_dir),
    ]);
    if let Some(wal) = p.wal_dir {
        argv.push(format!("--wal-dir={wal}"));
    }
    if let Some(bump) = p.bump {
        if bump == 0 {
            return Err(RestoreArgsError::ZeroBump);
        }
        if !tool.supports_bump() {
            return Err(RestoreArgsError::NoBump {
                kind: tool.kind,
                version: tool.version,
            });
        }
        argv.push(format!("--bump-revision={bump}"));
        argv.push("--mark-compacted".into());
    }
    if p.skip_hash_check {
        argv.push("--skip-hash-check".into());
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(kind: RestoreToolKind, v: &str) -> RestoreTool {
        RestoreTool {
            kind,
            path: "/x".into(),
            version: v.parse().unwrap(),
        }
    }

    #[test]
    fn parses_versions_and_suffixes() {
        assert_eq!("3.5.10".parse(), Ok(EtcdVersion::new(3, 5, 10)));
        assert_eq!("v3.5.0".parse(), Ok(EtcdVersion::new(3, 5, 0)));
        assert_eq!("3.5.10-0".parse(), Ok(EtcdVersion::new(3, 5, 10)));
        assert_eq!("3.6.0-rc.1".parse(), Ok(EtcdVersion::new(3, 6, 0)));
        for bad in ["3.5", "latest", "3.5.x", "3.5.1.2", "", "v", "3..1"] {
            assert!(bad.parse::<EtcdVersion>().is_err(), "{bad}");
        }
        assert_eq!(EtcdVersion::new(3, 4, 27).to_string(), "3.4.27");
        assert!(EtcdVersion::new(3, 5, 9) < EtcdVersion::new(3, 5, 10));
    }

    #[test]
    fn versions_from_images() {
        let cases = [
            ("registry.k8s.io/etcd:3.5.10-0", Some("3.5.10")),
            ("k8s.gcr.io/etcd-amd64:3.1.12", Some("3.1.12")),
            ("quay.io/coreos/etcd:v3.5.0", Some("3.5.0")),
            ("localhost:5000/etcd:3.4.13-0", Some("3.4.13")),
            ("localhost:5000/etcd", None),
            ("quay.io/coreos/etcd:latest", None),
            ("registry.k8s.io/etcd:3.5.16-0@sha256:abcd", Some("3.5.16")),
            ("registry.k8s.io/etcd@sha256:abcd", None),
        ];
        for (image, want) in cases {
            let want = want.map(|w| w.parse::<EtcdVersion>().unwrap());
            assert_eq!(EtcdVersion::from_image(image), want, "{image}");
        }
    }

    #[test]
    fn versions_from_tool_output() {
        assert_eq!(
            EtcdVersion::from_tool_output("etcdctl version: 3.4.23\nAPI version: 3.4\n"),
            Ok(("etcdctl", EtcdVersion::new(3, 4, 23)))
        );
        assert_eq!(
            EtcdVersion::from_tool_output("etcdutl version: 3.5.1\nAPI version: 3.5\n"),
            Ok(("etcdutl", EtcdVersion::new(3, 5, 1)))
        );
        assert_eq!(
            EtcdVersion::from_tool_output(
                "etcd Version: 3.5.1\nGit SHA: e8732fb5f\nGo Version: go1.16.3\n"
            ),
            Ok(("etcd", EtcdVersion::new(3, 5, 1)))
        );
        assert!(matches!(
            EtcdVersion::from_tool_output("command not found"),
            Err(VersionError::NoVersionLine(_))
        ));
    }

    #[test]
    fn restore_and_bump_support() {
        use RestoreToolKind::*;
        let cases = [
            // kind, version, restore, bump
            (Etcdctl, "3.4.23", true, false),
            (Etcdctl, "3.4.26", true, false),
            (Etcdctl, "3.4.27", true, true),
            (Etcdctl, "3.5.9", true, false),
            (Etcdctl, "3.5.10", true, true),
            (Etcdctl, "3.6.0", false, false),
            (Etcdctl, "3.2.32", false, false),
            (Etcdutl, "3.4.27", false, false),
            (Etcdutl, "3.5.1", true, false),
            (Etcdutl, "3.5.10", true, true),
            (Etcdutl, "3.6.0", true, true),
            (Etcdutl, "3.7.2", true, true),
        ];
        for (kind, v, restore, bump) in cases {
            let t = tool(kind, v);
            assert_eq!(t.supports_restore(), restore, "{kind} {v} restore");
            assert_eq!(t.supports_bump(), bump, "{kind} {v} bump");
        }
    }

    #[test]
    fn server_match_is_major_minor() {
        let t = tool(RestoreToolKind::Etcdutl, "3.5.1");
        assert!(t.matches_server(&"3.5.16".parse().unwrap()));
        assert!(!t.matches_server(&"3.4.13".parse().unwrap()));
        assert!(!t.matches_server(&"3.6.0".parse().unwrap()));
    }

    fn params<'a>(ic: &'a InitialCluster, urls: &'a Urls) -> RestoreParams<'a> {
        RestoreParams {
            snapshot_path: "/var/lib/etcd-recover/snapshot.db",
            name: "cp-1",
            initial_cluster: ic,
            token: "etcd-restore-20240101T000000Z",
            peer_urls: urls,
            data_dir: "/var/lib/etcd.restore",
            wal_dir: None,
            bump: Some(1_000_000_000),
            skip_hash_check: false,
        }
    }

    #[test]
    fn etcdutl_argv_passes_every_flag_and_both_bump_flags() {
        let ic =
            InitialCluster::parse("cp-2=https://10.0.0.2:2380,cp-1=https://10.0.0.1:2380").unwrap();
        let urls = Urls::parse("https://10.0.0.1:2380").unwrap();
        let t = tool(RestoreToolKind::Etcdutl, "3.5.16");
        let argv = restore_argv(&t, &params(&ic, &urls)).unwrap();
        assert_eq!(
            argv,
            [
                "/x",
                "snapshot",
                "restore",
                "/var/lib/etcd-recover/snapshot.db",
                "--name=cp-1",
                "--initial-cluster=cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380",
                "--initial-cluster-token=etcd-restore-20240101T000000Z",
                "--initial-advertise-peer-urls=https://10.0.0.1:2380",
                "--data-dir=/var/lib/etcd.restore",
                "--bump-revision=1000000000",
                "--mark-compacted",
            ]
        );
        let mut p = params(&ic, &urls);
        p.wal_dir = Some("/var/lib/etcd-wal.restore");
        p.bump = None;
        p.skip_hash_check = true;
        let argv = restore_argv(&t, &p).unwrap();
        assert!(argv.contains(&"--wal-dir=/var/lib/etcd-wal.restore".to_string()));
        assert!(argv.contains(&"--skip-hash-check".to_string()));
        assert!(!argv
            .iter()
            .any(|a| a.starts_with("--bump-revision") || a == "--mark-compacted"));
    }

    #[test]
    fn etcdctl_argv_sets_the_api_version() {
        let ic = InitialCluster::parse("cp-1=https://10.0.0.1:2380").unwrap();
        let urls = Urls::parse("https://10.0.0.1:2380").unwrap();
        let argv = restore_argv(
            &tool(RestoreToolKind::Etcdctl, "3.4.27"),
            &params(&ic, &urls),
        )
        .unwrap();
        assert_eq!(
            &argv[..5],
            ["env", "ETCDCTL_API=3", "/x", "snapshot", "restore"]
        );
        assert_eq!(
            &argv[argv.len() - 2..],
            ["--bump-revision=1000000000", "--mark-compacted"]
        );
    }

    #[test]
    fn argv_refusals() {
        let ic = InitialCluster::parse("cp-1=https://10.0.0.1:2380").unwrap();
        let urls = Urls::parse("https://10.0.0.1:2380").unwrap();
        let p = params(&ic, &urls);
        assert!(matches!(
            restore_argv(&tool(RestoreToolKind::Etcdctl, "3.4.23"), &p),
            Err(RestoreArgsError::NoBump { .. })
        ));
        assert!(matches!(
            restore_argv(&tool(RestoreToolKind::Etcdctl, "3.6.1"), &p),
            Err(RestoreArgsError::NoRestore { .. })
        ));
        let mut zero = p.clone();
        zero.bump = Some(0);
        assert_eq!(
            restore_argv(&tool(RestoreToolKind::Etcdutl, "3.6.1"), &zero),
            Err(RestoreArgsError::ZeroBump)
        );
        let mut rel = p.clone();
        rel.data_dir = "etcd.restore";
        assert!(matches!(
            restore_argv(&tool(RestoreToolKind::Etcdutl, "3.6.1"), &rel),
            Err(RestoreArgsError::NotAbsolute { .. })
        ));
        let mut wrong = p.clone();
        wrong.name = "cp-9";
        assert!(matches!(
            restore_argv(&tool(RestoreToolKind::Etcdutl, "3.6.1"), &wrong),
            Err(RestoreArgsError::Membership(_))
        ));
    }

    #[test]
    fn bump_bounds() {
        assert_eq!(check_bump(5, 1_000_000_000), Ok(1_000_000_005));
        assert_eq!(check_bump(0, i64::MAX as u64), Ok(i64::MAX));
        assert_eq!(
            check_bump(1, i64::MAX as u64),
            Err(RestoreArgsError::BumpOverflow {
                revision: 1,
                bump: i64::MAX as u64
            })
        );
        assert!(matches!(
            check_bump(0, u64::MAX),
            Err(RestoreArgsError::BumpOverflow { .. })
        ));
        assert_eq!(check_bump(5, 0), Err(RestoreArgsError::ZeroBump));
        assert_eq!(
            check_bump(-1, 5),
            Err(RestoreArgsError::NegativeRevision(-1))
        );
    }
}
