//! Stand-ins for kube-apiserver, kube-controller-manager and kube-scheduler.
//!
//! The apiserver stand-in takes kube-apiserver's flags, serves HTTPS `/readyz`, `/livez` and
//! `/healthz` on `--advertise-address:--secure-port` (200 `ok` only while its etcd answers a
//! linearizable read within 1 s, else 500), and while running writes the heartbeat key
//! `/registry/lab-heartbeat/<node>` (unix time in ms) every 200 ms, so that a restore that
//! forgot to stop the apiservers is caught. The component stand-in serves HTTPS `/healthz`
//! on `--bind-address` and the component's secure port and otherwise idles.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::Client;
use tokio::sync::Mutex;

use crate::{etcdc, pki, tls, util};

/// Heartbeat key prefix; the node name follows.
pub const HEARTBEAT_PREFIX: &str = "/registry/lab-heartbeat/";

fn flags(args: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let Some(f) = a.strip_prefix("--") else {
            continue;
        };
        match f.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                let v = match it.peek() {
                    Some(n) if !n.starts_with("--") => it.next().cloned().unwrap_or_default(),
                    _ => "true".to_string(),
                };
                out.insert(f.to_string(), v);
            }
        }
    }
    out
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the event loop")
}

struct Etcd {
    endpoints: Vec<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Mutex<Option<Client>>,
}

impl Etcd {
    async fn client(&self) -> Result<Client> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = etcdc::connect(
            &self.endpoints,
            &self.ca,
            &self.cert,
            &self.key,
            Duration::from_secs(1),
        )
        .await?;
        *guard = Some(c.clone());
        Ok(c)
    }
    async fn reset(&self) {
        *self.client.lock().await = None;
    }
    async fn ready(&self) -> Result<()> {
        let mut c = self.client().await?;
        // A linearizable (quorum) read, as the real apiserver's etcd readiness check does.
        etcdc::timed(
            "linearizable read",
            Duration::from_secs(1),
            c.get("/registry/health", None),
        )
        .await?;
        Ok(())
    }
}

/// Entry point of `etcd-recover-lab apiserver <kube-apiserver flags>`.
pub fn apiserver(args: &[String]) -> Result<()> {
    let f = flags(args);
    let ip: Ipv4Addr = f
        .get("advertise-address")
        .or_else(|| f.get("bind-address"))
        .context("--advertise-address is required")?
        .parse()
        .context("--advertise-address is not an IPv4 address")?;
    let port: u16 = f
        .get("secure-port")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(6443);
    let get = |k: &str| -> Result<PathBuf> {
        Ok(PathBuf::from(
            f.get(k).with_context(|| format!("--{k} is required"))?,
        ))
    };
    let etcd = Arc::new(Etcd {
        endpoints: f
            .get("etcd-servers")
            .context("--etcd-servers is required")?
            .split(',')
            .map(str::to_string)
            .collect(),
        ca: get("etcd-cafile")?,
        cert: get("etcd-certfile")?,
        key: get("etcd-keyfile")?,
        client: Mutex::new(None),
    });
    let cert = std::fs::read(get("tls-cert-file")?).context("cannot read --tls-cert-file")?;
    let key = std::fs::read(get("tls-private-key-file")?)
        .context("cannot read --tls-private-key-file")?;
    let cfg = tls::server_config(&cert, &key)?;
    let node = std::env::var(util::NODE_ENV).unwrap_or_else(|_| ip.to_string());
    util::log(format!(
        "lab stand-in kube-apiserver for {node} on https://{ip}:{port}, etcd {}",
        etcd.endpoints.join(",")
    ));
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, port)))
            .await
            .with_context(|| format!("cannot listen on {ip}:{port}"))?;
        let hb = etcd.clone();
        tokio::spawn(heartbeat(hb, format!("{HEARTBEAT_PREFIX}{node}")));
        let h = etcd.clone();
        tls::serve(listener, cfg, move |path: String| {
            let etcd = h.clone();
            async move {
                let p = path.split('?').next().unwrap_or("").to_string();
                match p.as_str() {
                    "/readyz" | "/livez" | "/healthz" => match etcd.ready().await {
                        Ok(()) => (200, "ok".to_string()),
                        Err(e) => {
                            etcd.reset().await;
                            (
                                500,
                                format!("[-]etcd failed: {e:#}\n{} check failed\n", &p[1..]),
                            )
                        }
                    },
                    _ => (404, "404 page not found\n".to_string()),
                }
            }
        })
        .await
    })
}

async fn heartbeat(etcd: Arc<Etcd>, key: String) {
    let mut failing_since: Option<Instant> = None;
    let mut last_report = Instant::now();
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let res = async {
            let mut c = etcd.client().await?;
            etcdc::timed(
                "heartbeat put",
                Duration::from_secs(1),
                c.put(key.clone(), util::unix_millis().to_string(), None),
            )
            .await
        }
        .await;
        match res {
            Ok(_) => {
                if let Some(since) = failing_since.take() {
                    util::log(format!(
                        "heartbeat {key}: etcd is back after {:.1}s",
                        since.elapsed().as_secs_f64()
                    ));
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures >= 3 {
                    etcd.reset().await;
                }
                if failing_since.is_none() || last_report.elapsed() > Duration::from_secs(10) {
                    util::log(format!("heartbeat {key}: {e:#}"));
                    last_report = Instant::now();
                }
                failing_since.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Entry point of `etcd-recover-lab component <name> <flags>`.
pub fn component(name: &str, args: &[String]) -> Result<()> {
    let f = flags(args);
    let default_port = match name {
        "kube-scheduler" => 10259,
        _ => 10257,
    };
    let ip: Ipv4Addr = f
        .get("bind-address")
        .map(String::as_str)
        .unwrap_or("127.0.0.1")
        .parse()
        .context("--bind-address is not an IPv4 address")?;
    let port: u16 = f
        .get("secure-port")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(default_port);
    // Like the real components without --tls-cert-file: a self-signed serving certificate.
    let (cert, key) = pki::self_signed_serving(name, ip)?;
    let cfg = tls::server_config(cert.as_bytes(), key.as_bytes())?;
    util::log(format!(
        "lab stand-in {name} serving /healthz on https://{ip}:{port}"
    ));
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, port)))
            .await
            .with_context(|| format!("cannot listen on {ip}:{port}"))?;
        tls::serve(listener, cfg, |path: String| async move {
            match path.split('?').next().unwrap_or("") {
                "/healthz" | "/livez" | "/readyz" => (200, "ok".to_string()),
                _ => (404, "404 page not found\n".to_string()),
            }
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let args: Vec<String> = ["--a=1", "--b", "2", "--c", "--d=/x=y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = flags(&args);
        assert_eq!(f["a"], "1");
        assert_eq!(f["b"], "2");
        assert_eq!(f["c"], "true");
        assert_eq!(f["d"], "/x=y");
    }
}
