//! The accept loop shared by every socket listener: a close signal, per-listener limits and
//! counters, and back-off on accept errors.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

/// The first pause after a failed `accept` (e.g. EMFILE); it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause after repeated `accept` failures.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Counters of one listener, updated with relaxed ordering.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted (including those refused later by a handshake or a limit).
    pub accepted: AtomicU64,
    /// Connections open now (from their accept, TLS and WebSocket handshakes included).
    pub active: AtomicU64,
    /// Connections closed at once because the listener's maximum was reached.
    pub refused: AtomicU64,
    /// TLS or WebSocket handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// Failed `accept` calls (e.g. too many open files).
    pub accept_errors: AtomicU64,
    /// Connections ended by a transport violation after the handshake: a WebSocket text
    /// message [MQTT-6.0.0-1], an oversize message, or another WebSocket protocol error.
    pub transport_errors: AtomicU64,
}

/// A copy of a listener's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStatsSnapshot {
    /// See [`ListenerStats::accepted`].
    pub accepted: u64,
    /// See [`ListenerStats::active`].
    pub active: u64,
    /// See [`ListenerStats::refused`].
    pub refused: u64,
    /// See [`ListenerStats::handshake_failures`].
    pub handshake_failures: u64,
    /// See [`ListenerStats::accept_errors`].
    pub accept_errors: u64,
    /// See [`ListenerStats::transport_errors`].
    pub transport_errors: u64,
}

impl ListenerStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> ListenerStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ListenerStatsSnapshot {
            accepted: get(&self.accepted),
            active: get(&self.active),
            refused: get(&self.refused),
            handshake_failures: get(&self.handshake_failures),
            accept_errors: get(&self.accept_errors),
            transport_errors: get(&self.transport_errors),
        }
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements [`ListenerStats::active`] when the connection ends, however it ends.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<ListenerStats>);

impl ActiveGuard {
    pub(crate) fn new(stats: Arc<ListenerStats>) -> Self {
        ListenerStats::add(&stats.active);
        Self(stats)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection holds while it lasts: its place under the listener's connection limit and
/// its count in [`ListenerStats::active`].
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _active: ActiveGuard,
}

/// The close signal of a listener: [`Closer::close`] ends its accept loop, before or during
/// `serve`.
#[derive(Debug)]
pub(crate) struct Closer(watch::Sender<bool>);

impl Default for Closer {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Closer {
    pub(crate) fn close(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the listener is closed (at once if it already is).
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            // An error means the sender is gone, which also ends the listener.
            let _ = receiver.wait_for(|closed| *closed).await;
        }
    }
}

/// Resolves when the listener is closed or when the server closes, whichever comes first, so
/// that `Server::close` also stops every listener serving it.
pub(crate) async fn until_closed(
    own: impl Future<Output = ()> + Send + 'static,
    server: mqtt_broker::Server,
) {
    tokio::select! {
        () = own => {}
        () = server.closed() => {}
    }
}

/// Something that accepts byte streams: a TCP or Unix listener.
pub(crate) trait Accept: Send + Sync {
    /// The accepted stream.
    type Stream: Send + 'static;
    /// Accepts one connection.
    fn accept_one(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> io::Result<(Self::Stream, Option<SocketAddr>)> {
        let (stream, remote) = self.accept().await?;
        stream.set_nodelay(true).ok();
        Ok((stream, Some(remote)))
    }
}

#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> io::Result<(Self::Stream, Option<SocketAddr>)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, None))
    }
}

/// Per-listener limits.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Connections open at once; more are closed at once. `None`: unlimited.
    pub(crate) maximum_connections: Option<usize>,
}

/// Accepts connections until `closed` resolves, handing each to `handle` on its own task.
/// A connection over the limit is closed at once and counted; accept errors back off.
pub(crate) async fn accept_loop<A, H, F>(
    id: &str,
    acceptor: &A,
    closed: impl Future<Output = ()> + Send,
    limits: &Limits,
    stats: &Arc<ListenerStats>,
    handle: H,
) where
    A: Accept,
    H: Fn(A::Stream, Option<SocketAddr>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = limits
        .maximum_connections
        .map(|maximum| Arc::new(Semaphore::new(maximum)));
    let mut backoff = MIN_BACKOFF;
    let mut closed = std::pin::pin!(closed);
    info!(listener = %id, "listening");
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept_one() => accepted,
            () = &mut closed => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                backoff = MIN_BACKOFF;
                accepted
            }
            Err(error) => {
                ListenerStats::add(&stats.accept_errors);
                warn!(listener = %id, %error, pause = ?backoff, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut closed => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        ListenerStats::add(&stats.accepted);
        let permit = match &permits {
            None => None,
            Some(permits) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    ListenerStats::add(&stats.refused);
                    warn!(listener = %id, remote = ?remote, reason = "maximum connections", "connection refused");
                    drop(stream);
                    continue;
                }
            },
        };
        debug!(listener = %id, remote = ?remote, "accepted");
        let admission = Admission {
            _permit: permit,
            _active: ActiveGuard::new(stats.clone()),
        };
        // `map`, not an `async` block that awaits the connection's future: that would hold the
        // future twice (the capture and the awaited copy).
        tokio::spawn(handle(stream, remote).map(move |()| drop(admission)));
    }
    info!(listener = %id, "closed");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// An acceptor whose every accept fails, as with EMFILE.
    struct Failing(AtomicUsize);

    impl Accept for Failing {
        type Stream = ();
        async fn accept_one(&self) -> io::Result<((), Option<SocketAddr>)> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::other("too many open files"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let acceptor = Failing(AtomicUsize::new(0));
        let stats = Arc::new(ListenerStats::default());
        let limits = Limits {
            maximum_connections: None,
        };
        let closed = tokio::time::sleep(Duration::from_secs(3));
        accept_loop(
            "failing",
            &acceptor,
            closed,
            &limits,
            &stats,
            |(), _| async {},
        )
        .await;
        // 5 + 10 + 20 + ... + 640 ms, then one per second: about a dozen tries in 3 s.
        let attempts = acceptor.0.load(Ordering::Relaxed);
        assert!((8..=14).contains(&attempts), "{attempts} attempts");
        assert_eq!(stats.snapshot().accept_errors, attempts as u64);
    }

    #[tokio::test]
    async fn close_before_the_loop_starts_ends_it_at_once() {
        let closer = Closer::default();
        closer.close();
        let acceptor = Failing(AtomicUsize::new(0));
        let limits = Limits {
            maximum_connections: None,
        };
        let stats = Arc::default();
        accept_loop(
            "closed",
            &acceptor,
            closer.closed(),
            &limits,
            &stats,
            |(), _| async {},
        )
        .await;
    }
}
