//! Outbound topic aliases (§3.3.2.3.4): the server's own alias numbers toward one client, for
//! one connection [MQTT-3.3.2-7].

use std::collections::HashMap;

use mqtt_packets::{MqttString, Publish};

/// The most aliases the server uses toward one client, whatever the client allows: enough for
/// the hot topics, small enough that replacing the least recently used one is a short scan.
pub(crate) const OUTBOUND_ALIAS_LIMIT: u16 = 256;

/// The topic aliases a client set on one connection [MQTT-3.3.2-7], with the bytes of their
/// topics: a client may set up to Topic Alias Maximum of them, each with a topic of up to the
/// longest topic name, so their bytes have a limit of their own.
#[derive(Debug, Default)]
pub(crate) struct InboundAliases {
    topics: HashMap<u16, MqttString>,
    bytes: usize,
}

impl InboundAliases {
    /// The topic of `alias`, if the client set one.
    pub(crate) fn get(&self, alias: u16) -> Option<&MqttString> {
        self.topics.get(&alias)
    }

    /// Sets `alias` to a copy of `topic` (a slice would keep the read buffer it came from
    /// alive for the whole connection). `false`, and nothing changed, when the topics would
    /// then hold more than `maximum_bytes`.
    pub(crate) fn set(&mut self, alias: u16, topic: &MqttString, maximum_bytes: usize) -> bool {
        let replaced = self.topics.get(&alias).map_or(0, |old| old.len());
        let bytes = self.bytes - replaced + topic.len();
        if bytes > maximum_bytes {
            return false;
        }
        self.topics
            .insert(alias, crate::message::owned_string(topic));
        self.bytes = bytes;
        true
    }
}

/// What an alias does to one PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliasPlan {
    /// No alias (the client allows none).
    None,
    /// The topic already has this alias: send an empty topic with it.
    Reuse(u16),
    /// Give the topic this alias (new, or taken from the least recently used topic): send the
    /// topic with it.
    Assign(u16),
}

/// The aliases of one connection: topic → (alias, last use).
#[derive(Debug)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    by_topic: HashMap<MqttString, (u16, u64)>,
    by_alias: HashMap<u16, MqttString>,
    clock: u64,
}

impl OutboundAliases {
    /// Aliases up to the client's Topic Alias Maximum (0: none, [MQTT-3.1.2-27]).
    pub(crate) fn new(client_maximum: u16) -> Self {
        Self {
            maximum: client_maximum.min(OUTBOUND_ALIAS_LIMIT),
            by_topic: HashMap::new(),
            by_alias: HashMap::new(),
            clock: 0,
        }
    }

    /// What to do for `topic`, without changing anything yet.
    pub(crate) fn plan(&self, topic: &MqttString) -> AliasPlan {
        if self.maximum == 0 {
            return AliasPlan::None;
        }
        if let Some(&(alias, _)) = self.by_topic.get(topic) {
            return AliasPlan::Reuse(alias);
        }
        let used = self.by_alias.len() as u16;
        if used < self.maximum {
            // Values 1..=maximum [MQTT-3.3.2-8] [MQTT-3.3.2-11].
            return AliasPlan::Assign(used + 1);
        }
        let least_recent = self.by_topic.values().min_by_key(|(_, last_use)| *last_use);
        least_recent.map_or(AliasPlan::None, |&(alias, _)| AliasPlan::Assign(alias))
    }

    /// Applies a plan to a PUBLISH about to be sent.
    pub(crate) fn apply(plan: AliasPlan, publish: &mut Publish) {
        match plan {
            AliasPlan::None => {}
            AliasPlan::Reuse(alias) => {
                publish.properties.topic_alias = std::num::NonZeroU16::new(alias);
                publish.topic = MqttString::default();
            }
            AliasPlan::Assign(alias) => {
                publish.properties.topic_alias = std::num::NonZeroU16::new(alias);
            }
        }
    }

    /// Records a plan once its PUBLISH was actually encoded for sending. The table keeps its
    /// own copy of a new topic: the topic handed in is a slice of a message, and a slice would
    /// keep that message's whole buffer alive as long as the alias lives.
    pub(crate) fn commit(&mut self, plan: AliasPlan, topic: &MqttString) {
        self.clock += 1;
        match plan {
            AliasPlan::None => {}
            AliasPlan::Reuse(alias) => {
                if let Some(entry) = self.by_topic.get_mut(topic) {
                    *entry = (alias, self.clock);
                }
            }
            AliasPlan::Assign(alias) => {
                let owned = crate::message::owned_string(topic);
                if let Some(previous) = self.by_alias.insert(alias, owned.clone()) {
                    self.by_topic.remove(&previous);
                }
                self.by_topic.insert(owned, (alias, self.clock));
            }
        }
    }

    /// Whether no topic the table keeps points into the memory `start..end` (for tests).
    #[cfg(test)]
    fn keeps_nothing_in(&self, start: usize, end: usize) -> bool {
        self.by_alias
            .values()
            .chain(self.by_topic.keys())
            .all(|topic| !(start..end).contains(&(topic.as_bytes().as_ptr() as usize)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_aliases_count_their_bytes() {
        // Audit M4: 65,535 aliases of 65,535-byte topics were about 4 GiB per connection.
        let mut aliases = InboundAliases::default();
        let topic = |text: &str| MqttString::new(text).unwrap();
        assert!(aliases.set(1, &topic("aaaa"), 10));
        assert!(aliases.set(2, &topic("bbbbbb"), 10));
        assert!(!aliases.set(3, &topic("c"), 10), "11 bytes > 10");
        assert!(aliases.get(3).is_none());
        // Replacing an alias's topic frees the old one's bytes.
        assert!(aliases.set(1, &topic("dddd"), 10));
        assert!(aliases.set(2, &topic("e"), 10));
        assert!(aliases.set(3, &topic("fffff"), 10));
        assert_eq!(aliases.get(1).map(|t| t.as_str()), Some("dddd"));
    }

    #[test]
    fn aliases_keep_copies_of_their_topics_not_slices_of_messages() {
        // Audit H1.4: an alias key that is a slice of a message pins the message's frame.
        let mut read = bytes::BytesMut::new();
        Publish::new(MqttString::from_static("sensors/1"), vec![0u8; 1024])
            .encode(mqtt_packets::Protocol::V5, &mut read)
            .unwrap();
        let context = mqtt_packets::DecodeContext::new(mqtt_packets::Protocol::V5);
        let Ok(Some(mqtt_packets::Packet::Publish(publish))) =
            mqtt_packets::decode(&mut read, &context)
        else {
            panic!("a PUBLISH was encoded");
        };
        // The frame the decoder sliced: from the topic to the end of the payload.
        let start = publish.topic.as_bytes().as_ptr() as usize;
        let end = publish.payload.as_ptr() as usize + publish.payload.len();
        assert!(start < end);
        let mut aliases = OutboundAliases::new(10);
        let plan = aliases.plan(&publish.topic);
        assert_eq!(plan, AliasPlan::Assign(1));
        aliases.commit(plan, &publish.topic);
        let plan = aliases.plan(&publish.topic);
        assert_eq!(plan, AliasPlan::Reuse(1));
        aliases.commit(plan, &publish.topic);
        assert!(aliases.keeps_nothing_in(start, end));
    }

    fn topic(name: &'static str) -> MqttString {
        MqttString::from_static(name)
    }

    fn send(aliases: &mut OutboundAliases, name: &'static str) -> AliasPlan {
        let plan = aliases.plan(&topic(name));
        aliases.commit(plan, &topic(name));
        plan
    }

    #[test]
    fn no_alias_for_a_client_that_allows_none_mqtt_3_1_2_27() {
        let mut aliases = OutboundAliases::new(0);
        assert_eq!(send(&mut aliases, "a"), AliasPlan::None);
        assert_eq!(send(&mut aliases, "a"), AliasPlan::None);
    }

    #[test]
    fn assigns_then_reuses_and_replaces_the_least_recent_mqtt_3_3_2_11() {
        let mut aliases = OutboundAliases::new(2);
        assert_eq!(send(&mut aliases, "a"), AliasPlan::Assign(1));
        assert_eq!(send(&mut aliases, "b"), AliasPlan::Assign(2));
        assert_eq!(send(&mut aliases, "a"), AliasPlan::Reuse(1));
        // "b" is the least recently used: "c" takes its alias.
        assert_eq!(send(&mut aliases, "c"), AliasPlan::Assign(2));
        assert_eq!(send(&mut aliases, "b"), AliasPlan::Assign(1));
        assert_eq!(send(&mut aliases, "c"), AliasPlan::Reuse(2));
    }

    #[test]
    fn an_uncommitted_plan_changes_nothing() {
        let mut aliases = OutboundAliases::new(5);
        let plan = aliases.plan(&topic("a"));
        assert_eq!(plan, AliasPlan::Assign(1));
        assert_eq!(aliases.plan(&topic("a")), AliasPlan::Assign(1));
        aliases.commit(plan, &topic("a"));
        assert_eq!(aliases.plan(&topic("a")), AliasPlan::Reuse(1));
    }
}
