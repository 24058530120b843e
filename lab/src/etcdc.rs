//! etcd client helpers (etcd-client over TLS with the lab's certificates).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// Connects to `endpoints` with the CA and client certificate files given (PEM).
pub async fn connect(
    endpoints: &[String],
    ca: &Path,
    cert: &Path,
    key: &Path,
    timeout: Duration,
) -> Result<Client> {
    let ca_pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem));
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
        .await
        .with_context(|| format!("connecting to {} timed out", endpoints.join(",")))?
        .with_context(|| format!("cannot connect to {}", endpoints.join(",")))?;
    Ok(client)
}

/// Connects to a lab node's etcd with the node's health-check client certificate.
pub async fn connect_node(
    pki_dir: &Path,
    ip: std::net::Ipv4Addr,
    timeout: Duration,
) -> Result<Client> {
    connect_healthcheck(pki_dir, &[format!("https://{ip}:2379")], timeout).await
}

/// Connects to `endpoints` with the health-check client certificate of the node PKI in
/// `pki_dir` (`/etc/kubernetes/pki` of a node).
pub async fn connect_healthcheck(
    pki_dir: &Path,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Client> {
    let etcd = pki_dir.join("etcd");
    connect(
        endpoints,
        &etcd.join("ca.crt"),
        &etcd.join("healthcheck-client.crt"),
        &etcd.join("healthcheck-client.key"),
        timeout,
    )
    .await
}

/// Runs `fut` with a timeout, naming `what` in the error.
pub async fn timed<T, E: Into<anyhow::Error>>(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(Into::into).with_context(|| what.to_string()),
        Err(_) => anyhow::bail!("{what}: timed out after {timeout:?}"),
    }
}
