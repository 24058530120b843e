//! Real error paths of the real binary: every error is rendered as `error: ...`, then
//! `caused by: ...` for each cause, then `hint: ...`, and ends with its documented exit code
//! (docs/exit-codes.md).

mod support;

use etcd_recover_lab::testing::{Lab, LabOptions};
use support::*;

/// stderr lines of a run that must fail with `code`.
fn fails(state: &std::path::Path, args: &[&str], code: i32) -> Vec<String> {
    let out = run(state, args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stderr.lines().map(String::from).collect()
}

/// The error block: `error:` first, then only `caused by:` lines, then one `hint:` last.
fn assert_form(lines: &[String]) -> (String, Vec<String>, String) {
    let start = lines
        .iter()
        .position(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {lines:#?}"));
    let block = &lines[start..];
    let hint = block.last().unwrap();
    assert!(hint.starts_with("hint: "), "{block:#?}");
    let causes: Vec<String> = block[1..block.len() - 1]
        .iter()
        .map(|l| {
            l.strip_prefix("caused by: ")
                .unwrap_or_else(|| panic!("not a cause: {l:?} in {block:#?}"))
                .to_string()
        })
        .collect();
    (
        block[0]["error: ".len()..].to_string(),
        causes,
        hint["hint: ".len()..].to_string(),
    )
}

#[test]
fn a_missing_inventory_file() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("inventory.yaml");
    let lines = fails(
        tmp.path(),
        &["plan", "-i", inv.to_str().unwrap(), "--snapshot", "snap.db"],
        1,
    );
    let (error, causes, hint) = assert_form(&lines);
    assert_eq!(error, format!("cannot read inventory `{}`", inv.display()));
    assert_eq!(causes, ["No such file or directory (os error 2)"]);
    assert!(hint.contains("-i FILE"), "{hint}");
}

#[test]
fn an_unknown_key_in_the_inventory_names_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        "cluster: prod\nssh:\n  user: root\n  prot: 22\nnodes:\n  - name: cp-1\n    host: 10.0.0.1\n",
    )
    .unwrap();
    let lines = fails(
        tmp.path(),
        &["plan", "-i", inv.to_str().unwrap(), "--snapshot", "snap.db"],
        1,
    );
    let (error, causes, hint) = assert_form(&lines);
    assert_eq!(
        error,
        format!("{}:4:3: unknown key `prot` in `ssh`", inv.display())
    );
    assert!(causes.is_empty(), "{causes:?}");
    assert!(hint.contains("port"), "{hint}");
}

#[test]
fn a_corrupt_snapshot_is_refused_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap.db");
    std::fs::write(&snap, vec![0x07u8; 70_000]).unwrap();
    let lines = fails(
        tmp.path(),
        &["snapshot", "verify", "--no-etcdutl", snap.to_str().unwrap()],
        1,
    );
    let (error, causes, hint) = assert_form(&lines);
    assert_eq!(
        error,
        format!("snapshot `{}` cannot be restored", snap.display())
    );
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert!(causes[0].contains("bad magic"), "{causes:?}");
    assert!(hint.contains("etcdctl snapshot save"), "{hint}");
}

#[test]
fn usage_errors_without_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    // No snapshot and no terminal to run the guide on.
    let lines = fails(tmp.path(), &["apply", "-i", "inventory.yaml"], 2);
    let (error, _, hint) = assert_form(&lines);
    assert_eq!(error, "apply needs --snapshot FILE or --plan FILE");
    assert!(hint.contains("etcd-recover guide"), "{hint}");
    let lines = fails(tmp.path(), &["guide", "-i", "inventory.yaml"], 2);
    let (error, _, _) = assert_form(&lines);
    assert_eq!(error, "the guide asks questions and needs a terminal");
    // clap's own usage errors keep exit code 2.
    let out = run(tmp.path(), &["apply", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Against a lab: a corrupt snapshot blocks the plan (3) and apply (3) with nothing changed;
/// apply without a terminal and without --yes is declined (7); an unknown run fails (1).
#[test]
fn refusals_against_a_lab() {
    let l = Lab::up(LabOptions {
        nodes: 1,
        poll_ms: 200,
        ..LabOptions::default()
    })
    .expect("lab up");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let inv = l.inventory.to_str().unwrap();
    let before = manifests(&l);
    let bad = tmp.path().join("corrupt.db");
    std::fs::write(&bad, vec![0x07u8; 70_000]).unwrap();
    let bad = bad.to_str().unwrap();

    let out = run(&state, &["plan", "-i", inv, "--snapshot", bad]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    assert!(text(&out).0.contains("REFUSED"), "{}", text(&out).0);

    let lines = fails(&state, &["apply", "-i", inv, "--snapshot", bad, "--yes"], 3);
    let text_all = lines.join("\n");
    assert!(text_all.contains("Preflight findings"), "{text_all}");
    assert!(text_all.contains("bad magic"), "{text_all}");
    let (error, _, hint) = assert_form(&lines);
    assert_eq!(
        error,
        "preflight failed on the plan for lab: nothing was changed"
    );
    assert!(hint.contains("fix the errors above"), "{hint}");

    let good = snapshot(&l, tmp.path(), "good.db");
    let lines = fails(
        &state,
        &["apply", "-i", inv, "--snapshot", good.to_str().unwrap()],
        7,
    );
    let (error, _, hint) = assert_form(&lines);
    assert!(
        error.contains("needs confirmation, but there is no terminal"),
        "{error}"
    );
    assert!(hint.contains("--yes"), "{hint}");

    let lines = fails(&state, &["resume", "20991231-235959-0000"], 1);
    let (error, _, _) = assert_form(&lines);
    assert!(error.contains("20991231-235959-0000"), "{error}");

    assert_eq!(manifests(&l), before);
    assert!(
        !state.join("runs").exists()
            || std::fs::read_dir(state.join("runs"))
                .unwrap()
                .next()
                .is_none()
    );
}
