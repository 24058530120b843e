//! The integration tests of etcd-recover, in one test binary (one build, one link, one run): the
//! real binary on files, against a throwaway sshd or etcd, and against real lab clusters (real
//! sshd, real etcd, a kubelet-like runner; see docs/lab.md).
//!
//! One module per area; [`harness`] holds everything they share. Lab tests run in parallel
//! threads, each lab in its own address slot.

mod harness;

mod check;
mod cli_errors;
mod failures;
mod guided;
mod interrupt;
mod manifest_fixtures;
mod plan;
mod restore;
mod snapshot_verify;
mod snapshots;
mod transport;

/// Cargo builds only this binary (`autotests = false`): a test file anywhere else under
/// `tests/` would never run. `tests/` holds this binary and the fixtures, and every
/// `tests/it/*.rs` is a module here.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&tests),
        ["fixtures", "it"],
        "only tests/it/ is built: make other test files modules of tests/it/main.rs"
    );
    let main = std::fs::read_to_string(tests.join("it/main.rs")).unwrap();
    for name in names(&tests.join("it")) {
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        assert!(
            module == "main" || main.contains(&format!("\nmod {module};\n")),
            "tests/it/{name} is not a module of tests/it/main.rs, so it never runs"
        );
    }
}
