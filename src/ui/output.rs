//! Plain output: documents on stdout, notes and warnings on stderr, and the colours and marks
//! used in them.

use std::io::{IsTerminal, Write};

use anyhow::Context;

/// Writes a document (a plan, a report, a manifest, completions) to stdout, the only thing
/// that goes there.
pub fn document(text: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Prints `text` and a newline on stderr.
pub fn line(text: &str) {
    eprintln!("{text}");
}

/// Prints `text` on stderr as it is.
pub fn text(text: &str) {
    eprint!("{text}");
}

/// Prints `warning: TEXT` on stderr.
pub fn warning(text: &str) {
    eprintln!("warning: {text}");
}

/// Prints each of `warnings` with [`warning`].
pub fn warnings(warnings: &[String]) {
    for w in warnings {
        warning(w);
    }
}

/// True when documents on stdout may be coloured: stdout is a terminal and `NO_COLOR` is
/// unset or empty.
pub fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// True when text on stderr may be coloured: stderr is a terminal.
pub fn color_stderr() -> bool {
    std::io::stderr().is_terminal()
}

/// `text` in bold, for stderr (plain when stderr does not take colours).
pub fn bold(text: &str) -> String {
    console::style(text).for_stderr().bold().to_string()
}

/// `text` in green, for stderr.
pub fn green(text: &str) -> String {
    console::style(text).for_stderr().green().to_string()
}

/// `text` in red, for stderr.
pub fn red(text: &str) -> String {
    console::style(text).for_stderr().red().to_string()
}

/// A size in binary units as progress shows it: `1.50 MiB`.
pub fn binary_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
