//! The hub's log: to standard error, as text or one JSON object a line, with colours only on
//! a terminal.

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Readable text (colours when standard error is a terminal).
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// Installs the process' log subscriber (once; later calls change nothing). Every request
/// writes one line at `info` with its request id, method, path, route, status, duration, user
/// and device.
pub fn init(level: LevelFilter, format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
    };
}
