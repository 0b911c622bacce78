//! Acknowledgements of a read (PUBACK, PUBREC, PUBREL, PUBCOMP): one invariant, kept by
//! [`AckQueue`] and the few methods of [`Connection`] below. An acknowledgement goes out only
//! after what it acknowledges is placed in its subscribers' queues (and durable, when a storage
//! hook asks for that), in the order of the packets it answers [MQTT-4.6.0-2], and before
//! anything that ends the connection.

use std::future::Future;
use std::pin::Pin;

use tracing::warn;

use super::Connection;
use super::End;
use super::LINGER;
use crate::close::{ConnectionError, StorageFailure};
use crate::session::{Ack, Control};
use crate::sys;

/// The acknowledgements of the current read, held until it is handled and then queued
/// together for the writer (one session lock and one writer wake per read).
#[derive(Debug, Default)]
pub(super) struct AckQueue {
    held: Vec<Ack>,
    /// Whether acknowledgements wait for storage hooks' durability
    /// ([`crate::hooks::HookEvents::DURABLE`]).
    durable: bool,
}

impl AckQueue {
    /// A queue whose acknowledgements wait for storage when `durable`.
    pub(super) fn new(durable: bool) -> Self {
        Self {
            held: Vec::new(),
            durable,
        }
    }

    /// Holds an acknowledgement, after those of earlier packets.
    pub(super) fn push(&mut self, ack: Ack) {
        self.held.push(ack);
    }

    /// Whether acknowledgements wait for storage to commit.
    pub(super) fn durable(&self) -> bool {
        self.durable
    }

    /// Whether held acknowledgements wait for storage to commit.
    pub(super) fn waits_for_storage(&self) -> bool {
        self.durable && !self.held.is_empty()
    }

    /// Takes the held acknowledgements, in order.
    fn take(&mut self) -> std::vec::Drain<'_, Ack> {
        self.held.drain(..)
    }

    /// Drops the held acknowledgements: what they acknowledge is not durable, and the client
    /// sends it again.
    fn discard(&mut self) {
        self.held.clear();
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

impl Connection {
    /// Queues PUBACK, PUBREC or PUBCOMP: held until the read is handled, then queued together
    /// (one session lock and one writer wake per read, in the order of the packets they answer),
    /// after storage hooks made what they acknowledge durable when acknowledgements wait for
    /// them.
    pub(super) fn send_ack(&mut self, ack: Ack) {
        self.acks.push(ack);
    }

    /// Queues the held acknowledgements now unless they wait for storage: once what they
    /// acknowledge is placed, and before anything that closes the connection (the writer stops
    /// taking control packets once it closes).
    pub(super) fn release_ready_acks(&mut self) {
        if !self.acks.durable() {
            self.push_held();
        }
    }

    /// Waits until storage hooks committed what the held acknowledgements acknowledge, then
    /// queues them, in order. `Some` ends the connection: the server is taking it down, or
    /// storage failed (the acknowledgements are not sent, so the client sends again).
    pub(super) async fn release_acks(&mut self) -> Option<End> {
        if !self.acks.waits_for_storage() {
            self.push_held();
            return None;
        }
        let shared = self.handle.shared();
        let timeout = self.server.inner.options.durable_ack_timeout;
        let durable = tokio::select! {
            result = tokio::time::timeout(timeout, self.server.inner.hooks.durable()) => result,
            () = shared.kill.notified() => {
                self.acks.discard();
                return Some(End::KILLED);
            }
        };
        let Ok(durable) = durable else {
            // The storage does not answer: the client is closed without its acknowledgements
            // and sends again once it reconnects (audit H5), instead of waiting unread forever.
            self.acks.discard();
            warn!(client_id = %self.client.client_id, ?timeout, "storage did not commit in time; closing without acknowledging");
            sys::add(&self.server.inner.info.durable_ack_timeouts, 1);
            return Some(self.fail(ConnectionError::Storage(StorageFailure::Timeout)));
        };
        if let Err(error) = durable {
            self.acks.discard();
            warn!(client_id = %self.client.client_id, %error, "storage failed; closing without acknowledging");
            sys::add(&self.server.inner.info.hook_errors, 1);
            return Some(self.fail(ConnectionError::Storage(StorageFailure::Failed(
                error.to_string(),
            ))));
        }
        self.push_held();
        None
    }

    /// Queues the held acknowledgements for this connection's writer (also when it is closing).
    fn push_held(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut state = self.session.state.lock();
        let current = state
            .connection
            .as_ref()
            .is_some_and(|connection| connection.generation == self.handle.generation);
        if current {
            state.control.extend(self.acks.take().map(Control::Ack));
            state.wake_writer();
        } else {
            self.handle
                .unsent
                .lock()
                .extend(self.acks.take().map(Control::Ack));
        }
    }

    /// [`Connection::release_acks`] in a box (see [`serve`]): only with a storage hook that
    /// holds acknowledgements.
    pub(super) fn boxed_release_acks(
        &mut self,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.release_acks())
    }

    /// [`Connection::release_acks_on_exit`] in a box (see [`serve`]): it runs once.
    pub(super) fn boxed_release_acks_on_exit(
        &mut self,
    ) -> Pin<Box<impl Future<Output = ()> + Send>> {
        Box::pin(self.release_acks_on_exit())
    }

    /// On the way out: the held acknowledgements still go if storage commits in time.
    pub(super) async fn release_acks_on_exit(&mut self) {
        if !self.acks.waits_for_storage() {
            self.push_held();
            return;
        }
        match tokio::time::timeout(LINGER, self.server.inner.hooks.durable()).await {
            Ok(Ok(())) => self.push_held(),
            _ => self.acks.discard(),
        }
    }
}

#[cfg(test)]
mod tests {
    use mqtt_packets::{PacketId, ReasonCode};

    use super::*;

    fn ack(id: u16) -> Ack {
        Ack::puback(PacketId::new(id).unwrap(), ReasonCode::SUCCESS)
    }

    #[test]
    fn acknowledgements_keep_the_order_of_the_packets_they_answer_mqtt_4_6_0_2() {
        let mut queue = AckQueue::new(false);
        for id in [3, 1, 2] {
            queue.push(ack(id));
        }
        let ids: Vec<u16> = queue.take().map(|ack| ack.packet_id.get()).collect();
        assert_eq!(ids, [3, 1, 2]);
        assert!(queue.is_empty());
    }

    #[test]
    fn only_held_acknowledgements_of_a_durable_queue_wait_for_storage() {
        let mut plain = AckQueue::new(false);
        plain.push(ack(1));
        assert!(!plain.waits_for_storage());
        let mut durable = AckQueue::new(true);
        assert!(!durable.waits_for_storage());
        durable.push(ack(1));
        assert!(durable.waits_for_storage());
        durable.discard();
        assert!(!durable.waits_for_storage());
    }
}
