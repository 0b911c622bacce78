//! The broker's counters as JSON (`/api/sysinfo`) and as Prometheus text (`/metrics`).

use std::fmt::Write as _;

use mqtt_broker::sys::SysSnapshot;

use crate::ListenerStatsSnapshot;

/// One listener's figures, for the JSON and the metrics.
#[derive(Debug, Clone)]
pub(crate) struct ListenerFigures {
    pub(crate) id: String,
    pub(crate) protocol: &'static str,
    pub(crate) address: String,
    pub(crate) stats: ListenerStatsSnapshot,
}

/// Escapes a string for a JSON string literal.
fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(control));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// The `$SYS` information as a JSON object. Field names follow the original broker's
/// `system.Info` where it has the figure (`version`, `started`, `time`, `uptime`,
/// `bytes_received`, `clients_connected`, ...), followed by this broker's own counters and the
/// listeners.
pub(crate) fn sysinfo_json(
    snapshot: &SysSnapshot,
    now_unix: u64,
    listeners: &[ListenerFigures],
) -> String {
    let uptime = now_unix.saturating_sub(snapshot.started);
    let fields: [(&str, u64); 27] = [
        ("started", snapshot.started),
        ("time", now_unix),
        ("uptime", uptime),
        ("bytes_received", snapshot.bytes_received),
        ("bytes_sent", snapshot.bytes_sent),
        ("clients_connected", snapshot.clients_connected),
        (
            "clients_disconnected",
            snapshot.sessions.saturating_sub(snapshot.clients_connected),
        ),
        ("clients_maximum", snapshot.clients_maximum),
        ("clients_total", snapshot.sessions),
        ("messages_received", snapshot.messages_received),
        ("messages_sent", snapshot.messages_sent),
        ("messages_dropped", snapshot.messages_dropped),
        ("retained", snapshot.retained),
        ("inflight", snapshot.inflight),
        ("subscriptions", snapshot.subscriptions),
        ("packets_received", snapshot.packets_received),
        ("packets_sent", snapshot.packets_sent),
        ("memory_alloc", snapshot.memory),
        ("threads", snapshot.tasks),
        ("connections_total", snapshot.connections_total),
        ("connections_refused", snapshot.connections_refused),
        ("sessions", snapshot.sessions),
        ("protocol_errors", snapshot.protocol_errors),
        ("tasks", snapshot.tasks),
        ("queued", snapshot.queued),
        ("hook_errors", snapshot.hook_errors),
        ("storage_errors", snapshot.storage_errors),
    ];
    let mut out = String::with_capacity(1024);
    out.push_str("{\"version\":");
    json_string(&mut out, env!("CARGO_PKG_VERSION"));
    for (name, value) in fields {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    out.push_str(",\"listeners\":[");
    for (index, listener) in listeners.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        json_string(&mut out, &listener.id);
        out.push_str(",\"protocol\":");
        json_string(&mut out, listener.protocol);
        out.push_str(",\"address\":");
        json_string(&mut out, &listener.address);
        let stats = &listener.stats;
        let _ = write!(
            out,
            ",\"accepted\":{},\"active\":{},\"refused\":{},\"handshake_failures\":{},\"accept_errors\":{},\"transport_errors\":{}}}",
            stats.accepted,
            stats.active,
            stats.refused,
            stats.handshake_failures,
            stats.accept_errors,
            stats.transport_errors
        );
    }
    out.push_str("]}");
    out
}

/// Escapes a Prometheus label value.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// A counter with one label, one line per label value.
fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (value_label, value) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{}\"}} {value}",
            label_value(value_label)
        );
    }
}

/// The counters in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn prometheus_text(
    snapshot: &SysSnapshot,
    now_unix: u64,
    listeners: &[ListenerFigures],
) -> String {
    let mut out = String::with_capacity(4096);
    let counters: [(&str, &str, u64); 11] = [
        (
            "mochi_connections_total",
            "Connections accepted by the broker.",
            snapshot.connections_total,
        ),
        (
            "mochi_connections_refused_total",
            "Connections closed before or at CONNECT.",
            snapshot.connections_refused,
        ),
        (
            "mochi_messages_received_total",
            "PUBLISH packets received.",
            snapshot.messages_received,
        ),
        (
            "mochi_messages_sent_total",
            "PUBLISH packets sent.",
            snapshot.messages_sent,
        ),
        (
            "mochi_messages_dropped_total",
            "Messages dropped (queue full, expired, too large, offline QoS 0).",
            snapshot.messages_dropped,
        ),
        (
            "mochi_bytes_received_total",
            "Bytes read from clients.",
            snapshot.bytes_received,
        ),
        (
            "mochi_bytes_sent_total",
            "Bytes written to clients.",
            snapshot.bytes_sent,
        ),
        (
            "mochi_packets_received_total",
            "Packets read.",
            snapshot.packets_received,
        ),
        (
            "mochi_packets_sent_total",
            "Packets written.",
            snapshot.packets_sent,
        ),
        (
            "mochi_protocol_errors_total",
            "Connections ended for a malformed packet or protocol error.",
            snapshot.protocol_errors,
        ),
        (
            "mochi_start_time_seconds",
            "When the broker started, in seconds since the Unix epoch.",
            snapshot.started,
        ),
    ];
    for (name, help, value) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        metric(&mut out, name, kind, help, value);
    }
    labelled(
        &mut out,
        "mochi_messages_received_by_qos_total",
        "PUBLISH packets received, by QoS.",
        "qos",
        ["0", "1", "2"]
            .iter()
            .copied()
            .zip(snapshot.messages_received_by_qos),
    );
    labelled(
        &mut out,
        "mochi_messages_sent_by_qos_total",
        "PUBLISH packets sent, by QoS.",
        "qos",
        ["0", "1", "2"]
            .iter()
            .copied()
            .zip(snapshot.messages_sent_by_qos),
    );
    labelled(
        &mut out,
        "mochi_messages_dropped_by_reason_total",
        "Messages dropped, by reason.",
        "reason",
        mqtt_broker::sys::DROP_REASONS
            .iter()
            .copied()
            .zip(snapshot.messages_dropped_by_reason),
    );
    metric(
        &mut out,
        "mochi_publishers_waiting",
        "gauge",
        "Connections not being read because a subscriber they publish to has a full queue.",
        snapshot.publishers_waiting,
    );
    metric(
        &mut out,
        "mochi_publisher_waits_total",
        "counter",
        "Times a connection stopped being read because a subscriber's queue was full.",
        snapshot.publisher_waits,
    );
    metric(
        &mut out,
        "mochi_slow_subscribers_total",
        "counter",
        "Subscribers declared stuck (full queue, no progress for the slow-subscriber timeout).",
        snapshot.slow_subscribers,
    );
    metric(
        &mut out,
        "mochi_limits_exceeded_total",
        "counter",
        "Packets, subscriptions, sessions and retained messages refused for going beyond a configured limit.",
        snapshot.limits_exceeded,
    );
    metric(
        &mut out,
        "mochi_storage_ack_timeouts_total",
        "counter",
        "Connections closed because acknowledgements held for storage were not committed in time.",
        snapshot.durable_ack_timeouts,
    );
    metric(
        &mut out,
        "mochi_hook_errors_total",
        "counter",
        "Errors reported by hooks (refused init, failed restore).",
        snapshot.hook_errors,
    );
    metric(
        &mut out,
        "mochi_storage_errors_total",
        "counter",
        "Errors reported by storage hooks.",
        snapshot.storage_errors,
    );
    metric(
        &mut out,
        "mochi_queued_messages",
        "gauge",
        "Messages waiting in session queues.",
        snapshot.queued,
    );
    let gauges: [(&str, &str, u64); 9] = [
        (
            "mochi_uptime_seconds",
            "Seconds since the broker started.",
            now_unix.saturating_sub(snapshot.started),
        ),
        (
            "mochi_clients_connected",
            "Clients connected now.",
            snapshot.clients_connected,
        ),
        (
            "mochi_clients_maximum",
            "The most clients connected at once.",
            snapshot.clients_maximum,
        ),
        (
            "mochi_sessions",
            "Sessions known, connected or not.",
            snapshot.sessions,
        ),
        (
            "mochi_subscriptions",
            "Subscriptions held.",
            snapshot.subscriptions,
        ),
        (
            "mochi_retained_messages",
            "Retained messages held.",
            snapshot.retained,
        ),
        (
            "mochi_inflight_messages",
            "QoS 1 and 2 messages in flight to clients.",
            snapshot.inflight,
        ),
        (
            "mochi_memory_bytes",
            "Resident memory of the process, where the platform tells.",
            snapshot.memory,
        ),
        ("mochi_tasks", "Tasks alive in the runtime.", snapshot.tasks),
    ];
    for (name, help, value) in gauges {
        metric(&mut out, name, "gauge", help, value);
    }
    type Pick = fn(&ListenerStatsSnapshot) -> u64;
    let per_listener: [(&str, &str, &str, Pick); 6] = [
        (
            "mochi_listener_connections_accepted_total",
            "counter",
            "Connections accepted by the listener.",
            |s| s.accepted,
        ),
        (
            "mochi_listener_connections_active",
            "gauge",
            "Connections open on the listener.",
            |s| s.active,
        ),
        (
            "mochi_listener_connections_refused_total",
            "counter",
            "Connections closed because the listener was full.",
            |s| s.refused,
        ),
        (
            "mochi_listener_handshake_failures_total",
            "counter",
            "TLS or WebSocket handshakes that failed or timed out.",
            |s| s.handshake_failures,
        ),
        (
            "mochi_listener_accept_errors_total",
            "counter",
            "Failed accept calls.",
            |s| s.accept_errors,
        ),
        (
            "mochi_listener_transport_errors_total",
            "counter",
            "Connections ended by a WebSocket text, oversize or malformed message.",
            |s| s.transport_errors,
        ),
    ];
    if !listeners.is_empty() {
        for (name, kind, help, pick) in per_listener {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for listener in listeners {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{}\",protocol=\"{}\"}} {}",
                    label_value(&listener.id),
                    label_value(listener.protocol),
                    pick(&listener.stats)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_strings_and_lists_listeners() {
        let listeners = vec![ListenerFigures {
            id: "t\"1".to_owned(),
            protocol: "tcp",
            address: "127.0.0.1:1".to_owned(),
            stats: ListenerStatsSnapshot::default(),
        }];
        let json = sysinfo_json(&SysSnapshot::default(), 5, &listeners);
        assert!(json.starts_with("{\"version\":"));
        assert!(json.contains("\"uptime\":5"));
        assert!(json.contains("\"id\":\"t\\\"1\""));
        assert!(json.ends_with("]}"));
    }

    #[test]
    fn prometheus_has_types_and_labels() {
        let listeners = vec![ListenerFigures {
            id: "ws".to_owned(),
            protocol: "ws",
            address: String::new(),
            stats: ListenerStatsSnapshot::default(),
        }];
        let text = prometheus_text(&SysSnapshot::default(), 0, &listeners);
        assert!(text.contains("# TYPE mochi_messages_received_total counter\n"));
        assert!(
            text.contains("mochi_listener_connections_active{listener=\"ws\",protocol=\"ws\"} 0\n")
        );
        assert!(text.ends_with('\n'));
    }
}
