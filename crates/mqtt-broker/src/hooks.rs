//! The hook system: how host programs and plugins observe and steer the broker.
//!
//! A [`Hook`] has a default no-op for every event, so an implementation writes only the methods
//! it cares about and declares them in [`Hook::provides`]; the server skips hooks that do not
//! provide an event, so a hook costs nothing on the paths it does not handle. Hooks run in the
//! order they were added.
//!
//! # Decisions
//!
//! Authentication and ACL hooks answer [`Decision::Allow`], [`Decision::Deny`] or
//! [`Decision::Defer`]. The first hook that does not defer decides; when every hook defers (or
//! there is none) the answer is **deny**. Stacking an allow-all hook after a rule-based one
//! therefore only allows what the rules left undecided.
//!
//! # Waiting on I/O
//!
//! [`Hook::on_connect_authenticate`] is asynchronous: it returns a boxed future, and the
//! connection's own task awaits it, so an authentication hook may query a database or an HTTP
//! service without blocking any other client. Every other method is synchronous and runs on the
//! packet path; hooks that need I/O there (storage, audit logs) must hand the work to their own
//! task through a channel. ACL checks ([`Hook::on_acl_check`]) run per message and must answer
//! from memory; refresh that memory in the background.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use mqtt_packets::{
    Connect, MqttString, Packet, Publish, ReasonCode, Subscribe, Unsubscribe, Will,
};
use parking_lot::RwLock;

use crate::storage::{
    StorageEvent, StoredClient, StoredMessage, StoredSubscription, StoredSysInfo,
};
use crate::sys::SysInfo;
use crate::{ClientInfo, ConnectionError};

/// A boxed future, for the asynchronous hook methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The answer of an authentication or ACL hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allow; later hooks are not asked.
    Allow,
    /// Deny; later hooks are not asked.
    Deny,
    /// No opinion; ask the next hook. If every hook defers, the answer is deny.
    Defer,
}

/// Why [`Hook::on_connect`] refuses a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectRefusal {
    /// The CONNACK reason code.
    pub reason_code: ReasonCode,
    /// For 0x9C / 0x9D: where the client should connect instead (`host[:port]`, several
    /// separated by spaces).
    pub server_reference: Option<String>,
}

impl ConnectRefusal {
    /// Sends the client to another server: 0x9D Server moved when `permanent`, else 0x9C Use
    /// another server (§4.11).
    pub fn redirect(server_reference: impl Into<String>, permanent: bool) -> Self {
        let reason_code = if permanent {
            ReasonCode::SERVER_MOVED
        } else {
            ReasonCode::USE_ANOTHER_SERVER
        };
        Self {
            reason_code,
            server_reference: Some(server_reference.into()),
        }
    }
}

impl From<ReasonCode> for ConnectRefusal {
    fn from(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            server_reference: None,
        }
    }
}

/// Which step of an enhanced authentication exchange a hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStep {
    /// The Authentication Method and Data of CONNECT.
    Connect,
    /// An AUTH 0x18 Continue authentication from the client.
    Continue,
    /// An AUTH 0x19 Re-authenticate from a connected client: a new exchange starts.
    Reauthenticate,
}

/// The answer of [`Hook::on_enhanced_auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// This hook does not implement the method.
    Unsupported,
    /// Send AUTH 0x18 with this Authentication Data and wait for the client's answer.
    Continue(Bytes),
    /// Authenticated.
    Success {
        /// Authentication Data for the client, if any: in CONNACK (or in AUTH 0x00 after a
        /// re-authentication).
        data: Option<Bytes>,
        /// The identity the exchange proved (e.g. the SCRAM user). When set, it is the client's
        /// user name from then on ([`ClientInfo::username`]): the ACL and the session's owner.
        /// A re-authentication that proves another identity ends the connection with 0x87 Not
        /// authorized.
        principal: Option<MqttString>,
    },
    /// Refused with this code: CONNACK (or DISCONNECT after a re-authentication) carries it.
    Fail(ReasonCode),
}

/// What a hook keeps between the steps of one authentication exchange.
pub type AuthState = Option<Box<dyn std::any::Any + Send>>;

/// Whether an ACL check is for reading (delivering to a subscriber, subscribing) or writing
/// (publishing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribing to a filter, or receiving a message on a topic.
    Read,
    /// Publishing to a topic.
    Write,
}

/// What to do with an inbound PUBLISH, from [`Hook::on_publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // The packet moves through the chain by value, unboxed.
pub enum PublishDecision {
    /// Go on with this (possibly modified) packet.
    Continue(Publish),
    /// Acknowledge normally but do not deliver or retain it.
    Ignore,
    /// Refuse it: v5 clients get this code in PUBACK/PUBREC (QoS 1/2); QoS 0 messages and 3.x
    /// clients' messages are dropped after the normal acknowledgement.
    Reject(ReasonCode),
}

/// How a retained message changed, for [`Hook::on_retain_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainChange {
    /// A retained message was stored or replaced.
    Set,
    /// The retained message of the topic was cleared by an empty payload.
    Cleared,
    /// An empty retained payload arrived for a topic that had none.
    NothingToClear,
}

/// Why a message was not delivered, for [`Hook::on_publish_dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The session's queue was full (count or bytes).
    QueueFull,
    /// The message expired before it could be sent.
    Expired,
    /// The encoded packet exceeds the client's Maximum Packet Size [MQTT-3.1.2-25].
    TooLargeForClient,
    /// No packet identifier was free.
    PacketIdsExhausted,
    /// The QoS 0 message arrived while the client was offline.
    ClientOffline,
    /// A QoS 0 message for a connected subscriber declared stuck and skipped
    /// ([`crate::SlowSubscriberPolicy::Skip`]).
    SubscriberStuck,
}

macro_rules! hook_events {
    ($( $(#[$doc:meta])* $name:ident = $bit:literal; )*) => {
        /// A set of hook events, for [`Hook::provides`].
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct HookEvents(u64);

        impl HookEvents {
            $( $(#[$doc])* pub const $name: Self = Self(1 << $bit); )*

            /// No event.
            pub const NONE: Self = Self(0);
            /// Every event.
            pub const ALL: Self = Self(u64::MAX);

            /// Whether every event of `other` is in this set.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// The union of two sets.
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }

        impl fmt::Debug for HookEvents {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut set = f.debug_set();
                $( if self.contains(Self::$name) { set.entry(&stringify!($name)); } )*
                set.finish()
            }
        }
    };
}

hook_events! {
    /// [`Hook::on_started`].
    ON_STARTED = 0;
    /// [`Hook::on_stopped`].
    ON_STOPPED = 1;
    /// [`Hook::on_connect_authenticate`].
    ON_CONNECT_AUTHENTICATE = 2;
    /// [`Hook::on_acl_check`].
    ON_ACL_CHECK = 3;
    /// [`Hook::on_sys_info_tick`].
    ON_SYS_INFO_TICK = 4;
    /// [`Hook::on_connect`].
    ON_CONNECT = 5;
    /// [`Hook::on_session_establish`].
    ON_SESSION_ESTABLISH = 6;
    /// [`Hook::on_session_established`].
    ON_SESSION_ESTABLISHED = 7;
    /// [`Hook::on_disconnect`].
    ON_DISCONNECT = 8;
    /// [`Hook::on_auth_packet`].
    ON_AUTH_PACKET = 9;
    /// [`Hook::on_packet_read`].
    ON_PACKET_READ = 10;
    /// [`Hook::on_packet_encode`].
    ON_PACKET_ENCODE = 11;
    /// [`Hook::on_packet_sent`].
    ON_PACKET_SENT = 12;
    /// [`Hook::on_packet_processed`].
    ON_PACKET_PROCESSED = 13;
    /// [`Hook::on_subscribe`].
    ON_SUBSCRIBE = 14;
    /// [`Hook::on_subscribed`].
    ON_SUBSCRIBED = 15;
    /// [`Hook::on_select_subscribers`].
    ON_SELECT_SUBSCRIBERS = 16;
    /// [`Hook::on_unsubscribe`].
    ON_UNSUBSCRIBE = 17;
    /// [`Hook::on_unsubscribed`].
    ON_UNSUBSCRIBED = 18;
    /// [`Hook::on_publish`].
    ON_PUBLISH = 19;
    /// [`Hook::on_published`].
    ON_PUBLISHED = 20;
    /// [`Hook::on_publish_dropped`].
    ON_PUBLISH_DROPPED = 21;
    /// [`Hook::on_retain_message`].
    ON_RETAIN_MESSAGE = 22;
    /// [`Hook::on_retain_published`].
    ON_RETAIN_PUBLISHED = 23;
    /// [`Hook::on_qos_publish`].
    ON_QOS_PUBLISH = 24;
    /// [`Hook::on_qos_complete`].
    ON_QOS_COMPLETE = 25;
    /// [`Hook::on_qos_dropped`].
    ON_QOS_DROPPED = 26;
    /// [`Hook::on_packet_id_exhausted`].
    ON_PACKET_ID_EXHAUSTED = 27;
    /// [`Hook::on_will`].
    ON_WILL = 28;
    /// [`Hook::on_will_sent`].
    ON_WILL_SENT = 29;
    /// [`Hook::on_client_expired`].
    ON_CLIENT_EXPIRED = 30;
    /// [`Hook::on_retained_expired`].
    ON_RETAINED_EXPIRED = 31;
    /// [`Hook::stored_clients`].
    STORED_CLIENTS = 32;
    /// [`Hook::stored_subscriptions`].
    STORED_SUBSCRIPTIONS = 33;
    /// [`Hook::stored_inflight_messages`].
    STORED_INFLIGHT_MESSAGES = 34;
    /// [`Hook::stored_retained_messages`].
    STORED_RETAINED_MESSAGES = 35;
    /// [`Hook::stored_sys_info`].
    STORED_SYS_INFO = 36;
    /// [`Hook::on_enhanced_auth`].
    ON_ENHANCED_AUTH = 37;
    /// [`Hook::on_storage_event`].
    ON_STORAGE_EVENT = 38;
    /// [`Hook::durable`]: the server holds acknowledgements until it completes.
    DURABLE = 39;
}

impl std::ops::BitOr for HookEvents {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// An error a hook reports from `init` or a `stored_*` method.
#[derive(Debug, thiserror::Error)]
#[error("hook {hook}: {message}")]
pub struct HookError {
    /// The hook's id.
    pub hook: String,
    /// What went wrong.
    pub message: String,
}

impl HookError {
    /// An error of the hook `hook`.
    pub fn new(hook: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            hook: hook.into(),
            message: message.into(),
        }
    }
}

/// An observer and controller of broker events. Every method has a default that does nothing
/// (or defers, or passes its input through); see the [module documentation](self) for how results
/// combine and for which methods may wait on I/O.
#[allow(unused_variables)]
pub trait Hook: Send + Sync + 'static {
    /// A name for logs and errors.
    fn id(&self) -> &str;

    /// The events this hook handles: the server calls no other method. List every method the
    /// hook overrides. Default: none, so a hook costs nothing where it has nothing to say (the
    /// fast paths of the reader and the writer stay on).
    fn provides(&self) -> HookEvents {
        HookEvents::NONE
    }

    /// Called once when the hook is added; an error refuses the hook.
    fn init(&self, options: &crate::Options) -> Result<(), HookError> {
        Ok(())
    }

    /// Called when the server closes.
    fn stop(&self) {}

    /// The server started serving.
    fn on_started(&self) {}

    /// The server stopped.
    fn on_stopped(&self) {}

    /// May this client connect? Awaited on the connection's own task, so it may do I/O.
    fn on_connect_authenticate<'a>(
        &'a self,
        client: &'a ClientInfo,
        connect: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(std::future::ready(Decision::Defer))
    }

    /// May this client read (subscribe, receive) or write (publish) this topic or filter? Runs
    /// per message: answer from memory. It may run while the server holds the subscriber's
    /// session lock, so it must not call back into the [`crate::Server`] (publish, disconnect,
    /// inject) for that client; hand such work to a task.
    fn on_acl_check(&self, client: &ClientInfo, topic: &str, access: Access) -> Decision {
        Decision::Defer
    }

    /// `$SYS` information was refreshed.
    fn on_sys_info_tick(&self, info: &SysInfo) {}

    /// A CONNECT arrived, before authentication. An error refuses the connection: with its
    /// reason code in CONNACK (mapped for 3.x clients), and for v5 clients a Server Reference
    /// when redirecting with 0x9C Use another server or 0x9D Server moved (§4.11).
    fn on_connect(&self, client: &ClientInfo, connect: &Connect) -> Result<(), ConnectRefusal> {
        Ok(())
    }

    /// The client is authenticated; its session is about to be created or resumed.
    fn on_session_establish(&self, client: &ClientInfo, connect: &Connect) {}

    /// CONNACK was sent and pending messages were resent.
    fn on_session_established(&self, client: &ClientInfo, connect: &Connect) {}

    /// The connection ended; `error` says why when it was not the client's DISCONNECT (its
    /// [`ConnectionError::reason_code`] is what the client was told), and `expire` whether the
    /// session ends with it.
    fn on_disconnect(&self, client: &ClientInfo, error: Option<&ConnectionError>, expire: bool) {}

    /// One step of enhanced authentication (§4.12) with the method `method`: the first step comes
    /// from CONNECT, later ones from AUTH packets. `state` is kept by the server between the
    /// steps of one exchange, for the hook's own use. The first hook that does not answer
    /// [`AuthOutcome::Unsupported`] handles the whole exchange (and later re-authentications);
    /// when none does, the client gets 0x8C Bad authentication method. Awaited on the
    /// connection's task, so it may do I/O.
    fn on_enhanced_auth<'a>(
        &'a self,
        client: &'a ClientInfo,
        method: &'a str,
        data: Option<&'a Bytes>,
        step: AuthStep,
        state: &'a mut AuthState,
    ) -> BoxFuture<'a, AuthOutcome> {
        Box::pin(std::future::ready(AuthOutcome::Unsupported))
    }

    /// An AUTH packet arrived (during enhanced authentication or re-authentication), before
    /// [`Hook::on_enhanced_auth`] sees it; the hook may change it. An error refuses the
    /// connection (CONNACK) or ends it (DISCONNECT) with that code.
    fn on_auth_packet(
        &self,
        client: &ClientInfo,
        auth: mqtt_packets::Auth,
    ) -> Result<mqtt_packets::Auth, ReasonCode> {
        Ok(auth)
    }

    /// A packet was decoded; the hook may change it. An error ends the connection with that code.
    fn on_packet_read(&self, client: &ClientInfo, packet: Packet) -> Result<Packet, ReasonCode> {
        Ok(packet)
    }

    /// A packet is about to be encoded for this client; the hook may change it.
    fn on_packet_encode(&self, client: &ClientInfo, packet: Packet) -> Packet {
        packet
    }

    /// A packet was written to this client (`bytes` long).
    fn on_packet_sent(&self, client: &ClientInfo, packet: &Packet, bytes: usize) {}

    /// A packet from this client was processed; `error` when handling it ended the connection.
    fn on_packet_processed(
        &self,
        client: &ClientInfo,
        packet: &Packet,
        error: Option<&ConnectionError>,
    ) {
    }

    /// A SUBSCRIBE arrived; the hook may change its filters.
    fn on_subscribe(&self, client: &ClientInfo, subscribe: Subscribe) -> Subscribe {
        subscribe
    }

    /// A SUBSCRIBE was processed, with the code of each filter (failures included).
    fn on_subscribed(
        &self,
        client: &ClientInfo,
        subscribe: &Subscribe,
        reason_codes: &[ReasonCode],
    ) {
    }

    /// The subscribers of a message were chosen; the hook may remove client ids from `clients`
    /// (e.g. to implement its own rules). Runs per message.
    fn on_select_subscribers(&self, publish: &Publish, clients: &mut Vec<mqtt_topics::ClientId>) {}

    /// An UNSUBSCRIBE arrived; the hook may change its filters.
    fn on_unsubscribe(&self, client: &ClientInfo, unsubscribe: Unsubscribe) -> Unsubscribe {
        unsubscribe
    }

    /// An UNSUBSCRIBE was processed. Also called when a session ends (expiry, Session Expiry 0,
    /// takeover with Clean Start), with an UNSUBSCRIBE the server builds of every filter the
    /// session held (its packet identifier, 65535, means nothing).
    fn on_unsubscribed(&self, client: &ClientInfo, unsubscribe: &Unsubscribe) {}

    /// A PUBLISH arrived from a client (or the inline client); the hook may change, ignore or
    /// reject it. Hooks run in order; the first that does not continue decides.
    fn on_publish(&self, client: &ClientInfo, publish: Publish) -> PublishDecision {
        PublishDecision::Continue(publish)
    }

    /// A PUBLISH was delivered to its subscribers.
    fn on_published(&self, client: &ClientInfo, publish: &Publish) {}

    /// A message for `client` was dropped.
    fn on_publish_dropped(&self, client: &ClientInfo, publish: &Publish, reason: DropReason) {}

    /// A retained message was set or cleared.
    fn on_retain_message(&self, client: &ClientInfo, publish: &Publish, change: RetainChange) {}

    /// A retained message was sent to `client`, a new subscriber.
    fn on_retain_published(&self, client: &ClientInfo, publish: &Publish) {}

    /// A QoS 1/2 message was sent to `client` (or resent, with `resends` > 0).
    fn on_qos_publish(&self, client: &ClientInfo, publish: &Publish, resends: u32) {}

    /// The QoS flow of `packet_id` to `client` completed.
    fn on_qos_complete(&self, client: &ClientInfo, packet_id: u16) {}

    /// The QoS flow of `packet_id` to `client` was abandoned (error code, expiry, session end).
    fn on_qos_dropped(&self, client: &ClientInfo, packet_id: u16) {}

    /// No packet identifier was free for a message to `client`.
    fn on_packet_id_exhausted(&self, client: &ClientInfo, publish: &Publish) {}

    /// A Will is about to be published; the hook may change it, or return `None` to suppress it.
    fn on_will(&self, client: &ClientInfo, will: Will) -> Option<Will> {
        Some(will)
    }

    /// A Will was published.
    fn on_will_sent(&self, client: &ClientInfo, publish: &Publish) {}

    /// The session of `client_id` expired and was removed.
    fn on_client_expired(&self, client: &ClientInfo) {}

    /// The retained message of `topic` expired and was removed.
    fn on_retained_expired(&self, topic: &str) {}

    /// The state a storage hook mirrors changed (see [`StorageEvent`]). Runs on the packet
    /// path, sometimes under a session's lock: hand the event to a writer task, never do I/O
    /// here, and never call back into the [`crate::Server`].
    fn on_storage_event(&self, event: &StorageEvent<'_>) {}

    /// For a storage hook with synchronous durability: a future that completes once every event
    /// this hook received so far is committed, or cannot be. When a hook provides
    /// [`HookEvents::DURABLE`], the server sends PUBACK, PUBREC and PUBCOMP, and CONNACK to a
    /// client whose session outlives its connection, only after the future completes with `Ok`;
    /// on `Err` the connection is closed (0x80 Unspecified error for v5; CONNACK 0x80) without
    /// those acknowledgements, so the client sends again. SUBACK and UNSUBACK do not wait.
    /// `None`: nothing to wait for.
    fn durable(&self) -> Option<BoxFuture<'static, Result<(), HookError>>> {
        None
    }

    /// Sessions to restore at start.
    fn stored_clients(&self) -> Result<Vec<StoredClient>, HookError> {
        Ok(Vec::new())
    }

    /// Subscriptions to restore at start.
    fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, HookError> {
        Ok(Vec::new())
    }

    /// Queued and inflight messages to restore at start.
    fn stored_inflight_messages(&self) -> Result<Vec<StoredMessage>, HookError> {
        Ok(Vec::new())
    }

    /// Retained messages to restore at start.
    fn stored_retained_messages(&self) -> Result<Vec<StoredMessage>, HookError> {
        Ok(Vec::new())
    }

    /// `$SYS` counters to restore at start.
    fn stored_sys_info(&self) -> Result<Option<StoredSysInfo>, HookError> {
        Ok(None)
    }
}

/// A hook that allows every connection, publish and subscription. For development and tests:
/// it logs a warning when added, because it must not face untrusted networks.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAllHook;

impl Hook for AllowAllHook {
    fn id(&self) -> &str {
        "allow-all"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT_AUTHENTICATE | HookEvents::ON_ACL_CHECK
    }

    fn init(&self, _: &crate::Options) -> Result<(), HookError> {
        tracing::warn!("allow-all authentication: every client may connect, publish and subscribe");
        Ok(())
    }

    fn on_connect_authenticate<'a>(
        &'a self,
        _: &'a ClientInfo,
        _: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(std::future::ready(Decision::Allow))
    }

    fn on_acl_check(&self, _: &ClientInfo, _: &str, _: Access) -> Decision {
        Decision::Allow
    }
}

/// The ordered list of hooks, with the union of what they provide.
#[derive(Default)]
pub(crate) struct Hooks {
    list: RwLock<Arc<[Arc<dyn Hook>]>>,
    provided: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self
            .list
            .read()
            .iter()
            .map(|hook| hook.id().to_string())
            .collect();
        f.debug_struct("Hooks").field("hooks", &ids).finish()
    }
}

impl Hooks {
    pub(crate) fn add(&self, hook: Arc<dyn Hook>) {
        let mut list = self.list.write();
        let provided = hook.provides();
        let mut hooks: Vec<Arc<dyn Hook>> = list.iter().cloned().collect();
        hooks.push(hook);
        *list = hooks.into();
        self.provided
            .fetch_or(provided.0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether any hook handles `event`: the hot path's one check.
    pub(crate) fn provides(&self, event: HookEvents) -> bool {
        self.provided.load(std::sync::atomic::Ordering::Relaxed) & event.0 != 0
    }

    /// The hooks that handle `event`, in order (a cheap snapshot).
    pub(crate) fn with(&self, event: HookEvents) -> impl Iterator<Item = Arc<dyn Hook>> {
        let list = if self.provides(event) {
            self.list.read().clone()
        } else {
            Arc::from([])
        };
        (0..list.len())
            .filter_map(move |i| list.get(i).cloned())
            .filter(move |h| h.provides().contains(event))
    }

    /// Hands a storage event to every hook that mirrors state.
    /// Runs on the packet path, so it walks the list under the read lock instead of cloning
    /// it (storage hooks only queue the event).
    pub(crate) fn storage(&self, event: &StorageEvent<'_>) {
        if !self.provides(HookEvents::ON_STORAGE_EVENT) {
            return;
        }
        let list = self.list.read();
        for hook in list.iter() {
            if hook.provides().contains(HookEvents::ON_STORAGE_EVENT) {
                hook.on_storage_event(event);
            }
        }
    }

    /// Waits until every storage hook with synchronous durability committed what it received.
    pub(crate) async fn durable(&self) -> Result<(), HookError> {
        for hook in self.with(HookEvents::DURABLE) {
            if let Some(wait) = hook.durable() {
                wait.await?;
            }
        }
        Ok(())
    }

    pub(crate) fn all(&self) -> Arc<[Arc<dyn Hook>]> {
        self.list.read().clone()
    }

    /// Runs the `on_auth_packet` hooks over an AUTH packet: each may change it; an error (with
    /// the refusing hook's id) refuses it.
    pub(crate) fn auth_packet(
        &self,
        client: &ClientInfo,
        auth: mqtt_packets::Auth,
    ) -> Result<mqtt_packets::Auth, (ReasonCode, Arc<dyn Hook>)> {
        if !self.provides(HookEvents::ON_AUTH_PACKET) {
            return Ok(auth);
        }
        let mut auth = auth;
        for hook in self.with(HookEvents::ON_AUTH_PACKET) {
            auth = match hook.on_auth_packet(client, auth) {
                Ok(auth) => auth,
                Err(code) => return Err((code, hook)),
            };
        }
        Ok(auth)
    }

    /// One step of enhanced authentication: with the hook chosen at the first step, or the first
    /// hook that supports the method (remembered in `chosen`).
    pub(crate) async fn enhanced_auth(
        &self,
        client: &ClientInfo,
        method: &str,
        data: Option<&Bytes>,
        step: AuthStep,
        state: &mut AuthState,
        chosen: &mut Option<Arc<dyn Hook>>,
    ) -> AuthOutcome {
        if let Some(hook) = chosen.clone() {
            return hook
                .on_enhanced_auth(client, method, data, step, state)
                .await;
        }
        for hook in self.with(HookEvents::ON_ENHANCED_AUTH) {
            let outcome = hook
                .on_enhanced_auth(client, method, data, step, state)
                .await;
            if outcome != AuthOutcome::Unsupported {
                *chosen = Some(hook);
                return outcome;
            }
        }
        AuthOutcome::Unsupported
    }

    /// Authentication: the first hook that decides wins; deny when all defer.
    pub(crate) async fn authenticate(&self, client: &ClientInfo, connect: &Connect) -> bool {
        for hook in self.with(HookEvents::ON_CONNECT_AUTHENTICATE) {
            match hook.on_connect_authenticate(client, connect).await {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Defer => {}
            }
        }
        false
    }

    /// ACL: the first hook that decides wins; deny when all defer. The inline client is always
    /// allowed. Runs per message, so it walks the list under the read lock instead of cloning
    /// it (hooks must not add hooks from `on_acl_check`).
    pub(crate) fn acl(&self, client: &ClientInfo, topic: &str, access: Access) -> bool {
        if client.inline {
            return true;
        }
        if !self.provides(HookEvents::ON_ACL_CHECK) {
            return false;
        }
        let list = self.list.read();
        for hook in list.iter() {
            if !hook.provides().contains(HookEvents::ON_ACL_CHECK) {
                continue;
            }
            match hook.on_acl_check(client, topic, access) {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Defer => {}
            }
        }
        false
    }
}
