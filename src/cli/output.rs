//! All terminal output goes through [`Printer`]: human text by default,
//! JSON for machines, JUnit XML where CI consumes results. Nothing else in
//! the crate writes to stdout or stderr.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde::Serialize;
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// The format of a command's result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document (schemas in the README).
    Json,
    /// JUnit XML, one test case per checked item (commands that verify).
    Junit,
    /// OpenMetrics text, for Prometheus's textfile collector (`audit`).
    Openmetrics,
}

/// Writes results to stdout and diagnostics to stderr.
///
/// A reader that goes away (`rekey ... | head`) ends the output quietly:
/// a broken pipe on stdout is not an error, the rest of the result is
/// dropped, and the command exits with the code its work earned (as
/// ripgrep does), never with `error: Broken pipe`.
pub struct Printer {
    format: OutputFormat,
    quiet: bool,
    color_out: bool,
    color_err: bool,
    /// Set once stdout's reader has gone away; later results are dropped.
    stdout_closed: AtomicBool,
    /// The first failed write of a text line other than a closed pipe (a
    /// full disk): the command then fails, after its work (see `main`).
    stdout_error: std::sync::Mutex<Option<std::io::Error>>,
}

/// Returns true when `e` says the reader of the pipe went away (EPIPE).
fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// How a word is coloured on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    /// A passing verdict.
    Good,
    /// Something due soon, or a warning.
    Warn,
    /// A failing verdict or an error.
    Bad,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Good => "32",
            Paint::Warn => "33",
            Paint::Bad => "1;31",
        }
    }
}

/// Returns true when colour may be written to a stream: it is a terminal,
/// `NO_COLOR` is unset or empty (no-color.org), and `TERM` is not `dumb`.
fn color_allowed(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Returns true when stderr may be coloured (log lines, `error:`): the same
/// rule as every other coloured output.
pub fn stderr_color() -> bool {
    color_allowed(std::io::stderr().is_terminal())
}

impl Printer {
    /// Returns a printer for the chosen format; `quiet` silences status lines.
    pub fn new(format: OutputFormat, quiet: bool) -> Printer {
        Printer {
            format,
            quiet,
            color_out: format == OutputFormat::Text && color_allowed(std::io::stdout().is_terminal()),
            color_err: stderr_color(),
            stdout_closed: AtomicBool::new(false),
            stdout_error: std::sync::Mutex::new(None),
        }
    }

    /// Returns `text` coloured for stdout when stdout is a colour terminal,
    /// else unchanged (pipes, files, `NO_COLOR`, JSON and JUnit never get escapes).
    pub fn paint(&self, paint: Paint, text: &str) -> String {
        if self.color_out {
            format!("\x1b[{}m{text}\x1b[0m", paint.code())
        } else {
            text.to_owned()
        }
    }

    fn paint_err(&self, paint: Paint, text: &str) -> String {
        if self.color_err {
            format!("\x1b[{}m{text}\x1b[0m", paint.code())
        } else {
            text.to_owned()
        }
    }

    /// Returns the chosen output format.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Fails unless the chosen format is one `command` supports.
    pub fn require(&self, command: &str, supported: &[OutputFormat]) -> anyhow::Result<()> {
        if supported.contains(&self.format) {
            return Ok(());
        }
        let names: Vec<&str> = supported.iter().map(|f| format_name(*f)).collect();
        anyhow::bail!(
            "`rekey {command}` does not support --output {}; use one of: {}",
            format_name(self.format),
            names.join(", ")
        )
    }

    /// Runs `write` on stdout unless its reader has gone away; a broken
    /// pipe marks stdout closed and is not an error (see [`Printer`]).
    fn to_stdout(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
        if self.stdout_closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        match write(&mut out).and_then(|()| out.flush()) {
            Err(e) if is_broken_pipe(&e) => {
                self.stdout_closed.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }

    /// Writes one line of the result (text output).
    pub fn line(&self, line: impl Display) {
        if let Err(e) = self.to_stdout(|out| writeln!(out, "{line}")) {
            // Kept for the end of the command; later lines are dropped,
            // so a result is never written with holes in it.
            self.stdout_closed.store(true, Ordering::Relaxed);
            let mut first = self
                .stdout_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert(e);
        }
    }

    /// Returns the error that made text lines fail to reach stdout, if any
    /// (never a closed pipe: that one ends the output quietly).
    pub fn take_stdout_error(&self) -> Option<std::io::Error> {
        self.stdout_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Writes the result as pretty JSON with a trailing newline.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        // Serialized first, so that a serializer error is never taken for
        // an I/O one and a closed pipe is seen by one write.
        let mut text = serde_json::to_vec_pretty(value)?;
        text.push(b'\n');
        self.to_stdout(|out| out.write_all(&text))?;
        Ok(())
    }

    /// Writes raw bytes to stdout (completion scripts, XML, plain text asked for with `-o -`).
    pub fn raw(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.to_stdout(|out| out.write_all(bytes))?;
        Ok(())
    }

    /// Writes a JUnit XML report.
    pub fn junit(&self, report: &quick_junit::Report) -> anyhow::Result<()> {
        let xml = report.to_string()?;
        self.raw(xml.as_bytes())?;
        self.raw(b"\n")
    }

    /// Writes a status line to stderr (progress, summaries), unless quiet.
    pub fn status(&self, line: impl Display) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }

    /// Writes `warning: ...` to stderr.
    pub fn warn(&self, message: impl Display) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "{} {message}",
            self.paint_err(Paint::Warn, "warning:")
        );
    }

    /// Writes an error and its causes to stderr, one line per cause.
    pub fn error(&self, error: &anyhow::Error) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{} {error}", self.paint_err(Paint::Bad, "error:"));
        for cause in error.chain().skip(1) {
            let _ = writeln!(err, "  caused by: {cause}");
        }
    }

    /// Returns true when a progress bar may be drawn: stderr is a terminal,
    /// not quiet, and not in CI.
    pub fn interactive(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
    }
}

pub use crate::words::plural;

fn format_name(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Text => "text",
        OutputFormat::Json => "json",
        OutputFormat::Junit => "junit",
        OutputFormat::Openmetrics => "openmetrics",
    }
}

impl crate::ops::world::Events for Printer {
    fn event(&self, event: crate::ops::world::Event) {
        match event {
            crate::ops::world::Event::Status(line) => self.status(line),
            crate::ops::world::Event::Warning(line) => self.warn(line),
        }
    }
}
