//! A YAML document as a tree that remembers where every node starts, so that schema errors can
//! name the line and column. Built from yaml-rust2's event stream (its `Yaml` type drops the
//! positions); aliases are resolved by copying the anchored node.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        /// The text.
        text: String,
        /// Whether the scalar was unquoted (so `22` is a number and `~` is null).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys are scalars, in document order.
    Map(Vec<(Key, Node)>),
}

/// A node and where it starts.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

/// A mapping key and where it is.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key text.
    pub text: String,
    /// Where it is.
    pub pos: Pos,
}

impl Node {
    /// True for an unquoted `~`, `null`, `Null`, `NULL` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A word for the kind of value, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "nothing (null)",
            Value::Scalar { plain: false, .. } => "a string",
            Value::Scalar { text, .. } if text.parse::<f64>().is_ok() => "a number",
            Value::Scalar { text, .. } if is_bool(text) => "a boolean",
            Value::Scalar { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

fn is_bool(s: &str) -> bool {
    matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
}

/// A syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// Where.
    pub pos: Pos,
    /// What the YAML scanner said.
    pub message: String,
}

/// Parses one YAML document. An empty document gives `Ok(None)`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::from_marker(e.marker()),
            message: e.info().to_string(),
        })?;
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart if builder.root.is_some() => {
                return Err(SyntaxError {
                    pos: Pos::from_marker(&mark),
                    message: "a second YAML document (`---`); the inventory is one document".into(),
                });
            }
            other => builder.event(other, &mark)?,
        }
    }
    Ok(builder.root)
}

/// Turns the event stream into a tree with a stack of open collections.
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

enum Open {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
    },
}

impl Builder {
    fn event(&mut self, event: Event, mark: &Marker) -> Result<(), SyntaxError> {
        let pos = Pos::from_marker(mark);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    value: Value::Scalar {
                        text,
                        plain: style == TScalarStyle::Plain,
                    },
                    pos,
                };
                self.remember(anchor, &node);
                self.push(node)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    node.pos = pos;
                    self.push(node)
                }
                None => Err(SyntaxError {
                    pos,
                    message: "alias to an unknown anchor".into(),
                }),
            },
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Open::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Open::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Seq { pos, anchor, items }) => {
                        let node = Node {
                            value: Value::Seq(items),
                            pos,
                        };
                        self.remember(anchor, &node);
                        node
                    }
                    Some(Open::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => {
                        // The parser marks a block mapping's start after its first key; the
                        // first key is where a reader sees the mapping begin.
                        let pos = match entries.first() {
                            Some((k, _)) if (k.pos.line, k.pos.col) < (pos.line, pos.col) => k.pos,
                            _ => pos,
                        };
                        let node = Node {
                            value: Value::Map(entries),
                            pos,
                        };
                        self.remember(anchor, &node);
                        node
                    }
                    None => {
                        return Err(SyntaxError {
                            pos,
                            message: "unbalanced collection end".into(),
                        })
                    }
                };
                self.push(node)
            }
            _ => Ok(()),
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn push(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Open::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => {
                    entries.push((key, node));
                    Ok(())
                }
                None => match node.value {
                    Value::Scalar { text, .. } => {
                        *pending_key = Some(Key {
                            text,
                            pos: node.pos,
                        });
                        Ok(())
                    }
                    _ => Err(SyntaxError {
                        pos: node.pos,
                        message: "a mapping key must be a plain word, not a list or mapping".into(),
                    }),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_the_value() {
        let doc = parse("a: 1\nb:\n  - x\n  - 'y'\n").unwrap().unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        assert!(matches!(
            &items[1].value,
            Value::Scalar { plain: false, .. }
        ));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let doc = parse("a: &p {port: 22}\nb: *p\n").unwrap().unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert!(matches!(&entries[1].1.value, Value::Map(m) if m.len() == 1));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1);
        assert!(!err.message.is_empty());
        assert!(parse("").unwrap().is_none());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
