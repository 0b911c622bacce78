//! The HTTP stats listener: `$SYS` figures as JSON, Prometheus metrics, a health check and a
//! small live dashboard (the original broker's `NewHTTPStats`).

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mqtt_broker::Server;
use parking_lot::Mutex;
use tokio::net::ToSocketAddrs;
use tracing::debug;

use crate::accept::{Closer, Limits, ListenerStats, accept_loop};
use crate::metrics::{ListenerFigures, prometheus_text, sysinfo_json};
use crate::{Listener, ListenerError, ListenerStatsSnapshot, ServeFuture};

/// The dashboard page: self-contained HTML, CSS and JavaScript, no external assets.
const DASHBOARD: &str = include_str!("dashboard.html");

/// A user name and password for HTTP basic authentication.
///
/// Only a SHA-256 digest of `user:password` is kept, and a request's credentials are hashed and
/// compared with it in constant time: how long the check takes does not depend on the
/// credentials' contents or length, so it tells a client nothing about them.
#[derive(Clone)]
pub struct BasicAuth {
    username: String,
    digest: [u8; 32],
}

impl BasicAuth {
    /// Credentials every request (except `/healthz`) must present.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        let username = username.into();
        let digest = credentials_digest(format!("{username}:{}", password.into()).as_bytes());
        Self { username, digest }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether an `Authorization` header carries these credentials.
    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(encoded) = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        constant_time_eq(&credentials_digest(&decoded), &self.digest)
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The digest credentials are compared by: the same length whatever their length.
fn credentials_digest(credentials: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(credentials).into()
}

/// Compares two digests in time that does not depend on their contents (no early exit).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// A health check for `/healthz`: `true` means healthy (200), `false` unhealthy (503).
pub type HealthCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// More metrics for `/metrics`, in the Prometheus text format (e.g. a storage hook's counters),
/// appended after the broker's own.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Settings of an [`HttpStats`] listener.
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpStatsConfig {
    /// Require these credentials on every path except `/healthz`. Default: none.
    pub basic_auth: Option<BasicAuth>,
    /// Connections open at once; more are closed at once. `None` (the default): unlimited.
    pub maximum_connections: Option<usize>,
    /// What `/healthz` asks; `None` (the default) answers 200 while the listener serves.
    pub health_check: Option<HealthCheck>,
    /// Metrics appended to `/metrics`. Default: none.
    pub extra_metrics: Option<ExtraMetrics>,
    /// The time a client has to send a request's headers (default 10 s).
    pub header_read_timeout: Duration,
}

impl Default for HttpStatsConfig {
    fn default() -> Self {
        Self {
            basic_auth: None,
            maximum_connections: None,
            health_check: None,
            extra_metrics: None,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for HttpStatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStatsConfig")
            .field("basic_auth", &self.basic_auth)
            .field("maximum_connections", &self.maximum_connections)
            .field("health_check", &self.health_check.is_some())
            .field("extra_metrics", &self.extra_metrics.is_some())
            .field("header_read_timeout", &self.header_read_timeout)
            .finish()
    }
}

impl HttpStatsConfig {
    /// The same settings with basic authentication.
    pub fn with_basic_auth(self, auth: BasicAuth) -> Self {
        Self {
            basic_auth: Some(auth),
            ..self
        }
    }

    /// The same settings with a health check.
    pub fn with_health_check(self, check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            health_check: Some(Arc::new(check)),
            ..self
        }
    }

    /// The same settings with more metrics for `/metrics` (Prometheus text, appended).
    pub fn with_extra_metrics(self, metrics: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self {
            extra_metrics: Some(Arc::new(metrics)),
            ..self
        }
    }
}

/// The HTTP stats listener. Serves:
///
/// * `GET /api/sysinfo`: the `$SYS` figures and the tracked listeners as JSON;
/// * `GET /metrics`: the same in the Prometheus text format (plus [`HttpStatsConfig::extra_metrics`]);
/// * `GET /healthz`: 200 `ok` (or 503 when the [`HttpStatsConfig::health_check`] says so);
/// * `GET /`: a self-contained dashboard that polls `/api/sysinfo` every second.
#[derive(Debug)]
pub struct HttpStats {
    id: Arc<str>,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    config: HttpStatsConfig,
    tracked: Arc<Mutex<Vec<Arc<dyn Listener>>>>,
    closer: Closer,
    stats: Arc<ListenerStats>,
}

impl HttpStats {
    /// Binds `address` (port 0 picks a free port; see [`HttpStats::local_addr`]).
    pub async fn bind(
        id: &str,
        address: impl ToSocketAddrs,
        config: HttpStatsConfig,
    ) -> Result<Self, ListenerError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| ListenerError::io(id, error))?;
        Self::from_listener(id, listener, config)
    }

    /// Wraps a socket the host program already bound.
    pub fn from_listener(
        id: &str,
        listener: tokio::net::TcpListener,
        config: HttpStatsConfig,
    ) -> Result<Self, ListenerError> {
        let address = listener
            .local_addr()
            .map_err(|error| ListenerError::io(id, error))?;
        Ok(Self {
            id: Arc::from(id),
            listener,
            address,
            config,
            tracked: Arc::default(),
            closer: Closer::default(),
            stats: Arc::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Reports `listener`'s counters in `/api/sysinfo` and `/metrics` (per-listener figures).
    pub fn track(&self, listener: Arc<dyn Listener>) {
        self.tracked.lock().push(listener);
    }
}

/// What each request needs.
struct State {
    server: Server,
    config: HttpStatsConfig,
    tracked: Arc<Mutex<Vec<Arc<dyn Listener>>>>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl State {
    fn figures(&self) -> Vec<ListenerFigures> {
        self.tracked
            .lock()
            .iter()
            .map(|listener| ListenerFigures {
                id: listener.id().to_owned(),
                protocol: listener.protocol(),
                address: listener.address(),
                stats: listener.stats(),
            })
            .collect()
    }

    fn handle(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        let path = request.uri().path();
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response =
                respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if path == "/healthz" {
            let healthy = self
                .config
                .health_check
                .as_ref()
                .is_none_or(|check| check());
            return if healthy {
                respond(StatusCode::OK, TEXT, "ok\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "unhealthy\n")
            };
        }
        if let Some(auth) = &self.config.basic_auth {
            if !auth.admits(request.headers().get(header::AUTHORIZATION)) {
                let mut response = respond(StatusCode::UNAUTHORIZED, TEXT, "unauthorized\n");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mochi\", charset=\"UTF-8\""),
                );
                return response;
            }
        }
        let snapshot = self.server.info().snapshot();
        // The original broker serves this JSON on `/`: a client that asks for JSON there gets it.
        let wants_json = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("application/json"));
        let path = if path == "/" && wants_json {
            "/api/sysinfo"
        } else {
            path
        };
        match path {
            "/api/sysinfo" => respond(
                StatusCode::OK,
                "application/json",
                sysinfo_json(&snapshot, now_unix(), &self.figures()),
            ),
            "/metrics" => {
                let mut text = prometheus_text(&snapshot, now_unix(), &self.figures());
                if let Some(extra) = &self.config.extra_metrics {
                    text.push_str(&extra());
                }
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                )
            }
            "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
            _ => respond(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        }
    }
}

impl Listener for HttpStats {
    fn id(&self) -> &str {
        &self.id
    }

    fn protocol(&self) -> &'static str {
        "http"
    }

    fn address(&self) -> String {
        self.address.to_string()
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.stats.snapshot()
    }

    fn serve(&self, server: Server) -> ServeFuture<'_> {
        Box::pin(async move {
            let state = Arc::new(State {
                server,
                config: self.config.clone(),
                tracked: self.tracked.clone(),
            });
            let limits = Limits {
                maximum_connections: self.config.maximum_connections,
            };
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.config.header_read_timeout);
            accept_loop(
                &self.id,
                &self.listener,
                crate::accept::until_closed(self.closer.closed(), state.server.clone()),
                &limits,
                &self.stats,
                |stream, remote| {
                    let state = state.clone();
                    let closed = crate::accept::until_closed(self.closer.closed(), state.server.clone());
                    let id = self.id.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let response = state.handle(&request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    async move {
                        let mut connection = std::pin::pin!(connection);
                        let result = tokio::select! {
                            result = connection.as_mut() => result,
                            () = closed => {
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(error) = result {
                            debug!(listener = %id, remote = ?remote, %error, "HTTP connection ended");
                        }
                    }
                },
            )
            .await;
            Ok(())
        })
    }

    fn close(&self) {
        self.closer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_the_header() {
        let auth = BasicAuth::new("admin", "s3cret");
        let header = |value: &'static str| HeaderValue::from_static(value);
        assert!(auth.admits(Some(&header("Basic YWRtaW46czNjcmV0"))));
        assert!(!auth.admits(Some(&header("Basic YWRtaW46d3Jvbmc="))));
        assert!(!auth.admits(Some(&header("Bearer YWRtaW46czNjcmV0"))));
        assert!(!auth.admits(Some(&header("Basic !!!"))));
        assert!(!auth.admits(None));
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert_eq!(auth.username(), "admin");
    }

    #[test]
    fn credentials_of_any_length_are_compared_as_digests() {
        let auth = BasicAuth::new("admin", "s3cret");
        let encode = |text: &str| {
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            ))
            .unwrap()
        };
        assert!(auth.admits(Some(&encode("admin:s3cret"))));
        // Shorter, longer and same-length wrong credentials are all refused the same way: the
        // comparison sees two 32-byte digests, never the lengths.
        for wrong in [
            "",
            "admin:",
            "admin:s3cre",
            "admin:s3cret!",
            "admin:s3creT",
            "x",
        ] {
            assert!(!auth.admits(Some(&encode(wrong))), "{wrong:?}");
        }
        // The password itself is not kept.
        assert_eq!(auth.digest, credentials_digest(b"admin:s3cret"));
    }
}
