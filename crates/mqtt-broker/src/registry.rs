//! Who holds which session: attaching a connection to its session (creating, resuming or
//! taking it over), under the registry lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mqtt_packets::{Connect, MqttString, PacketId, QoS, ReasonCode, Unsubscribe, Will};
use mqtt_topics::ClientId;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::flow;
use crate::hooks::{DropReason, HookEvents};
use crate::message::Delivery;
use crate::server::Dropped;
use crate::session::{Close, ConnectionHandle, PeerLimits, Session};
use crate::storage::{self, StorageEvent};
use crate::sys;
use crate::{ClientInfo, Server};

/// A session that ended at its expiry.
#[derive(Debug)]
pub(crate) struct Ended {
    /// Its pending Will, published now [MQTT-3.1.2-8].
    pub(crate) will: Option<Box<Will>>,
    /// Its client as of its last connection.
    pub(crate) client: Arc<ClientInfo>,
}

/// What clearing a session leaves to do once the locks are released (see
/// [`Server::after_clear`]): hooks and other sessions are not called under the registry and
/// session locks.
#[derive(Debug, Default)]
pub(crate) struct Cleared {
    /// The session's client as of its last connection.
    client: Option<Arc<ClientInfo>>,
    /// In-flight packet ids of messages dropped with the session.
    dropped_ids: Vec<u16>,
    /// Messages of shared subscriptions, for the other members of their groups.
    orphans: Vec<Delivery>,
    /// The client and the filters it held, for `on_unsubscribed` hooks.
    unsubscribed: Option<(Arc<ClientInfo>, Vec<MqttString>)>,
}

/// A copy of a Will that owns its bytes: a Will is kept for the session's life, and its slices
/// would keep the whole CONNECT frame alive.
pub(crate) fn owned_will(will: &mqtt_packets::Will) -> mqtt_packets::Will {
    use crate::message::owned_string;
    let properties = &will.properties;
    mqtt_packets::Will {
        topic: owned_string(&will.topic),
        payload: bytes::Bytes::copy_from_slice(&will.payload),
        qos: will.qos,
        retain: will.retain,
        properties: mqtt_packets::WillProperties {
            content_type: properties.content_type.as_ref().map(owned_string),
            response_topic: properties.response_topic.as_ref().map(owned_string),
            correlation_data: properties
                .correlation_data
                .as_ref()
                .map(|data| bytes::Bytes::copy_from_slice(data)),
            user_properties: properties.user_properties.compact(),
            ..properties.clone()
        },
    }
}

/// The session, Session Present, and the previous connection's Will to publish now.
pub(crate) type Established = (
    Arc<Session>,
    bool,
    Option<(Arc<ClientInfo>, Box<mqtt_packets::Will>)>,
);

/// Hands a session's subscriptions and queued messages to storage hooks, when the session
/// starts being mirrored while it already holds some (it was resumed by a connection with a
/// Session Expiry Interval after one without).
pub(crate) fn mirror_session(
    inner: &crate::server::Inner,
    client_id: &str,
    state: &crate::session::SessionState,
) {
    for (filter, (options, identifier)) in &state.subscriptions {
        let mut stored =
            crate::storage::StoredSubscription::new(client_id, filter.as_str(), *options);
        stored.identifier = identifier.map(std::num::NonZeroU32::get);
        inner.hooks.storage(&StorageEvent::Subscribed(&stored));
    }
    for delivery in state.outbound.queued() {
        if delivery.qos > QoS::AtMostOnce {
            let stored = crate::storage::stored_delivery(client_id, delivery);
            inner.hooks.storage(&StorageEvent::MessageQueued(&stored));
        }
    }
}

impl Server {
    /// Creates or resumes the session under the registry lock, taking it over from an older
    /// connection if there is one [MQTT-3.1.4-3]. Returns the session, Session Present, and the
    /// old connection's Will when it must be published now.
    pub(crate) fn attach(
        &self,
        client: &Arc<ClientInfo>,
        connect: &Connect,
        expiry: u32,
        handle: ConnectionHandle,
        peer: PeerLimits,
    ) -> Result<Established, ReasonCode> {
        let inner = &self.inner;
        let options = &inner.options;
        // The registry lock is held until the session is attached, so that ending a session
        // (which takes the same lock first) and resuming it cannot interleave.
        let mut sessions = inner.sessions.lock();
        if inner.closing.load(Ordering::SeqCst) {
            return Err(ReasonCode::SERVER_UNAVAILABLE);
        }
        let existing = sessions.get(&client.client_id).cloned();
        let user = client.username.as_deref().unwrap_or("");
        let foreign = existing.as_ref().is_some_and(|session| {
            let state = session.state.lock();
            state.owner().is_some_and(|owner| owner != user)
        });
        if options.bind_sessions_to_identity && foreign {
            // Another identity's session: neither taken over nor resumed (audit H3).
            warn!(client_id = %client.client_id, "session belongs to another user; connection refused");
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        let (session, mut present) = match existing {
            Some(session) => (session, true),
            None if sessions.len() >= options.capabilities.maximum_sessions => {
                warn!(client_id = %client.client_id, sessions = sessions.len(), "maximum_sessions reached; connection refused");
                sys::add(&inner.info.limits_exceeded, 1);
                return Err(if client.protocol.is_v5() {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode::SERVER_UNAVAILABLE
                });
            }
            None => {
                let session = Arc::new(Session::new(client.client_id.clone(), client.protocol));
                sessions.insert(client.client_id.clone(), session.clone());
                sys::add(&inner.info.sessions, 1);
                (session, false)
            }
        };
        let mut old_will = None;
        let mut clear = connect.clean_start;
        let mut state = session.state.lock();
        if let Some(old) = state.connection.take() {
            // Takeover: the old connection gets DISCONNECT 0x8E (v5) and is closed.
            old.close(Close::Disconnect(ReasonCode::SESSION_TAKEN_OVER));
            session.connected.store(false, Ordering::SeqCst);
            sys::sub(&inner.info.clients_connected, 1);
            // The old session ends if its expiry was 0 or the new one starts clean.
            let old_session_ends = state.expiry_interval == 0 || connect.clean_start;
            clear |= old_session_ends;
            let will = state.will.take();
            if let (Some(will), Some(old_client)) = (will, state.client.clone()) {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                if delay == 0 || old_session_ends || !old_client.protocol.is_v5() {
                    old_will = Some((old_client, will));
                }
            }
            info!(client_id = %client.client_id, "session taken over");
        } else if state.will.is_some() {
            // A delayed Will of the previous connection: resumed in time, so it is not sent
            // [MQTT-3.1.3-9]; if the session starts clean, the old session ended now.
            let will = state.will.take();
            if connect.clean_start
                && let (Some(will), Some(old_client)) = (will, state.client.clone())
            {
                old_will = Some((old_client, will));
            }
        }
        let mirrored = inner.hooks.provides(HookEvents::ON_STORAGE_EVENT);
        let persist = mirrored && expiry > 0;
        if state.persist && (clear || !persist) {
            // The stored session ends: it starts clean, or it now ends with its connection.
            state.persist = false;
            inner
                .hooks
                .storage(&crate::storage::StorageEvent::SessionEnded {
                    client_id: &client.client_id,
                });
        }
        let mut ended_subscriptions = None;
        if clear {
            // Clean Start: discard the old session state [MQTT-3.1.2-4].
            present = false;
            ended_subscriptions = self.ending_subscriptions(&state);
            let removed = inner.trie.remove_client(&session.client_id);
            sys::sub(&inner.info.subscriptions, removed as u64);
            state.subscriptions.clear();
            state.inbound_qos2.clear();
            state.outbound.clear();
            state.flow.stop_retained(None);
            // Deliveries parked for the old session's subscriptions are dropped by their
            // connections, which are woken to find out.
            state.epoch += 1;
            crate::flow::wake(state.flow.release_all());
        }
        if !clear
            && state
                .owner()
                .is_some_and(|owner| owner != client.username.as_deref().unwrap_or(""))
        {
            // Resumed by another identity (allowed by `bind_sessions_to_identity = false`):
            // what was queued for the old one is checked against the new one's ACL (audit H3).
            let refused = state.outbound.take_unless(|delivery| {
                inner.hooks.acl(
                    client,
                    delivery.message.topic.as_str(),
                    crate::hooks::Access::Read,
                )
            });
            if !refused.is_empty() {
                info!(client_id = %client.client_id, refused = refused.len(), "queued messages the new user may not read dropped");
            }
        }
        state.flow.attached(Instant::now());
        state.protocol = client.protocol;
        state.expiry_interval = expiry;
        state.client = Some(client.clone());
        state.connection = Some(handle.clone());
        state.last_generation = handle.generation;
        state.peer = peer;
        // Kept for as long as the session: a copy that owns its bytes, not slices of the
        // CONNECT's frame.
        state.will = connect.will.as_ref().map(|will| Box::new(owned_will(will)));
        state.control.clear();
        if persist {
            if !state.persist {
                // Newly mirrored: what the session already holds goes to storage too.
                state.persist = true;
                mirror_session(inner, &client.client_id, &state);
            }
            let stored = crate::storage::stored_client(&client.client_id, &state, false);
            inner.hooks.storage(&StorageEvent::Session(&stored));
        }
        // The attach invariant, kept here and in `detach` only: `connected` mirrors
        // `state.connection.is_some()`, and `clients_connected` counts the attached sessions (a
        // takeover, even while the new connection waits for storage, and the detach at the end
        // subtract it).
        session.connected.store(true, Ordering::SeqCst);
        let connected = inner.info.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        inner
            .info
            .clients_maximum
            .fetch_max(connected, Ordering::Relaxed);
        drop(state);
        drop(sessions);
        self.unsubscribed_at_end(ended_subscriptions);
        Ok((session, present, old_will))
    }
}

/// What [`Server::detach`] decided for a connection that ended.
#[derive(Debug)]
pub(crate) struct Detached {
    /// A Will to publish now.
    pub(crate) will_now: Option<(Box<Will>, Arc<ClientInfo>)>,
    /// The Session Expiry Interval in force.
    pub(crate) expiry: u32,
    /// The delay of a Will left in the session.
    pub(crate) delayed_will: Option<u32>,
    /// Whether the session ended with the connection.
    pub(crate) ended: bool,
}

impl Server {
    /// Detaches the connection of `generation` from its session when it ends, in one critical
    /// section under the registry lock (the lock a resuming CONNECT takes first): the session
    /// either ends here (Session Expiry 0) or is left for a later connection. Returns `None` if a
    /// newer connection already took the session over.
    pub(crate) fn detach(
        &self,
        session: &Arc<Session>,
        generation: u64,
        keep_will: bool,
    ) -> Option<Detached> {
        let inner = &self.inner;
        let mut sessions = inner.sessions.lock();
        let mut state = session.state.lock();
        if state
            .connection
            .as_ref()
            .is_none_or(|connection| connection.generation != generation)
        {
            return None;
        }
        let connection = state.connection.take();
        session.connected.store(false, Ordering::SeqCst);
        sys::sub(&inner.info.clients_connected, 1);
        if !keep_will {
            // DISCONNECT 0x00 discards the Will [MQTT-3.14.4-3].
            state.will = None;
        }
        let expiry = state.expiry_interval;
        let ends = expiry == 0;
        let v5 = state.protocol.is_v5();
        // The Will goes now unless it is delayed and the session outlives the delay
        // [MQTT-3.1.2-8]; 3.x Wills have no delay.
        let immediate = state.will.as_ref().is_some_and(|will| {
            ends || !v5 || will.properties.will_delay_interval.unwrap_or(0) == 0
        });
        let will_now = if immediate {
            state.will.take().zip(state.client.clone())
        } else {
            None
        };
        let delayed_will = state
            .will
            .as_ref()
            .map(|will| will.properties.will_delay_interval.unwrap_or(0).min(expiry));
        // The acks not yet written go to the closing writer (under the state lock, so that a
        // writer that finds the connection gone finds them); resends come back on reconnect.
        if let Some(connection) = connection {
            let mut unsent = connection.unsent.lock();
            for control in state.control.drain(..) {
                if !matches!(control, crate::session::Control::Outgoing(_)) {
                    unsent.push(control);
                }
            }
        }
        state.control.clear();
        // Nobody waits for an offline session: its publishers place their deliveries under the
        // offline limits.
        flow::wake(state.flow.release_all());
        let offline_qos0 = if inner.options.capabilities.queue_qos0_offline {
            Vec::new()
        } else {
            state.outbound.drop_qos0()
        };
        // For the drop report, made once the locks are released: the session may be gone then.
        let client = self.drop_subject(&state);
        if !ends {
            // What stays queued or in flight may wait for long: it must not keep alive the
            // read buffers of the publishers it came from.
            state.outbound.compact();
        }
        let cleared = if ends {
            self.clear_session(&mut sessions, session, &mut state)
        } else {
            if state.persist {
                let stored = storage::stored_client(&session.client_id, &state, true);
                inner.hooks.storage(&StorageEvent::Session(&stored));
            }
            Cleared::default()
        };
        drop(state);
        drop(sessions);
        self.report_dropped(
            offline_qos0
                .into_iter()
                .map(|delivery| {
                    Dropped::new(session, client.clone(), delivery, DropReason::ClientOffline)
                })
                .collect(),
        );
        self.after_clear(&session.client_id, cleared);
        Some(Detached {
            will_now,
            expiry,
            delayed_will,
            ended: ends,
        })
    }

    /// Ends a disconnected session whose expiry came (the connection of `generation` left it):
    /// only if no newer connection resumed it [MQTT-4.1.0-1]. `None` when it did not end.
    pub(crate) fn end_session(&self, session: &Arc<Session>, generation: u64) -> Option<Ended> {
        let inner = &self.inner;
        let mut sessions = inner.sessions.lock();
        let mut state = session.state.lock();
        if state.connection.is_some() || state.last_generation != generation {
            return None;
        }
        // A Will goes out only with the client that set it (never under a stand-in identity).
        let will = state.will.take().filter(|_| state.client.is_some());
        let client = state
            .client
            .clone()
            .unwrap_or_else(|| Arc::new(ClientInfo::unknown(session.client_id.clone())));
        let cleared = self.clear_session(&mut sessions, session, &mut state);
        drop(state);
        drop(sessions);
        self.after_clear(&session.client_id, cleared);
        Some(Ended { will, client })
    }

    /// Empties a session and removes it from the registry and the trie. Called with both locks
    /// held (registry, then session), so no connection can attach meanwhile; what follows from
    /// it for hooks and other sessions is returned, for [`Server::after_clear`] once the locks
    /// are released.
    pub(crate) fn clear_session(
        &self,
        sessions: &mut HashMap<ClientId, Arc<Session>>,
        session: &Arc<Session>,
        state: &mut crate::session::SessionState,
    ) -> Cleared {
        let inner = &self.inner;
        let mut cleared = Cleared {
            client: state.client.clone(),
            unsubscribed: self.ending_subscriptions(state),
            ..Cleared::default()
        };
        if state.persist {
            state.persist = false;
            inner.hooks.storage(&StorageEvent::SessionEnded {
                client_id: &session.client_id,
            });
        }
        cleared.orphans = state.outbound.take_shared();
        flow::wake(state.flow.release_all());
        state.flow.stop_retained(None);
        state.epoch += 1;
        state.subscriptions.clear();
        state.inbound_qos2.clear();
        state.control.clear();
        state.will = None;
        cleared.dropped_ids = state.outbound.clear();
        if sessions
            .get(&session.client_id)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            sessions.remove(&session.client_id);
            sys::sub(&inner.info.sessions, 1);
            let removed = inner.trie.remove_client(&session.client_id);
            sys::sub(&inner.info.subscriptions, removed as u64);
        }
        cleared
    }

    /// After a session was cleared and the locks released: its in-flight ids are reported
    /// dropped, `on_unsubscribed` hooks see the filters it held, and its shared-subscription
    /// messages go to other members of their groups.
    fn after_clear(&self, client_id: &ClientId, cleared: Cleared) {
        if !cleared.dropped_ids.is_empty() && self.inner.hooks.provides(HookEvents::ON_QOS_DROPPED)
        {
            let client = cleared
                .client
                .unwrap_or_else(|| Arc::new(ClientInfo::unknown(client_id.clone())));
            self.qos_dropped(&client, cleared.dropped_ids);
        }
        self.unsubscribed_at_end(cleared.unsubscribed);
        self.reroute_shared(cleared.orphans);
    }

    /// The client and filters of a session whose subscriptions end, for `on_unsubscribed`
    /// hooks (`None` when no hook listens or there are none).
    fn ending_subscriptions(
        &self,
        state: &crate::session::SessionState,
    ) -> Option<(Arc<ClientInfo>, Vec<MqttString>)> {
        if !self.inner.hooks.provides(HookEvents::ON_UNSUBSCRIBED) || state.subscriptions.is_empty()
        {
            return None;
        }
        let filters = state
            .subscriptions
            .keys()
            .filter_map(|filter| MqttString::new(filter.clone()).ok())
            .collect();
        Some((state.client.clone()?, filters))
    }

    /// Runs `on_unsubscribed` hooks for the subscriptions a session held when it ended. Never
    /// under the registry or a session lock.
    fn unsubscribed_at_end(&self, ended: Option<(Arc<ClientInfo>, Vec<MqttString>)>) {
        let Some((client, filters)) = ended else {
            return;
        };
        let Some(packet_id) = PacketId::new(u16::MAX) else {
            return;
        };
        let unsubscribe = Unsubscribe::new(packet_id, filters);
        for hook in self.inner.hooks.with(HookEvents::ON_UNSUBSCRIBED) {
            hook.on_unsubscribed(&client, &unsubscribe);
        }
    }
}
