//! Questions on the terminal (dialoguer), asked with the live bars hidden, and what Ctrl-C
//! means while one is open.
//!
//! A question returns `None` when it got no answer: the terminal failed, or Ctrl-C came once
//! the engine runs (callers treat that as "no" or "pause"). Ctrl-C before the engine runs quits
//! the command at once with [`Exit::Interrupted`]: nothing was changed.

use std::io::IsTerminal;

use dialoguer::theme::ColorfulTheme;

use super::Printer;
use crate::error::Exit;

/// True when questions can be asked: stdin and stderr are terminals.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Runs one dialoguer prompt with the bars suspended; see the module documentation for what
/// `None` means. The cursor is shown again either way.
fn ask<T>(printer: &Printer, f: impl FnOnce(&ColorfulTheme) -> dialoguer::Result<T>) -> Option<T> {
    printer.suspend(|| {
        let theme = ColorfulTheme::default();
        match f(&theme) {
            Ok(v) => Some(v),
            Err(dialoguer::Error::IO(e))
                if e.kind() == std::io::ErrorKind::Interrupted && !printer.engine_running() =>
            {
                exit_interrupted()
            }
            Err(_) => {
                restore_terminal();
                None
            }
        }
    })
}

/// A yes/no question whose default is "no".
pub fn confirm(printer: &Printer, prompt: &str) -> Option<bool> {
    ask(printer, |theme| {
        dialoguer::Confirm::with_theme(theme)
            .with_prompt(prompt)
            .default(false)
            .interact()
    })
}

/// A choice among `items`, `default` preselected; the index of the one chosen.
pub fn select(printer: &Printer, prompt: &str, items: &[&str], default: usize) -> Option<usize> {
    ask(printer, |theme| {
        dialoguer::Select::with_theme(theme)
            .with_prompt(prompt)
            .items(items)
            .default(default)
            .interact()
    })
}

/// Checks a typed line; `Err` is shown under the prompt, which asks again.
type Validator<'a> = Box<dyn FnMut(&str) -> Result<(), String> + 'a>;

/// A question answered by typing a line.
pub struct Text<'a> {
    prompt: String,
    default: Option<String>,
    allow_empty: bool,
    validate: Option<Validator<'a>>,
}

impl<'a> Text<'a> {
    /// A question with `prompt`, no default, that asks again on an empty line.
    pub fn new(prompt: impl Into<String>) -> Text<'a> {
        Text {
            prompt: prompt.into(),
            default: None,
            allow_empty: false,
            validate: None,
        }
    }

    /// The answer taken when the user just presses Enter.
    pub fn default(mut self, value: impl Into<String>) -> Text<'a> {
        self.default = Some(value.into());
        self
    }

    /// Accepts an empty line as the answer.
    pub fn allow_empty(mut self) -> Text<'a> {
        self.allow_empty = true;
        self
    }

    /// Checks every answer with `f` before taking it.
    pub fn validate(mut self, f: impl FnMut(&str) -> Result<(), String> + 'a) -> Text<'a> {
        self.validate = Some(Box::new(f));
        self
    }

    /// Asks the question.
    pub fn ask(self, printer: &Printer) -> Option<String> {
        let Text {
            prompt,
            default,
            allow_empty,
            validate,
        } = self;
        ask(printer, |theme| {
            let mut input = dialoguer::Input::<String>::with_theme(theme)
                .with_prompt(prompt)
                .allow_empty(allow_empty);
            if let Some(d) = default {
                input = input.default(d);
            }
            if let Some(mut f) = validate {
                input = input.validate_with(move |s: &String| f(s));
            }
            input.interact_text()
        })
    }
}

/// Shows the cursor again (dialoguer hides it while a selection is open) when stderr is a
/// terminal. Raw mode needs no repair: console leaves it before it reports an interrupt.
pub fn restore_terminal() {
    let t = console::Term::stderr();
    if t.is_term() {
        let _ = t.show_cursor();
    }
}

/// Ctrl-C before anything was changed: restores the terminal, says so and exits with
/// [`Exit::Interrupted`].
pub fn exit_interrupted() -> ! {
    restore_terminal();
    eprintln!("\ninterrupted: nothing was changed");
    std::process::exit(Exit::Interrupted as i32)
}

/// Ctrl-C pressed again while the engine finishes a step: restores the terminal and exits at
/// once with [`Exit::Interrupted`].
pub fn exit_at_once() -> ! {
    restore_terminal();
    std::process::exit(Exit::Interrupted as i32)
}

/// Asks for SSH key passphrases on the terminal, without echo. The passphrase never reaches a
/// log, an argv or a report.
pub struct TerminalPassphrase;

impl crate::transport::PassphrasePrompt for TerminalPassphrase {
    fn passphrase(
        &self,
        key_file: &std::path::Path,
        attempt: u32,
    ) -> Option<zeroize::Zeroizing<String>> {
        let prompt = if attempt > 1 {
            format!(
                "Wrong passphrase; passphrase for {} (try {attempt})",
                key_file.display()
            )
        } else {
            format!("Passphrase for {}", key_file.display())
        };
        dialoguer::Password::new()
            .with_prompt(prompt)
            .allow_empty_password(true)
            .interact()
            .ok()
            .map(zeroize::Zeroizing::new)
    }
}
