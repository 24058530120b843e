//! From the YAML tree to an [`Inventory`], collecting every problem with its position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{closest, Collector, Diagnostic};
use super::model::{
    Commands, EtcdSettings, Inventory, ManifestsDir, Node, RestoreTool, SshSettings, SudoMode,
    SudoPassword,
};
use super::target::parse_proxy_jump;
use super::yaml::{self, Key, Pos, Value};

const TOP_KEYS: &[&str] = &["cluster", "ssh", "etcd", "commands", "nodes"];
const NODE_KEYS: &[&str] = &["name", "host", "ssh", "etcd", "commands"];
const SSH_KEYS: &[&str] = &[
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "proxy_jump",
    "proxy_command",
    "sudo",
    "sudo_password",
    "connect_timeout",
    "command_timeout",
    "keepalive_interval",
    "keepalive_max",
];
const ETCD_KEYS: &[&str] = &["manifests_dir", "kubelet_config", "restore_tool", "run_dir"];
const COMMAND_KEYS: &[&str] = &["restart_kubelet"];

/// etcd stops accepting writes when it loses quorum; beyond 7 members every write waits for
/// more replicas without adding useful fault tolerance (etcd FAQ, "What is maximum cluster
/// size?": <https://etcd.io/docs/v3.5/faq/>).
const MAX_RECOMMENDED_MEMBERS: usize = 7;

/// Parses inventory text. `file` names the file in messages; `base_dir` anchors relative local
/// paths (`identity_file`, `known_hosts`); `home` expands `~`.
pub(crate) fn parse(
    text: &str,
    file: &Path,
    base_dir: &Path,
    home: Option<&Path>,
) -> Result<(Inventory, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut cx = Cx {
        out: Collector::new(file),
        base_dir,
        home,
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            cx.out.error(
                Pos { line: 1, col: 1 },
                "the inventory is empty",
                Some("start from inventory.example.yaml".into()),
            );
            return Err(cx.out.problems);
        }
        Err(e) => {
            cx.out.error(
                e.pos,
                format!("invalid YAML: {}", e.message),
                Some("fix the YAML syntax at that position (indentation, quotes, brackets)".into()),
            );
            return Err(cx.out.problems);
        }
    };
    let inventory = cx.inventory(&root, file);
    match inventory {
        Some(inv) if cx.out.problems.is_empty() => Ok((inv, cx.out.warnings)),
        _ => Err(cx.out.problems),
    }
}

struct Cx<'a> {
    out: Collector,
    base_dir: &'a Path,
    home: Option<&'a Path>,
}

/// Node fields collected before defaults are merged.
struct RawNode {
    name: Option<(String, Pos)>,
    host: Option<(String, Pos)>,
    ssh: SshSettings,
    etcd: EtcdPartial,
    commands: CommandsPartial,
    pos: Pos,
}

#[derive(Default, Clone)]
struct EtcdPartial {
    manifests_dir: Option<ManifestsDir>,
    kubelet_config: Option<String>,
    restore_tool: Option<RestoreTool>,
    run_dir: Option<String>,
}

impl EtcdPartial {
    fn overlay(&self, over: &EtcdPartial) -> EtcdPartial {
        EtcdPartial {
            manifests_dir: over
                .manifests_dir
                .clone()
                .or_else(|| self.manifests_dir.clone()),
            kubelet_config: over
                .kubelet_config
                .clone()
                .or_else(|| self.kubelet_config.clone()),
            restore_tool: over
                .restore_tool
                .clone()
                .or_else(|| self.restore_tool.clone()),
            run_dir: over.run_dir.clone().or_else(|| self.run_dir.clone()),
        }
    }

    fn finish(self) -> EtcdSettings {
        let d = EtcdSettings::default();
        EtcdSettings {
            manifests_dir: self.manifests_dir.unwrap_or(d.manifests_dir),
            kubelet_config: self.kubelet_config.unwrap_or(d.kubelet_config),
            restore_tool: self.restore_tool.unwrap_or(d.restore_tool),
            run_dir: self.run_dir.unwrap_or(d.run_dir),
        }
    }
}

#[derive(Default, Clone)]
struct CommandsPartial {
    restart_kubelet: Option<Vec<String>>,
}

impl Cx<'_> {
    fn inventory(&mut self, root: &yaml::Node, file: &Path) -> Option<Inventory> {
        let entries = self.map(root, "the inventory")?;
        self.check_keys(entries, TOP_KEYS, "the top level");
        let mut cluster = None;
        let mut ssh = SshSettings::default();
        let mut etcd = EtcdPartial::default();
        let mut commands = CommandsPartial::default();
        let mut raw_nodes = None;
        for (key, value) in entries {
            match key.text.as_str() {
                "cluster" => {
                    cluster = self.string(value, "cluster").and_then(|c| {
                        if c.trim().is_empty() || c.contains('\n') {
                            self.out.error(
                                value.pos,
                                "`cluster` must be a non-empty, single-line name",
                                Some("write the cluster's name, e.g. `cluster: prod-eu1`".into()),
                            );
                            None
                        } else {
                            Some(c)
                        }
                    })
                }
                "ssh" => ssh = self.ssh(value, "ssh"),
                "etcd" => etcd = self.etcd(value, "etcd"),
                "commands" => commands = self.commands(value, "commands"),
                "nodes" => raw_nodes = Some((self.nodes(value), key.pos)),
                _ => {}
            }
        }
        if cluster.is_none() && !entries.iter().any(|(k, _)| k.text == "cluster") {
            self.out.error(
                root.pos,
                "missing `cluster`",
                Some("add `cluster: NAME` at the top level; it is typed to confirm destructive steps".into()),
            );
        }
        let Some((raw_nodes, nodes_pos)) = raw_nodes else {
            self.out.error(
                root.pos,
                "missing `nodes`",
                Some("add a `nodes:` list with one `- name: ...` / `host: ...` entry per control-plane node".into()),
            );
            return None;
        };
        let nodes = self.merge_nodes(raw_nodes, &ssh, &etcd, &commands);
        if !nodes.is_empty() {
            self.member_count_warnings(nodes.len(), nodes_pos);
        }
        Some(Inventory {
            path: file.to_path_buf(),
            cluster: cluster?,
            nodes,
        })
    }

    fn member_count_warnings(&mut self, n: usize, pos: Pos) {
        if n > MAX_RECOMMENDED_MEMBERS {
            self.out.warn(
                pos,
                format!("{n} etcd members; more than {MAX_RECOMMENDED_MEMBERS} slows every write without adding useful fault tolerance"),
                Some("etcd recommends 3, 5 or 7 members".into()),
            );
        } else if n % 2 == 0 {
            self.out.warn(
                pos,
                format!(
                    "an even number of etcd members ({n}) tolerates no more failures than {}",
                    n - 1
                ),
                Some("etcd recommends an odd number of members (3, 5 or 7)".into()),
            );
        }
    }

    fn nodes(&mut self, node: &yaml::Node) -> Vec<RawNode> {
        let Value::Seq(items) = &node.value else {
            self.type_error(node, "`nodes`", "a list of nodes (`- name: cp-1` ...)");
            return Vec::new();
        };
        if items.is_empty() {
            self.out.error(
                node.pos,
                "`nodes` is empty",
                Some("list every control-plane node: `- name: cp-1` / `host: 10.0.0.11`".into()),
            );
        }
        items.iter().filter_map(|item| self.node(item)).collect()
    }

    fn node(&mut self, item: &yaml::Node) -> Option<RawNode> {
        let entries = self.map(item, "a node")?;
        self.check_keys(entries, NODE_KEYS, "a node");
        let mut raw = RawNode {
            name: None,
            host: None,
            ssh: SshSettings::default(),
            etcd: EtcdPartial::default(),
            commands: CommandsPartial::default(),
            pos: item.pos,
        };
        for (key, value) in entries {
            match key.text.as_str() {
                "name" => {
                    raw.name = self.string(value, "name").and_then(|n| {
                        let ok = !n.is_empty()
                            && n != "."
                            && n != ".."
                            && n
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                        if ok {
                            Some((n, value.pos))
                        } else {
                            self.out.error(
                                value.pos,
                                format!("node name `{n}` is not a usable etcd member name"),
                                Some("use the `--name` from the node's etcd.yaml (letters, digits, `.`, `_`, `-`)".into()),
                            );
                            None
                        }
                    })
                }
                "host" => {
                    raw.host = self.string(value, "host").and_then(|h| {
                        if h.is_empty() || h.chars().any(char::is_whitespace) {
                            self.out.error(
                                value.pos,
                                format!("`{h}` is not an SSH address"),
                                Some("write a host name, an IP address or a `Host` alias from your SSH config".into()),
                            );
                            None
                        } else {
                            Some((h, value.pos))
                        }
                    })
                }
                "ssh" => raw.ssh = self.ssh(value, "ssh"),
                "etcd" => raw.etcd = self.etcd(value, "etcd"),
                "commands" => raw.commands = self.commands(value, "commands"),
                _ => {}
            }
        }
        for (field, missing, example) in [
            ("name", raw.name.is_none(), "name: cp-1"),
            ("host", raw.host.is_none(), "host: 10.0.0.11"),
        ] {
            if missing && !entries.iter().any(|(k, _)| k.text == field) {
                self.out.error(
                    item.pos,
                    format!("node is missing `{field}`"),
                    Some(format!("add `{example}` to this node")),
                );
            }
        }
        Some(raw)
    }

    fn merge_nodes(
        &mut self,
        raw: Vec<RawNode>,
        ssh: &SshSettings,
        etcd: &EtcdPartial,
        commands: &CommandsPartial,
    ) -> Vec<Node> {
        let mut names: HashMap<String, Pos> = HashMap::new();
        let mut hosts: HashMap<(String, u16), Pos> = HashMap::new();
        let mut nodes = Vec::new();
        for r in raw {
            let (Some((name, name_pos)), Some((host, host_pos))) = (r.name, r.host) else {
                continue;
            };
            if let Some(first) = names.get(&name) {
                self.out.error(
                    name_pos,
                    format!(
                        "duplicate node name `{name}` (first defined at line {})",
                        first.line
                    ),
                    Some("every node needs its own etcd member name".into()),
                );
                continue;
            }
            names.insert(name.clone(), name_pos);
            let node_ssh = ssh.overlay(&r.ssh);
            let port = node_ssh.port.unwrap_or(22);
            let host_key = (host.to_ascii_lowercase(), port);
            if let Some(first) = hosts.get(&host_key) {
                self.out.error(
                    host_pos,
                    format!(
                        "duplicate host `{host}` port {port} (first used at line {})",
                        first.line
                    ),
                    Some("each node must have its own SSH address".into()),
                );
                continue;
            }
            hosts.insert(host_key, host_pos);
            let c = CommandsPartial {
                restart_kubelet: r
                    .commands
                    .restart_kubelet
                    .or_else(|| commands.restart_kubelet.clone()),
            };
            nodes.push(Node {
                name,
                host,
                ssh: node_ssh,
                etcd: etcd.overlay(&r.etcd).finish(),
                commands: Commands {
                    restart_kubelet: c
                        .restart_kubelet
                        .unwrap_or_else(|| Commands::default().restart_kubelet),
                },
                line: r.pos.line,
            });
        }
        nodes
    }

    fn ssh(&mut self, node: &yaml::Node, section: &str) -> SshSettings {
        let mut s = SshSettings::default();
        let Some(entries) = self.map(node, &format!("`{section}`")) else {
            return s;
        };
        self.check_keys(entries, SSH_KEYS, &format!("`{section}`"));
        let jump = entries.iter().find(|(k, _)| k.text == "proxy_jump");
        let command = entries.iter().find(|(k, _)| k.text == "proxy_command");
        if let (Some(_), Some((key, _))) = (jump, command) {
            self.out.error(
                key.pos,
                format!("`{section}` sets both `proxy_jump` and `proxy_command`"),
                Some(
                    "keep one: the connection goes through jump hosts or through a command".into(),
                ),
            );
        }
        for (key, value) in entries {
            let k = key.text.as_str();
            match k {
                "user" => {
                    s.user = self.string(value, k).and_then(|u| {
                        if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c == '@') {
                            self.out.error(value.pos, format!("`{u}` is not a user name"), None);
                            None
                        } else {
                            Some(u)
                        }
                    })
                }
                "port" => {
                    s.port = self.uint(value, k).and_then(|p| match u16::try_from(p) {
                        Ok(p) if p > 0 => Some(p),
                        _ => {
                            self.out.error(
                                value.pos,
                                format!("port {p} is out of range"),
                                Some("use a TCP port between 1 and 65535".into()),
                            );
                            None
                        }
                    })
                }
                "identity_file" => s.identity_files = self.local_paths(value, k),
                "known_hosts" => s.known_hosts = self.local_paths(value, k),
                "proxy_jump" => {
                    s.proxy_jump = self.string(value, k).and_then(|j| match parse_proxy_jump(&j)
                    {
                        Ok(_) => Some(j),
                        Err(e) => {
                            self.out.error(
                                value.pos,
                                format!("invalid `proxy_jump`: {e}"),
                                Some("write `[user@]host[:port]`, several hops separated by commas, or `none`".into()),
                            );
                            None
                        }
                    })
                }
                "proxy_command" => {
                    s.proxy_command = self.string(value, k).and_then(|c| {
                        if c.trim().is_empty() {
                            self.out.error(
                                value.pos,
                                "`proxy_command` is empty",
                                Some("write the command, e.g. `ssh -W %h:%p bastion`, or `none`".into()),
                            );
                            None
                        } else if self.plain_text(&c, value.pos, k) {
                            Some(c)
                        } else {
                            None
                        }
                    })
                }
                "sudo_password" => {
                    s.sudo_password = self.string(value, k).and_then(|v| match v.as_str() {
                        "prompt" => Some(SudoPassword::Prompt),
                        "none" => Some(SudoPassword::None),
                        other => {
                            self.out.error(
                                value.pos,
                                format!("`sudo_password: {other}` is not a choice"),
                                Some("use `prompt` (asked once on the terminal) or `none` (passwordless sudo)".into()),
                            );
                            None
                        }
                    })
                }
                "sudo" => {
                    s.sudo = self.string(value, k).and_then(|v| match v.as_str() {
                        "auto" => Some(SudoMode::Auto),
                        "always" => Some(SudoMode::Always),
                        "never" => Some(SudoMode::Never),
                        other => {
                            self.out.error(
                                value.pos,
                                format!("`sudo: {other}` is not a sudo mode"),
                                Some("use `auto` (sudo unless the user is root), `always` or `never`".into()),
                            );
                            None
                        }
                    })
                }
                "connect_timeout" => s.connect_timeout = self.seconds(value, k, false),
                "command_timeout" => s.command_timeout = self.seconds(value, k, false),
                "keepalive_interval" => s.keepalive_interval = self.seconds(value, k, true),
                "keepalive_max" => {
                    s.keepalive_max = self.uint(value, k).and_then(|n| match u32::try_from(n) {
                        Ok(n) if n > 0 => Some(n),
                        _ => {
                            self.out.error(
                                value.pos,
                                "`keepalive_max` must be at least 1",
                                None,
                            );
                            None
                        }
                    })
                }
                _ => {}
            }
        }
        s
    }

    fn etcd(&mut self, node: &yaml::Node, section: &str) -> EtcdPartial {
        let mut e = EtcdPartial::default();
        let Some(entries) = self.map(node, &format!("`{section}`")) else {
            return e;
        };
        self.check_keys(entries, ETCD_KEYS, &format!("`{section}`"));
        for (key, value) in entries {
            let k = key.text.as_str();
            match k {
                "manifests_dir" => {
                    e.manifests_dir = self.string(value, k).and_then(|v| {
                        if v == "auto" {
                            Some(ManifestsDir::Auto)
                        } else {
                            self.node_path(&v, value.pos, k).map(ManifestsDir::Path)
                        }
                    })
                }
                "restore_tool" => {
                    e.restore_tool = self.string(value, k).and_then(|v| {
                        if v == "auto" {
                            Some(RestoreTool::Auto)
                        } else {
                            self.node_path(&v, value.pos, k).map(RestoreTool::Path)
                        }
                    })
                }
                "kubelet_config" => {
                    e.kubelet_config = self
                        .string(value, k)
                        .and_then(|v| self.node_path(&v, value.pos, k))
                }
                "run_dir" => {
                    e.run_dir = self
                        .string(value, k)
                        .and_then(|v| self.node_path(&v, value.pos, k))
                }
                _ => {}
            }
        }
        e
    }

    fn commands(&mut self, node: &yaml::Node, section: &str) -> CommandsPartial {
        let mut c = CommandsPartial::default();
        let Some(entries) = self.map(node, &format!("`{section}`")) else {
            return c;
        };
        self.check_keys(entries, COMMAND_KEYS, &format!("`{section}`"));
        for (key, value) in entries {
            if key.text == "restart_kubelet" {
                c.restart_kubelet = self.argv(value, "restart_kubelet");
            }
        }
        c
    }

    /// Reports unknown and duplicate keys of a mapping.
    fn check_keys(&mut self, entries: &[(Key, yaml::Node)], known: &[&str], section: &str) {
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for (key, _) in entries {
            if let Some(first) = seen.get(key.text.as_str()) {
                self.out.error(
                    key.pos,
                    format!(
                        "duplicate key `{}` in {section} (first at line {})",
                        key.text, first.line
                    ),
                    Some("keep one of the two".into()),
                );
                continue;
            }
            seen.insert(&key.text, key.pos);
            if !known.contains(&key.text.as_str()) {
                let fix = match closest(&key.text, known) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("known keys here: {}", known.join(", ")),
                };
                self.out.error(
                    key.pos,
                    format!("unknown key `{}` in {section}", key.text),
                    Some(fix),
                );
            }
        }
    }

    fn map<'n>(&mut self, node: &'n yaml::Node, what: &str) -> Option<&'n [(Key, yaml::Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.type_error(node, what, "a mapping (`key: value` lines)");
                None
            }
        }
    }

    fn type_error(&mut self, node: &yaml::Node, what: &str, expected: &str) {
        self.out.error(
            node.pos,
            format!("{what} must be {expected}, found {}", node.kind()),
            None,
        );
    }

    fn string(&mut self, node: &yaml::Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            _ => {
                self.type_error(node, &format!("`{key}`"), "a string");
                None
            }
        }
    }

    fn uint(&mut self, node: &yaml::Node, key: &str) -> Option<u64> {
        match &node.value {
            Value::Scalar { text, plain: true } => match text.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.type_error(node, &format!("`{key}`"), "a whole number");
                    None
                }
            },
            _ => {
                self.type_error(node, &format!("`{key}`"), "a whole number");
                None
            }
        }
    }

    fn seconds(&mut self, node: &yaml::Node, key: &str, zero_ok: bool) -> Option<Duration> {
        let secs = match &node.value {
            Value::Scalar { text, plain: true } => text.parse::<f64>().ok(),
            _ => None,
        };
        match secs {
            Some(s) if s.is_finite() && s >= 0.0 && (zero_ok || s > 0.0) && s < 1e9 => {
                Some(Duration::from_secs_f64(s))
            }
            Some(_) => {
                self.out.error(
                    node.pos,
                    format!(
                        "`{key}` must be {} number of seconds",
                        if zero_ok {
                            "a non-negative"
                        } else {
                            "a positive"
                        }
                    ),
                    None,
                );
                None
            }
            None => {
                self.type_error(node, &format!("`{key}`"), "a number of seconds");
                None
            }
        }
    }

    /// A string or a list of strings, as local paths.
    fn local_paths(&mut self, node: &yaml::Node, key: &str) -> Option<Vec<PathBuf>> {
        let items: Vec<&yaml::Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar { .. } if !node.is_null() => vec![node],
            _ => {
                self.type_error(node, &format!("`{key}`"), "a path or a list of paths");
                return None;
            }
        };
        let mut out = Vec::new();
        for item in items {
            let text = self.string(item, key)?;
            if text.is_empty() {
                self.out.error(item.pos, format!("`{key}` is empty"), None);
                return None;
            }
            out.push(expand_local_path(&text, self.base_dir, self.home));
        }
        Some(out)
    }

    /// A path on the node: absolute, no `~` (the node's home is not ours to guess), no
    /// control characters.
    fn node_path(&mut self, path: &str, pos: Pos, key: &str) -> Option<String> {
        if !self.plain_text(path, pos, key) {
            return None;
        }
        if path.starts_with('/') {
            Some(path.to_string())
        } else {
            self.out.error(
                pos,
                format!("`{key}` must be an absolute path on the node, found `{path}`"),
                Some(format!(
                    "write it as `/...`{}",
                    if key == "manifests_dir" || key == "restore_tool" {
                        ", or `auto`"
                    } else {
                        ""
                    }
                )),
            );
            None
        }
    }

    fn argv(&mut self, node: &yaml::Node, key: &str) -> Option<Vec<String>> {
        let Value::Seq(items) = &node.value else {
            self.out.error(
                node.pos,
                format!("`{key}` must be an argument list, found {}", node.kind()),
                Some(format!(
                    "write it as a list, e.g. `{key}: [systemctl, restart, kubelet]`"
                )),
            );
            return None;
        };
        if items.is_empty() {
            self.out.error(node.pos, format!("`{key}` is empty"), None);
            return None;
        }
        let mut argv = Vec::new();
        for item in items {
            let word = self.string(item, key)?;
            if !self.plain_text(&word, item.pos, key) {
                return None;
            }
            argv.push(word);
        }
        Some(argv)
    }

    /// False (with an error naming `key`) when a value that is sent to the nodes holds a NUL
    /// byte or another control character: the node's shell would drop or misread it.
    fn plain_text(&mut self, value: &str, pos: Pos, key: &str) -> bool {
        let Some(c) = value.chars().find(|c| c.is_control()) else {
            return true;
        };
        let what = if c == '\0' {
            "a NUL byte".to_string()
        } else {
            format!("the control character {}", c.escape_unicode())
        };
        self.out.error(
            pos,
            format!(
                "`{key}` (`{}`) contains {what}, which cannot be sent to a node intact",
                value.escape_debug()
            ),
            Some("remove it; paths and arguments on the nodes are plain text".into()),
        );
        false
    }
}

/// Expands `~` and `~/...` with `home`, and anchors relative paths at `base_dir`.
pub(crate) fn expand_local_path(path: &str, base_dir: &Path, home: Option<&Path>) -> PathBuf {
    if let (Some(home), Some(rest)) = (home, path.strip_prefix('~')) {
        if rest.is_empty() {
            return home.to_path_buf();
        }
        if let Some(rest) = rest.strip_prefix('/') {
            return home.join(rest);
        }
    }
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}
