//! Uploads a file to one node of an inventory with etcd-recover's SSH transport and prints the
//! throughput. Used by `scripts/bench-upload.sh`.
//!
//! ```text
//! cargo run --release --example upload -- INVENTORY NODE LOCAL_FILE REMOTE_PATH [SHA256]
//! ```
//!
//! Without SHA256 the file is hashed while it is sent; with it (the way a restore stages the
//! snapshot whose hash preflight computed) the node's copy is compared with SHA256 instead.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use etcd_recover::inventory::{self, ResolveOptions};
use etcd_recover::remote::Remote;
use etcd_recover::transport::{ConnectOptions, Connector, NoPrompt};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (inventory_path, node_name, local, remote, expected) = match args.as_slice() {
        [i, n, l, r] => (i, n, l, r, None),
        [i, n, l, r, sha] => {
            let mut h = [0u8; 32];
            hex::decode_to_slice(sha, &mut h).context("SHA256 must be 64 hex digits")?;
            (i, n, l, r, Some(h))
        }
        _ => bail!("usage: upload INVENTORY NODE LOCAL_FILE REMOTE_PATH [SHA256]"),
    };
    let inv = inventory::load(&PathBuf::from(inventory_path))?.inventory;
    let opts = ResolveOptions::from_environment(inventory::load_ssh_config(None)?, None);
    let targets = inventory::resolve_targets(&inv, &opts)?;
    let target = targets
        .iter()
        .find(|t| &t.node == node_name)
        .with_context(|| format!("no node {node_name} in {inventory_path}"))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let connector = Connector::new(ConnectOptions::default(), Arc::new(NoPrompt));
        let node = connector.connect(target).await?;
        let size = std::fs::metadata(local)?.len();
        let started = Instant::now();
        // When the last byte left: the rest is the node's fsync, hash and rename.
        let sent_all = std::sync::Mutex::new(None);
        let progress = |n: u64| {
            if n == size {
                if let Ok(mut t) = sent_all.lock() {
                    *t = Some(started.elapsed());
                }
            }
        };
        let hash = node
            .upload(&PathBuf::from(local), remote, 0o600, expected, &progress)
            .await?;
        let secs = started.elapsed().as_secs_f64();
        let sending = sent_all
            .lock()
            .ok()
            .and_then(|t| *t)
            .map_or(secs, |d| d.as_secs_f64());
        node.close().await;
        writeln!(
            std::io::stdout(),
            "uploaded {size} bytes in {secs:.2}s ({:.1} MiB/s): sending {sending:.2}s, \
             fsync + SHA-256 + rename on the node {:.2}s; sha256 {}",
            size as f64 / secs / (1024.0 * 1024.0),
            secs - sending,
            hex::encode(hash)
        )?;
        anyhow::Ok(())
    })
}
