//! Ctrl-C for a command's whole life. Before the engine runs nothing has changed: the terminal
//! is restored and the command exits with [`crate::error::Exit::Interrupted`]. Once it runs,
//! the first Ctrl-C finishes the current step on every node and pauses, the third exits at once.

use std::sync::Arc;

use crate::engine::Cancel;
use crate::ui::{prompt, Printer};

/// The Ctrl-C handler of one command.
pub(crate) struct Interrupts {
    cancel: Cancel,
    printer: Arc<Printer>,
}

impl Interrupts {
    /// Installs the handler; call inside the runtime, before the first prompt.
    pub(crate) fn install(printer: Arc<Printer>) -> Interrupts {
        let cancel = Cancel::default();
        let handler = (cancel.clone(), printer.clone());
        tokio::spawn(async move {
            let (cancel, printer) = handler;
            loop {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                if printer.prompting() && !printer.engine_running() {
                    // The prompt sees the interrupt too and exits (see `ui::prompt`).
                    continue;
                }
                if !printer.engine_running() {
                    prompt::exit_interrupted();
                }
                let n = cancel.request();
                if printer.prompting() {
                    // The prompt answers "pause" by itself.
                    continue;
                }
                match n {
                    1 => printer.line("interrupt: finishing the current step on every node, then pausing; `etcd-recover resume` continues"),
                    2 => printer.line("interrupt again: the current step is still finishing; stopping now could leave it half done (resume would complete it). Press Ctrl-C once more to exit at once"),
                    _ => prompt::exit_at_once(),
                }
            }
        });
        Interrupts { cancel, printer }
    }

    /// From now on Ctrl-C pauses the run (at the next step boundary) instead of exiting.
    pub(crate) fn engine_starts(&self) -> Cancel {
        self.printer.engine_starts();
        self.cancel.clone()
    }
}
