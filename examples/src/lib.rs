//! Examples of Mochi MQTT; see the `[[example]]` entries in `Cargo.toml`.
