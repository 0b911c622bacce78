//! SUBSCRIBE and UNSUBSCRIBE processing, shared by connections and `Server::inject_packet`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mqtt_packets::{QoS, ReasonCode, RetainHandling, Subscribe, Unsubscribe};
use mqtt_topics::{TopicError, parse_filter};
use tokio::time::Instant;

use crate::close::Violation;
use crate::flow::RetainedCursor;
use crate::hooks::{Access, HookEvents};
use crate::message::{Delivery, Message};
use crate::session::{Session, SubscriptionEntry};
use crate::storage::{StorageEvent, StoredSubscription};
use crate::sys;
use crate::{ClientInfo, Server};

/// The answer to a SUBSCRIBE: the SUBACK codes, or a reason to end the connection (v5 features
/// the server has disabled, No Local on a shared subscription).
pub(crate) type SubscribeResult = Result<Vec<ReasonCode>, Violation>;

/// Applies a SUBSCRIBE to the session: each filter in turn [MQTT-3.8.4-5]; returns one code per
/// filter [MQTT-3.8.4-6] and queues the retained messages Retain Handling allows.
pub(crate) fn subscribe(
    server: &Server,
    session: &Arc<Session>,
    client: &ClientInfo,
    subscribe: Subscribe,
    acknowledge: impl FnOnce(&[ReasonCode]),
) -> SubscribeResult {
    let inner = &server.inner;
    let caps = &inner.options.capabilities;
    let subscribe = rewritten_by_hooks(server, client, subscribe);
    let v5 = client.protocol.is_v5();
    let identifier = subscribe.properties.subscription_identifier;
    if identifier.is_some() && !caps.subscription_identifiers_available {
        return Err(Violation::SubscriptionIdentifiersNotSupported);
    }
    let rules = caps.effective_topic_rules();
    // A clean start by another connection while this SUBSCRIBE runs ends the session it was
    // sent in: its filters must not land in the new one (audit L3).
    let epoch = session.state.lock().epoch;
    let mut codes = Vec::with_capacity(subscribe.subscriptions.len());
    let mut retained = Vec::new();
    for subscription in &subscribe.subscriptions {
        let filter = subscription.filter.as_str();
        let parsed = match parse_filter(filter, &rules) {
            Ok(parsed) => parsed,
            // A disabled feature is a protocol error for v5 clients (§3.2.2.3.11-13).
            Err(TopicError::SharedSubscriptionsNotSupported) if v5 => {
                return Err(Violation::SharedSubscriptionsNotSupported);
            }
            Err(TopicError::WildcardSubscriptionsNotSupported) if v5 => {
                return Err(Violation::WildcardSubscriptionsNotSupported);
            }
            Err(error) => {
                codes.push(error.reason_code());
                continue;
            }
        };
        let mut options = subscription.options;
        if parsed.is_shared() && options.no_local {
            // [MQTT-3.8.3-4]
            return Err(Violation::NoLocalOnSharedSubscription);
        }
        if !inner.hooks.acl(client, filter, Access::Read) {
            codes.push(if caps.compatibilities.obscure_not_authorized {
                ReasonCode::UNSPECIFIED_ERROR
            } else {
                ReasonCode::NOT_AUTHORIZED
            });
            continue;
        }
        options.maximum_qos = options.maximum_qos.min(caps.maximum_qos);
        let entry = SubscriptionEntry {
            options,
            identifier,
            session: session.clone(),
        };
        let existed = {
            // The trie changes under the session's lock (the lock order is session, then trie),
            // so that a takeover that clears the session either comes before (and the filter is
            // refused here) or after (and removes it).
            let mut state = session.state.lock();
            if state.epoch != epoch {
                codes.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            if state.subscriptions.len() >= caps.maximum_subscriptions_per_client
                && !state.subscriptions.contains_key(filter)
            {
                tracing::warn!(client_id = %client.client_id, filter, "maximum_subscriptions_per_client reached; filter refused");
                sys::add(&inner.info.limits_exceeded, 1);
                codes.push(ReasonCode::QUOTA_EXCEEDED);
                continue;
            }
            let existed = match inner.trie.insert(&session.client_id, filter, entry) {
                Ok(previous) => previous.is_some(),
                Err(error) => {
                    codes.push(error.reason_code());
                    continue;
                }
            };
            if !existed {
                sys::add(&inner.info.subscriptions, 1);
            }
            state
                .subscriptions
                .insert(filter.to_string(), (options, identifier));
            // Under the session lock, so that it cannot land after a takeover ended the session.
            if state.persist {
                let mut stored =
                    StoredSubscription::new(session.client_id.as_ref(), filter, options);
                stored.identifier = identifier.map(NonZeroU32::get);
                inner.hooks.storage(&StorageEvent::Subscribed(&stored));
            }
            existed
        };
        codes.push(ReasonCode::granted(options.maximum_qos));
        // Retained messages: never for shared subscriptions (§4.8.2); by Retain Handling
        // otherwise [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11].
        let send_retained = !parsed.is_shared()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNewSubscription => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            retained.push((filter.to_string(), options.maximum_qos));
        }
    }
    // The SUBACK goes out before the retained messages it triggers.
    acknowledge(&codes);
    if !retained.is_empty() {
        queue_retained(server, session, client, retained, identifier);
    }
    for hook in inner.hooks.with(HookEvents::ON_SUBSCRIBED) {
        hook.on_subscribed(client, &subscribe, &codes);
    }
    Ok(codes)
}

/// The SUBSCRIBE as the `on_subscribe` hooks rewrite it. One code per filter the client sent
/// [MQTT-3.8.4-6]: a hook may rewrite filters but not change how many there are.
fn rewritten_by_hooks(server: &Server, client: &ClientInfo, subscribe: Subscribe) -> Subscribe {
    let hooks = &server.inner.hooks;
    if !hooks.provides(HookEvents::ON_SUBSCRIBE) {
        return subscribe;
    }
    let filters = subscribe.subscriptions.len();
    let original = subscribe.clone();
    let mut subscribe = subscribe;
    for hook in hooks.with(HookEvents::ON_SUBSCRIBE) {
        subscribe = hook.on_subscribe(client, subscribe);
    }
    if subscribe.subscriptions.len() != filters {
        tracing::warn!(client_id = %client.client_id, "on_subscribe changed the number of filters; ignored");
        return original;
    }
    subscribe
}

/// Queues the retained messages of new subscriptions (filter, granted QoS): at once for the
/// inline client; otherwise as cursors the subscriber's writer streams as its queue drains (see
/// [`send_retained`]).
fn queue_retained(
    server: &Server,
    session: &Arc<Session>,
    client: &ClientInfo,
    retained: Vec<(String, QoS)>,
    identifier: Option<NonZeroU32>,
) {
    if session.inline_sink.is_some() {
        // The host program's subscription: straight into its channel.
        let now = Instant::now();
        for (filter, granted) in retained {
            for (topic, message) in server.inner.retained.matching(&filter) {
                if let Some(delivery) =
                    retained_delivery(server, client, &topic, message, granted, identifier, now)
                {
                    server.enqueue(session, vec![delivery]);
                }
            }
        }
        return;
    }
    let mut state = session.state.lock();
    for (filter, granted) in retained {
        // Subscribing again restarts the filter's retained messages: one cursor each.
        state.flow.add_retained(RetainedCursor {
            id: NEXT_CURSOR.fetch_add(1, Ordering::Relaxed),
            filter: filter.into_boxed_str(),
            granted,
            identifier,
            after: None,
        });
    }
    state.wake_writer();
}

/// Tells retained cursors apart (see [`RetainedCursor::id`]).
static NEXT_CURSOR: AtomicU64 = AtomicU64::new(1);

/// Retained messages read from the index per page: one page is queued at a time, as the
/// subscriber's queue drains.
const RETAINED_PAGE: usize = 256;

/// Nodes of the retained index one page may visit (a filter that matches few of many topics
/// takes several short pages rather than one long walk under the index's lock).
const RETAINED_VISITS: usize = 4096;

/// Queues the next page of retained messages for the oldest subscription still waiting for
/// them [MQTT-3.3.1-9]: called by the subscriber's writer while its queue is at most half full,
/// so that every matching retained message is sent, paced by the queue (and behind it by the
/// client's Receive Maximum), without copying them all at once. Returns whether it changed
/// anything (messages queued or a subscription's retained messages finished).
pub(crate) fn send_retained(
    server: &Server,
    session: &Arc<Session>,
    client: &ClientInfo,
    now: Instant,
) -> bool {
    let inner = &server.inner;
    let limits = &inner.flow_limits;
    let (id, filter, after, granted, identifier, room, room_bytes) = {
        let mut state = session.state.lock();
        let room = limits
            .online_messages
            .saturating_sub(state.outbound.pending_len())
            .min(RETAINED_PAGE);
        let room_bytes = limits.bytes.saturating_sub(state.outbound.pending_bytes());
        let Some(cursor) = state.flow.retained().and_then(|cursors| cursors.front()) else {
            return false;
        };
        if room == 0 {
            return false;
        }
        (
            cursor.id,
            cursor.filter.clone(),
            cursor.after.clone(),
            cursor.granted,
            cursor.identifier,
            room,
            room_bytes,
        )
    };
    let page = inner
        .retained
        .matching_page(&filter, after.as_deref(), room, RETAINED_VISITS);
    // Within the queue's byte limit too (a page of large messages is cut, at least one goes):
    // the cursor then stands on the last message taken.
    let mut budget = room_bytes;
    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut last_taken: Option<Arc<str>> = None;
    let mut cut = false;
    for (topic, message) in page.entries {
        let size = message.size();
        if !deliveries.is_empty() && size > budget {
            cut = true;
            break;
        }
        if let Some(delivery) =
            retained_delivery(server, client, &topic, message, granted, identifier, now)
        {
            budget = budget.saturating_sub(size);
            deliveries.push(delivery);
        }
        last_taken = Some(topic);
    }
    let next = match (cut, last_taken) {
        (true, Some(topic)) => Some(topic.to_string()),
        _ => page.resume,
    };
    let mut state = session.state.lock();
    let Some(cursors) = state.flow.retained() else {
        // The session started clean meanwhile.
        return true;
    };
    match cursors.front_mut() {
        // The same cursor at the same place (a writer of an earlier connection may have read
        // this page too).
        Some(cursor) if cursor.id == id && cursor.after == after => match next {
            Some(next) => cursor.after = Some(next),
            None => {
                cursors.pop_front();
                state.flow.retained_done();
            }
        },
        _ => return true,
    }
    drop(state);
    server.enqueue(session, deliveries);
    true
}

/// The delivery of a retained message found for a new subscription, or `None` when it expired
/// (it is then removed) or the client may not read it.
#[allow(clippy::too_many_arguments)]
fn retained_delivery(
    server: &Server,
    client: &ClientInfo,
    topic: &str,
    message: Arc<Message>,
    granted: QoS,
    identifier: Option<NonZeroU32>,
    now: Instant,
) -> Option<Delivery> {
    let inner = &server.inner;
    if message.is_expired(now) {
        if inner.remove_retained(topic).is_some() {
            sys::sub(&inner.info.retained, u64::from(!topic.starts_with('$')));
            if !topic.starts_with('$') {
                inner
                    .hooks
                    .storage(&StorageEvent::RetainedCleared { topic });
            }
            for hook in inner.hooks.with(HookEvents::ON_RETAINED_EXPIRED) {
                hook.on_retained_expired(topic);
            }
        }
        return None;
    }
    if !inner.hooks.acl(client, topic, Access::Read) {
        return None;
    }
    let delivery = Delivery {
        qos: message.qos.min(granted),
        // Retained messages sent at subscribe time carry RETAIN 1 (§3.3.1.3).
        retain: true,
        subscription_identifiers: identifier.into_iter().collect(),
        shared: None,
        seq: 0,
        message,
    };
    if inner.hooks.provides(HookEvents::ON_RETAIN_PUBLISHED) {
        let publish = delivery.to_publish(None, false, now);
        for hook in inner.hooks.with(HookEvents::ON_RETAIN_PUBLISHED) {
            hook.on_retain_published(client, &publish);
        }
    }
    Some(delivery)
}

/// Applies an UNSUBSCRIBE: exact filter comparison [MQTT-3.10.4-1]; 0x00 or 0x11 per filter.
pub(crate) fn unsubscribe(
    server: &Server,
    session: &Arc<Session>,
    client: &ClientInfo,
    unsubscribe: Unsubscribe,
) -> Vec<ReasonCode> {
    let inner = &server.inner;
    let mut unsubscribe = unsubscribe;
    if inner.hooks.provides(HookEvents::ON_UNSUBSCRIBE) {
        let original = unsubscribe.clone();
        for hook in inner.hooks.with(HookEvents::ON_UNSUBSCRIBE) {
            unsubscribe = hook.on_unsubscribe(client, unsubscribe);
        }
        // One code per filter the client sent [MQTT-3.10.4-6].
        if unsubscribe.filters.len() != original.filters.len() {
            tracing::warn!(client_id = %client.client_id, "on_unsubscribe changed the number of filters; ignored");
            unsubscribe = original;
        }
    }
    let codes = unsubscribe
        .filters
        .iter()
        .map(|filter| {
            let persist = {
                let mut state = session.state.lock();
                // Retained messages still to send for it are not sent [MQTT-3.10.4-2].
                state.flow.stop_retained(Some(filter.as_str()));
                state.subscriptions.remove(filter.as_str()).is_some() && state.persist
            };
            if persist {
                inner.hooks.storage(&StorageEvent::Unsubscribed {
                    client_id: &session.client_id,
                    filter: filter.as_str(),
                });
            }
            if inner.trie.remove(&session.client_id, filter).is_some() {
                sys::sub(&inner.info.subscriptions, 1);
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            }
        })
        .collect();
    for hook in inner.hooks.with(HookEvents::ON_UNSUBSCRIBED) {
        hook.on_unsubscribed(client, &unsubscribe);
    }
    codes
}
