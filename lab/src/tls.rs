//! TLS (rustls with the ring provider) and a tiny HTTP/1.1 server and client, enough for
//! health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from PEM certificate chain and key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("invalid PEM certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("invalid PEM private key")?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration trusting `ca_pem`, or trusting anything when `None` (only for
/// probing self-signed health endpoints).
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let cfg = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                roots.add(c.context("invalid PEM CA certificate")?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// `GET https://addr/path`, verifying the server against `cfg`; returns status and body.
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    cfg: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(u16, String)> {
    tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        let name = ServerName::try_from(addr.ip().to_string()).context("invalid server name")?;
        let mut tls = TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr} failed"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: etcd-recover-lab\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        // Servers may close without close_notify; take what arrived.
        let _ = tls.read_to_end(&mut buf).await;
        parse_response(&buf)
    })
    .await
    .with_context(|| format!("GET https://{addr}{path} timed out after {timeout:?}"))?
}

fn parse_response(buf: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let Some(status_line) = text.lines().next() else {
        bail!("empty HTTP response");
    };
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Serves HTTPS on `listener`: for every request, `handler(path)` gives status and body.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    handler: F,
) -> Result<()>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, String)> + Send,
{
    let acceptor = TlsAcceptor::from(cfg);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                crate::util::log(format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), async move {
                let mut tls = acceptor.accept(tcp).await.ok()?;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    let n = tls.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&buf);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (code, body) = handler(path).await;
                let reason = match code {
                    200 => "OK",
                    404 => "Not Found",
                    _ => "Internal Server Error",
                };
                let resp = format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(resp.as_bytes()).await.ok()?;
                tls.shutdown().await.ok()?;
                Some(())
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let (c, b) = parse_response(b"HTTP/1.1 500 Internal Server Error\r\nA: b\r\n\r\nnot ok")
            .expect("parse");
        assert_eq!((c, b.as_str()), (500, "not ok"));
        assert!(parse_response(b"").is_err());
    }
}
