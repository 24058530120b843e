//! Loading a static-pod manifest: the checks every manifest goes through, the pieces of a Pod
//! spec this tool reads (flags, mounts, volumes, security context, probes), and the light
//! [`StaticPod`] summary used for kube-apiserver, kube-controller-manager, kube-scheduler and
//! unknown files.

use serde::Serialize;

use super::error::ManifestError;
use super::yaml::{self, Kind, LoadError, Node, Style};

/// A loaded, validated manifest: its text and its YAML tree.
#[derive(Debug, Clone)]
pub(crate) struct PodDocument {
    pub text: String,
    /// Bytes before the YAML proper: 3 for a UTF-8 byte-order mark, else 0. Node positions
    /// count from there.
    pub body_offset: usize,
    pub root: Node,
}

impl PodDocument {
    /// `spec`, which [`load`] has checked is a mapping.
    pub fn spec(&self) -> &Node {
        self.root.get("spec").unwrap_or(&self.root)
    }

    /// `metadata.name`.
    pub fn name(&self) -> Result<String, ManifestError> {
        self.root
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad("metadata.name", "is missing"))
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> Option<String> {
        self.root
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Node::as_str)
            .map(str::to_string)
    }

    /// A `metadata.annotations` value.
    pub fn annotation(&self, key: &str) -> Option<String> {
        self.root
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(key))
            .and_then(Node::as_str)
            .map(str::to_string)
    }

    /// `spec.containers`, parsed.
    pub fn containers(&self) -> Result<Vec<Container>, ManifestError> {
        let list = match self.spec().get("containers") {
            None => return Err(ManifestError::NoContainers),
            Some(n) if n.is_null() => return Err(ManifestError::NoContainers),
            Some(n) => n.as_seq().ok_or_else(|| {
                bad(
                    "spec.containers",
                    format!("is a {}, not a list", n.kind_name()),
                )
            })?,
        };
        if list.is_empty() {
            return Err(ManifestError::NoContainers);
        }
        list.iter()
            .enumerate()
            .map(|(i, c)| Container::parse(c, &format!("spec.containers[{i}]")))
            .collect()
    }

    /// Every container that mounts volumes: `initContainers` and `containers`.
    pub fn all_mounts(&self) -> Result<Vec<(String, VolumeMount)>, ManifestError> {
        let mut out = Vec::new();
        for key in ["initContainers", "containers"] {
            let Some(list) = self.spec().get(key).and_then(Node::as_seq) else {
                continue;
            };
            for (i, c) in list.iter().enumerate() {
                let name = c
                    .get("name")
                    .and_then(Node::as_str)
                    .unwrap_or("?")
                    .to_string();
                for m in parse_mounts(c, &format!("spec.{key}[{i}]"))? {
                    out.push((name.clone(), m));
                }
            }
        }
        Ok(out)
    }

    /// `spec.volumes`, parsed, with each volume's index in the list.
    pub fn volumes(&self) -> Result<Vec<Volume>, ManifestError> {
        let Some(list) = self.spec().get("volumes") else {
            return Ok(Vec::new());
        };
        if list.is_null() {
            return Ok(Vec::new());
        }
        let items = list.as_seq().ok_or_else(|| {
            bad(
                "spec.volumes",
                format!("is a {}, not a list", list.kind_name()),
            )
        })?;
        let mut out = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let field = format!("spec.volumes[{i}]");
            let entries = v.as_map().ok_or_else(|| bad(&field, "is not a mapping"))?;
            let name = req_str(v, "name", &field)?;
            let source = if let Some(hp) = v.get("hostPath") {
                let path = req_str(hp, "path", &format!("{field}.hostPath"))?;
                VolumeSource::HostPath {
                    path,
                    kind: opt_str(hp, "type"),
                }
            } else {
                let kind = entries
                    .iter()
                    .filter_map(|(k, _)| k.as_str())
                    .find(|k| *k != "name")
                    .unwrap_or("(none)")
                    .to_string();
                VolumeSource::Other { kind }
            };
            out.push(Volume {
                name,
                index: i,
                source,
            });
        }
        Ok(out)
    }

    /// The pod-level `securityContext` user and group.
    pub fn pod_run_as(&self) -> Result<RunAs, ManifestError> {
        parse_run_as(self.spec().get("securityContext"), "spec.securityContext")
    }
}

/// Loads `bytes` as a static-pod manifest: one plain `v1` `Pod`, not a template, not an API dump.
pub(crate) fn load(bytes: &[u8]) -> Result<PodDocument, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    check_line_endings(text)?;
    if let Some((marker, line)) = find_curly_template(text) {
        return Err(ManifestError::Templated { marker, line });
    }
    // The kubelet's YAML reader skips a byte-order mark; yaml-rust2 would read it as part of
    // the first key.
    let body_offset = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let root = yaml::load(&text[body_offset..]).map_err(|e| match e {
        LoadError::Syntax { line, col, message } => ManifestError::InvalidYaml {
            line,
            col,
            message,
            template_marker: find_placeholder_in_text(text).map(|(m, _)| m),
        },
        LoadError::Empty => ManifestError::Empty,
        LoadError::MultipleDocuments {
            second_line,
            explicit_end_line,
        } => ManifestError::MultipleDocuments {
            second_line,
            explicit_end_line,
        },
        LoadError::DuplicateKey { key, line } => ManifestError::DuplicateKey { key, line },
        LoadError::UnknownAlias { line } => ManifestError::UnknownAlias { line },
    })?;
    if root.as_map().is_none() {
        return Err(bad(
            "the document",
            format!("is a {}, not a mapping", root.kind_name()),
        ));
    }
    check_merge_keys(&root)?;
    let kind = root.get("kind").and_then(Node::as_str).unwrap_or("");
    let api_version = root.get("apiVersion").and_then(Node::as_str).unwrap_or("");
    if kind != "Pod" || api_version != "v1" {
        return Err(ManifestError::NotAPod {
            kind: if kind.is_empty() { "(no kind)" } else { kind }.to_string(),
            api_version: if api_version.is_empty() {
                "(none)"
            } else {
                api_version
            }
            .to_string(),
        });
    }
    check_not_api_dump(&root)?;
    if let Some((marker, line)) = find_placeholder_in_tree(&root) {
        return Err(ManifestError::Templated { marker, line });
    }
    match root.get("spec") {
        Some(s) if s.as_map().is_some() => {}
        Some(s) => {
            return Err(bad(
                "spec",
                format!("is a {}, not a mapping", s.kind_name()),
            ))
        }
        None => return Err(bad("spec", "is missing")),
    }
    Ok(PodDocument {
        text: text.to_string(),
        body_offset,
        root,
    })
}

fn check_line_endings(text: &str) -> Result<(), ManifestError> {
    let bytes = text.as_bytes();
    let mut line = 1;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => line += 1,
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => {
                return Err(ManifestError::BareCarriageReturn { line })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Lines that are not comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
}

/// `{{ ... }}` (Go templates, Helm, Jinja) or `{% ... %}` outside comments.
fn find_curly_template(text: &str) -> Option<(String, usize)> {
    for (line, l) in code_lines(text) {
        for open in ["{{", "{%"] {
            if let Some(start) = l.find(open) {
                let close = if open == "{{" { "}}" } else { "%}" };
                let rest = &l[start..];
                let end = rest.find(close).map_or(rest.len().min(40), |e| e + 2);
                return Some((rest[..end].to_string(), line));
            }
        }
    }
    None
}

/// A `${NAME}` or `<name>` placeholder in `s`.
fn find_placeholder(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for (i, w) in b.windows(2).enumerate() {
        if w == b"${" {
            if let Some(end) = s[i + 2..].find('}') {
                let name = &s[i + 2..i + 2 + end];
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '='))
                {
                    return Some(s[i..i + 3 + end].to_string());
                }
            }
        }
    }
    for (i, c) in s.char_indices() {
        if c == '<' {
            if let Some(end) = s[i + 1..].find('>') {
                let name = &s[i + 1..i + 1 + end];
                if name.starts_with(|c: char| c.is_ascii_alphabetic())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    return Some(s[i..i + 2 + end].to_string());
                }
            }
        }
    }
    None
}

fn find_placeholder_in_text(text: &str) -> Option<(String, usize)> {
    code_lines(text).find_map(|(line, l)| find_placeholder(l).map(|m| (m, line)))
}

const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "busybox"];

fn is_shell(program: &str) -> bool {
    SHELLS.contains(&program.rsplit('/').next().unwrap_or(program))
}

/// A placeholder in a key or value, except in probe/lifecycle `exec` commands and in the command
/// and args of containers started through a shell, where `${VAR}` is ordinary shell syntax.
fn find_placeholder_in_tree(root: &Node) -> Option<(String, usize)> {
    let mut found = None;
    let mut shell_containers: Vec<String> = Vec::new();
    for key in ["containers", "initContainers"] {
        if let Some(list) = root
            .get("spec")
            .and_then(|s| s.get(key))
            .and_then(Node::as_seq)
        {
            for (i, c) in list.iter().enumerate() {
                let first = c
                    .get("command")
                    .and_then(Node::as_seq)
                    .and_then(|s| s.first())
                    .and_then(Node::as_str);
                if first.is_some_and(is_shell) {
                    shell_containers.push(format!("spec/{key}/{i}"));
                }
            }
        }
    }
    root.walk(&mut Vec::new(), &mut |path, node| {
        if found.is_some() {
            return;
        }
        let Some(s) = node.as_str() else { return };
        if path.iter().any(|p| p == "exec") {
            return;
        }
        let joined = path.join("/");
        if shell_containers.iter().any(|c| {
            joined.starts_with(&format!("{c}/command")) || joined.starts_with(&format!("{c}/args"))
        }) {
            return;
        }
        if let Some(m) = find_placeholder(s) {
            found = Some((m, node.pos.line));
        }
    });
    found
}

fn check_merge_keys(root: &Node) -> Result<(), ManifestError> {
    let mut line = None;
    root.walk(&mut Vec::new(), &mut |_, node| {
        if let Some(entries) = node.as_map() {
            for (k, _) in entries {
                if matches!(&k.kind, Kind::Scalar { value, style: Style::Plain } if value == "<<") {
                    line.get_or_insert(k.pos.line);
                }
            }
        }
    });
    match line {
        Some(line) => Err(ManifestError::MergeKey { line }),
        None => Ok(()),
    }
}

/// Annotations the kubelet or API server adds to mirror pods; never in a manifest file.
const MIRROR_ANNOTATIONS: &[&str] = &[
    "kubernetes.io/config.mirror",
    "kubernetes.io/config.hash",
    "kubernetes.io/config.seen",
    "kubernetes.io/config.source",
];

fn check_not_api_dump(root: &Node) -> Result<(), ManifestError> {
    // Most telling first: the mirror-pod annotations, then the API server's bookkeeping.
    let mut evidence = Vec::new();
    let meta = root.get("metadata");
    if let Some(ann) = meta.and_then(|m| m.get("annotations")) {
        for key in MIRROR_ANNOTATIONS {
            if let Some(n) = ann.get(key) {
                evidence.push(format!("the annotation `{key}` (line {})", n.pos.line));
            }
        }
    }
    if let Some(status) = root.get("status") {
        if !status.is_empty_or_null() {
            evidence.push(format!("a non-empty `status` (line {})", status.pos.line));
        }
    }
    if let Some(meta) = meta {
        for key in [
            "uid",
            "resourceVersion",
            "ownerReferences",
            "managedFields",
            "creationTimestamp",
        ] {
            if let Some(n) = meta.get(key).filter(|n| !n.is_null()) {
                evidence.push(format!("`metadata.{key}` (line {})", n.pos.line));
            }
        }
    }
    if evidence.is_empty() {
        return Ok(());
    }
    let more = evidence.len().saturating_sub(3);
    evidence.truncate(3);
    let mut evidence = evidence.join(", ");
    if more > 0 {
        evidence.push_str(&format!(" and {more} more sign(s)"));
    }
    Err(ManifestError::ApiDump { evidence })
}

pub(crate) fn bad(field: impl Into<String>, problem: impl Into<String>) -> ManifestError {
    ManifestError::BadField {
        field: field.into(),
        problem: problem.into(),
    }
}

fn opt_str(node: &Node, key: &str) -> Option<String> {
    node.get(key)
        .filter(|n| !n.is_null())
        .and_then(Node::as_str)
        .map(str::to_string)
}

fn req_str(node: &Node, key: &str, field: &str) -> Result<String, ManifestError> {
    match node.get(key) {
        Some(n) if !n.is_null() => n.as_str().map(str::to_string).ok_or_else(|| {
            bad(
                format!("{field}.{key}"),
                format!("is a {}, not a string", n.kind_name()),
            )
        }),
        _ => Err(bad(format!("{field}.{key}"), "is missing")),
    }
}

fn str_list(node: Option<&Node>, field: &str) -> Result<Vec<String>, ManifestError> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    if node.is_null() {
        return Ok(Vec::new());
    }
    let items = node
        .as_seq()
        .ok_or_else(|| bad(field, format!("is a {}, not a list", node.kind_name())))?;
    items
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("{field}[{i}]"), "is not a string"))
        })
        .collect()
}

/// One command-line flag, as written (`--name=value`, `--name value` or a bare `--name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The name without leading dashes.
    pub name: String,
    /// The value, if one was given.
    pub value: Option<String>,
}

/// Splits a container's `command` + `args` into flags, in order.
///
/// The first `command` element is the program unless it starts with `-`. `--name=value` and
/// `--name value` are both understood; a flag listed in `bool_flags` never takes the next
/// element as its value (Go's flag parsing). Returns the flags and the non-flag words.
pub(crate) fn parse_flags(
    command: &[String],
    args: &[String],
    bool_flags: &[&str],
) -> (Vec<Flag>, Vec<String>) {
    let skip = usize::from(command.first().is_some_and(|c| !c.starts_with('-')));
    let words: Vec<&String> = command.iter().skip(skip).chain(args.iter()).collect();
    let mut flags = Vec::new();
    let mut other = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].trim();
        i += 1;
        if w.len() < 2 || !w.starts_with('-') || w == "--" {
            other.push(w.to_string());
            continue;
        }
        let body = w.trim_start_matches('-');
        if let Some((name, value)) = body.split_once('=') {
            flags.push(Flag {
                name: name.to_string(),
                value: Some(value.to_string()),
            });
        } else if !bool_flags.contains(&body)
            && words.get(i).is_some_and(|next| !next.starts_with('-'))
        {
            flags.push(Flag {
                name: body.to_string(),
                value: Some(words[i].to_string()),
            });
            i += 1;
        } else {
            flags.push(Flag {
                name: body.to_string(),
                value: None,
            });
        }
    }
    (flags, other)
}

/// A container's `volumeMounts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMount {
    /// The volume name.
    pub name: String,
    /// Where it appears in the container.
    pub mount_path: String,
    /// `subPath`, if any.
    pub sub_path: Option<String>,
    /// `readOnly: true`.
    pub read_only: bool,
}

/// A `spec.volumes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The volume name.
    pub name: String,
    /// Its index in `spec.volumes`.
    pub index: usize,
    /// What backs it.
    pub source: VolumeSource,
}

/// What backs a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum VolumeSource {
    /// A directory or file on the node.
    HostPath {
        /// `hostPath.path`.
        path: String,
        /// `hostPath.type`, if given.
        kind: Option<String>,
    },
    /// Anything else (`emptyDir`, `persistentVolumeClaim`, `configMap`, ...).
    Other {
        /// The source's key, e.g. `emptyDir`.
        kind: String,
    },
}

/// `runAsUser` / `runAsGroup` from one `securityContext`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunAs {
    /// `runAsUser`.
    pub user: Option<i64>,
    /// `runAsGroup`.
    pub group: Option<i64>,
}

fn parse_run_as(ctx: Option<&Node>, field: &str) -> Result<RunAs, ManifestError> {
    let Some(ctx) = ctx.filter(|c| !c.is_null()) else {
        return Ok(RunAs::default());
    };
    let int = |key: &str| -> Result<Option<i64>, ManifestError> {
        match ctx.get(key) {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(None),
            Some(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(format!("{field}.{key}"), "is not an integer")),
        }
    };
    Ok(RunAs {
        user: int("runAsUser")?,
        group: int("runAsGroup")?,
    })
}

/// An environment variable of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// The name.
    pub name: String,
    /// The literal value; `None` when it comes from `valueFrom`.
    pub value: Option<String>,
}

/// A container, as far as this tool reads it.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub name: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub mounts: Vec<VolumeMount>,
    pub run_as: RunAs,
    pub readiness: Option<Readiness>,
}

fn parse_mounts(c: &Node, field: &str) -> Result<Vec<VolumeMount>, ManifestError> {
    let Some(list) = c.get("volumeMounts").filter(|n| !n.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list
        .as_seq()
        .ok_or_else(|| bad(format!("{field}.volumeMounts"), "is not a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let f = format!("{field}.volumeMounts[{i}]");
            Ok(VolumeMount {
                name: req_str(m, "name", &f)?,
                mount_path: req_str(m, "mountPath", &f)?,
                sub_path: opt_str(m, "subPath")
                    .or_else(|| opt_str(m, "subPathExpr"))
                    .filter(|s| !s.is_empty()),
                read_only: m.get("readOnly").and_then(Node::as_str) == Some("true"),
            })
        })
        .collect()
}

impl Container {
    fn parse(c: &Node, field: &str) -> Result<Container, ManifestError> {
        if c.as_map().is_none() {
            return Err(bad(field, "is not a mapping"));
        }
        let name = req_str(c, "name", field)?;
        let env = match c.get("env").filter(|n| !n.is_null()) {
            None => Vec::new(),
            Some(list) => list
                .as_seq()
                .ok_or_else(|| bad(format!("{field}.env"), "is not a list"))?
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    Ok(EnvVar {
                        name: req_str(e, "name", &format!("{field}.env[{i}]"))?,
                        value: opt_str(e, "value"),
                    })
                })
                .collect::<Result<_, ManifestError>>()?,
        };
        let ports = parse_ports(c, field)?;
        let readiness = parse_readiness(c, field, &ports)?;
        Ok(Container {
            image: opt_str(c, "image"),
            command: str_list(c.get("command"), &format!("{field}.command"))?,
            args: str_list(c.get("args"), &format!("{field}.args"))?,
            env,
            mounts: parse_mounts(c, field)?,
            run_as: parse_run_as(
                c.get("securityContext"),
                &format!("{field}.securityContext"),
            )?,
            readiness,
            name,
        })
    }
}

fn parse_ports(c: &Node, field: &str) -> Result<Vec<(String, u16)>, ManifestError> {
    let Some(list) = c.get("ports").and_then(Node::as_seq) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let (Some(name), Some(port)) = (opt_str(p, "name"), p.get("containerPort")) else {
            continue;
        };
        let port = port_number(port).ok_or_else(|| {
            bad(
                format!("{field}.ports[{i}].containerPort"),
                "is not a port number",
            )
        })?;
        out.push((name, port));
    }
    Ok(out)
}

fn port_number(n: &Node) -> Option<u16> {
    n.as_i64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// Which probe a [`Readiness`] was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeSource {
    /// `readinessProbe`.
    Readiness,
    /// `startupProbe` (no readiness probe).
    Startup,
    /// `livenessProbe` (no readiness or startup probe).
    Liveness,
}

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpScheme {
    /// Plain HTTP (the kubelet's default).
    Http,
    /// HTTPS; the kubelet does not verify the certificate.
    Https,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ProbeAction {
    /// `httpGet`. Success is a status in 200..400.
    HttpGet {
        /// `host`; absent means the pod IP, which for `hostNetwork` pods is the node's address.
        host: Option<String>,
        /// The port, named ports already resolved through the container's `ports`.
        port: u16,
        /// The scheme.
        scheme: HttpScheme,
        /// The path with its query (`/` when absent).
        path: String,
    },
    /// `tcpSocket`: the port accepts a connection.
    TcpSocket {
        /// `host`; absent means the pod IP.
        host: Option<String>,
        /// The port.
        port: u16,
    },
    /// `exec`: the command exits 0 inside the container.
    Exec {
        /// The command.
        command: Vec<String>,
    },
    /// `grpc`: the gRPC health service reports SERVING.
    Grpc {
        /// The port.
        port: u16,
        /// The service name, if any.
        service: Option<String>,
    },
}

impl ProbeAction {
    /// The URL the kubelet would request, for `httpGet`; `node_address` stands in for a missing
    /// `host`.
    pub fn url(&self, node_address: &str) -> Option<String> {
        let ProbeAction::HttpGet {
            host,
            port,
            scheme,
            path,
        } = self
        else {
            return None;
        };
        let host = host.as_deref().unwrap_or(node_address);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let scheme = match scheme {
            HttpScheme::Http => "http",
            HttpScheme::Https => "https",
        };
        let path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        Some(format!("{scheme}://{host}:{port}{path}"))
    }
}

/// How to judge a container ready "as the kubelet would".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Which probe this came from.
    pub source: ProbeSource,
    /// What to do.
    pub action: ProbeAction,
    /// `periodSeconds` (kubelet default 10).
    pub period_seconds: i64,
    /// `timeoutSeconds` (kubelet default 1).
    pub timeout_seconds: i64,
    /// `failureThreshold` (kubelet default 3).
    pub failure_threshold: i64,
    /// `initialDelaySeconds` (default 0).
    pub initial_delay_seconds: i64,
    /// Set when the readiness probe is missing and another probe stands in for it.
    pub note: Option<String>,
}

fn parse_readiness(
    c: &Node,
    field: &str,
    ports: &[(String, u16)],
) -> Result<Option<Readiness>, ManifestError> {
    let probes = [
        ("readinessProbe", ProbeSource::Readiness),
        ("startupProbe", ProbeSource::Startup),
        ("livenessProbe", ProbeSource::Liveness),
    ];
    let Some((key, source, probe)) = probes
        .iter()
        .find_map(|(k, s)| c.get(k).filter(|p| !p.is_null()).map(|p| (*k, *s, p)))
    else {
        return Ok(None);
    };
    let f = format!("{field}.{key}");
    let resolve_port = |n: &Node, pf: &str| -> Result<u16, ManifestError> {
        if let Some(p) = port_number(n) {
            return Ok(p);
        }
        let name = n
            .as_str()
            .ok_or_else(|| bad(pf, "is not a port number or name"))?;
        ports
            .iter()
            .find(|(pn, _)| pn == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                bad(
                    pf,
                    format!("names port `{name}`, which the container's `ports` does not define"),
                )
            })
    };
    let action = if let Some(h) = probe.get("httpGet") {
        let port = h
            .get("port")
            .ok_or_else(|| bad(format!("{f}.httpGet.port"), "is missing"))?;
        let scheme = match opt_str(h, "scheme")
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("HTTP") => HttpScheme::Http,
            Some("HTTPS") => HttpScheme::Https,
            Some(other) => {
                return Err(bad(
                    format!("{f}.httpGet.scheme"),
                    format!("is `{other}`, not HTTP or HTTPS"),
                ))
            }
        };
        ProbeAction::HttpGet {
            host: opt_str(h, "host").filter(|s| !s.is_empty()),
            port: resolve_port(port, &format!("{f}.httpGet.port"))?,
            scheme,
            path: opt_str(h, "path")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = probe.get("tcpSocket") {
        let port = t
            .get("port")
            .ok_or_else(|| bad(format!("{f}.tcpSocket.port"), "is missing"))?;
        ProbeAction::TcpSocket {
            host: opt_str(t, "host").filter(|s| !s.is_empty()),
            port: resolve_port(port, &format!("{f}.tcpSocket.port"))?,
        }
    } else if let Some(e) = probe.get("exec") {
        ProbeAction::Exec {
            command: str_list(e.get("command"), &format!("{f}.exec.command"))?,
        }
    } else if let Some(g) = probe.get("grpc") {
        let port = g
            .get("port")
            .and_then(port_number)
            .ok_or_else(|| bad(format!("{f}.grpc.port"), "is missing or not a port number"))?;
        ProbeAction::Grpc {
            port,
            service: opt_str(g, "service"),
        }
    } else {
        return Err(bad(&f, "has no httpGet, tcpSocket, exec or grpc action"));
    };
    let int = |key: &str, default: i64| probe.get(key).and_then(Node::as_i64).unwrap_or(default);
    let note = match source {
        ProbeSource::Readiness => None,
        ProbeSource::Startup => {
            Some("no readinessProbe; using the startupProbe instead".to_string())
        }
        ProbeSource::Liveness => {
            Some("no readinessProbe or startupProbe; using the livenessProbe instead".to_string())
        }
    };
    Ok(Some(Readiness {
        source,
        action,
        period_seconds: int("periodSeconds", 10),
        timeout_seconds: int("timeoutSeconds", 1),
        failure_threshold: int("failureThreshold", 3),
        initial_delay_seconds: int("initialDelaySeconds", 0),
        note,
    }))
}

/// A light summary of any static pod: name, flags and how to judge it ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticPod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// Every container, in order.
    pub containers: Vec<ContainerSummary>,
}

/// One container of a [`StaticPod`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSummary {
    /// The container name.
    pub name: String,
    /// The image.
    pub image: Option<String>,
    /// Flags from `command` + `args`, in order.
    pub flags: Vec<Flag>,
    /// How the kubelet judges it ready, if it has any probe.
    pub readiness: Option<Readiness>,
}

impl StaticPod {
    /// Reads a static-pod manifest.
    pub fn parse(bytes: &[u8]) -> Result<StaticPod, ManifestError> {
        let doc = load(bytes)?;
        let containers = doc
            .containers()?
            .into_iter()
            .map(|c| ContainerSummary {
                flags: parse_flags(&c.command, &c.args, &[]).0,
                name: c.name,
                image: c.image,
                readiness: c.readiness,
            })
            .collect();
        Ok(StaticPod {
            name: doc.name()?,
            namespace: doc.namespace(),
            containers,
        })
    }

    /// The main container: the one named like the pod, else the first.
    pub fn main_container(&self) -> Option<&ContainerSummary> {
        self.containers
            .iter()
            .find(|c| c.name == self.name)
            .or_else(|| self.containers.first())
    }

    /// The last value of flag `name` (without dashes) on the main container.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.main_container()?
            .flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .and_then(|f| f.value.as_deref())
    }

    /// True when the main container has the flag `--NAME`, with or without a value.
    pub fn has_flag(&self, name: &str) -> bool {
        self.main_container()
            .is_some_and(|c| c.flags.iter().any(|f| f.name == name))
    }

    /// How to judge the main container ready.
    pub fn readiness(&self) -> Option<&Readiness> {
        self.main_container()?.readiness.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ManifestError {
        load(text.as_bytes()).unwrap_err()
    }

    const MINIMAL: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - name: x\n    image: y\nstatus: {}\n";

    #[test]
    fn accepts_a_minimal_pod_with_empty_status() {
        let doc = load(MINIMAL.as_bytes()).unwrap();
        assert_eq!(doc.name().unwrap(), "x");
    }

    #[test]
    fn refuses_bad_encodings_and_line_endings() {
        assert_eq!(
            load(b"apiVersion: v1\nkind: Pod # \xff\n").unwrap_err(),
            ManifestError::NotUtf8 { offset: 27 }
        );
        assert_eq!(
            err("apiVersion: v1\rkind: Pod\r"),
            ManifestError::BareCarriageReturn { line: 1 }
        );
        assert!(load(MINIMAL.replace('\n', "\r\n").as_bytes()).is_ok());
        let bom = load(format!("\u{feff}{MINIMAL}").as_bytes()).unwrap();
        assert_eq!((bom.body_offset, bom.name().unwrap().as_str()), (3, "x"));
    }

    #[test]
    fn refuses_templates() {
        let t = MINIMAL.replace("image: y", "image: {{ .Image }}");
        assert!(
            matches!(err(&t), ManifestError::Templated { ref marker, line: 8 } if marker == "{{ .Image }}")
        );
        let t = MINIMAL.replace("image: y", "image: ${IMAGE}");
        assert!(
            matches!(err(&t), ManifestError::Templated { ref marker, .. } if marker == "${IMAGE}")
        );
        let t = MINIMAL.replace("name: x\nspec", "name: <podname>\nspec");
        assert!(
            matches!(err(&t), ManifestError::Templated { ref marker, .. } if marker == "<podname>")
        );
        // A comment may mention a template; shell syntax inside exec probes is fine.
        let t = format!("# rendered from {{{{ tpl }}}}\n{MINIMAL}").replace(
            "image: y",
            "image: y\n    livenessProbe:\n      exec:\n        command: [sh, -c, 'test ${X}']",
        );
        assert!(load(t.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_non_pods_and_api_dumps() {
        let t = MINIMAL
            .replace("kind: Pod", "kind: Deployment")
            .replace("v1", "apps/v1");
        assert_eq!(
            err(&t),
            ManifestError::NotAPod {
                kind: "Deployment".into(),
                api_version: "apps/v1".into()
            }
        );
        let t = MINIMAL.replace("status: {}", "status:\n  phase: Running");
        assert!(
            matches!(err(&t), ManifestError::ApiDump { ref evidence } if evidence.contains("status"))
        );
        let t = MINIMAL.replace(
            "  name: x\n",
            "  name: x\n  annotations:\n    kubernetes.io/config.mirror: abc\n",
        );
        assert!(
            matches!(err(&t), ManifestError::ApiDump { ref evidence } if evidence.contains("config.mirror"))
        );
        assert!(matches!(err("- a\n- b\n"), ManifestError::BadField { .. }));
        assert!(matches!(
            err("a: <<\n<<: {b: 1}\n"),
            ManifestError::MergeKey { line: 2 }
        ));
    }

    #[test]
    fn flags_in_both_forms_and_bool_flags() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (flags, other) = parse_flags(
            &s(&["etcd", "--name", "a", "--client-cert-auth", "--data-dir=/d"]),
            &s(&["-x=1", "stray"]),
            &["client-cert-auth"],
        );
        let pairs: Vec<(&str, Option<&str>)> = flags
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("name", Some("a")),
                ("client-cert-auth", None),
                ("data-dir", Some("/d")),
                ("x", Some("1")),
            ]
        );
        assert_eq!(other, ["stray"]);
        // Without a program in `command`, everything is flags.
        let (flags, _) = parse_flags(&s(&["--a=1"]), &[], &[]);
        assert_eq!(flags[0].name, "a");
    }

    #[test]
    fn readiness_falls_back_and_resolves_named_ports() {
        let t = MINIMAL.replace(
            "image: y",
            "image: y\n    ports:\n    - name: probe\n      containerPort: 10257\n    livenessProbe:\n      httpGet:\n        port: probe\n        path: /healthz\n        scheme: HTTPS\n",
        );
        let pod = StaticPod::parse(t.as_bytes()).unwrap();
        let r = pod.readiness().unwrap();
        assert_eq!(r.source, ProbeSource::Liveness);
        assert!(r.note.is_some());
        assert_eq!(
            r.action.url("10.0.0.5").unwrap(),
            "https://10.0.0.5:10257/healthz"
        );
        assert_eq!(
            r.action.url("fd00::5").unwrap(),
            "https://[fd00::5]:10257/healthz"
        );
        let t2 = t.replace("port: probe", "port: nope");
        assert!(matches!(
            StaticPod::parse(t2.as_bytes()),
            Err(ManifestError::BadField { .. })
        ));
    }
}
