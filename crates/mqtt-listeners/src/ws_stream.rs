//! A WebSocket connection as a byte stream: binary messages in, binary messages out.
//!
//! MQTT packets may be split across WebSocket messages and several may share one
//! [MQTT-6.0.0-2]: the broker reads bytes, so message boundaries do not matter. A text message
//! ends the connection [MQTT-6.0.0-1].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::warn;

use crate::ListenerStats;

/// Adapts a [`WebSocketStream`] into an `AsyncRead + AsyncWrite` byte stream for
/// [`mqtt_broker::Server::serve_connection`].
///
/// Reading yields the payloads of binary messages in order; ping and pong messages are handled
/// by the WebSocket layer; a close message is the end of the stream; a text message is an error
/// (`InvalidData`), which closes the connection. Each write is queued as one binary message;
/// like a buffered writer, queued messages are sent on `flush` (or when the WebSocket's write
/// buffer fills).
#[derive(Debug)]
pub struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    pending: Bytes,
    ended: bool,
    /// Where to count transport violations, with the listener id for the log line.
    stats: Option<(Arc<ListenerStats>, Arc<str>)>,
}

impl<S> WsByteStream<S> {
    /// Wraps an established WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            ended: false,
            stats: None,
        }
    }

    /// Counts transport violations in `stats` and logs them for `listener`.
    pub(crate) fn with_stats(self, stats: Arc<ListenerStats>, listener: Arc<str>) -> Self {
        Self {
            stats: Some((stats, listener)),
            ..self
        }
    }

    /// Counts and logs a violation; returns the error that ends the stream.
    fn violation(&mut self, error: io::Error) -> io::Error {
        self.ended = true;
        if let Some((stats, listener)) = &self.stats {
            ListenerStats::add(&stats.transport_errors);
            warn!(listener = %listener, reason = %error, "WebSocket connection closed");
        }
        error
    }

    /// The WebSocket underneath.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.inner
    }
}

fn to_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::NotConnected, error)
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(this.pending.get(..n).unwrap_or_default());
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    this.ended = true;
                }
                Some(Err(error @ (WsError::Io(_) | WsError::Tls(_)))) => {
                    return Poll::Ready(Err(to_io(error)));
                }
                Some(Err(error)) => return Poll::Ready(Err(this.violation(to_io(error)))),
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Close(_))) => this.ended = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(this.violation(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message [MQTT-6.0.0-1]",
                    ))));
                }
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut this.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().inner).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(to_io(error))),
        }
    }
}
