//! Flow control from subscriber back to publisher: what a full queue does to a message, who
//! waits for room in it, and when a subscriber that makes no progress stops holding anyone back.
//!
//! Plain data with methods that take `now`, kept in each session under its lock:
//!
//! - A **connected** subscriber's queue is full at `maximum_client_writes_pending` messages or
//!   `maximum_queued_bytes`. A delivery from a connection's read that finds it full is
//!   [`Admitted::Parked`]: the reading connection keeps it, registers itself as a waiter and stops
//!   reading (its acknowledgements wait too), so TCP slows the publisher down. Nothing is dropped.
//!   When the subscriber's writer has taken the queue down to half, it wakes the waiters
//!   ([`Flow::room_made`]), which offer their parked deliveries again.
//! - A subscriber whose writer takes nothing from its full queue for `slow_subscriber_timeout`
//!   while someone waits is **stuck** ([`Flow::stuck_deadline`]): a waiting publisher declares it
//!   so, and from then on nobody waits for it (it is disconnected, or skipped, by policy).
//! - An **offline** session (or a skipped subscriber) cannot hold anyone back: its queue is
//!   bounded by `maximum_queued_messages` and `maximum_queued_bytes`, and its overflow is dropped
//!   (the new message or the oldest, [`DropOrder`]) and counted.
//! - The server's own messages (Wills, `$SYS`, the host program's) have no connection to hold
//!   back: [`Admission::Force`] lets a connected subscriber's queue take up to twice its limits.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use mqtt_packets::QoS;
use tokio::time::Instant;

use crate::Options;
use crate::hooks::DropReason;
use crate::message::Delivery;
use crate::options::{DropOrder, OverloadPolicy, SlowSubscriberPolicy};
use crate::outbound::Outbound;
use crate::session::{HandleShared, Session, SessionState};

/// One log line per session about dropped messages at most this often.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The limits and policies of flow control, taken from the [`Options`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowLimits {
    /// Messages queued for a connected subscriber before its queue is full.
    pub(crate) online_messages: usize,
    /// Messages queued for an offline session.
    pub(crate) messages: usize,
    /// Bytes queued for any session.
    pub(crate) bytes: usize,
    /// Whether QoS 0 is kept for an offline session.
    pub(crate) qos0_offline: bool,
    pub(crate) overload: OverloadPolicy,
    pub(crate) drop_order: DropOrder,
    pub(crate) slow_timeout: Duration,
    pub(crate) slow_policy: SlowSubscriberPolicy,
}

impl FlowLimits {
    pub(crate) fn new(options: &Options) -> Self {
        let caps = &options.capabilities;
        Self {
            online_messages: caps.maximum_client_writes_pending.max(1),
            messages: caps.maximum_queued_messages,
            bytes: caps.maximum_queued_bytes,
            qos0_offline: caps.queue_qos0_offline,
            overload: options.overload_policy,
            drop_order: options.queue_drop_order,
            slow_timeout: options.slow_subscriber_timeout,
            slow_policy: options.slow_subscriber_policy,
        }
    }
}

/// Who offers a delivery, and so what a connected subscriber's full queue does to it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admission<'a> {
    /// A connection's read: the delivery is parked and this connection (the waiter) stops
    /// reading until the queue has room.
    Wait(&'a Arc<HandleShared>),
    /// The server's own messages: nobody to hold back, so the queue takes up to twice its
    /// limits before it drops.
    Force,
}

/// What became of a delivery offered to a session's queue.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// Queued, with this sequence number.
    Queued(u64),
    /// Not queued yet: the subscriber's queue is full and the publisher waits for room.
    Parked(Delivery),
    /// Dropped, for this reason.
    Dropped(Delivery, DropReason),
}

/// Offers `delivery` to the queue of the session whose state this is (see the module doc).
/// Messages evicted to make room ([`DropOrder::Oldest`]) go to `evicted`.
pub(crate) fn admit(
    state: &mut SessionState,
    delivery: Delivery,
    admission: Admission<'_>,
    limits: &FlowLimits,
    now: Instant,
    evicted: &mut Vec<Delivery>,
) -> Admitted {
    let size = delivery.message.size();
    let qos0 = delivery.qos == QoS::AtMostOnce;
    let outbound = &mut state.outbound;
    if state.connection.is_none() {
        if qos0 && !limits.qos0_offline {
            return Admitted::Dropped(delivery, DropReason::ClientOffline);
        }
        return bounded(outbound, delivery, limits.messages, limits, evicted);
    }
    if state.flow.stuck {
        if qos0 {
            return Admitted::Dropped(delivery, DropReason::SubscriberStuck);
        }
        let messages = limits.messages.max(limits.online_messages);
        return bounded(outbound, delivery, messages, limits, evicted);
    }
    if outbound.fits(size, limits.online_messages, limits.bytes) {
        return Admitted::Queued(outbound.push(delivery));
    }
    match admission {
        Admission::Wait(waiter) if !qos0 || limits.overload == OverloadPolicy::Backpressure => {
            state.flow.wait(waiter, now);
            Admitted::Parked(delivery)
        }
        Admission::Wait(_) => Admitted::Dropped(delivery, DropReason::QueueFull),
        Admission::Force => {
            let messages = limits.online_messages.saturating_mul(2);
            if outbound.fits(size, messages, limits.bytes.saturating_mul(2)) {
                Admitted::Queued(outbound.push(delivery))
            } else {
                Admitted::Dropped(delivery, DropReason::QueueFull)
            }
        }
    }
}

/// A queue nobody waits for: the delivery is queued within `messages` and the byte limit, or
/// dropped (the new one, or the oldest ones to make room).
fn bounded(
    outbound: &mut Outbound,
    delivery: Delivery,
    messages: usize,
    limits: &FlowLimits,
    evicted: &mut Vec<Delivery>,
) -> Admitted {
    let size = delivery.message.size();
    if !outbound.fits(size, messages, limits.bytes) {
        match limits.drop_order {
            DropOrder::Newest => return Admitted::Dropped(delivery, DropReason::QueueFull),
            DropOrder::Oldest => outbound.evict_oldest(size, messages, limits.bytes, evicted),
        }
    }
    Admitted::Queued(outbound.push(delivery))
}

/// Per-session flow-control state (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Connections waiting for room in this session's queue.
    waiters: Vec<Arc<HandleShared>>,
    /// When the first of the current waiters started waiting.
    waiting_since: Option<Instant>,
    /// When the writer last took a message from the queue.
    last_progress: Option<Instant>,
    /// Declared stuck: nobody waits for it until its queue is half empty again.
    stuck: bool,
    /// Retained messages still to send for the subscriptions that asked for them, oldest
    /// subscription first (see `subscribe::send_retained`).
    pub(crate) retained: Option<Box<VecDeque<RetainedCursor>>>,
    /// Drops not logged yet, and when the last line about them went out.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

impl Flow {
    /// Registers `waiter` (once) as waiting for room.
    fn wait(&mut self, waiter: &Arc<HandleShared>, now: Instant) {
        if !self.waiters.iter().any(|known| Arc::ptr_eq(known, waiter)) {
            self.waiters.push(waiter.clone());
        }
        self.waiting_since.get_or_insert(now);
    }

    /// The writer took messages from the queue at `now`.
    pub(crate) fn progressed(&mut self, now: Instant) {
        self.last_progress = Some(now);
    }

    /// After the writer took from the queue: once the queue is half empty, the waiters to wake
    /// (and a stuck subscriber is one no longer).
    pub(crate) fn room_made(
        &mut self,
        outbound: &Outbound,
        limits: &FlowLimits,
    ) -> Vec<Arc<HandleShared>> {
        if (self.waiters.is_empty() && !self.stuck)
            || !outbound.is_half_empty(limits.online_messages, limits.bytes)
        {
            return Vec::new();
        }
        self.stuck = false;
        self.release_all()
    }

    /// Every waiter, to wake: the session went offline or ended, or it was declared stuck.
    pub(crate) fn release_all(&mut self) -> Vec<Arc<HandleShared>> {
        self.waiting_since = None;
        std::mem::take(&mut self.waiters)
    }

    /// A connection took the session: it starts with a clean record.
    pub(crate) fn attached(&mut self, now: Instant) {
        self.stuck = false;
        self.last_progress = Some(now);
        if !self.waiters.is_empty() {
            self.waiting_since = Some(now);
        }
    }

    /// When the subscriber counts as stuck if its writer takes nothing from the queue until
    /// then: `timeout` after someone started waiting or after its last progress, whichever is
    /// later. `None` while nobody waits.
    pub(crate) fn stuck_deadline(&self, timeout: Duration) -> Option<Instant> {
        let since = self.waiting_since?;
        let from = self
            .last_progress
            .map_or(since, |progress| progress.max(since));
        Some(from + timeout)
    }

    /// Declares the subscriber stuck: nobody waits for it any more. Returns the waiters to wake.
    pub(crate) fn declare_stuck(&mut self) -> Vec<Arc<HandleShared>> {
        self.stuck = true;
        self.release_all()
    }

    /// Whether the subscriber is skipped as stuck.
    #[cfg(test)]
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck
    }

    /// Counts a dropped message; returns how many to report in a log line now (at most one
    /// line per session every [`DROP_LOG_INTERVAL`]).
    pub(crate) fn note_drop(&mut self, now: Instant) -> Option<u64> {
        self.unlogged_drops += 1;
        if self
            .last_drop_log
            .is_some_and(|last| now < last + DROP_LOG_INTERVAL)
        {
            return None;
        }
        self.last_drop_log = Some(now);
        Some(std::mem::take(&mut self.unlogged_drops))
    }
}

/// Wakes connections that wait for room.
pub(crate) fn wake(waiters: Vec<Arc<HandleShared>>) {
    for waiter in waiters {
        waiter.room.notify_one();
    }
}

/// Where a subscription's retained messages stand while they are sent a page at a time.
#[derive(Debug)]
pub(crate) struct RetainedCursor {
    /// Tells this cursor from a later one for the same filter.
    pub(crate) id: u64,
    /// The filter as subscribed.
    pub(crate) filter: Box<str>,
    /// The QoS granted.
    pub(crate) granted: QoS,
    /// The subscription identifier.
    pub(crate) identifier: Option<NonZeroU32>,
    /// The position of the last page in the retained index (`None`: from the start).
    pub(crate) after: Option<String>,
}

/// Deliveries a connection's read could not queue yet, by subscriber, each in order.
#[derive(Debug, Default)]
pub(crate) struct Parked(Vec<(Arc<Session>, VecDeque<Delivery>)>);

impl Parked {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parks `delivery` for `session`, after those already parked for it.
    pub(crate) fn push(&mut self, session: &Arc<Session>, delivery: Delivery) {
        match self.0.last_mut() {
            Some((last, deliveries)) if Arc::ptr_eq(last, session) => {
                deliveries.push_back(delivery);
            }
            _ => self.0.push((session.clone(), VecDeque::from([delivery]))),
        }
    }

    /// Whether deliveries to `session` are parked: later ones must wait behind them
    /// [MQTT-4.6.0-6].
    pub(crate) fn holds(&self, session: &Arc<Session>) -> bool {
        self.0
            .iter()
            .any(|(parked, _)| Arc::ptr_eq(parked, session))
    }

    /// Takes the parked deliveries, by session.
    pub(crate) fn take(&mut self) -> Vec<(Arc<Session>, VecDeque<Delivery>)> {
        std::mem::take(&mut self.0)
    }

    /// Puts back what is still parked for `session` (from [`Parked::take`]).
    pub(crate) fn put_back(&mut self, session: Arc<Session>, deliveries: VecDeque<Delivery>) {
        if !deliveries.is_empty() {
            self.0.push((session, deliveries));
        }
    }
}

#[cfg(test)]
mod tests {
    use mqtt_packets::Protocol;
    use mqtt_topics::ClientId;

    use super::*;
    use crate::message::Message;
    use crate::session::ConnectionHandle;

    fn limits() -> FlowLimits {
        FlowLimits {
            online_messages: 4,
            messages: 6,
            bytes: 1 << 20,
            qos0_offline: false,
            overload: OverloadPolicy::Backpressure,
            drop_order: DropOrder::Newest,
            slow_timeout: Duration::from_secs(30),
            slow_policy: SlowSubscriberPolicy::Disconnect,
        }
    }

    fn delivery(qos: QoS, n: u8) -> Delivery {
        let mut message = Message::for_test();
        message.payload = bytes::Bytes::from(vec![n]);
        Delivery {
            message: Arc::new(message),
            qos,
            retain: false,
            subscription_identifiers: Vec::new(),
            shared: None,
            seq: 0,
        }
    }

    fn session(connected: bool) -> Session {
        let session = Session::new(ClientId::from("s"), Protocol::V5);
        if connected {
            session.state.lock().connection = Some(ConnectionHandle::new(1));
        }
        session
    }

    fn offer(
        session: &Session,
        qos: QoS,
        n: u8,
        admission: Admission<'_>,
        limits: &FlowLimits,
        now: Instant,
    ) -> Admitted {
        let mut evicted = Vec::new();
        let admitted = admit(
            &mut session.state.lock(),
            delivery(qos, n),
            admission,
            limits,
            now,
            &mut evicted,
        );
        assert!(evicted.is_empty());
        admitted
    }

    #[test]
    fn a_full_connected_queue_parks_every_qos_and_registers_the_waiter_once() {
        let now = Instant::now();
        let session = session(true);
        let waiter = Arc::new(HandleShared::default());
        let limits = limits();
        for n in 0..4 {
            assert!(matches!(
                offer(
                    &session,
                    QoS::AtMostOnce,
                    n,
                    Admission::Wait(&waiter),
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert!(matches!(
                offer(&session, qos, 9, Admission::Wait(&waiter), &limits, now),
                Admitted::Parked(_)
            ));
        }
        let mut guard = session.state.lock();
        let state = &mut *guard;
        assert_eq!(state.flow.waiters.len(), 1);
        assert_eq!(
            state.flow.stuck_deadline(limits.slow_timeout),
            Some(now + limits.slow_timeout)
        );
        // The writer takes one: not yet half empty, nobody is woken.
        state
            .outbound
            .next_batch(now, 10, 1, &mut Vec::new(), &mut Vec::new());
        assert!(state.flow.room_made(&state.outbound, &limits).is_empty());
        state
            .outbound
            .next_batch(now, 10, 1, &mut Vec::new(), &mut Vec::new());
        assert_eq!(state.flow.room_made(&state.outbound, &limits).len(), 1);
        assert_eq!(state.flow.stuck_deadline(limits.slow_timeout), None);
    }

    #[test]
    fn the_drop_policy_drops_qos0_only() {
        let now = Instant::now();
        let session = session(true);
        let waiter = Arc::new(HandleShared::default());
        let limits = FlowLimits {
            overload: OverloadPolicy::Drop,
            ..limits()
        };
        for n in 0..4 {
            offer(
                &session,
                QoS::AtLeastOnce,
                n,
                Admission::Wait(&waiter),
                &limits,
                now,
            );
        }
        assert!(matches!(
            offer(
                &session,
                QoS::AtMostOnce,
                9,
                Admission::Wait(&waiter),
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
        assert!(matches!(
            offer(
                &session,
                QoS::AtLeastOnce,
                9,
                Admission::Wait(&waiter),
                &limits,
                now
            ),
            Admitted::Parked(_)
        ));
    }

    #[test]
    fn the_servers_own_messages_go_up_to_twice_the_limit() {
        let now = Instant::now();
        let session = session(true);
        let limits = limits();
        for n in 0..8 {
            assert!(matches!(
                offer(
                    &session,
                    QoS::AtLeastOnce,
                    n,
                    Admission::Force,
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
        assert!(matches!(
            offer(
                &session,
                QoS::AtLeastOnce,
                9,
                Admission::Force,
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
    }

    #[test]
    fn an_offline_queue_is_bounded_and_drops_qos0_unless_kept() {
        let now = Instant::now();
        let session = session(false);
        let waiter = Arc::new(HandleShared::default());
        let limits = limits();
        assert!(matches!(
            offer(
                &session,
                QoS::AtMostOnce,
                0,
                Admission::Wait(&waiter),
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::ClientOffline)
        ));
        for n in 0..6 {
            assert!(matches!(
                offer(
                    &session,
                    QoS::AtLeastOnce,
                    n,
                    Admission::Wait(&waiter),
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
        assert!(matches!(
            offer(
                &session,
                QoS::AtLeastOnce,
                6,
                Admission::Wait(&waiter),
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
        assert!(session.state.lock().flow.waiters.is_empty(), "nobody waits");
        let kept = FlowLimits {
            qos0_offline: true,
            messages: 7,
            ..limits
        };
        assert!(matches!(
            offer(&session, QoS::AtMostOnce, 7, Admission::Force, &kept, now),
            Admitted::Queued(_)
        ));
    }

    #[test]
    fn drop_oldest_evicts_from_the_front() {
        let now = Instant::now();
        let session = session(false);
        let limits = FlowLimits {
            drop_order: DropOrder::Oldest,
            ..limits()
        };
        let mut evicted = Vec::new();
        let mut state = session.state.lock();
        for n in 0..8 {
            let admitted = admit(
                &mut state,
                delivery(QoS::AtLeastOnce, n),
                Admission::Force,
                &limits,
                now,
                &mut evicted,
            );
            assert!(matches!(admitted, Admitted::Queued(_)));
        }
        let gone: Vec<u8> = evicted.iter().map(|d| d.message.payload[0]).collect();
        assert_eq!(gone, [0, 1]);
        let kept: Vec<u8> = state
            .outbound
            .queued()
            .map(|d| d.message.payload[0])
            .collect();
        assert_eq!(kept, [2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn stuck_counts_from_the_later_of_waiting_and_progress() {
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut flow = Flow::default();
        assert_eq!(flow.stuck_deadline(timeout), None);
        // Idle for an hour before anyone waits: the hour does not count.
        flow.progressed(start);
        let waiter = Arc::new(HandleShared::default());
        let later = start + Duration::from_secs(3600);
        flow.wait(&waiter, later);
        assert_eq!(flow.stuck_deadline(timeout), Some(later + timeout));
        // Progress while waiting pushes the deadline on.
        flow.progressed(later + Duration::from_secs(20));
        assert_eq!(
            flow.stuck_deadline(timeout),
            Some(later + Duration::from_secs(50))
        );
        assert_eq!(flow.declare_stuck().len(), 1);
        assert!(flow.is_stuck());
    }

    #[test]
    fn a_stuck_subscriber_is_skipped_drops_qos0_and_bounds_the_rest() {
        let now = Instant::now();
        let session = session(true);
        let waiter = Arc::new(HandleShared::default());
        let limits = limits();
        session.state.lock().flow.declare_stuck();
        assert!(matches!(
            offer(
                &session,
                QoS::AtMostOnce,
                0,
                Admission::Wait(&waiter),
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::SubscriberStuck)
        ));
        for n in 0..6 {
            assert!(matches!(
                offer(
                    &session,
                    QoS::AtLeastOnce,
                    n,
                    Admission::Wait(&waiter),
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
        assert!(matches!(
            offer(
                &session,
                QoS::AtLeastOnce,
                6,
                Admission::Wait(&waiter),
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
    }

    #[test]
    fn drops_are_logged_at_a_bounded_rate() {
        let start = Instant::now();
        let mut flow = Flow::default();
        assert_eq!(flow.note_drop(start), Some(1));
        assert_eq!(flow.note_drop(start + Duration::from_secs(1)), None);
        assert_eq!(flow.note_drop(start + Duration::from_secs(2)), None);
        assert_eq!(flow.note_drop(start + DROP_LOG_INTERVAL), Some(3));
    }

    #[test]
    fn parked_keeps_order_per_session() {
        let a = Arc::new(session(true));
        let b = Arc::new(session(true));
        let mut parked = Parked::default();
        parked.push(&a, delivery(QoS::AtLeastOnce, 1));
        parked.push(&a, delivery(QoS::AtLeastOnce, 2));
        parked.push(&b, delivery(QoS::AtLeastOnce, 3));
        assert!(parked.holds(&a) && parked.holds(&b));
        let taken = parked.take();
        assert!(parked.is_empty());
        let order: Vec<Vec<u8>> = taken
            .iter()
            .map(|(_, d)| d.iter().map(|d| d.message.payload[0]).collect())
            .collect();
        assert_eq!(order, [vec![1, 2], vec![3]]);
    }
}
