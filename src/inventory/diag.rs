//! Problems found in an inventory file: where they are, what is wrong, how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml::Pos;

/// One problem (or warning) at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// Line and column.
    pub pos: Pos,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// What to do about it, if there is something specific.
    pub fix: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: message`; the fix is rendered separately (see [`Diagnostic::fix`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.col,
            self.message
        )
    }
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid inventory.
    #[error("{}", render_problems(problems))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<Diagnostic>,
    },
}

impl InventoryError {
    /// Advice for the user: the fix of a single problem, or where the format is documented.
    pub fn hint(&self) -> String {
        match self {
            InventoryError::Read { .. } => {
                "pass the inventory with `-i FILE`; `inventory.example.yaml` shows the format"
                    .into()
            }
            InventoryError::Invalid { problems } => match problems.as_slice() {
                [one] => one.fix.clone().unwrap_or_else(|| DOCS_HINT.to_string()),
                _ => DOCS_HINT.to_string(),
            },
        }
    }
}

const DOCS_HINT: &str = "docs/inventory.md describes every key";

fn render_problems(problems: &[Diagnostic]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let file = many.first().map(|d| d.file.display().to_string());
            let mut s = format!(
                "{} problems in inventory `{}`:",
                many.len(),
                file.unwrap_or_default()
            );
            for d in many {
                s.push_str(&format!("\n  {d}"));
                if let Some(fix) = &d.fix {
                    s.push_str(&format!(" ({fix})"));
                }
            }
            s
        }
    }
}

/// Collects problems and warnings while walking the document.
pub(crate) struct Collector {
    file: PathBuf,
    pub(crate) problems: Vec<Diagnostic>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl Collector {
    pub(crate) fn new(file: &Path) -> Self {
        Collector {
            file: file.to_path_buf(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>, fix: Option<String>) {
        self.problems.push(Diagnostic {
            file: self.file.clone(),
            pos,
            message: message.into(),
            fix,
        });
    }

    pub(crate) fn warn(&mut self, pos: Pos, message: impl Into<String>, fix: Option<String>) {
        self.warnings.push(Diagnostic {
            file: self.file.clone(),
            pos,
            message: message.into(),
            fix,
        });
    }
}

/// Names people reach for that mean one of our keys (from OpenSSH and Ansible habits).
const SYNONYMS: &[(&str, &str)] = &[
    ("hostname", "host"),
    ("address", "host"),
    ("addr", "host"),
    ("ip", "host"),
    ("ansible_host", "host"),
    ("username", "user"),
    ("login", "user"),
    ("ansible_user", "user"),
    ("ansible_port", "port"),
    ("key", "identity_file"),
    ("identity", "identity_file"),
    ("identityfile", "identity_file"),
    ("identity_files", "identity_file"),
    ("private_key", "identity_file"),
    ("ansible_ssh_private_key_file", "identity_file"),
    ("userknownhostsfile", "known_hosts"),
    ("known_hosts_file", "known_hosts"),
    ("proxyjump", "proxy_jump"),
    ("jump_host", "proxy_jump"),
    ("bastion", "proxy_jump"),
    ("become", "sudo"),
    ("ansible_become", "sudo"),
    ("timeout", "connect_timeout"),
    ("connecttimeout", "connect_timeout"),
    ("serveraliveinterval", "keepalive_interval"),
    ("serveralivecountmax", "keepalive_max"),
    ("hosts", "nodes"),
    ("members", "nodes"),
    ("cluster_name", "cluster"),
];

/// The known key closest to `word`, if one is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| **k == lower) {
        return Some(k);
    }
    if let Some((_, k)) = SYNONYMS
        .iter()
        .find(|(s, k)| *s == lower && known.contains(k))
    {
        return known.iter().copied().find(|x| x == k);
    }
    known
        .iter()
        .map(|k| (levenshtein(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_synonyms_and_case() {
        let known = ["user", "port", "identity_file", "known_hosts", "proxy_jump"];
        assert_eq!(closest("usr", &known), Some("user"));
        assert_eq!(closest("User", &known), Some("user"));
        assert_eq!(closest("IdentityFile", &known), Some("identity_file"));
        assert_eq!(closest("proxy-jump", &known), Some("proxy_jump"));
        assert_eq!(closest("knwon_hosts", &known), Some("known_hosts"));
        assert_eq!(closest("bastion", &known), Some("proxy_jump"));
        assert_eq!(closest("colour", &known), None);
        // A synonym only counts when its target is valid here.
        assert_eq!(closest("hostname", &known), None);
    }
}
