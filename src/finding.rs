//! Findings: what preflight found on a node or about the snapshot, and how bad it is. Facts
//! record them, the plan carries them, `check` and `plan` show them; any [`Severity::Error`]
//! blocks `apply`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Does not block; shown loudly, and confirmed when interactive.
    Warning,
    /// Blocks `apply`.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A preflight finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Node it concerns, or `None` for the whole cluster / the snapshot.
    pub node: Option<String>,
    /// What was found.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Finding {
    /// A finding about `node` (or the whole cluster when `None`).
    pub fn new(
        severity: Severity,
        node: Option<&str>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> Finding {
        Finding {
            severity,
            node: node.map(String::from),
            message: message.into(),
            hint: hint.map(String::from),
        }
    }
}
