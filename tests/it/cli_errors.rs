//! Real error paths of the real binary: every error is rendered as `error: ...`, then
//! `caused by: ...` for each cause, then `hint: ...`, and ends with its documented exit code
//! (docs/exit-codes.md).

use std::path::Path;

use crate::harness::*;

/// The error of `plan -i INVENTORY --snapshot snap.db`, which must fail with exit code 1.
fn plan_error(state: &Path, inventory: &Path) -> ErrorBlock {
    etcd_recover()
        .state(state)
        .plan(inventory)
        .args(["--snapshot", "snap.db"])
        .run()
        .expect_exit(1)
        .error_block()
}

#[test]
fn a_missing_inventory_file() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("inventory.yaml");
    let e = plan_error(tmp.path(), &inv);
    assert_eq!(
        e.error,
        format!("cannot read inventory `{}`", inv.display())
    );
    assert_eq!(e.causes, ["No such file or directory (os error 2)"]);
    assert!(e.hint.contains("-i FILE"), "{}", e.hint);
}

#[test]
fn an_unknown_key_in_the_inventory_names_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = write_file(
        tmp.path(),
        "inventory.yaml",
        "cluster: prod\nssh:\n  user: root\n  prot: 22\nnodes:\n  - name: cp-1\n    host: 10.0.0.1\n",
    );
    let e = plan_error(tmp.path(), &inv);
    assert_eq!(
        e.error,
        format!("{}:4:3: unknown key `prot` in `ssh`", inv.display())
    );
    assert!(e.causes.is_empty(), "{:?}", e.causes);
    assert!(e.hint.contains("port"), "{}", e.hint);
}

#[test]
fn a_corrupt_snapshot_is_refused_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = write_file(tmp.path(), "snap.db", [0x07u8; 70_000]);
    let e = etcd_recover()
        .state(tmp.path())
        .args(["snapshot", "verify", "--no-etcdutl"])
        .arg(&snap)
        .run()
        .expect_exit(1)
        .error_block();
    assert_eq!(
        e.error,
        format!("snapshot `{}` cannot be restored", snap.display())
    );
    assert_eq!(e.causes.len(), 1, "{:?}", e.causes);
    assert!(e.causes[0].contains("bad magic"), "{:?}", e.causes);
    assert!(e.hint.contains("etcdctl snapshot save"), "{}", e.hint);
}

#[test]
fn usage_errors_without_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = || etcd_recover().state(tmp.path());
    // No snapshot and no terminal to run the guide on.
    let e = cli()
        .args(["apply", "-i", "inventory.yaml"])
        .run()
        .expect_exit(2)
        .error_block();
    assert_eq!(e.error, "apply needs --snapshot FILE or --plan FILE");
    assert!(e.hint.contains("etcd-recover guide"), "{}", e.hint);
    let e = cli()
        .args(["guide", "-i", "inventory.yaml"])
        .run()
        .expect_exit(2)
        .error_block();
    assert_eq!(e.error, "the guide asks questions and needs a terminal");
    // clap's own usage errors keep exit code 2.
    cli().args(["apply", "--no-such-flag"]).run().expect_exit(2);
}

/// Against a lab: a corrupt snapshot blocks the plan (3) and apply (3) with nothing changed;
/// apply without a terminal and without --yes is declined (7); an unknown run fails (1).
#[test]
fn refusals_against_a_lab() {
    let s = Setup::new(LabOptions::nodes(1).poll_ms(200), 0);
    let l = &s.lab;
    let before = l.manifests();
    let bad = write_file(s.tmp.path(), "corrupt.db", [0x07u8; 70_000]);

    s.cli()
        .plan(&l.inventory)
        .snapshot(&bad)
        .run()
        .expect_exit(3)
        .stdout_contains("REFUSED");

    let out = s
        .cli()
        .apply(&l.inventory)
        .snapshot(&bad)
        .yes()
        .run()
        .expect_exit(3)
        .stderr_contains("Preflight findings")
        .stderr_contains("bad magic");
    let e = out.error_block();
    assert_eq!(
        e.error,
        "preflight failed on the plan for lab: nothing was changed"
    );
    assert!(e.hint.contains("fix the errors above"), "{}", e.hint);

    let e = s
        .cli()
        .apply(&l.inventory)
        .snapshot(&s.snap)
        .run()
        .expect_exit(7)
        .error_block();
    assert!(
        e.error
            .contains("needs confirmation, but there is no terminal"),
        "{}",
        e.error
    );
    assert!(e.hint.contains("--yes"), "{}", e.hint);

    let e = s
        .cli()
        .resume("20991231-235959-0000")
        .run()
        .expect_exit(1)
        .error_block();
    assert!(e.error.contains("20991231-235959-0000"), "{}", e.error);

    assert_eq!(l.manifests(), before);
    assert_no_runs(&s.state());
}
