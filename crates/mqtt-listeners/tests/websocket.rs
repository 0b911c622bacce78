//! MQTT over WebSocket and secure WebSocket: subprotocols, binary framing, limits, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use mqtt_listeners::{Listener, WebSocket, WebSocketConfig, WsByteStream};
use mqtt_packets::{DecodeContext, Packet, Protocol, decode};
use support::{
    Pki, TIMEOUT, connect_bytes, publish_bytes, round_trip, server, spawn, subscribe_bytes,
};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn ws_listener(config: WebSocketConfig) -> (mqtt_broker::Server, Arc<WebSocket>) {
    let server = server();
    let ws = Arc::new(WebSocket::bind("ws1", "127.0.0.1:0", config).await.unwrap());
    spawn(ws.clone(), &server);
    (server, ws)
}

fn request(ws: &WebSocket, path: &str, protocol: Option<&str>) -> Request<()> {
    let mut request = format!("ws://{}{path}", ws.local_addr())
        .into_client_request()
        .unwrap();
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    request
}

async fn open(
    ws: &WebSocket,
    request: Request<()>,
) -> Result<
    (
        WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let tcp = TcpStream::connect(ws.local_addr()).await.unwrap();
    tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap()
}

/// Reads binary messages until one whole MQTT packet is decoded.
async fn next_packet<S>(socket: &mut WebSocketStream<S>, buffer: &mut BytesMut) -> Option<Packet>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let context = DecodeContext::new(Protocol::V3_1_1);
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(packet) = decode(buffer, &context).unwrap() {
                return Some(packet);
            }
            match socket.next().await {
                Some(Ok(Message::Binary(data))) => buffer.extend_from_slice(&data),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap()
}

/// The stream ends (close frame, end, or error) within the timeout.
async fn assert_closed<S>(socket: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match socket.next().await {
                None | Some(Err(_) | Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
}

#[tokio::test]
async fn round_trip_over_websocket_with_mqtt_subprotocol() {
    let (server, ws) = ws_listener(WebSocketConfig::default().with_path("/mqtt")).await;
    assert_eq!(ws.protocol(), "ws");
    let (socket, response) = open(&ws, request(&ws, "/mqtt", Some("mqtt")))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
    let mut stream = WsByteStream::new(socket);
    round_trip(&mut stream, "ws-client", "ws/t").await;
    assert_eq!(ws.stats().active, 1);
    server.close().await;
}

#[tokio::test]
async fn mqttv3_1_subprotocol_is_accepted_and_echoed() {
    let (server, ws) = ws_listener(WebSocketConfig::default()).await;
    let (_, response) = open(&ws, request(&ws, "/", Some("mqttv3.1")))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqttv3.1");
    // With both offered, `mqtt` is preferred.
    let (_, response) = open(&ws, request(&ws, "/", Some("mqttv3.1, mqtt")))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
    server.close().await;
}

#[tokio::test]
async fn upgrade_without_mqtt_subprotocol_is_refused() {
    let (server, ws) = ws_listener(WebSocketConfig::default()).await;
    for protocol in [None, Some("chat")] {
        match open(&ws, request(&ws, "/", protocol)).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::BAD_REQUEST),
            other => panic!(
                "expected a refusal, got {:?}",
                other.map(|(_, response)| response)
            ),
        }
    }
    support::eventually(|| ws.stats().handshake_failures == 2).await;
    server.close().await;
}

#[tokio::test]
async fn wrong_path_and_foreign_origin_are_refused() {
    let config = WebSocketConfig::default()
        .with_path("/mqtt")
        .with_allowed_origins(vec!["https://good.example".to_owned()]);
    let (server, ws) = ws_listener(config).await;
    match open(&ws, request(&ws, "/other", Some("mqtt"))).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::NOT_FOUND),
        other => panic!(
            "expected 404, got {:?}",
            other.map(|(_, response)| response)
        ),
    }
    let mut foreign = request(&ws, "/mqtt", Some("mqtt"));
    foreign
        .headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    match open(&ws, foreign).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!(
            "expected 403, got {:?}",
            other.map(|(_, response)| response)
        ),
    }
    let mut allowed = request(&ws, "/mqtt", Some("mqtt"));
    allowed
        .headers_mut()
        .insert("Origin", HeaderValue::from_static("https://GOOD.example"));
    let (socket, _) = open(&ws, allowed).await.unwrap();
    round_trip(&mut WsByteStream::new(socket), "origin", "origin/t").await;
    server.close().await;
}

/// `request` with an `Origin` header, as a browser sends it.
fn with_origin(mut request: Request<()>, origin: &'static str) -> Request<()> {
    request
        .headers_mut()
        .insert("Origin", HeaderValue::from_static(origin));
    request
}

/// The handshake is refused with this status.
async fn assert_refused(ws: &WebSocket, request: Request<()>, status: StatusCode) {
    match open(ws, request).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), status),
        other => panic!(
            "expected {status}, got {:?}",
            other.map(|(_, response)| response)
        ),
    }
}

#[tokio::test]
async fn browser_origins_are_refused_by_default_and_clients_without_origin_are_not() {
    let (server, ws) = ws_listener(WebSocketConfig::default()).await;
    // A web page (cross-site WebSocket hijacking): its browser always sends Origin.
    let foreign = with_origin(request(&ws, "/", Some("mqtt")), "https://evil.example");
    assert_refused(&ws, foreign, StatusCode::FORBIDDEN).await;
    let null = with_origin(request(&ws, "/", Some("mqtt")), "null");
    assert_refused(&ws, null, StatusCode::FORBIDDEN).await;
    // A device or library sends none, and is served.
    let (socket, _) = open(&ws, request(&ws, "/", Some("mqtt"))).await.unwrap();
    round_trip(&mut WsByteStream::new(socket), "no-origin", "no-origin/t").await;
    support::eventually(|| ws.stats().handshake_failures == 2).await;
    server.close().await;

    // A listed origin is served (a trailing slash in the list is ignored); others are not.
    let config = WebSocketConfig::default()
        .with_allowed_origins(vec!["https://app.example:8443/".to_owned()]);
    let (server, ws) = ws_listener(config).await;
    let listed = with_origin(request(&ws, "/", Some("mqtt")), "https://app.example:8443");
    let (socket, _) = open(&ws, listed).await.unwrap();
    round_trip(&mut WsByteStream::new(socket), "listed", "listed/t").await;
    let other_port = with_origin(request(&ws, "/", Some("mqtt")), "https://app.example");
    assert_refused(&ws, other_port, StatusCode::FORBIDDEN).await;
    server.close().await;

    // `*` admits every origin.
    let config = WebSocketConfig::default().with_allowed_origins(vec!["*".to_owned()]);
    let (server, ws) = ws_listener(config).await;
    let any = with_origin(request(&ws, "/", Some("mqtt")), "https://anything.example");
    let (socket, _) = open(&ws, any).await.unwrap();
    round_trip(&mut WsByteStream::new(socket), "any", "any/t").await;
    server.close().await;
}

#[test]
fn admits_origin_follows_the_list() {
    let config = WebSocketConfig::default();
    assert!(config.admits_origin(None));
    assert!(!config.admits_origin(Some("http://localhost:8080")));
    let config = config.with_allowed_origins(vec!["HTTPS://Good.Example".to_owned()]);
    assert!(config.admits_origin(Some("https://good.example")));
    assert!(config.admits_origin(Some("https://good.example/")));
    assert!(!config.admits_origin(Some("https://good.example.evil.example")));
    assert!(!config.admits_origin(Some("http://good.example")));
    let config = config.with_allowed_origins(vec![mqtt_listeners::ANY_ORIGIN.to_owned()]);
    assert!(config.admits_origin(Some("https://whatever.example")));
}

#[tokio::test]
async fn packets_split_across_messages_and_several_in_one_message() {
    let (server, ws) = ws_listener(WebSocketConfig::default()).await;
    let (mut socket, _) = open(&ws, request(&ws, "/", Some("mqtt"))).await.unwrap();
    let mut buffer = BytesMut::new();

    // CONNECT split in three messages [MQTT-6.0.0-2].
    let connect = connect_bytes("split");
    for part in [&connect[..1], &connect[1..7], &connect[7..]] {
        socket
            .send(Message::Binary(part.to_vec().into()))
            .await
            .unwrap();
    }
    assert!(matches!(
        next_packet(&mut socket, &mut buffer).await,
        Some(Packet::ConnAck(_))
    ));

    // SUBSCRIBE and PUBLISH in one message.
    let mut both = subscribe_bytes("split/t");
    both.extend_from_slice(&publish_bytes("split/t", b"together"));
    socket.send(Message::Binary(both.into())).await.unwrap();
    assert!(matches!(
        next_packet(&mut socket, &mut buffer).await,
        Some(Packet::SubAck(_))
    ));
    match next_packet(&mut socket, &mut buffer).await {
        Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"together"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    server.close().await;
}

#[tokio::test]
async fn a_text_message_closes_the_connection() {
    let (server, ws) = ws_listener(WebSocketConfig::default()).await;
    let (mut socket, _) = open(&ws, request(&ws, "/", Some("mqtt"))).await.unwrap();
    let mut buffer = BytesMut::new();
    socket
        .send(Message::Binary(connect_bytes("text").into()))
        .await
        .unwrap();
    assert!(matches!(
        next_packet(&mut socket, &mut buffer).await,
        Some(Packet::ConnAck(_))
    ));
    socket.send(Message::Text("not mqtt".into())).await.unwrap();
    assert_closed(&mut socket).await;
    support::eventually(|| ws.stats().active == 0).await;
    assert_eq!(ws.stats().transport_errors, 1);
    server.close().await;
}

#[tokio::test]
async fn an_oversize_message_closes_the_connection() {
    let config = WebSocketConfig::default().with_maximum_message_size(64);
    let (server, ws) = ws_listener(config).await;
    let (mut socket, _) = open(&ws, request(&ws, "/", Some("mqtt"))).await.unwrap();
    socket
        .send(Message::Binary(vec![0x10; 1000].into()))
        .await
        .ok();
    assert_closed(&mut socket).await;
    support::eventually(|| ws.stats().active == 0).await;
    server.close().await;
}

#[tokio::test]
async fn a_websocket_handshake_that_never_finishes_is_closed() {
    let config = WebSocketConfig::default().with_handshake_timeout(Duration::from_millis(300));
    let (server, ws) = ws_listener(config).await;
    let mut tcp = TcpStream::connect(ws.local_addr()).await.unwrap();
    // Half a request line, then silence.
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HT")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(
        TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest),
    )
    .await
    .unwrap()
    .ok();
    support::eventually(|| ws.stats().handshake_failures == 1).await;
    assert_eq!(ws.stats().active, 0);
    server.close().await;
}

#[tokio::test]
async fn round_trip_over_secure_websocket() {
    let pki = Pki::new();
    let config = WebSocketConfig::default().with_tls(pki.server_tls(true));
    let (server, ws) = ws_listener(config).await;
    assert_eq!(ws.protocol(), "wss");
    let tls = support::tls_connect(&pki.connector(true), ws.local_addr())
        .await
        .unwrap();
    let mut request = format!("wss://127.0.0.1:{}/mqtt", ws.local_addr().port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (socket, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, tls))
        .await
        .unwrap()
        .unwrap();
    round_trip(&mut WsByteStream::new(socket), "wss-client", "wss/t").await;
    server.close().await;
}
