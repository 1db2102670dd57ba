//! The tracing subscriber: readable lines in a terminal (`log.format = "text"`), one JSON
//! object per line in production (`json`), filtered by `log.filter`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.filter` does not parse (validated at load, so only reachable from code).
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was installed already.
    #[error("failed to install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global subscriber. Logs go to stderr, so stdout stays free for what a
/// command prints (the bound address, a token).
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&settings.filter)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
    result.map_err(|error| TelemetryError::Install(error.to_string()))
}
