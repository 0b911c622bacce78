//! Serving: hooks, listeners, signals and the graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mqtt_broker::{AllowAllHook, Server};
use mqtt_hook_auth::{Ledger, LedgerHook};
use mqtt_hook_debug::DebugHook;
use mqtt_listeners::{
    BasicAuth, HttpStats, HttpStatsConfig, Listener, Listeners, Tcp, TcpConfig, TlsConfig,
    WebSocket, WebSocketConfig,
};
use tracing::{info, warn};

use crate::config::{Config, ListenerConfig, ListenerKind};
/// Prints a status line on stdout. A closed stdout (the reader went away: `mochi | head -1`, a
/// supervisor that stopped reading) is no reason to panic while serving or stopping.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Runs the broker until SIGINT or SIGTERM, then shuts it down gracefully.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    say!("Mochi MQTT {} (mochi-rs)", env!("CARGO_PKG_VERSION"));
    let server = Server::new(config.broker_options());
    let ledger = add_hooks(&server, &config).await?;
    let storage = crate::storage::open(&config).await?;
    if let Some(storage) = &storage {
        server.add_hook_arc(storage.clone())?;
    }
    // Restores the stored state before any listener serves a client.
    server.start();

    let listeners = Listeners::new();
    let mut stats = Vec::new();
    for listener_config in &config.listeners.0 {
        let maximum_connections =
            listener_config.effective_maximum_connections(&config.capabilities);
        let (listener, http) = bind(listener_config, maximum_connections, storage.as_ref())
            .await
            .with_context(|| format!("listener {:?}", listener_config.id))?;
        if let Some(http) = http {
            stats.push(http);
        }
        listeners.add(listener.clone())?;
    }
    for http in &stats {
        for listener in listeners.all() {
            if listener.protocol() != "http" {
                http.track(listener);
            }
        }
    }
    listeners.serve_all(&server);
    for listener in listeners.all() {
        say!(
            "listening: {:<5} {:<10} {}",
            listener.protocol(),
            listener.id(),
            listener.address()
        );
        info!(listener = listener.id(), protocol = listener.protocol(), address = %listener.address(), "listening");
    }
    // The handlers are in place before anyone can know the broker is up: a SIGHUP sent at once
    // (say, by a supervisor that waits for "ready") must reload, not end the process.
    let signals = Signals::install()?;
    say!("ready");

    let signal = signals.wait_for_shutdown(ledger.as_deref()).await;
    say!("shutting down ({signal})");
    info!(signal, "shutting down");
    let deadline = config.shutdown_timeout() + Duration::from_secs(1);
    let started = tokio::time::Instant::now();
    let closing = async {
        listeners.close_all().await;
        server.close().await;
    };
    if tokio::time::timeout(deadline, closing).await.is_err() {
        warn!(?deadline, "shutdown deadline passed; stopping anyway");
    }
    if let Some(storage) = &storage {
        // What the sessions left at close is written before the process ends.
        let left = deadline.saturating_sub(started.elapsed()) + Duration::from_secs(2);
        if storage.close(left).await {
            say!("storage: flushed");
        } else {
            say!("storage: NOT fully flushed (the backend did not answer in time)");
            warn!("storage not fully flushed at shutdown");
        }
    }
    say!("stopped");
    Ok(())
}

/// Adds the auth and debug hooks; returns the file-backed ledger hook, reloaded on SIGHUP.
async fn add_hooks(server: &Server, config: &Config) -> anyhow::Result<Option<Arc<LedgerHook>>> {
    let auth = &config.hooks.auth;
    let mut reloadable = None;
    if let Some(path) = &auth.ledger_file {
        let hook = Arc::new(
            LedgerHook::from_file(path)
                .await
                .with_context(|| format!("hooks.auth.ledger_file {}", path.display()))?
                .with_verification_limits(auth.verification_limits()),
        );
        server.add_hook_arc(hook.clone())?;
        say!("auth: ledger from {} (SIGHUP reloads it)", path.display());
        warn_if_fails_open(&hook.ledger());
        reloadable = Some(hook);
    } else if let Some(ledger) = &auth.ledger {
        server.add_hook(
            LedgerHook::new(ledger.clone()).with_verification_limits(auth.verification_limits()),
        )?;
        say!("auth: inline ledger");
        warn_if_fails_open(ledger);
    } else if auth.allow_all {
        server.add_hook(AllowAllHook)?;
        // The hook logs its own warning too.
        say!(
            "WARNING: auth: allow-all: every client may connect, publish and subscribe (development only)"
        );
    } else {
        say!("WARNING: auth: no auth hook: every client is refused");
        warn!("no auth hook: every client is refused");
    }
    if config.hooks.debug.enabled {
        server.add_hook(DebugHook::new(config.debug_options()))?;
        say!("debug: every packet is logged (target mqtt_hook_debug)");
    }
    Ok(reloadable)
}

/// What to tell the operator about the ledger's ACL at start and after a reload: a warning when
/// it only allows (operators who list what a client may do usually expect everything else to be
/// refused, and it is not), a note when it has no ACL filter at all.
fn acl_notice(ledger: &Ledger) -> Option<&'static str> {
    if ledger.only_allows() {
        Some(
            "WARNING: auth: the ledger's ACL only allows and deny_by_default is false: topics no \
             filter covers (and every $ topic) are allowed to every client; set \
             deny_by_default = true, or end acl with { filters = { \"#\" = \"deny\" } }",
        )
    } else if !ledger.deny_by_default
        && ledger.acl.iter().all(|rule| rule.filters.is_empty())
        && ledger.users.values().all(|user| user.acl.is_empty())
    {
        Some(
            "auth: the ledger has no ACL filter: every client it lets in may publish and \
             subscribe to every topic",
        )
    } else {
        None
    }
}

/// Prints (and logs, for a warning) the [`acl_notice`], if any.
fn warn_if_fails_open(ledger: &Ledger) {
    match acl_notice(ledger) {
        Some(notice) if notice.starts_with("WARNING: ") => {
            say!("{notice}");
            warn!("{}", notice.trim_start_matches("WARNING: "));
        }
        Some(notice) => say!("{notice}"),
        None => {}
    }
}

/// Binds one listener; HTTP stats listeners are also returned on their own, to track the others.
async fn bind(
    config: &ListenerConfig,
    maximum_connections: usize,
    storage: Option<&Arc<mqtt_storage::StorageHook>>,
) -> anyhow::Result<(Arc<dyn Listener>, Option<Arc<HttpStats>>)> {
    let id = config.id.as_str();
    let address = config.address.as_str();
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let mut builder = TlsConfig::builder_from_pem_files(cert, key).await?;
            if let Some(ca) = &config.tls_client_ca {
                builder = builder
                    .client_ca_pem_file(ca)
                    .await?
                    .client_certificate_required(config.client_certificate_required());
            }
            Some(builder.build()?)
        }
        _ => None,
    };
    let listener: Arc<dyn Listener> = match config.kind {
        ListenerKind::Tcp | ListenerKind::Tls => {
            let mut tcp = TcpConfig::default();
            tcp.tls = tls;
            tcp.maximum_connections = Some(maximum_connections);
            Arc::new(Tcp::bind(id, address, tcp).await?)
        }
        ListenerKind::Ws | ListenerKind::Wss => {
            let mut ws = WebSocketConfig::default();
            ws.tls = tls;
            ws.maximum_connections = Some(maximum_connections);
            ws.path = config.path.clone();
            ws.allowed_origins = config.allowed_origins.clone();
            if config
                .allowed_origins
                .iter()
                .any(|origin| origin == mqtt_listeners::ANY_ORIGIN)
            {
                say!(
                    "WARNING: listener {id}: allowed_origins = [\"*\"]: any web page a user opens \
                     can connect through their browser"
                );
            }
            if let Some(bytes) = config.maximum_message_size {
                ws.maximum_message_size = bytes;
            }
            Arc::new(WebSocket::bind(id, address, ws).await?)
        }
        ListenerKind::Http => {
            let mut http = HttpStatsConfig::default();
            if let Some(storage) = storage {
                // `/healthz` answers 503 while storage writes fail; `/metrics` counts them.
                let check = storage.clone();
                http = http.with_health_check(move || check.health().healthy);
                let metrics = storage.clone();
                http = http.with_extra_metrics(move || metrics.prometheus_text());
            }
            http.maximum_connections = Some(maximum_connections);
            if let Some(auth) = &config.basic_auth {
                http = http.with_basic_auth(BasicAuth::new(&auth.username, &auth.password));
            }
            let stats = Arc::new(HttpStats::bind(id, address, http).await?);
            return Ok((stats.clone(), Some(stats)));
        }
        #[cfg(unix)]
        ListenerKind::Unix => {
            let mut unix = mqtt_listeners::UnixConfig::default();
            unix.maximum_connections = Some(maximum_connections);
            Arc::new(mqtt_listeners::UnixSocket::bind(id, address, unix).await?)
        }
        #[cfg(not(unix))]
        ListenerKind::Unix => anyhow::bail!("unix sockets need a Unix system"),
    };
    Ok((listener, None))
}

/// The signals the broker answers, handled from the moment they are installed.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for SIGINT or SIGTERM (returning its name), reloading the ledger on each SIGHUP.
    async fn wait_for_shutdown(mut self, ledger: Option<&LedgerHook>) -> &'static str {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return "SIGINT",
                _ = self.terminate.recv() => return "SIGTERM",
                _ = self.hangup.recv() => match ledger {
                    Some(hook) => match hook.reload().await {
                        Ok(()) => {
                            say!("auth: ledger reloaded");
                            warn_if_fails_open(&hook.ledger());
                        }
                        Err(error) => say!("auth: ledger not reloaded, the previous one stays: {error}"),
                    },
                    None => say!("SIGHUP: no ledger file to reload"),
                },
            }
        }
    }
}

/// Ctrl-C, the one signal there is off Unix.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    /// Waits for Ctrl-C.
    async fn wait_for_shutdown(self, _ledger: Option<&LedgerHook>) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(error) => {
                warn!(%error, "cannot wait for Ctrl-C; stopping");
                "no Ctrl-C handler"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(toml: &str) -> Ledger {
        Ledger::from_toml(toml).unwrap()
    }

    #[test]
    fn a_ledger_that_only_allows_is_warned_about() {
        let warned = |text: &str| {
            acl_notice(&ledger(text)).is_some_and(|notice| notice.starts_with("WARNING: "))
        };
        // Rules that only allow: whatever they do not cover is allowed.
        assert!(warned(
            "[[acl]]\nclient = \"worker-*\"\nfilters = { \"jobs/#\" = \"read\" }\n"
        ));
        assert!(warned(
            "[users.alice]\npassword = \"pw\"\nacl = { \"alice/#\" = \"readwrite\" }\n"
        ));
        // Refusing by default, or any deny filter, is a ledger that says what it refuses.
        assert!(!warned(
            "deny_by_default = true\n[[acl]]\nfilters = { \"jobs/#\" = \"read\" }\n"
        ));
        assert!(!warned(
            "[[acl]]\nfilters = { \"jobs/#\" = \"read\" }\n[[acl]]\nfilters = { \"#\" = \"deny\" }\n"
        ));
        assert!(acl_notice(&ledger("deny_by_default = true\n")).is_none());
        // No ACL at all: a note, not a warning.
        let notice = acl_notice(&ledger("")).unwrap();
        assert!(notice.contains("no ACL filter"), "{notice}");
    }
}
