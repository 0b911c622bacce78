//! Every structure of the crate agrees with the reference matcher `matches`.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use mqtt_packets::QoS;
use mqtt_topics::{ClientId, RetainedIndex, SubscriptionTrie, matches};
use proptest::prelude::*;

/// Levels drawn from a small alphabet so that filters and topics overlap often; includes the
/// empty level and `$` levels.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("$SYS".to_string()),
        Just("$x".to_string()),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![
        4 => level(),
        2 => Just("+".to_string()),
    ];
    (
        prop::collection::vec(filter_level, 0..5),
        any::<bool>(),
        0..4u8,
    )
        .prop_filter_map("non-empty", |(levels, hash, shared)| {
            let mut filter = levels.join("/");
            if hash {
                filter = if levels.is_empty() {
                    "#".to_string()
                } else {
                    format!("{filter}/#")
                };
            }
            if filter.is_empty() {
                return None;
            }
            Some(match shared {
                0 => format!("$share/g/{filter}"),
                1 => format!("$share/h/{filter}"),
                _ => filter,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The trie delivers to exactly the clients (non-shared) and groups (shared) whose filters
    /// `matches` the topic.
    #[test]
    fn trie_agrees_with_matches(
        subscriptions in prop::collection::vec((0..6u8, filter()), 1..40),
        topics in prop::collection::vec(topic(), 1..10),
    ) {
        let trie = SubscriptionTrie::default();
        let mut expected_filters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (client, filter) in &subscriptions {
            let client = format!("c{client}");
            trie.insert(&ClientId::from(client.as_str()), filter, QoS::AtMostOnce).unwrap();
            expected_filters.entry(client).or_default().insert(filter.clone());
        }
        for topic in &topics {
            let found = trie.matches(topic, None, &|_, _| true);
            let mut expected_clients = BTreeSet::new();
            let mut expected_groups = BTreeSet::new();
            for (client, filters) in &expected_filters {
                for filter in filters {
                    if !matches(filter, topic) {
                        continue;
                    }
                    match filter.strip_prefix("$share/") {
                        Some(shared) => {
                            let (group, rest) = shared.split_once('/').unwrap();
                            expected_groups.insert((group.to_string(), rest.to_string()));
                        }
                        None => {
                            expected_clients.insert(client.clone());
                        }
                    }
                }
            }
            let clients: BTreeSet<String> =
                found.clients().map(|c| c.client_id().to_string()).collect();
            prop_assert_eq!(&clients, &expected_clients, "topic {}", topic);
            prop_assert_eq!(found.client_count(), expected_clients.len());
            let groups: Vec<(String, String)> = found
                .shared()
                .iter()
                .map(|s| (s.group.share_name.to_string(), s.group.filter.to_string()))
                .collect();
            let unique: BTreeSet<_> = groups.iter().cloned().collect();
            prop_assert_eq!(groups.len(), unique.len(), "one member per group");
            prop_assert_eq!(unique, expected_groups, "topic {}", topic);
        }
        // Removing everything returns the trie to its empty size.
        for client in expected_filters.keys() {
            trie.remove_client(client);
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), SubscriptionTrie::<QoS>::default().node_count());
    }

    /// The retained index finds exactly the topics `matches` accepts.
    #[test]
    fn retained_agrees_with_matches(
        topics in prop::collection::btree_set(topic(), 1..40),
        filters in prop::collection::vec(filter(), 1..10),
    ) {
        let index = RetainedIndex::new();
        for topic in &topics {
            index.set(topic, ());
        }
        for filter in &filters {
            let mut found: Vec<String> =
                index.matching(filter).into_iter().map(|(t, ())| t.to_string()).collect();
            found.sort();
            let expected: Vec<String> =
                topics.iter().filter(|t| matches(filter, t)).cloned().collect();
            prop_assert_eq!(found, expected, "filter {}", filter);
        }
        for topic in &topics {
            index.remove(topic);
        }
        prop_assert_eq!(index.node_count(), 1);
    }
}
