//! The `Listener` trait: what the server (or the facade) needs from any listener.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use mqtt_broker::Server;

use crate::{ListenerError, ListenerStatsSnapshot};

/// The future returned by [`Listener::serve`].
pub type ServeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ListenerError>> + Send + 'a>>;

/// A way for clients to reach the broker: it accepts connections and hands each stream to
/// [`Server::serve_connection`] with its [`mqtt_broker::ConnectionInfo`].
///
/// Listeners are bound when created (so [`Listener::address`] is known, also for port 0), serve
/// until [`Listener::close`], and are usable as `Arc<dyn Listener>`.
pub trait Listener: Send + Sync + fmt::Debug + 'static {
    /// The listener's id, unique within a server (e.g. `"tcp1"`); it is the
    /// [`mqtt_broker::ConnectionInfo::listener`] of every connection it accepts.
    fn id(&self) -> &str;

    /// The protocol it serves, for `$SYS` and metrics: `"tcp"`, `"tls"`, `"ws"`, `"wss"`,
    /// `"unix"` or `"http"`.
    fn protocol(&self) -> &'static str;

    /// The local address it listens on: `ip:port`, or a socket path.
    fn address(&self) -> String;

    /// Its counters.
    fn stats(&self) -> ListenerStatsSnapshot;

    /// Accepts connections and serves each on its own task until [`Listener::close`].
    /// Connections already accepted go on; the server closes them when it closes.
    ///
    /// Cancel safety: dropping the future stops accepting, like [`Listener::close`].
    fn serve(&self, server: Server) -> ServeFuture<'_>;

    /// Stops accepting: [`Listener::serve`] returns soon after. Closing twice, or before
    /// serving, is harmless; a closed listener does not serve again.
    fn close(&self);
}
