//! Authentication hooks for the Mochi MQTT broker.
//!
//! * [`ScramSha256Hook`]: MQTT 5 enhanced authentication with SCRAM-SHA-256 (RFC 7677): the
//!   client proves it knows its password without sending it, and the server proves it knows the
//!   password too. The server stores only salted keys.
//!
//! # Example
//!
//! ```
//! use mqtt_broker::{Options, Server};
//! use mqtt_hook_auth::ScramSha256Hook;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let scram = ScramSha256Hook::new();
//! scram.add_user("device-17", "correct horse battery staple");
//! let server = Server::new(Options::default());
//! server.add_hook(scram)?;
//! // Clients connect with Authentication Method "SCRAM-SHA-256"; an ACL hook decides what they
//! // may publish and subscribe.
//! # Ok(())
//! # }
//! ```

mod scram;

pub use scram::{
    DEFAULT_ITERATIONS, SCRAM_SHA_256, ScramCredential, ScramSha256Hook, hmac, salted_password,
};
