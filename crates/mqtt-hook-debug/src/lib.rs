//! A debugging hook for the Mochi MQTT broker: [`DebugHook`] logs every packet the broker reads
//! from a client and writes to it, with its decoded fields, through [`tracing`] at debug level.
//!
//! Each packet is one event with the target `mqtt_hook_debug` and these structured fields (a
//! field is left out when the packet has no such thing):
//!
//! | field | what |
//! | --- | --- |
//! | `client_id` | the client's identifier |
//! | `direction` | `"in"` (read from the client) or `"out"` (written to it) |
//! | `packet_type` | `"PUBLISH"`, `"PUBREC"`, … |
//! | `packet_id` | the Packet Identifier |
//! | `topic` | the PUBLISH topic (the full topic, also when a topic alias was used) |
//! | `qos`, `retain`, `dup` | the PUBLISH flags (`qos` as 0, 1 or 2) |
//! | `reason_code` | the reason code, e.g. `0x00 (Success)` |
//! | `reason_codes` | the reason codes of SUBACK and UNSUBACK |
//! | `filters` | the filters of SUBSCRIBE (with their options) and UNSUBSCRIBE |
//! | `session_present` | CONNACK's Session Present |
//! | `protocol_level`, `clean_start`, `keep_alive`, `username`, `password`, `will` | CONNECT (the password only as `true` when present: never its value) |
//! | `properties` | the MQTT 5 properties that are set, e.g. `message_expiry_interval=60, content_type=text/plain` |
//! | `payload_len` | the payload size in bytes (PUBLISH) |
//! | `payload` | the payload as text or hex, when [`DebugOptions::payload`] asks for it |
//!
//! The hook never changes a packet. It handles only [`HookEvents::ON_CONNECT`] (to see the
//! CONNECT packet, which the broker reads before a connection is established),
//! [`HookEvents::ON_PACKET_READ`] (every later packet from the client) and
//! [`HookEvents::ON_PACKET_SENT`] (every packet written to the client, as written: after
//! problem information was stripped, and only when it was really sent). It does nothing at all
//! when debug events of its target are disabled.
//!
//! A few packets do not pass through the hook system and are not logged: a CONNACK refusing a
//! connection, the AUTH packets of an enhanced authentication exchange before CONNACK, and the
//! DISCONNECT the server sends when it closes a connection.
//!
//! # Example
//!
//! ```
//! use mqtt_broker::{Options, Server};
//! use mqtt_hook_debug::{DebugHook, DebugOptions, PayloadFormat};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Options::default());
//! // Payloads as text, at most 64 bytes of each; PINGREQ and PINGRESP stay hidden.
//! let options = DebugOptions::default()
//!     .payload(PayloadFormat::Text)
//!     .max_payload_bytes(64);
//! server.add_hook(DebugHook::new(options))?;
//! // Install a `tracing` subscriber that shows `mqtt_hook_debug=debug`, then serve as usual.
//! # server.close().await;
//! # Ok(())
//! # }
//! ```

use std::fmt::{self, Display, Write as _};

use mqtt_broker::ClientInfo;
use mqtt_broker::hooks::{ConnectRefusal, Hook, HookEvents};
use mqtt_packets::{
    AckProperties, AuthProperties, ConnAckProperties, Connect, ConnectProperties,
    DisconnectProperties, Packet, PublishProperties, ReasonCode, SubscribeProperties, Subscription,
    UnsubscribeProperties, UserProperty, Will, WillProperties,
};
use tracing::Level;

/// How [`DebugHook`] shows PUBLISH payloads (and Correlation Data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadFormat {
    /// Not at all: only the payload size is logged. The default, since payloads may be private.
    #[default]
    Off,
    /// As UTF-8 text. Control characters and backslashes are escaped (`\n`, `\u{1b}`, `\\`),
    /// and bytes that are not UTF-8 are shown as `\xNN`.
    Text,
    /// As lowercase hexadecimal, two digits per byte, e.g. `68656c6c6f`.
    Hex,
}

/// What [`DebugHook`] shows. Build it from [`DebugOptions::default`] with the setters.
///
/// The default: payloads not shown ([`PayloadFormat::Off`]), at most 256 payload bytes when they
/// are, and PINGREQ / PINGRESP hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DebugOptions {
    /// How payloads are shown.
    pub payload: PayloadFormat,
    /// At most this many payload bytes are shown; a longer payload is cut (in text, at a
    /// character boundary) and followed by `... [N more bytes]`. `usize::MAX` shows everything.
    pub max_payload_bytes: usize,
    /// Whether PINGREQ and PINGRESP are left out of the log.
    pub hide_pings: bool,
}

impl Default for DebugOptions {
    fn default() -> Self {
        Self {
            payload: PayloadFormat::Off,
            max_payload_bytes: 256,
            hide_pings: true,
        }
    }
}

impl DebugOptions {
    /// The same options with payloads shown in this format.
    #[must_use]
    pub fn payload(self, payload: PayloadFormat) -> Self {
        Self { payload, ..self }
    }

    /// The same options showing at most this many bytes of each payload.
    #[must_use]
    pub fn max_payload_bytes(self, max_payload_bytes: usize) -> Self {
        Self {
            max_payload_bytes,
            ..self
        }
    }

    /// The same options, hiding PINGREQ and PINGRESP or not.
    #[must_use]
    pub fn hide_pings(self, hide_pings: bool) -> Self {
        Self { hide_pings, ..self }
    }
}

/// Whether a packet was read from the client or written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read from the client.
    In,
    /// Written to the client.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`, as logged in the `direction` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

impl Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hook that logs every packet read from and written to each client through `tracing`, at
/// debug level with the target `mqtt_hook_debug`. See the [crate documentation](crate) for the
/// fields of each event.
#[derive(Debug, Clone, Default)]
pub struct DebugHook {
    options: DebugOptions,
}

impl DebugHook {
    /// A hook with these options.
    pub fn new(options: DebugOptions) -> Self {
        Self { options }
    }

    /// The hook's options.
    pub fn options(&self) -> &DebugOptions {
        &self.options
    }

    /// Logs one packet, if debug events are enabled and the packet is not hidden.
    fn log(&self, client: &ClientInfo, direction: Direction, packet: &Packet) {
        if !tracing::enabled!(Level::DEBUG) {
            return;
        }
        let Some(s) = summarize(&self.options, packet) else {
            return;
        };
        tracing::debug!(
            client_id = &*client.client_id,
            direction = direction.as_str(),
            packet_type = s.packet_type,
            packet_id = s.packet_id,
            topic = s.topic,
            qos = s.qos,
            retain = s.retain,
            dup = s.dup,
            reason_code = s.reason_code.as_deref(),
            reason_codes = s.reason_codes.as_deref(),
            filters = s.filters.as_deref(),
            session_present = s.session_present,
            protocol_level = s.protocol_level,
            clean_start = s.clean_start,
            keep_alive = s.keep_alive,
            username = s.username,
            password = s.password,
            will = s.will.as_deref(),
            properties = s.properties.as_deref(),
            payload_len = s.payload_len,
            payload = s.payload.as_deref(),
            "{direction} {}",
            s.packet_type,
        );
    }
}

impl Hook for DebugHook {
    fn id(&self) -> &str {
        "debug"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT | HookEvents::ON_PACKET_READ | HookEvents::ON_PACKET_SENT
    }

    fn on_connect(&self, client: &ClientInfo, connect: &Connect) -> Result<(), ConnectRefusal> {
        if tracing::enabled!(Level::DEBUG) {
            // The broker reads CONNECT before any hook sees packets; a copy is cheap (the
            // strings and payloads are shared `Bytes`) and only made when logging.
            self.log(
                client,
                Direction::In,
                &Packet::Connect(Box::new(connect.clone())),
            );
        }
        Ok(())
    }

    fn on_packet_read(&self, client: &ClientInfo, packet: Packet) -> Result<Packet, ReasonCode> {
        self.log(client, Direction::In, &packet);
        Ok(packet)
    }

    fn on_packet_sent(&self, client: &ClientInfo, packet: &Packet, _bytes: usize) {
        self.log(client, Direction::Out, packet);
    }
}

/// The decoded fields of one packet, ready to log.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary<'a> {
    packet_type: &'static str,
    packet_id: Option<u16>,
    topic: Option<&'a str>,
    qos: Option<u8>,
    retain: Option<bool>,
    dup: Option<bool>,
    reason_code: Option<String>,
    reason_codes: Option<String>,
    filters: Option<String>,
    session_present: Option<bool>,
    protocol_level: Option<u8>,
    clean_start: Option<bool>,
    keep_alive: Option<u16>,
    username: Option<&'a str>,
    password: Option<bool>,
    will: Option<String>,
    properties: Option<String>,
    payload_len: Option<usize>,
    payload: Option<String>,
}

/// The fields of `packet`, or `None` when the options hide it.
fn summarize<'a>(options: &DebugOptions, packet: &'a Packet) -> Option<Summary<'a>> {
    let mut s = Summary {
        packet_type: packet.packet_type().name(),
        ..Summary::default()
    };
    match packet {
        Packet::PingReq | Packet::PingResp if options.hide_pings => return None,
        Packet::PingReq | Packet::PingResp => {}
        Packet::Connect(connect) => {
            s.protocol_level = Some(connect.protocol.level());
            s.clean_start = Some(connect.clean_start);
            s.keep_alive = Some(connect.keep_alive);
            s.username = connect.username.as_ref().map(|name| name.as_str());
            s.password = connect.password.as_ref().map(|_| true);
            s.will = connect.will.as_ref().map(|will| render_will(options, will));
            s.properties = connect_properties(options, &connect.properties);
        }
        Packet::ConnAck(connack) => {
            s.session_present = Some(connack.session_present);
            s.reason_code = Some(connack.reason_code.to_string());
            s.properties = connack_properties(&connack.properties);
        }
        Packet::Publish(publish) => {
            s.packet_id = publish.packet_id.map(|id| id.get());
            s.topic = Some(publish.topic.as_str());
            s.qos = Some(publish.qos.as_u8());
            s.retain = Some(publish.retain);
            s.dup = Some(publish.dup);
            s.properties = publish_properties(options, &publish.properties);
            s.payload_len = Some(publish.payload.len());
            s.payload = render_payload(&publish.payload, options);
        }
        Packet::PubAck(ack) => ack_fields(&mut s, ack.packet_id, ack.reason_code, &ack.properties),
        Packet::PubRec(ack) => ack_fields(&mut s, ack.packet_id, ack.reason_code, &ack.properties),
        Packet::PubRel(ack) => ack_fields(&mut s, ack.packet_id, ack.reason_code, &ack.properties),
        Packet::PubComp(ack) => ack_fields(&mut s, ack.packet_id, ack.reason_code, &ack.properties),
        Packet::Subscribe(subscribe) => {
            s.packet_id = Some(subscribe.packet_id.get());
            s.filters = Some(render_subscriptions(&subscribe.subscriptions));
            s.properties = subscribe_properties(&subscribe.properties);
        }
        Packet::SubAck(ack) => {
            s.packet_id = Some(ack.packet_id.get());
            s.reason_codes = render_codes(&ack.reason_codes);
            s.properties = ack_properties(&ack.properties);
        }
        Packet::Unsubscribe(unsubscribe) => {
            s.packet_id = Some(unsubscribe.packet_id.get());
            s.filters = Some(join(unsubscribe.filters.iter().map(|f| f.as_str())));
            s.properties = unsubscribe_properties(&unsubscribe.properties);
        }
        Packet::UnsubAck(ack) => {
            s.packet_id = Some(ack.packet_id.get());
            s.reason_codes = render_codes(&ack.reason_codes);
            s.properties = ack_properties(&ack.properties);
        }
        Packet::Disconnect(disconnect) => {
            s.reason_code = Some(disconnect.reason_code.to_string());
            s.properties = disconnect_properties(&disconnect.properties);
        }
        Packet::Auth(auth) => {
            s.reason_code = Some(auth.reason_code.to_string());
            s.properties = auth_properties(&auth.properties);
        }
    }
    Some(s)
}

/// The fields of PUBACK, PUBREC, PUBREL and PUBCOMP.
fn ack_fields(
    s: &mut Summary<'_>,
    packet_id: mqtt_packets::PacketId,
    reason_code: ReasonCode,
    properties: &AckProperties,
) {
    s.packet_id = Some(packet_id.get());
    s.reason_code = Some(reason_code.to_string());
    s.properties = ack_properties(properties);
}

/// `items` separated by `", "`.
fn join<T: Display>(items: impl Iterator<Item = T>) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{item}");
    }
    out
}

/// Reason codes separated by `", "`; `None` for an empty list (3.1.1 UNSUBACK).
fn render_codes(codes: &[ReasonCode]) -> Option<String> {
    (!codes.is_empty()).then(|| join(codes.iter()))
}

/// SUBSCRIBE filters with their options, e.g. `a/# (QoS 1, no_local)`.
fn render_subscriptions(subscriptions: &[Subscription]) -> String {
    join(subscriptions.iter().map(|subscription| {
        let options = subscription.options;
        let mut out = format!(
            "{} (QoS {}",
            subscription.filter,
            options.maximum_qos.as_u8()
        );
        if options.no_local {
            out.push_str(", no_local");
        }
        if options.retain_as_published {
            out.push_str(", retain_as_published");
        }
        let handling = options.retain_handling as u8;
        if handling != 0 {
            let _ = write!(out, ", retain_handling={handling}");
        }
        out.push(')');
        out
    }))
}

/// A Will: `topic (QoS n[, retain], N bytes[: payload])[ {properties}]`.
fn render_will(options: &DebugOptions, will: &Will) -> String {
    let mut out = format!("{} (QoS {}", will.topic, will.qos.as_u8());
    if will.retain {
        out.push_str(", retain");
    }
    let _ = write!(out, ", {} bytes", will.payload.len());
    if let Some(payload) = render_payload(&will.payload, options) {
        let _ = write!(out, ": {payload}");
    }
    out.push(')');
    if let Some(properties) = will_properties(options, &will.properties) {
        let _ = write!(out, " {{{properties}}}");
    }
    out
}

/// Renders a payload as the options say; `None` when payloads are not shown.
fn render_payload(payload: &[u8], options: &DebugOptions) -> Option<String> {
    let max = options.max_payload_bytes;
    let (mut out, shown) = match options.payload {
        PayloadFormat::Off => return None,
        PayloadFormat::Hex => {
            let shown = payload.len().min(max);
            let mut out = String::with_capacity(shown.saturating_mul(2));
            for byte in payload.iter().take(shown) {
                let _ = write!(out, "{byte:02x}");
            }
            (out, shown)
        }
        PayloadFormat::Text => text(payload, max),
    };
    let rest = payload.len().saturating_sub(shown);
    if rest > 0 {
        let _ = write!(out, "... [{rest} more bytes]");
    }
    Some(out)
}

/// The text of at most `max` bytes of `payload`, cut at a character boundary, and how many bytes
/// it shows.
fn text(payload: &[u8], max: usize) -> (String, usize) {
    // Look no further than a character beyond the limit, so a huge payload costs nothing more.
    let window = payload.get(..max.saturating_add(4)).unwrap_or(payload);
    let mut out = String::new();
    let mut shown = 0usize;
    for chunk in window.utf8_chunks() {
        for c in chunk.valid().chars() {
            let len = c.len_utf8();
            if shown + len > max {
                return (out, shown);
            }
            shown += len;
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            if shown >= max {
                return (out, shown);
            }
            shown += 1;
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    (out, shown)
}

/// A compact rendering of a property set: the properties that are set, as `name=value`
/// separated by `", "`.
struct Props<'o> {
    out: String,
    options: Option<&'o DebugOptions>,
}

impl<'o> Props<'o> {
    /// Binary properties (Correlation Data) are shown as payloads are, when `options` is given;
    /// otherwise (and always for Authentication Data) only their size.
    fn new(options: Option<&'o DebugOptions>) -> Self {
        Self {
            out: String::new(),
            options,
        }
    }

    fn start(&mut self, name: &str) {
        if !self.out.is_empty() {
            self.out.push_str(", ");
        }
        self.out.push_str(name);
        self.out.push('=');
    }

    fn field<T: Display>(&mut self, name: &str, value: Option<T>) -> &mut Self {
        if let Some(value) = value {
            self.start(name);
            let _ = write!(self.out, "{value}");
        }
        self
    }

    /// Binary data: shown as a payload, or `<N bytes>`.
    fn data(&mut self, name: &str, value: Option<&[u8]>, secret: bool) -> &mut Self {
        if let Some(value) = value {
            self.start(name);
            let shown = if secret {
                None
            } else {
                self.options.and_then(|o| render_payload(value, o))
            };
            match shown {
                Some(shown) => self.out.push_str(&shown),
                None => {
                    let _ = write!(self.out, "<{} bytes>", value.len());
                }
            }
        }
        self
    }

    fn list<T: Display>(&mut self, name: &str, values: &[T]) -> &mut Self {
        if !values.is_empty() {
            self.start(name);
            let _ = write!(self.out, "[{}]", join(values.iter()));
        }
        self
    }

    fn users(&mut self, users: &[UserProperty]) -> &mut Self {
        if !users.is_empty() {
            self.start("user_properties");
            let pairs = users.iter().map(|u| format!("{}:{}", u.name, u.value));
            let _ = write!(self.out, "[{}]", join(pairs));
        }
        self
    }

    fn finish(&mut self) -> Option<String> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }
}

fn connect_properties(options: &DebugOptions, p: &ConnectProperties) -> Option<String> {
    Props::new(Some(options))
        .field("session_expiry_interval", p.session_expiry_interval)
        .field("receive_maximum", p.receive_maximum)
        .field("maximum_packet_size", p.maximum_packet_size)
        .field("topic_alias_maximum", p.topic_alias_maximum)
        .field(
            "request_response_information",
            p.request_response_information,
        )
        .field("request_problem_information", p.request_problem_information)
        .field("authentication_method", p.authentication_method.as_ref())
        .data(
            "authentication_data",
            p.authentication_data.as_deref(),
            true,
        )
        .users(&p.user_properties)
        .finish()
}

fn will_properties(options: &DebugOptions, p: &WillProperties) -> Option<String> {
    Props::new(Some(options))
        .field("will_delay_interval", p.will_delay_interval)
        .field(
            "payload_format_indicator",
            p.payload_format_indicator.map(|v| v as u8),
        )
        .field("message_expiry_interval", p.message_expiry_interval)
        .field("content_type", p.content_type.as_ref())
        .field("response_topic", p.response_topic.as_ref())
        .data("correlation_data", p.correlation_data.as_deref(), false)
        .users(&p.user_properties)
        .finish()
}

fn connack_properties(p: &ConnAckProperties) -> Option<String> {
    Props::new(None)
        .field("session_expiry_interval", p.session_expiry_interval)
        .field("receive_maximum", p.receive_maximum)
        .field("maximum_qos", p.maximum_qos.map(|q| q.as_u8()))
        .field("retain_available", p.retain_available)
        .field("maximum_packet_size", p.maximum_packet_size)
        .field(
            "assigned_client_identifier",
            p.assigned_client_identifier.as_ref(),
        )
        .field("topic_alias_maximum", p.topic_alias_maximum)
        .field("reason_string", p.reason_string.as_ref())
        .field(
            "wildcard_subscription_available",
            p.wildcard_subscription_available,
        )
        .field(
            "subscription_identifiers_available",
            p.subscription_identifiers_available,
        )
        .field(
            "shared_subscription_available",
            p.shared_subscription_available,
        )
        .field("server_keep_alive", p.server_keep_alive)
        .field("response_information", p.response_information.as_ref())
        .field("server_reference", p.server_reference.as_ref())
        .field("authentication_method", p.authentication_method.as_ref())
        .data(
            "authentication_data",
            p.authentication_data.as_deref(),
            true,
        )
        .users(&p.user_properties)
        .finish()
}

fn publish_properties(options: &DebugOptions, p: &PublishProperties) -> Option<String> {
    Props::new(Some(options))
        .field(
            "payload_format_indicator",
            p.payload_format_indicator.map(|v| v as u8),
        )
        .field("message_expiry_interval", p.message_expiry_interval)
        .field("topic_alias", p.topic_alias)
        .field("response_topic", p.response_topic.as_ref())
        .data("correlation_data", p.correlation_data.as_deref(), false)
        .field("content_type", p.content_type.as_ref())
        .list("subscription_identifiers", &p.subscription_identifiers)
        .users(&p.user_properties)
        .finish()
}

fn ack_properties(p: &AckProperties) -> Option<String> {
    Props::new(None)
        .field("reason_string", p.reason_string.as_ref())
        .users(&p.user_properties)
        .finish()
}

fn subscribe_properties(p: &SubscribeProperties) -> Option<String> {
    Props::new(None)
        .field("subscription_identifier", p.subscription_identifier)
        .users(&p.user_properties)
        .finish()
}

fn unsubscribe_properties(p: &UnsubscribeProperties) -> Option<String> {
    Props::new(None).users(&p.user_properties).finish()
}

fn disconnect_properties(p: &DisconnectProperties) -> Option<String> {
    Props::new(None)
        .field("session_expiry_interval", p.session_expiry_interval)
        .field("reason_string", p.reason_string.as_ref())
        .field("server_reference", p.server_reference.as_ref())
        .users(&p.user_properties)
        .finish()
}

fn auth_properties(p: &AuthProperties) -> Option<String> {
    Props::new(None)
        .field("authentication_method", p.authentication_method.as_ref())
        .data(
            "authentication_data",
            p.authentication_data.as_deref(),
            true,
        )
        .field("reason_string", p.reason_string.as_ref())
        .users(&p.user_properties)
        .finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use mqtt_packets::{
        MqttString, PacketId, PubRec, Publish, QoS, RetainHandling, SubAck, Subscribe,
        SubscriptionOptions, Unsubscribe,
    };

    fn s(text: &str) -> MqttString {
        MqttString::new(text).unwrap()
    }

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn show(format: PayloadFormat, max: usize, payload: &[u8]) -> Option<String> {
        let options = DebugOptions::default()
            .payload(format)
            .max_payload_bytes(max);
        render_payload(payload, &options)
    }

    #[test]
    fn defaults_are_quiet() {
        let options = DebugOptions::default();
        assert_eq!(options.payload, PayloadFormat::Off);
        assert_eq!(options.max_payload_bytes, 256);
        assert!(options.hide_pings);
        assert_eq!(DebugHook::default().options(), &options);
    }

    #[test]
    fn payload_off_shows_nothing() {
        assert_eq!(show(PayloadFormat::Off, 100, b"secret"), None);
    }

    #[test]
    fn payload_text_whole_and_truncated() {
        assert_eq!(
            show(PayloadFormat::Text, 100, b"21.5").as_deref(),
            Some("21.5")
        );
        assert_eq!(
            show(PayloadFormat::Text, 5, b"hello world").as_deref(),
            Some("hello... [6 more bytes]")
        );
        // Exactly at the limit: no marker.
        assert_eq!(
            show(PayloadFormat::Text, 5, b"hello").as_deref(),
            Some("hello")
        );
        assert_eq!(show(PayloadFormat::Text, 0, b"").as_deref(), Some(""));
        assert_eq!(
            show(PayloadFormat::Text, 0, b"abc").as_deref(),
            Some("... [3 more bytes]")
        );
    }

    #[test]
    fn payload_text_cuts_at_a_character_boundary() {
        // "é" is two bytes: a limit of 2 shows "a" and counts the cut character as unshown.
        let payload = "aéb".as_bytes();
        assert_eq!(
            show(PayloadFormat::Text, 2, payload).as_deref(),
            Some("a... [3 more bytes]")
        );
        assert_eq!(
            show(PayloadFormat::Text, 3, payload).as_deref(),
            Some("aé... [1 more bytes]")
        );
        assert_eq!(
            show(PayloadFormat::Text, 4, payload).as_deref(),
            Some("aéb")
        );
    }

    #[test]
    fn payload_text_escapes_controls_backslashes_and_bad_bytes() {
        assert_eq!(
            show(PayloadFormat::Text, 100, b"a\nb\t\\c\x1b").as_deref(),
            Some("a\\nb\\t\\\\c\\u{1b}")
        );
        assert_eq!(
            show(PayloadFormat::Text, 100, b"ok\xff\xfe!").as_deref(),
            Some("ok\\xff\\xfe!")
        );
        // Invalid bytes count one each against the limit.
        assert_eq!(
            show(PayloadFormat::Text, 3, b"ok\xff\xfe!").as_deref(),
            Some("ok\\xff... [2 more bytes]")
        );
    }

    #[test]
    fn payload_hex_whole_and_truncated() {
        assert_eq!(
            show(PayloadFormat::Hex, 100, b"\x00\x01\xabhi").as_deref(),
            Some("0001ab6869")
        );
        assert_eq!(
            show(PayloadFormat::Hex, 2, b"\x00\x01\xabhi").as_deref(),
            Some("0001... [3 more bytes]")
        );
        assert_eq!(show(PayloadFormat::Hex, 100, b"").as_deref(), Some(""));
    }

    #[test]
    fn unlimited_shows_everything() {
        let payload = vec![b'x'; 10_000];
        let shown = show(PayloadFormat::Text, usize::MAX, &payload).unwrap();
        assert_eq!(shown.len(), 10_000);
        let shown = show(PayloadFormat::Hex, usize::MAX, &payload).unwrap();
        assert_eq!(shown.len(), 20_000);
    }

    #[test]
    fn pings_hidden_by_default_and_shown_on_request() {
        let hidden = DebugOptions::default();
        assert_eq!(summarize(&hidden, &Packet::PingReq), None);
        assert_eq!(summarize(&hidden, &Packet::PingResp), None);
        let shown = DebugOptions::default().hide_pings(false);
        let summary = summarize(&shown, &Packet::PingReq).unwrap();
        assert_eq!(
            summary,
            Summary {
                packet_type: "PINGREQ",
                ..Summary::default()
            }
        );
        assert_eq!(
            summarize(&shown, &Packet::PingResp).unwrap().packet_type,
            "PINGRESP"
        );
    }

    #[test]
    fn publish_fields_and_properties() {
        let mut publish = Publish::new(s("sensors/1/temp"), &b"21.5 degrees"[..]);
        publish.qos = QoS::ExactlyOnce;
        publish.packet_id = Some(pid(7));
        publish.retain = true;
        publish.properties.message_expiry_interval = Some(60);
        publish.properties.content_type = Some(s("text/plain"));
        publish.properties.correlation_data = Some(bytes_of(b"\x01\x02"));
        publish
            .properties
            .user_properties
            .push(UserProperty::new(s("a"), s("1")));
        let packet = Packet::Publish(publish);
        let options = DebugOptions::default()
            .payload(PayloadFormat::Text)
            .max_payload_bytes(4);
        let summary = summarize(&options, &packet).unwrap();
        assert_eq!(
            summary,
            Summary {
                packet_type: "PUBLISH",
                packet_id: Some(7),
                topic: Some("sensors/1/temp"),
                qos: Some(2),
                retain: Some(true),
                dup: Some(false),
                properties: Some(
                    "message_expiry_interval=60, correlation_data=\\u{1}\\u{2}, \
                     content_type=text/plain, user_properties=[a:1]"
                        .to_string()
                ),
                payload_len: Some(12),
                payload: Some("21.5... [8 more bytes]".to_string()),
                ..Summary::default()
            }
        );
        // Payloads off: correlation data shows as a size only, the payload not at all.
        let summary = summarize(&DebugOptions::default(), &packet).unwrap();
        assert_eq!(summary.payload, None);
        assert_eq!(summary.payload_len, Some(12));
        assert_eq!(
            summary.properties.as_deref(),
            Some(
                "message_expiry_interval=60, correlation_data=<2 bytes>, \
                 content_type=text/plain, user_properties=[a:1]"
            )
        );
    }

    fn bytes_of(data: &'static [u8]) -> bytes::Bytes {
        bytes::Bytes::from_static(data)
    }

    #[test]
    fn acks_carry_id_and_reason_code() {
        let mut rec = PubRec::with_reason(pid(9), ReasonCode::NOT_AUTHORIZED);
        rec.properties.reason_string = Some(s("no"));
        let packet = Packet::PubRec(rec);
        let summary = summarize(&DebugOptions::default(), &packet).unwrap();
        assert_eq!(
            summary,
            Summary {
                packet_type: "PUBREC",
                packet_id: Some(9),
                reason_code: Some("0x87 (Not authorized)".to_string()),
                properties: Some("reason_string=no".to_string()),
                ..Summary::default()
            }
        );
    }

    #[test]
    fn subscribe_and_suback() {
        let subscribe = Subscribe::new(
            pid(3),
            vec![
                Subscription::new(s("a/#"), QoS::AtLeastOnce),
                Subscription {
                    filter: s("b/+"),
                    options: SubscriptionOptions {
                        maximum_qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                },
            ],
        );
        let packet = Packet::Subscribe(subscribe);
        let summary = summarize(&DebugOptions::default(), &packet).unwrap();
        assert_eq!(summary.packet_id, Some(3));
        assert_eq!(
            summary.filters.as_deref(),
            Some("a/# (QoS 1), b/+ (QoS 2, no_local, retain_as_published, retain_handling=2)")
        );
        let suback = SubAck::new(
            pid(3),
            vec![
                ReasonCode::granted(QoS::AtLeastOnce),
                ReasonCode::NOT_AUTHORIZED,
            ],
        );
        let packet = Packet::SubAck(suback);
        let summary = summarize(&DebugOptions::default(), &packet).unwrap();
        assert_eq!(
            summary.reason_codes.as_deref(),
            Some("0x01 (Granted QoS 1), 0x87 (Not authorized)")
        );
        let unsubscribe = Unsubscribe::new(pid(4), vec![s("a/#"), s("b/+")]);
        let packet = Packet::Unsubscribe(unsubscribe);
        let summary = summarize(&DebugOptions::default(), &packet).unwrap();
        assert_eq!(summary.filters.as_deref(), Some("a/#, b/+"));
    }

    #[test]
    fn connect_never_shows_the_password() {
        let mut connect = Connect::new(mqtt_packets::Protocol::V5, s("dev-1"));
        connect.username = Some(s("alice"));
        connect.password = Some(bytes_of(b"hunter2"));
        connect.keep_alive = 30;
        connect.properties.session_expiry_interval = Some(300);
        connect.properties.authentication_method = Some(s("SCRAM-SHA-256"));
        connect.properties.authentication_data = Some(bytes_of(b"client-first"));
        connect.will = Some(Will {
            topic: s("dev/1/status"),
            payload: bytes_of(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..WillProperties::default()
            },
        });
        let packet = Packet::Connect(Box::new(connect));
        let options = DebugOptions::default().payload(PayloadFormat::Text);
        let summary = summarize(&options, &packet).unwrap();
        assert_eq!(
            summary,
            Summary {
                packet_type: "CONNECT",
                protocol_level: Some(5),
                clean_start: Some(true),
                keep_alive: Some(30),
                username: Some("alice"),
                password: Some(true),
                will: Some(
                    "dev/1/status (QoS 1, retain, 7 bytes: offline) {will_delay_interval=5}"
                        .to_string()
                ),
                properties: Some(
                    "session_expiry_interval=300, authentication_method=SCRAM-SHA-256, \
                     authentication_data=<12 bytes>"
                        .to_string()
                ),
                ..Summary::default()
            }
        );
        let rendered = format!("{summary:?}");
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert!(!rendered.contains("client-first"), "{rendered}");
    }

    #[test]
    fn provides_only_what_it_uses() {
        let provided = DebugHook::default().provides();
        assert_eq!(
            provided,
            HookEvents::ON_CONNECT | HookEvents::ON_PACKET_READ | HookEvents::ON_PACKET_SENT
        );
        assert!(!provided.contains(HookEvents::ON_PACKET_ENCODE));
    }
}
