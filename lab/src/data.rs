//! `seed` (write keys under real Kubernetes prefixes) and `snapshot` (real `etcdctl snapshot
//! save`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Txn, TxnOp};

use crate::etcdc;
use crate::state::{LabState, NodePaths, NodeState};
use crate::util;

/// Default prefixes of `seed`.
pub const DEFAULT_PREFIXES: [&str; 2] = ["/registry/configmaps/", "/registry/secrets/"];
const BATCH: usize = 100;
const CONCURRENCY: usize = 8;
/// Bytes of values per transaction, well under etcd's default 1.5 MiB request limit.
const MAX_TXN_BYTES: usize = 1 << 20;

fn value_for(prefix: &str, ns: &str, name: &str, i: usize) -> String {
    if prefix.contains("/secrets/") {
        format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{name}","namespace":"{ns}"}},"type":"Opaque","data":{{"token":"{}"}}}}"#,
            hex::encode(format!("seed-secret-{i}"))
        )
    } else {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"{ns}"}},"data":{{"index":"{i}"}}}}"#
        )
    }
}

/// The value of seed key `i`, padded to at least `value_size` bytes with a `padding` field
/// (still a valid object of its kind). Padding is random-looking, so it does not compress away.
fn padded(value: String, value_size: usize, i: usize) -> String {
    if value.len() + 16 >= value_size {
        return value;
    }
    let want = value_size - value.len() - 13;
    let mut pad = String::with_capacity(want + 64);
    let mut n = 0u64;
    while pad.len() < want {
        pad.push_str(&util::sha256_hex(format!("{i}/{n}").as_bytes()));
        n += 1;
    }
    pad.truncate(want);
    let body = value.strip_suffix('}').unwrap_or(&value);
    format!(r#"{body},"padding":"{pad}"}}"#)
}

/// The key and value of seed key number `i`, the value padded to at least `value_size` bytes.
pub fn seed_kv(prefixes: &[String], i: usize, value_size: usize) -> (String, String) {
    let prefix = &prefixes[i % prefixes.len()];
    let ns = format!("lab-seed-{}", (i / prefixes.len()) % 10);
    let name = format!("seed-{i:06}");
    let p = if prefix.ends_with('/') {
        prefix.clone()
    } else {
        format!("{prefix}/")
    };
    (
        format!("{p}{ns}/{name}"),
        padded(value_for(&p, &ns, &name, i), value_size, i),
    )
}

/// Writes `keys` keys in transactions of 100 puts (fewer for large values, to stay under
/// etcd's 1.5 MiB request limit), 8 in flight; values are padded to at least `value_size`
/// bytes. Returns (elapsed, revision).
pub async fn seed(
    st: &LabState,
    keys: usize,
    prefixes: &[String],
    node: Option<&NodeState>,
    value_size: usize,
) -> Result<(Duration, i64)> {
    let prefixes: Vec<String> = if prefixes.is_empty() {
        DEFAULT_PREFIXES.iter().map(|s| s.to_string()).collect()
    } else {
        prefixes.to_vec()
    };
    let target = node.unwrap_or(&st.nodes[0]);
    let endpoints: Vec<String> = match node {
        Some(n) => vec![format!("https://{}:2379", n.ip)],
        None => st
            .nodes
            .iter()
            .map(|n| format!("https://{}:2379", n.ip))
            .collect(),
    };
    let pki = NodePaths::new(&target.dir).pki();
    let client = etcdc::connect(
        &endpoints,
        &pki.join("etcd/ca.crt"),
        &pki.join("apiserver-etcd-client.crt"),
        &pki.join("apiserver-etcd-client.key"),
        Duration::from_secs(5),
    )
    .await?;
    let t0 = Instant::now();
    let batch = (MAX_TXN_BYTES / value_size.max(1)).clamp(1, BATCH);
    let batches: Vec<std::ops::Range<usize>> = (0..keys)
        .step_by(batch)
        .map(|s| s..(s + batch).min(keys))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    let mut revision = 0i64;
    let mut iter = batches.into_iter();
    loop {
        while set.len() < CONCURRENCY {
            let Some(range) = iter.next() else { break };
            let mut c = client.clone();
            let prefixes = prefixes.clone();
            set.spawn(async move {
                let ops: Vec<TxnOp> = range
                    .map(|i| {
                        let (k, v) = seed_kv(&prefixes, i, value_size);
                        TxnOp::put(k, v, None)
                    })
                    .collect();
                etcdc::timed(
                    "seed transaction",
                    Duration::from_secs(10),
                    c.txn(Txn::new().and_then(ops)),
                )
                .await
            });
        }
        let Some(res) = set.join_next().await else {
            break;
        };
        let resp = res.context("seed task failed")??;
        if let Some(h) = resp.header() {
            revision = revision.max(h.revision());
        }
    }
    Ok((t0.elapsed(), revision))
}

/// `etcdctl` (the binary given) against `node`'s etcd with the node's health-check client
/// certificate; the caller adds the command.
pub fn etcdctl(etcdctl: &Path, node: &NodeState) -> Command {
    let pki = NodePaths::new(&node.dir).pki().join("etcd");
    let mut c = Command::new(etcdctl);
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}:2379", node.ip))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("healthcheck-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("healthcheck-client.key").display()
        ));
    c
}

/// Saves a snapshot of `node`'s etcd to `out` with the real etcdctl of the lab's version.
pub fn snapshot(st: &LabState, node: &NodeState, out: &Path) -> Result<String> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        util::mkdir(parent)?;
    }
    let o = etcdctl(&st.etcd.etcdctl, node)
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=60s")
        .args(["snapshot", "save"])
        .arg(out)
        .output()
        .with_context(|| format!("cannot run {}", st.etcd.etcdctl.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        bail!(
            "{} snapshot save from {} failed ({}):\n{}",
            st.etcd.etcdctl.display(),
            node.name,
            o.status,
            text.trim()
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keys_use_kubernetes_prefixes() {
        let p: Vec<String> = DEFAULT_PREFIXES.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            seed_kv(&p, 0, 0).0,
            "/registry/configmaps/lab-seed-0/seed-000000"
        );
        assert_eq!(
            seed_kv(&p, 3, 0).0,
            "/registry/secrets/lab-seed-1/seed-000003"
        );
        assert!(seed_kv(&p, 3, 0).1.contains("\"kind\":\"Secret\""));
        let big = seed_kv(&p, 3, 4096).1;
        assert_eq!(big.len(), 4096);
        let v: serde_json::Value = serde_json::from_str(&big).unwrap();
        assert_eq!(v["kind"], "Secret");
        assert_eq!(seed_kv(&p, 3, 10).1, seed_kv(&p, 3, 0).1);
    }
}
