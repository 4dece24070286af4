//! Structured logs: human-readable text by default, JSON lines with MUSCLE_LOG_FORMAT=json.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Services log what they do; one-shot commands only what goes wrong (they draw a progress bar).
pub const SERVICE_FILTER: &str = "info,sqlx=warn,tower_http=warn";
pub const COMMAND_FILTER: &str = "warn";

/// Installs the subscriber on stderr; RUST_LOG overrides `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr a closed pipe) is dropped: reporting it
        // would print to the same stderr, and that panics the task that logged.
        .log_internal_errors(false)
        // Colour codes only for a person at a terminal, never in log files or pipes.
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
