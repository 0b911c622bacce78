//! Deadlines for session expiry, delayed wills and retained-message expiry: a heap and one task,
//! not a periodic scan.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use mqtt_topics::ClientId;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What happens at a deadline. `generation` is that of the connection whose end scheduled it:
/// if the session was resumed since, the event is stale and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerEvent {
    /// The session of a disconnected client expires [MQTT-4.1.0-2].
    SessionExpiry {
        client_id: ClientId,
        generation: u64,
    },
    /// A delayed Will is due [MQTT-3.1.2-8].
    WillDelay {
        client_id: ClientId,
        generation: u64,
    },
    /// The retained message of a topic expires (§3.3.1.3); ignored if it was replaced.
    RetainedExpiry { topic: ClientId },
}

#[derive(Debug, PartialEq, Eq)]
struct Timer {
    at: Instant,
    seq: u64,
    event: TimerEvent,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The deadline heap. Each (kind, client) has at most one live deadline: scheduling another
/// replaces it, and the entries it replaced are skipped when they come due and swept out when
/// they outnumber the live ones, so a client that reconnects in a loop cannot grow the heap.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: Mutex<Heap>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Heap {
    entries: BinaryHeap<Reverse<Timer>>,
    next_seq: u64,
    /// The sequence number of the live entry of each (kind, client or topic).
    live: std::collections::HashMap<(u8, ClientId), u64>,
}

fn key(event: &TimerEvent) -> (u8, ClientId) {
    match event {
        TimerEvent::SessionExpiry { client_id, .. } => (0, client_id.clone()),
        TimerEvent::WillDelay { client_id, .. } => (1, client_id.clone()),
        TimerEvent::RetainedExpiry { topic } => (2, topic.clone()),
    }
}

impl Timers {
    pub(crate) fn schedule(&self, at: Instant, event: TimerEvent) {
        let mut heap = self.heap.lock();
        let seq = heap.next_seq;
        heap.next_seq += 1;
        heap.live.insert(key(&event), seq);
        let earliest = heap
            .entries
            .peek()
            .is_none_or(|Reverse(first)| at < first.at);
        heap.entries.push(Reverse(Timer { at, seq, event }));
        if heap.entries.len() > 2 * heap.live.len() + 64 {
            let Heap { entries, live, .. } = &mut *heap;
            entries.retain(|Reverse(timer)| live.get(&key(&timer.event)) == Some(&timer.seq));
        }
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// The events due at `now`, earliest first.
    pub(crate) fn due(&self, now: Instant) -> Vec<TimerEvent> {
        let mut heap = self.heap.lock();
        let mut due = Vec::new();
        while heap
            .entries
            .peek()
            .is_some_and(|Reverse(first)| first.at <= now)
        {
            if let Some(Reverse(timer)) = heap.entries.pop() {
                let key = key(&timer.event);
                if heap.live.get(&key) == Some(&timer.seq) {
                    heap.live.remove(&key);
                    due.push(timer.event);
                }
            }
        }
        due
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap
            .lock()
            .entries
            .peek()
            .map(|Reverse(first)| first.at)
    }

    /// Waits until the next deadline, or until an earlier one is scheduled.
    pub(crate) async fn wait(&self) {
        match self.next_deadline() {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = self.changed.notified() => {}
                }
            }
            None => self.changed.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rescheduling_replaces_and_the_heap_stays_bounded() {
        let timers = Timers::default();
        let now = Instant::now();
        for generation in 0..10_000u64 {
            timers.schedule(
                now + Duration::from_secs(86_400),
                TimerEvent::SessionExpiry {
                    client_id: ClientId::from("loop"),
                    generation,
                },
            );
        }
        assert!(timers.heap.lock().entries.len() <= 2 + 64);
        let due = timers.due(now + Duration::from_secs(86_400));
        assert_eq!(
            due,
            [TimerEvent::SessionExpiry {
                client_id: ClientId::from("loop"),
                generation: 9_999
            }]
        );
    }

    #[test]
    fn due_in_deadline_order() {
        let timers = Timers::default();
        let now = Instant::now();
        let event = |name: &str| TimerEvent::SessionExpiry {
            client_id: ClientId::from(name),
            generation: 1,
        };
        timers.schedule(now + Duration::from_secs(5), event("b"));
        timers.schedule(now + Duration::from_secs(1), event("a"));
        timers.schedule(now + Duration::from_secs(9), event("c"));
        assert!(timers.due(now).is_empty());
        assert_eq!(
            timers.due(now + Duration::from_secs(6)),
            [event("a"), event("b")]
        );
        assert_eq!(timers.next_deadline(), Some(now + Duration::from_secs(9)));
    }
}
