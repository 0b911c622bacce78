//! Server options, capabilities and compatibility switches, each with its default.

use std::time::Duration;

use mqtt_packets::{Protocol, QoS};
use mqtt_topics::{ShareStrategy, TopicRules};

/// Everything that configures a [`crate::Server`]. `Options::default()` is a complete,
/// spec-compliant configuration; change fields with struct update syntax.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// What the server supports and its limits; advertised in CONNACK and enforced.
    pub capabilities: Capabilities,
    /// How long a new connection may take from its first byte to its CONNACK: reading CONNECT,
    /// authentication (hooks, password checks, an enhanced-authentication exchange) and the
    /// session's set-up. A connection still in its handshake after this is closed; one whose
    /// authentication is still undecided is refused as a failed authentication (CONNACK 0x86
    /// with a user name or password, 0x87 without; 3.x: 4 or 5). Default 10 s.
    pub connect_timeout: Duration,
    /// The room a connection offers a read while its client sends little (default 2048 bytes,
    /// as the original broker's `ClientNetReadBufferSize`). A client whose reads fill that room
    /// is offered twice as much, up to 64 KiB, and less again when its reads come in small; the
    /// buffer also grows for a larger packet, and an idle connection holds none.
    pub read_buffer_size: usize,
    /// Outbound bytes gathered before a write system call while more packets are queued
    /// (default 2048, as `ClientNetWriteBufferSize`); the writer always flushes when its queue is
    /// empty.
    pub write_buffer_size: usize,
    /// How often `$SYS` information is refreshed, in seconds (default 1).
    pub sys_topic_resend_interval: Duration,
    /// How shared subscription groups choose a member (default round robin).
    pub share_strategy: ShareStrategy,
    /// How long [`crate::Server::close`] waits for connections to end (default 5 s).
    pub shutdown_timeout: Duration,
    /// What happens when a connected subscriber's queue is full (see [`OverloadPolicy`]).
    /// Default: the publishers wait.
    pub overload_policy: OverloadPolicy,
    /// How long a connected subscriber whose queue is full may go without taking a message
    /// from it (its writer blocked on a socket the client does not read, or its in-flight window
    /// never acknowledged) before it is declared stuck and stops holding publishers back.
    /// Default 30 s.
    pub slow_subscriber_timeout: Duration,
    /// What happens to a subscriber declared stuck (see [`SlowSubscriberPolicy`]). Default:
    /// disconnected.
    pub slow_subscriber_policy: SlowSubscriberPolicy,
    /// Which message goes when the queue of an offline session (or of a subscriber skipped as
    /// stuck) is full. Default: the new one.
    pub queue_drop_order: DropOrder,
    /// Whether a session belongs to the identity that created it: a client that authenticates
    /// as another user (the CONNECT User Name, or the principal an enhanced-authentication hook
    /// returns) can neither take over its connection nor resume it, and gets CONNACK 0x87 Not
    /// authorized (3.x: 0x05). `false` lets any authenticated client use any client identifier,
    /// as MQTT itself does; queued messages are then checked against the ACL of the identity
    /// that receives them. Default true.
    pub bind_sessions_to_identity: bool,
    /// How long acknowledgements held for a storage hook with synchronous durability may wait
    /// for the commit. After it, the connection is closed with 0x80 Unspecified error (3.x: a
    /// plain close) without them, so its client sends again. Default 30 s.
    pub durable_ack_timeout: Duration,
}

/// What happens when a connected subscriber's queue is full (`maximum_client_writes_pending`
/// messages, or `maximum_queued_bytes`) while its writer makes progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverloadPolicy {
    /// Nothing is dropped: the connections publishing to it stop being read (no new PUBACK or
    /// PUBREC goes out, and TCP slows the publishers down) until its queue drains, for messages
    /// of every QoS. The default.
    #[default]
    Backpressure,
    /// QoS 0 messages to it are dropped (and counted); QoS 1 and 2 still hold the publishers
    /// back.
    Drop,
}

/// What happens to a connected subscriber that makes no progress for
/// [`Options::slow_subscriber_timeout`] while publishers wait for room in its queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowSubscriberPolicy {
    /// It is disconnected: DISCONNECT 0x97 Quota exceeded for v5 clients, a plain close for
    /// 3.x clients. Its session then follows the rules of offline sessions. The default.
    #[default]
    Disconnect,
    /// It stays connected but is skipped: its queued QoS 0 messages are dropped, new QoS 0
    /// messages to it are dropped, and QoS 1 and 2 messages beyond its queue limits are dropped,
    /// until its writer drains the queue again.
    Skip,
}

/// Which message is dropped when a queue that cannot hold publishers back is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropOrder {
    /// The message arriving is dropped; the queue keeps the oldest. The default.
    #[default]
    Newest,
    /// The oldest queued messages are dropped to make room for the one arriving.
    Oldest,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            capabilities: Capabilities::default(),
            connect_timeout: Duration::from_secs(10),
            read_buffer_size: 2048,
            write_buffer_size: 2048,
            sys_topic_resend_interval: Duration::from_secs(1),
            share_strategy: ShareStrategy::default(),
            shutdown_timeout: Duration::from_secs(5),
            overload_policy: OverloadPolicy::default(),
            slow_subscriber_timeout: Duration::from_secs(30),
            slow_subscriber_policy: SlowSubscriberPolicy::default(),
            queue_drop_order: DropOrder::default(),
            bind_sessions_to_identity: true,
            durable_ack_timeout: Duration::from_secs(30),
        }
    }
}

/// What the server supports. Every field that MQTT 5 can express is advertised in CONNACK and
/// enforced on every client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Capabilities {
    /// Connections accepted at once; more are refused with 0x89 Server busy (3.x: 0x03).
    /// Default 100,000.
    pub maximum_clients: usize,
    /// Sessions kept at once, connected or not; a CONNECT that would create one more is refused
    /// with 0x97 Quota exceeded (3.x: 0x03 Server unavailable). Default 100,000.
    pub maximum_sessions: usize,
    /// The largest Session Expiry Interval granted, in seconds; a larger request is lowered and
    /// the CONNACK says so. Also the expiry of 3.x persistent sessions. Default 86,400 (one
    /// day); `u32::MAX` lets sessions that ask for it never expire.
    pub maximum_session_expiry_interval: u32,
    /// The largest Message Expiry Interval kept, in seconds; messages without one, or with a
    /// longer one, expire after this. `None` (the default) keeps messages until their own expiry.
    /// (The original broker defaults to 86,400 s, which silently drops every retained message
    /// after a day.)
    pub maximum_message_expiry_interval: Option<u32>,
    /// Receive Maximum advertised to clients: QoS 2 messages a client may have awaiting PUBREL at
    /// once; one more is DISCONNECT 0x93 [MQTT-3.3.4-7]. Default 1024.
    pub receive_maximum: u16,
    /// The most QoS 1/2 messages in flight to one client, whatever its own Receive Maximum
    /// (the send window is the smaller of the two). Default 8192.
    pub maximum_inflight: u16,
    /// Messages queued for an offline session (QoS 1/2, and QoS 0 if `queue_qos0_offline`);
    /// beyond it messages are dropped (the new one or the oldest, see
    /// [`Options::queue_drop_order`]) and counted. Default 1024.
    pub maximum_queued_messages: usize,
    /// Bytes of topic, payload and properties queued for one session, online or offline: a
    /// connected subscriber's queue is full at this size too. Default 16 MiB.
    pub maximum_queued_bytes: usize,
    /// Bytes of topic, payload and properties in flight to one client (sent, not yet
    /// acknowledged): the send window closes at this size as at `maximum_inflight` messages.
    /// Default 16 MiB.
    pub maximum_inflight_bytes: usize,
    /// Messages waiting for a connected client's writer (beyond its inflight window). A
    /// connected subscriber whose queue reaches this holds back the connections publishing to
    /// it until its queue drains to half (see [`Options::overload_policy`]); messages the server
    /// itself publishes (Wills, `$SYS`, the host program's) may go up to twice this. Default 1024.
    pub maximum_client_writes_pending: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions. Default false.
    pub queue_qos0_offline: bool,
    /// The highest QoS accepted and delivered. Default 2.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported. Default true.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are supported. Default true.
    pub wildcard_subscription_available: bool,
    /// Whether shared subscriptions are supported. Default true.
    pub shared_subscription_available: bool,
    /// Whether subscription identifiers are supported. Default true.
    pub subscription_identifiers_available: bool,
    /// The most inbound topic aliases per connection (advertised). Default 64.
    pub topic_alias_maximum: u16,
    /// Bytes of topic names one connection's inbound aliases may hold; an alias beyond it ends
    /// the connection with 0x97 Quota exceeded. Default 64 KiB.
    pub maximum_topic_alias_bytes: usize,
    /// User Properties one packet may carry; more end the connection with 0x97 Quota exceeded
    /// (CONNACK 0x97 for a CONNECT). Default 64.
    pub maximum_user_properties: usize,
    /// Bytes of User Properties (as encoded) one packet may carry; more end the connection
    /// like too many. Default 64 KiB.
    pub maximum_user_property_bytes: usize,
    /// Topic filters one SUBSCRIBE or UNSUBSCRIBE may carry; more end the connection with 0x97
    /// Quota exceeded. Default 256.
    pub maximum_filters_per_packet: usize,
    /// Subscriptions one session may hold; a filter beyond it gets 0x97 Quota exceeded in the
    /// SUBACK (3.x: 0x80 Failure). Default 1,024.
    pub maximum_subscriptions_per_client: usize,
    /// Retained messages kept at once; a new retained topic beyond it is not retained (the
    /// message is still delivered; a v5 QoS 1/2 publisher gets 0x97 Quota exceeded). Default
    /// 100,000.
    pub maximum_retained_messages: usize,
    /// Bytes (topic, payload and properties) of all retained messages; a retained message that
    /// would go beyond it is handled like one too many. Default 256 MiB.
    pub maximum_retained_bytes: usize,
    /// The largest packet accepted, fixed header included (advertised); larger ones end the
    /// connection with 0x95. Default 16 MiB: each connection may have to buffer one packet of
    /// this size, so the protocol's own limit (256 MiB) would let a few clients exhaust memory.
    pub maximum_packet_size: u32,
    /// The lowest protocol level accepted (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0). Default 3.
    pub minimum_protocol_version: u8,
    /// Server Keep Alive: when set, replaces every v5 client's Keep Alive (and is sent in
    /// CONNACK). Default `None`.
    pub server_keep_alive: Option<u16>,
    /// The longest Keep Alive a v5 client may use: a client asking for more, or for 0 (none),
    /// gets this value as Server Keep Alive in CONNACK, like Mosquitto's `max_keepalive`.
    /// `server_keep_alive`, when set, wins. 3.x clients cannot be told and keep their own.
    /// Default `None` (no limit).
    pub maximum_keep_alive: Option<u16>,
    /// Whether a payload whose Payload Format Indicator says UTF-8 is checked: an invalid one is
    /// refused with 0x99 Payload format invalid (PUBACK/PUBREC, or CONNACK for a Will), and a QoS 0
    /// one is dropped [MQTT-3.3.2-4]. Default false (forwarded unchecked, as the spec allows).
    pub validate_utf8_payload: bool,
    /// Response Information sent in CONNACK to v5 clients that ask for it with Request Response
    /// Information 1 (§3.2.2.3.15), e.g. a topic prefix for their responses. `{client_id}` is
    /// replaced by the client identifier. Default `None` (not sent).
    pub response_information: Option<String>,
    /// Limits on topic names and filters (length, levels).
    pub topic_rules: TopicRules,
    /// Non-default behaviours for clients or test suites that need them.
    pub compatibilities: Compatibilities,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            maximum_clients: 100_000,
            maximum_sessions: 100_000,
            maximum_session_expiry_interval: 86_400,
            maximum_message_expiry_interval: None,
            receive_maximum: 1024,
            maximum_inflight: 8192,
            maximum_queued_messages: 1024,
            maximum_queued_bytes: 16 * 1024 * 1024,
            maximum_inflight_bytes: 16 * 1024 * 1024,
            maximum_client_writes_pending: 1024,
            queue_qos0_offline: false,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            topic_alias_maximum: 64,
            maximum_topic_alias_bytes: 64 * 1024,
            maximum_user_properties: 64,
            maximum_user_property_bytes: 64 * 1024,
            maximum_filters_per_packet: 256,
            maximum_subscriptions_per_client: 1024,
            maximum_retained_messages: 100_000,
            maximum_retained_bytes: 256 * 1024 * 1024,
            maximum_packet_size: 16 * 1024 * 1024,
            minimum_protocol_version: 3,
            server_keep_alive: None,
            maximum_keep_alive: None,
            validate_utf8_payload: false,
            response_information: None,
            topic_rules: TopicRules::default(),
            compatibilities: Compatibilities::default(),
        }
    }
}

impl Capabilities {
    /// Whether a client at this level may connect.
    pub fn accepts(&self, protocol: Protocol) -> bool {
        protocol.level() >= self.minimum_protocol_version
    }

    /// The topic rules with the shared and wildcard switches applied.
    pub fn effective_topic_rules(&self) -> TopicRules {
        TopicRules {
            shared_subscriptions: self.shared_subscription_available,
            wildcard_subscriptions: self.wildcard_subscription_available,
            ..self.topic_rules
        }
    }
}

/// Switches for clients or test suites that need non-default behaviour. All are off by default:
/// the default is always the spec's behaviour.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Compatibilities {
    /// Refuse subscriptions with 0x80 Unspecified error instead of 0x87 Not authorized (the Paho
    /// interop suite expects 0x80).
    pub obscure_not_authorized: bool,
    /// After sending DISCONNECT, leave closing the connection to the client (some test clients
    /// miss a DISCONNECT followed at once by a close). A spec violation [MQTT-3.14.4-2].
    pub passive_client_disconnect: bool,
    /// Send Response Information in CONNACK even when the client did not ask for it. A spec
    /// violation [MQTT-3.1.2-28].
    pub always_return_response_info: bool,
    /// Restore the cumulative `$SYS` counters from storage on restart.
    pub restore_sys_info_on_restart: bool,
    /// Do not copy a PUBLISH's user properties onto its acknowledgement. This broker never copies
    /// them, so the switch exists only for configuration compatibility with the original broker.
    pub no_inherited_properties_on_ack: bool,
}
