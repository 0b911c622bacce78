//! The redis storage backend of the Mochi MQTT broker (being written).
