//! The read-only round trips behind the facts: one script reads the kubelet's config, every
//! file of the manifests directory, the lock and the restore tool's version; another measures
//! the filesystem around the data directory. Contents travel base64-encoded.

use std::time::Duration;

use crate::etcd::version::{EtcdVersion, RestoreTool, RestoreToolKind};
use crate::remote::{Cmd, Remote};

/// What the first discovery round trip brings back.
pub(super) struct Gathered {
    pub(super) kubelet_config: Option<Vec<u8>>,
    pub(super) lock: Option<Vec<u8>>,
    pub(super) dir_exists: bool,
    pub(super) files: Vec<(String, Vec<u8>)>,
    pub(super) tool: Result<RestoreTool, String>,
}

/// Reads the kubelet config, every non-dot file of the manifests directory, the lock, and the
/// restore tool's path and version, in one round trip. Contents travel base64-encoded.
pub(super) async fn gather(
    r: &dyn Remote,
    kubelet_config: &str,
    dir: &str,
    lock: &str,
    tool: &str,
) -> anyhow::Result<Gathered> {
    const SCRIPT: &str = r#"b64() { base64 -w0 -- "$1" 2>/dev/null || printf -; echo; }
printf 'K '; if [ -f "$1" ]; then b64 "$1"; else echo -; fi
printf 'L '; if [ -f "$3" ]; then b64 "$3"; else echo -; fi
if [ -n "$2" ] && [ -d "$2" ]; then
  echo 'D ok'
  for f in "$2"/*; do
    n=${f##*/}
    case "$n" in .*) continue;; esac
    [ -f "$f" ] || continue
    printf 'F %s ' "$(printf %s "$n" | base64 -w0)"; b64 "$f"
  done
else
  echo 'D missing'
fi
t=$4
if [ -z "$t" ]; then t=$(command -v etcdutl || command -v etcdctl || true); fi
if [ -z "$t" ]; then echo 'T -'; exit 0; fi
printf 'T %s
' "$(printf %s "$t" | base64 -w0)"
out=$(ETCDCTL_API=3 timeout 20 "$t" version 2>&1); rc=$?
printf 'V %s %s
' "$rc" "$(printf %s "$out" | base64 -w0)"
"#;
    let out = r
        .run(
            &Cmd::script(SCRIPT, [kubelet_config, dir, lock, tool])
                .timeout(Duration::from_secs(60)),
        )
        .await?;
    let text = out.stdout_text();
    let decode = |v: &str| -> Option<Vec<u8>> {
        if v == "-" {
            None
        } else {
            data_encoding::BASE64.decode(v.trim().as_bytes()).ok()
        }
    };
    let mut g = Gathered {
        kubelet_config: None,
        lock: None,
        dir_exists: false,
        files: Vec::new(),
        tool: Err("neither etcdutl nor etcdctl is on the PATH".into()),
    };
    let mut tool_path = None;
    for line in text.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "K" => g.kubelet_config = decode(rest),
            "L" => g.lock = decode(rest),
            "D" => g.dir_exists = rest == "ok",
            "F" => {
                let (name, content) = rest.split_once(' ').unwrap_or((rest, "-"));
                let name = decode(name).map(|n| String::from_utf8_lossy(&n).into_owned());
                if let (Some(name), Some(content)) = (name, decode(content).or(Some(Vec::new()))) {
                    g.files.push((name, content));
                }
            }
            "T" => tool_path = decode(rest).map(|p| String::from_utf8_lossy(&p).into_owned()),
            "V" => {
                let (rc, b) = rest.split_once(' ').unwrap_or((rest, "-"));
                let output = decode(b)
                    .map(|o| String::from_utf8_lossy(&o).into_owned())
                    .unwrap_or_default();
                let path = tool_path.clone().unwrap_or_default();
                g.tool = if rc != "0" {
                    Err(format!(
                        "`{path} version` failed (exit {rc}): {}",
                        output.trim()
                    ))
                } else {
                    match EtcdVersion::from_tool_output(&output) {
                        Ok((name, version)) => {
                            let kind = match name {
                                "etcdutl" => Some(RestoreToolKind::Etcdutl),
                                "etcdctl" => Some(RestoreToolKind::Etcdctl),
                                _ => None,
                            };
                            kind.map(|kind| RestoreTool {
                                kind,
                                path: path.clone(),
                                version,
                            })
                            .ok_or_else(|| format!("{path} is `{name}`, not etcdutl or etcdctl"))
                        }
                        Err(e) => Err(format!("`{path} version`: {e}")),
                    }
                };
            }
            _ => {}
        }
    }
    g.files.sort();
    Ok(g)
}

/// Filesystem facts around the data directory.
pub(super) struct DataFacts {
    pub(super) dev_vol: String,
    pub(super) dev_parent: String,
    pub(super) free_vol: u64,
    pub(super) free_parent: u64,
    pub(super) owner: Option<String>,
}

/// Device numbers, free space and the data directory's owner, in one round trip.
pub(super) async fn data_facts(
    r: &dyn Remote,
    vol: &str,
    parent: &str,
    data_dir: &str,
) -> anyhow::Result<DataFacts> {
    const SCRIPT: &str = r#"near() { p=$1; while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done; printf %s "$p"; }
v=$(near "$1"); p=$(near "$2")
echo "DV $(stat -c %d -- "$v")"
echo "DP $(stat -c %d -- "$p")"
echo "FV $(df -P -B1 -- "$v" | tail -n 1 | awk '{print $4}')"
echo "FP $(df -P -B1 -- "$p" | tail -n 1 | awk '{print $4}')"
if [ -e "$3" ]; then echo "O $(stat -c %u:%g -- "$3")"; else echo "O -"; fi
"#;
    let out = r.run(&Cmd::script(SCRIPT, [vol, parent, data_dir])).await?;
    let text = out.stdout_text();
    let get = |tag: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(tag).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    Ok(DataFacts {
        dev_vol: get("DV "),
        dev_parent: get("DP "),
        free_vol: get("FV ").parse().unwrap_or(0),
        free_parent: get("FP ").parse().unwrap_or(0),
        owner: Some(get("O ")).filter(|o| o != "-" && !o.is_empty()),
    })
}

/// The parent directory of `p` (`/` for top-level paths).
pub(super) fn parent_dir(p: &str) -> String {
    match p.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}
