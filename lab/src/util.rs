//! Small helpers shared by the subcommands: files, processes, time, logging.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable set on every process the lab starts (sshd, runners, pods). Its value
/// is the lab directory; `down` uses it to find stragglers that no pid file names.
pub const MARKER_ENV: &str = "ETCD_RECOVER_LAB_DIR";
/// Environment variable naming the node a runner or pod belongs to.
pub const NODE_ENV: &str = "ETCD_RECOVER_LAB_NODE";

/// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename) with
/// the given mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Writes a file (not atomically) with the given mode, creating parent directories.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    write_atomic(path, data, mode)
}

/// `mkdir -p`.
pub fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create directory {}", path.display()))
}

/// `chmod`.
pub fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {:o} {}", mode, path.display()))
}

/// Reads a whole file as text, naming it in the error.
pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn rfc3339_now() -> String {
    rfc3339(unix_millis())
}

/// Formats milliseconds since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Prints a timestamped log line to stderr (daemons have stderr redirected to their log).
pub fn log(msg: impl AsRef<str>) {
    eprintln!("{} {}", rfc3339_now(), msg.as_ref());
}

/// The last `n` lines of a file, or a note that it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A process identified by pid and kernel start time, so that a recycled pid is never
/// mistaken for the process the lab started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
}

impl ProcId {
    /// Identifies a running process by pid (reads its start time now).
    pub fn of(pid: i32) -> Option<ProcId> {
        proc_stat(pid).and_then(|(state, start_time)| {
            (state != 'Z' && state != 'X').then_some(ProcId { pid, start_time })
        })
    }

    /// True while the very same process is running (not a zombie, pid not recycled).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, st)) if st == self.start_time && state != 'Z' && state != 'X')
    }
}

/// State letter and start time of a process from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Sends `sig` to one process, ignoring "no such process".
pub fn signal_pid(pid: i32, sig: Signal) {
    if pid > 0 {
        let _ = signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Sends `sig` to a whole process group, ignoring "no such process".
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 1 {
        let _ = signal::killpg(Pid::from_raw(pgid), sig);
    }
}

/// Lists every process whose environment carries the lab marker for `dir`.
pub fn marked_processes(dir: &Path) -> Vec<i32> {
    let needle = format!("{MARKER_ENV}={}", dir.display());
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            if let Some((state, _)) = proc_stat(pid) {
                if state != 'Z' && state != 'X' {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// Terminates processes: SIGTERM (to the group when `group` is set), waits up to `grace`,
/// then SIGKILL. Returns once all are gone or after a final short wait.
pub fn terminate(procs: &[(ProcId, bool)], grace: Duration) {
    let live: Vec<(ProcId, bool)> = procs.iter().copied().filter(|(p, _)| p.alive()).collect();
    if live.is_empty() {
        return;
    }
    for (p, group) in &live {
        if *group {
            signal_group(p.pid, Signal::SIGTERM);
        }
        signal_pid(p.pid, Signal::SIGTERM);
    }
    if wait_gone(&live, grace) {
        return;
    }
    for (p, group) in &live {
        if p.alive() {
            if *group {
                signal_group(p.pid, Signal::SIGKILL);
            }
            signal_pid(p.pid, Signal::SIGKILL);
        }
    }
    wait_gone(&live, Duration::from_secs(5));
}

/// Waits until none of the processes is alive; true if they all went away in time.
pub fn wait_gone(procs: &[(ProcId, bool)], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if procs.iter().all(|(p, _)| !p.alive()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses a Kubernetes-style duration such as `1s`, `200ms`, `1m30s`, `20s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let secs = match unit {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1000.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

/// Formats a duration in the `1s` / `250ms` style used by KubeletConfiguration.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Absolute form of a path without resolving symlinks (relative to the current directory).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(20)), "20s");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn own_process_is_alive() {
        let me = ProcId::of(std::process::id() as i32).expect("own stat");
        assert!(me.alive());
        let recycled = ProcId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.alive());
    }
}
