//! Restoring sessions, subscriptions, queued messages and retained messages from storage
//! hooks at start.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use mqtt_packets::MqttString;
use mqtt_topics::ClientId;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Server;
use crate::hooks::{Access, HookEvents};
use crate::message::{Delivery, Message};
use crate::session::{Session, SubscriptionEntry};
use crate::storage::{self, StorageEvent};
use crate::sys::{self};
use crate::timers::TimerEvent;
use crate::{ClientInfo, ConnectionInfo};

/// A message from storage, with its expiry moved from wall-clock time to the runtime's clock;
/// `None` if it has expired or its topic is invalid.
pub(crate) fn restored_message(
    stored: crate::storage::StoredMessage,
    now: Instant,
    unix_now: u64,
) -> Option<Arc<Message>> {
    let topic = stored.topic;
    // A message whose QoS 2 flow had started is finished whatever its expiry: the client holds
    // its packet id (expiry applies before delivery starts).
    let started = stored.flow != crate::storage::StoredFlow::Queued;
    let expires_at = match stored.expires_at_unix {
        Some(at) if at <= unix_now && started => None,
        Some(at) if at <= unix_now => return None,
        Some(at) => now.checked_add(Duration::from_secs(at - unix_now)),
        None => None,
    };
    Some(Arc::new(Message {
        topic,
        payload: stored.payload,
        qos: stored.qos,
        retain: stored.retain,
        properties_size: crate::message::properties_size(&stored.properties),
        properties: stored.properties,
        publisher: None,
        expires_at,
    }))
}

impl Server {
    /// Restores retained messages, sessions and subscriptions from the first hook that has them.
    pub(crate) fn restore(&self) {
        let inner = &self.inner;
        let now = Instant::now();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        for hook in inner.hooks.with(HookEvents::STORED_RETAINED_MESSAGES) {
            match hook.stored_retained_messages() {
                Ok(messages) if !messages.is_empty() => {
                    for stored in messages {
                        let stored_topic = stored.topic.clone();
                        let Some(message) = restored_message(stored, now, unix_now) else {
                            // Expired while the server was down: the store forgets it too.
                            inner.hooks.storage(&StorageEvent::RetainedCleared {
                                topic: stored_topic.as_str(),
                            });
                            continue;
                        };
                        let topic = message.topic.clone();
                        if let Some(at) = message.expires_at {
                            inner.timers.schedule(
                                at,
                                TimerEvent::RetainedExpiry {
                                    topic: ClientId::from(topic.as_str()),
                                },
                            );
                        }
                        if inner.set_retained(&topic, message).is_none() {
                            sys::add(&inner.info.retained, 1);
                        }
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    sys::add(&inner.info.hook_errors, 1);
                    warn!(%error, "restoring retained messages failed");
                }
            }
        }
        for hook in inner.hooks.with(HookEvents::STORED_CLIENTS) {
            match hook.stored_clients() {
                Ok(clients) if !clients.is_empty() => {
                    for stored in clients {
                        self.restore_session(stored, now, unix_now);
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    sys::add(&inner.info.hook_errors, 1);
                    warn!(%error, "restoring sessions failed");
                }
            }
        }
        for hook in inner.hooks.with(HookEvents::STORED_SUBSCRIPTIONS) {
            match hook.stored_subscriptions() {
                Ok(subscriptions) if !subscriptions.is_empty() => {
                    for stored in subscriptions {
                        let session = inner
                            .sessions
                            .lock()
                            .get(stored.client_id.as_str())
                            .cloned();
                        let Some(session) = session else { continue };
                        let client = session.state.lock().client.clone();
                        // Re-check the ACL: rules may have changed since it was stored. A
                        // subscription no longer allowed is dropped, from the store too.
                        if let Some(client) = &client
                            && !inner.hooks.acl(client, &stored.filter, Access::Read)
                        {
                            info!(client_id = %stored.client_id, filter = %stored.filter, "stored subscription no longer allowed; dropped");
                            inner.hooks.storage(&StorageEvent::Unsubscribed {
                                client_id: &stored.client_id,
                                filter: &stored.filter,
                            });
                            continue;
                        }
                        let identifier = stored.identifier.and_then(NonZeroU32::new);
                        let entry = SubscriptionEntry {
                            options: stored.options,
                            identifier,
                            session: session.clone(),
                        };
                        if let Ok(None) =
                            inner.trie.insert(&session.client_id, &stored.filter, entry)
                        {
                            sys::add(&inner.info.subscriptions, 1);
                        }
                        session
                            .state
                            .lock()
                            .subscriptions
                            .insert(stored.filter, (stored.options, identifier));
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    sys::add(&inner.info.hook_errors, 1);
                    warn!(%error, "restoring subscriptions failed");
                }
            }
        }
        self.restore_queued(now, unix_now);
        if inner
            .options
            .capabilities
            .compatibilities
            .restore_sys_info_on_restart
        {
            for hook in inner.hooks.with(HookEvents::STORED_SYS_INFO) {
                match hook.stored_sys_info() {
                    Ok(Some(stored)) => {
                        sys::add(&inner.info.messages_received, stored.messages_received);
                        sys::add(&inner.info.messages_sent, stored.messages_sent);
                        sys::add(&inner.info.bytes_received, stored.bytes_received);
                        sys::add(&inner.info.bytes_sent, stored.bytes_sent);
                        break;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        sys::add(&inner.info.hook_errors, 1);
                        warn!(%error, "restoring $SYS counters failed");
                    }
                }
            }
        }
    }

    /// Restores one stored session: offline, with its expiry clock (started at its disconnection,
    /// or now if its client was connected when the server stopped), its pending Will (published
    /// after its delay, as if the connection had closed now) and its inbound QoS 2 state.
    pub(crate) fn restore_session(
        &self,
        stored: crate::storage::StoredClient,
        now: Instant,
        unix_now: u64,
    ) {
        let inner = &self.inner;
        if inner
            .sessions
            .lock()
            .contains_key(stored.client_id.as_str())
        {
            return;
        }
        let client_id = ClientId::from(stored.client_id.as_str());
        let rewrite_deadline = stored.expires_at_unix.is_none();
        let expires_in = match stored.expires_at_unix {
            Some(at) if at <= unix_now => {
                // Expired while the server was down.
                info!(client_id = %client_id, "stored session expired while the server was down");
                inner.hooks.storage(&StorageEvent::SessionEnded {
                    client_id: &stored.client_id,
                });
                return;
            }
            Some(at) => Some(at - unix_now),
            None if stored.session_expiry_interval == u32::MAX => None,
            None => Some(u64::from(stored.session_expiry_interval)),
        };
        let session = Arc::new(Session::new(client_id.clone(), stored.protocol));
        let will_delay = {
            let mut state = session.state.lock();
            state.expiry_interval = stored.session_expiry_interval;
            state.persist = true;
            let mut info = ClientInfo::inline(client_id.clone());
            info.inline = false;
            info.protocol = stored.protocol;
            info.clean_start = false;
            info.username = stored.username.and_then(|u| MqttString::new(u).ok());
            info.connection = ConnectionInfo::new("restored", None);
            state.client = Some(Arc::new(info));
            state.inbound_qos2 = stored.inbound_qos2.into_iter().collect();
            state.will = stored.will.map(Box::new);
            if rewrite_deadline && expires_in.is_some() {
                // Its client was connected when the server stopped: the expiry clock starts now,
                // and the record says so (another restart must not restart the clock).
                let record = storage::stored_client(&client_id, &state, true);
                inner.hooks.storage(&StorageEvent::Session(&record));
            }
            state.will.as_ref().map(|will| {
                let delay = if stored.protocol.is_v5() {
                    u64::from(will.properties.will_delay_interval.unwrap_or(0))
                } else {
                    0
                };
                expires_in.map_or(delay, |left| delay.min(left))
            })
        };
        // A restored session expires like any disconnected one (generation 0: no connection has
        // taken it yet).
        if let Some(left) = expires_in {
            inner.timers.schedule(
                now.checked_add(Duration::from_secs(left))
                    .unwrap_or(now + Duration::from_secs(u64::from(u32::MAX))),
                TimerEvent::SessionExpiry {
                    client_id: client_id.clone(),
                    generation: 0,
                },
            );
        }
        if let Some(delay) = will_delay {
            inner.timers.schedule(
                now + Duration::from_secs(delay),
                TimerEvent::WillDelay {
                    client_id: client_id.clone(),
                    generation: 0,
                },
            );
        }
        let mut sessions = inner.sessions.lock();
        if sessions.contains_key(&client_id) {
            // Already there (restored by another hook, or a client was served first): keep it.
            return;
        }
        sessions.insert(client_id, session);
        sys::add(&inner.info.sessions, 1);
    }

    /// Puts stored messages back into their sessions as they stood, in the order the hook gives
    /// them: queued, or in flight with their packet ids (resent with DUP, or as PUBREL, when the
    /// client reconnects [MQTT-4.4.0-1]).
    pub(crate) fn restore_queued(&self, now: Instant, unix_now: u64) {
        let inner = &self.inner;
        for hook in inner.hooks.with(HookEvents::STORED_INFLIGHT_MESSAGES) {
            match hook.stored_inflight_messages() {
                Ok(messages) if !messages.is_empty() => {
                    for stored in messages {
                        let Some(client_id) = stored.client_id.clone() else {
                            continue;
                        };
                        let seq = stored.seq;
                        let session = inner.sessions.lock().get(client_id.as_str()).cloned();
                        let flow = stored.flow;
                        let identifiers: Vec<NonZeroU32> = stored
                            .subscription_identifiers
                            .iter()
                            .filter_map(|&id| NonZeroU32::new(id))
                            .collect();
                        let (qos, retain) = (stored.qos, stored.retain);
                        let message = restored_message(stored, now, unix_now);
                        let (Some(session), Some(message)) = (session, message) else {
                            // Its session is gone, or it expired: the store forgets it.
                            inner.hooks.storage(&StorageEvent::MessageRemoved {
                                client_id: &client_id,
                                seq,
                                qos,
                            });
                            continue;
                        };
                        let delivery = Delivery {
                            qos,
                            retain,
                            subscription_identifiers: identifiers,
                            shared: None,
                            seq,
                            message,
                        };
                        let (packet_id, released) = match flow {
                            crate::storage::StoredFlow::Queued => (None, false),
                            crate::storage::StoredFlow::Published(id) => (Some(id), false),
                            crate::storage::StoredFlow::Released(id) => (Some(id), true),
                        };
                        session
                            .state
                            .lock()
                            .outbound
                            .restore(delivery, packet_id, released);
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    sys::add(&inner.info.hook_errors, 1);
                    warn!(%error, "restoring queued messages failed");
                }
            }
        }
    }
}
