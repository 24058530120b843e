//! `etcd-recover manifest ...`: read a static-pod manifest, or rewrite its etcd data hostPath.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::error::Exit;
use crate::manifest::{self, EtcdManifest, StaticPod};
use crate::ui;

use super::args::OutputFormat;

/// `manifest` subcommands.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ManifestCommand,
}

/// What to do with a manifest.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Print the rewritten manifest (or a diff) with the hostPath behind `--data-dir` changed.
    ///
    /// Exactly one value changes; comments, key order, indentation, quoting and line endings
    /// stay as they are. The result is re-parsed and compared structurally before it is printed;
    /// anything that cannot be changed safely is refused. The file itself is not modified.
    #[command(
        after_help = "Examples:\n  etcd-recover manifest rewrite --data-hostpath /var/lib/etcd-restored /etc/kubernetes/manifests/etcd.yaml --diff\n  etcd-recover manifest rewrite --data-hostpath /var/lib/etcd-restored etcd.yaml > etcd.yaml.new"
    )]
    Rewrite {
        /// The new host directory for etcd's data (absolute, normalised).
        #[arg(long, value_name = "DIR")]
        data_hostpath: String,
        /// Print a unified diff instead of the whole file.
        #[arg(long)]
        diff: bool,
        /// The etcd static-pod manifest.
        file: PathBuf,
    },
    /// Print what the tool reads from a static-pod manifest.
    #[command(
        after_help = "Examples:\n  etcd-recover manifest show /etc/kubernetes/manifests/etcd.yaml\n  etcd-recover manifest show -o json /etc/kubernetes/manifests/kube-apiserver.yaml"
    )]
    Show {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// The manifest.
        file: PathBuf,
    },
}

/// Runs a `manifest` subcommand.
pub(crate) fn run(args: ManifestArgs) -> anyhow::Result<Exit> {
    match args.command {
        ManifestCommand::Rewrite {
            data_hostpath,
            diff,
            file,
        } => rewrite(&file, &data_hostpath, diff),
        ManifestCommand::Show { output, file } => show(&file, output),
    }
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))
}

fn rewrite(file: &PathBuf, new_path: &str, diff: bool) -> anyhow::Result<Exit> {
    let bytes = read(file)?;
    let rw = manifest::rewrite_data_hostpath(&bytes, new_path)
        .map_err(manifest::ManifestError::into_anyhow)
        .with_context(|| format!("cannot rewrite the data hostPath of `{}`", file.display()))?;
    if diff {
        let label = file.to_string_lossy();
        ui::document(rw.unified_diff(label.trim_start_matches('/')))?;
    } else {
        ui::document(&rw.rewritten)?;
    }
    ui::line(&format!(
        "changed hostPath of volume `{}` (line {}): {} -> {}",
        rw.volume, rw.line, rw.old_path, rw.new_path
    ));
    for note in &rw.notes {
        ui::line(&format!("note: {note}"));
    }
    Ok(Exit::Success)
}

fn show(file: &PathBuf, output: OutputFormat) -> anyhow::Result<Exit> {
    let bytes = read(file)?;
    let context = || format!("cannot read `{}` as a static-pod manifest", file.display());
    let pod = StaticPod::parse(&bytes)
        .map_err(manifest::ManifestError::into_anyhow)
        .with_context(context)?;
    let etcd = match EtcdManifest::parse(&bytes) {
        Ok(m) => Some(m),
        Err(manifest::ManifestError::NoEtcdContainer { .. }) => None,
        Err(e) => return Err(e.into_anyhow().context(context())),
    };
    let mut out = Vec::new();
    match output {
        OutputFormat::Json => {
            let value = match &etcd {
                Some(m) => serde_json::json!({
                    "etcd": m,
                    "data_volume": m.data_volume().ok(),
                    "data_volume_error": m.data_volume().err().map(|e| e.to_string()),
                }),
                None => serde_json::json!({ "static_pod": pod }),
            };
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
        }
        OutputFormat::Text => match &etcd {
            Some(m) => write_etcd(&mut out, m)?,
            None => write_pod(&mut out, &pod)?,
        },
    }
    ui::document(out)?;
    Ok(Exit::Success)
}

fn write_etcd(out: &mut dyn Write, m: &EtcdManifest) -> std::io::Result<()> {
    let or_none = |v: Option<&str>| v.unwrap_or("(not set)").to_string();
    writeln!(
        out,
        "etcd static pod `{}` (container `{}`)",
        m.pod_name, m.container
    )?;
    writeln!(
        out,
        "  image:        {} (etcd {})",
        or_none(m.image.as_deref()),
        m.version.map_or("unknown".to_string(), |v| v.to_string())
    )?;
    writeln!(out, "  name:         {}", or_none(m.name()))?;
    writeln!(
        out,
        "  peer URLs:    {}",
        or_none(m.initial_advertise_peer_urls())
    )?;
    writeln!(out, "  cluster:      {}", or_none(m.initial_cluster()))?;
    writeln!(
        out,
        "  token:        {}",
        m.initial_cluster_token()
            .unwrap_or("(not set: etcd uses `etcd-cluster`)")
    )?;
    writeln!(
        out,
        "  client URLs:  {}",
        or_none(m.advertise_client_urls())
    )?;
    writeln!(out, "  metrics URLs: {}", or_none(m.listen_metrics_urls()))?;
    match m.data_volume() {
        Ok(d) => writeln!(
            out,
            "  data dir:     {} -> host {} (volume `{}`)",
            d.data_dir,
            d.host_data_dir(),
            d.mapping.volume
        )?,
        Err(e) => writeln!(out, "  data dir:     PROBLEM: {e}")?,
    }
    if let Some(wal) = m.wal_dir() {
        match m.host_path(wal) {
            Ok(h) => writeln!(out, "  WAL dir:      {wal} -> host {}", h.host_path)?,
            Err(e) => writeln!(out, "  WAL dir:      {wal}: PROBLEM: {e}")?,
        }
    }
    writeln!(
        out,
        "  runs as:      user {}, group {}",
        m.run_as_user()
            .map_or("(image default)".into(), |u| u.to_string()),
        m.run_as_group()
            .map_or("(image default)".into(), |g| g.to_string())
    )?;
    if let Some(r) = &m.readiness {
        writeln!(out, "  readiness:    {}", describe_probe(r))?;
    }
    for note in &m.notes {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}

fn describe_probe(r: &manifest::Readiness) -> String {
    let what = match &r.action {
        a @ manifest::ProbeAction::HttpGet { .. } => a.url("<node address>").unwrap_or_default(),
        manifest::ProbeAction::TcpSocket { host, port } => {
            format!("tcp {}:{port}", host.as_deref().unwrap_or("<node address>"))
        }
        manifest::ProbeAction::Exec { command } => format!("exec {}", command.join(" ")),
        manifest::ProbeAction::Grpc { port, .. } => format!("grpc port {port}"),
    };
    match &r.note {
        Some(n) => format!("{what} ({n})"),
        None => what,
    }
}

fn write_pod(out: &mut dyn Write, pod: &StaticPod) -> std::io::Result<()> {
    writeln!(out, "static pod `{}`", pod.name)?;
    for c in &pod.containers {
        writeln!(
            out,
            "  container `{}`: {}",
            c.name,
            c.image.as_deref().unwrap_or("(no image)")
        )?;
        for f in &c.flags {
            match &f.value {
                Some(v) => writeln!(out, "    --{}={v}", f.name)?,
                None => writeln!(out, "    --{}", f.name)?,
            }
        }
        if let Some(r) = &c.readiness {
            writeln!(out, "    readiness: {}", describe_probe(r))?;
        }
    }
    Ok(())
}
