//! The format-preserving rewrite of the `etcd-data` hostPath.
//!
//! Exactly one value changes: the `hostPath.path` of the volume that backs `--data-dir`. The
//! edit is textual — the bytes of that one scalar are replaced and every other byte is kept —
//! and is then proven: both texts are re-parsed by two independent YAML parsers (yaml-rust2
//! and libyaml through serde_yaml) and compared structurally; the only allowed difference is
//! that one value. Anything that cannot be edited or proven this way is refused.

use std::ops::Range;

use serde::Serialize;

use super::error::ManifestError;
use super::etcd_manifest::{clean_path, EtcdManifest};
use super::pod::{self, PodDocument};
use super::yaml::{byte_offset, Kind, Node, Style};

/// A proven rewrite of the data hostPath.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The file as it was.
    #[serde(skip)]
    pub original: String,
    /// The file with the new hostPath; every other byte is unchanged.
    #[serde(skip)]
    pub rewritten: String,
    /// The volume whose hostPath changed.
    pub volume: String,
    /// Its old `hostPath.path`.
    pub old_path: String,
    /// Its new `hostPath.path`.
    pub new_path: String,
    /// `--data-dir` inside the container (unchanged).
    pub data_dir: String,
    /// 1-based line of the change.
    pub line: usize,
    /// The bytes of `original` that were replaced.
    pub replaced: Range<usize>,
    /// The text put in their place (the new path, quoted as needed).
    pub replacement: String,
    /// Things the user must know (kubeadm's dataDir, for one).
    pub notes: Vec<String>,
}

impl Rewrite {
    /// A unified diff from `original` to `rewritten` with `--- a/LABEL` / `+++ b/LABEL` headers.
    pub fn unified_diff(&self, label: &str) -> String {
        similar::TextDiff::from_lines(&self.original, &self.rewritten)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{label}"), &format!("b/{label}"))
            .to_string()
    }
}

/// Checks a new data hostPath: absolute, normalised, no control characters, not `/`.
pub fn validate_new_host_path(path: &str) -> Result<(), ManifestError> {
    let invalid = |reason: String| ManifestError::InvalidNewPath {
        path: path.escape_debug().to_string(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(invalid("it must be an absolute path".into()));
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
    {
        return Err(invalid(format!(
            "it contains the control character {}",
            c.escape_unicode()
        )));
    }
    if path.ends_with(char::is_whitespace) {
        return Err(invalid("it ends with whitespace".into()));
    }
    let clean = clean_path(path);
    if clean != path {
        return Err(invalid(format!(
            "it is not normalised (no `//`, `.`, `..` or trailing `/`); did you mean `{clean}`?"
        )));
    }
    if clean == "/" {
        return Err(invalid("it is the root directory".into()));
    }
    Ok(())
}

/// Rewrites the hostPath that backs `--data-dir` to `new_path`, keeping every other byte.
pub fn rewrite_data_hostpath(bytes: &[u8], new_path: &str) -> Result<Rewrite, ManifestError> {
    validate_new_host_path(new_path)?;
    let doc = pod::load(bytes)?;
    let manifest = EtcdManifest::from_document(&doc)?;
    let data = manifest.data_volume()?;
    let mapping = &data.mapping;
    if mapping.mount_path != data.data_dir {
        return Err(ManifestError::DataMountIsParent {
            volume: mapping.volume.clone(),
            mount_path: mapping.mount_path.clone(),
            data_dir: data.data_dir.clone(),
        });
    }
    if let Some(sub) = &mapping.sub_path {
        return Err(ManifestError::DataSubPath {
            volume: mapping.volume.clone(),
            sub_path: sub.clone(),
        });
    }
    let uses: Vec<String> = manifest
        .all_mounts
        .iter()
        .filter(|(_, m)| m.name == mapping.volume)
        .map(|(c, m)| format!("{c}:{}", m.mount_path))
        .collect();
    if uses.len() > 1 {
        let this = format!("{}:{}", manifest.container, mapping.mount_path);
        let other = uses
            .iter()
            .find(|u| clean_path(u) != clean_path(&this))
            .unwrap_or(&uses[1])
            .clone();
        return Err(ManifestError::VolumeMountedElsewhere {
            volume: mapping.volume.clone(),
            other,
        });
    }
    if clean_path(&mapping.volume_host_path) == new_path {
        return Err(ManifestError::Unchanged {
            path: new_path.to_string(),
        });
    }

    let (host_path_map, node) = locate(&doc, mapping.volume_index)?;
    let uneditable = |reason: &str| ManifestError::UneditableScalar {
        volume: mapping.volume.clone(),
        line: node.pos.line,
        reason: reason.to_string(),
    };
    if node.via_alias || host_path_map.via_alias {
        return Err(uneditable("it comes from a YAML alias (`*name`)"));
    }
    if node.anchor != 0 {
        return Err(uneditable("it carries a YAML anchor (`&name`)"));
    }
    if node.tag.is_some() {
        return Err(uneditable("it carries a YAML tag"));
    }
    let Kind::Scalar { value, style } = &node.kind else {
        return Err(uneditable("it is not a scalar"));
    };
    let text = doc.text.as_str();
    let start = byte_offset(&text[doc.body_offset..], node.pos.index)
        .map(|b| b + doc.body_offset)
        .ok_or_else(|| uneditable("its position is outside the file"))?;
    let raw_len = raw_scalar_len(&text[start..], value, *style).map_err(|r| uneditable(&r))?;
    let flow = matches!(host_path_map.kind, Kind::Map { flow: true, .. });
    let replacement = render_scalar(new_path, *style, flow);
    let range = start..start + raw_len;
    let rewritten = format!(
        "{}{}{}",
        &text[..range.start],
        replacement,
        &text[range.end..]
    );

    prove(
        &doc,
        &rewritten,
        mapping.volume_index,
        new_path,
        &range,
        &replacement,
    )?;

    let mut notes = vec![format!(
        "kubeadm regenerates etcd.yaml from ClusterConfiguration.etcd.local.dataDir on `kubeadm upgrade`; \
         set dataDir to `{new_path}` in the kubeadm-config ConfigMap (kube-system) or the next upgrade reverts this change"
    )];
    if data.data_dir != clean_path(&mapping.volume_host_path) || data.data_dir != new_path {
        notes.push(format!(
            "`--data-dir={}` stays as it is: it is the path inside the container; only the host directory behind it changes",
            data.data_dir
        ));
    }
    Ok(Rewrite {
        original: text.to_string(),
        volume: mapping.volume.clone(),
        old_path: value.clone(),
        new_path: new_path.to_string(),
        data_dir: data.data_dir.clone(),
        line: node.pos.line,
        replaced: range,
        replacement,
        notes,
        rewritten,
    })
}

/// The `hostPath` mapping of volume `index` and its `path` scalar.
fn locate(doc: &PodDocument, index: usize) -> Result<(&Node, &Node), ManifestError> {
    let missing = || ManifestError::ProofFailed {
        detail: format!("spec.volumes[{index}].hostPath.path is not where the reader found it"),
    };
    let volume = doc
        .spec()
        .get("volumes")
        .and_then(Node::as_seq)
        .and_then(|v| v.get(index))
        .ok_or_else(missing)?;
    let host_path = volume.get("hostPath").ok_or_else(missing)?;
    let path = host_path.get("path").ok_or_else(missing)?;
    Ok((host_path, path))
}

/// How many bytes the scalar written at the start of `rest` takes, checked against the value
/// the parser read. Only single-line plain, single-quoted and double-quoted scalars qualify.
fn raw_scalar_len(rest: &str, value: &str, style: Style) -> Result<usize, String> {
    let line_end = rest.find(['\n', '\r']).unwrap_or(rest.len());
    let line = &rest[..line_end];
    match style {
        Style::Literal | Style::Folded => {
            Err("it is a block scalar (`|` or `>`); write it as `path: /dir` on one line".into())
        }
        Style::Plain => {
            if value.is_empty() || !line.starts_with(value) {
                return Err("it is written over several lines".into());
            }
            Ok(value.len())
        }
        Style::SingleQuoted => {
            let raw = format!("'{}'", value.replace('\'', "''"));
            if !line.starts_with(&raw) {
                return Err("it is a quoted string written over several lines".into());
            }
            Ok(raw.len())
        }
        Style::DoubleQuoted => {
            let body = &line[1..];
            let mut escaped = false;
            let mut close = None;
            for (i, c) in body.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or("it is a quoted string written over several lines")?;
            let inner = &body[..close];
            if unescape_simple(inner).as_deref() != Some(value) {
                return Err(
                    "it uses double-quote escape sequences this tool does not rewrite".into(),
                );
            }
            Ok(close + 2)
        }
    }
}

/// Decodes a double-quoted body that uses only `\\` and `\"`.
fn unescape_simple(inner: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Writes `value` in the original style; a plain value that needs quotes gets single quotes.
fn render_scalar(value: &str, style: Style, flow: bool) -> String {
    let plain_ok = !(value.contains(": ")
        || value.contains(" #")
        || value.ends_with(':')
        || (flow && value.contains([',', '[', ']', '{', '}', ':', '#'])));
    match style {
        Style::Plain if plain_ok => value.to_string(),
        Style::DoubleQuoted => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
        _ => format!("'{}'", value.replace('\'', "''")),
    }
}

/// Proves that `rewritten` differs from the original in exactly the one value.
fn prove(
    doc: &PodDocument,
    rewritten: &str,
    index: usize,
    new_path: &str,
    range: &Range<usize>,
    replacement: &str,
) -> Result<(), ManifestError> {
    let fail = |detail: String| ManifestError::ProofFailed { detail };
    let original = doc.text.as_str();
    let tail = &original[range.end..];
    if !rewritten.starts_with(&original[..range.start])
        || !rewritten.ends_with(tail)
        || rewritten.len() != original.len() - range.len() + replacement.len()
        || replacement.contains(['\n', '\r'])
    {
        return Err(fail("bytes outside the hostPath value changed".into()));
    }

    // Parser 1: this crate's reader (yaml-rust2).
    let new_doc = pod::load(rewritten.as_bytes())
        .map_err(|e| fail(format!("the result no longer reads as a manifest: {e}")))?;
    let new_manifest = EtcdManifest::from_document(&new_doc).map_err(|e| {
        fail(format!(
            "the result no longer reads as an etcd manifest: {e}"
        ))
    })?;
    let new_data = new_manifest
        .data_volume()
        .map_err(|e| fail(format!("the result has no data volume: {e}")))?;
    if new_data.mapping.volume_host_path != new_path || new_data.mapping.volume_index != index {
        return Err(fail(format!(
            "the result's data hostPath reads as `{}`",
            new_data.mapping.volume_host_path
        )));
    }
    let (_, new_node) = locate(&new_doc, index)?;
    let (_, old_node) = locate(doc, index)?;
    if let Some(d) = tree_diff(
        &doc.root,
        &new_doc.root,
        old_node.pos.index,
        new_node.pos.index,
    ) {
        return Err(fail(d));
    }

    // Parser 2: libyaml through serde_yaml.
    // (After the byte-order mark, if any: libyaml through serde_yaml does not skip it. The
    // prefix check above proves it unchanged.)
    let body = doc.body_offset;
    let mut old_v: serde_yaml::Value = serde_yaml::from_str(&original[body..]).map_err(|e| {
        fail(format!(
            "a second YAML parser cannot read the original: {e}"
        ))
    })?;
    let new_v: serde_yaml::Value = serde_yaml::from_str(&rewritten[body..])
        .map_err(|e| fail(format!("a second YAML parser cannot read the result: {e}")))?;
    let slot = old_v
        .get_mut("spec")
        .and_then(|s| s.get_mut("volumes"))
        .and_then(|v| v.get_mut(index))
        .and_then(|v| v.get_mut("hostPath"))
        .and_then(|h| h.get_mut("path"))
        .ok_or_else(|| fail("the second parser does not see the hostPath".into()))?;
    *slot = serde_yaml::Value::String(new_path.to_string());
    if old_v != new_v {
        return Err(fail(
            "the second YAML parser sees a difference besides the hostPath".into(),
        ));
    }
    Ok(())
}

/// Compares two trees, ignoring positions, except for the scalar at `old_at` / `new_at` (the
/// changed value). Returns a description of the first difference.
fn tree_diff(a: &Node, b: &Node, old_at: usize, new_at: usize) -> Option<String> {
    if a.pos.index == old_at && b.pos.index == new_at {
        return None;
    }
    if a.anchor != b.anchor || a.tag != b.tag || a.via_alias != b.via_alias {
        return Some(format!(
            "node at line {} changed its anchor, tag or alias",
            a.pos.line
        ));
    }
    match (&a.kind, &b.kind) {
        (
            Kind::Scalar {
                value: va,
                style: sa,
            },
            Kind::Scalar {
                value: vb,
                style: sb,
            },
        ) => (va != vb || sa != sb).then(|| format!("the value at line {} changed", a.pos.line)),
        (
            Kind::Seq {
                items: ia,
                flow: fa,
            },
            Kind::Seq {
                items: ib,
                flow: fb,
            },
        ) => {
            if ia.len() != ib.len() || fa != fb {
                return Some(format!("the list at line {} changed", a.pos.line));
            }
            ia.iter()
                .zip(ib)
                .find_map(|(x, y)| tree_diff(x, y, old_at, new_at))
        }
        (
            Kind::Map {
                entries: ea,
                flow: fa,
            },
            Kind::Map {
                entries: eb,
                flow: fb,
            },
        ) => {
            if ea.len() != eb.len() || fa != fb {
                return Some(format!("the mapping at line {} changed", a.pos.line));
            }
            ea.iter().zip(eb).find_map(|((ka, va), (kb, vb))| {
                tree_diff(ka, kb, old_at, new_at).or_else(|| tree_diff(va, vb, old_at, new_at))
            })
        }
        _ => Some(format!("the node at line {} changed kind", a.pos.line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --data-dir=/var/lib/etcd
    image: registry.k8s.io/etcd:3.5.10-0
    name: etcd
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  volumes:
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {}
";

    fn rw(text: &str, new: &str) -> Result<Rewrite, ManifestError> {
        rewrite_data_hostpath(text.as_bytes(), new)
    }

    /// Checks the rewrite changed only the expected bytes and returns the changed line.
    fn only_change(r: &Rewrite, from: &str, to: &str) {
        let expect = r.original.replacen(from, to, 1);
        assert_eq!(r.rewritten, expect);
    }

    #[test]
    fn plain_value_is_replaced_in_place() {
        let r = rw(BASE, "/var/lib/etcd-restored").unwrap();
        only_change(
            &r,
            "      path: /var/lib/etcd\n",
            "      path: /var/lib/etcd-restored\n",
        );
        assert_eq!(r.line, 18);
        assert_eq!(r.old_path, "/var/lib/etcd");
        assert!(r.notes[0].contains("ClusterConfiguration"));
        let diff = r.unified_diff("etcd.yaml");
        assert!(diff.starts_with("--- a/etcd.yaml\n+++ b/etcd.yaml\n"));
        assert_eq!(
            diff.lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("---"))
                .count(),
            1
        );
        assert_eq!(
            diff.lines()
                .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
                .count(),
            1
        );
    }

    #[test]
    fn quoting_styles_are_kept() {
        let single = BASE.replace("path: /var/lib/etcd\n", "path: '/var/lib/etcd'\n");
        only_change(
            &rw(&single, "/data/etcd").unwrap(),
            "'/var/lib/etcd'",
            "'/data/etcd'",
        );
        let double = BASE.replace("path: /var/lib/etcd\n", "path: \"/var/lib/etcd\"\n");
        only_change(
            &rw(&double, "/data/etcd").unwrap(),
            "\"/var/lib/etcd\"",
            "\"/data/etcd\"",
        );
        // A plain value that needs quotes gets single quotes.
        only_change(
            &rw(BASE, "/data/etcd #2").unwrap(),
            "path: /var/lib/etcd\n",
            "path: '/data/etcd #2'\n",
        );
        only_change(
            &rw(&single, "/data/it's").unwrap(),
            "'/var/lib/etcd'",
            "'/data/it''s'",
        );
        only_change(
            &rw(&double, "/data/a\"b").unwrap(),
            "\"/var/lib/etcd\"",
            "\"/data/a\\\"b\"",
        );
    }

    #[test]
    fn comments_crlf_and_missing_final_newline_survive() {
        let commented = BASE.replace("path: /var/lib/etcd\n", "path: /var/lib/etcd # data\n");
        only_change(
            &rw(&commented, "/data/etcd").unwrap(),
            "/var/lib/etcd # data",
            "/data/etcd # data",
        );
        let crlf = BASE.replace('\n', "\r\n");
        let r = rw(&crlf, "/data/etcd").unwrap();
        only_change(&r, "path: /var/lib/etcd\r\n", "path: /data/etcd\r\n");
        let no_nl = BASE.trim_end_matches('\n');
        let r = rw(no_nl, "/data/etcd").unwrap();
        assert!(!r.rewritten.ends_with('\n'));
        only_change(&r, "path: /var/lib/etcd\n", "path: /data/etcd\n");
    }

    #[test]
    fn flow_mapping_is_edited_and_quoted_when_needed() {
        let flow = BASE.replace(
            "  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n",
            "  - hostPath: {path: /var/lib/etcd, type: DirectoryOrCreate}\n",
        );
        only_change(
            &rw(&flow, "/data/etcd").unwrap(),
            "{path: /var/lib/etcd,",
            "{path: /data/etcd,",
        );
        only_change(
            &rw(&flow, "/data/a,b").unwrap(),
            "{path: /var/lib/etcd,",
            "{path: '/data/a,b',",
        );
    }

    #[test]
    fn refusals() {
        let block = BASE.replace("path: /var/lib/etcd\n", "path: |-\n        /var/lib/etcd\n");
        assert!(matches!(
            rw(&block, "/x"),
            Err(ManifestError::UneditableScalar { .. })
        ));
        let multi = BASE.replace("path: /var/lib/etcd\n", "path: /var/lib\n        /etcd\n");
        assert!(matches!(
            rw(&multi, "/x"),
            Err(ManifestError::UneditableScalar { .. })
        ));
        let anchored = BASE.replace("path: /var/lib/etcd\n", "path: &p /var/lib/etcd\n");
        assert!(matches!(
            rw(&anchored, "/x"),
            Err(ManifestError::UneditableScalar { .. })
        ));
        let tagged = BASE.replace("path: /var/lib/etcd\n", "path: !!str /var/lib/etcd\n");
        assert!(matches!(
            rw(&tagged, "/x"),
            Err(ManifestError::UneditableScalar { .. })
        ));
        assert!(matches!(
            rw(BASE, "/var/lib/etcd"),
            Err(ManifestError::Unchanged { .. })
        ));
        let parent = BASE.replace("mountPath: /var/lib/etcd", "mountPath: /var/lib");
        assert!(matches!(
            rw(&parent, "/x"),
            Err(ManifestError::DataMountIsParent { .. })
        ));
        let sub = BASE.replace(
            "      name: etcd-data\n  volumes",
            "      name: etcd-data\n      subPath: etcd\n  volumes",
        );
        assert!(matches!(
            rw(&sub, "/x"),
            Err(ManifestError::DataSubPath { .. })
        ));
        let shared = BASE.replace(
            "      name: etcd-data\n  volumes",
            "      name: etcd-data\n  - name: backup\n    image: busybox\n    volumeMounts:\n    - mountPath: /backup\n      name: etcd-data\n  volumes",
        );
        assert!(matches!(
            rw(&shared, "/x"),
            Err(ManifestError::VolumeMountedElsewhere { .. })
        ));
    }

    #[test]
    fn new_path_validation() {
        for bad in [
            "relative", "/a/../b", "/a//b", "/a/", "/", "/a\nb", "/a\tb", "/a\u{0}", "/a ", "/a/.",
        ] {
            assert!(
                matches!(
                    validate_new_host_path(bad),
                    Err(ManifestError::InvalidNewPath { .. })
                ),
                "{bad:?}"
            );
        }
        for good in ["/var/lib/etcd-restored", "/data/etcd 2", "/données/etcd"] {
            validate_new_host_path(good).unwrap();
        }
    }

    #[test]
    fn byte_order_mark_is_kept() {
        let t = format!("\u{feff}{BASE}");
        let r = rw(&t, "/data/etcd").unwrap();
        only_change(&r, "path: /var/lib/etcd\n", "path: /data/etcd\n");
        assert!(r.rewritten.starts_with('\u{feff}'));
    }

    #[test]
    fn non_ascii_before_the_value_is_handled() {
        let t = BASE
            .replace("status: {}\n", "status: {}\n# ünïcödé\n")
            .replace("metadata:\n", "metadata:\n  # répertoire de données\n");
        only_change(
            &rw(&t, "/data/etcd").unwrap(),
            "path: /var/lib/etcd\n",
            "path: /data/etcd\n",
        );
    }
}
