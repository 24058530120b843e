//! Typed operations on a node, built on [`Remote`]: stat, hash, move, copy, wait for listeners
//! to close, find processes using a directory. Every command line is built here or in the step
//! code from argv, never by string formatting of user data into shell text.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::remote::{Cmd, Remote, RemoteError};

/// What `stat` says about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Device number of the filesystem holding it.
    pub dev: u64,
    /// True for a directory.
    pub is_dir: bool,
}

fn parse_err(node: &dyn Remote, what: &str, text: &str) -> RemoteError {
    RemoteError::Other {
        node: node.node().to_string(),
        reason: format!("unexpected output from {what}: {:?}", text.trim()),
    }
}

/// `stat` of a path; `None` when it does not exist.
pub async fn stat(node: &dyn Remote, path: &str) -> Result<Option<Stat>, RemoteError> {
    let out = node
        .run(&Cmd::script(
            r#"if [ -e "$1" ] || [ -L "$1" ]; then stat -L -c '%s %a %u %g %d %F' -- "$1"; else echo absent; fi"#,
            [path],
        ))
        .await?;
    let text = out.stdout_text();
    let line = text.trim();
    if line == "absent" {
        return Ok(None);
    }
    let mut it = line.splitn(6, ' ');
    let mut next = || it.next().ok_or_else(|| parse_err(node, "stat", line));
    let size = next()?.parse().map_err(|_| parse_err(node, "stat", line))?;
    let mode = u32::from_str_radix(next()?, 8).map_err(|_| parse_err(node, "stat", line))?;
    let uid = next()?.parse().map_err(|_| parse_err(node, "stat", line))?;
    let gid = next()?.parse().map_err(|_| parse_err(node, "stat", line))?;
    let dev = next()?.parse().map_err(|_| parse_err(node, "stat", line))?;
    let kind = next()?;
    Ok(Some(Stat {
        size,
        mode,
        uid,
        gid,
        dev,
        is_dir: kind == "directory",
    }))
}

/// True when the path exists.
pub async fn exists(node: &dyn Remote, path: &str) -> Result<bool, RemoteError> {
    Ok(stat(node, path).await?.is_some())
}

/// Hex SHA-256 of a file; `None` when it does not exist.
pub async fn sha256(node: &dyn Remote, path: &str) -> Result<Option<String>, RemoteError> {
    let out = node
        .run(
            &Cmd::script(
                r#"if [ -f "$1" ]; then sha256sum -- "$1"; else echo absent; fi"#,
                [path],
            )
            .timeout(Duration::from_secs(1800)),
        )
        .await?;
    let text = out.stdout_text();
    let first = text.split_whitespace().next().unwrap_or_default();
    if first == "absent" {
        return Ok(None);
    }
    if first.len() != 64 || !first.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(parse_err(node, "sha256sum", &text));
    }
    Ok(Some(first.to_ascii_lowercase()))
}

/// Renames `from` to `to` (never overwriting), then checks the outcome.
pub async fn move_file(node: &dyn Remote, from: &str, to: &str) -> Result<(), RemoteError> {
    node.run(&Cmd::script(
        r#"set -eu
if [ -e "$2" ]; then echo "refusing to overwrite $2" >&2; exit 3; fi
mv -T -- "$1" "$2"
sync -- "$(dirname -- "$1")" "$(dirname -- "$2")""#,
        [from, to],
    ))
    .await?;
    Ok(())
}

/// Removes a file this tool created (staged snapshot, lock). Absent is fine.
pub async fn remove_own_file(node: &dyn Remote, path: &str) -> Result<(), RemoteError> {
    node.run(&Cmd::new(["rm", "-f", "--", path])).await?;
    Ok(())
}

/// What an idempotent file operation found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It made the change.
    Done,
    /// The change was already in place.
    AlreadyDone,
}

fn applied(
    node: &dyn Remote,
    what: &str,
    out: &crate::remote::Output,
    paths: (&str, &str),
) -> Result<Applied, RemoteError> {
    let (a, b) = paths;
    let reason = match out.status {
        crate::remote::ExitStatus::Code(0) => return Ok(Applied::Done),
        crate::remote::ExitStatus::Code(10) => return Ok(Applied::AlreadyDone),
        crate::remote::ExitStatus::Code(3) => format!(
            "both `{a}` and `{b}` exist; refusing to overwrite either (the kubelet would run both if both were in the manifests directory)"
        ),
        crate::remote::ExitStatus::Code(4) => format!("neither `{a}` nor `{b}` exists"),
        crate::remote::ExitStatus::Code(5) => format!("`{a}` exists and is not a directory"),
        _ => format!("{what} failed ({}): {}", out.status, out.stderr_text()),
    };
    Err(RemoteError::Other {
        node: node.node().to_string(),
        reason,
    })
}

/// Renames `from` to `to` unless that was already done, in one round trip. Never overwrites.
pub async fn move_once(node: &dyn Remote, from: &str, to: &str) -> Result<Applied, RemoteError> {
    let out = node
        .exec(&Cmd::script(
            r#"if [ -e "$2" ]; then if [ -e "$1" ]; then exit 3; fi; exit 10; fi
[ -e "$1" ] || exit 4
mv -T -- "$1" "$2" || exit 1
sync -- "$(dirname -- "$1")" "$(dirname -- "$2")""#,
            [from, to],
        ))
        .await?;
    applied(node, "move", &out, (from, to))
}

/// Copies `from` to `to` (mode, owner, times) unless an identical copy exists, in one round
/// trip. Never overwrites a different file.
pub async fn copy_once(node: &dyn Remote, from: &str, to: &str) -> Result<Applied, RemoteError> {
    let out = node
        .exec(&Cmd::script(
            r#"if [ -e "$2" ]; then
  if [ ! -e "$1" ] || cmp -s -- "$1" "$2"; then exit 10; fi
  exit 3
fi
[ -e "$1" ] || exit 4
cp -p -- "$1" "$2" || exit 1
sync -- "$2""#,
            [from, to],
        ))
        .await?;
    applied(node, "copy", &out, (from, to))
}

/// `mkdir -p` unless the directory exists, in one round trip.
pub async fn make_dir_once(
    node: &dyn Remote,
    path: &str,
    mode: u32,
) -> Result<Applied, RemoteError> {
    let out = node
        .exec(&Cmd::script(
            r#"if [ -d "$1" ]; then exit 10; fi
[ -e "$1" ] && exit 5
mkdir -p -m "$2" -- "$1""#,
            [path.to_string(), format!("{mode:o}")],
        ))
        .await?;
    applied(node, "mkdir", &out, (path, path))
}

/// What holds a pod's resources on a node, in one round trip: TCP listeners, pids using
/// directories, and running containers per crictl.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    /// Every TCP listener.
    pub listeners: Vec<Listener>,
    /// Directory -> pids with a file, cwd or root in it.
    pub users: Vec<(String, Vec<u32>)>,
    /// Running container ids named like the pod (crictl, where installed).
    pub containers: Vec<String>,
}

/// Shell fragment: for every directory in `"$@"`, prints `P <pid> <dir>` for each process whose
/// working directory or an open file is inside it. One `find` over `/proc` (a loop with one
/// `readlink` per file descriptor costs thousands of processes per poll on a busy node); the
/// loop stays as the fallback where `find` is missing.
const USERS_OF_DIRS: &str = r#"for d in "$@"; do
  d=${d%/}
  if command -v find >/dev/null 2>&1; then
    pat=$(printf '%s' "$d" | sed 's/[][*?\\]/\\&/g')
    find /proc/[0-9]*/cwd /proc/[0-9]*/fd -maxdepth 1 \( -lname "$pat" -o -lname "$pat/*" \) 2>/dev/null |
      while IFS=/ read -r _ _ p _; do echo "P $p $d"; done | sort -u
  else
    for p in /proc/[0-9]*; do
      for f in "$p"/cwd "$p"/fd/*; do
        l=$(readlink "$f" 2>/dev/null) || continue
        case "$l" in "$d"|"$d"/*) echo "P ${p#/proc/} $d"; break;; esac
      done
    done
  fi
done"#;

/// Looks at listeners, directory users and containers in one round trip.
pub async fn occupancy(
    node: &dyn Remote,
    pod: &str,
    dirs: &[String],
) -> Result<Occupancy, RemoteError> {
    let mut args = vec![pod.to_string()];
    args.extend(dirs.iter().cloned());
    let out = node
        .run(&Cmd::script(
            &format!(
                r#"pod=$1; shift
ss -Hltn | sed 's/^/L /'
{USERS_OF_DIRS}
if command -v crictl >/dev/null 2>&1; then
  crictl ps -q --state running --name "^$pod\$" --label io.kubernetes.pod.namespace=kube-system 2>/dev/null | sed 's/^/C /'
fi
exit 0"#
            ),
            args,
        ))
        .await?;
    let text = out.stdout_text();
    let mut occ = Occupancy::default();
    let listen: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("L "))
        .map(|l| format!("{l}\n"))
        .collect();
    occ.listeners = parse_ss(&listen);
    let mut users: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("P ")) {
        if let Some((pid, dir)) = l.split_once(' ') {
            if let Ok(pid) = pid.parse() {
                users.entry(dir.to_string()).or_default().push(pid);
            }
        }
    }
    for pids in users.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    occ.users = users.into_iter().collect();
    occ.containers = text
        .lines()
        .filter_map(|l| l.strip_prefix("C "))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok(occ)
}

/// A TCP listen address as `ss` shows it, e.g. `127.0.0.11:2379` or `*:22` or `[::1]:2379`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// Address part (`*`, `0.0.0.0`, `[::]` for wildcards).
    pub addr: String,
    /// Port.
    pub port: u16,
}

impl Listener {
    /// True when this listener would accept connections for `host:port`.
    pub fn serves(&self, host: &str, port: u16) -> bool {
        if self.port != port {
            return false;
        }
        let a = self.addr.trim_start_matches('[').trim_end_matches(']');
        let h = host.trim_start_matches('[').trim_end_matches(']');
        matches!(a, "*" | "0.0.0.0" | "::")
            || a == h
            || (h == "localhost" && (a == "127.0.0.1" || a == "::1"))
    }
}

/// Parses `ss -Hltn` output (state, recv-q, send-q, local, peer).
pub fn parse_ss(text: &str) -> Vec<Listener> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = cols.get(3) else { continue };
        let Some((addr, port)) = local.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        // `ss` may print `%lo` interface scopes: 127.0.0.53%lo:53.
        let addr = addr.split('%').next().unwrap_or(addr).to_string();
        out.insert(Listener { addr, port });
    }
    out.into_iter().collect()
}

/// Every TCP listener on the node.
pub async fn listeners(node: &dyn Remote) -> Result<Vec<Listener>, RemoteError> {
    let out = node.run(&Cmd::new(["ss", "-Hltn"])).await?;
    Ok(parse_ss(&out.stdout_text()))
}

/// Pids of processes with an open file, working directory or root under `dir`.
pub async fn processes_using(node: &dyn Remote, dir: &str) -> Result<Vec<u32>, RemoteError> {
    let out = node
        .run(&Cmd::script(&format!("{USERS_OF_DIRS}\nexit 0"), [dir]))
        .await?;
    let mut pids: Vec<u32> = out
        .stdout_text()
        .lines()
        .filter_map(|l| l.strip_prefix("P "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Free bytes on the filesystem that holds `path` (or its nearest existing parent).
pub async fn free_bytes(node: &dyn Remote, path: &str) -> Result<u64, RemoteError> {
    let out = node
        .run(&Cmd::script(
            r#"p=$1
while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done
df -P -B1 -- "$p" | tail -n 1"#,
            [path],
        ))
        .await?;
    let text = out.stdout_text();
    text.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| parse_err(node, "df", &text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localhost::Localhost;

    #[test]
    fn ss_output_is_parsed_with_scopes_and_ipv6() {
        let text = "LISTEN 0 4096 127.0.0.11:2379 0.0.0.0:*\nLISTEN 0 128 *:22 *:*\nLISTEN 0 128 [::1]:2381 [::]:*\nLISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*\n";
        let l = parse_ss(text);
        assert!(l.iter().any(|x| x.serves("127.0.0.11", 2379)));
        assert!(!l.iter().any(|x| x.serves("127.0.0.12", 2379)));
        assert!(l.iter().any(|x| x.serves("10.0.0.1", 22)));
        assert!(l.iter().any(|x| x.serves("::1", 2381)));
        assert!(l.iter().any(|x| x.serves("127.0.0.53", 53)));
    }

    #[tokio::test]
    async fn file_operations_on_a_local_node() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let node = Localhost::new("cp-1");
        let a = format!("{d}/a.yaml");
        let b = format!("{d}/moved/a.yaml");
        std::fs::write(&a, "kind: Pod\n").unwrap();
        assert_eq!(stat(&node, &a).await.unwrap().unwrap().size, 10);
        assert!(stat(&node, &b).await.unwrap().is_none());
        make_dir_once(&node, &format!("{d}/moved"), 0o700)
            .await
            .unwrap();
        let st = stat(&node, &format!("{d}/moved")).await.unwrap().unwrap();
        assert!(st.is_dir);
        assert_eq!(st.mode, 0o700);
        let before = sha256(&node, &a).await.unwrap().unwrap();
        move_file(&node, &a, &b).await.unwrap();
        assert!(!exists(&node, &a).await.unwrap());
        assert_eq!(sha256(&node, &b).await.unwrap().unwrap(), before);
        // Never overwrites.
        std::fs::write(&a, "other\n").unwrap();
        let err = move_file(&node, &a, &b).await.unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        copy_once(&node, &b, &format!("{d}/copy.yaml"))
            .await
            .unwrap();
        assert_eq!(
            sha256(&node, &format!("{d}/copy.yaml"))
                .await
                .unwrap()
                .unwrap(),
            before
        );
        assert!(free_bytes(&node, &format!("{d}/not/yet")).await.unwrap() > 0);
    }

    #[tokio::test]
    async fn atomic_write_keeps_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let node = Localhost::new("cp-1");
        let p = format!("{d}/etcd.yaml");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let opts = crate::remote::WriteOpts {
            temp_dir: Some(d.to_string()),
            mode: None,
        };
        node.write_file_atomic(&p, b"new\n", &opts).await.unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(stat(&node, &p).await.unwrap().unwrap().mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let fresh = format!("{d}/fresh");
        let opts = crate::remote::WriteOpts {
            temp_dir: None,
            mode: Some(0o600),
        };
        node.write_file_atomic(&fresh, b"x", &opts).await.unwrap();
        assert_eq!(stat(&node, &fresh).await.unwrap().unwrap().mode, 0o600);
    }

    #[tokio::test]
    async fn processes_using_finds_an_open_file_inside_but_not_a_sibling_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        // A name with glob characters, and a sibling that shares its prefix.
        let d = base.join("etcd[1]*");
        let sibling = base.join("etcd[1]*-old");
        std::fs::create_dir_all(d.join("member")).unwrap();
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(d.join("member/db"), b"x").unwrap();
        std::fs::write(sibling.join("db"), b"x").unwrap();
        let spawn = |file: std::path::PathBuf| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg("exec 3<\"$1\"; exec sleep 30")
                .arg("sh")
                .arg(file)
                .current_dir(&base)
                .spawn()
                .unwrap()
        };
        let mut inside = spawn(d.join("member/db"));
        let mut beside = spawn(sibling.join("db"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let node = Localhost::new("cp-1");
        let pids = processes_using(&node, d.to_str().unwrap()).await.unwrap();
        for c in [&mut inside, &mut beside] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(pids, vec![inside.id()]);
    }

    #[tokio::test]
    async fn processes_using_finds_a_process_with_cwd_inside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&d)
            .spawn()
            .unwrap();
        let node = Localhost::new("cp-1");
        let pids = processes_using(&node, d.to_str().unwrap()).await.unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(pids.contains(&child.id()), "{pids:?}");
    }
}
