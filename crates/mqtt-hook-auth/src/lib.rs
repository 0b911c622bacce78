//! Authentication hooks for the Mochi MQTT broker.
//!
//! * [`AllowHook`]: allows everything; for development only (it warns when added).
//! * [`LedgerHook`]: the rule ledger of the original broker, done right: auth rules (client id,
//!   user name, password, remote address; allow or deny) and ACL rules (topic filters with Deny,
//!   ReadOnly, WriteOnly or ReadWrite), checked in order, the first matching rule deciding.
//!   Filters are matched with the spec-correct matcher (a rule for `allowed` does not cover
//!   `allowed/secret`; `a/#` covers `a`); remote addresses match by CIDR (`10.0.0.0/8`,
//!   `::1/128`) or `ip:port` pattern; client id and user name patterns take `*` anywhere;
//!   passwords may be Argon2id or bcrypt hashes (checked on the blocking pool, a few at a time
//!   within [`VerificationLimits`]; a flood of CONNECTs gets 0x89 Server busy); `%c` and `%u` in
//!   filters stand for the client id and user name; within a rule, a matching Deny filter wins,
//!   and a Deny filter whose `%c` or `%u` cannot be substituted denies (fails closed). Users may
//!   be bound to client id patterns ([`UserRule::client`]). Filters that start with
//!   `$share/{group}/` restrict shared subscriptions to named groups. Connections are denied
//!   when no auth rule matches; publish and subscribe are allowed when no ACL rule matches unless
//!   `deny_by_default` is set ([`Ledger::only_allows`] tells when that leaves clients
//!   unconfined). An unknown user name takes as long to refuse as a known one. Loads from a Rust
//!   value, JSON, YAML, TOML or a file, and reloads atomically. The crate's README describes
//!   the ledger format.
//! * [`ScramSha256Hook`]: MQTT 5 enhanced authentication with SCRAM-SHA-256 (RFC 7677): the
//!   client proves it knows its password without sending it, and the server proves it knows the
//!   password too. The server stores only salted keys. The SCRAM user becomes the client's user
//!   name (for the ACL and the session's owner); a re-authentication must prove the same user.
//!
//! # Example
//!
//! ```
//! use mqtt_broker::{Options, Server};
//! use mqtt_hook_auth::{Ledger, LedgerHook, ScramSha256Hook};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ledger = Ledger::from_yaml(br##"
//! auth:
//!   - {username: "sensor-*", password: "$2b$12$...hash...", allow: true}
//!   - {remote: "10.0.0.0/8", allow: true}
//! acl:
//!   - {client: "sensor-*", filters: {"devices/%c/#": readwrite, "config/#": read}}
//!   - {filters: {"#": read, "private/#": deny}}
//! "##)?;
//! let server = Server::new(Options::default());
//! server.add_hook(LedgerHook::new(ledger))?;
//! # Ok(())
//! # }
//! ```
//!
//! SCRAM-SHA-256:
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

mod hook;
mod ledger;
mod rules;
mod scram;
mod verification;

pub use hook::LedgerHook;
pub use ledger::{AclRule, AuthRule, FilterAccess, Ledger, LedgerError, UserRule};
/// Allows every connection, publish and subscription; logs a warning when added (development
/// only).
pub use mqtt_broker::AllowAllHook as AllowHook;
pub use scram::{
    DEFAULT_ITERATIONS, SCRAM_SHA_256, ScramCredential, ScramSha256Hook, hmac, salted_password,
};
pub use verification::VerificationLimits;
