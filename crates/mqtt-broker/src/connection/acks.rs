//! Acknowledgements of a read: held until what they acknowledge is placed (and durable, when
//! a storage hook asks for it), then queued for the writer in the order of the packets they answer.

use std::future::Future;
use std::pin::Pin;

use tracing::warn;

use super::Connection;
use super::End;
use super::LINGER;
use crate::close::{ConnectionError, StorageFailure};
use crate::session::{Ack, Control};
use crate::sys;

impl Connection {
    /// Queues PUBACK, PUBREC or PUBCOMP: held until the read is handled, then queued together
    /// (one session lock and one writer wake per read, in the order of the packets they answer),
    /// after storage hooks made what they acknowledge durable when acknowledgements wait for
    /// them.
    pub(super) fn send_ack(&mut self, ack: Ack) {
        self.held.push(ack);
    }

    /// Waits until storage hooks committed what the held acknowledgements acknowledge, then
    /// queues them, in order. `Some` ends the connection: the server is taking it down, or
    /// storage failed (the acknowledgements are not sent, so the client sends again).
    pub(super) async fn release_acks(&mut self) -> Option<End> {
        if self.held.is_empty() {
            return None;
        }
        if !self.hold_acks {
            self.push_held();
            return None;
        }
        let shared = self.handle.shared();
        let timeout = self.server.inner.options.durable_ack_timeout;
        let durable = tokio::select! {
            result = tokio::time::timeout(timeout, self.server.inner.hooks.durable()) => result,
            () = shared.kill.notified() => {
                self.held.clear();
                return Some(End::KILLED);
            }
        };
        let Ok(durable) = durable else {
            // The storage does not answer: the client is closed without its acknowledgements
            // and sends again once it reconnects (audit H5), instead of waiting unread forever.
            self.held.clear();
            warn!(client_id = %self.client.client_id, ?timeout, "storage did not commit in time; closing without acknowledging");
            sys::add(&self.server.inner.info.durable_ack_timeouts, 1);
            return Some(self.fail(ConnectionError::Storage(StorageFailure::Timeout)));
        };
        if let Err(error) = durable {
            self.held.clear();
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
    pub(super) fn push_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut state = self.session.state.lock();
        let current = state
            .connection
            .as_ref()
            .is_some_and(|connection| connection.generation == self.handle.generation);
        if current {
            state.control.extend(self.held.drain(..).map(Control::Ack));
            state.wake_writer();
        } else {
            self.handle
                .unsent
                .lock()
                .extend(self.held.drain(..).map(Control::Ack));
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
        if self.held.is_empty() {
            return;
        }
        if !self.hold_acks {
            self.push_held();
            return;
        }
        match tokio::time::timeout(LINGER, self.server.inner.hooks.durable()).await {
            Ok(Ok(())) => self.push_held(),
            _ => self.held.clear(),
        }
    }
}
