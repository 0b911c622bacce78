//! Errors of the listeners, grouped by who is at fault.

use std::io;

/// Why a listener could not be created or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// The address could not be bound, or another socket operation failed.
    #[error("listener {listener}: {source}")]
    Io {
        /// The listener id.
        listener: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TLS configuration is unusable (bad certificate, key or CA).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A configuration value is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

impl ListenerError {
    pub(crate) fn io(listener: &str, source: io::Error) -> Self {
        Self::Io {
            listener: listener.to_owned(),
            source,
        }
    }
}
