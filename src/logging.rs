//! The `tracing` subscriber of the `actormq` binary: `[log] level` (or `RUST_LOG`, which
//! wins) and `[log] format` (`text` or `json`), written to standard error.
//!
//! Text lines are coloured only when standard error is a terminal: a file or a pipe
//! gets plain text, not ANSI escape codes. JSON is one object per line (`timestamp`,
//! `level`, `target`, `fields`), for log shippers.

use crate::settings::{LogFormat, LogSettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for `settings`. Does nothing if one is installed
/// already (an embedding application's own, or a test's).
pub fn init(settings: &LogSettings) {
    let filter = filter(&settings.level);
    // Logs go to standard error, leaving standard output to the program's own output.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(false)
            .try_init(),
    };
}

/// `RUST_LOG` when it is set (and valid), else `level`.
fn filter(level: &str) -> EnvFilter {
    let builder = EnvFilter::builder().with_regex(false);
    builder
        .try_from_env()
        .unwrap_or_else(|_| builder.parse_lossy(level))
}

/// Parses a filter as the broker's log uses it: span field values match literally,
/// not as regular expressions, whose compilation can take seconds for a few hundred
/// bytes of `log.level` (found by the `settings` fuzz target).
pub(crate) fn parse_filter(
    level: &str,
) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::builder().with_regex(false).parse(level)
}
