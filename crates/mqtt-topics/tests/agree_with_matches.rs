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

    /// Read a page at a time, the retained index returns exactly what `matching` returns, in
    /// topic order (level by level), whatever the page and visit limits.
    #[test]
    fn retained_pages_agree_with_matching(
        topics in prop::collection::btree_set(topic(), 1..40),
        filters in prop::collection::vec(filter(), 1..6),
        max_entries in 1..6usize,
        max_visits in 1..8usize,
    ) {
        let index = RetainedIndex::new();
        for topic in &topics {
            index.set(topic, ());
        }
        for filter in &filters {
            let mut paged: Vec<String> = Vec::new();
            let mut after: Option<String> = None;
            let mut pages = 0;
            loop {
                let page = index.matching_page(filter, after.as_deref(), max_entries, max_visits);
                prop_assert!(page.entries.len() <= max_entries);
                paged.extend(page.entries.into_iter().map(|(t, ())| t.to_string()));
                pages += 1;
                prop_assert!(pages < 1000, "the walk makes progress");
                match page.resume {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let mut expected: Vec<String> =
                index.matching(filter).into_iter().map(|(t, ())| t.to_string()).collect();
            expected.sort_by(|a, b| a.split('/').cmp(b.split('/')));
            prop_assert_eq!(paged, expected, "filter {}", filter);
        }
    }

    /// Topics set and cleared between pages: each topic that stays is returned once, a cleared
    /// one never after it was cleared, and none twice.
    #[test]
    fn retained_pages_survive_changes_between_pages(
        topics in prop::collection::btree_set(topic(), 1..40),
        changes in prop::collection::vec((any::<bool>(), topic()), 0..20),
        max_entries in 1..4usize,
    ) {
        let index = RetainedIndex::new();
        for topic in &topics {
            index.set(topic, ());
        }
        let mut stable: BTreeSet<String> = topics.clone();
        let mut seen: Vec<String> = Vec::new();
        let mut changes = changes.into_iter();
        let mut after: Option<String> = None;
        loop {
            let page = index.matching_page("#", after.as_deref(), max_entries, 16);
            seen.extend(page.entries.into_iter().map(|(t, ())| t.to_string()));
            if let Some((set, topic)) = changes.next() {
                stable.remove(&topic);
                if set {
                    index.set(&topic, ());
                } else {
                    index.remove(&topic);
                }
            }
            match page.resume {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        prop_assert_eq!(unique.len(), seen.len(), "no topic twice: {:?}", seen);
        for topic in stable.iter().filter(|t| matches("#", t)) {
            prop_assert!(unique.contains(topic), "{} missing from {:?}", topic, seen);
        }
    }
}
