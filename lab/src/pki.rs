//! A kubeadm-like PKI generated with rcgen (ECDSA P-256 keys, kubeadm file names).
//!
//! The CAs (`ca`, `front-proxy-ca`, `etcd/ca`) and the service-account key pair are shared by
//! all control-plane nodes, as kubeadm copies them; every node gets its own leaf certificates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::util;

/// A CA: its certificate (PEM) and an issuer that can sign leaves.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// The shared part of the PKI.
pub struct ClusterPki {
    /// Kubernetes CA (`pki/ca.crt`).
    pub ca: Ca,
    /// Front-proxy CA (`pki/front-proxy-ca.crt`).
    pub front_proxy_ca: Ca,
    /// etcd CA (`pki/etcd/ca.crt`).
    pub etcd_ca: Ca,
    sa_key: KeyPair,
}

fn validity(params: &mut CertificateParams, years: i32) {
    // One day of slack for clock skew, like kubeadm's backdating.
    let ms = util::unix_millis().saturating_sub(86_400_000);
    let ts = util::rfc3339(ms);
    let (y, m, d) = (
        ts[0..4].parse().unwrap_or(2024),
        ts[5..7].parse().unwrap_or(1),
        ts[8..10].parse().unwrap_or(1),
    );
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

fn new_ca(cn: &str) -> Result<Ca> {
    let key = KeyPair::generate().context("cannot generate a CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    validity(&mut params, 10);
    let cert = params
        .self_signed(&key)
        .with_context(|| format!("cannot self-sign CA {cn}"))?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    })
}

/// What a leaf certificate is for.
enum Usage {
    Server,
    Client,
    ServerClient,
}

fn leaf(
    ca: &Ca,
    cn: &str,
    org: Option<&str>,
    sans: &[SanType],
    usage: Usage,
) -> Result<(String, String)> {
    let key = KeyPair::generate().context("cannot generate a key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans.to_vec();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 1);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .with_context(|| format!("cannot sign certificate {cn}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn dns(name: &str) -> Result<SanType> {
    Ok(SanType::DnsName(
        name.to_string()
            .try_into()
            .with_context(|| format!("{name} is not a DNS name"))?,
    ))
}

fn write_pair(dir: &Path, base: &str, pair: &(String, String)) -> Result<()> {
    util::write_file(&dir.join(format!("{base}.crt")), pair.0.as_bytes(), 0o644)?;
    util::write_file(&dir.join(format!("{base}.key")), pair.1.as_bytes(), 0o600)
}

impl ClusterPki {
    /// Generates the shared CAs and service-account key.
    pub fn generate() -> Result<ClusterPki> {
        Ok(ClusterPki {
            ca: new_ca("kubernetes")?,
            front_proxy_ca: new_ca("front-proxy-ca")?,
            etcd_ca: new_ca("etcd-ca")?,
            sa_key: KeyPair::generate().context("cannot generate the service-account key")?,
        })
    }

    /// Writes the CAs and this node's leaf certificates into `pki_dir` (the node's
    /// `/etc/kubernetes/pki`).
    pub fn write_node(&self, pki_dir: &Path, node: &str, ip: Ipv4Addr) -> Result<()> {
        let etcd_dir = pki_dir.join("etcd");
        util::mkdir(&etcd_dir)?;
        for (dir, base, ca) in [
            (pki_dir, "ca", &self.ca),
            (pki_dir, "front-proxy-ca", &self.front_proxy_ca),
            (etcd_dir.as_path(), "ca", &self.etcd_ca),
        ] {
            write_pair(dir, base, &(ca.cert_pem.clone(), ca.key_pem.clone()))?;
        }
        util::write_file(
            &pki_dir.join("sa.key"),
            self.sa_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        util::write_file(
            &pki_dir.join("sa.pub"),
            self.sa_key.public_key_pem().as_bytes(),
            0o644,
        )?;

        // etcd: server and peer share kubeadm's SANs; the health-check client is client-only.
        let etcd_sans = vec![
            dns(node)?,
            dns("localhost")?,
            SanType::IpAddress(IpAddr::V4(ip)),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        write_pair(
            &etcd_dir,
            "server",
            &leaf(&self.etcd_ca, node, None, &etcd_sans, Usage::ServerClient)?,
        )?;
        write_pair(
            &etcd_dir,
            "peer",
            &leaf(&self.etcd_ca, node, None, &etcd_sans, Usage::ServerClient)?,
        )?;
        write_pair(
            &etcd_dir,
            "healthcheck-client",
            &leaf(
                &self.etcd_ca,
                "kube-etcd-healthcheck-client",
                None,
                &[],
                Usage::Client,
            )?,
        )?;
        write_pair(
            pki_dir,
            "apiserver-etcd-client",
            &leaf(
                &self.etcd_ca,
                "kube-apiserver-etcd-client",
                None,
                &[],
                Usage::Client,
            )?,
        )?;

        // Kubernetes API server serving certificate and its client certificates.
        let mut api_sans = vec![
            dns(node)?,
            dns("kubernetes")?,
            dns("kubernetes.default")?,
            dns("kubernetes.default.svc")?,
            dns("kubernetes.default.svc.cluster.local")?,
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))),
            SanType::IpAddress(IpAddr::V4(ip)),
        ];
        api_sans.dedup();
        write_pair(
            pki_dir,
            "apiserver",
            &leaf(&self.ca, "kube-apiserver", None, &api_sans, Usage::Server)?,
        )?;
        write_pair(
            pki_dir,
            "apiserver-kubelet-client",
            &leaf(
                &self.ca,
                "kube-apiserver-kubelet-client",
                Some("kubeadm:cluster-admins"),
                &[],
                Usage::Client,
            )?,
        )?;
        write_pair(
            pki_dir,
            "front-proxy-client",
            &leaf(
                &self.front_proxy_ca,
                "front-proxy-client",
                None,
                &[],
                Usage::Client,
            )?,
        )?;
        Ok(())
    }
}

/// Generates a throw-away self-signed serving certificate (PEM cert, PEM key) for `ip`, the way
/// kube-controller-manager and kube-scheduler do when given no certificate.
pub fn self_signed_serving(cn: &str, ip: Ipv4Addr) -> Result<(String, String)> {
    let ca = new_ca(&format!("{cn}-ca"))?;
    let pair = leaf(
        &ca,
        cn,
        None,
        &[SanType::IpAddress(IpAddr::V4(ip)), dns("localhost")?],
        Usage::Server,
    )?;
    Ok((format!("{}{}", pair.0, ca.cert_pem), pair.1))
}
