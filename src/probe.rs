//! HTTP(S) probes as the kubelet runs them, through an SSH tunnel to the node: the endpoint and
//! probe types the plan records, and one attempt at a probe. Used by the engine (waiting for a
//! pod to serve) and by the health checks (apiserver readiness).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::remote::Remote;

/// A `host:port` that a pod listens on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host as seen from the node.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An HTTP(S) readiness probe, as the kubelet would run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbe {
    /// `http` or `https` (certificates are not verified, as by the kubelet).
    pub scheme: String,
    /// Host as seen from the node.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path, e.g. `/readyz`.
    pub path: String,
}

impl fmt::Display for HttpProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = Endpoint {
            host: self.host.clone(),
            port: self.port,
        };
        write!(f, "{}://{}{}", self.scheme.to_lowercase(), ep, self.path)
    }
}

/// Runs an HTTP(S) GET probe through a tunnel and returns the status code. HTTPS certificates
/// are not verified, exactly as the kubelet does for probes.
pub async fn http_probe(
    remote: &dyn Remote,
    probe: &HttpProbe,
    timeout: Duration,
) -> Result<u16, String> {
    let fwd = remote
        .forward(&probe.host, probe.port)
        .await
        .map_err(|e| format!("cannot open a tunnel to {}:{}: {e}", probe.host, probe.port))?;
    let host = probe.host.clone();
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(fwd.local_addr)
            .await
            .map_err(|e| format!("{probe}: {e}"))?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: etcd-recover\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            probe.path
        );
        let mut buf = Vec::new();
        if probe.scheme.eq_ignore_ascii_case("https") {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(insecure_client_config()));
            let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap_or_else(|_| {
                rustls::pki_types::ServerName::try_from("localhost".to_string())
                    .expect("valid name")
            });
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{probe}: TLS handshake: {e}"))?;
            tls.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("{probe}: {e}"))?;
            let _ = tls.read_to_end(&mut buf).await;
        } else {
            let mut tcp = tcp;
            tcp.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("{probe}: {e}"))?;
            let _ = tcp.read_to_end(&mut buf).await;
        }
        parse_status(&buf).ok_or_else(|| format!("{probe}: no HTTP response"))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{probe}: no answer within {timeout:?}"))?
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn insecure_client_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))))
                .with_no_client_auth()
        })
}

/// Accepts any server certificate (probe semantics), still checking handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localhost::Localhost;

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\nok"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 500 Internal\r\n"), Some(500));
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[tokio::test]
    async fn plain_http_probe_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 2\r\n\r\nok").as_bytes())
                    .await;
            }
        });
        let node = Localhost::new("cp-1");
        let probe = HttpProbe {
            scheme: "HTTP".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/readyz".into(),
        };
        assert_eq!(
            http_probe(&node, &probe, Duration::from_secs(5))
                .await
                .unwrap(),
            200
        );
        assert_eq!(
            http_probe(&node, &probe, Duration::from_secs(5))
                .await
                .unwrap(),
            503
        );
    }
}
