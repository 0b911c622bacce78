//! Placing deliveries in subscribers' queues, and the back-pressure on publishers when a
//! connected subscriber's queue is full (see `flow.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mqtt_packets::{Publish, QoS, ReasonCode};
use mqtt_topics::ClientId;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Server;

use crate::ClientInfo;
use crate::flow::{self, Admission, Admitted, Parked};
use crate::hooks::{Access, DropReason, HookEvents};
use crate::message::{Delivery, Message};
use crate::options::SlowSubscriberPolicy;
use crate::session::{Close, HandleShared, Session, SessionState};
use crate::staged::Staged;
use crate::storage::{self, StorageEvent};
use crate::sys::{self};

/// A delivery a queue refused, for [`Server::report_dropped`] once the locks are released.
#[derive(Debug)]
pub(crate) struct Dropped {
    client_id: ClientId,
    /// The session's client as of its last connection, for `on_publish_dropped` hooks: taken
    /// under the session lock, since the session may be gone when the drop is reported.
    client: Option<Arc<ClientInfo>>,
    delivery: Delivery,
    reason: DropReason,
}

impl Dropped {
    /// `delivery`, refused for `session` (whose client is `client`) for `reason`.
    pub(crate) fn new(
        session: &Session,
        client: Option<Arc<ClientInfo>>,
        delivery: Delivery,
        reason: DropReason,
    ) -> Self {
        Self {
            client_id: session.client_id.clone(),
            client,
            delivery,
            reason,
        }
    }
}

impl Server {
    /// Puts the server's own deliveries in a session's queue, in order, and wakes its writer
    /// ([`Admission::Force`]: nobody waits).
    pub(crate) fn enqueue(&self, session: &Arc<Session>, deliveries: Vec<Delivery>) {
        let mut dropped = Vec::new();
        self.queue_to(
            session,
            &mut deliveries.into_iter(),
            Admission::Force,
            Instant::now(),
            &mut Parked::default(),
            &mut HashMap::new(),
            &mut dropped,
        );
        self.report_dropped(dropped);
    }

    /// Puts staged deliveries of the server's own messages (Wills, `$SYS`, the host program's)
    /// in their sessions' queues: nobody waits for room ([`Admission::Force`]).
    pub(crate) fn deliver(&self, staged: &mut Staged) {
        self.hand_over(staged, Admission::Force, &mut Parked::default());
    }

    /// Puts the deliveries staged by a connection's read in their sessions' queues. Those for a
    /// connected subscriber whose queue is full go to `parked`, and `waiter` (the reading
    /// connection) is woken when there is room: it must not read more until
    /// [`Server::retry_parked`] placed them all (see `flow.rs`).
    pub(crate) fn deliver_from_read(
        &self,
        staged: &mut Staged,
        waiter: &Arc<HandleShared>,
        parked: &mut Parked,
    ) {
        self.hand_over(staged, Admission::Wait(waiter), parked);
    }

    /// Hands staged deliveries to their sessions' queues, locking each session once per run of
    /// deliveries to it and waking each writer once. The routing kept for the next message ends
    /// here too: it holds its subscribers' sessions, which must not outlive the read that staged
    /// them.
    pub(crate) fn hand_over(
        &self,
        staged: &mut Staged,
        admission: Admission<'_>,
        parked: &mut Parked,
    ) {
        let mut dropped = Vec::new();
        let mut compacted = HashMap::new();
        let now = Instant::now();
        // Grouped by session, each session's deliveries in order [MQTT-4.6.0-6]: a read batch of
        // fan-out publishes then locks each subscriber's session, checks its ACL and wakes its
        // writer once, not once per message.
        staged.drain_by_session(|session, deliveries| {
            self.queue_to(
                session,
                deliveries,
                admission,
                now,
                parked,
                &mut compacted,
                &mut dropped,
            );
        });
        self.report_dropped(dropped);
    }

    /// Puts `deliveries` in `session`'s queue under one lock and wakes its writer; those refused
    /// go to `dropped`, and those that must wait for room (see [`Admission::Wait`]) to `parked`,
    /// with every later one to the same session, in order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_to(
        &self,
        session: &Arc<Session>,
        deliveries: &mut dyn Iterator<Item = Delivery>,
        admission: Admission<'_>,
        now: Instant,
        parked: &mut Parked,
        compacted: &mut HashMap<usize, Arc<Message>>,
        dropped: &mut Vec<Dropped>,
    ) {
        let inner = &self.inner;
        if let Some(sink) = &session.inline_sink {
            for delivery in deliveries {
                let publish = delivery.to_publish(None, false, Instant::now());
                if sink.try_send(publish).is_err() {
                    dropped.push(Dropped::new(session, None, delivery, DropReason::QueueFull));
                }
            }
            return;
        }
        let check_acl = inner.hooks.provides(HookEvents::ON_ACL_CHECK);
        // Once one delivery waits, the later ones to this subscriber wait behind it.
        let mut waiting = false;
        let mut state = session.state.lock();
        // The ACL answer for the previous topic of this run: a burst on one topic asks once.
        let mut last_check: Option<(Bytes, bool)> = None;
        for delivery in deliveries {
            let topic = delivery.message.topic.as_bytes();
            let allowed = match &last_check {
                _ if !check_acl => true,
                Some((checked, allowed)) if checked == topic => *allowed,
                _ => {
                    let allowed = state.client.as_ref().is_none_or(|client| {
                        inner
                            .hooks
                            .acl(client, delivery.message.topic.as_str(), Access::Read)
                    });
                    last_check = Some((topic.clone(), allowed));
                    allowed
                }
            };
            if !allowed {
                continue;
            }
            if waiting {
                parked.push(session, state.epoch, delivery);
                continue;
            }
            if let Some(delivery) = self.place(
                session, &mut state, delivery, admission, now, compacted, dropped,
            ) {
                waiting = true;
                parked.push(session, state.epoch, delivery);
            }
        }
        state.wake_writer();
    }

    /// Offers one delivery to `session`'s queue (its state locked, see [`flow::admit`]): queued
    /// (and mirrored to storage hooks), dropped (to `dropped`, with any message evicted for
    /// it), or handed back to wait for room.
    ///
    /// A message queued for an offline session may wait there for long: it is queued as a copy
    /// that owns its bytes (one per message, kept in `compacted`), so that it does not keep
    /// alive the whole read buffer its topic and payload are slices of.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn place(
        &self,
        session: &Session,
        state: &mut SessionState,
        delivery: Delivery,
        admission: Admission<'_>,
        now: Instant,
        compacted: &mut crate::message::Compacted,
        dropped: &mut Vec<Dropped>,
    ) -> Option<Delivery> {
        let inner = &self.inner;
        let limits = &inner.flow_limits;
        let mut delivery = delivery;
        let offline = state.connection.is_none();
        if offline
            && limits.drop_order == crate::options::DropOrder::Newest
            && !state
                .outbound
                .fits(delivery.message.size(), limits.messages, limits.bytes)
        {
            // An offline session whose queue is full: dropped before any copy is made for it
            // (audit H2), as `flow::admit` would.
            let reason = if delivery.qos == QoS::AtMostOnce && !limits.qos0_offline {
                DropReason::ClientOffline
            } else {
                DropReason::QueueFull
            };
            self.note_dropped(session, state, delivery, reason, now, dropped);
            return None;
        }
        if offline && (delivery.qos > QoS::AtMostOnce || limits.qos0_offline) {
            delivery.compact_with(compacted);
        }
        // A copy for the storage hooks when the session is mirrored (QoS 1/2 only: QoS 0 is
        // not kept across a restart).
        let copy = (state.persist && delivery.qos > QoS::AtMostOnce).then(|| delivery.clone());
        let mut evicted = Vec::new();
        let waits = match flow::admit(state, delivery, admission, limits, now, &mut evicted) {
            Admitted::Queued(seq) => {
                if let Some(mut copy) = copy {
                    copy.seq = seq;
                    let stored = storage::stored_delivery(&session.client_id, &copy);
                    inner.hooks.storage(&StorageEvent::MessageQueued(&stored));
                }
                None
            }
            Admitted::Parked(delivery) => Some(delivery),
            Admitted::Dropped(delivery, reason) => {
                self.note_dropped(session, state, delivery, reason, now, dropped);
                None
            }
        };
        for old in evicted {
            if state.persist && old.qos > QoS::AtMostOnce {
                inner.hooks.storage(&StorageEvent::MessageRemoved {
                    client_id: &session.client_id,
                    seq: old.seq,
                    qos: old.qos,
                });
            }
            self.note_dropped(session, state, old, DropReason::QueueFull, now, dropped);
        }
        waits
    }

    /// Records a message dropped for `session`: reported after the lock (`dropped`), and
    /// logged at a bounded rate per session.
    pub(crate) fn note_dropped(
        &self,
        session: &Session,
        state: &mut SessionState,
        delivery: Delivery,
        reason: DropReason,
        now: Instant,
        dropped: &mut Vec<Dropped>,
    ) {
        if let Some(count) = state.flow.note_drop(now) {
            warn!(
                client_id = %session.client_id,
                ?reason,
                count,
                queued = state.outbound.pending_len(),
                connected = state.connection.is_some(),
                "messages dropped for this client (count since the last such line)"
            );
        }
        dropped.push(Dropped::new(
            session,
            self.drop_subject(state),
            delivery,
            reason,
        ));
    }

    /// Offers a connection's parked deliveries again, each subscriber's in order. Returns `None`
    /// once all are placed; otherwise the connection waits to be woken (by `waiter`), or until
    /// the time returned: the earliest moment a subscriber still full counts as stuck. A
    /// subscriber found stuck here is declared so (see [`Server::declare_stuck`]), and its
    /// deliveries are then placed without waiting.
    pub(crate) fn retry_parked(
        &self,
        parked: &mut Parked,
        waiter: &Arc<HandleShared>,
        now: Instant,
    ) -> Option<Instant> {
        let limits = &self.inner.flow_limits;
        let mut compacted = HashMap::new();
        let mut dropped = Vec::new();
        let mut wake = Vec::new();
        let mut deadline: Option<Instant> = None;
        for mut run in parked.take() {
            let session = run.session.clone();
            let mut state = session.state.lock();
            if state.epoch != run.epoch {
                // The session started clean or ended: the subscriptions these were for are gone.
                state.flow.unwait(waiter);
                continue;
            }
            while let Some(delivery) = run.deliveries.pop_front() {
                let Some(back) = self.place(
                    &session,
                    &mut state,
                    delivery,
                    Admission::Wait(waiter),
                    now,
                    &mut compacted,
                    &mut dropped,
                ) else {
                    continue;
                };
                run.deliveries.push_front(back);
                let reader_waits = state
                    .connection
                    .as_ref()
                    .is_some_and(|connection| connection.reader_waits());
                let at = state
                    .flow
                    .stuck_deadline(limits.slow_timeout, reader_waits)
                    .unwrap_or(now + limits.slow_timeout);
                if now >= at {
                    wake.extend(self.declare_stuck(&session, &mut state, &mut dropped));
                    continue;
                }
                deadline = Some(deadline.map_or(at, |earliest| earliest.min(at)));
                break;
            }
            if run.deliveries.is_empty() {
                state.flow.unwait(waiter);
            }
            state.wake_writer();
            drop(state);
            parked.put_back(run);
        }
        self.report_dropped(dropped);
        flow::wake(wake);
        if parked.is_empty() { None } else { deadline }
    }

    /// Places a connection's parked deliveries without waiting ([`Admission::Final`]): the
    /// connection ends, and what it accepted is not lost.
    pub(crate) fn place_parked(&self, parked: &mut Parked, waiter: &Arc<HandleShared>) {
        let mut compacted = HashMap::new();
        let mut dropped = Vec::new();
        let now = Instant::now();
        for run in parked.take() {
            let session = run.session;
            let mut state = session.state.lock();
            state.flow.unwait(waiter);
            if state.epoch != run.epoch {
                continue;
            }
            for delivery in run.deliveries {
                self.place(
                    &session,
                    &mut state,
                    delivery,
                    Admission::Final,
                    now,
                    &mut compacted,
                    &mut dropped,
                );
            }
            state.wake_writer();
        }
        self.report_dropped(dropped);
    }

    /// Declares a connected subscriber stuck: its queue is full and its writer took nothing
    /// from it for `slow_subscriber_timeout` while publishers waited. Nobody waits for it from
    /// now on; by policy it is disconnected (v5: DISCONNECT 0x97 Quota exceeded) or skipped (its
    /// queued QoS 0 messages dropped). Returns the waiters to wake.
    pub(crate) fn declare_stuck(
        &self,
        session: &Session,
        state: &mut SessionState,
        dropped: &mut Vec<Dropped>,
    ) -> Vec<Arc<HandleShared>> {
        let limits = &self.inner.flow_limits;
        sys::add(&self.inner.info.slow_subscribers, 1);
        let waiters = state.flow.declare_stuck();
        warn!(
            client_id = %session.client_id,
            queued = state.outbound.pending_len(),
            in_flight = state.outbound.inflight_len(),
            timeout_secs = limits.slow_timeout.as_secs(),
            policy = ?limits.slow_policy,
            "subscriber took nothing from its full queue within the slow-subscriber timeout: stuck"
        );
        match limits.slow_policy {
            SlowSubscriberPolicy::Disconnect => {
                if let Some(connection) = &state.connection {
                    let how = if state.protocol.is_v5() {
                        Close::Disconnect(ReasonCode::QUOTA_EXCEEDED)
                    } else {
                        Close::Silent
                    };
                    connection.close(how);
                }
            }
            SlowSubscriberPolicy::Skip => {
                for delivery in state.outbound.drop_qos0() {
                    dropped.push(Dropped::new(
                        session,
                        self.drop_subject(state),
                        delivery,
                        DropReason::SubscriberStuck,
                    ));
                }
            }
        }
        waiters
    }

    /// Counts and reports the deliveries a queue refused.
    /// The client a drop report names, when an `on_publish_dropped` hook will see it (a
    /// reference count otherwise not taken per dropped message).
    pub(crate) fn drop_subject(&self, state: &SessionState) -> Option<Arc<ClientInfo>> {
        if self.inner.hooks.provides(HookEvents::ON_PUBLISH_DROPPED) {
            state.client.clone()
        } else {
            None
        }
    }

    pub(crate) fn report_dropped(&self, dropped: Vec<Dropped>) {
        let hooked = self.inner.hooks.provides(HookEvents::ON_PUBLISH_DROPPED);
        for Dropped {
            client_id,
            client,
            delivery,
            reason,
        } in dropped
        {
            if hooked {
                let publish = delivery.to_publish(None, false, Instant::now());
                let client = client.unwrap_or_else(|| Arc::new(ClientInfo::unknown(client_id)));
                self.dropped(&client, &publish, reason);
            } else {
                // Counted and logged without building the PUBLISH no hook would see.
                self.count_dropped(&client_id, delivery.message.topic.as_str(), reason);
            }
        }
    }

    pub(crate) fn count_dropped(&self, client_id: &str, topic: &str, reason: DropReason) {
        sys::add(&self.inner.info.messages_dropped, 1);
        if let Some(counter) = self
            .inner
            .info
            .messages_dropped_by_reason
            .get(sys::drop_index(reason))
        {
            sys::add(counter, 1);
        }
        debug!(client_id, topic, ?reason, "message dropped");
    }

    pub(crate) fn dropped(&self, client: &ClientInfo, publish: &Publish, reason: DropReason) {
        self.count_dropped(&client.client_id, publish.topic.as_str(), reason);
        for hook in self.inner.hooks.with(HookEvents::ON_PUBLISH_DROPPED) {
            hook.on_publish_dropped(client, publish, reason);
        }
    }

    /// Offers the unacknowledged QoS 0/1 messages of a shared-subscription member whose session
    /// ended to another member of the same group (§4.8.2: SHOULD for QoS 1). If the group has no
    /// member left, the messages are dropped with it.
    pub(crate) fn reroute_shared(&self, orphans: Vec<Delivery>) {
        if orphans.is_empty() {
            return;
        }
        let maximum_qos = self.inner.options.capabilities.maximum_qos;
        let mut staged = Staged::default();
        for orphan in orphans {
            let Some(group) = &orphan.shared else {
                continue;
            };
            let message = &orphan.message;
            let matches = self.inner.trie.matches(
                &message.topic,
                message.publisher.as_deref(),
                &|_, entry| entry.session.is_connected() || entry.session.inline_sink.is_some(),
            );
            let Some(member) = matches
                .shared()
                .iter()
                .find(|shared| shared.group == *group)
            else {
                sys::add(&self.inner.info.messages_dropped, 1);
                continue;
            };
            staged.push(
                &member.subscription.session,
                super::publish::member_delivery(message, member, maximum_qos),
            );
        }
        self.deliver(&mut staged);
    }

    pub(crate) fn qos_dropped(&self, client: &ClientInfo, ids: Vec<u16>) {
        for id in ids {
            for hook in self.inner.hooks.with(HookEvents::ON_QOS_DROPPED) {
                hook.on_qos_dropped(client, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mqtt_packets::Protocol;

    use super::*;
    use std::time::Duration;

    use crate::Options;
    use crate::session::ConnectionHandle;

    fn connected(id: &str) -> Arc<Session> {
        let session = Arc::new(Session::new(id.into(), Protocol::V5));
        session.state.lock().connection = Some(ConnectionHandle::new(1));
        session
    }

    fn server(online: usize) -> Server {
        let mut options = Options::default();
        options.capabilities.maximum_client_writes_pending = online;
        Server::new(options)
    }

    /// A read fanning out to a full subscriber and to one with room: the one with room gets
    /// everything at once; only the full one's deliveries wait, in order, and they are placed
    /// once its writer made room.
    #[test]
    fn a_read_waits_only_on_the_full_subscriber() {
        let server = server(4);
        let full = connected("full");
        let free = connected("free");
        server.enqueue(&full, (0..4).map(Delivery::for_test).collect());
        let mut staged = Staged::default();
        for seq in 0..3 {
            staged.push(&full, Delivery::for_test(seq));
            staged.push(&free, Delivery::for_test(seq));
        }
        let waiter = Arc::new(HandleShared::default());
        let mut parked = Parked::default();
        server.deliver_from_read(&mut staged, &waiter, &mut parked);
        assert_eq!(free.state.lock().outbound.pending_len(), 3);
        assert_eq!(full.state.lock().outbound.pending_len(), 4);
        let runs = parked.take();
        assert_eq!(runs.len(), 1);
        assert!(Arc::ptr_eq(&runs[0].session, &full));
        assert_eq!(runs[0].deliveries.len(), 3);
        for run in runs {
            parked.put_back(run);
        }

        let now = Instant::now();
        assert!(
            server.retry_parked(&mut parked, &waiter, now).is_some(),
            "still full: wait"
        );
        // The writer takes one: still over half full, nobody is woken.
        let limits = server.inner.flow_limits;
        let take = |count: usize| {
            let mut guard = full.state.lock();
            let state = &mut *guard;
            state
                .outbound
                .next_batch(now, 10, usize::MAX, count, &mut Vec::new(), &mut Vec::new());
            state.flow.room_made(&state.outbound, &limits)
        };
        assert!(take(1).is_empty());
        // Then the whole queue: the waiter is woken, and everything parked fits.
        let woken = take(3);
        assert_eq!(woken.len(), 1);
        assert!(Arc::ptr_eq(&woken[0], &waiter));
        assert_eq!(server.retry_parked(&mut parked, &waiter, now), None);
        assert!(parked.is_empty());
        assert_eq!(full.state.lock().outbound.pending_len(), 3);
        assert_eq!(server.info().snapshot().messages_dropped, 0);
    }

    /// A subscriber whose writer takes nothing for the slow-subscriber timeout is declared stuck
    /// by the waiting publisher, which then goes on: by default the subscriber is disconnected
    /// with 0x97.
    #[test]
    fn a_subscriber_without_progress_is_declared_stuck_after_the_timeout() {
        let server = server(2);
        let full = connected("full");
        server.enqueue(&full, vec![Delivery::for_test(0), Delivery::for_test(1)]);
        let mut staged = Staged::default();
        staged.push(&full, Delivery::for_test(2));
        let waiter = Arc::new(HandleShared::default());
        let mut parked = Parked::default();
        server.deliver_from_read(&mut staged, &waiter, &mut parked);
        let start = Instant::now();
        let timeout = server.inner.flow_limits.slow_timeout;
        let deadline = server
            .retry_parked(&mut parked, &waiter, start)
            .expect("waits");
        assert!(deadline >= start + timeout - Duration::from_millis(100));
        assert!(
            server
                .retry_parked(&mut parked, &waiter, deadline - Duration::from_millis(1))
                .is_some(),
            "not before the deadline"
        );
        assert_eq!(server.retry_parked(&mut parked, &waiter, deadline), None);
        assert_eq!(server.info().snapshot().slow_subscribers, 1);
        let close = full
            .state
            .lock()
            .connection
            .as_ref()
            .and_then(|connection| connection.close.lock().clone());
        assert_eq!(close, Some(Close::Disconnect(ReasonCode::QUOTA_EXCEEDED)));
        // Nobody waits for it now: its QoS 0 is dropped, counted as `subscriber_stuck`.
        assert_eq!(server.info().snapshot().messages_dropped_by_reason[5], 1);
    }
}
