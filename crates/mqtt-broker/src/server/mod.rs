//! The server: the registry of sessions, routing of messages, retained messages, wills, timers,
//! and the embedding API.

mod publish;
mod queue;
mod restore;
mod ticks;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mqtt_packets::DecodeContext;
use mqtt_packets::{MqttString, Packet, QoS, ReasonCode};
use mqtt_topics::{ClientId, RetainedIndex, SubscriptionTrie};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::flow::FlowLimits;
use crate::hooks::{HookEvents, Hooks};
use crate::inline::InlineClient;
use crate::message::Message;
use crate::session::{Close, Session, SubscriptionEntry};
use crate::sys::{self, SysInfo};
use crate::timers::Timers;
use crate::{BrokerError, ConnectionInfo, Hook, Options};

pub(crate) use publish::PublishOutcome;
pub(crate) use queue::Dropped;

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
                    .map_err(|violation| BrokerError::Refused(violation.reason_code()))
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
}
