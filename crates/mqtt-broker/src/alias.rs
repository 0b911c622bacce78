//! Outbound topic aliases (§3.3.2.3.4): the server's own alias numbers toward one client, for
//! one connection [MQTT-3.3.2-7].

use std::collections::HashMap;

use mqtt_packets::{MqttString, Publish};

/// The most aliases the server uses toward one client, whatever the client allows: enough for
/// the hot topics, small enough that replacing the least recently used one is a short scan.
pub(crate) const OUTBOUND_ALIAS_LIMIT: u16 = 256;

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

    /// Records a plan once its PUBLISH was actually encoded for sending.
    pub(crate) fn commit(&mut self, plan: AliasPlan, topic: &MqttString) {
        self.clock += 1;
        match plan {
            AliasPlan::None => {}
            AliasPlan::Reuse(alias) => {
                self.by_topic.insert(topic.clone(), (alias, self.clock));
            }
            AliasPlan::Assign(alias) => {
                if let Some(previous) = self.by_alias.insert(alias, topic.clone()) {
                    self.by_topic.remove(&previous);
                }
                self.by_topic.insert(topic.clone(), (alias, self.clock));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
