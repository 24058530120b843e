//! The terminal: the only module that prints, asks or colours (dialoguer, console and
//! indicatif are used here and nowhere else).
//!
//! - [`progress`]: the engine's events as live bars, plain lines or JSON ([`Printer`]);
//! - [`prompt`]: questions with the bars hidden, SSH key passphrases, and what Ctrl-C means;
//! - [`error`]: errors as `error:` / `caused by:` / `hint:` lines;
//! - [`output`]: documents on stdout, notes and warnings on stderr, colours;
//! - [`report`]: the `check` table and the `status` of runs.
//!
//! stdout carries documents only (plans, status, check reports, manifests, completions);
//! everything else goes to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod error;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod report;

pub use output::{
    binary_bytes, bold, color_stderr, color_stdout, document, green, line, red, text, warning,
    warnings,
};
pub use progress::{event_json, Printer, Style};
pub use prompt::TerminalPassphrase;
