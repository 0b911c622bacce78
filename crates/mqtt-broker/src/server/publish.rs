//! The publish pipeline: validation, ACL and hooks, retained messages, and routing a message
//! to the sessions whose subscriptions match it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use mqtt_packets::{Publish, QoS, ReasonCode, Will};
use mqtt_topics::{ClientId, SharedMatch, validate_topic_name};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Server;
use crate::ClientInfo;
use crate::hooks::{Access, HookEvents, PublishDecision, RetainChange};
use crate::message::{Delivery, Message};
use crate::session::SubscriptionEntry;
use crate::staged::{LastRoute, Staged};
use crate::storage::{self, StorageEvent};
use crate::sys::{self};
use crate::timers::TimerEvent;

/// What became of an inbound PUBLISH, for its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishOutcome {
    /// Delivered to this many subscriptions (0 means 0x10 No matching subscribers for v5).
    Delivered(usize),
    /// A hook asked to acknowledge without delivering.
    Ignored,
    /// Delivered, but not retained: the retained limits were reached (0x97 Quota exceeded for
    /// a v5 QoS 1/2 publisher).
    NotRetained,
    /// Refused with this code.
    Refused(ReasonCode),
}

impl Server {
    /// Runs an inbound PUBLISH through checks and hooks, retains it, and delivers it.
    pub(crate) fn publish_from(&self, client: &ClientInfo, publish: Publish) -> PublishOutcome {
        let mut staged = Staged::default();
        let outcome = self.publish_staged(client, publish, &mut staged);
        self.deliver(&mut staged);
        outcome
    }

    /// [`Server::publish_from`], leaving the deliveries in `staged` for [`Server::deliver`]: a
    /// connection stages everything it decoded from one read, so that each subscriber's queue is
    /// locked (and its writer woken) once per read instead of once per message.
    pub(crate) fn publish_staged(
        &self,
        client: &ClientInfo,
        publish: Publish,
        staged: &mut Staged,
    ) -> PublishOutcome {
        let inner = &self.inner;
        let caps = &inner.options.capabilities;
        {
            // One `&str` view: each `Deref` of an `MqttString` re-checks its UTF-8.
            let topic = publish.topic.as_str();
            if validate_topic_name(topic, &caps.topic_rules).is_err() {
                return PublishOutcome::Refused(ReasonCode::TOPIC_NAME_INVALID);
            }
            // `$` topics belong to the server (§4.7.2 advises keeping clients from using them to
            // talk to each other): only the inline client publishes there.
            if !client.inline && topic.starts_with('$') {
                return PublishOutcome::Refused(ReasonCode::NOT_AUTHORIZED);
            }
            if !inner.hooks.acl(client, topic, Access::Write) {
                return PublishOutcome::Refused(ReasonCode::NOT_AUTHORIZED);
            }
        }
        let mut publish = publish;
        if inner.hooks.provides(HookEvents::ON_PUBLISH) {
            for hook in inner.hooks.with(HookEvents::ON_PUBLISH) {
                match hook.on_publish(client, publish) {
                    PublishDecision::Continue(next) => publish = next,
                    PublishDecision::Ignore => return PublishOutcome::Ignored,
                    PublishDecision::Reject(code) => return PublishOutcome::Refused(code),
                }
            }
        }
        let now = Instant::now();
        let expiry = match (
            publish.properties.message_expiry_interval,
            caps.maximum_message_expiry_interval,
        ) {
            (Some(own), Some(cap)) => Some(own.min(cap)),
            (own, cap) => own.or(cap),
        };
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        properties.message_expiry_interval = None;
        let message = Arc::new(Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos.min(caps.maximum_qos),
            retain: publish.retain,
            properties_size: crate::message::properties_size(&properties),
            properties,
            publisher: if client.inline {
                None
            } else {
                Some(client.client_id.clone())
            },
            expires_at: expiry.map(|seconds| now + Duration::from_secs(u64::from(seconds))),
        });
        let retained = !message.retain || self.retain(client, &message);
        let delivered = self.route(&message, now, staged);
        if inner.hooks.provides(HookEvents::ON_PUBLISHED) {
            let published = Delivery {
                message: message.clone(),
                qos: message.qos,
                retain: message.retain,
                subscription_identifiers: Vec::new(),
                shared: None,
                seq: 0,
            }
            .to_publish(None, false, now);
            for hook in inner.hooks.with(HookEvents::ON_PUBLISHED) {
                hook.on_published(client, &published);
            }
        }
        if !retained {
            // Delivered, but not kept as the retained message: a v5 publisher is told.
            return PublishOutcome::NotRetained;
        }
        PublishOutcome::Delivered(delivered)
    }

    /// Sets or clears the retained message of the topic [MQTT-3.3.1-5] [MQTT-3.3.1-6].
    /// `false` when the message was beyond the retained limits and is not retained.
    pub(crate) fn retain(&self, client: &ClientInfo, message: &Arc<Message>) -> bool {
        let inner = &self.inner;
        // The counter reports the clients' retained messages, not the server's own `$SYS` ones.
        let counted = u64::from(!message.topic.as_bytes().starts_with(b"$"));
        let change = if message.payload.is_empty() {
            // An empty payload clears, and is never stored [MQTT-3.3.1-7].
            if inner.remove_retained(&message.topic).is_some() {
                sys::sub(&inner.info.retained, counted);
                if counted == 1 {
                    inner.hooks.storage(&StorageEvent::RetainedCleared {
                        topic: message.topic.as_str(),
                    });
                }
                RetainChange::Cleared
            } else {
                RetainChange::NothingToClear
            }
        } else if !inner.retained_fits(message) {
            // Beyond the retained limits: delivered, not retained (audit M6).
            warn!(topic = %message.topic, retained = inner.retained.len(), "retained limit reached; message not retained");
            sys::add(&inner.info.limits_exceeded, 1);
            return false;
        } else {
            // A compact copy: the retained message may live for days, and a slice would keep the
            // whole read buffer it came from alive.
            let compact = Arc::new(message.compact());
            if let Some(at) = compact.expires_at {
                // Removed when it expires, not only when a subscriber finds it expired.
                inner.timers.schedule(
                    at,
                    TimerEvent::RetainedExpiry {
                        topic: ClientId::from(message.topic.as_str()),
                    },
                );
            }
            if counted == 1 && inner.hooks.provides(HookEvents::ON_STORAGE_EVENT) {
                let stored = storage::stored_retained(&compact);
                inner.hooks.storage(&StorageEvent::RetainedSet(&stored));
            }
            if inner.set_retained(&message.topic, compact).is_none() {
                sys::add(&inner.info.retained, counted);
            }
            RetainChange::Set
        };
        if inner.hooks.provides(HookEvents::ON_RETAIN_MESSAGE) {
            let publish = Delivery {
                message: message.clone(),
                qos: message.qos,
                retain: true,
                subscription_identifiers: Vec::new(),
                shared: None,
                seq: 0,
            }
            .to_publish(None, false, Instant::now());
            for hook in inner.hooks.with(HookEvents::ON_RETAIN_MESSAGE) {
                hook.on_retain_message(client, &publish, change);
            }
        }
        true
    }

    /// Delivers a message to every matching subscription: each non-shared subscriber once at the
    /// highest matching QoS with all its subscription identifiers [MQTT-3.3.4-2]
    /// [MQTT-3.3.4-4], and one member of each shared group. Returns the number of deliveries.
    ///
    /// The matches of the previous message staged are reused when it had the same topic and
    /// no subscription changed since (the trie's generation): a burst on one topic looks the
    /// trie up once. Matches with a shared group are not kept, as each message chooses its member.
    pub(crate) fn route(&self, message: &Arc<Message>, now: Instant, staged: &mut Staged) -> usize {
        let inner = &self.inner;
        let publisher = message.publisher.as_deref();
        // Taken for the call, so that the deliveries can be staged while its matches are read.
        let mut last_route = staged.take_last_route();
        // Read before matching: a change during the lookup then fails the next comparison.
        let generation = inner.trie.generation();
        let fresh;
        let matches = match &mut last_route {
            Some(last) if last.generation == generation && last.topic == message.topic => {
                &last.matches
            }
            _ => {
                let matches = inner.trie.matches(&message.topic, publisher, &|_, entry| {
                    entry.session.is_connected() || entry.session.inline_sink.is_some()
                });
                if matches.shared().is_empty() {
                    &last_route
                        .insert(LastRoute {
                            topic: message.topic.clone(),
                            generation,
                            matches,
                        })
                        .matches
                } else {
                    last_route = None;
                    fresh = matches;
                    &fresh
                }
            }
        };
        if matches.is_empty() {
            staged.set_last_route(last_route);
            return 0;
        }
        let maximum_qos = inner.options.capabilities.maximum_qos;
        let mut selected: Option<Vec<ClientId>> = None;
        if inner.hooks.provides(HookEvents::ON_SELECT_SUBSCRIBERS) {
            let mut clients: Vec<ClientId> = matches
                .clients()
                .map(|client| client.client_id().clone())
                .collect();
            clients.extend(
                matches
                    .shared()
                    .iter()
                    .map(|shared| shared.client_id.clone()),
            );
            let publish = Delivery {
                message: message.clone(),
                qos: message.qos,
                retain: message.retain,
                subscription_identifiers: Vec::new(),
                shared: None,
                seq: 0,
            }
            .to_publish(None, false, now);
            for hook in inner.hooks.with(HookEvents::ON_SELECT_SUBSCRIBERS) {
                hook.on_select_subscribers(&publish, &mut clients);
            }
            selected = Some(clients);
        }
        let chosen = |client_id: &ClientId| {
            selected
                .as_ref()
                .is_none_or(|list| list.contains(client_id))
        };
        let mut delivered = 0;
        for client in matches.clients() {
            if !chosen(client.client_id()) {
                continue;
            }
            let mut qos: Option<QoS> = None;
            let mut retain_as_published = false;
            let mut identifiers: Vec<NonZeroU32> = Vec::new();
            let mut session = None;
            for entry in client.subscriptions() {
                // No Local [MQTT-3.8.3-3].
                if entry.options.no_local && publisher == Some(&**client.client_id()) {
                    continue;
                }
                qos = Some(qos.map_or(entry.options.maximum_qos, |q| {
                    q.max(entry.options.maximum_qos)
                }));
                retain_as_published |= entry.options.retain_as_published;
                identifiers.extend(entry.identifier);
                session.get_or_insert(&entry.session);
            }
            let (Some(qos), Some(session)) = (qos, session) else {
                continue;
            };
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(qos).min(maximum_qos),
                // Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13].
                retain: retain_as_published && message.retain,
                subscription_identifiers: identifiers,
                shared: None,
                seq: 0,
            };
            staged.push(session, delivery);
            delivered += 1;
        }
        for shared in matches.shared() {
            if !chosen(&shared.client_id) {
                continue;
            }
            staged.push(
                &shared.subscription.session,
                member_delivery(message, shared, maximum_qos),
            );
            delivered += 1;
        }
        staged.set_last_route(last_route);
        delivered
    }

    /// Publishes a Will (after `on_will`), as its client [MQTT-3.1.2-8].
    pub(crate) fn publish_will(&self, client: &ClientInfo, will: Box<Will>) {
        let mut will = Some(*will);
        for hook in self.inner.hooks.with(HookEvents::ON_WILL) {
            will = will.and_then(|will| hook.on_will(client, will));
        }
        let Some(will) = will else { return };
        let mut properties = mqtt_packets::PublishProperties {
            payload_format_indicator: will.properties.payload_format_indicator,
            message_expiry_interval: will.properties.message_expiry_interval,
            content_type: will.properties.content_type,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            ..mqtt_packets::PublishProperties::default()
        };
        // User Properties keep their order [MQTT-3.1.3-10].
        properties.user_properties = will.properties.user_properties;
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            payload: will.payload,
            properties,
        };
        debug!(client_id = %client.client_id, topic = %publish.topic, "publishing will");
        let sent = publish.clone();
        if let PublishOutcome::Refused(code) = self.publish_from(client, publish) {
            debug!(client_id = %client.client_id, %code, "will refused");
            return;
        }
        for hook in self.inner.hooks.with(HookEvents::ON_WILL_SENT) {
            hook.on_will_sent(client, &sent);
        }
    }
}

/// The delivery of `message` to the member of a shared subscription chosen for it: the member's
/// own QoS and identifier [MQTT-4.8.2-3].
pub(crate) fn member_delivery(
    message: &Arc<Message>,
    member: &SharedMatch<SubscriptionEntry>,
    maximum_qos: QoS,
) -> Delivery {
    let entry = &member.subscription;
    Delivery {
        message: message.clone(),
        qos: message.qos.min(entry.options.maximum_qos).min(maximum_qos),
        retain: entry.options.retain_as_published && message.retain,
        subscription_identifiers: entry.identifier.into_iter().collect(),
        shared: Some(member.group.clone()),
        seq: 0,
    }
}
