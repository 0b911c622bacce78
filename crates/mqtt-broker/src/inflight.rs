//! The in-flight table of one session: QoS 1/2 messages sent and awaiting acknowledgement, by
//! packet identifier.
//!
//! Identifiers are handed out in sequence, and clients acknowledge mostly in the order they
//! receive, so the entries live in a ring indexed by `id - base`: an insert is a push at the
//! back, an acknowledgement a take near the front, and neither hashes nor jumps around memory
//! (acknowledgements come from another thread than the one that sent, so every entry they touch
//! is a cache miss; in sequence, the prefetcher hides most of them).
//!
//! Entries that do not fit the run go to a small map beside it: messages restored from storage
//! with their original identifiers, and a message left unacknowledged while thousands after it
//! were (the run never grows beyond twice its live entries, plus [`SLACK`] holes). Each
//! identifier is in one place at most.

use std::collections::VecDeque;

use mqtt_packets::PacketId;

use crate::message::Delivery;

/// Where a QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // "Awaiting" is what every state is.
pub(crate) enum InflightState {
    /// PUBLISH (QoS 1) sent; waiting for PUBACK.
    AwaitingPubAck,
    /// PUBLISH (QoS 2) sent; waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREL sent; waiting for PUBCOMP.
    AwaitingPubComp,
}

/// A QoS 1/2 message sent to the client and not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    /// Order of first sending, for resends in the original order [MQTT-4.6.0-1].
    pub(crate) seq: u64,
    /// The message, kept for a resend after a reconnect.
    pub(crate) delivery: Delivery,
    /// Which acknowledgement it waits for.
    pub(crate) state: InflightState,
    /// Whether the PUBLISH was written at least once (a resend then carries DUP).
    pub(crate) sent: bool,
}

/// Maps keyed by packet id (see [`crate::outbound`]).
type HashMap<K, V> = foldhash::HashMap<K, V>;

/// How many identifiers: 1 to 65,535 (0 is not one [MQTT-2.2.1-3]).
const IDS: usize = u16::MAX as usize;

/// Holes the run may carry beyond as many as it has live entries.
const SLACK: usize = 64;

/// The identifier after `id`, wrapping from 65,535 to 1.
fn next_id(id: u16) -> u16 {
    id.checked_add(1).unwrap_or(1)
}

/// The in-flight messages of one session by packet identifier (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct InflightTable {
    /// `run[i]` is the entry of identifier `base + i` (wrapping), if in flight there.
    run: VecDeque<Option<Inflight>>,
    /// The identifier of `run[0]`; meaningless while `run` is empty.
    base: u16,
    /// Live entries in `run`.
    in_run: usize,
    /// Entries outside the run.
    scattered: HashMap<u16, Inflight>,
    /// Bytes of the messages in flight ([`crate::message::Message::size`]), saturating at
    /// `u32::MAX` (4 GiB): a `u32` keeps the table, in every session, as small as it was.
    bytes: u32,
}

impl InflightTable {
    /// Entries in flight.
    pub(crate) fn len(&self) -> usize {
        self.in_run + self.scattered.len()
    }

    /// Bytes of the messages in flight, as counted against the in-flight byte limit.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes as usize
    }

    fn add_bytes(&mut self, size: usize) {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_add(size);
    }

    fn sub_bytes(&mut self, size: usize) {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_sub(size);
    }

    /// Where `id` lies in the run, if within it.
    fn offset(&self, id: u16) -> Option<usize> {
        if id == 0 || self.run.is_empty() {
            return None;
        }
        // Positions 0..IDS for identifiers 1..=IDS, then the distance from the base.
        let distance = (usize::from(id) + IDS - usize::from(self.base)) % IDS;
        (distance < self.run.len()).then_some(distance)
    }

    /// Whether `id` is in flight.
    pub(crate) fn contains(&self, id: u16) -> bool {
        self.get(id).is_some()
    }

    /// The entry of `id`, if in flight.
    pub(crate) fn get(&self, id: u16) -> Option<&Inflight> {
        if let Some(entry) = self
            .offset(id)
            .and_then(|at| self.run.get(at))
            .and_then(Option::as_ref)
        {
            return Some(entry);
        }
        if self.scattered.is_empty() {
            return None;
        }
        self.scattered.get(&id)
    }

    /// The entry of `id`, if in flight, to change its state.
    pub(crate) fn get_mut(&mut self, id: u16) -> Option<&mut Inflight> {
        if let Some(at) = self.offset(id)
            && self.run.get(at).is_some_and(Option::is_some)
        {
            return self.run.get_mut(at).and_then(Option::as_mut);
        }
        self.scattered.get_mut(&id)
    }

    /// Adds an entry for `id` (callers hand out identifiers not in flight, [`Self::free_after`],
    /// or restore them so); an entry already there is replaced where it is.
    pub(crate) fn insert(&mut self, id: u16, entry: Inflight) {
        if id == 0 {
            return;
        }
        let size = entry.delivery.message.size();
        if let Some(existing) = self.get_mut(id) {
            let replaced = existing.delivery.message.size();
            *existing = entry;
            self.sub_bytes(replaced);
            self.add_bytes(size);
            return;
        }
        self.add_bytes(size);
        if self.run.is_empty() {
            self.base = id;
            self.run.push_back(Some(entry));
            self.in_run = 1;
            return;
        }
        if let Some(at) = self.offset(id) {
            // A hole inside the run (the identifier is in flight nowhere).
            if let Some(slot) = self.run.get_mut(at) {
                *slot = Some(entry);
                self.in_run += 1;
            }
            return;
        }
        // Past the end of the run (`offset` is `None`, so the distance is at least its length).
        let distance = (usize::from(id) + IDS - usize::from(self.base)) % IDS;
        let gap = distance.saturating_sub(self.run.len());
        if gap <= SLACK {
            self.run.extend(std::iter::repeat_with(|| None).take(gap));
            self.run.push_back(Some(entry));
            self.in_run += 1;
            self.trim();
        } else if self.in_run <= SLACK {
            // A short run far behind (say, a restored message not yet acknowledged): it moves to
            // the map, and the run starts again here, where the next identifiers follow.
            let mut at = self.base;
            for slot in self.run.drain(..) {
                if let Some(old) = slot {
                    self.scattered.insert(at, old);
                }
                at = next_id(at);
            }
            self.base = id;
            self.run.push_back(Some(entry));
            self.in_run = 1;
        } else {
            self.scattered.insert(id, entry);
        }
    }

    /// Takes the entry of `id` out.
    pub(crate) fn remove(&mut self, id: u16) -> Option<Inflight> {
        let entry = self.take(id)?;
        self.sub_bytes(entry.delivery.message.size());
        Some(entry)
    }

    fn take(&mut self, id: u16) -> Option<Inflight> {
        if let Some(at) = self.offset(id)
            && let Some(entry) = self.run.get_mut(at).and_then(Option::take)
        {
            self.in_run -= 1;
            self.trim();
            return Some(entry);
        }
        if self.scattered.is_empty() {
            return None;
        }
        self.scattered.remove(&id)
    }

    /// Replaces every message in flight by a copy that owns its bytes (see
    /// [`crate::message::Message::compact`]), for a session that goes offline.
    pub(crate) fn compact(&mut self, copies: &mut crate::message::Compacted) {
        let slots = self.run.iter_mut().flatten();
        for entry in slots.chain(self.scattered.values_mut()) {
            entry.delivery.compact_with(copies);
        }
    }

    /// Keeps the run tight: no holes at either end, and at most as many holes inside as live
    /// entries (plus [`SLACK`]); entries at the front of a run too sparse move to the map.
    fn trim(&mut self) {
        loop {
            match self.run.front() {
                Some(None) => {
                    self.run.pop_front();
                    self.base = next_id(self.base);
                }
                Some(Some(_)) if self.run.len() > 2 * self.in_run + SLACK => {
                    let id = self.base;
                    if let Some(Some(entry)) = self.run.pop_front() {
                        self.in_run -= 1;
                        self.scattered.insert(id, entry);
                    }
                    self.base = next_id(self.base);
                }
                _ => break,
            }
        }
        while let Some(None) = self.run.back() {
            self.run.pop_back();
        }
    }

    /// Every entry with its identifier, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u16, &Inflight)> {
        let mut id = self.base;
        let run = self.run.iter().filter_map(move |slot| {
            let this = id;
            id = next_id(id);
            slot.as_ref().map(|entry| (this, entry))
        });
        run.chain(self.scattered.iter().map(|(&id, entry)| (id, entry)))
    }

    /// Drops every entry; returns their identifiers.
    pub(crate) fn clear(&mut self) -> Vec<u16> {
        let ids = self.iter().map(|(id, _)| id).collect();
        self.run.clear();
        self.in_run = 0;
        self.scattered.clear();
        self.bytes = 0;
        ids
    }

    /// Gives back the memory of the ring and the map when they are empty.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.run.is_empty() && self.run.capacity() > 0 {
            self.run = VecDeque::new();
        }
        if self.scattered.is_empty() && self.scattered.capacity() > 0 {
            self.scattered = HashMap::default();
        }
    }

    /// The identifier after `last` that is not in flight, if any is free [MQTT-2.2.1-4].
    pub(crate) fn free_after(&self, last: u16) -> Option<PacketId> {
        if self.len() >= IDS {
            return None;
        }
        let mut id = last;
        for _ in 0..IDS {
            id = next_id(id);
            if !self.contains(id) {
                return PacketId::new(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(seq: u64) -> Inflight {
        Inflight {
            seq,
            delivery: Delivery::for_test(seq),
            state: InflightState::AwaitingPubAck,
            sent: true,
        }
    }

    fn ids(table: &InflightTable) -> Vec<u16> {
        let mut ids: Vec<u16> = table.iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn in_order_flow_stays_in_the_run() {
        let mut table = InflightTable::default();
        let mut last = 0;
        for seq in 0..1000 {
            let id = table.free_after(last).unwrap().get();
            last = id;
            table.insert(id, entry(seq));
            if seq >= 10 {
                // Acknowledged in order, ten behind.
                let acked = u16::try_from(seq - 9).unwrap();
                assert_eq!(table.remove(acked).map(|e| e.seq), Some(seq - 10));
            }
        }
        assert_eq!(table.len(), 10);
        assert!(table.scattered.is_empty());
        assert_eq!(table.run.len(), 10);
    }

    #[test]
    fn identifiers_wrap_from_65535_to_1_mqtt_2_2_1_3() {
        let mut table = InflightTable::default();
        table.insert(65_534, entry(0));
        table.insert(65_535, entry(1));
        let next = table.free_after(65_535).unwrap().get();
        assert_eq!(next, 1);
        table.insert(next, entry(2));
        assert!(table.scattered.is_empty(), "one run across the wrap");
        assert_eq!(table.get(1).map(|e| e.seq), Some(2));
        assert_eq!(table.remove(65_534).map(|e| e.seq), Some(0));
        assert_eq!(table.base, 65_535);
        assert_eq!(ids(&table), vec![1, 65_535]);
    }

    #[test]
    fn a_stuck_message_leaves_the_run_and_stays_found() {
        let mut table = InflightTable::default();
        let mut last = 0;
        let mut stuck = None;
        for seq in 0..5000 {
            let id = table.free_after(last).unwrap().get();
            last = id;
            table.insert(id, entry(seq));
            if seq == 0 {
                stuck = Some(id);
            } else {
                table.remove(id);
            }
        }
        let stuck = stuck.unwrap();
        assert_eq!(table.len(), 1);
        assert!(table.run.len() <= 2 * table.in_run + SLACK + 1);
        assert_eq!(table.get(stuck).map(|e| e.seq), Some(0));
        assert_eq!(
            table.free_after(stuck - 1).map(PacketId::get),
            Some(stuck + 1)
        );
        assert_eq!(table.remove(stuck).map(|e| e.seq), Some(0));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn restored_identifiers_anywhere_are_kept_mqtt_4_4_0_1() {
        let mut table = InflightTable::default();
        for (seq, id) in [(0, 40_000), (1, 7), (2, 65_535), (3, 8), (4, 1)] {
            table.insert(id, entry(seq));
        }
        assert_eq!(ids(&table), vec![1, 7, 8, 40_000, 65_535]);
        // New identifiers skip every one in flight [MQTT-2.2.1-4].
        assert_eq!(table.free_after(6).map(PacketId::get), Some(9));
        assert_eq!(table.free_after(65_534).map(PacketId::get), Some(2));
        assert_eq!(table.clear().len(), 5);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_short_run_far_behind_moves_aside_for_new_identifiers() {
        let mut table = InflightTable::default();
        // Restored: 5 (never acknowledged), then 30,000 and on.
        table.insert(5, entry(0));
        for (seq, id) in (30_000..30_100).enumerate() {
            table.insert(id, entry(seq as u64 + 1));
        }
        assert_eq!(table.base, 30_000);
        assert_eq!(table.in_run, 100);
        assert_eq!(table.scattered.len(), 1);
        assert_eq!(table.get(5).map(|e| e.seq), Some(0));
        assert_eq!(table.free_after(30_099).map(PacketId::get), Some(30_100));
    }

    #[test]
    fn inserting_an_identifier_in_flight_replaces_its_entry() {
        let mut table = InflightTable::default();
        table.insert(7, entry(0));
        table.insert(7, entry(1));
        table.insert(40_000, entry(2));
        table.insert(40_000, entry(3));
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(7).map(|e| e.seq), Some(1));
        assert_eq!(table.get(40_000).map(|e| e.seq), Some(3));
    }

    #[test]
    fn idle_table_gives_back_its_memory() {
        let mut table = InflightTable::default();
        for id in 1..=100 {
            table.insert(id, entry(u64::from(id)));
        }
        for id in 1..=100 {
            table.remove(id);
        }
        table.release_idle_memory();
        assert_eq!(table.run.capacity(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at the next free identifier after the last one handed out.
        Next,
        /// Insert at this identifier: free (as a restore does) or in flight (replaced).
        At(u16),
        /// Remove the entry `n` positions into the sorted list of those in flight.
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Next),
            1 => (1..=u16::MAX).prop_map(Op::At),
            1 => (65_500..=u16::MAX).prop_map(Op::At),
            1 => (1..=64u16).prop_map(Op::At),
            5 => (0..64usize).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The table answers as a map from identifier to entry would, whatever the order of
        /// inserts and removes.
        #[test]
        fn behaves_as_a_map(
            ops in proptest::collection::vec(op(), 1..400),
            // Half the runs start near the wrap from 65,535 to 1.
            start in prop_oneof![65_300..=u16::MAX, 0..=u16::MAX],
        ) {
            let mut table = InflightTable::default();
            let mut model = std::collections::BTreeMap::new();
            let mut last = start;
            for (seq, op) in ops.into_iter().enumerate() {
                let seq = seq as u64;
                match op {
                    Op::Next => {
                        let id = table.free_after(last).unwrap().get();
                        prop_assert!(!model.contains_key(&id));
                        last = id;
                        table.insert(id, entry(seq));
                        model.insert(id, seq);
                    }
                    Op::At(id) => {
                        // A free identifier (as a restore, which also moves the last one handed
                        // out), or one in flight (replaced).
                        table.insert(id, entry(seq));
                        model.insert(id, seq);
                        last = id;
                    }
                    Op::Remove(n) => {
                        let Some(&id) = model.keys().nth(n % model.len().max(1)) else {
                            prop_assert!(table.remove(1).is_none() || model.contains_key(&1));
                            continue;
                        };
                        prop_assert_eq!(table.remove(id).map(|e| e.seq), model.remove(&id));
                        prop_assert!(table.remove(id).is_none());
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.in_run, table.run.iter().flatten().count());
                // No identifier in both places.
                for (id, _) in table.iter().filter(|(id, _)| table.scattered.contains_key(id)) {
                    let in_run = table.offset(id).and_then(|at| table.run.get(at)).is_some_and(Option::is_some);
                    prop_assert!(!in_run, "{} in the run and the map", id);
                }
                // Lookups around the last identifier agree with the model, present or not.
                for probe in [last.wrapping_sub(1), last, last.wrapping_add(1), 1, u16::MAX] {
                    prop_assert_eq!(table.get(probe).map(|e| e.seq), model.get(&probe).copied());
                    prop_assert_eq!(table.contains(probe), model.contains_key(&probe));
                }
                if let Some(free) = table.free_after(last) {
                    prop_assert!(!model.contains_key(&free.get()));
                }
                prop_assert!(table.run.len() <= 2 * table.in_run + SLACK + 1);
                prop_assert!(!matches!(table.run.front(), Some(None)));
                prop_assert!(!matches!(table.run.back(), Some(None)));
            }
            let listed: Vec<(u16, u64)> = {
                let mut listed: Vec<_> = table.iter().map(|(id, e)| (id, e.seq)).collect();
                listed.sort_unstable();
                listed
            };
            let expected: Vec<(u16, u64)> = model.iter().map(|(&id, &seq)| (id, seq)).collect();
            prop_assert_eq!(listed, expected);
            for (&id, &seq) in &model {
                prop_assert_eq!(table.get(id).map(|e| e.seq), Some(seq));
            }
        }
    }
}
