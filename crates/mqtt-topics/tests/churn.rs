//! No leaks under churn, and safe concurrent use.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mqtt_packets::QoS;
use mqtt_topics::{ClientId, RetainedIndex, SubscriptionTrie};

fn filter(i: usize) -> String {
    match i % 10 {
        0..=6 => format!("site/{}/device/{}/temp", i % 97, i),
        7 | 8 => format!("site/{}/+/{}/#", i % 89, i),
        _ => format!("$share/g{}/site/+/device/{}", i % 13, i),
    }
}

#[test]
fn trie_returns_to_empty_size_after_100k_filters() {
    let trie = SubscriptionTrie::default();
    let empty = trie.node_count();
    let clients: Vec<ClientId> = (0..100)
        .map(|i| ClientId::from(format!("client-{i}")))
        .collect();
    for i in 0..100_000 {
        trie.insert(&clients[i % 100], &filter(i), QoS::AtLeastOnce)
            .unwrap();
    }
    assert_eq!(trie.len(), 100_000);
    assert!(trie.node_count() > empty);
    // Half by unsubscribe, half by the end of the session.
    for i in (0..100_000).filter(|i| i % 100 < 50) {
        assert!(
            trie.remove(&clients[i % 100], &filter(i)).is_some(),
            "{}",
            filter(i)
        );
    }
    for client in clients.iter().skip(50) {
        assert_eq!(trie.remove_client(client), 1000);
    }
    assert!(trie.is_empty());
    assert_eq!(trie.client_count(), 0);
    assert_eq!(trie.node_count(), empty);
}

#[test]
fn retained_index_returns_to_empty_size() {
    let index = RetainedIndex::new();
    for i in 0..100_000 {
        index.set(&format!("site/{}/device/{}/temp", i % 97, i), i);
    }
    assert_eq!(index.len(), 100_000);
    for i in 0..100_000 {
        assert_eq!(
            index.remove(&format!("site/{}/device/{}/temp", i % 97, i)),
            Some(i)
        );
    }
    assert_eq!(index.node_count(), 1);
}

/// Matching from several threads while others subscribe and unsubscribe: a stable subscriber
/// is always found, and the trie ends empty.
#[test]
fn concurrent_match_and_subscribe() {
    let trie = Arc::new(SubscriptionTrie::default());
    let stable = ClientId::from("stable");
    trie.insert(&stable, "site/+/device/#", QoS::AtMostOnce)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for reader in 0..2 {
        let trie = trie.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds < 1000 {
                let topic = format!("site/{}/device/{}/temp", rounds % 97, reader);
                let found = trie.matches(&topic, None, &|_, _| true);
                assert!(found.clients().any(|c| &**c.client_id() == "stable"));
                rounds += 1;
            }
        }));
    }
    for writer in 0..2 {
        let trie = trie.clone();
        handles.push(std::thread::spawn(move || {
            let client = ClientId::from(format!("writer-{writer}"));
            for i in 0..20_000 {
                trie.insert(&client, &filter(i), QoS::AtLeastOnce).unwrap();
                if i % 2 == 0 {
                    trie.remove(&client, &filter(i));
                }
            }
            trie.remove_client(&client);
        }));
    }
    for handle in handles.drain(2..) {
        handle.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(trie.remove_client("stable"), 1);
    assert!(trie.is_empty());
    assert_eq!(
        trie.node_count(),
        SubscriptionTrie::<QoS>::default().node_count()
    );
}
