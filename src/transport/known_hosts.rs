//! Host key verification against OpenSSH known_hosts files (`sshd(8)`, "SSH_KNOWN_HOSTS FILE
//! FORMAT"): plain and hashed (`|1|salt|hmac`) names, `*`/`?`/`!` patterns, `[host]:port` for
//! ports other than 22, `@revoked` markers, and `@cert-authority` lines, which trust host
//! certificates signed by that CA for the hosts their patterns match ([`check_certificate`]).
//!
//! russh ships a checker (`russh::keys::check_known_hosts_path`), but it splits lines on single
//! spaces, does not understand patterns or markers, gives up on the first malformed line, and
//! counts line numbers without the comment lines; a "changed key" message must point at the
//! right line, so this module parses the files itself.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use data_encoding::BASE64;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};
use sha1::{Digest, Sha1};

use crate::inventory::ssh_config::glob_match;

/// Where a known_hosts line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The outcome of looking a server's key up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is on record here.
    Trusted(Location),
    /// A different key of the same type is on record: possibly a man-in-the-middle.
    Changed {
        /// The line with the recorded key.
        at: Location,
        /// Fingerprint of the recorded key.
        recorded: String,
    },
    /// The key is marked `@revoked`.
    Revoked(Location),
    /// No key of this type is on record for the host.
    Unknown {
        /// Lines with keys of other types for the host, if any.
        other_types: Vec<(Location, String)>,
    },
}

/// The name a host's keys are recorded under: `host` for port 22, else `[host]:port`.
pub fn host_pattern_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// One parsed line.
struct Entry {
    marker: Marker,
    names: String,
    key: PublicKey,
    at: Location,
}

#[derive(PartialEq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// Reads the entries of `files` in order; missing files and malformed lines are skipped, as
/// OpenSSH does.
fn entries(files: &[PathBuf]) -> Vec<Entry> {
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let mut fields = line.split_whitespace();
            let Some(mut first) = fields.next() else {
                continue;
            };
            if first.starts_with('#') {
                continue;
            }
            let marker = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => Marker::CertAuthority,
                _ => Marker::None,
            };
            if marker != Marker::None {
                let Some(next) = fields.next() else { continue };
                first = next;
            }
            let (Some(_keytype), Some(blob)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = russh::keys::parse_public_key_base64(blob) else {
                continue;
            };
            out.push(Entry {
                marker,
                names: first.to_string(),
                key,
                at: Location {
                    file: file.clone(),
                    line: i + 1,
                },
            });
        }
    }
    out
}

/// Whether a comma-separated host pattern list (or one hashed name) matches `name`.
fn names_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns.split(',') {
        let (negated, p) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob_match(&p.to_ascii_lowercase(), &name) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed with the salt. Host names are
/// case-insensitive: OpenSSH lowercases the name before hashing it, and so does this.
fn hashed_match(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    hmac_sha1(&salt, name.to_ascii_lowercase().as_bytes()).as_slice() == hash.as_slice()
}

/// `|1|salt|hash` for `name` with a fresh random salt, as `HashKnownHosts yes` writes it.
fn hashed_name(name: &str) -> std::io::Result<String> {
    let mut salt = [0u8; 20];
    getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
    let hash = hmac_sha1(&salt, name.to_ascii_lowercase().as_bytes());
    Ok(format!(
        "|1|{}|{}",
        BASE64.encode(&salt),
        BASE64.encode(&hash)
    ))
}

/// HMAC (RFC 2104) over SHA-1, the construction OpenSSH uses for hashed host names.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The SHA-256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A short name for a key type, as `ssh-keygen -l` prints it (`ED25519`, `ECDSA`, `RSA`).
pub fn key_type(algorithm: &Algorithm) -> String {
    match algorithm {
        Algorithm::Ed25519 => "ED25519".into(),
        Algorithm::Ecdsa { .. } => "ECDSA".into(),
        Algorithm::Rsa { .. } => "RSA".into(),
        other => other.as_str().to_ascii_uppercase(),
    }
}

/// Looks up `key` for `name` (see [`host_pattern_name`]) in `files`, in order.
pub fn check(files: &[PathBuf], name: &str, key: &PublicKey) -> Verdict {
    let mut trusted = None;
    let mut changed = None;
    let mut others = Vec::new();
    for e in entries(files) {
        if e.marker == Marker::CertAuthority || !names_match(&e.names, name) {
            continue;
        }
        let same_key = e.key.key_data() == key.key_data();
        if e.marker == Marker::Revoked {
            if same_key {
                return Verdict::Revoked(e.at);
            }
            continue;
        }
        if same_key {
            trusted.get_or_insert(e.at);
        } else if same_type(&e.key, key) {
            changed.get_or_insert((e.at, fingerprint(&e.key)));
        } else {
            others.push((e.at, key_type(&e.key.algorithm())));
        }
    }
    // As in OpenSSH, a matching line anywhere wins over a stale line for the same host.
    match (trusted, changed) {
        (Some(at), _) => Verdict::Trusted(at),
        (None, Some((at, recorded))) => Verdict::Changed { at, recorded },
        (None, None) => Verdict::Unknown {
            other_types: others,
        },
    }
}

/// The outcome of checking a host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    /// Signed by a CA that an `@cert-authority` line trusts for the host, and valid for it.
    Trusted(Location),
    /// No `@cert-authority` line matches the host: the key inside the certificate is checked
    /// as a plain host key instead (as OpenSSH does).
    NoAuthority,
    /// Refused, and why.
    Refused(String),
}

/// True when an `@cert-authority` line matches `name`: the client then asks for host
/// certificates.
pub fn has_cert_authority(files: &[PathBuf], name: &str) -> bool {
    entries(files)
        .iter()
        .any(|e| e.marker == Marker::CertAuthority && names_match(&e.names, name))
}

/// Checks a host certificate for `name` (see [`host_pattern_name`]) at unix time `now`, as
/// OpenSSH does: a matching `@cert-authority` line must name the signing CA; neither the CA
/// nor the certified key may be `@revoked`; the certificate must be a host certificate, signed
/// correctly, inside its validity window, with one of its principals equal to one of
/// `principals` (the host name and address, case-insensitively), and without critical options.
pub fn check_certificate(
    files: &[PathBuf],
    name: &str,
    principals: &[String],
    cert: &Certificate,
    now: u64,
) -> CertVerdict {
    let all = entries(files);
    let ca = cert.signature_key();
    for e in all
        .iter()
        .filter(|e| e.marker == Marker::Revoked && names_match(&e.names, name))
    {
        if e.key.key_data() == cert.public_key() {
            return CertVerdict::Refused(format!(
                "the key it certifies is marked @revoked at {}",
                e.at
            ));
        }
        if e.key.key_data() == ca {
            return CertVerdict::Refused(format!(
                "the CA that signed it is marked @revoked at {}",
                e.at
            ));
        }
    }
    let authorities: Vec<&Entry> = all
        .iter()
        .filter(|e| e.marker == Marker::CertAuthority && names_match(&e.names, name))
        .collect();
    if authorities.is_empty() {
        return CertVerdict::NoAuthority;
    }
    let ca_key = PublicKey::new(ca.clone(), "");
    let Some(authority) = authorities.iter().find(|e| e.key.key_data() == ca) else {
        let lines: Vec<String> = authorities.iter().map(|e| e.at.to_string()).collect();
        return CertVerdict::Refused(format!(
            "it is signed by the CA {}, but the @cert-authority lines for `{name}` ({}) name other keys",
            fingerprint(&ca_key),
            lines.join(", ")
        ));
    };
    if cert.cert_type() != CertType::Host {
        return CertVerdict::Refused("it is a user certificate, not a host certificate".into());
    }
    if cert
        .validate_at(now, [&ca_key.fingerprint(HashAlg::Sha256)])
        .is_err()
    {
        let when = |t: u64| {
            i64::try_from(t)
                .ok()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "the end of time".into())
        };
        return CertVerdict::Refused(if now < cert.valid_after() {
            format!("it is not valid before {}", when(cert.valid_after()))
        } else if now >= cert.valid_before() {
            format!("it expired at {}", when(cert.valid_before()))
        } else {
            "its CA signature does not verify".into()
        });
    }
    let listed = cert.valid_principals();
    if listed.is_empty() {
        return CertVerdict::Refused(
            "it names no principals; a host certificate must name the host".into(),
        );
    }
    if !listed
        .iter()
        .any(|p| principals.iter().any(|h| p.eq_ignore_ascii_case(h)))
    {
        return CertVerdict::Refused(format!(
            "it is valid for {}, not for {}",
            listed.join(", "),
            principals.join(" or ")
        ));
    }
    if !cert.critical_options().is_empty() {
        let options: Vec<&String> = cert.critical_options().keys().collect();
        return CertVerdict::Refused(format!(
            "it carries critical options no host certificate may have: {options:?}"
        ));
    }
    CertVerdict::Trusted(authority.at.clone())
}

fn same_type(a: &PublicKey, b: &PublicKey) -> bool {
    match (a.algorithm(), b.algorithm()) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        (x, y) => x == y,
    }
}

/// The key algorithms on record for `name`, in file order, so the client can ask the server
/// for a key type it can verify (OpenSSH orders `HostKeyAlgorithms` the same way).
pub fn recorded_algorithms(files: &[PathBuf], name: &str) -> Vec<Algorithm> {
    let mut out: Vec<Algorithm> = Vec::new();
    for e in entries(files) {
        if e.marker == Marker::None && names_match(&e.names, name) {
            let alg = e.key.algorithm();
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
    }
    out
}

/// Serialises appends from parallel connections within this process.
static APPEND: Mutex<()> = Mutex::new(());

/// Records `key` for `name` at the end of `file` (created, with its directory, if missing), as
/// `StrictHostKeyChecking=accept-new` does. In a file that already holds hashed names the new
/// name is hashed too, as `HashKnownHosts yes` would write it, so the file does not start to
/// list the hosts in clear. Returns the line number written.
pub fn append(file: &Path, name: &str, key: &PublicKey) -> std::io::Result<usize> {
    let _guard = APPEND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = file.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let existing = std::fs::read(file).unwrap_or_default();
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        line.push('\n');
    }
    let mut key = key.clone();
    key.set_comment("");
    let encoded = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let hashed = String::from_utf8_lossy(&existing)
        .lines()
        .any(|l| l.trim_start().starts_with("|1|"));
    let shown = if hashed {
        hashed_name(name)?
    } else {
        name.to_string()
    };
    line.push_str(&format!("{shown} {}\n", encoded.trim_end()));
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    // One write call: concurrent appenders (other processes) cannot interleave within it.
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    let lines_before = existing.iter().filter(|b| **b == b'\n').count();
    let partial = usize::from(!existing.is_empty() && !existing.ends_with(b"\n"));
    Ok(lines_before + partial + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIOIIXPt09XK+Layg8m/D9P2tW+4Du2RBe6RaENWF68x";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIH0hsm2tfPEHj+P/GXIVn+ro3I9adVbovg9VMlA31RYz";
    const K3: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBASdKK0aYk7wFqyWo1jr6kkR4OIk4sh5qai8cDYTEvEsKNzzUcIXkAxRUqwlVmzQS26jzi3j73ZyGGlBNODP6hI=";
    /// `ssh-keygen -H` output for `cp-1.example` and `[127.0.0.1]:2299`, both with key K1.
    const HASHED: &str = "|1|EBRx1tKzair15UUkOAddn8NvUZE=|yBoVrCRKPPEvdX29Bxu0d9vKr/0= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIOIIXPt09XK+Layg8m/D9P2tW+4Du2RBe6RaENWF68x\n\
|1|RWSQxHvlrrBoiH5uXunT54lsULQ=|odasZAuutxu2igBif4FkKNqktwU= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIOIIXPt09XK+Layg8m/D9P2tW+4Du2RBe6RaENWF68x\n";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(dir: &tempfile::TempDir, text: &str) -> Vec<PathBuf> {
        let p = dir.path().join("known_hosts");
        std::fs::write(&p, text).unwrap();
        vec![p]
    }

    #[test]
    fn hashed_entries_from_ssh_keygen_match() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir, HASHED);
        assert!(matches!(
            check(&f, "cp-1.example", &key(K1)),
            Verdict::Trusted(Location { line: 1, .. })
        ));
        let name = host_pattern_name("127.0.0.1", 2299);
        assert_eq!(name, "[127.0.0.1]:2299");
        assert!(matches!(
            check(&f, &name, &key(K1)),
            Verdict::Trusted(Location { line: 2, .. })
        ));
        // The same host on port 22 is a different name.
        assert!(matches!(
            check(&f, "127.0.0.1", &key(K1)),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            check(&f, "cp-1.example", &key(K2)),
            Verdict::Changed {
                at: Location { line: 1, .. },
                ..
            }
        ));
    }

    #[test]
    fn changed_keys_name_the_line_counting_comments() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(
            &dir,
            &format!("# comment\n\nother ssh-ed25519 {K2}\ncp-1,10.0.0.11\tssh-ed25519 {K1} c\n"),
        );
        match check(&f, "10.0.0.11", &key(K2)) {
            Verdict::Changed { at, recorded } => {
                assert_eq!(at.line, 4);
                assert_eq!(at.file, f[0]);
                assert_eq!(recorded, fingerprint(&key(K1)));
                assert_eq!(
                    recorded,
                    "SHA256:LYr1pddOw54AtZfviOldhSc5L2d6DKwMtflyL3xif9U"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_key_of_another_type_is_unknown_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir, &format!("cp-1 ecdsa-sha2-nistp256 {K3}\n"));
        match check(&f, "cp-1", &key(K1)) {
            Verdict::Unknown { other_types } => {
                assert_eq!(other_types.len(), 1);
                assert_eq!(other_types[0].1, "ECDSA");
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(
            recorded_algorithms(&f, "cp-1"),
            [Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            }]
        );
    }

    #[test]
    fn patterns_negation_markers_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(
            &dir,
            &format!(
                "garbage\n*.prod,!db.prod ssh-ed25519 {K1}\n@revoked * ssh-ed25519 {K2}\n\
                 @cert-authority *.prod ssh-ed25519 {K2}\n[cp-9]:2222 ssh-ed25519 notbase64!\n"
            ),
        );
        assert!(matches!(
            check(&f, "cp-1.prod", &key(K1)),
            Verdict::Trusted(_)
        ));
        assert!(matches!(
            check(&f, "db.prod", &key(K1)),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            check(&f, "anything", &key(K2)),
            Verdict::Revoked(Location { line: 3, .. })
        ));
        assert!(matches!(
            check(&f, "[cp-9]:2222", &key(K1)),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn a_matching_line_anywhere_wins_over_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir, &format!("h ssh-ed25519 {K2}\nh ssh-ed25519 {K1}\n"));
        assert!(matches!(
            check(&f, "h", &key(K1)),
            Verdict::Trusted(Location { line: 2, .. })
        ));
    }

    #[test]
    fn append_creates_the_file_and_the_key_then_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/known_hosts");
        assert_eq!(append(&p, "[h]:2222", &key(K1)).unwrap(), 1);
        std::fs::write(
            &p,
            format!("{}x ssh-ed25519 {K2}", std::fs::read_to_string(&p).unwrap()),
        )
        .unwrap();
        assert_eq!(append(&p, "h", &key(K1)).unwrap(), 3);
        let files = vec![p.clone()];
        assert!(matches!(
            check(&files, "[h]:2222", &key(K1)),
            Verdict::Trusted(Location { line: 1, .. })
        ));
        assert!(matches!(
            check(&files, "h", &key(K1)),
            Verdict::Trusted(Location { line: 3, .. })
        ));
        assert!(matches!(check(&files, "x", &key(K2)), Verdict::Trusted(_)));
    }

    /// Issue 13: hashed names match whatever the case of the host name, as plain ones do.
    #[test]
    fn hashed_names_match_case_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir, HASHED);
        assert!(matches!(
            check(&f, "CP-1.Example", &key(K1)),
            Verdict::Trusted(Location { line: 1, .. })
        ));
    }

    /// Issue 13: a key recorded in a file of hashed names is hashed too, and still verifies.
    #[test]
    fn append_hashes_the_name_in_a_hashed_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir, HASHED);
        assert_eq!(append(&f[0], "[cp-2.example]:2222", &key(K2)).unwrap(), 3);
        let text = std::fs::read_to_string(&f[0]).unwrap();
        assert!(!text.contains("cp-2"), "{text}");
        assert!(text.lines().nth(2).unwrap().starts_with("|1|"), "{text}");
        assert!(matches!(
            check(&f, "[CP-2.example]:2222", &key(K2)),
            Verdict::Trusted(Location { line: 3, .. })
        ));
    }

    /// Makes an ed25519 key at `dir/name` with ssh-keygen; returns its public line.
    fn keygen(dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Signs `dir/key.pub` with `dir/ca`; `args` are ssh-keygen's certificate options.
    fn sign(dir: &Path, key: &str, args: &[&str]) -> Certificate {
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(dir.join("ca"))
            .args(["-I", "test"])
            .args(args)
            .arg(dir.join(format!("{key}.pub")))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let text = std::fs::read_to_string(dir.join(format!("{key}-cert.pub"))).unwrap();
        Certificate::from_openssh(text.trim()).unwrap()
    }

    /// Host certificates: trusted through a matching @cert-authority line only when host
    /// certificate, principal, validity window, CA and revocations all agree.
    #[test]
    fn host_certificates_are_checked_like_openssh() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = keygen(d, "ca");
        let other_ca = keygen(d, "other_ca");
        keygen(d, "host");
        let names = vec!["cp-1.prod".to_string(), "10.0.0.11".to_string()];
        let now = 1_800_000_000; // 2027
        let good = sign(d, "host", &["-h", "-n", "cp-1.prod,10.0.0.11"]);
        let kh = |text: String| file(&dir, &text);
        let check =
            |f: &[PathBuf], c: &Certificate| check_certificate(f, "cp-1.prod", &names, c, now);

        let trusting = kh(format!("# fleet CA\n@cert-authority *.prod {ca}\n"));
        assert!(has_cert_authority(&trusting, "cp-1.prod"));
        assert!(!has_cert_authority(&trusting, "db.example"));
        assert_eq!(
            check(&trusting, &good),
            CertVerdict::Trusted(Location {
                file: trusting[0].clone(),
                line: 2
            })
        );
        // The address is a principal too; names are compared without case.
        assert!(matches!(
            check_certificate(&trusting, "cp-1.prod", &["CP-1.PROD".into()], &good, now),
            CertVerdict::Trusted(_)
        ));

        let refused = |f: &[PathBuf], c: &Certificate, why: &str| match check(f, c) {
            CertVerdict::Refused(r) => assert!(r.contains(why), "{r} lacks {why}"),
            v => panic!("{v:?}, wanted a refusal with {why}"),
        };
        refused(
            &trusting,
            &sign(d, "host", &["-h", "-n", "cp-2.prod"]),
            "valid for cp-2.prod, not for cp-1.prod or 10.0.0.11",
        );
        refused(&trusting, &sign(d, "host", &["-h"]), "names no principals");
        refused(
            &trusting,
            &sign(
                d,
                "host",
                &["-h", "-n", "cp-1.prod", "-V", "20000101:20010101"],
            ),
            "expired at 2001-01-01",
        );
        refused(
            &trusting,
            &sign(
                d,
                "host",
                &["-h", "-n", "cp-1.prod", "-V", "20300101:20310101"],
            ),
            "not valid before 2030-01-01",
        );
        refused(
            &trusting,
            &sign(d, "host", &["-n", "cp-1.prod"]),
            "a user certificate",
        );
        refused(
            &kh(format!("@cert-authority * {other_ca}\n")),
            &good,
            "name other keys",
        );
        refused(
            &kh(format!("@cert-authority * {ca}\n@revoked * {ca}\n")),
            &good,
            "the CA that signed it is marked @revoked",
        );
        let host = std::fs::read_to_string(d.join("host.pub")).unwrap();
        refused(
            &kh(format!(
                "@cert-authority * {ca}\n@revoked cp-1.prod {}\n",
                host.trim()
            )),
            &good,
            "the key it certifies is marked @revoked",
        );
        // A CA for other hosts does not apply: the key inside is checked as a plain key.
        assert_eq!(
            check(&kh(format!("@cert-authority *.staging {ca}\n")), &good),
            CertVerdict::NoAuthority
        );
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        assert_eq!(
            hex::encode(hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex::encode(hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }
}
