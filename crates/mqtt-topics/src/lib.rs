//! Topic names and filters for Mochi MQTT: validation, the reference matcher, the concurrent
//! subscription trie with shared subscriptions, and the retained-message index.
//!
//! * [`validate_topic_name`] and [`parse_filter`] check names and filters against §4.7-4.8 and
//!   configurable limits ([`TopicRules`]); errors map to reason codes (0x90, 0x8F, 0x9E, 0xA2).
//! * [`matches`] is the one reference matcher; [`SubscriptionTrie`] and [`RetainedIndex`] agree
//!   with it (property-tested).
//! * [`SubscriptionTrie`] stores one value per (client id, filter) and answers "who gets a
//!   message on this topic": every non-shared subscriber once, with all its matching
//!   subscriptions (for the highest QoS and every Subscription Identifier), and one member of each
//!   matching shared group, chosen by a [`ShareStrategy`] that skips offline members.
//! * [`RetainedIndex`] finds the retained messages a new subscription should receive.
//!
//! # Example
//!
//! ```
//! use mqtt_packets::QoS;
//! use mqtt_topics::{ClientId, RetainedIndex, SubscriptionTrie, matches};
//!
//! assert!(matches("sport/#", "sport"));
//! assert!(!matches("#", "$SYS/uptime"));
//!
//! let trie = SubscriptionTrie::default();
//! let alice = ClientId::from("alice");
//! trie.insert(&alice, "sensors/+/temp", QoS::AtLeastOnce)?;
//! trie.insert(&alice, "sensors/#", QoS::AtMostOnce)?;
//! trie.insert(&ClientId::from("worker-1"), "$share/workers/sensors/#", QoS::AtLeastOnce)?;
//!
//! let found = trie.matches("sensors/7/temp", Some("sensor-7"), &|_client, _subscription| true);
//! let clients: Vec<_> = found.clients().collect();
//! assert_eq!(clients.len(), 1);
//! assert_eq!(clients[0].qos(), QoS::AtLeastOnce); // the highest of alice's two subscriptions
//! assert_eq!(&*found.shared()[0].client_id, "worker-1");
//!
//! let retained = RetainedIndex::new();
//! retained.set("sensors/7/temp", "21.5");
//! assert_eq!(retained.matching("sensors/+/temp").len(), 1);
//! # Ok::<(), mqtt_topics::TopicError>(())
//! ```

mod error;
mod matching;
mod retained;
mod shared;
mod trie;
mod validate;

pub use error::{TopicError, TopicKind};
pub use matching::matches;
pub use retained::{RetainedIndex, RetainedPage};
pub use shared::{CustomChooser, ShareStrategy};
pub use trie::{
    ClientMatch, Matches, SharedGroupId, SharedMatch, SubscriptionInfo, SubscriptionTrie,
};
pub use validate::{SHARED_PREFIX, TopicFilter, TopicRules, parse_filter, validate_topic_name};

/// A client identifier, shared cheaply between the trie, sessions and deliveries.
pub type ClientId = std::sync::Arc<str>;
