//! The subscription trie: who receives a message published to a topic.

use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mqtt_packets::QoS;
use parking_lot::{Mutex, RwLock};

use crate::shared::{FixedHasher, ShareStrategy, SharedGroup};
use crate::{ClientId, TopicError, TopicRules, parse_filter};

/// What the trie needs to know about a subscription value to merge overlapping subscriptions of
/// one client: its granted QoS and its Subscription Identifier.
pub trait SubscriptionInfo {
    /// The granted maximum QoS.
    fn qos(&self) -> QoS;

    /// The Subscription Identifier, if the SUBSCRIBE carried one.
    fn identifier(&self) -> Option<NonZeroU32> {
        None
    }
}

impl SubscriptionInfo for QoS {
    fn qos(&self) -> QoS {
        *self
    }
}

/// Maps keyed by topic levels and client ids: foldhash, seeded randomly per process, is several
/// times faster than SipHash on short keys while still resisting crafted collisions.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;

/// The number of shards for filters whose first level is literal.
const SHARDS: usize = 32;

/// A concurrent subscription trie keyed by (client id, filter), holding a value `V` per
/// subscription.
///
/// # Concurrency
///
/// Filters are sharded by their first level: filters whose first level is literal live in one of
/// 32 shards chosen by a hash of that level, filters starting with `+` or `#` in one wildcard
/// shard. Each shard is a `parking_lot::RwLock`. Matching a topic takes two read locks, one after
/// the other (the topic's shard, then the wildcard shard) and holds each only while walking, so
/// publishers on different first levels never wait for each other and a SUBSCRIBE blocks only
/// matches in its own shard, for the few hundred nanoseconds of an insert. Round-robin and sticky
/// state of shared groups is atomic, so matching needs no write lock. A whole-trie `RwLock` was
/// simpler but let every SUBSCRIBE stall every publisher; copy-on-write snapshots make
/// subscribing O(size of trie). A per-client index (a mutex taken only by subscribe and
/// unsubscribe, before any shard lock) serves [`SubscriptionTrie::remove_client`].
///
/// Nodes are removed as soon as they hold no subscription and no child, so the trie returns to
/// its empty size after churn.
#[derive(Debug)]
pub struct SubscriptionTrie<V> {
    shards: Box<[RwLock<Node<V>>]>,
    wildcard: RwLock<Node<V>>,
    clients: Mutex<HashMap<ClientId, HashSet<Box<str>>>>,
    len: AtomicUsize,
    /// Bumped by every change of a subscription, inside the shard's write lock.
    generation: AtomicU64,
    rules: TopicRules,
    strategy: ShareStrategy,
}

#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    plus: Option<Box<Node<V>>>,
    /// Subscriptions whose filter ends at this node.
    here: Subscribers<V>,
    /// Subscriptions whose filter is this node's path followed by `/#` (or `#` at the root).
    hash: Subscribers<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: HashMap::default(),
            plus: None,
            here: Subscribers::default(),
            hash: Subscribers::default(),
        }
    }
}

#[derive(Debug)]
struct Subscribers<V> {
    clients: HashMap<ClientId, V>,
    groups: HashMap<Arc<str>, SharedGroup<V>>,
}

impl<V> Default for Subscribers<V> {
    fn default() -> Self {
        Self {
            clients: HashMap::default(),
            groups: HashMap::default(),
        }
    }
}

impl<V> Subscribers<V> {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty()
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }

    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
            + self.plus.as_ref().map_or(0, |plus| plus.count())
    }
}

/// The subscriptions that match one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches<V> {
    /// Non-shared subscriptions, grouped by client (each client's entries together; sorted by
    /// client id when more than one trie node matched).
    subscribers: Vec<(ClientId, V)>,
    /// One chosen member per matching shared subscription.
    shared: Vec<SharedMatch<V>>,
}

impl<V> Default for Matches<V> {
    fn default() -> Self {
        Self {
            subscribers: Vec::new(),
            shared: Vec::new(),
        }
    }
}

/// Which shared subscription a [`SharedMatch`] belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedGroupId {
    /// The ShareName.
    pub share_name: Box<str>,
    /// The filter (without `$share/{ShareName}/`).
    pub filter: Box<str>,
}

/// The member of a shared subscription chosen for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMatch<V> {
    /// The group.
    pub group: Arc<SharedGroupId>,
    /// The chosen member.
    pub client_id: ClientId,
    /// The member's subscription (its own QoS and identifier, [MQTT-4.8.2-3]).
    pub subscription: V,
    /// False when no member passed the eligibility predicate, and this is the strategy's choice
    /// among members that did not.
    pub eligible: bool,
}

/// All non-shared subscriptions of one client that match a topic.
#[derive(Debug, Clone, Copy)]
pub struct ClientMatch<'a, V> {
    client_id: &'a ClientId,
    entries: &'a [(ClientId, V)],
}

impl<'a, V> ClientMatch<'a, V> {
    /// The client.
    pub fn client_id(&self) -> &'a ClientId {
        self.client_id
    }

    /// Its matching subscriptions.
    pub fn subscriptions(&self) -> impl Iterator<Item = &'a V> + 'a {
        self.entries.iter().map(|(_, value)| value)
    }
}

impl<V: SubscriptionInfo> ClientMatch<'_, V> {
    /// The highest granted QoS among the matching subscriptions [MQTT-3.3.4-2].
    pub fn qos(&self) -> QoS {
        self.subscriptions()
            .map(SubscriptionInfo::qos)
            .max()
            .unwrap_or_default()
    }

    /// The Subscription Identifiers of all matching subscriptions [MQTT-3.3.4-4].
    pub fn identifiers(&self) -> impl Iterator<Item = NonZeroU32> + '_ {
        self.subscriptions()
            .filter_map(SubscriptionInfo::identifier)
    }
}

impl<V> Matches<V> {
    /// The matching non-shared subscriptions, one entry per client.
    pub fn clients(&self) -> impl Iterator<Item = ClientMatch<'_, V>> {
        self.subscribers
            .chunk_by(|a, b| a.0 == b.0)
            .filter_map(|entries| {
                entries
                    .first()
                    .map(|(client_id, _)| ClientMatch { client_id, entries })
            })
    }

    /// The number of distinct clients with a matching non-shared subscription.
    pub fn client_count(&self) -> usize {
        self.clients().count()
    }

    /// The chosen member of each matching shared subscription.
    pub fn shared(&self) -> &[SharedMatch<V>] {
        &self.shared
    }

    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.shared.is_empty()
    }
}

struct Collector<'p, V> {
    matches: Matches<V>,
    /// How many nodes contributed non-shared subscribers: with one, each client is there once
    /// (a node keys them by client) and no sort is needed to group them.
    sources: usize,
    strategy: &'p ShareStrategy,
    publisher: Option<&'p str>,
    eligible: &'p dyn Fn(&str, &V) -> bool,
}

impl<V: Clone> Collector<'_, V> {
    fn add(&mut self, subscribers: &Subscribers<V>) {
        self.sources += usize::from(!subscribers.clients.is_empty());
        for (client_id, value) in &subscribers.clients {
            self.matches
                .subscribers
                .push((client_id.clone(), value.clone()));
        }
        for group in subscribers.groups.values() {
            if let Some((index, eligible)) =
                group.choose(self.strategy, self.publisher, self.eligible)
                && let Some((client_id, value)) = group.members.get(index)
            {
                self.matches.shared.push(SharedMatch {
                    group: group.id.clone(),
                    client_id: client_id.clone(),
                    subscription: value.clone(),
                    eligible,
                });
            }
        }
    }
}

fn collect<V: Clone>(
    node: &Node<V>,
    root: bool,
    rest: Option<&str>,
    dollar_topic: bool,
    out: &mut Collector<'_, V>,
) {
    // A wildcard first level never matches a `$` topic [MQTT-4.7.2-1].
    let wildcards = !(root && dollar_topic);
    if wildcards && !node.hash.is_empty() {
        out.add(&node.hash);
    }
    match rest {
        None => {
            if !node.here.is_empty() {
                out.add(&node.here);
            }
        }
        Some(rest) => {
            let (level, next) = match rest.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (rest, None),
            };
            if let Some(child) = node.children.get(level) {
                collect(child, false, next, dollar_topic, out);
            }
            if wildcards && let Some(plus) = &node.plus {
                collect(plus, false, next, dollar_topic, out);
            }
        }
    }
}

/// Where a subscription sits at the end of its filter's path.
#[derive(Clone, Copy)]
enum Slot {
    Here,
    Hash,
}

/// Splits a (non-shared part of a) filter into the levels to walk and the slot at the end:
/// `a/b/#` walks `a`, `b` and lands in the `#` slot; `#` alone is the root's `#` slot.
fn path_of(filter: &str) -> (impl Iterator<Item = &str>, Slot) {
    let (walk, slot) = if filter == "#" {
        (None, Slot::Hash)
    } else if let Some(parent) = filter.strip_suffix("/#") {
        (Some(parent), Slot::Hash)
    } else {
        (Some(filter), Slot::Here)
    };
    (walk.into_iter().flat_map(|walk| walk.split('/')), slot)
}

fn subscribers_at<V>(node: &mut Node<V>, slot: Slot) -> &mut Subscribers<V> {
    match slot {
        Slot::Here => &mut node.here,
        Slot::Hash => &mut node.hash,
    }
}

fn remove_at<'a, V>(
    node: &mut Node<V>,
    mut levels: impl Iterator<Item = &'a str>,
    slot: Slot,
    client_id: &str,
    share_name: Option<&str>,
) -> Option<V> {
    match levels.next() {
        None => {
            let subscribers = subscribers_at(node, slot);
            match share_name {
                None => subscribers.clients.remove(client_id),
                Some(name) => {
                    let group = subscribers.groups.get_mut(name)?;
                    let removed = group.remove(client_id);
                    if group.members.is_empty() {
                        subscribers.groups.remove(name);
                    }
                    removed
                }
            }
        }
        Some("+") => {
            let plus = node.plus.as_mut()?;
            let removed = remove_at(plus, levels, slot, client_id, share_name);
            if plus.is_empty() {
                node.plus = None;
            }
            removed
        }
        Some(level) => {
            let child = node.children.get_mut(level)?;
            let removed = remove_at(child, levels, slot, client_id, share_name);
            if child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
    }
}

impl<V: Clone> Default for SubscriptionTrie<V> {
    fn default() -> Self {
        Self::new(TopicRules::default(), ShareStrategy::default())
    }
}

impl<V: Clone> SubscriptionTrie<V> {
    /// An empty trie that checks filters with `rules` and picks shared-group members with
    /// `strategy`.
    pub fn new(rules: TopicRules, strategy: ShareStrategy) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Node::default())).collect(),
            wildcard: RwLock::new(Node::default()),
            clients: Mutex::new(HashMap::default()),
            len: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            rules,
            strategy,
        }
    }

    fn shard_for_filter(&self, filter: &str) -> &RwLock<Node<V>> {
        let first = filter.split('/').next().unwrap_or_default();
        if first == "+" || first == "#" {
            &self.wildcard
        } else {
            self.shard_for_level(first)
        }
    }

    fn shard_for_level(&self, level: &str) -> &RwLock<Node<V>> {
        let mut hasher = FixedHasher::default();
        level.hash(&mut hasher);
        let index = (hasher.finish() % SHARDS as u64) as usize;
        self.shards.get(index).unwrap_or(&self.wildcard)
    }

    /// Adds the subscription of `client_id` to `filter` (which may be a `$share/` filter), or
    /// replaces it and returns the previous value [MQTT-3.8.4-3].
    pub fn insert(
        &self,
        client_id: &ClientId,
        filter: &str,
        value: V,
    ) -> Result<Option<V>, TopicError> {
        let parsed = parse_filter(filter, &self.rules)?;
        let mut clients = self.clients.lock();
        let (levels, slot) = path_of(parsed.filter);
        let mut shard = self.shard_for_filter(parsed.filter).write();
        let mut node = &mut *shard;
        for level in levels {
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(Box::from(level)).or_default()
            };
        }
        let subscribers = subscribers_at(node, slot);
        let previous = match parsed.share_name {
            None => subscribers.clients.insert(client_id.clone(), value),
            Some(name) => match subscribers.groups.get_mut(name) {
                Some(group) => group.insert(client_id, value),
                None => {
                    let mut group = SharedGroup::new(Arc::new(SharedGroupId {
                        share_name: Box::from(name),
                        filter: Box::from(parsed.filter),
                    }));
                    group.insert(client_id, value);
                    subscribers.groups.insert(Arc::from(name), group);
                    None
                }
            },
        };
        // A replaced value (new options) is a change too.
        self.generation.fetch_add(1, Ordering::Release);
        drop(shard);
        if previous.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
            clients
                .entry(client_id.clone())
                .or_default()
                .insert(Box::from(filter));
        }
        Ok(previous)
    }

    /// Removes the subscription of `client_id` to exactly `filter` (no wildcard matching,
    /// [MQTT-3.10.4-1]) and returns it.
    pub fn remove(&self, client_id: &str, filter: &str) -> Option<V> {
        let mut clients = self.clients.lock();
        let removed = self.remove_from_shard(client_id, filter);
        if removed.is_some()
            && let Some(filters) = clients.get_mut(client_id)
        {
            filters.remove(filter);
            if filters.is_empty() {
                clients.remove(client_id);
            }
        }
        removed
    }

    fn remove_from_shard(&self, client_id: &str, filter: &str) -> Option<V> {
        let parsed = parse_filter(filter, &self.rules).ok()?;
        let (levels, slot) = path_of(parsed.filter);
        let mut shard = self.shard_for_filter(parsed.filter).write();
        let removed = remove_at(&mut shard, levels, slot, client_id, parsed.share_name);
        if removed.is_some() {
            self.generation.fetch_add(1, Ordering::Release);
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every subscription of `client_id` (its session ended) and returns how many.
    pub fn remove_client(&self, client_id: &str) -> usize {
        let mut clients = self.clients.lock();
        let Some(filters) = clients.remove(client_id) else {
            return 0;
        };
        filters
            .iter()
            .filter(|filter| self.remove_from_shard(client_id, filter).is_some())
            .count()
    }

    /// The filters `client_id` is subscribed to (shared ones with their `$share/` prefix).
    pub fn filters_of(&self, client_id: &str) -> Vec<String> {
        let clients = self.clients.lock();
        clients
            .get(client_id)
            .map(|filters| filters.iter().map(|filter| filter.to_string()).collect())
            .unwrap_or_default()
    }

    /// The subscriptions that match `topic` (a valid Topic Name).
    ///
    /// Non-shared subscriptions are grouped per client. For each matching shared subscription,
    /// one member is chosen with the trie's strategy; `publisher` feeds
    /// [`ShareStrategy::PublisherHash`], and members `eligible` rejects are skipped.
    pub fn matches(
        &self,
        topic: &str,
        publisher: Option<&str>,
        eligible: &dyn Fn(&str, &V) -> bool,
    ) -> Matches<V> {
        let mut out = Collector {
            matches: Matches::default(),
            sources: 0,
            strategy: &self.strategy,
            publisher,
            eligible,
        };
        let dollar_topic = topic.starts_with('$');
        let first = topic.split('/').next().unwrap_or_default();
        collect(
            &self.shard_for_level(first).read(),
            true,
            Some(topic),
            dollar_topic,
            &mut out,
        );
        collect(
            &self.wildcard.read(),
            true,
            Some(topic),
            dollar_topic,
            &mut out,
        );
        let mut matches = out.matches;
        if out.sources > 1 && matches.subscribers.len() > 1 {
            matches.subscribers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        matches
    }

    /// A number that changes whenever a subscription is added, replaced or removed.
    ///
    /// A caller that reads it *before* [`Self::matches`] and finds it unchanged later may reuse
    /// those matches for the same topic: they are what a new call would return, except for the
    /// shared-subscription members, which are chosen anew on each call (reuse only matches
    /// without [`Matches::shared`] entries).
    ///
    /// ```
    /// use mqtt_topics::{ShareStrategy, SubscriptionTrie, TopicRules};
    ///
    /// let trie: SubscriptionTrie<u8> = SubscriptionTrie::new(TopicRules::default(), ShareStrategy::default());
    /// let before = trie.generation();
    /// trie.insert(&"c".into(), "a/+", 1).unwrap();
    /// assert_ne!(trie.generation(), before);
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The number of subscriptions (a shared group counts once per member).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of trie nodes, including the shard roots: `33` when empty. For tests and
    /// metrics.
    pub fn node_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().count())
            .sum::<usize>()
            + self.wildcard.read().count()
    }

    /// The number of clients with at least one subscription.
    pub fn client_count(&self) -> usize {
        self.clients.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Sub {
        qos: QoS,
        id: Option<NonZeroU32>,
    }

    impl SubscriptionInfo for Sub {
        fn qos(&self) -> QoS {
            self.qos
        }
        fn identifier(&self) -> Option<NonZeroU32> {
            self.id
        }
    }

    fn sub(qos: u8, id: u32) -> Sub {
        Sub {
            qos: QoS::from_u8(qos).unwrap(),
            id: NonZeroU32::new(id),
        }
    }

    fn client(name: &str) -> ClientId {
        ClientId::from(name)
    }

    fn clients_matching(trie: &SubscriptionTrie<Sub>, topic: &str) -> Vec<String> {
        trie.matches(topic, None, &|_, _| true)
            .clients()
            .map(|c| c.client_id().to_string())
            .collect()
    }

    #[test]
    fn generation_changes_with_every_subscription_change_only() {
        let trie = SubscriptionTrie::default();
        let mut last = trie.generation();
        let mut changed = |trie: &SubscriptionTrie<Sub>| {
            let now = trie.generation();
            let changed = now != last;
            last = now;
            changed
        };
        trie.insert(&client("a"), "x/+", sub(0, 0)).unwrap();
        assert!(changed(&trie), "insert");
        trie.insert(&client("a"), "x/+", sub(1, 0)).unwrap();
        assert!(changed(&trie), "options replaced");
        trie.insert(&client("b"), "$share/g/x/y", sub(0, 0))
            .unwrap();
        assert!(changed(&trie), "shared insert");
        let _ = trie.matches("x/y", None, &|_, _| true);
        assert!(!changed(&trie), "matching changes nothing");
        assert!(trie.remove("a", "x/#").is_none());
        assert!(!changed(&trie), "removing what is not there");
        assert!(trie.remove("a", "x/+").is_some());
        assert!(changed(&trie), "remove");
        assert_eq!(trie.remove_client("b"), 1);
        assert!(changed(&trie), "remove_client");
    }

    #[test]
    fn overlapping_subscriptions_merge_per_client_mqtt_3_3_4_2() {
        let trie = SubscriptionTrie::default();
        trie.insert(&client("a"), "sport/#", sub(0, 1)).unwrap();
        trie.insert(&client("a"), "sport/tennis/+", sub(2, 2))
            .unwrap();
        trie.insert(&client("a"), "sport/tennis/player1", sub(1, 0))
            .unwrap();
        trie.insert(&client("b"), "sport/tennis/player1", sub(1, 7))
            .unwrap();
        let matches = trie.matches("sport/tennis/player1", None, &|_, _| true);
        let clients: Vec<_> = matches.clients().collect();
        assert_eq!(clients.len(), 2);
        let a = clients.iter().find(|c| &**c.client_id() == "a").unwrap();
        assert_eq!(a.qos(), QoS::ExactlyOnce);
        let mut ids: Vec<u32> = a.identifiers().map(NonZeroU32::get).collect();
        ids.sort();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn dollar_topics_and_wildcards_mqtt_4_7_2_1() {
        let trie = SubscriptionTrie::default();
        trie.insert(&client("all"), "#", sub(0, 0)).unwrap();
        trie.insert(&client("plus"), "+/broker/uptime", sub(0, 0))
            .unwrap();
        trie.insert(&client("sys"), "$SYS/#", sub(0, 0)).unwrap();
        assert_eq!(clients_matching(&trie, "$SYS/broker/uptime"), ["sys"]);
        assert_eq!(clients_matching(&trie, "x/broker/uptime"), ["all", "plus"]);
    }

    #[test]
    fn hash_matches_parent_and_plus_matches_empty_level() {
        let trie = SubscriptionTrie::default();
        trie.insert(&client("h"), "a/#", sub(0, 0)).unwrap();
        trie.insert(&client("p"), "+/+", sub(0, 0)).unwrap();
        assert_eq!(clients_matching(&trie, "a"), ["h"]);
        assert_eq!(clients_matching(&trie, "/finance"), ["p"]);
        assert_eq!(clients_matching(&trie, "a/"), ["h", "p"]);
    }

    #[test]
    fn insert_replaces_and_remove_is_exact() {
        let trie = SubscriptionTrie::default();
        assert_eq!(trie.insert(&client("a"), "x/+", sub(0, 1)).unwrap(), None);
        assert_eq!(
            trie.insert(&client("a"), "x/+", sub(1, 2)).unwrap(),
            Some(sub(0, 1))
        );
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.remove("a", "x/y"), None);
        assert_eq!(trie.remove("a", "x/+"), Some(sub(1, 2)));
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), SHARDS + 1);
    }

    #[test]
    fn shared_groups_deliver_to_one_member_each() {
        let trie = SubscriptionTrie::default();
        for member in ["m1", "m2", "m3"] {
            trie.insert(&client(member), "$share/g1/s/+", sub(1, 0))
                .unwrap();
        }
        trie.insert(&client("m1"), "$share/g2/s/#", sub(1, 0))
            .unwrap();
        trie.insert(&client("n"), "s/t", sub(0, 0)).unwrap();
        let mut counts = HashMap::default();
        for _ in 0..30 {
            let matches = trie.matches("s/t", None, &|_, _| true);
            assert_eq!(matches.shared().len(), 2);
            assert_eq!(matches.client_count(), 1);
            for shared in matches.shared() {
                if &*shared.group.share_name == "g1" {
                    assert_eq!(&*shared.group.filter, "s/+");
                    *counts.entry(shared.client_id.to_string()).or_insert(0) += 1;
                }
            }
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
        // An offline member is skipped.
        for _ in 0..10 {
            let matches = trie.matches("s/t", None, &|id, _| id != "m2");
            assert!(
                matches
                    .shared()
                    .iter()
                    .all(|s| &*s.client_id != "m2" && s.eligible)
            );
        }
        assert_eq!(trie.remove_client("m1"), 2);
        assert_eq!(trie.len(), 3);
    }

    #[test]
    fn remove_client_removes_everything() {
        let trie = SubscriptionTrie::default();
        trie.insert(&client("a"), "a/b", sub(0, 0)).unwrap();
        trie.insert(&client("a"), "#", sub(0, 0)).unwrap();
        trie.insert(&client("a"), "$share/g/a/+", sub(0, 0))
            .unwrap();
        trie.insert(&client("b"), "a/b", sub(0, 0)).unwrap();
        let mut filters = trie.filters_of("a");
        filters.sort();
        assert_eq!(filters, ["#", "$share/g/a/+", "a/b"]);
        assert_eq!(trie.remove_client("a"), 3);
        assert_eq!(clients_matching(&trie, "a/b"), ["b"]);
        assert_eq!(trie.client_count(), 1);
    }

    #[test]
    fn invalid_filters_are_refused() {
        let trie: SubscriptionTrie<Sub> = SubscriptionTrie::default();
        assert!(trie.insert(&client("a"), "a/#/b", sub(0, 0)).is_err());
        assert!(trie.insert(&client("a"), "$share/g", sub(0, 0)).is_err());
        assert!(trie.is_empty());
    }
}
