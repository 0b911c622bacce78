//! The `[[listeners]]` section: one table per listener (TCP, TLS, WebSocket, Unix socket, HTTP).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::broker::CapabilitiesConfig;

/// The listener array, with the original broker's three as its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Listeners(pub(crate) Vec<ListenerConfig>);

impl Default for Listeners {
    fn default() -> Self {
        let listener = |kind, id: &str, address: &str| ListenerConfig {
            kind,
            id: id.to_owned(),
            address: address.to_owned(),
            ..ListenerConfig::default()
        };
        Self(vec![
            listener(ListenerKind::Tcp, "t1", "0.0.0.0:1883"),
            listener(ListenerKind::Ws, "ws1", "0.0.0.0:1882"),
            listener(ListenerKind::Http, "stats", "0.0.0.0:8080"),
        ])
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ListenerKind {
    #[default]
    Tcp,
    Tls,
    Ws,
    Wss,
    Unix,
    Http,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Unix => "unix",
            Self::Http => "http",
        })
    }
}

/// One listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerConfig {
    /// `tcp`, `tls`, `ws`, `wss`, `unix` or `http`.
    #[serde(rename = "type")]
    pub(crate) kind: ListenerKind,
    /// A unique name, shown in logs and statistics.
    pub(crate) id: String,
    /// `host:port` (port 0 picks a free port), or the socket path for `unix`.
    pub(crate) address: String,
    /// PEM certificate chain, for `tls` and `wss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key, for `tls` and `wss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to (`tls`, `wss`); clients
    /// without a certificate are refused unless `tls_client_certificate_required = false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate (needs `tls_client_ca`). Absent: required
    /// when `tls_client_ca` is set; `false` accepts clients without one (a certificate they do
    /// present must still chain to the CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_client_certificate_required: Option<bool>,
    /// The HTTP path of a `ws` or `wss` listener (any path when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// The browser origins a `ws` or `wss` listener admits (`"*"`: any). Absent or empty: a
    /// handshake carrying an `Origin` header (a web page) is refused; clients that send none
    /// are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) allowed_origins: Vec<String>,
    /// The largest WebSocket message a `ws` or `wss` listener accepts, in bytes (the library
    /// default, 1 MiB, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_message_size: Option<usize>,
    /// Connections open at once; more are closed at once. Absent: `capabilities.maximum_clients`
    /// for MQTT listeners, [`DEFAULT_HTTP_MAXIMUM_CONNECTIONS`] for `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_connections: Option<usize>,
    /// HTTP basic authentication for an `http` listener (every path but `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) basic_auth: Option<BasicAuthConfig>,
}

/// The connections an `http` listener keeps open at once when `maximum_connections` is absent:
/// enough for a few dashboards and scrapers.
pub(crate) const DEFAULT_HTTP_MAXIMUM_CONNECTIONS: usize = 64;

impl ListenerConfig {
    /// Whether the listener speaks MQTT (every type but `http`).
    pub(crate) fn serves_mqtt(&self) -> bool {
        self.kind != ListenerKind::Http
    }

    /// Whether clients must present a certificate: as configured, else when a CA is given.
    pub(crate) fn client_certificate_required(&self) -> bool {
        self.tls_client_certificate_required
            .unwrap_or(self.tls_client_ca.is_some())
    }

    /// The connection limit: as configured, else the default of its type.
    pub(crate) fn effective_maximum_connections(&self, capabilities: &CapabilitiesConfig) -> usize {
        self.maximum_connections.unwrap_or(if self.serves_mqtt() {
            capabilities.maximum_clients
        } else {
            DEFAULT_HTTP_MAXIMUM_CONNECTIONS
        })
    }
}

/// Credentials an `http` listener asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuthConfig {
    /// The user name (no `:`).
    pub(crate) username: String,
    /// The password (shown by `--print-config`: keep the file private).
    pub(crate) password: String,
}

/// Checks one entry of `allowed_origins`: `*`, `null`, or `scheme://host[:port]` as browsers
/// send it in `Origin` (a trailing `/` is tolerated; a path is not, since it could never match).
pub(crate) fn check_origin(origin: &str) -> Result<(), String> {
    if origin == mqtt_listeners::ANY_ORIGIN || origin == "null" {
        return Ok(());
    }
    let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        scheme
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !rest.is_empty()
            && rest.chars().all(|c| c.is_ascii_graphic() && c != '/')
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{origin:?} is not an origin: give \"*\", \"null\" or scheme://host[:port], \
             e.g. \"https://app.example.com\""
        ))
    }
}
