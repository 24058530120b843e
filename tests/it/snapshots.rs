//! Snapshot tests (insta) of what users read: every command's `--help`, the plan of a lab
//! cluster as text and Markdown, and the report of a completed lab run. Whatever differs from
//! one run to the next (run ids, times, temporary paths, the lab's address slot, hashes and
//! IDs derived from them, sizes and revisions) is filtered; everything else must not change
//! unnoticed.

use std::path::Path;

use crate::harness::*;

/// `etcd-recover ARGS` with a clean environment for help output; stdout, asserting success.
fn help(args: &[&str]) -> String {
    // No environment: help shows the values of the ETCD_RECOVER_* variables it reads.
    etcd_recover().env_clear().args(args).run().success().stdout
}

/// The commands listed under "Commands:" in a help text (without `help`).
fn commands(help_text: &str) -> Vec<String> {
    help_text
        .split("Commands:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn help_of_every_command() {
    let cases: &[&[&str]] = &[
        &[],
        &["plan"],
        &["apply"],
        &["guide"],
        &["resume"],
        &["rollback"],
        &["status"],
        &["check"],
        &["completions"],
        &["manifest"],
        &["manifest", "rewrite"],
        &["manifest", "show"],
        &["snapshot"],
        &["snapshot", "verify"],
    ];
    for args in cases {
        let mut argv = args.to_vec();
        argv.push("--help");
        let name = if args.is_empty() {
            "help".to_string()
        } else {
            format!("help_{}", args.join("_"))
        };
        insta::assert_snapshot!(name, help(&argv));
    }
}

/// Every command and subcommand, as the help lists them (so commands added later are
/// covered too), has examples.
#[test]
fn every_command_has_examples() {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let mut argv: Vec<&str> = path.iter().map(String::as_str).collect();
        argv.push("--help");
        let text = help(&argv);
        assert!(
            text.contains("\nExamples:\n  etcd-recover "),
            "`etcd-recover {} --help` has no examples:\n{text}",
            path.join(" ")
        );
        for c in commands(&text) {
            let mut sub = path.clone();
            sub.push(c);
            todo.push(sub);
        }
        seen += 1;
    }
    assert!(seen >= 14, "only {seen} commands found");
}

#[test]
fn completions_know_every_command() {
    let top = commands(&help(&["--help"]));
    assert!(top.contains(&"guide".to_string()), "{top:?}");
    let bash = help(&["completions", "bash"]);
    assert!(bash.contains("complete -F _etcd__recover"), "{bash}");
    for c in &top {
        assert!(
            bash.contains(&format!("etcd__recover,{c})")) || bash.contains(&format!(" {c} ")),
            "bash completion lacks {c}"
        );
    }
    for shell in ["zsh", "fish"] {
        let text = help(&["completions", shell]);
        for c in &top {
            assert!(text.contains(c.as_str()), "{shell} completion lacks {c}");
        }
    }
}

/// Escapes a literal for a regex filter.
fn literal(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// Filters for a lab run: paths first (they contain the other patterns), then ids and times.
fn filters(l: &Lab, tmp: &Path) -> Vec<(String, String)> {
    vec![
        (literal(&l.dir.display().to_string()), "[LAB]".into()),
        (literal(&tmp.display().to_string()), "[TMP]".into()),
        (
            literal(&lab_bin().display().to_string()),
            "[LAB_BIN]".into(),
        ),
        (
            literal(&cache_dir().display().to_string()),
            "[CACHE]".into(),
        ),
        (r"127\.0\.\d+\.(\d+)".into(), "127.0.[SLOT].$1".into()),
        (r"\b[0-9a-f]{64}\b".into(), "[SHA256]".into()),
        (r"\b\d{8}-\d{6}-[0-9a-f]{4}\b".into(), "[RUN]".into()),
        (
            r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)".into(),
            "[TIME]".into(),
        ),
        // Member and cluster IDs derive from the run's token (hex, no leading zeros).
        (
            r"(cluster ID:? +`?)[0-9a-f]{1,16}\b".into(),
            "$1[ID]".into(),
        ),
        (r"(member ID +)[0-9a-f]{1,16}\b".into(), "$1[ID]".into()),
        (r"\| `[0-9a-f]{1,16}` \|".into(), "| `[ID]` |".into()),
        (r"\b\d+ bytes\b".into(), "[N] bytes".into()),
        (
            r"(?i)\brevision(\s+|\s*\|\s*)\d+".into(),
            "revision$1[N]".into(),
        ),
        (r"(?i)\bkeys(\s+|\s*\|\s*)\d+".into(), "keys$1[N]".into()),
        (r"\b\d+ keys\b".into(), "[N] keys".into()),
        (
            r"Total time: [\d.]+ s".into(),
            "Total time: [SECS] s".into(),
        ),
        (r"\bby [^\s@]+@\S+".into(), "by [OPERATOR]".into()),
        (
            r"etcd-recover \d+\.\d+\.\d+".into(),
            "etcd-recover [VERSION]".into(),
        ),
    ]
}

#[test]
fn plan_and_report_of_a_lab_cluster() {
    let s = Setup::new(LabOptions::nodes(3).poll_ms(200), 100);
    let mut settings = insta::Settings::clone_current();
    for (re, with) in &filters(&s.lab, s.tmp.path()) {
        settings.add_filter(re, with.as_str());
    }
    let _guard = settings.bind_to_scope();

    for (format, name) in [("text", "plan_text"), ("markdown", "plan_markdown")] {
        let out = s
            .cli()
            .plan(&s.lab.inventory)
            .snapshot(&s.snap)
            .format(format)
            .run()
            .success();
        insta::assert_snapshot!(name, out.stdout);
    }

    s.cli()
        .apply(&s.lab.inventory)
        .snapshot(&s.snap)
        .yes()
        .output("plain")
        .run()
        .success();
    let md = std::fs::read_to_string(run_dir(&s.state()).join("report.md")).unwrap();
    insta::assert_snapshot!("report_md", md);
}
