//! The server: the registry of sessions, routing of messages, retained messages, wills, timers,
//! and the embedding API.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mqtt_packets::DecodeContext;
use mqtt_packets::{MqttString, Packet, Publish, QoS, ReasonCode, Will};
use mqtt_topics::{ClientId, RetainedIndex, SubscriptionTrie, validate_topic_name};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::flow::{self, Admission, Admitted, FlowLimits, Parked};
use crate::hooks::{Access, DropReason, HookEvents, Hooks, PublishDecision, RetainChange};
use crate::inline::InlineClient;
use crate::message::{Delivery, Message};
use crate::options::SlowSubscriberPolicy;
use crate::session::{Close, HandleShared, Session, SessionState, SubscriptionEntry};
use crate::staged::{LastRoute, Staged};
use crate::storage::{self, StorageEvent};
use crate::sys::{self, SysInfo};
use crate::timers::{TimerEvent, Timers};
use crate::{BrokerError, ClientInfo, ConnectionInfo, Hook, Options};

/// An MQTT broker. Cheap to clone: clones share the same server.
///
/// ```no_run
/// use mqtt_broker::{AllowAllHook, Options, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::new(Options::default());
/// server.add_hook(AllowAllHook)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
/// server.serve_tcp("tcp", listener).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("hooks", &self.inner.hooks)
            .field("sessions", &self.inner.sessions.lock().len())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) options: Options,
    pub(crate) hooks: Hooks,
    pub(crate) info: SysInfo,
    pub(crate) sessions: Mutex<HashMap<ClientId, Arc<Session>>>,
    pub(crate) trie: SubscriptionTrie<SubscriptionEntry>,
    pub(crate) retained: RetainedIndex<Arc<Message>>,
    pub(crate) timers: Timers,
    pub(crate) next_generation: AtomicU64,
    pub(crate) closing: AtomicBool,
    /// Becomes true when the server closes; every background loop watches it.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Runs `start` once; concurrent callers wait until the stored state is restored.
    started: std::sync::Once,
    pub(crate) next_inline: AtomicU64,
    pub(crate) next_assigned_id: AtomicU64,
    /// Connection tasks alive, and a signal when it drops to zero.
    pub(crate) live_connections: AtomicUsize,
    /// Connections past the `maximum_clients` check and not yet attached or refused.
    pub(crate) admitting: AtomicUsize,
    /// Bytes of the retained messages held ([`Message::size`]), against
    /// `maximum_retained_bytes`; changed only through [`Inner::set_retained`] and the removals
    /// next to it.
    pub(crate) retained_bytes: AtomicUsize,
    pub(crate) all_closed: Notify,
    /// Flow control's limits and policies, from the options.
    pub(crate) flow_limits: FlowLimits,
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
    /// A server with these options. Add hooks, then serve connections.
    pub fn new(options: Options) -> Self {
        let mut options = options;
        // Values the protocol forbids (0 is a protocol error in CONNACK) are raised to the least
        // valid one.
        let caps = &mut options.capabilities;
        if caps.receive_maximum == 0 {
            warn!("receive_maximum 0 is not allowed; using 1");
            caps.receive_maximum = 1;
        }
        if caps.maximum_packet_size < 64 {
            warn!(
                maximum_packet_size = caps.maximum_packet_size,
                "maximum_packet_size too small; using 64"
            );
            caps.maximum_packet_size = 64;
        }
        let trie = SubscriptionTrie::new(
            options.capabilities.effective_topic_rules(),
            options.share_strategy.clone(),
        );
        let flow_limits = FlowLimits::new(&options);
        Self {
            inner: Arc::new(Inner {
                flow_limits,
                options,
                hooks: Hooks::default(),
                info: SysInfo::new(),
                sessions: Mutex::new(HashMap::new()),
                trie,
                retained: RetainedIndex::new(),
                timers: Timers::default(),
                next_generation: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                shutdown: tokio::sync::watch::Sender::new(false),
                started: std::sync::Once::new(),
                next_inline: AtomicU64::new(1),
                next_assigned_id: AtomicU64::new(1),
                live_connections: AtomicUsize::new(0),
                admitting: AtomicUsize::new(0),
                retained_bytes: AtomicUsize::new(0),
                all_closed: Notify::new(),
            }),
        }
    }

    /// The options the server runs with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Live counters.
    pub fn info(&self) -> &SysInfo {
        &self.inner.info
    }

    /// Adds a hook after those already added. Its `init` runs now; an error refuses it.
    pub fn add_hook(&self, hook: impl Hook) -> Result<(), BrokerError> {
        self.add_hook_arc(Arc::new(hook))
    }

    /// [`Server::add_hook`] for a hook the caller keeps a handle to.
    pub fn add_hook_arc(&self, hook: Arc<dyn Hook>) -> Result<(), BrokerError> {
        if let Err(error) = hook.init(&self.inner.options) {
            sys::add(&self.inner.info.hook_errors, 1);
            return Err(error.into());
        }
        info!(hook = hook.id(), "hook added");
        self.inner.hooks.add(hook);
        Ok(())
    }

    /// Starts the background tasks if called within a Tokio runtime (the inline client may be
    /// used before any connection is served).
    pub(crate) fn start_if_in_runtime(&self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.start();
        }
    }

    /// Starts the background tasks (timers) and restores stored state; called by every `serve_*`
    /// method, and idempotent. Must be called within a Tokio runtime, after the hooks are
    /// added. Callers that arrive while the stored state is being restored wait for it, so no
    /// connection is served before the sessions are back.
    pub fn start(&self) {
        let mut first = false;
        self.inner.started.call_once(|| {
            first = true;
            self.restore();
            let server = self.clone();
            tokio::spawn(async move { server.run_timers().await });
            let server = self.clone();
            tokio::spawn(async move { server.run_sys_ticks().await });
        });
        // Outside `call_once`: a hook may use the server (and so call `start`) from here.
        if first {
            for hook in self.inner.hooks.with(HookEvents::ON_STARTED) {
                hook.on_started();
            }
        }
    }

    /// Serves one connection until it ends. `stream` may be any byte stream: TCP, TLS,
    /// WebSocket, a Unix socket or an in-memory pipe.
    ///
    /// Cancel safety: dropping the future drops the connection as if the network had failed
    /// (the Will is published); prefer [`Server::close`].
    pub fn serve_connection<S>(
        &self,
        stream: S,
        connection: ConnectionInfo,
    ) -> impl Future<Output = ()> + Send + use<S>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // Not an `async fn`: a wrapper future would keep its own copy of the arguments for as
        // long as the connection lasts. `serve` calls `start` when first polled.
        crate::connection::serve(self.clone(), stream, connection)
    }

    /// Accepts connections from `listener` until [`Server::close`], serving each on its own task.
    pub async fn serve_tcp(&self, id: &str, listener: TcpListener) -> std::io::Result<()> {
        self.start();
        let id: Arc<str> = Arc::from(id);
        info!(listener = %id, address = ?listener.local_addr().ok(), "listening");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.shutdown_signal() => return Ok(()),
            };
            if self.inner.closing.load(Ordering::SeqCst) {
                return Ok(());
            }
            match accepted {
                Ok((stream, remote)) => {
                    stream.set_nodelay(true).ok();
                    let server = self.clone();
                    let connection = ConnectionInfo::new(id.clone(), Some(remote));
                    tokio::spawn(server.serve_connection(stream, connection));
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %id, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Closes the server gracefully: stops accepting, sends v5 clients DISCONNECT 0x8B and
    /// closes every connection, waiting up to [`Options::shutdown_timeout`].
    pub async fn close(&self) {
        if self.inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.shutdown.send_replace(true);
        let sessions: Vec<Arc<Session>> = self.inner.sessions.lock().values().cloned().collect();
        for session in sessions {
            let state = session.state.lock();
            if let Some(connection) = &state.connection {
                connection.close(Close::Disconnect(ReasonCode::SERVER_SHUTTING_DOWN));
            }
        }
        let deadline = Instant::now() + self.inner.options.shutdown_timeout;
        while self.inner.live_connections.load(Ordering::SeqCst) > 0 {
            let wait = self.inner.all_closed.notified();
            if self.inner.live_connections.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                warn!("shutdown timeout: connections still open");
                break;
            }
        }
        for hook in self.inner.hooks.all().iter() {
            hook.stop();
            if hook.provides().contains(HookEvents::ON_STOPPED) {
                hook.on_stopped();
            }
        }
        info!("server closed");
    }

    /// Publishes a message from the host program, as the inline client: no ACL applies and
    /// `$SYS` topics are allowed. Returns how many subscriptions it reached.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        retain: bool,
        qos: QoS,
    ) -> Result<usize, BrokerError> {
        self.inline_client().publish(topic, payload, retain, qos)
    }

    /// The inline client: publish and subscribe from the host program.
    pub fn inline_client(&self) -> InlineClient {
        InlineClient::new(self.clone())
    }

    /// Processes `packet` as if client `client_id` had sent it (PUBLISH, SUBSCRIBE or
    /// UNSUBSCRIBE). The client's session must exist; the usual ACL checks apply; no
    /// acknowledgement is sent to the client.
    pub fn inject_packet(&self, client_id: &str, packet: Packet) -> Result<(), BrokerError> {
        let session = self
            .inner
            .sessions
            .lock()
            .get(client_id)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownClient(client_id.to_string()))?;
        let client = session
            .state
            .lock()
            .client
            .clone()
            .ok_or_else(|| BrokerError::UnknownClient(client_id.to_string()))?;
        match packet {
            Packet::Publish(publish) => {
                self.inner
                    .info
                    .messages_received
                    .fetch_add(1, Ordering::Relaxed);
                match self.publish_from(&client, publish) {
                    PublishOutcome::Refused(code) => Err(BrokerError::Refused(code)),
                    _ => Ok(()),
                }
            }
            Packet::Subscribe(subscribe) => {
                crate::subscribe::subscribe(self, &session, &client, subscribe, |_| {})
                    .map(drop)
                    .map_err(BrokerError::Refused)
            }
            Packet::Unsubscribe(unsubscribe) => {
                crate::subscribe::unsubscribe(self, &session, &client, unsubscribe);
                Ok(())
            }
            other => Err(BrokerError::Unsupported(other.packet_type().name())),
        }
    }

    /// The number of sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// The client ids of connected clients.
    pub fn connected_clients(&self) -> Vec<String> {
        self.inner
            .sessions
            .lock()
            .values()
            .filter(|session| session.is_connected())
            .map(|session| session.client_id.to_string())
            .collect()
    }

    /// Disconnects a client (v5: DISCONNECT 0x98 Administrative action). Its session remains
    /// according to its expiry. Returns whether it was connected.
    pub fn disconnect_client(&self, client_id: &str) -> bool {
        let Some(session) = self.inner.sessions.lock().get(client_id).cloned() else {
            return false;
        };
        let state = session.state.lock();
        let Some(connection) = &state.connection else {
            return false;
        };
        connection.close(Close::Disconnect(ReasonCode::ADMINISTRATIVE_ACTION));
        true
    }

    /// Sends a connected v5 client to another server: DISCONNECT 0x9D Server moved (`permanent`)
    /// or 0x9C Use another server, with the Server Reference `reference` (§4.11). A 3.x client is
    /// just disconnected. Returns whether the client was connected.
    pub fn redirect_client(
        &self,
        client_id: &str,
        reference: &str,
        permanent: bool,
    ) -> Result<bool, BrokerError> {
        let reference = MqttString::new(reference)
            .map_err(|_| BrokerError::InvalidTopic(reference.to_string()))?;
        let Some(session) = self.inner.sessions.lock().get(client_id).cloned() else {
            return Ok(false);
        };
        let state = session.state.lock();
        let Some(connection) = &state.connection else {
            return Ok(false);
        };
        let code = if permanent {
            ReasonCode::SERVER_MOVED
        } else {
            ReasonCode::USE_ANOTHER_SERVER
        };
        connection.close(Close::Redirect(code, reference));
        Ok(true)
    }

    // ----- the publish path -------------------------------------------------------------------

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
    fn retain(&self, client: &ClientInfo, message: &Arc<Message>) -> bool {
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
            let entry = &shared.subscription;
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(entry.options.maximum_qos).min(maximum_qos),
                retain: entry.options.retain_as_published && message.retain,
                subscription_identifiers: entry.identifier.into_iter().collect(),
                shared: Some(shared.group.clone()),
                seq: 0,
            };
            staged.push(&entry.session, delivery);
            delivered += 1;
        }
        staged.set_last_route(last_route);
        delivered
    }

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
    fn hand_over(&self, staged: &mut Staged, admission: Admission<'_>, parked: &mut Parked) {
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
    fn queue_to(
        &self,
        session: &Arc<Session>,
        deliveries: &mut dyn Iterator<Item = Delivery>,
        admission: Admission<'_>,
        now: Instant,
        parked: &mut Parked,
        compacted: &mut HashMap<usize, Arc<Message>>,
        dropped: &mut Vec<(ClientId, Delivery, DropReason)>,
    ) {
        let inner = &self.inner;
        if let Some(sink) = &session.inline_sink {
            for delivery in deliveries {
                let publish = delivery.to_publish(None, false, Instant::now());
                if sink.try_send(publish).is_err() {
                    dropped.push((session.client_id.clone(), delivery, DropReason::QueueFull));
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
    fn place(
        &self,
        session: &Session,
        state: &mut SessionState,
        delivery: Delivery,
        admission: Admission<'_>,
        now: Instant,
        compacted: &mut crate::message::Compacted,
        dropped: &mut Vec<(ClientId, Delivery, DropReason)>,
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
    fn note_dropped(
        &self,
        session: &Session,
        state: &mut SessionState,
        delivery: Delivery,
        reason: DropReason,
        now: Instant,
        dropped: &mut Vec<(ClientId, Delivery, DropReason)>,
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
        dropped.push((session.client_id.clone(), delivery, reason));
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
    fn declare_stuck(
        &self,
        session: &Session,
        state: &mut SessionState,
        dropped: &mut Vec<(ClientId, Delivery, DropReason)>,
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
                    dropped.push((
                        session.client_id.clone(),
                        delivery,
                        DropReason::SubscriberStuck,
                    ));
                }
            }
        }
        waiters
    }

    /// Counts and reports the deliveries a queue refused.
    fn report_dropped(&self, dropped: Vec<(ClientId, Delivery, DropReason)>) {
        let hooked = self.inner.hooks.provides(HookEvents::ON_PUBLISH_DROPPED);
        for (client_id, delivery, reason) in dropped {
            if hooked {
                let publish = delivery.to_publish(None, false, Instant::now());
                self.dropped(&client_id, &publish, reason);
            } else {
                // Counted and logged without building the PUBLISH no hook would see.
                self.count_dropped(&client_id, delivery.message.topic.as_str(), reason);
            }
        }
    }

    fn count_dropped(&self, client_id: &str, topic: &str, reason: DropReason) {
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

    pub(crate) fn dropped(&self, client_id: &str, publish: &Publish, reason: DropReason) {
        self.count_dropped(client_id, publish.topic.as_str(), reason);
        for hook in self.inner.hooks.with(HookEvents::ON_PUBLISH_DROPPED) {
            hook.on_publish_dropped(client_id, publish, reason);
        }
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

    // ----- sessions -------------------------------------------------------------------------

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
        if !ends {
            // What stays queued or in flight may wait for long: it must not keep alive the
            // read buffers of the publishers it came from.
            state.outbound.compact();
        }
        let mut orphans = Vec::new();
        let dropped_ids = if ends {
            self.clear_session(&mut sessions, session, &mut state, &mut orphans)
        } else {
            if state.persist {
                let stored = storage::stored_client(&session.client_id, &state, true);
                inner.hooks.storage(&StorageEvent::Session(&stored));
            }
            Vec::new()
        };
        drop(state);
        drop(sessions);
        self.report_dropped(
            offline_qos0
                .into_iter()
                .map(|delivery| {
                    (
                        session.client_id.clone(),
                        delivery,
                        DropReason::ClientOffline,
                    )
                })
                .collect(),
        );
        self.qos_dropped(&session.client_id, dropped_ids);
        self.reroute_shared(orphans);
        Some(Detached {
            will_now,
            expiry,
            delayed_will,
            ended: ends,
        })
    }

    /// Ends a disconnected session whose expiry came (the connection of `generation` left it):
    /// only if no newer connection resumed it [MQTT-4.1.0-1]. Returns the pending Will (if any)
    /// when the session ended, to be published now [MQTT-3.1.2-8].
    pub(crate) fn end_session(
        &self,
        session: &Arc<Session>,
        generation: u64,
    ) -> Option<Option<(Box<Will>, Arc<ClientInfo>)>> {
        let inner = &self.inner;
        let mut sessions = inner.sessions.lock();
        let mut state = session.state.lock();
        if state.connection.is_some() || state.last_generation != generation {
            return None;
        }
        let will = state.will.take().zip(state.client.clone());
        let mut orphans = Vec::new();
        let dropped_ids = self.clear_session(&mut sessions, session, &mut state, &mut orphans);
        drop(state);
        drop(sessions);
        self.qos_dropped(&session.client_id, dropped_ids);
        self.reroute_shared(orphans);
        Some(will)
    }

    /// Empties a session and removes it from the registry and the trie. Called with both locks
    /// held (registry, then session), so no connection can attach meanwhile.
    fn clear_session(
        &self,
        sessions: &mut HashMap<ClientId, Arc<Session>>,
        session: &Arc<Session>,
        state: &mut crate::session::SessionState,
        orphans: &mut Vec<Delivery>,
    ) -> Vec<u16> {
        let inner = &self.inner;
        if state.persist {
            state.persist = false;
            inner.hooks.storage(&StorageEvent::SessionEnded {
                client_id: &session.client_id,
            });
        }
        orphans.extend(state.outbound.take_shared());
        flow::wake(state.flow.release_all());
        state.flow.stop_retained(None);
        state.epoch += 1;
        state.subscriptions.clear();
        state.inbound_qos2.clear();
        state.control.clear();
        state.will = None;
        let dropped_ids = state.outbound.clear();
        if sessions
            .get(&session.client_id)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            sessions.remove(&session.client_id);
            sys::sub(&inner.info.sessions, 1);
            let removed = inner.trie.remove_client(&session.client_id);
            sys::sub(&inner.info.subscriptions, removed as u64);
        }
        dropped_ids
    }

    /// Offers the unacknowledged QoS 0/1 messages of a shared-subscription member whose session
    /// ended to another member of the same group (§4.8.2: SHOULD for QoS 1). If the group has no
    /// member left, the messages are dropped with it.
    fn reroute_shared(&self, orphans: Vec<Delivery>) {
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
            let entry = &member.subscription;
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(entry.options.maximum_qos).min(maximum_qos),
                retain: entry.options.retain_as_published && message.retain,
                subscription_identifiers: entry.identifier.into_iter().collect(),
                shared: Some(member.group.clone()),
                seq: 0,
            };
            staged.push(&entry.session, delivery);
        }
        self.deliver(&mut staged);
    }

    fn qos_dropped(&self, client_id: &str, ids: Vec<u16>) {
        for id in ids {
            for hook in self.inner.hooks.with(HookEvents::ON_QOS_DROPPED) {
                hook.on_qos_dropped(client_id, id);
            }
        }
    }

    /// A unique client identifier for a client that sent an empty one [MQTT-3.1.3-6].
    /// A client identifier for a client that sent none: 128 random bits, so that nobody can
    /// guess another client's and resume its session (audit H3). Falls back to a counter only if
    /// the system has no randomness to give.
    pub(crate) fn assign_client_id(&self) -> ClientId {
        loop {
            let mut random = [0u8; 16];
            let id = if getrandom::fill(&mut random).is_ok() {
                let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
                ClientId::from(format!("mochi-{hex}"))
            } else {
                let n = self.inner.next_assigned_id.fetch_add(1, Ordering::Relaxed);
                let started = self.inner.info.started.load(Ordering::Relaxed);
                ClientId::from(format!("mochi-{started:x}-{n}"))
            };
            if !self.inner.sessions.lock().contains_key(&id) {
                return id;
            }
        }
    }

    /// How this server decodes a connection's packets at `protocol`: its maximum packet size
    /// and its limits on User Properties and topic filters.
    pub(crate) fn decode_context(&self, protocol: mqtt_packets::Protocol) -> DecodeContext {
        let caps = &self.inner.options.capabilities;
        let clamp = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        DecodeContext::new(protocol)
            .with_maximum_packet_size(caps.maximum_packet_size)
            .with_limits(mqtt_packets::DecodeLimits {
                user_properties: clamp(caps.maximum_user_properties),
                user_property_bytes: clamp(caps.maximum_user_property_bytes),
                filters: clamp(caps.maximum_filters_per_packet),
            })
    }

    /// Whether [`Server::close`] has been called.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Completes once the server is closing (at once if it already is): listeners stop
    /// accepting on it. Cancel safe.
    pub async fn closed(&self) {
        self.shutdown_signal().await;
    }

    /// Completes once the server is closing (at once if it already is).
    pub(crate) async fn shutdown_signal(&self) {
        let mut closing = self.inner.shutdown.subscribe();
        closing.wait_for(|closing| *closing).await.ok();
    }

    /// Publishes the `$SYS` topics (retained, so that a new subscriber gets them at once) and
    /// calls `on_sys_info_tick`, every `sys_topic_resend_interval`.
    async fn run_sys_ticks(&self) {
        let mut interval = tokio::time::interval(self.inner.options.sys_topic_resend_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.shutdown_signal() => return,
            }
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            self.publish_sys_topics().await;
            for hook in self.inner.hooks.with(HookEvents::ON_SYS_INFO_TICK) {
                hook.on_sys_info_tick(&self.inner.info);
            }
        }
    }

    /// Refreshes the sampled counters and publishes every `$SYS` topic once.
    pub(crate) async fn publish_sys_topics(&self) {
        let info = &self.inner.info;
        let sessions: Vec<Arc<Session>> = self.inner.sessions.lock().values().cloned().collect();
        // A scan of the sessions once per interval (not per message) for the inflight total.
        let queued: usize = sessions
            .iter()
            .map(|session| session.state.lock().outbound.pending_len())
            .sum();
        info.queued.store(queued as u64, Ordering::Relaxed);
        let inflight: usize = sessions
            .iter()
            .map(|session| session.state.lock().outbound.inflight_len())
            .sum();
        drop(sessions);
        info.inflight.store(inflight as u64, Ordering::Relaxed);
        info.memory
            .store(sys::resident_memory().await, Ordering::Relaxed);
        info.tasks.store(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            Ordering::Relaxed,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let inline = InlineClient::new(self.clone());
        for (topic, value) in sys::topics(&info.snapshot(), now) {
            if let Err(error) = inline.publish(topic, value, true, QoS::AtMostOnce) {
                debug!(%error, topic, "cannot publish $SYS topic");
            }
        }
    }

    async fn run_timers(&self) {
        loop {
            tokio::select! {
                () = self.inner.timers.wait() => {}
                () = self.shutdown_signal() => return,
            }
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            for event in self.inner.timers.due(Instant::now()) {
                self.fire(event);
            }
        }
    }

    fn fire(&self, event: TimerEvent) {
        let inner = &self.inner;
        match event {
            TimerEvent::RetainedExpiry { topic } => {
                // Only if the message stored now is the one that expired (not a newer one).
                let now = Instant::now();
                if inner
                    .remove_retained_if(&topic, |message| message.is_expired(now))
                    .is_some()
                {
                    sys::sub(&inner.info.retained, u64::from(!topic.starts_with('$')));
                    if !topic.starts_with('$') {
                        inner
                            .hooks
                            .storage(&StorageEvent::RetainedCleared { topic: &topic });
                    }
                    for hook in inner.hooks.with(HookEvents::ON_RETAINED_EXPIRED) {
                        hook.on_retained_expired(&topic);
                    }
                }
            }
            TimerEvent::SessionExpiry {
                client_id,
                generation,
            } => {
                let Some(session) = inner.sessions.lock().get(&client_id).cloned() else {
                    return;
                };
                let Some(will) = self.end_session(&session, generation) else {
                    return;
                };
                // The session ends, so a pending delayed Will goes now [MQTT-3.1.2-8].
                if let Some((will, client)) = will {
                    self.publish_will(&client, will);
                }
                info!(client_id = %client_id, "session expired");
                for hook in inner.hooks.with(HookEvents::ON_CLIENT_EXPIRED) {
                    hook.on_client_expired(&client_id);
                }
            }
            TimerEvent::WillDelay {
                client_id,
                generation,
            } => {
                let Some(session) = inner.sessions.lock().get(&client_id).cloned() else {
                    return;
                };
                let (client, will) = {
                    let mut state = session.state.lock();
                    if state.connection.is_some() || state.last_generation != generation {
                        return;
                    }
                    let will = state.will.take();
                    if state.persist && will.is_some() {
                        // The stored session no longer has a pending Will.
                        let mut stored = storage::stored_client(&client_id, &state, false);
                        stored.expires_at_unix = None;
                        inner.hooks.storage(&StorageEvent::Session(&stored));
                    }
                    (state.client.clone(), will)
                };
                if let (Some(client), Some(will)) = (client, will) {
                    self.publish_will(&client, will);
                }
            }
        }
    }

    /// Restores retained messages, sessions and subscriptions from the first hook that has them.
    fn restore(&self) {
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
    fn restore_session(&self, stored: crate::storage::StoredClient, now: Instant, unix_now: u64) {
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
    fn restore_queued(&self, now: Instant, unix_now: u64) {
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

impl Inner {
    /// Sets the retained message of `topic`, counting its bytes.
    pub(crate) fn set_retained(&self, topic: &str, message: Arc<Message>) -> Option<Arc<Message>> {
        let size = message.size();
        let old = self.retained.set(topic, message);
        self.retained_bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(old) = &old {
            self.retained_bytes.fetch_sub(old.size(), Ordering::Relaxed);
        }
        old
    }

    /// Removes the retained message of `topic`, counting its bytes.
    pub(crate) fn remove_retained(&self, topic: &str) -> Option<Arc<Message>> {
        self.remove_retained_if(topic, |_| true)
    }

    /// Removes the retained message of `topic` if `condition` holds, counting its bytes.
    pub(crate) fn remove_retained_if(
        &self,
        topic: &str,
        condition: impl FnOnce(&Arc<Message>) -> bool,
    ) -> Option<Arc<Message>> {
        let old = self.retained.remove_if(topic, condition);
        if let Some(old) = &old {
            self.retained_bytes.fetch_sub(old.size(), Ordering::Relaxed);
        }
        old
    }

    /// Whether `message` may become the retained message of its topic under
    /// `maximum_retained_messages` and `maximum_retained_bytes` (a replacement counts only the
    /// bytes it adds). The server's own `$` topics are not limited.
    fn retained_fits(&self, message: &Message) -> bool {
        if message.topic.as_bytes().starts_with(b"$") {
            return true;
        }
        let caps = &self.options.capabilities;
        let old = self.retained.get(message.topic.as_str());
        let count = self.info.retained.load(Ordering::Relaxed) as usize;
        if old.is_none() && count >= caps.maximum_retained_messages {
            return false;
        }
        let bytes = self.retained_bytes.load(Ordering::Relaxed);
        let freed = old.map_or(0, |old| old.size());
        bytes.saturating_sub(freed) + message.size() <= caps.maximum_retained_bytes
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }
}

/// A message from storage, with its expiry moved from wall-clock time to the runtime's clock;
/// `None` if it has expired or its topic is invalid.
fn restored_message(
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

#[cfg(test)]
mod tests {
    use mqtt_packets::Protocol;

    use super::*;
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
