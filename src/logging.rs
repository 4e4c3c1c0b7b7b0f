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
    std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|env| builder.parse(without_repeats(&env)).ok())
        .unwrap_or_else(|| builder.parse_lossy(without_repeats(level)))
}

/// Parses a filter as the broker's log uses it: span field values match literally,
/// not as regular expressions, whose compilation can take seconds for a few hundred
/// bytes of `log.level` (found by the `settings` fuzz target).
pub(crate) fn parse_filter(
    level: &str,
) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(without_repeats(level))
}

/// `level` with each directive that a later one selects again (same target, span and
/// field values) left out: the later one wins, as it does in `tracing`.
///
/// Why: tracing-subscriber 0.3 orders two such directives with a literal field value
/// (`[{user=bob}]=debug,[{user=bob}]=info`) as equal without holding them equal, and
/// its debug assertion then aborts a debug build of the broker at start (found by the
/// `settings` fuzz target). Release builds only kept the later one.
fn without_repeats(level: &str) -> String {
    let builder = EnvFilter::builder().with_regex(false);
    let mut kept: Vec<(String, &str)> = Vec::new();
    // Trimmed here: tracing-subscriber 0.3.23 walks a directive trimmed but slices it
    // untrimmed, so a leading space before a multi-byte character panicked in any
    // build (`" -Кӌ["`, found by the `settings` fuzz target).
    for piece in level.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // One directive alone cannot meet its double; its canonical form without the
        // level is what `tracing` compares. A piece it refuses is kept for the whole
        // parse to refuse (or skip, when lossy), under a key no directive has.
        let key = match builder.parse(piece) {
            Ok(one) => {
                let shown = one.to_string();
                shown
                    .rsplit_once('=')
                    .map_or_else(String::new, |(selector, _)| selector.to_string())
            }
            Err(_) => format!("\0{piece}"),
        };
        kept.retain(|(k, _)| *k != key);
        kept.push((key, piece));
    }
    let pieces: Vec<&str> = kept.iter().map(|(_, p)| *p).collect();
    pieces.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_directives_keep_the_last_and_pieces_are_trimmed() {
        assert_eq!(
            without_repeats("[{user=bob}]=debug,info,[{user=bob}]=warn"),
            "info,[{user=bob}]=warn"
        );
        // Before: a debug build aborted here, inside tracing-subscriber.
        let f = parse_filter("[{user=bob}]=debug,[{user=bob}]=info").unwrap();
        assert_eq!(f.to_string(), "[{user=bob}]=info");
        assert_eq!(without_repeats("actormq=debug,info"), "actormq=debug,info");
        assert!(
            parse_filter("a=nolevel").is_err(),
            "a bad directive is still refused"
        );
        // Before: a panic inside tracing-subscriber, in release builds too.
        assert!(parse_filter(" -\u{41a}\u{4cc}[,x").is_err());
        assert_eq!(
            without_repeats(" actormq=debug , info"),
            "actormq=debug,info"
        );
    }
}
