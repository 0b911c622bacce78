//! Shared subscription groups (§4.8.2) and how one member is chosen for each message.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::ClientId;

/// A caller's member choice: given the number of members and the publisher's client id, the
/// index of the first member to try.
pub type CustomChooser = Arc<dyn Fn(usize, Option<&str>) -> usize + Send + Sync>;

/// How a shared group picks the member that gets a message. Whatever the strategy, members the
/// caller's predicate rejects (offline clients) are skipped, trying the next member in order.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ShareStrategy {
    /// Each message goes to the next member in turn (the default).
    #[default]
    RoundRobin,
    /// A member chosen at random for each message.
    Random,
    /// A member chosen by a hash of the publisher's client id, so that one publisher's messages
    /// keep going to the same member while the group does not change (and keep their order).
    PublisherHash,
    /// The same member until it is rejected (goes offline) or leaves; then the next one.
    Sticky,
    /// A function of the caller's: given the number of members and the publisher's client id,
    /// the index of the first member to try.
    Custom(CustomChooser),
}

impl fmt::Debug for ShareStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "RoundRobin",
            Self::Random => "Random",
            Self::PublisherHash => "PublisherHash",
            Self::Sticky => "Sticky",
            Self::Custom(_) => "Custom(..)",
        })
    }
}

/// The members of one shared subscription (a ShareName and a filter), in the order they joined.
#[derive(Debug)]
pub(crate) struct SharedGroup<V> {
    /// The group's ShareName and filter.
    pub(crate) id: Arc<crate::trie::SharedGroupId>,
    pub(crate) members: Vec<(ClientId, V)>,
    /// Round-robin position, or the sticky member's index.
    cursor: AtomicUsize,
}

impl<V> SharedGroup<V> {
    pub(crate) fn new(id: Arc<crate::trie::SharedGroupId>) -> Self {
        Self {
            id,
            members: Vec::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Adds or replaces a member; a session that subscribes again stays one member (§4.8.2).
    pub(crate) fn insert(&mut self, client_id: &ClientId, value: V) -> Option<V> {
        match self.members.iter_mut().find(|(id, _)| id == client_id) {
            Some((_, existing)) => Some(std::mem::replace(existing, value)),
            None => {
                self.members.push((client_id.clone(), value));
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, client_id: &str) -> Option<V> {
        let index = self.members.iter().position(|(id, _)| &**id == client_id)?;
        Some(self.members.remove(index).1)
    }

    /// Chooses the member for one message: the strategy's first choice, or the next member in
    /// order that `eligible` accepts. Returns the index and whether it was eligible; when no
    /// member is eligible the strategy's first choice is returned, so that a message for a group
    /// of offline persistent sessions can still be queued in one of them.
    pub(crate) fn choose(
        &self,
        strategy: &ShareStrategy,
        publisher: Option<&str>,
        eligible: &dyn Fn(&str, &V) -> bool,
    ) -> Option<(usize, bool)> {
        let count = self.members.len();
        if count == 0 {
            return None;
        }
        let start = match strategy {
            ShareStrategy::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % count,
            ShareStrategy::Sticky => self.cursor.load(Ordering::Relaxed) % count,
            ShareStrategy::Random => (next_random() % count as u64) as usize,
            ShareStrategy::PublisherHash => {
                let mut hasher = FixedHasher::default();
                publisher.unwrap_or("").hash(&mut hasher);
                (hasher.finish() % count as u64) as usize
            }
            ShareStrategy::Custom(choose) => choose(count, publisher) % count,
        };
        for offset in 0..count {
            let index = (start + offset) % count;
            let accepted = self
                .members
                .get(index)
                .is_some_and(|(id, value)| eligible(id, value));
            if accepted {
                if matches!(strategy, ShareStrategy::Sticky) && offset > 0 {
                    self.cursor.store(index, Ordering::Relaxed);
                }
                return Some((index, true));
            }
        }
        Some((start, false))
    }
}

/// A process-wide pseudo-random sequence (SplitMix64), seeded randomly once.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut state = STATE.load(Ordering::Relaxed);
    if state == 0 {
        state = RandomState::new().hash_one(0x5EED_u64) | 1;
        STATE.store(state, Ordering::Relaxed);
    }
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a hash that is the same in every process, so a publisher maps to the same member
/// after a restart.
#[derive(Debug)]
pub(crate) struct FixedHasher(u64);

impl Default for FixedHasher {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Hasher for FixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01B3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(names: &[&str]) -> SharedGroup<u8> {
        let mut group = SharedGroup::new(Arc::new(crate::trie::SharedGroupId {
            share_name: Box::from("g"),
            filter: Box::from("t"),
        }));
        for name in names {
            group.insert(&ClientId::from(*name), 0);
        }
        group
    }

    #[test]
    fn round_robin_is_fair() {
        let group = group(&["a", "b", "c"]);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let (index, ok) = group
                .choose(&ShareStrategy::RoundRobin, None, &|_, _| true)
                .unwrap();
            assert!(ok);
            counts[index] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn offline_members_are_skipped() {
        let group = group(&["a", "b", "c"]);
        for strategy in [
            ShareStrategy::RoundRobin,
            ShareStrategy::Random,
            ShareStrategy::PublisherHash,
            ShareStrategy::Sticky,
        ] {
            for _ in 0..50 {
                let (index, ok) = group
                    .choose(&strategy, Some("pub"), &|id, _| id == "b")
                    .unwrap();
                assert!(ok);
                assert_eq!(index, 1, "{strategy:?}");
            }
        }
        let (_, ok) = group
            .choose(&ShareStrategy::RoundRobin, None, &|_, _| false)
            .unwrap();
        assert!(!ok);
    }

    #[test]
    fn sticky_stays_until_rejected() {
        let group = group(&["a", "b", "c"]);
        let first = group
            .choose(&ShareStrategy::Sticky, None, &|_, _| true)
            .unwrap()
            .0;
        for _ in 0..10 {
            assert_eq!(
                group
                    .choose(&ShareStrategy::Sticky, None, &|_, _| true)
                    .unwrap()
                    .0,
                first
            );
        }
        let moved = group
            .choose(&ShareStrategy::Sticky, None, &|id, _| id != "a")
            .unwrap()
            .0;
        assert_ne!(moved, 0);
        assert_eq!(
            group
                .choose(&ShareStrategy::Sticky, None, &|_, _| true)
                .unwrap()
                .0,
            moved
        );
    }

    #[test]
    fn publisher_hash_is_stable() {
        let group = group(&["a", "b", "c", "d"]);
        let first = group.choose(&ShareStrategy::PublisherHash, Some("sensor-1"), &|_, _| {
            true
        });
        for _ in 0..10 {
            assert_eq!(
                group.choose(&ShareStrategy::PublisherHash, Some("sensor-1"), &|_, _| {
                    true
                }),
                first
            );
        }
    }

    #[test]
    fn resubscribing_stays_one_member() {
        let mut group = group(&["a", "b"]);
        assert_eq!(group.insert(&ClientId::from("a"), 5), Some(0));
        assert_eq!(group.members.len(), 2);
        assert_eq!(group.remove("a"), Some(5));
        assert_eq!(group.remove("a"), None);
    }
}
