//! Inventory parsing: the example file, merging, and every kind of error with its position.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Loaded, InventoryError> {
    from_str(
        text,
        Path::new("/srv/inv/inventory.yaml"),
        Path::new("/srv/inv"),
        Some(Path::new("/home/me")),
    )
}

/// The problems as `line:col: message [fix]` strings.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected problems"),
        Err(InventoryError::Invalid { problems }) => problems
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}{}",
                    d.pos.line,
                    d.pos.col,
                    d.message,
                    d.fix
                        .as_ref()
                        .map(|f| format!(" [{f}]"))
                        .unwrap_or_default()
                )
            })
            .collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const MINIMAL: &str = "cluster: c\nnodes:\n  - name: cp-1\n    host: 10.0.0.11\n";

#[test]
fn the_example_inventory_loads() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory.example.yaml"),
    )
    .unwrap();
    let loaded = parse(&text).unwrap();
    let inv = &loaded.inventory;
    assert_eq!(inv.cluster, "prod-eu1");
    assert_eq!(inv.nodes.len(), 3);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let cp2 = inv.node("cp-2").unwrap();
    assert_eq!(cp2.ssh.port, Some(2222));
    assert_eq!(cp2.ssh.user.as_deref(), Some("root"));
    assert_eq!(
        cp2.ssh.identity_files,
        Some(vec![PathBuf::from("/home/me/.ssh/id_ed25519")])
    );
    assert_eq!(cp2.ssh.connect_timeout, Some(Duration::from_secs(10)));
    assert_eq!(cp2.etcd.run_dir, "/var/lib/etcd-recover");
    assert_eq!(
        cp2.commands.restart_kubelet,
        ["systemctl", "restart", "kubelet"]
    );
}

#[test]
fn node_settings_override_defaults_key_by_key() {
    let text = "cluster: c\n\
                ssh: {user: ops, port: 22, sudo: always, identity_file: keys/id}\n\
                etcd: {manifests_dir: auto, restore_tool: /opt/etcdutl}\n\
                commands: {restart_kubelet: [systemctl, restart, kubelet]}\n\
                nodes:\n\
                \x20 - name: cp-1\n\
                \x20   host: a\n\
                \x20   ssh: {port: 2222, known_hosts: [~/kh, /abs/kh]}\n\
                \x20   etcd: {run_dir: /data/run}\n\
                \x20   commands: {restart_kubelet: [/lab/restart, cp-1]}\n\
                \x20 - name: cp-2\n\
                \x20   host: b\n\
                \x20 - name: cp-3\n\
                \x20   host: c\n";
    let inv = parse(text).unwrap().inventory;
    let n1 = &inv.nodes[0];
    assert_eq!(n1.ssh.user.as_deref(), Some("ops"));
    assert_eq!(n1.ssh.port, Some(2222));
    assert_eq!(n1.ssh.sudo, Some(SudoMode::Always));
    assert_eq!(
        n1.ssh.identity_files,
        Some(vec![PathBuf::from("/srv/inv/keys/id")])
    );
    assert_eq!(
        n1.ssh.known_hosts,
        Some(vec![PathBuf::from("/home/me/kh"), PathBuf::from("/abs/kh")])
    );
    assert_eq!(n1.etcd.manifests_dir, ManifestsDir::Auto);
    assert_eq!(
        n1.etcd.restore_tool,
        RestoreTool::Path("/opt/etcdutl".into())
    );
    assert_eq!(n1.etcd.run_dir, "/data/run");
    assert_eq!(n1.etcd.kubelet_config, "/var/lib/kubelet/config.yaml");
    assert_eq!(n1.commands.restart_kubelet, ["/lab/restart", "cp-1"]);
    let n2 = &inv.nodes[1];
    assert_eq!(n2.ssh.port, Some(22));
    assert_eq!(n2.etcd.run_dir, "/var/lib/etcd-recover");
    assert_eq!(
        n2.commands.restart_kubelet,
        ["systemctl", "restart", "kubelet"]
    );
    assert_eq!(n2.line, 11);
}

#[test]
fn unknown_keys_suggest_the_closest_known_key() {
    let text = "cluster: c\nssh:\n  usr: root\n  identityfile: /k\nnodes:\n  - name: cp-1\n    hostname: a\n    colour: blue\n";
    assert_eq!(
        problems(text),
        [
            "3:3: unknown key `usr` in `ssh` [did you mean `user`?]",
            "4:3: unknown key `identityfile` in `ssh` [did you mean `identity_file`?]",
            "7:5: unknown key `hostname` in a node [did you mean `host`?]",
            "8:5: unknown key `colour` in a node [known keys here: name, host, ssh, etcd, commands]",
            "6:5: node is missing `host` [add `host: 10.0.0.11` to this node]",
        ]
    );
}

#[test]
fn duplicate_names_hosts_and_keys_point_at_the_second_one() {
    let text = "cluster: c\nnodes:\n  - name: cp-1\n    host: a\n  - name: cp-1\n    host: b\n  - name: cp-3\n    host: A\n  - name: cp-4\n    host: a\n    ssh: {port: 2222}\n    name: x\n";
    assert_eq!(
        problems(text),
        [
            "12:5: duplicate key `name` in a node (first at line 9) [keep one of the two]",
            "5:11: duplicate node name `cp-1` (first defined at line 3) [every node needs its own etcd member name]",
            "8:11: duplicate host `A` port 22 (first used at line 4) [each node must have its own SSH address]",
        ]
    );
}

#[test]
fn missing_top_level_fields() {
    assert_eq!(
        problems("ssh: {user: root}\n"),
        [
            "1:1: missing `cluster` [add `cluster: NAME` at the top level; it is typed to confirm destructive steps]",
            "1:1: missing `nodes` [add a `nodes:` list with one `- name: ...` / `host: ...` entry per control-plane node]",
        ]
    );
    assert_eq!(
        problems(""),
        ["1:1: the inventory is empty [start from inventory.example.yaml]"]
    );
    assert_eq!(
        problems("cluster: c\nnodes: []\n"),
        ["2:8: `nodes` is empty [list every control-plane node: `- name: cp-1` / `host: 10.0.0.11`]"]
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let text = "cluster: c\nssh:\n  port: \"22\"\n  connect_timeout: soon\n  sudo: maybe\n  identity_file: {a: b}\netcd: [x]\ncommands:\n  restart_kubelet: systemctl restart kubelet\nnodes:\n  - name: cp-1\n    host: [a]\n";
    assert_eq!(
        problems(text),
        [
            "3:9: `port` must be a whole number, found a string",
            "4:20: `connect_timeout` must be a number of seconds, found a string",
            "5:9: `sudo: maybe` is not a sudo mode [use `auto` (sudo unless the user is root), `always` or `never`]",
            "6:18: `identity_file` must be a path or a list of paths, found a mapping",
            "7:7: `etcd` must be a mapping (`key: value` lines), found a list",
            "9:20: `restart_kubelet` must be an argument list, found a string [write it as a list, e.g. `restart_kubelet: [systemctl, restart, kubelet]`]",
            "12:11: `host` must be a string, found a list",
        ]
    );
}

#[test]
fn values_are_validated() {
    let text = "cluster: c\nssh:\n  port: 70000\n  proxy_jump: \"ops@b:x\"\netcd:\n  run_dir: relative/dir\nnodes:\n  - name: \"cp 1\"\n    host: a\n";
    assert_eq!(
        problems(text),
        [
            "3:9: port 70000 is out of range [use a TCP port between 1 and 65535]",
            "4:15: invalid `proxy_jump`: bad port `x` in `ops@b:x` [write `[user@]host[:port]`, several hops separated by commas, or `none`]",
            "6:12: `run_dir` must be an absolute path on the node, found `relative/dir` [write it as `/...`]",
            "8:11: node name `cp 1` is not a usable etcd member name [use the `--name` from the node's etcd.yaml (letters, digits, `.`, `_`, `-`)]",
        ]
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let p = problems("cluster: c\nnodes:\n  - name: cp-1\n   host: a\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("4:"), "{p:?}");
    assert!(p[0].contains("invalid YAML"), "{p:?}");
}

#[test]
fn member_counts_give_warnings_not_errors() {
    let mut text = String::from("cluster: c\nnodes:\n");
    for i in 1..=4 {
        text.push_str(&format!("  - {{name: cp-{i}, host: h{i}}}\n"));
    }
    let w = parse(&text).unwrap().warnings;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].pos.line, 2);
    assert_eq!(
        w[0].message,
        "an even number of etcd members (4) tolerates no more failures than 3"
    );
    for i in 5..=9 {
        text.push_str(&format!("  - {{name: cp-{i}, host: h{i}}}\n"));
    }
    let w = parse(&text).unwrap().warnings;
    assert_eq!(w.len(), 1);
    assert!(
        w[0].message.starts_with("9 etcd members"),
        "{}",
        w[0].message
    );
    assert!(parse(MINIMAL).unwrap().warnings.is_empty());
}

#[test]
fn error_display_names_the_file_and_gives_a_hint() {
    let err = parse("cluster: c\nnodez: []\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("2 problems in inventory `/srv/inv/inventory.yaml`:\n  /srv/inv/inventory.yaml:2:1: unknown key `nodez` in the top level (did you mean `nodes`?)"),
        "{text}"
    );
    let err = parse("cluster: c\nssh: {usr: x}\nnodes: [{name: a, host: b}]\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/srv/inv/inventory.yaml:2:7: unknown key `usr` in `ssh`"
    );
    assert_eq!(err.hint(), "did you mean `user`?");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = load(Path::new("/nonexistent/inventory.yaml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read inventory `/nonexistent/inventory.yaml`"
    );
}

/// Issue 13: NUL and control characters in values that reach a node are refused, naming the
/// key (the remote shell would silently drop a NUL).
#[test]
fn nul_and_control_characters_in_node_values_are_refused() {
    let text = format!(
        "{MINIMAL}etcd: {{run_dir: \"/var/lib/x\\0y\", kubelet_config: \"/etc/k\\x1b[2J\"}}\n\
         commands: {{restart_kubelet: [systemctl, \"restart\\0\", kubelet]}}\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains("`run_dir` (`/var/lib/x\\0y`) contains a NUL byte")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("`kubelet_config`") && m.contains("\\u{1b}")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("`restart_kubelet`") && m.contains("NUL")),
        "{p:?}"
    );
}

/// `proxy_command` and `sudo_password` parse; one section cannot set both kinds of proxy; a
/// node's proxy (either kind) replaces the defaults'.
#[test]
fn proxy_command_and_sudo_password() {
    let text = "cluster: c\nssh:\n  proxy_command: socat - TCP:%h:%p\n  sudo_password: prompt\n\
                nodes:\n  - name: cp-1\n    host: a\n  - name: cp-2\n    host: b\n    \
                ssh: {proxy_jump: bastion}\n";
    let inv = parse(text).unwrap().inventory;
    assert_eq!(
        inv.nodes[0].ssh.proxy_command.as_deref(),
        Some("socat - TCP:%h:%p")
    );
    assert_eq!(inv.nodes[0].ssh.sudo_password, Some(SudoPassword::Prompt));
    assert_eq!(inv.nodes[1].ssh.proxy_command, None);
    assert_eq!(inv.nodes[1].ssh.proxy_jump.as_deref(), Some("bastion"));

    let both = "cluster: c\nssh:\n  proxy_jump: b\n  proxy_command: nc %h %p\nnodes:\n  - name: cp-1\n    host: a\n";
    let p = problems(both);
    assert!(
        p.iter()
            .any(|m| m.contains("sets both `proxy_jump` and `proxy_command`")),
        "{p:?}"
    );
    let bad =
        "cluster: c\nssh:\n  sudo_password: yes-please\nnodes:\n  - name: cp-1\n    host: a\n";
    assert!(problems(bad)[0].contains("`sudo_password: yes-please` is not a choice"));
}
