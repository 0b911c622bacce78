//! Deadlines for session expiry and delayed wills: a heap and one task, not a periodic scan.

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

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: Mutex<(BinaryHeap<Reverse<Timer>>, u64)>,
    changed: Notify,
}

impl Timers {
    pub(crate) fn schedule(&self, at: Instant, event: TimerEvent) {
        let mut heap = self.heap.lock();
        let seq = heap.1;
        heap.1 += 1;
        let earliest = heap.0.peek().is_none_or(|Reverse(first)| at < first.at);
        heap.0.push(Reverse(Timer { at, seq, event }));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// The events due at `now`, earliest first.
    pub(crate) fn due(&self, now: Instant) -> Vec<TimerEvent> {
        let mut heap = self.heap.lock();
        let mut due = Vec::new();
        while heap.0.peek().is_some_and(|Reverse(first)| first.at <= now) {
            if let Some(Reverse(timer)) = heap.0.pop() {
                due.push(timer.event);
            }
        }
        due
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.lock().0.peek().map(|Reverse(first)| first.at)
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
