//! Errors of the embedding API.

use mqtt_packets::ReasonCode;

use crate::hooks::HookError;

/// An error of a [`crate::Server`] method.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A hook refused to be added.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The topic or filter is not valid.
    #[error("invalid topic or filter {0:?}")]
    InvalidTopic(String),
    /// The broker refused the operation with this reason code.
    #[error("refused: {0}")]
    Refused(ReasonCode),
    /// No session exists for this client id.
    #[error("no session for client {0:?}")]
    UnknownClient(String),
    /// The packet type cannot be injected.
    #[error("{0} cannot be injected")]
    Unsupported(&'static str),
}
