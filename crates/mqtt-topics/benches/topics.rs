//! Benchmarks of the subscription trie and the retained index. Run with
//! `cargo bench -p mqtt-topics`.

#![allow(missing_docs, clippy::indexing_slicing, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mqtt_packets::QoS;
use mqtt_topics::{ClientId, RetainedIndex, SubscriptionTrie};

/// 100,000 subscriptions: 70% exact filters, 20% with `+`, 10% with `#`, from 10,000 clients,
/// plus 1,000 shared groups of 3 members each.
fn populated_trie() -> SubscriptionTrie<QoS> {
    let trie = SubscriptionTrie::default();
    let clients: Vec<ClientId> = (0..10_000)
        .map(|i| ClientId::from(format!("client-{i}")))
        .collect();
    for i in 0..100_000usize {
        let filter = match i {
            0..70_000 => format!("tenant/{}/device/{i}/telemetry", i % 100),
            70_000..90_000 => format!("tenant/{}/+/{i}/telemetry", i % 100),
            _ => format!("tenant/{}/device/{i}/#", i % 100),
        };
        trie.insert(&clients[i % clients.len()], &filter, QoS::AtLeastOnce)
            .ok();
    }
    for group in 0..1_000usize {
        for member in 0..3usize {
            let filter = format!("$share/g{group}/tenant/{}/device/+/telemetry", group % 100);
            trie.insert(
                &clients[(group * 3 + member) % clients.len()],
                &filter,
                QoS::AtLeastOnce,
            )
            .ok();
        }
    }
    trie
}

fn trie_benches(c: &mut Criterion) {
    let trie = populated_trie();
    let mut group = c.benchmark_group("trie");
    // Topics made in advance, so that only matching is timed.
    let topics: Vec<String> = (0..4096usize)
        .map(|n| {
            let i = (n * 7919) % 70_000;
            format!("tenant/{}/device/{i}/telemetry", i % 100)
        })
        .collect();
    group.bench_function("match_100k_subscriptions", |b| {
        let mut n = 0usize;
        b.iter(|| {
            n = (n + 1) % topics.len();
            black_box(trie.matches(black_box(&topics[n]), Some("publisher"), &|_, _| true))
        })
    });
    let topic = "tenant/42/device/4242/telemetry";
    group.bench_function("match_100k_subscriptions_fixed_topic", |b| {
        b.iter(|| black_box(trie.matches(black_box(topic), Some("publisher"), &|_, _| true)))
    });
    let client = ClientId::from("bench-client");
    let filters: Vec<String> = (0..1024)
        .map(|i| format!("tenant/{}/device/{i}/x/+", i % 100))
        .collect();
    group.bench_function("subscribe", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % filters.len();
            if i == 0 {
                trie.remove_client(&client);
            }
            black_box(trie.insert(&client, &filters[i], QoS::AtMostOnce)).ok();
        })
    });
    trie.remove_client(&client);
    group.bench_function("subscribe_then_unsubscribe", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % filters.len();
            trie.insert(&client, &filters[i], QoS::AtMostOnce).ok();
            black_box(trie.remove(&client, &filters[i]))
        })
    });
    group.finish();
}

fn retained_benches(c: &mut Criterion) {
    let index = RetainedIndex::new();
    // 100,000 retained topics a/{0..100}/{0..100}/{d, e, f, ...}.
    for i in 0..100_000usize {
        let leaf = ["d", "e", "f", "g", "h", "i", "j", "k", "l", "m"][i % 10];
        index.set(
            &format!(
                "{}/{}/{}/{leaf}",
                ["a", "x"][i / 50_000],
                (i / 1000) % 50,
                i % 100
            ),
            i,
        );
    }
    index.set("a/b/c/d", 1);
    index.set("a/b/q/d", 2);
    c.bench_function("retained/find_a_b_plus_d_among_100k", |b| {
        b.iter(|| black_box(index.matching(black_box("a/b/+/d"))))
    });
    c.bench_function("retained/find_a_1_plus_d_among_100k", |b| {
        b.iter(|| black_box(index.matching(black_box("a/1/+/d"))))
    });
}

criterion_group!(topics, trie_benches, retained_benches);
criterion_main!(topics);
