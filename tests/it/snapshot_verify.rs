//! `etcd-recover snapshot verify` on real snapshots taken from a throwaway etcd 3.5.1, and on
//! damaged copies of them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::harness::*;

struct Made {
    dir: PathBuf,
    snapshot: PathBuf,
    raw_db: PathBuf,
}

/// Starts etcd once, writes a few keys, saves a snapshot, stops etcd and copies its db file.
fn made() -> &'static Made {
    static MADE: OnceLock<Made> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshot-verify");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut etcd = Etcd::start(&dir);
        for i in 0..5 {
            etcd.put(
                &format!("/registry/secret-key-{i}"),
                &format!("secret-value-{i}"),
            );
        }
        let snapshot = dir.join("snapshot.db");
        etcd.snapshot_save(&snapshot);
        etcd.stop();
        let raw_db = dir.join("raw-member-snap.db");
        std::fs::copy(etcd.data_dir.join("member/snap/db"), &raw_db).unwrap();
        Made {
            dir,
            snapshot,
            raw_db,
        }
    })
}

/// Writes `bytes` to a file of its own and returns the path.
fn write_case(name: &str, bytes: &[u8]) -> PathBuf {
    let p = made().dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `snapshot verify EXTRA... PATH`.
fn verify(path: &Path, extra: &[&str]) -> Outcome {
    etcd_recover()
        .args(["snapshot", "verify"])
        .args(extra)
        .arg(path)
        .run()
}

/// `snapshot verify -o json EXTRA... PATH`: the exit code and the verdict.
fn verify_json(path: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let r = verify(path, &[&["-o", "json"], extra].concat());
    (r.code, r.json())
}

fn etcdutl() -> String {
    etcd35_dir().join("etcdutl").to_string_lossy().into_owned()
}

#[test]
fn a_real_snapshot_is_valid_and_reports_its_facts() {
    let m = made();
    let bytes = std::fs::read(&m.snapshot).unwrap();
    assert_eq!(
        bytes.len() % 512,
        32,
        "etcdctl snapshot save writes a trailer"
    );

    let r = verify(&m.snapshot, &["--etcdutl", &etcdutl()]).success();
    let first = r.stdout.lines().next().unwrap();
    assert_eq!(
        first,
        format!("OK: {} is a valid etcd snapshot", m.snapshot.display())
    );
    assert!(r.stdout.contains(&sha256_hex(&bytes)));
    assert!(
        !r.stdout.contains("secret") && !r.stderr.contains("secret"),
        "contents leaked"
    );

    let (code, v) = verify_json(&m.snapshot, &["--etcdutl", &etcdutl()]);
    assert_eq!(code, Some(0));
    assert_eq!(v["valid"], true);
    assert_eq!(v["sha256"], sha256_hex(&bytes));
    assert_eq!(v["trailer_ok"], true);
    assert_eq!(v["size"], bytes.len());
    let page_size = v["page_size"].as_u64().unwrap();
    assert_eq!(
        v["pgid"].as_u64().unwrap() * page_size,
        bytes.len() as u64 - 32
    );
    // Five puts on a fresh etcd: revision 6.
    assert_eq!(v["status"]["revision"], 6, "{v}");
    assert!(v["status"]["totalKey"].as_u64().unwrap() >= 5);
    assert_eq!(v["status"]["totalSize"], bytes.len() - 32);
    // etcdutl ran on a copy: the file is untouched.
    assert_eq!(std::fs::read(&m.snapshot).unwrap(), bytes);

    // The library's streaming whole-file hash is the same identity.
    assert_eq!(
        etcd_recover::snapshot::sha256_file(&m.snapshot).unwrap(),
        sha256_hex(&bytes)
    );
}

#[test]
fn each_kind_of_damage_is_refused_with_its_own_error() {
    let good = std::fs::read(&made().snapshot).unwrap();
    let n = good.len();
    let mut flipped = good.clone();
    flipped[n / 2] ^= 0x04;
    let mut appended = good.clone();
    appended.extend_from_slice(&[0xAB; 512]);
    let random: Vec<u8> = (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).rotate_left(7) >> 11) as u8 | 0x80)
        .collect();
    let text = "apiVersion: v1\nkind: Pod\n".repeat(200);
    let mut bad_meta = good.clone();
    bad_meta[48] ^= 0x01; // meta page 0: freelist pgid, covered by the checksum

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated-1-byte.db",
            good[..n - 1].to_vec(),
            "the file is truncated",
        ),
        (
            "truncated-1-page.db",
            good[..n - 4096].to_vec(),
            "the file is truncated",
        ),
        ("bit-flipped.db", flipped, "SHA-256 mismatch"),
        (
            "no-trailer.db",
            good[..n - 32].to_vec(),
            "no integrity trailer (looks like a raw member/snap/db copy)",
        ),
        (
            "appended.db",
            appended,
            "does not match the bbolt high-water mark",
        ),
        ("empty.db", Vec::new(), "the file is empty"),
        (
            "random.db",
            random,
            "not an etcd snapshot or bbolt database: bad magic",
        ),
        (
            "text.db",
            text.into_bytes(),
            "the file is text, not an etcd snapshot",
        ),
        (
            "bad-meta.db",
            bad_meta,
            "bbolt meta page 0 is corrupt: checksum",
        ),
    ];
    let mut errors = Vec::new();
    for (name, bytes, want) in &cases {
        let path = write_case(name, bytes);
        let r = verify(&path, &["--no-etcdutl"]).expect_exit(1);
        let first = r.stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("REFUSED: {}: ", path.display())) && first.contains(want),
            "{name}: {first}"
        );
        // And the error, as every error is rendered: what, why, what to do.
        assert!(r.stderr.starts_with("error: "), "{name}: {r}");
        let e = r.error_block();
        assert_eq!(
            e.error,
            format!("snapshot `{}` cannot be restored", path.display()),
            "{name}"
        );
        assert!(
            e.causes.first().is_some_and(|c| c.contains(want)),
            "{name}: {r}"
        );
        let (code, v) = verify_json(&path, &["--no-etcdutl"]);
        assert_eq!(code, Some(1));
        assert_eq!(v["valid"], false);
        let error = v["error"].as_str().unwrap().to_string();
        assert!(error.contains(want), "{name}: {error}");
        errors.push(error);
    }
    // Truncation by one byte and by a page are told apart by the numbers they report.
    assert!(errors[0].contains("1 bytes are missing"), "{}", errors[0]);
    assert!(
        errors[1].contains("4096 bytes are missing"),
        "{}",
        errors[1]
    );
    let mut distinct = errors.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), errors.len(), "{errors:#?}");
}

#[test]
fn a_raw_db_copy_needs_the_explicit_opt_in() {
    let raw = &made().raw_db;
    let bytes = std::fs::read(raw).unwrap();
    assert_eq!(bytes.len() % 4096, 0);

    let r = verify(raw, &["--no-etcdutl"])
        .expect_exit(1)
        .stdout_contains("no integrity trailer")
        .stderr_contains("hint: ")
        .stderr_contains("--skip-hash-check");
    assert!(r.stdout.starts_with("REFUSED: "), "{}", r.stdout);

    let r = verify(raw, &["--skip-hash-check", "--etcdutl", &etcdutl()]).success();
    let mut lines = r.stdout.lines();
    assert!(lines.next().unwrap().starts_with("OK (STRUCTURE ONLY): "));
    assert!(lines
        .next()
        .unwrap()
        .starts_with("WARNING: --skip-hash-check"));

    let (code, v) = verify_json(raw, &["--skip-hash-check", "--etcdutl", &etcdutl()]);
    assert_eq!(code, Some(0));
    assert_eq!(v["structure_only"], true);
    assert_eq!(v["trailer_present"], false);
    assert_eq!(v["sha256"], sha256_hex(&bytes));
    assert_eq!(v["status"]["revision"], 6, "{v}");

    // The snapshot with its trailer cut off is the same case.
    let good = std::fs::read(&made().snapshot).unwrap();
    let cut = write_case("cut-trailer.db", &good[..good.len() - 32]);
    let (code, v) = verify_json(&cut, &["--skip-hash-check", "--no-etcdutl"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["structure_only"], true);
}

#[test]
fn a_trailer_is_checked_even_with_skip_hash_check() {
    let good = std::fs::read(&made().snapshot).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() - 100] ^= 0x80;
    let p = write_case("flipped-skip.db", &flipped);
    verify(&p, &["--skip-hash-check", "--no-etcdutl"])
        .expect_exit(1)
        .stdout_contains("SHA-256 mismatch");
}

#[test]
fn a_missing_file_or_directory_is_refused() {
    verify(&made().dir.join("does-not-exist.db"), &["--no-etcdutl"])
        .expect_exit(1)
        .stdout_contains("no such file");
    verify(&made().dir, &["--no-etcdutl"])
        .expect_exit(1)
        .stdout_contains("not a regular file");
}
