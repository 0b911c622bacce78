//! Deliveries staged by the messages of one read, handed to the subscribers' queues together by
//! [`Server::deliver`](crate::server::Server::deliver): each subscriber's session is locked, and
//! its writer woken, once per read (or per [`FLUSH_AT`] deliveries of a large read) rather than
//! once per message.
//!
//! A read of a hundred messages fanned out to ten subscribers stages a thousand deliveries but
//! ten sessions: each session is kept once (its index stands for it in each delivery), so the
//! session's reference count is not touched a thousand times, and the deliveries are grouped by
//! a counting sort on that index.

use std::sync::Arc;

use mqtt_packets::MqttString;
use mqtt_topics::Matches;

use crate::message::Delivery;
use crate::session::{Session, SubscriptionEntry};

/// What the messages of one read (or one call) stage for delivery.
///
/// Holds nothing between reads: its vectors are borrowed from the thread (see [`SPARE`]) when a
/// read stages its first delivery, and given back when they are handed over, so an idle
/// connection keeps no room for them and a busy thread reuses warm memory.
#[derive(Default)]
pub(crate) struct Staged(Option<Box<Batch>>);

#[derive(Default)]
struct Batch {
    /// The distinct sessions delivered to, in the order first staged.
    sessions: Vec<Arc<Session>>,
    /// Each session's place in `sessions`, by address.
    index: foldhash::HashMap<usize, u32>,
    /// Each delivery with its session's place, in the order staged.
    deliveries: Vec<(u32, Delivery)>,
    /// The matches of the last topic routed, for the next message on it.
    last_route: Option<LastRoute>,
}

/// The non-shared subscriptions that matched `topic` while the trie was at `generation`.
pub(crate) struct LastRoute {
    pub(crate) topic: MqttString,
    pub(crate) generation: u64,
    pub(crate) matches: Matches<SubscriptionEntry>,
}

/// Capacities a batch may keep when given back to its thread; a burst beyond them gives its
/// memory back instead.
const KEPT_SESSIONS: usize = 1024;
const KEPT_DELIVERIES: usize = 2 * FLUSH_AT;

/// A read that has staged this many deliveries hands them over before it goes on (see
/// [`Staged::is_full`]): a large read fanned out to many subscribers does not stage millions of
/// deliveries at once, and the vectors stay the same from read to read.
pub(crate) const FLUSH_AT: usize = 8 * 1024;

thread_local! {
    /// The batch of the last hand-over on this thread, empty, for the next read to stage into.
    static SPARE: std::cell::Cell<Option<Box<Batch>>> = const { std::cell::Cell::new(None) };
}

impl Staged {
    fn batch(&mut self) -> &mut Batch {
        self.0
            .get_or_insert_with(|| SPARE.take().unwrap_or_default())
    }

    /// Stages a delivery to `session`.
    pub(crate) fn push(&mut self, session: &Arc<Session>, delivery: Delivery) {
        let batch = self.batch();
        let sessions = &mut batch.sessions;
        let place = *batch
            .index
            .entry(Arc::as_ptr(session) as usize)
            .or_insert_with(|| {
                sessions.push(session.clone());
                u32::try_from(sessions.len() - 1).unwrap_or(u32::MAX)
            });
        batch.deliveries.push((place, delivery));
    }

    /// Whether no delivery is staged.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|batch| batch.deliveries.is_empty())
    }

    /// Whether enough is staged to hand over now, without waiting for the end of the read.
    pub(crate) fn is_full(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|batch| batch.deliveries.len() >= FLUSH_AT)
    }

    /// Takes the last route kept (see [`Server::route`](crate::server::Server::route)).
    pub(crate) fn take_last_route(&mut self) -> Option<LastRoute> {
        self.0.as_mut().and_then(|batch| batch.last_route.take())
    }

    /// Keeps `route` for the next message of this read.
    pub(crate) fn set_last_route(&mut self, route: Option<LastRoute>) {
        if route.is_some() || self.0.is_some() {
            self.batch().last_route = route;
        }
    }

    /// Hands the staged deliveries to `each`, one call per session (in the order the sessions
    /// were first staged) with that session's deliveries in the order staged
    /// [MQTT-4.6.0-6], and forgets them (the last route too: it holds sessions, which must not
    /// outlive the read that staged them). Deliveries `each` leaves unread are dropped.
    pub(crate) fn drain_by_session(
        &mut self,
        mut each: impl FnMut(&Arc<Session>, &mut dyn Iterator<Item = Delivery>),
    ) {
        // Taken out for the hand-over: should `each` panic, the sessions go with the stack.
        let Some(mut batch) = self.0.take() else {
            return;
        };
        batch.last_route = None;
        batch.index.clear();
        let Batch {
            sessions,
            deliveries,
            ..
        } = &mut *batch;
        group_by_place(deliveries, sessions.len());
        let mut drain = deliveries.drain(..).peekable();
        while let Some(&(place, _)) = drain.peek() {
            let mut run = std::iter::from_fn(|| {
                drain
                    .next_if(|(other, _)| *other == place)
                    .map(|(_, delivery)| delivery)
            });
            if let Some(session) = sessions.get(place as usize) {
                each(session, &mut run);
            }
            run.for_each(drop);
        }
        drop(drain);
        sessions.clear();
        if sessions.capacity() <= KEPT_SESSIONS && deliveries.capacity() <= KEPT_DELIVERIES {
            SPARE.set(Some(batch));
        }
    }
}

thread_local! {
    /// Scratch space of [`group_by_place`] (group starts, then the permutation), kept per
    /// worker thread: a large batch would otherwise allocate, and fault in, fresh pages each time.
    static GROUPING: std::cell::RefCell<(Vec<u32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A slot of the permutation already in place.
const DONE: u32 = u32::MAX;

/// Reorders `deliveries` so that those of each place (session) are together, places in
/// increasing order, keeping their order within each place (a stable grouping): a counting sort
/// gives the permutation, applied in place by following its cycles. `places` bounds the places.
fn group_by_place(deliveries: &mut [(u32, Delivery)], places: usize) {
    if places < 2 || deliveries.len() < 3 || u32::try_from(deliveries.len()).is_err() {
        return;
    }
    GROUPING.with_borrow_mut(|(starts, order)| {
        // starts[p + 1] counts place p; the running sum then gives each place's first slot.
        starts.clear();
        starts.resize(places + 1, 0);
        for (place, _) in deliveries.iter() {
            if let Some(count) = starts.get_mut(*place as usize + 1) {
                *count += 1;
            }
        }
        let mut sum = 0;
        for start in starts.iter_mut() {
            sum += *start;
            *start = sum;
        }
        // Slot k takes the delivery now at order[k].
        order.clear();
        order.resize(deliveries.len(), DONE);
        for (position, (place, _)) in (0u32..).zip(deliveries.iter()) {
            if let Some(start) = starts.get_mut(*place as usize)
                && let Some(slot) = order.get_mut(*start as usize)
            {
                *slot = position;
                *start += 1;
            }
        }
        for first in 0..order.len() {
            let mut current = first;
            while let Some(entry) = order.get_mut(current) {
                let next = *entry;
                *entry = DONE;
                if next == DONE || next as usize == first {
                    break;
                }
                deliveries.swap(current, next as usize);
                current = next as usize;
            }
        }
        if order.capacity() > 1 << 16 {
            // A burst far above the usual: do not keep its scratch space.
            *order = Vec::new();
        }
        if starts.capacity() > 1 << 16 {
            *starts = Vec::new();
        }
    });
}

#[cfg(test)]
mod tests {
    use mqtt_packets::Protocol;

    use super::*;

    #[test]
    fn hands_each_sessions_deliveries_together_in_order_mqtt_4_6_0_6() {
        let sessions: Vec<Arc<Session>> = (0..7)
            .map(|i| Arc::new(Session::new(format!("c{i}").into(), Protocol::V5)))
            .collect();
        // A fan-out pattern (every session per publish) mixed with irregular runs.
        let mut staged = Staged::default();
        let mut expected: Vec<(usize, u64)> = Vec::new();
        let mut seq = 0;
        for round in 0..40 {
            for (i, session) in sessions.iter().enumerate() {
                if (round + i) % 3 != 0 {
                    staged.push(session, Delivery::for_test(seq));
                    expected.push((Arc::as_ptr(session) as usize, seq));
                    seq += 1;
                }
            }
        }
        // Each session staged once, whatever its number of deliveries.
        for session in &sessions {
            assert_eq!(Arc::strong_count(session), 2);
        }
        let mut calls = Vec::new();
        let mut got = Vec::new();
        staged.drain_by_session(|session, deliveries| {
            let address = Arc::as_ptr(session) as usize;
            calls.push(address);
            let seqs: Vec<u64> = deliveries.map(|delivery| delivery.seq).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "out of order: {seqs:?}"
            );
            got.extend(seqs.into_iter().map(|seq| (address, seq)));
        });
        // One call per session, in the order first staged.
        let mut first_staged: Vec<usize> = Vec::new();
        for (address, _) in &expected {
            if !first_staged.contains(address) {
                first_staged.push(*address);
            }
        }
        assert_eq!(calls, first_staged);
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "nothing lost or duplicated");
        assert!(staged.is_empty());
        for session in &sessions {
            assert_eq!(Arc::strong_count(session), 1, "the read keeps no session");
        }
    }

    #[test]
    fn nothing_is_kept_between_reads() {
        let a = Arc::new(Session::new("a".into(), Protocol::V5));
        let mut staged = Staged::default();
        assert!(staged.0.is_none());
        staged.push(&a, Delivery::for_test(0));
        assert!(!staged.is_empty());
        staged.drain_by_session(|_, deliveries| deliveries.for_each(drop));
        assert!(staged.0.is_none(), "the batch went back to the thread");
        assert_eq!(Arc::strong_count(&a), 1);
        // The next read on this thread reuses it, warm.
        staged.push(&a, Delivery::for_test(1));
        assert!(
            staged
                .0
                .as_ref()
                .is_some_and(|batch| batch.deliveries.capacity() > 1)
        );
        staged.drain_by_session(|_, deliveries| deliveries.for_each(drop));
    }

    #[test]
    fn deliveries_left_unread_are_dropped_and_the_next_session_still_served() {
        let a = Arc::new(Session::new("a".into(), Protocol::V5));
        let b = Arc::new(Session::new("b".into(), Protocol::V5));
        let mut staged = Staged::default();
        for seq in 0..6 {
            staged.push(if seq % 2 == 0 { &a } else { &b }, Delivery::for_test(seq));
        }
        let mut got = Vec::new();
        staged.drain_by_session(|session, deliveries| {
            // Reads only the first of each session's deliveries.
            if let Some(delivery) = deliveries.next() {
                got.push((session.client_id.to_string(), delivery.seq));
            }
        });
        assert_eq!(got, [("a".to_string(), 0), ("b".to_string(), 1)]);
        assert!(staged.is_empty());
    }
}
