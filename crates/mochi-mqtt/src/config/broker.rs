//! The `[options]` and `[capabilities]` sections: the broker's options, its MQTT capabilities and
//! limits, and the compatibility switches.

use std::time::Duration;

use anyhow::bail;
use mqtt_broker::{
    Capabilities, Compatibilities, DropOrder, Options, OverloadPolicy, SlowSubscriberPolicy,
};
use mqtt_packets::QoS;
use mqtt_topics::ShareStrategy;
use serde::{Deserialize, Serialize};

use super::Config;

/// How shared subscription groups pick a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShareStrategyConfig {
    #[default]
    RoundRobin,
    Random,
    PublisherHash,
    Sticky,
}

/// [`OverloadPolicy`]: what a connected subscriber's full queue does to its publishers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverloadPolicyConfig {
    #[default]
    Backpressure,
    Drop,
}

/// [`SlowSubscriberPolicy`]: what happens to a subscriber declared stuck.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SlowSubscriberPolicyConfig {
    #[default]
    Disconnect,
    Skip,
}

/// [`DropOrder`]: which message a full queue nobody waits for drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DropOrderConfig {
    #[default]
    Newest,
    Oldest,
}

/// [`Options`] (durations in seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OptionsConfig {
    pub(crate) connect_timeout_secs: u64,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) sys_topic_resend_interval_secs: u64,
    pub(crate) share_strategy: ShareStrategyConfig,
    /// How long a graceful shutdown (SIGINT, SIGTERM) waits for clients to go.
    pub(crate) shutdown_timeout_secs: u64,
    /// Flow control: `backpressure` (publishers wait for a full subscriber) or `drop` (QoS 0
    /// to it is dropped).
    pub(crate) overload_policy: OverloadPolicyConfig,
    /// How long a subscriber may take nothing from its full queue before it is stuck.
    pub(crate) slow_subscriber_timeout_secs: u64,
    /// `disconnect` or `skip` a stuck subscriber.
    pub(crate) slow_subscriber_policy: SlowSubscriberPolicyConfig,
    /// `newest` or `oldest`: which message a full offline queue drops.
    pub(crate) queue_drop_order: DropOrderConfig,
    /// Whether a session belongs to the identity (user name or proved principal) that created
    /// it.
    pub(crate) bind_sessions_to_identity: bool,
    /// How long acknowledgements held for synchronous durability wait for the commit.
    pub(crate) durable_ack_timeout_secs: u64,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        let options = Options::default();
        Self {
            connect_timeout_secs: options.connect_timeout.as_secs(),
            read_buffer_size: options.read_buffer_size,
            write_buffer_size: options.write_buffer_size,
            sys_topic_resend_interval_secs: options.sys_topic_resend_interval.as_secs(),
            share_strategy: ShareStrategyConfig::RoundRobin,
            shutdown_timeout_secs: options.shutdown_timeout.as_secs(),
            overload_policy: OverloadPolicyConfig::default(),
            slow_subscriber_timeout_secs: options.slow_subscriber_timeout.as_secs(),
            slow_subscriber_policy: SlowSubscriberPolicyConfig::default(),
            queue_drop_order: DropOrderConfig::default(),
            bind_sessions_to_identity: options.bind_sessions_to_identity,
            durable_ack_timeout_secs: options.durable_ack_timeout.as_secs(),
        }
    }
}

/// [`Capabilities`]; the optional limits are unlimited when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CapabilitiesConfig {
    pub(crate) maximum_clients: usize,
    pub(crate) maximum_sessions: usize,
    pub(crate) maximum_session_expiry_interval: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_message_expiry_interval: Option<u32>,
    pub(crate) receive_maximum: u16,
    pub(crate) maximum_inflight: u16,
    pub(crate) maximum_queued_messages: usize,
    pub(crate) maximum_queued_bytes: usize,
    pub(crate) maximum_inflight_bytes: usize,
    pub(crate) maximum_client_writes_pending: usize,
    pub(crate) queue_qos0_offline: bool,
    pub(crate) maximum_qos: u8,
    pub(crate) retain_available: bool,
    pub(crate) wildcard_subscription_available: bool,
    pub(crate) shared_subscription_available: bool,
    pub(crate) subscription_identifiers_available: bool,
    pub(crate) topic_alias_maximum: u16,
    pub(crate) maximum_topic_alias_bytes: usize,
    pub(crate) maximum_user_properties: usize,
    pub(crate) maximum_user_property_bytes: usize,
    pub(crate) maximum_filters_per_packet: usize,
    pub(crate) maximum_subscriptions_per_client: usize,
    pub(crate) maximum_retained_messages: usize,
    pub(crate) maximum_retained_bytes: usize,
    pub(crate) maximum_packet_size: u32,
    pub(crate) minimum_protocol_version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_keep_alive: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_keep_alive: Option<u16>,
    pub(crate) validate_utf8_payload: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_information: Option<String>,
    pub(crate) maximum_topic_length: usize,
    pub(crate) maximum_topic_levels: usize,
}

impl Default for CapabilitiesConfig {
    fn default() -> Self {
        let c = Capabilities::default();
        Self {
            maximum_clients: c.maximum_clients,
            maximum_sessions: c.maximum_sessions,
            maximum_session_expiry_interval: c.maximum_session_expiry_interval,
            maximum_message_expiry_interval: c.maximum_message_expiry_interval,
            receive_maximum: c.receive_maximum,
            maximum_inflight: c.maximum_inflight,
            maximum_queued_messages: c.maximum_queued_messages,
            maximum_queued_bytes: c.maximum_queued_bytes,
            maximum_inflight_bytes: c.maximum_inflight_bytes,
            maximum_client_writes_pending: c.maximum_client_writes_pending,
            queue_qos0_offline: c.queue_qos0_offline,
            maximum_qos: c.maximum_qos as u8,
            retain_available: c.retain_available,
            wildcard_subscription_available: c.wildcard_subscription_available,
            shared_subscription_available: c.shared_subscription_available,
            subscription_identifiers_available: c.subscription_identifiers_available,
            topic_alias_maximum: c.topic_alias_maximum,
            maximum_topic_alias_bytes: c.maximum_topic_alias_bytes,
            maximum_user_properties: c.maximum_user_properties,
            maximum_user_property_bytes: c.maximum_user_property_bytes,
            maximum_filters_per_packet: c.maximum_filters_per_packet,
            maximum_subscriptions_per_client: c.maximum_subscriptions_per_client,
            maximum_retained_messages: c.maximum_retained_messages,
            maximum_retained_bytes: c.maximum_retained_bytes,
            maximum_packet_size: c.maximum_packet_size,
            minimum_protocol_version: c.minimum_protocol_version,
            server_keep_alive: c.server_keep_alive,
            maximum_keep_alive: c.maximum_keep_alive,
            validate_utf8_payload: c.validate_utf8_payload,
            response_information: c.response_information,
            maximum_topic_length: c.topic_rules.max_length,
            maximum_topic_levels: c.topic_rules.max_levels,
        }
    }
}

/// [`Compatibilities`]: all off by default (the spec's behaviour).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CompatibilitiesConfig {
    pub(crate) obscure_not_authorized: bool,
    pub(crate) passive_client_disconnect: bool,
    pub(crate) always_return_response_info: bool,
    pub(crate) restore_sys_info_on_restart: bool,
    pub(crate) no_inherited_properties_on_ack: bool,
}

impl Config {
    /// Checks the `[capabilities]` limits: a zero that would refuse every client, message or
    /// subscription is a mistake, not a policy.
    pub(crate) fn validate_limits(&self) -> anyhow::Result<()> {
        let c = &self.capabilities;
        let at_least_one: [(&str, usize, &str); 11] = [
            (
                "maximum_clients",
                c.maximum_clients,
                "no client could connect",
            ),
            (
                "maximum_sessions",
                c.maximum_sessions,
                "no client could connect",
            ),
            (
                "receive_maximum",
                usize::from(c.receive_maximum),
                "a Receive Maximum of 0 is a protocol error",
            ),
            (
                "maximum_inflight",
                usize::from(c.maximum_inflight),
                "no QoS 1 or 2 message could be sent",
            ),
            (
                "maximum_inflight_bytes",
                c.maximum_inflight_bytes,
                "no QoS 1 or 2 message could be sent",
            ),
            (
                "maximum_queued_bytes",
                c.maximum_queued_bytes,
                "no message could be queued for a subscriber",
            ),
            (
                "maximum_client_writes_pending",
                c.maximum_client_writes_pending,
                "no message could wait for a subscriber's writer",
            ),
            (
                "maximum_filters_per_packet",
                c.maximum_filters_per_packet,
                "every SUBSCRIBE would end its connection",
            ),
            (
                "maximum_subscriptions_per_client",
                c.maximum_subscriptions_per_client,
                "no client could subscribe",
            ),
            (
                "maximum_topic_length",
                c.maximum_topic_length,
                "no topic would be valid",
            ),
            (
                "maximum_topic_levels",
                c.maximum_topic_levels,
                "no topic would be valid",
            ),
        ];
        for (key, value, why) in at_least_one {
            if value == 0 {
                bail!("capabilities.{key}: must be at least 1 ({why})");
            }
        }
        if c.maximum_packet_size == 0 {
            bail!("capabilities.maximum_packet_size: must be at least 1");
        }
        if c.topic_alias_maximum > 0 && c.maximum_topic_alias_bytes == 0 {
            bail!(
                "capabilities.maximum_topic_alias_bytes: must be at least 1 while \
                 topic_alias_maximum is above 0 (set topic_alias_maximum = 0 to turn aliases off)"
            );
        }
        if c.maximum_user_properties > 0 && c.maximum_user_property_bytes == 0 {
            bail!(
                "capabilities.maximum_user_property_bytes: must be at least 1 while \
                 maximum_user_properties is above 0 (set maximum_user_properties = 0 to refuse \
                 every User Property)"
            );
        }
        if c.retain_available {
            for (key, value) in [
                ("maximum_retained_messages", c.maximum_retained_messages),
                ("maximum_retained_bytes", c.maximum_retained_bytes),
            ] {
                if value == 0 {
                    bail!(
                        "capabilities.{key}: must be at least 1 while retain_available is true \
                         (set retain_available = false to turn retained messages off)"
                    );
                }
            }
        }
        Ok(())
    }

    /// The broker options.
    pub(crate) fn broker_options(&self) -> Options {
        let o = &self.options;
        let c = &self.capabilities;
        let mut options = Options::default();
        options.connect_timeout = Duration::from_secs(o.connect_timeout_secs);
        options.read_buffer_size = o.read_buffer_size;
        options.write_buffer_size = o.write_buffer_size;
        options.sys_topic_resend_interval = Duration::from_secs(o.sys_topic_resend_interval_secs);
        options.share_strategy = match o.share_strategy {
            ShareStrategyConfig::RoundRobin => ShareStrategy::RoundRobin,
            ShareStrategyConfig::Random => ShareStrategy::Random,
            ShareStrategyConfig::PublisherHash => ShareStrategy::PublisherHash,
            ShareStrategyConfig::Sticky => ShareStrategy::Sticky,
        };
        options.shutdown_timeout = self.shutdown_timeout();
        options.overload_policy = match o.overload_policy {
            OverloadPolicyConfig::Backpressure => OverloadPolicy::Backpressure,
            OverloadPolicyConfig::Drop => OverloadPolicy::Drop,
        };
        options.slow_subscriber_timeout = Duration::from_secs(o.slow_subscriber_timeout_secs);
        options.slow_subscriber_policy = match o.slow_subscriber_policy {
            SlowSubscriberPolicyConfig::Disconnect => SlowSubscriberPolicy::Disconnect,
            SlowSubscriberPolicyConfig::Skip => SlowSubscriberPolicy::Skip,
        };
        options.queue_drop_order = match o.queue_drop_order {
            DropOrderConfig::Newest => DropOrder::Newest,
            DropOrderConfig::Oldest => DropOrder::Oldest,
        };
        options.bind_sessions_to_identity = o.bind_sessions_to_identity;
        options.durable_ack_timeout = Duration::from_secs(o.durable_ack_timeout_secs);

        let caps = &mut options.capabilities;
        caps.maximum_clients = c.maximum_clients;
        caps.maximum_sessions = c.maximum_sessions;
        caps.maximum_session_expiry_interval = c.maximum_session_expiry_interval;
        caps.maximum_message_expiry_interval = c.maximum_message_expiry_interval;
        caps.receive_maximum = c.receive_maximum;
        caps.maximum_inflight = c.maximum_inflight;
        caps.maximum_queued_messages = c.maximum_queued_messages;
        caps.maximum_queued_bytes = c.maximum_queued_bytes;
        caps.maximum_inflight_bytes = c.maximum_inflight_bytes;
        caps.maximum_client_writes_pending = c.maximum_client_writes_pending;
        caps.queue_qos0_offline = c.queue_qos0_offline;
        caps.maximum_qos = match c.maximum_qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        caps.retain_available = c.retain_available;
        caps.wildcard_subscription_available = c.wildcard_subscription_available;
        caps.shared_subscription_available = c.shared_subscription_available;
        caps.subscription_identifiers_available = c.subscription_identifiers_available;
        caps.topic_alias_maximum = c.topic_alias_maximum;
        caps.maximum_topic_alias_bytes = c.maximum_topic_alias_bytes;
        caps.maximum_user_properties = c.maximum_user_properties;
        caps.maximum_user_property_bytes = c.maximum_user_property_bytes;
        caps.maximum_filters_per_packet = c.maximum_filters_per_packet;
        caps.maximum_subscriptions_per_client = c.maximum_subscriptions_per_client;
        caps.maximum_retained_messages = c.maximum_retained_messages;
        caps.maximum_retained_bytes = c.maximum_retained_bytes;
        caps.maximum_packet_size = c.maximum_packet_size;
        caps.minimum_protocol_version = c.minimum_protocol_version;
        caps.server_keep_alive = c.server_keep_alive;
        caps.maximum_keep_alive = c.maximum_keep_alive;
        caps.validate_utf8_payload = c.validate_utf8_payload;
        caps.response_information = c.response_information.clone();
        caps.topic_rules.max_length = c.maximum_topic_length;
        caps.topic_rules.max_levels = c.maximum_topic_levels;

        let k = &self.compatibilities;
        let compat: &mut Compatibilities = &mut caps.compatibilities;
        compat.obscure_not_authorized = k.obscure_not_authorized;
        compat.passive_client_disconnect = k.passive_client_disconnect;
        compat.always_return_response_info = k.always_return_response_info;
        compat.restore_sys_info_on_restart = k.restore_sys_info_on_restart;
        compat.no_inherited_properties_on_ack = k.no_inherited_properties_on_ack;
        options
    }
}
