//! Snapshot file verification, offline (R1, R2, §2.4 of the restore research).
//!
//! An etcd snapshot (`etcdctl snapshot save`) is a bbolt database image of exactly
//! `pgid × pageSize` bytes followed by the SHA-256 of those bytes (32 bytes). This module
//! checks, in order:
//! 1. the file exists, is a regular file and is not empty;
//! 2. meta pages 0 and 1 are valid bbolt meta pages (magic `0xED0CDAED`, version 2, page size a
//!    power of two ≥ 512, meta flag, FNV-1a-64 checksum over bytes `[16, 72)`);
//! 3. the size matches the bbolt high-water mark of the meta with the higher txid: exactly
//!    `pgid × pageSize + 32` (a snapshot), or `pgid × pageSize` rounded up to whole pages with no
//!    trailer (a raw `member/snap/db` copy, accepted only with `skip_hash_check`);
//! 4. the SHA-256 of `[0, N−32)` equals the trailer, streaming with a constant-size buffer.
//!
//! The SHA-256 of the whole file is the snapshot's identity everywhere else ([`sha256_file`]).
//! Optionally `etcdutl snapshot status` adds the revision, key count and status hash; it runs on
//! a copy, because older versions could write to the file they inspect.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// bbolt's magic number.
pub const BBOLT_MAGIC: u32 = 0xED0C_DAED;
/// The bbolt file format version etcd uses.
pub const BBOLT_VERSION: u32 = 2;
/// Length of the SHA-256 trailer.
pub const TRAILER_LEN: u64 = 32;
const META_PAGE_FLAG: u16 = 0x04;
const META_LEN: usize = 80;
const BUF_LEN: usize = 1 << 20;

/// Why a file is not an acceptable snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file does not exist.
    #[error("no such file")]
    NotFound,
    /// Not a regular file.
    #[error("not a regular file ({0})")]
    NotAFile(String),
    /// Reading failed.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// Zero bytes.
    #[error("the file is empty (0 bytes)")]
    Empty,
    /// Text, not a database.
    #[error("the file is text, not an etcd snapshot")]
    TextFile,
    /// No bbolt magic at the start.
    #[error("not an etcd snapshot or bbolt database: bad magic {found:#010x} at offset 16 (expected {expected:#010x})", expected = BBOLT_MAGIC)]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// Written on a big-endian machine.
    #[error("the bbolt database was written on a big-endian machine; this tool reads little-endian (amd64/arm64) snapshots only")]
    BigEndian,
    /// Too short to hold two meta pages.
    #[error("the file is too short to be a snapshot: {size} bytes, less than two {page_size}-byte meta pages")]
    TooShort {
        /// File size.
        size: u64,
        /// The page size assumed.
        page_size: u64,
    },
    /// A meta page is invalid.
    #[error("bbolt meta page {page} is invalid: {reason}")]
    BadMeta {
        /// 0 or 1.
        page: u8,
        /// What is wrong.
        reason: String,
    },
    /// A meta page's checksum does not match.
    #[error("bbolt meta page {page} is corrupt: checksum {stored:#018x} stored, {computed:#018x} computed")]
    MetaChecksum {
        /// 0 or 1.
        page: u8,
        /// The checksum in the page.
        stored: u64,
        /// The checksum of the page's bytes.
        computed: u64,
    },
    /// No SHA-256 trailer: a raw `member/snap/db` copy.
    #[error("no integrity trailer (looks like a raw member/snap/db copy): {size} bytes is a whole number of pages, {body} bytes of database and no SHA-256 after it")]
    NoTrailer {
        /// File size.
        size: u64,
        /// `pgid × pageSize`.
        body: u64,
    },
    /// Shorter than the bbolt high-water mark says.
    #[error("the file is truncated: {size} bytes, but its bbolt high-water mark says {expected} bytes ({body} of database + 32 of SHA-256); {missing} bytes are missing")]
    Truncated {
        /// File size.
        size: u64,
        /// `pgid × pageSize + 32`.
        expected: u64,
        /// `pgid × pageSize`.
        body: u64,
        /// `expected - size`.
        missing: u64,
    },
    /// Longer than the bbolt high-water mark says.
    #[error("the size does not match the bbolt high-water mark: {size} bytes, expected {expected} ({body} of database + 32 of SHA-256); {extra} unexpected bytes")]
    ExtraBytes {
        /// File size.
        size: u64,
        /// `pgid × pageSize + 32`.
        expected: u64,
        /// `pgid × pageSize`.
        body: u64,
        /// `size - expected`.
        extra: u64,
    },
    /// The SHA-256 of the body differs from the trailer.
    #[error("SHA-256 mismatch: the trailer says {expected}, the content hashes to {actual}; the file is corrupt")]
    HashMismatch {
        /// The trailer (hex).
        expected: String,
        /// The computed hash (hex).
        actual: String,
    },
    /// `etcdutl snapshot status` found the database inconsistent.
    #[error("etcdutl snapshot status reports the database as damaged: {0}")]
    StatusFailed(String),
}

impl SnapshotError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        use SnapshotError::*;
        match self {
            NotFound | NotAFile(_) | Io(_) => "give the path of a snapshot file taken with `etcdctl snapshot save`".into(),
            Empty | Truncated { .. } => "the copy is incomplete: copy or download the snapshot again and compare its SHA-256 with the original".into(),
            TextFile | BadMagic { .. } | TooShort { .. } => "this is not an etcd snapshot; use the file written by `etcdctl snapshot save` (or etcd-recover's own backup)".into(),
            BigEndian => "restore with etcdutl on a machine of the same architecture".into(),
            BadMeta { .. } | MetaChecksum { .. } | HashMismatch { .. } | StatusFailed(_) => "the snapshot is damaged; use another snapshot (an older one, or one taken from another member)".into(),
            NoTrailer { .. } => "prefer a real snapshot (`etcdctl snapshot save`); to restore this raw copy anyway, pass --skip-hash-check (its contents cannot be verified)".into(),
            ExtraBytes { .. } => "something was appended to the snapshot; copy it again from the original".into(),
        }
    }

    /// Converts into an `anyhow` error carrying [`SnapshotError::hint`].
    pub fn into_anyhow(self) -> anyhow::Error {
        let hint = self.hint();
        anyhow::Error::new(self).context(crate::error::Hint(hint))
    }
}

/// What `etcdutl snapshot status -w json` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdutlStatus {
    /// The latest revision in the snapshot (R).
    pub revision: i64,
    /// Key count (its meaning differs between 3.5 and 3.6).
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    /// etcdutl's CRC-32C over every bucket.
    pub hash: u32,
    /// `pgid × pageSize`.
    #[serde(rename = "totalSize")]
    pub total_size: u64,
    /// The storage version (3.6+), if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The etcdutl that produced this (`path (version)`), filled in by this crate.
    #[serde(default)]
    pub tool: String,
}

/// How to verify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept a file without the SHA-256 trailer (a raw `member/snap/db` copy), checking the
    /// bbolt structure only. A trailer that is present is always checked.
    pub skip_hash_check: bool,
    /// The etcdutl to ask for `snapshot status`; `None` skips it.
    pub etcdutl: Option<PathBuf>,
}

/// What was found out about a snapshot file. Facts that could not be established are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotReport {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// SHA-256 of the whole file (hex): the identity used to prove copies are identical.
    pub sha256: Option<String>,
    /// Whether the file ends with a SHA-256 trailer.
    pub trailer_present: Option<bool>,
    /// Whether the trailer matches the content.
    pub trailer_ok: Option<bool>,
    /// bbolt page size.
    pub page_size: Option<u32>,
    /// bbolt high-water mark (pages) of the newer meta page.
    pub pgid: Option<u64>,
    /// Transaction id of the newer meta page.
    pub txid: Option<u64>,
    /// `pgid × pageSize`: the database part of the file.
    pub body_size: Option<u64>,
    /// True when a raw copy was accepted with `skip_hash_check`: structure checked, contents not.
    pub structure_only: bool,
    /// `etcdutl snapshot status`, when it ran.
    pub status: Option<EtcdutlStatus>,
    /// Why there is no status, or what went wrong getting it.
    pub status_note: Option<String>,
    /// Why the file is refused; `None` when it is acceptable.
    #[serde(skip)]
    pub problem: Option<SnapshotError>,
}

impl SnapshotReport {
    fn new(path: &Path) -> Self {
        SnapshotReport {
            path: path.to_path_buf(),
            size: None,
            sha256: None,
            trailer_present: None,
            trailer_ok: None,
            page_size: None,
            pgid: None,
            txid: None,
            body_size: None,
            structure_only: false,
            status: None,
            status_note: None,
            problem: None,
        }
    }

    /// True when the snapshot is acceptable.
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// Verifies a snapshot; `Ok` only when it is acceptable.
pub fn verify(path: &Path, opts: &VerifyOptions) -> Result<SnapshotReport, SnapshotError> {
    let report = examine(path, opts);
    match &report.problem {
        Some(p) => Err(p.clone()),
        None => Ok(report),
    }
}

/// Examines a snapshot and reports everything found, including why it is refused.
pub fn examine(path: &Path, opts: &VerifyOptions) -> SnapshotReport {
    let mut report = SnapshotReport::new(path);
    if let Err(e) = check(path, opts, &mut report) {
        report.problem = Some(e);
        return report;
    }
    match &opts.etcdutl {
        None => {
            report.status_note = Some("no etcdutl found; revision and key count unknown".into())
        }
        Some(tool) => match etcdutl_status(tool, path) {
            Ok(s) => report.status = Some(s),
            Err(StatusError::Damaged(msg)) => {
                report.problem = Some(SnapshotError::StatusFailed(msg))
            }
            Err(StatusError::Unavailable(msg)) => report.status_note = Some(msg),
        },
    }
    report
}

fn io_err(e: std::io::Error) -> SnapshotError {
    SnapshotError::Io(e.to_string())
}

fn check(path: &Path, opts: &VerifyOptions, r: &mut SnapshotReport) -> Result<(), SnapshotError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SnapshotError::NotFound,
        _ => io_err(e),
    })?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(SnapshotError::NotAFile(what.into()));
    }
    let size = meta.len();
    r.size = Some(size);
    if size == 0 {
        return Err(SnapshotError::Empty);
    }
    let mut file = File::open(path).map_err(io_err)?;
    let head_len = usize::try_from(size.min(4096)).unwrap_or(4096);
    let mut head = vec![0u8; head_len];
    file.read_exact(&mut head).map_err(io_err)?;
    if looks_like_text(&head) {
        return Err(SnapshotError::TextFile);
    }
    if head.len() < META_LEN {
        return Err(SnapshotError::TooShort {
            size,
            page_size: 512,
        });
    }
    let meta0 = Meta::parse(&head[..META_LEN]);
    meta0.validate(0)?;
    let page_size = u64::from(meta0.page_size);
    r.page_size = Some(meta0.page_size);
    if size < 2 * page_size {
        return Err(SnapshotError::TooShort { size, page_size });
    }
    let mut page1 = [0u8; META_LEN];
    file.seek(SeekFrom::Start(page_size)).map_err(io_err)?;
    file.read_exact(&mut page1).map_err(io_err)?;
    let meta1 = Meta::parse(&page1);
    meta1.validate(1)?;
    if meta1.page_size != meta0.page_size {
        return Err(SnapshotError::BadMeta {
            page: 1,
            reason: format!(
                "page size {} differs from meta page 0's {}",
                meta1.page_size, meta0.page_size
            ),
        });
    }
    let newer = if meta1.txid > meta0.txid {
        &meta1
    } else {
        &meta0
    };
    r.pgid = Some(newer.pgid);
    r.txid = Some(newer.txid);
    let body = newer
        .pgid
        .checked_mul(page_size)
        .ok_or_else(|| SnapshotError::BadMeta {
            page: u8::from(newer.page_id == 1),
            reason: format!("high-water mark {} pages is impossible", newer.pgid),
        })?;
    r.body_size = Some(body);
    let expected = body.saturating_add(TRAILER_LEN);

    if size == expected {
        r.trailer_present = Some(true);
        let h = hash_file(&mut file, size, true)?;
        r.sha256 = Some(hex::encode(h.whole));
        let ok = h.trailer.as_slice() == h.body.as_slice();
        r.trailer_ok = Some(ok);
        if !ok {
            return Err(SnapshotError::HashMismatch {
                expected: hex::encode(h.trailer),
                actual: hex::encode(h.body),
            });
        }
        return Ok(());
    }
    if size >= body && (size - body) % page_size == 0 {
        r.trailer_present = Some(false);
        if !opts.skip_hash_check {
            return Err(SnapshotError::NoTrailer { size, body });
        }
        let h = hash_file(&mut file, size, false)?;
        r.sha256 = Some(hex::encode(h.whole));
        r.structure_only = true;
        return Ok(());
    }
    if size < expected {
        return Err(SnapshotError::Truncated {
            size,
            expected,
            body,
            missing: expected - size,
        });
    }
    Err(SnapshotError::ExtraBytes {
        size,
        expected,
        body,
        extra: size - expected,
    })
}

/// True when `head` reads as text: valid UTF-8 (a character cut at the end is fine), no NUL,
/// only printable characters and whitespace.
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

/// The results of one pass over a snapshot file.
struct Hashes {
    /// SHA-256 of the whole file.
    whole: [u8; 32],
    /// SHA-256 of everything before the trailer.
    body: [u8; 32],
    /// The last 32 bytes.
    trailer: Vec<u8>,
}

/// Streams the file once: SHA-256 of all of it, SHA-256 of `[0, size-32)` and the last 32
/// bytes (the latter two only when `with_trailer`).
fn hash_file(file: &mut File, size: u64, with_trailer: bool) -> Result<Hashes, SnapshotError> {
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let body_len = if with_trailer {
        size - TRAILER_LEN
    } else {
        size
    };
    let mut whole = Sha256::new();
    let mut body = Sha256::new();
    let mut trailer = Vec::with_capacity(32);
    let mut buf = vec![0u8; BUF_LEN];
    let mut pos = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        whole.update(chunk);
        let in_body = usize::try_from(body_len.saturating_sub(pos).min(n as u64)).unwrap_or(n);
        body.update(&chunk[..in_body]);
        trailer.extend_from_slice(&chunk[in_body..]);
        pos += n as u64;
    }
    if pos != size {
        return Err(SnapshotError::Io(format!(
            "the file changed while it was read ({size} bytes at the start, {pos} read)"
        )));
    }
    Ok(Hashes {
        whole: whole.finalize().into(),
        body: body.finalize().into(),
        trailer,
    })
}

/// SHA-256 of a whole file (hex), streaming with a constant-size buffer.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A bbolt meta page, read little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    page_id: u64,
    flags: u16,
    magic: u32,
    version: u32,
    page_size: u32,
    pgid: u64,
    txid: u64,
    checksum: u64,
    computed: u64,
}

impl Meta {
    /// Parses the first 80 bytes of a meta page.
    fn parse(p: &[u8]) -> Meta {
        let u16_at = |o: usize| u16::from_le_bytes([p[o], p[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[o..o + 8]);
            u64::from_le_bytes(b)
        };
        Meta {
            page_id: u64_at(0),
            flags: u16_at(8),
            magic: u32_at(16),
            version: u32_at(20),
            page_size: u32_at(24),
            pgid: u64_at(56),
            txid: u64_at(64),
            checksum: u64_at(72),
            computed: fnv1a64(&p[16..72]),
        }
    }

    fn validate(&self, page: u8) -> Result<(), SnapshotError> {
        if self.magic != BBOLT_MAGIC {
            if self.magic.swap_bytes() == BBOLT_MAGIC {
                return Err(SnapshotError::BigEndian);
            }
            if page == 0 {
                return Err(SnapshotError::BadMagic { found: self.magic });
            }
            return Err(SnapshotError::BadMeta {
                page,
                reason: format!("bad magic {:#010x}", self.magic),
            });
        }
        if self.version != BBOLT_VERSION {
            return Err(SnapshotError::BadMeta {
                page,
                reason: format!("format version {} (expected {BBOLT_VERSION})", self.version),
            });
        }
        if self.checksum != self.computed {
            return Err(SnapshotError::MetaChecksum {
                page,
                stored: self.checksum,
                computed: self.computed,
            });
        }
        if self.page_size < 512 || !self.page_size.is_power_of_two() {
            return Err(SnapshotError::BadMeta {
                page,
                reason: format!("page size {} is not a power of two >= 512", self.page_size),
            });
        }
        if self.flags & META_PAGE_FLAG == 0 {
            return Err(SnapshotError::BadMeta {
                page,
                reason: format!("page flags {:#06x} lack the meta flag 0x04", self.flags),
            });
        }
        if self.pgid < 2 {
            return Err(SnapshotError::BadMeta {
                page,
                reason: format!("high-water mark {} is below the two meta pages", self.pgid),
            });
        }
        Ok(())
    }
}

/// 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The etcdutl to use for `snapshot status`: `etcdutl` on `PATH`, else the copy installed by
/// `scripts/setup.sh` under `$ETCD_RECOVER_CACHE` or `~/.cache/etcd-recover`.
pub fn find_etcdutl() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcdutl"))
            .find(|p| is_executable(p))
    });
    if on_path.is_some() {
        return on_path;
    }
    let cache = std::env::var_os("ETCD_RECOVER_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache/etcd-recover")))?;
    let candidate = cache.join("etcd-3.5.1/etcdutl");
    is_executable(&candidate).then_some(candidate)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

enum StatusError {
    /// etcdutl ran and says the database is damaged.
    Damaged(String),
    /// etcdutl could not be used; not a verdict on the snapshot.
    Unavailable(String),
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const STATUS_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `etcdutl snapshot status -w json` on a private copy of `path`.
fn etcdutl_status(tool: &Path, path: &Path) -> Result<EtcdutlStatus, StatusError> {
    let unavailable = |what: String| StatusError::Unavailable(what);
    let version = Command::new(tool)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable(format!("cannot run `{}`: {e}", tool.display())))?;
    let version = crate::etcd::version::EtcdVersion::from_tool_output(&String::from_utf8_lossy(
        &version.stdout,
    ))
    .map(|(_, v)| v.to_string())
    .unwrap_or_else(|_| "unknown version".into());

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "etcd-recover-status-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir(&dir)
        .map_err(|e| unavailable(format!("cannot create `{}`: {e}", dir.display())))?;
    let dir = TempDir(dir);
    let copy = dir.0.join("snapshot.db");
    std::fs::copy(path, &copy).map_err(|e| {
        unavailable(format!(
            "cannot copy the snapshot to `{}` for etcdutl: {e}",
            dir.0.display()
        ))
    })?;
    let mut child = Command::new(tool)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&copy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| unavailable(format!("cannot run `{}`: {e}", tool.display())))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > STATUS_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(unavailable(format!(
                    "`etcdutl snapshot status` took longer than {}s; gave up",
                    STATUS_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(unavailable(format!("waiting for etcdutl: {e}"))),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| unavailable(format!("reading etcdutl's output: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        if stderr.contains("integrity check failed") {
            return Err(StatusError::Damaged(stderr));
        }
        return Err(unavailable(format!(
            "`etcdutl snapshot status` failed ({}): {stderr}",
            out.status
        )));
    }
    let mut status: EtcdutlStatus = serde_json::from_slice(&out.stdout).map_err(|e| {
        unavailable(format!(
            "cannot read etcdutl's JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    })?;
    status.tool = format!("{} ({version})", tool.display());
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid two-meta-page bbolt image with `pages` pages of 4096 bytes.
    fn image(pages: u64) -> Vec<u8> {
        let ps = 4096usize;
        let mut buf = vec![0u8; ps * pages as usize];
        for (i, txid) in [(0usize, 5u64), (1, 4)] {
            let p = &mut buf[i * ps..i * ps + ps];
            p[0..8].copy_from_slice(&(i as u64).to_le_bytes());
            p[8..10].copy_from_slice(&META_PAGE_FLAG.to_le_bytes());
            p[16..20].copy_from_slice(&BBOLT_MAGIC.to_le_bytes());
            p[20..24].copy_from_slice(&BBOLT_VERSION.to_le_bytes());
            p[24..28].copy_from_slice(&(ps as u32).to_le_bytes());
            p[56..64].copy_from_slice(&pages.to_le_bytes());
            p[64..72].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv1a64(&p[16..72]);
            p[72..80].copy_from_slice(&sum.to_le_bytes());
        }
        buf
    }

    fn with_trailer(mut body: Vec<u8>) -> Vec<u8> {
        let h: [u8; 32] = Sha256::digest(&body).into();
        body.extend_from_slice(&h);
        body
    }

    fn run(bytes: &[u8], skip: bool) -> SnapshotReport {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        std::fs::write(&p, bytes).unwrap();
        examine(
            &p,
            &VerifyOptions {
                skip_hash_check: skip,
                etcdutl: None,
            },
        )
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn synthetic_snapshot_passes_and_reports_facts() {
        let bytes = with_trailer(image(4));
        let r = run(&bytes, false);
        assert!(r.is_valid(), "{:?}", r.problem);
        assert_eq!(r.page_size, Some(4096));
        assert_eq!(r.pgid, Some(4));
        assert_eq!(r.txid, Some(5));
        assert_eq!(r.trailer_ok, Some(true));
        assert_eq!(
            r.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&bytes)).as_str())
        );
    }

    #[test]
    fn each_damage_has_its_own_error() {
        let good = with_trailer(image(4));
        let mut flipped = good.clone();
        flipped[3 * 4096 + 7] ^= 0x10;
        assert!(matches!(
            run(&flipped, false).problem,
            Some(SnapshotError::HashMismatch { .. })
        ));
        assert!(matches!(
            run(&good[..good.len() - 1], false).problem,
            Some(SnapshotError::Truncated { missing: 1, .. })
        ));
        let mut extra = good.clone();
        extra.extend_from_slice(&[0u8; 512]);
        assert!(matches!(
            run(&extra, false).problem,
            Some(SnapshotError::ExtraBytes { extra: 512, .. })
        ));
        let raw = image(4);
        assert!(matches!(
            run(&raw, false).problem,
            Some(SnapshotError::NoTrailer { .. })
        ));
        let r = run(&raw, true);
        assert!(r.is_valid() && r.structure_only);
        let mut meta = good.clone();
        meta[40] ^= 1;
        assert!(matches!(
            run(&meta, false).problem,
            Some(SnapshotError::MetaChecksum { page: 0, .. })
        ));
        let mut meta1 = good.clone();
        meta1[4096 + 40] ^= 1;
        assert!(matches!(
            run(&meta1, false).problem,
            Some(SnapshotError::MetaChecksum { page: 1, .. })
        ));
        assert_eq!(run(b"", false).problem, Some(SnapshotError::Empty));
        assert_eq!(
            run(b"hello: world\n", false).problem,
            Some(SnapshotError::TextFile)
        );
        let mut be = good.clone();
        be[16..20].copy_from_slice(&BBOLT_MAGIC.to_be_bytes());
        assert_eq!(run(&be, false).problem, Some(SnapshotError::BigEndian));
        let junk: Vec<u8> = (0..4096u32 * 3 + 32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80)
            .collect();
        assert!(matches!(
            run(&junk, false).problem,
            Some(SnapshotError::BadMagic { .. })
        ));
    }

    #[test]
    fn sha256_file_streams_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(BUF_LEN * 2 + 17)).map(|i| i as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), hex::encode(Sha256::digest(&data)));
    }
}
