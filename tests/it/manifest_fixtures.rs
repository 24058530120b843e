//! Every manifest in `tests/fixtures/manifests/`: valid ones are read and rewritten with exactly
//! one changed line; `*-negative.yaml` ones are refused for the right reason. Plus synthetic
//! variants of a real manifest, and the real binary on one fixture.

use std::path::{Path, PathBuf};

use etcd_recover::etcd::ids::{InitialCluster, Urls};
use etcd_recover::manifest::{
    rewrite_data_hostpath, EtcdManifest, ManifestError, ProbeAction, ProbeSource, Rewrite,
    StaticPod,
};

use crate::harness::*;

const NEW: &str = "/var/lib/etcd-restored";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests")
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 28, "fixture corpus is missing files");
    out
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap()
}

/// Asserts the rewrite changed exactly one line, only inside the replaced range, and that
/// everything before and after is byte-identical.
fn assert_one_line_change(name: &str, original: &[u8], rw: &Rewrite) {
    let orig = std::str::from_utf8(original).unwrap();
    assert_eq!(
        rw.original, orig,
        "{name}: original text differs from the file"
    );
    let new = rw.rewritten.as_str();
    let r = &rw.replaced;
    assert_eq!(&new[..r.start], &orig[..r.start], "{name}: prefix changed");
    assert_eq!(
        &new[r.start + rw.replacement.len()..],
        &orig[r.end..],
        "{name}: suffix changed"
    );
    assert!(
        orig[r.clone()].contains(&rw.old_path),
        "{name}: replaced bytes"
    );
    assert!(rw.replacement.contains(&rw.new_path), "{name}: replacement");
    assert_eq!(
        orig.lines().count(),
        new.lines().count(),
        "{name}: line count"
    );
    let changed: Vec<(usize, &str, &str)> = orig
        .split_inclusive('\n')
        .zip(new.split_inclusive('\n'))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, a, b))
        .collect();
    assert_eq!(changed.len(), 1, "{name}: changed lines {changed:?}");
    assert_eq!(changed[0].0, rw.line, "{name}: reported line");
    assert!(changed[0].1.trim_start().starts_with("path:") || changed[0].1.contains("path:"));

    let diff = rw.unified_diff("etcd.yaml");
    assert!(
        diff.starts_with("--- a/etcd.yaml\n+++ b/etcd.yaml\n"),
        "{name}: {diff}"
    );
    let minus = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"));
    let plus = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"));
    assert_eq!(minus.count(), 1, "{name}: {diff}");
    assert_eq!(plus.count(), 1, "{name}: {diff}");

    // An independent structural check here too: only spec.volumes[i].hostPath.path differs.
    let mut a: serde_yaml::Value = serde_yaml::from_str(orig).unwrap();
    let b: serde_yaml::Value = serde_yaml::from_str(new).unwrap();
    let vols = a["spec"]["volumes"].as_sequence_mut().unwrap();
    let hit = vols
        .iter_mut()
        .filter(|v| v["name"].as_str() == Some(rw.volume.as_str()))
        .map(|v| v["hostPath"]["path"] = serde_yaml::Value::String(rw.new_path.clone()))
        .count();
    assert_eq!(hit, 1, "{name}");
    assert_eq!(a, b, "{name}: structure differs beyond the hostPath");
}

/// (data volume name, hostPath before the rewrite) for each valid fixture.
fn expected_data(name: &str) -> (&'static str, &'static str) {
    match name {
        "001.yaml" => ("etcd", "/var/lib/etcd"),
        "002.yaml" => ("etcd", "/data/etcd"),
        "007.yaml" => ("etcd-data", "/data/etcd"),
        _ => ("etcd-data", "/var/lib/etcd"),
    }
}

#[test]
fn every_valid_fixture_is_rewritten_with_one_changed_line() {
    let mut seen = 0;
    for (name, bytes) in fixtures().iter().filter(|(n, _)| !n.contains("negative")) {
        let m = EtcdManifest::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let data = m.data_volume().unwrap_or_else(|e| panic!("{name}: {e}"));
        let (volume, host) = expected_data(name);
        assert_eq!(data.mapping.volume, volume, "{name}");
        assert_eq!(data.mapping.volume_host_path, host, "{name}");
        let rw = rewrite_data_hostpath(bytes, NEW).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rw.old_path, host, "{name}");
        assert_one_line_change(name, bytes, &rw);
        // The result reads back with the new data directory and the same everything else.
        let after = EtcdManifest::parse(rw.rewritten.as_bytes()).unwrap();
        assert_eq!(after.data_volume().unwrap().host_data_dir(), NEW, "{name}");
        assert_eq!(after.flags, m.flags, "{name}");
        assert_eq!(after.volume_mounts, m.volume_mounts, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 20);
}

#[test]
fn every_negative_fixture_is_refused_for_its_reason() {
    let mut seen = 0;
    for (name, bytes) in fixtures().iter().filter(|(n, _)| n.contains("negative")) {
        let read = EtcdManifest::parse(bytes).unwrap_err();
        let rewrite = rewrite_data_hostpath(bytes, NEW).unwrap_err();
        assert_eq!(read, rewrite, "{name}: reading and rewriting refuse alike");
        let ok = match name.as_str() {
            // `...` ends the document, then an elided snippet follows.
            "021-negative.yaml" => matches!(
                read,
                ManifestError::MultipleDocuments {
                    explicit_end_line: Some(11),
                    ..
                }
            ),
            "022-negative.yaml" => matches!(
                read,
                ManifestError::InvalidYaml {
                    template_marker: Some(_),
                    ..
                }
            ),
            "023-negative.yaml" => matches!(
                read,
                ManifestError::Templated { ref marker, .. } if marker == "${NODE_IP}"
            ),
            "024-negative.yaml" => matches!(read, ManifestError::NotUtf8 { .. }),
            "025-negative.yaml" => matches!(
                read,
                ManifestError::NotAPod { ref kind, .. } if kind == "Deployment"
            ),
            "026-negative.yaml" => matches!(
                read,
                ManifestError::ApiDump { ref evidence } if evidence.contains("kubernetes.io/config.mirror")
            ),
            "027-negative.yaml" => matches!(
                read,
                ManifestError::MultipleDocuments {
                    explicit_end_line: None,
                    second_line: 72
                }
            ),
            "028-negative.yaml" => matches!(
                read,
                ManifestError::Templated { ref marker, .. } if marker.starts_with("{{")
            ),
            other => panic!("no expectation for {other}; add one"),
        };
        assert!(ok, "{name}: refused with the wrong reason: {read:?}");
        assert!(!read.hint().is_empty());
        seen += 1;
    }
    assert_eq!(seen, 8);
}

#[test]
fn discovery_facts_from_real_manifests() {
    let m = EtcdManifest::parse(&fixture("016.yaml")).unwrap();
    assert_eq!(m.name(), Some("kube-master3"));
    assert_eq!(
        m.initial_advertise_peer_urls(),
        Some("https://X.X.X.223:2380")
    );
    assert_eq!(m.initial_cluster_token(), None);
    assert_eq!(m.listen_metrics_urls(), Some("http://127.0.0.1:2381"));
    assert_eq!(m.version.unwrap().to_string(), "3.5.7");
    assert_eq!(
        m.advertise_client_urls_annotation.as_deref(),
        Some("https://X.X.X.223:2379")
    );
    assert_eq!(m.trusted_ca_file(), Some("/etc/kubernetes/pki/etcd/ca.crt"));
    assert_eq!(
        m.host_path(m.peer_key_file().unwrap()).unwrap().host_path,
        "/etc/kubernetes/pki/etcd/peer.key"
    );
    // The three-member value parses; the node's own entry is verified (R6). (The author
    // redacted the IPs as X.X.X.n, which are still valid host names.)
    let ic = InitialCluster::parse(m.initial_cluster().unwrap()).unwrap();
    assert_eq!(ic.members().len(), 3);
    let own = Urls::parse(m.initial_advertise_peer_urls().unwrap()).unwrap();
    ic.verify_member(m.name().unwrap(), &own).unwrap();

    // 019: kubeadm 1.31-style readiness probe.
    let m = EtcdManifest::parse(&fixture("019.yaml")).unwrap();
    let r = m.readiness.as_ref().unwrap();
    assert_eq!(r.source, ProbeSource::Readiness);
    assert_eq!(
        r.action.url("192.168.97.4").unwrap(),
        "http://127.0.0.1:2381/readyz"
    );
    assert_eq!(r.period_seconds, 1);

    // 016: no readiness probe; the startup probe stands in, and says so.
    let m = EtcdManifest::parse(&fixture("016.yaml")).unwrap();
    let r = m.readiness.as_ref().unwrap();
    assert_eq!(r.source, ProbeSource::Startup);
    assert!(r.note.is_some());

    // 002: hand-edited hostPath differs from --data-dir.
    let m = EtcdManifest::parse(&fixture("002.yaml")).unwrap();
    let d = m.data_volume().unwrap();
    assert_eq!(d.data_dir, "/var/lib/etcd");
    assert_eq!(d.host_data_dir(), "/data/etcd");
    let rw = rewrite_data_hostpath(&fixture("002.yaml"), NEW).unwrap();
    assert!(rw
        .notes
        .iter()
        .any(|n| n.contains("--data-dir=/var/lib/etcd")));

    // 003: exec liveness probe, no metrics URL; 020: 4-space indent, image version.
    let m = EtcdManifest::parse(&fixture("003.yaml")).unwrap();
    assert!(matches!(
        m.readiness.as_ref().unwrap().action,
        ProbeAction::Exec { .. }
    ));
    assert_eq!(m.name(), None);
    let m = EtcdManifest::parse(&fixture("020.yaml")).unwrap();
    assert_eq!(m.version.unwrap().to_string(), "3.5.10");

    // The light summary reads any of them.
    let p = StaticPod::parse(&fixture("019.yaml")).unwrap();
    assert_eq!(p.name, "etcd");
    assert_eq!(p.flag("data-dir"), Some("/var/lib/etcd"));
}

/// Synthetic variants of a real kubeadm manifest.
fn base() -> String {
    String::from_utf8(fixture("019.yaml")).unwrap()
}

const DATA_LINE: &str = "      path: /var/lib/etcd\n";

#[test]
fn synthetic_crlf_and_no_final_newline() {
    let crlf = base().replace('\n', "\r\n");
    let rw = rewrite_data_hostpath(crlf.as_bytes(), NEW).unwrap();
    assert_one_line_change("crlf", crlf.as_bytes(), &rw);
    assert!(rw
        .rewritten
        .contains("      path: /var/lib/etcd-restored\r\n"));
    assert_eq!(
        rw.rewritten.matches("\r\n").count(),
        crlf.matches("\r\n").count()
    );

    let no_nl = base().trim_end().to_string();
    let rw = rewrite_data_hostpath(no_nl.as_bytes(), NEW).unwrap();
    assert_one_line_change("no final newline", no_nl.as_bytes(), &rw);
    assert!(rw.rewritten.ends_with("status: {}"));
}

#[test]
fn synthetic_quoting_and_comments() {
    for (from, to) in [
        (
            "      path: '/var/lib/etcd'\n",
            "      path: '/var/lib/etcd-restored'\n",
        ),
        (
            "      path: \"/var/lib/etcd\"\n",
            "      path: \"/var/lib/etcd-restored\"\n",
        ),
        (
            "      path: /var/lib/etcd # data\n",
            "      path: /var/lib/etcd-restored # data\n",
        ),
        (
            "      path: /var/lib/etcd   \n",
            "      path: /var/lib/etcd-restored   \n",
        ),
    ] {
        let t = base().replace(DATA_LINE, from);
        let rw = rewrite_data_hostpath(t.as_bytes(), NEW).unwrap();
        assert_one_line_change(from, t.as_bytes(), &rw);
        assert_eq!(rw.rewritten, t.replace(from, to), "{from:?}");
    }
    // A value that needs quotes in plain style gets single quotes.
    let rw = rewrite_data_hostpath(base().as_bytes(), "/data/etcd: #1").unwrap();
    assert!(rw.rewritten.contains("      path: '/data/etcd: #1'\n"));
    assert_one_line_change("needs quotes", base().as_bytes(), &rw);
}

#[test]
fn synthetic_four_space_indent_and_flow_mapping() {
    // 020 is 4-space indented already; build a deeper variant from 019.
    let four = base().replace(
        "  volumes:\n  - hostPath:\n      path: /etc/kubernetes/pki/etcd\n      type: DirectoryOrCreate\n    name: etcd-certs\n  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n    name: etcd-data\n",
        "  volumes:\n      -   hostPath:\n              path: /etc/kubernetes/pki/etcd\n              type: DirectoryOrCreate\n          name: etcd-certs\n      -   name: etcd-data\n          hostPath:\n              path: /var/lib/etcd\n              type: DirectoryOrCreate\n",
    );
    assert_ne!(four, base());
    let rw = rewrite_data_hostpath(four.as_bytes(), NEW).unwrap();
    assert_one_line_change("four", four.as_bytes(), &rw);

    let flow = base().replace(
        "  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n",
        "  - hostPath: {path: /var/lib/etcd, type: DirectoryOrCreate}\n",
    );
    let rw = rewrite_data_hostpath(flow.as_bytes(), NEW).unwrap();
    assert_one_line_change("flow", flow.as_bytes(), &rw);
    assert!(rw
        .rewritten
        .contains("hostPath: {path: /var/lib/etcd-restored, type: DirectoryOrCreate}"));
    // In flow context a comma needs quotes.
    let rw = rewrite_data_hostpath(flow.as_bytes(), "/data/a,b").unwrap();
    assert!(rw.rewritten.contains("{path: '/data/a,b', type"));
}

/// Why rewriting `text` is refused.
fn refusal(text: &str, new_path: &str) -> ManifestError {
    rewrite_data_hostpath(text.as_bytes(), new_path).expect_err("a refusal")
}

#[test]
fn synthetic_refusals() {
    // Two volumes mounted at the data dir: no single candidate.
    let two = base().replace(
        "    - mountPath: /etc/kubernetes/pki/etcd\n      name: etcd-certs\n",
        "    - mountPath: /etc/kubernetes/pki/etcd\n      name: etcd-certs\n    - mountPath: /var/lib/etcd\n      name: etcd-certs\n",
    );
    assert!(matches!(
        refusal(&two, NEW),
        ManifestError::AmbiguousMount { .. }
    ));
    // The same volume defined twice.
    let dup = base().replace(
        "  volumes:\n",
        "  volumes:\n  - hostPath:\n      path: /srv/etcd\n    name: etcd-data\n",
    );
    assert!(matches!(
        refusal(&dup, NEW),
        ManifestError::DuplicateVolume { .. }
    ));
    // PVC instead of hostPath.
    let pvc = base().replace(
        "  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n    name: etcd-data\n",
        "  - name: etcd-data\n    persistentVolumeClaim:\n      claimName: etcd\n",
    );
    assert!(matches!(
        refusal(&pvc, NEW),
        ManifestError::NotHostPath { .. }
    ));
    // No volume mounted at the data dir.
    let none = base().replace(
        "    - mountPath: /var/lib/etcd\n      name: etcd-data\n",
        "",
    );
    assert!(matches!(refusal(&none, NEW), ManifestError::NoMount { .. }));
    // A block scalar cannot be edited in place.
    let block = base().replace(DATA_LINE, "      path: >-\n        /var/lib/etcd\n");
    assert!(matches!(
        refusal(&block, NEW),
        ManifestError::UneditableScalar { .. }
    ));
    // Bad new paths.
    for bad in ["var/lib/x", "/var/lib/../x", "/x\ny", "/"] {
        assert!(matches!(
            refusal(&base(), bad),
            ManifestError::InvalidNewPath { .. }
        ));
    }
}

/// `manifest rewrite --data-hostpath NEW ARGS... FILE`.
fn rewrite(args: &[&str], file: &Path) -> Outcome {
    etcd_recover()
        .args(["manifest", "rewrite", "--data-hostpath", NEW])
        .args(args)
        .arg(file)
        .run()
}

#[test]
fn binary_prints_a_one_line_diff() {
    let file = fixtures_dir().join("019.yaml");
    let out = rewrite(&["--diff"], &file)
        .success()
        .stderr_contains("ClusterConfiguration");
    let label = file.to_string_lossy().trim_start_matches('/').to_string();
    assert!(
        out.stdout
            .starts_with(&format!("--- a/{label}\n+++ b/{label}\n")),
        "{}",
        out.stdout
    );
    let changes: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .filter(|l| l.starts_with('-') || l.starts_with('+'))
        .collect();
    assert_eq!(
        changes,
        [
            "-      path: /var/lib/etcd",
            "+      path: /var/lib/etcd-restored"
        ]
    );

    // Without --diff: the whole file, byte for byte except the one value.
    let out = rewrite(&[], &file).success();
    let original = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        out.stdout,
        original.replace(DATA_LINE, "      path: /var/lib/etcd-restored\n")
    );
}

#[test]
fn binary_refuses_a_negative_fixture_with_a_hint() {
    let out = rewrite(&[], &fixtures_dir().join("026-negative.yaml"))
        .expect_exit(1)
        .stderr_contains("caused by: this is a Pod as returned by the API server")
        .stderr_contains("\nhint: ");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.starts_with("error: cannot rewrite"),
        "{}",
        out.stderr
    );
}

#[test]
fn binary_shows_manifest_facts() {
    let v = etcd_recover()
        .args(["manifest", "show", "-o", "json"])
        .arg(fixtures_dir().join("002.yaml"))
        .run()
        .success()
        .json();
    assert_eq!(v["data_volume"]["mapping"]["host_path"], "/data/etcd");
    assert_eq!(v["etcd"]["version"]["patch"], 17);
}
