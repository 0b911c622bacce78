//! Placeholder: the backend conformance suite is being written.
