//! Flow control from subscriber back to publisher: what a full queue does to a message, who
//! waits for room in it, and when a subscriber that does not drain stops holding anyone back.
//!
//! Plain data with methods that take `now`, kept in each session under its lock:
//!
//! - A **connected** subscriber's queue is full at `maximum_client_writes_pending` messages or
//!   `maximum_queued_bytes`. A delivery from a connection's read that finds it full is
//!   [`Admitted::Parked`]: the reading connection keeps it, registers itself as a waiter and stops
//!   reading (its acknowledgements wait too), so TCP slows the publisher down. Nothing is dropped.
//!   When the subscriber's writer has taken the queue down to half, it wakes the waiters
//!   ([`Flow::room_made`]), which offer their parked deliveries again.
//! - Two exceptions keep waiting from turning into a deadlock, since a connection that waits
//!   does not read its client's acknowledgements either: a connection never waits for its own
//!   session (a client subscribed to what it publishes), nor for a subscriber whose own reader is
//!   waiting (two clients publishing to each other). Such deliveries are queued up to twice the
//!   limits, like the server's own messages.
//! - A subscriber that does not drain its full queue to half within `slow_subscriber_timeout`
//!   while someone waits is **stuck** ([`Flow::stuck_deadline`]): a waiting publisher declares it
//!   so, and from then on nobody waits for it (it is disconnected, or skipped, by policy). One
//!   whose own reader waits for someone else is given twice as long.
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
    /// Bytes in flight to one client.
    pub(crate) inflight_bytes: usize,
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
            inflight_bytes: caps.maximum_inflight_bytes,
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
    /// The parked deliveries of a connection that ends while it waits: accepted already, and
    /// bounded by one read, so they are queued whatever the limits.
    Final,
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
    if state.flow.is_stuck() {
        if qos0 {
            return Admitted::Dropped(delivery, DropReason::SubscriberStuck);
        }
        let messages = limits.messages.max(limits.online_messages);
        return bounded(outbound, delivery, messages, limits, evicted);
    }
    if outbound.fits(size, limits.online_messages, limits.bytes) {
        return Admitted::Queued(outbound.push(delivery));
    }
    // Waiting for one's own session, or for a subscriber that itself waits, could wait forever:
    // neither reads the acknowledgements that would make room.
    let admission = match (admission, &state.connection) {
        (Admission::Wait(waiter), Some(connection))
            if connection.is(waiter) || connection.reader_waits() =>
        {
            Admission::Force
        }
        (admission, _) => admission,
    };
    match admission {
        Admission::Wait(waiter) if !qos0 || limits.overload == OverloadPolicy::Backpressure => {
            state.flow.wait(waiter, now);
            Admitted::Parked(delivery)
        }
        Admission::Wait(_) => Admitted::Dropped(delivery, DropReason::QueueFull),
        Admission::Final => Admitted::Queued(outbound.push(delivery)),
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
    if messages == 0 {
        return Admitted::Dropped(delivery, DropReason::QueueFull);
    }
    if !outbound.fits(size, messages, limits.bytes) {
        // A QoS 0 message never pushes out the older messages it would replace.
        if limits.drop_order == DropOrder::Newest || delivery.qos == QoS::AtMostOnce {
            return Admitted::Dropped(delivery, DropReason::QueueFull);
        }
        outbound.evict_oldest(size, messages, limits.bytes, evicted);
    }
    Admitted::Queued(outbound.push(delivery))
}

/// Per-session flow-control state (see the module doc). Most sessions never need any: it is
/// allocated when someone waits, a subscription streams retained messages or a message is
/// dropped, and given back when none of that is left (an idle session keeps 8 bytes).
#[derive(Debug, Default)]
pub(crate) struct Flow(Option<Box<FlowState>>);

#[derive(Debug, Default)]
struct FlowState {
    /// Connections waiting for room in this session's queue.
    waiters: Vec<Arc<HandleShared>>,
    /// When the first of the current waiters started waiting.
    waiting_since: Option<Instant>,
    /// Declared stuck: nobody waits for it until its queue is half empty again.
    stuck: bool,
    /// Retained messages still to send for the subscriptions that asked for them, oldest
    /// subscription first (see `subscribe::send_retained`).
    retained: VecDeque<RetainedCursor>,
    /// Drops not logged yet, and when the last line about them went out.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

impl FlowState {
    /// Whether nothing is left that needs the state (a drop log keeps it, for its rate).
    fn is_idle(&self) -> bool {
        self.waiters.is_empty()
            && !self.stuck
            && self.retained.is_empty()
            && self.last_drop_log.is_none()
    }
}

impl Flow {
    fn state(&mut self) -> &mut FlowState {
        self.0.get_or_insert_with(Box::default)
    }

    /// Gives the state back once nothing needs it.
    fn tidy(&mut self) {
        if self.0.as_ref().is_some_and(|state| state.is_idle()) {
            self.0 = None;
        }
    }

    /// Registers `waiter` (once) as waiting for room.
    fn wait(&mut self, waiter: &Arc<HandleShared>, now: Instant) {
        let state = self.state();
        if !state.waiters.iter().any(|known| Arc::ptr_eq(known, waiter)) {
            state.waiters.push(waiter.clone());
        }
        state.waiting_since.get_or_insert(now);
    }

    /// `waiter` placed everything it waited to place here: it waits no more.
    pub(crate) fn unwait(&mut self, waiter: &Arc<HandleShared>) {
        let Some(state) = self.0.as_mut() else {
            return;
        };
        state.waiters.retain(|known| !Arc::ptr_eq(known, waiter));
        if state.waiters.is_empty() {
            state.waiting_since = None;
        }
        self.tidy();
    }

    /// After the writer took from the queue: once the queue is half empty, the waiters to wake
    /// (and a stuck subscriber is one no longer).
    pub(crate) fn room_made(
        &mut self,
        outbound: &Outbound,
        limits: &FlowLimits,
    ) -> Vec<Arc<HandleShared>> {
        let Some(state) = self.0.as_mut() else {
            return Vec::new();
        };
        if (state.waiters.is_empty() && !state.stuck)
            || !outbound.is_half_empty(limits.online_messages, limits.bytes)
        {
            return Vec::new();
        }
        state.stuck = false;
        self.release_all()
    }

    /// Every waiter, to wake: the session went offline or ended, or it was declared stuck.
    pub(crate) fn release_all(&mut self) -> Vec<Arc<HandleShared>> {
        let Some(state) = self.0.as_mut() else {
            return Vec::new();
        };
        state.waiting_since = None;
        let waiters = std::mem::take(&mut state.waiters);
        self.tidy();
        waiters
    }

    /// A connection took the session: it starts with a clean record.
    pub(crate) fn attached(&mut self, now: Instant) {
        let Some(state) = self.0.as_mut() else {
            return;
        };
        state.stuck = false;
        if !state.waiters.is_empty() {
            state.waiting_since = Some(now);
        }
        self.tidy();
    }

    /// When the subscriber counts as stuck if its queue is not half empty by then: `timeout`
    /// after someone started waiting for it (twice that while its own reader waits for another
    /// subscriber, which it cannot help). A subscriber that drains, however slowly, but not
    /// enough to take its publishers' messages again within the timeout is stuck too: it would
    /// otherwise hold them back without end. `None` while nobody waits.
    pub(crate) fn stuck_deadline(&self, timeout: Duration, reader_waits: bool) -> Option<Instant> {
        let since = self.0.as_ref()?.waiting_since?;
        Some(since + if reader_waits { timeout * 2 } else { timeout })
    }

    /// Declares the subscriber stuck: nobody waits for it any more. Returns the waiters to wake.
    pub(crate) fn declare_stuck(&mut self) -> Vec<Arc<HandleShared>> {
        self.state().stuck = true;
        self.release_all()
    }

    /// Whether the subscriber is skipped as stuck.
    pub(crate) fn is_stuck(&self) -> bool {
        self.0.as_ref().is_some_and(|state| state.stuck)
    }

    /// Counts a dropped message; returns how many to report in a log line now (at most one
    /// line per session every [`DROP_LOG_INTERVAL`]).
    pub(crate) fn note_drop(&mut self, now: Instant) -> Option<u64> {
        let state = self.state();
        state.unlogged_drops += 1;
        if state
            .last_drop_log
            .is_some_and(|last| now < last + DROP_LOG_INTERVAL)
        {
            return None;
        }
        state.last_drop_log = Some(now);
        Some(std::mem::take(&mut state.unlogged_drops))
    }

    /// Whether retained messages remain to be sent for a subscription.
    pub(crate) fn has_retained(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|state| !state.retained.is_empty())
    }

    /// The subscriptions whose retained messages remain to be sent, oldest first (`None` when
    /// there are none).
    pub(crate) fn retained(&mut self) -> Option<&mut VecDeque<RetainedCursor>> {
        self.0
            .as_mut()
            .map(|state| &mut state.retained)
            .filter(|cursors| !cursors.is_empty())
    }

    /// Starts streaming the retained messages of a subscription to `cursor.filter`, replacing
    /// one for the same filter that is still running.
    pub(crate) fn add_retained(&mut self, cursor: RetainedCursor) {
        let cursors = &mut self.state().retained;
        cursors.retain(|running| running.filter != cursor.filter);
        cursors.push_back(cursor);
    }

    /// Stops the retained messages of `filter` (`None`: of every subscription).
    pub(crate) fn stop_retained(&mut self, filter: Option<&str>) {
        let Some(state) = self.0.as_mut() else {
            return;
        };
        match filter {
            Some(filter) => state.retained.retain(|cursor| *cursor.filter != *filter),
            None => state.retained.clear(),
        }
        self.tidy();
    }

    /// The retained cursors changed (one finished): gives the state back if it is idle.
    pub(crate) fn retained_done(&mut self) {
        self.tidy();
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

/// Deliveries a connection's read could not queue yet, by subscriber, each in order, with the
/// subscriber session's epoch when they were parked (see `SessionState::epoch`).
#[derive(Debug, Default)]
pub(crate) struct Parked(Vec<ParkedRun>);

/// The deliveries parked for one session.
#[derive(Debug)]
pub(crate) struct ParkedRun {
    pub(crate) session: Arc<Session>,
    /// The session's epoch when they were parked: a session that started clean since has none
    /// of the subscriptions they were for.
    pub(crate) epoch: u64,
    pub(crate) deliveries: VecDeque<Delivery>,
}

impl Parked {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parks `delivery` for `session` (at `epoch`), after those already parked for it.
    pub(crate) fn push(&mut self, session: &Arc<Session>, epoch: u64, delivery: Delivery) {
        match self.0.last_mut() {
            Some(run) if Arc::ptr_eq(&run.session, session) => {
                run.deliveries.push_back(delivery);
            }
            _ => self.0.push(ParkedRun {
                session: session.clone(),
                epoch,
                deliveries: VecDeque::from([delivery]),
            }),
        }
    }

    /// Takes the parked deliveries, by session.
    pub(crate) fn take(&mut self) -> Vec<ParkedRun> {
        std::mem::take(&mut self.0)
    }

    /// Puts back a run still (partly) parked (from [`Parked::take`]).
    pub(crate) fn put_back(&mut self, run: ParkedRun) {
        if !run.deliveries.is_empty() {
            self.0.push(run);
        }
    }
}

#[cfg(test)]
impl Flow {
    fn waiter_count(&self) -> usize {
        self.0.as_ref().map_or(0, |state| state.waiters.len())
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
            inflight_bytes: 1 << 20,
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
        assert_eq!(state.flow.waiter_count(), 1);
        assert_eq!(
            state.flow.stuck_deadline(limits.slow_timeout, false),
            Some(now + limits.slow_timeout)
        );
        // The writer takes one: not yet half empty, nobody is woken.
        state
            .outbound
            .next_batch(now, 10, usize::MAX, 1, &mut Vec::new(), &mut Vec::new());
        assert!(state.flow.room_made(&state.outbound, &limits).is_empty());
        state
            .outbound
            .next_batch(now, 10, usize::MAX, 1, &mut Vec::new(), &mut Vec::new());
        assert_eq!(state.flow.room_made(&state.outbound, &limits).len(), 1);
        assert_eq!(state.flow.stuck_deadline(limits.slow_timeout, false), None);
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
        assert_eq!(session.state.lock().flow.waiter_count(), 0, "nobody waits");
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
    fn stuck_counts_from_the_first_wait_and_unwaiting_resets_it() {
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut flow = Flow::default();
        assert_eq!(flow.stuck_deadline(timeout, false), None);
        let first = Arc::new(HandleShared::default());
        let second = Arc::new(HandleShared::default());
        flow.wait(&first, start);
        flow.wait(&second, start + Duration::from_secs(10));
        flow.wait(&first, start + Duration::from_secs(20));
        assert_eq!(flow.waiter_count(), 2, "each waiter once");
        assert_eq!(flow.stuck_deadline(timeout, false), Some(start + timeout));
        assert_eq!(
            flow.stuck_deadline(timeout, true),
            Some(start + timeout * 2),
            "longer while its own reader waits"
        );
        flow.unwait(&first);
        assert_eq!(flow.stuck_deadline(timeout, false), Some(start + timeout));
        flow.unwait(&second);
        assert_eq!(flow.stuck_deadline(timeout, false), None);
        // Idle for an hour before anyone waits again: the hour does not count.
        let later = start + Duration::from_secs(3600);
        flow.wait(&first, later);
        assert_eq!(flow.stuck_deadline(timeout, false), Some(later + timeout));
        assert_eq!(flow.declare_stuck().len(), 1);
        assert!(flow.is_stuck());
    }

    #[test]
    fn a_connection_never_waits_for_itself_or_for_a_subscriber_that_waits() {
        let now = Instant::now();
        let limits = limits();
        let itself = session(true);
        let own = {
            let state = itself.state.lock();
            state.connection.as_ref().unwrap().shared()
        };
        for n in 0..8 {
            assert!(matches!(
                offer(
                    &itself,
                    QoS::AtLeastOnce,
                    n,
                    Admission::Wait(&own),
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
        assert!(matches!(
            offer(
                &itself,
                QoS::AtLeastOnce,
                9,
                Admission::Wait(&own),
                &limits,
                now
            ),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
        let other = session(true);
        {
            let state = other.state.lock();
            let connection = state.connection.as_ref().unwrap();
            connection
                .waiting
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let waiter = Arc::new(HandleShared::default());
        for n in 0..8 {
            assert!(matches!(
                offer(
                    &other,
                    QoS::AtLeastOnce,
                    n,
                    Admission::Wait(&waiter),
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
        assert_eq!(other.state.lock().flow.waiter_count(), 0);
    }

    #[test]
    fn the_final_placement_takes_everything() {
        let now = Instant::now();
        let session = session(true);
        let limits = limits();
        for n in 0..20 {
            assert!(matches!(
                offer(
                    &session,
                    QoS::ExactlyOnce,
                    n,
                    Admission::Final,
                    &limits,
                    now
                ),
                Admitted::Queued(_)
            ));
        }
    }

    #[test]
    fn drop_oldest_never_evicts_for_qos0_and_a_zero_limit_keeps_nothing() {
        let now = Instant::now();
        let session = session(false);
        let limits = FlowLimits {
            drop_order: DropOrder::Oldest,
            qos0_offline: true,
            ..limits()
        };
        for n in 0..6 {
            offer(
                &session,
                QoS::AtLeastOnce,
                n,
                Admission::Force,
                &limits,
                now,
            );
        }
        assert!(matches!(
            offer(&session, QoS::AtMostOnce, 6, Admission::Force, &limits, now),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
        let empty = Session::new(ClientId::from("e"), Protocol::V5);
        let none = FlowLimits {
            messages: 0,
            ..limits
        };
        assert!(matches!(
            offer(&empty, QoS::AtLeastOnce, 0, Admission::Force, &none, now),
            Admitted::Dropped(_, DropReason::QueueFull)
        ));
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
        parked.push(&a, 1, delivery(QoS::AtLeastOnce, 1));
        parked.push(&a, 1, delivery(QoS::AtLeastOnce, 2));
        parked.push(&b, 3, delivery(QoS::AtLeastOnce, 3));
        let taken = parked.take();
        assert!(parked.is_empty());
        let order: Vec<(u64, Vec<u8>)> = taken
            .iter()
            .map(|run| {
                let payloads = run
                    .deliveries
                    .iter()
                    .map(|d| d.message.payload[0])
                    .collect();
                (run.epoch, payloads)
            })
            .collect();
        assert_eq!(order, [(1, vec![1, 2]), (3, vec![3])]);
    }
}
