//! `etcd-recover snapshot ...`: verify a snapshot file offline.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::args::OutputFormat;
use crate::error::{Exit, HintExt};
use crate::snapshot::{self, SnapshotReport, VerifyOptions};
use crate::ui;

/// `snapshot` subcommands.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// What to do with a snapshot.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Check that a file is a complete, undamaged etcd snapshot.
    ///
    /// Checks the SHA-256 trailer over the whole content, the bbolt meta pages and that the size
    /// matches the database's high-water mark. Never prints the snapshot's contents. Exits 0
    /// when the snapshot is valid, 1 when it is refused.
    #[command(
        after_help = "Examples:\n  etcd-recover snapshot verify /backup/snapshot.db\n  etcd-recover snapshot verify -o json /backup/snapshot.db\n  etcd-recover snapshot verify --skip-hash-check /var/lib/etcd/member/snap/db"
    )]
    Verify {
        /// Accept a file without an integrity trailer (a raw member/snap/db copy): only its
        /// bbolt structure is checked, its contents cannot be.
        #[arg(long)]
        skip_hash_check: bool,
        /// The etcdutl to read the revision and key count with (default: `etcdutl` on PATH,
        /// else the one installed by scripts/setup.sh).
        #[arg(long, value_name = "PATH", conflicts_with = "no_etcdutl")]
        etcdutl: Option<PathBuf>,
        /// Do not run etcdutl.
        #[arg(long)]
        no_etcdutl: bool,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// The snapshot file.
        file: PathBuf,
    },
}

/// Runs a `snapshot` subcommand.
pub(crate) fn run(args: SnapshotArgs) -> anyhow::Result<Exit> {
    match args.command {
        SnapshotCommand::Verify {
            skip_hash_check,
            etcdutl,
            no_etcdutl,
            output,
            file,
        } => {
            let etcdutl = if no_etcdutl {
                None
            } else {
                etcdutl.or_else(snapshot::find_etcdutl)
            };
            let report = snapshot::examine(
                &file,
                &VerifyOptions {
                    skip_hash_check,
                    etcdutl,
                },
            );
            let mut out = Vec::new();
            match output {
                OutputFormat::Json => write_json(&mut out, &report)?,
                OutputFormat::Text => write_text(&mut out, &report)?,
            }
            ui::document(out)?;
            match (&report.problem, output) {
                (Some(p), OutputFormat::Text) => Err(anyhow::anyhow!("{p}"))
                    .context(format!(
                        "snapshot `{}` cannot be restored",
                        report.path.display()
                    ))
                    .hint(p.hint()),
                _ if report.is_valid() => Ok(Exit::Success),
                _ => Ok(Exit::Failure),
            }
        }
    }
}

fn write_json(out: &mut dyn Write, r: &SnapshotReport) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(r)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("valid".into(), r.is_valid().into());
        if let Some(p) = &r.problem {
            obj.insert("error".into(), p.to_string().into());
            obj.insert("hint".into(), p.hint().into());
        }
    }
    serde_json::to_writer_pretty(&mut *out, &v)?;
    writeln!(out)?;
    Ok(())
}

fn write_text(out: &mut dyn Write, r: &SnapshotReport) -> std::io::Result<()> {
    let name = r.path.display();
    match (&r.problem, r.structure_only) {
        (Some(p), _) => writeln!(out, "REFUSED: {name}: {p}")?,
        (None, true) => {
            writeln!(
                out,
                "OK (STRUCTURE ONLY): {name} is a bbolt database without an integrity trailer"
            )?;
            writeln!(
                out,
                "WARNING: --skip-hash-check: the contents of this file were NOT verified; only its bbolt header and size were checked"
            )?;
        }
        (None, false) => writeln!(out, "OK: {name} is a valid etcd snapshot")?,
    }
    let fact = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "  {k:<11} {v}");
    if let Some(s) = r.size {
        fact(out, "size:", format!("{s} bytes"))?;
    }
    if let Some(h) = &r.sha256 {
        fact(out, "sha256:", h.clone())?;
    }
    match (r.trailer_present, r.trailer_ok) {
        (Some(true), Some(true)) => fact(out, "trailer:", "SHA-256 present and matches".into())?,
        (Some(true), _) => fact(out, "trailer:", "SHA-256 present, does NOT match".into())?,
        (Some(false), _) => fact(out, "trailer:", "none".into())?,
        _ => {}
    }
    if let (Some(ps), Some(pgid), Some(txid)) = (r.page_size, r.pgid, r.txid) {
        fact(
            out,
            "bbolt:",
            format!("page size {ps}, {pgid} pages, txid {txid}"),
        )?;
    }
    if let Some(s) = &r.status {
        fact(out, "revision:", s.revision.to_string())?;
        fact(out, "keys:", s.total_key.to_string())?;
        fact(out, "hash:", format!("{:x}", s.hash))?;
        fact(out, "status by:", s.tool.clone())?;
    } else if let Some(n) = &r.status_note {
        fact(out, "status:", n.clone())?;
    }
    Ok(())
}
