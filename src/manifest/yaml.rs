//! A YAML tree that remembers where every node starts in the source text.
//!
//! Built from `yaml-rust2`'s event parser. Positions are kept as character indexes (what the
//! parser reports) plus line and column; [`byte_offset`] converts an index to a byte offset.
//! Aliases are resolved by cloning the anchored node (the clone keeps the original's position
//! and is flagged [`Node::via_alias`]). Duplicate mapping keys are refused.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts: character index into the source, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    /// Index in characters (not bytes) from the start of the text.
    pub index: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            index: m.index(),
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

impl From<TScalarStyle> for Style {
    fn from(s: TScalarStyle) -> Self {
        match s {
            TScalarStyle::Plain => Style::Plain,
            TScalarStyle::SingleQuoted => Style::SingleQuoted,
            TScalarStyle::DoubleQuoted => Style::DoubleQuoted,
            TScalarStyle::Literal => Style::Literal,
            TScalarStyle::Folded => Style::Folded,
        }
    }
}

/// The content of a node.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar {
        value: String,
        style: Style,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        entries: Vec<(Node, Node)>,
        flow: bool,
    },
}

/// One YAML node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
    /// Non-zero when the node carries an anchor (`&name`).
    pub anchor: usize,
    /// The tag (`!!str`, `!foo`), if any.
    pub tag: Option<String>,
    /// True when this node was reached through an alias (`*name`).
    pub via_alias: bool,
}

impl Node {
    /// The scalar text, for scalars.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The items, for sequences.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The entries, for mappings.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map { entries, .. } => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// True for a plain `null`, `~`, empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: Style::Plain }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// True for an empty mapping or null.
    pub fn is_empty_or_null(&self) -> bool {
        self.is_null() || self.as_map().is_some_and(<[_]>::is_empty)
    }

    /// A plain scalar read as an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.kind {
            Kind::Scalar {
                value,
                style: Style::Plain,
            } => value.parse().ok(),
            _ => None,
        }
    }

    /// A short name of the node's kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "scalar",
            Kind::Seq { .. } => "list",
            Kind::Map { .. } => "mapping",
        }
    }

    /// Calls `f` on this node and every node below it (keys included), with the key path.
    pub fn walk<'a>(&'a self, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &'a Node)) {
        f(path, self);
        match &self.kind {
            Kind::Scalar { .. } => {}
            Kind::Seq { items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    item.walk(path, f);
                    path.pop();
                }
            }
            Kind::Map { entries, .. } => {
                for (k, v) in entries {
                    let name = k.as_str().unwrap_or("?").to_string();
                    path.push(name);
                    k.walk(path, f);
                    v.walk(path, f);
                    path.pop();
                }
            }
        }
    }
}

/// Why the text could not be loaded as one YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadError {
    /// The scanner or parser failed.
    Syntax {
        line: usize,
        col: usize,
        message: String,
    },
    /// No document at all (empty file or only comments).
    Empty,
    /// More than one document. `explicit_end_line` is set when the first one was closed by a
    /// `...` line.
    MultipleDocuments {
        second_line: usize,
        explicit_end_line: Option<usize>,
    },
    /// The same key twice in one mapping.
    DuplicateKey { key: String, line: usize },
    /// An alias to an anchor that was never defined.
    UnknownAlias { line: usize },
}

/// Loads exactly one document from `text`.
pub(crate) fn load(text: &str) -> Result<Node, LoadError> {
    let chars: Vec<char> = text.chars().collect();
    let mut parser = Parser::new_from_str(text);
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut explicit_end_line = None;

    loop {
        let (event, marker) = parser.next_token().map_err(|e| LoadError::Syntax {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let pos = Pos::from(marker);
        let node = match event {
            Event::StreamStart | Event::Nothing => continue,
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(LoadError::MultipleDocuments {
                        second_line: pos.line,
                        explicit_end_line,
                    });
                }
                continue;
            }
            Event::DocumentEnd => {
                if chars.get(pos.index..pos.index + 3) == Some(&['.', '.', '.'][..]) {
                    explicit_end_line = Some(pos.line);
                }
                continue;
            }
            Event::Alias(id) => {
                let mut n = anchors
                    .get(&id)
                    .cloned()
                    .ok_or(LoadError::UnknownAlias { line: pos.line })?;
                n.via_alias = true;
                n
            }
            Event::Scalar(value, style, anchor, tag) => Node {
                pos,
                kind: Kind::Scalar {
                    value,
                    style: style.into(),
                },
                anchor,
                tag: tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                via_alias: false,
            },
            Event::SequenceStart(anchor, tag) => {
                stack.push(Node {
                    pos,
                    kind: Kind::Seq {
                        items: Vec::new(),
                        flow: chars.get(pos.index) == Some(&'['),
                    },
                    anchor,
                    tag: tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                    via_alias: false,
                });
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                stack.push(Node {
                    pos,
                    kind: Kind::Map {
                        entries: Vec::new(),
                        flow: chars.get(pos.index) == Some(&'{'),
                    },
                    anchor,
                    tag: tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                    via_alias: false,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(n) => n,
                None => {
                    return Err(LoadError::Syntax {
                        line: pos.line,
                        col: pos.col,
                        message: "unbalanced collection end".to_string(),
                    })
                }
            },
        };
        if node.anchor != 0 && !node.via_alias {
            anchors.insert(node.anchor, node.clone());
        }
        attach(&mut stack, &mut root, node)?;
    }
    match root {
        Some(r) if documents == 1 => Ok(r),
        _ => Err(LoadError::Empty),
    }
}

/// Adds a finished node to its parent collection (or makes it the root).
fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) -> Result<(), LoadError> {
    let Some(parent) = stack.last_mut() else {
        *root = Some(node);
        return Ok(());
    };
    match &mut parent.kind {
        Kind::Seq { items, .. } => items.push(node),
        Kind::Map { entries, .. } => {
            // Keys and values arrive alternately; a pending key is stored with a placeholder
            // value whose position is `usize::MAX`.
            match entries.last_mut() {
                Some((_, v)) if v.pos.index == usize::MAX => *v = node,
                _ => {
                    if let Some(k) = node.as_str() {
                        if entries.iter().any(|(ek, _)| ek.as_str() == Some(k)) {
                            return Err(LoadError::DuplicateKey {
                                key: k.to_string(),
                                line: node.pos.line,
                            });
                        }
                    }
                    entries.push((node, placeholder()));
                }
            }
        }
        Kind::Scalar { .. } => {}
    }
    Ok(())
}

fn placeholder() -> Node {
    Node {
        pos: Pos {
            index: usize::MAX,
            line: 0,
            col: 0,
        },
        kind: Kind::Scalar {
            value: String::new(),
            style: Style::Plain,
        },
        anchor: 0,
        tag: None,
        via_alias: false,
    }
}

/// The byte offset of character index `index` in `text` (`text.len()` at the end).
pub(crate) fn byte_offset(text: &str, index: usize) -> Option<usize> {
    if index == text.chars().count() {
        return Some(text.len());
    }
    text.char_indices().nth(index).map(|(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_characters_and_crlf_counts_two() {
        let text = "a: é\r\nb: {path: /x, type: Y}\r\n";
        let root = load(text).unwrap();
        let b = root.get("b").unwrap();
        assert!(matches!(b.kind, Kind::Map { flow: true, .. }));
        let path = b.get("path").unwrap();
        assert_eq!(path.as_str(), Some("/x"));
        assert_eq!(path.pos.line, 2);
        let off = byte_offset(text, path.pos.index).unwrap();
        assert_eq!(&text[off..off + 2], "/x");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = load("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            err,
            LoadError::DuplicateKey {
                key: "a".into(),
                line: 3
            }
        );
    }

    #[test]
    fn second_document_is_refused_and_explicit_end_is_seen() {
        let err = load("a: 1\n...\nb: 2\n").unwrap_err();
        assert_eq!(
            err,
            LoadError::MultipleDocuments {
                second_line: 3,
                explicit_end_line: Some(2)
            }
        );
        let err = load("---\na: 1\n---\nb: 2\n").unwrap_err();
        assert!(matches!(
            err,
            LoadError::MultipleDocuments {
                explicit_end_line: None,
                ..
            }
        ));
        assert!(load("---\na: 1\n").is_ok());
    }

    #[test]
    fn aliases_resolve_and_are_flagged() {
        let root = load("a: &x /data\nb: *x\n").unwrap();
        let b = root.get("b").unwrap();
        assert_eq!(b.as_str(), Some("/data"));
        assert!(b.via_alias);
        assert!(!root.get("a").unwrap().via_alias);
    }

    #[test]
    fn empty_and_comment_only_texts_have_no_document() {
        assert_eq!(load("").unwrap_err(), LoadError::Empty);
        assert_eq!(load("# nothing\n").unwrap_err(), LoadError::Empty);
    }

    #[test]
    fn null_and_ints() {
        let root = load("a: null\nb: ~\nc:\nd: '1'\ne: 12\nf: {}\n").unwrap();
        for k in ["a", "b", "c"] {
            assert!(root.get(k).unwrap().is_null(), "{k}");
        }
        assert_eq!(root.get("d").unwrap().as_i64(), None);
        assert_eq!(root.get("e").unwrap().as_i64(), Some(12));
        assert!(root.get("f").unwrap().is_empty_or_null());
    }
}
