//! The HTTP stats listener over a real socket, with a minimal HTTP/1.1 client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mqtt_listeners::{BasicAuth, HttpStats, HttpStatsConfig, Listener, Tcp, TcpConfig};
use support::{TIMEOUT, round_trip, server, spawn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One request with `Connection: close`; the whole reply.
async fn get(address: std::net::SocketAddr, path: &str, extra_headers: &str) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra_headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// The value of `"name":<number>` in a flat JSON text.
fn json_number(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

async fn stats_listener(
    config: HttpStatsConfig,
) -> (mqtt_broker::Server, Arc<HttpStats>, Arc<Tcp>) {
    let server = server();
    let tcp = Arc::new(
        Tcp::bind("tcp1", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    let http = Arc::new(
        HttpStats::bind("stats", "127.0.0.1:0", config)
            .await
            .unwrap(),
    );
    http.track(tcp.clone());
    assert_eq!(http.protocol(), "http");
    spawn(tcp.clone(), &server);
    spawn(http.clone(), &server);
    (server, http, tcp)
}

#[tokio::test]
async fn sysinfo_metrics_healthz_and_dashboard() {
    let (server, http, tcp) = stats_listener(HttpStatsConfig::default()).await;
    let mut client = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut client, "http-test", "http/t").await;

    let reply = get(http.local_addr(), "/api/sysinfo", "").await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers.contains("content-type: application/json"));
    let json = &reply.body;
    assert!(json.starts_with("{\"version\":\""), "{json}");
    assert_eq!(json_number(json, "clients_connected"), 1);
    assert!(json_number(json, "messages_received") >= 1);
    assert!(json_number(json, "started") > 0);
    assert!(
        json.contains("\"id\":\"tcp1\",\"protocol\":\"tcp\""),
        "{json}"
    );
    assert_eq!(json_number(json, "active"), 1);

    let reply = get(http.local_addr(), "/metrics", "").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains("content-type: text/plain; version=0.0.4")
    );
    assert!(
        reply
            .body
            .contains("# TYPE mochi_clients_connected gauge\nmochi_clients_connected 1\n"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("# TYPE mochi_messages_received_total counter\n")
    );
    assert!(
        reply
            .body
            .contains("mochi_listener_connections_active{listener=\"tcp1\",protocol=\"tcp\"} 1\n")
    );

    for line in [
        "# TYPE mochi_messages_received_by_qos_total counter\n",
        "mochi_messages_dropped_by_reason_total{reason=\"queue_full\"} ",
        "# TYPE mochi_queued_messages gauge\n",
        "# TYPE mochi_storage_errors_total counter\n",
    ] {
        assert!(reply.body.contains(line), "{line} in {}", reply.body);
    }

    // The original broker's path: JSON on `/` for a client that asks for JSON.
    let reply = get(http.local_addr(), "/", "Accept: application/json\r\n").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers.contains("content-type: application/json"),
        "{}",
        reply.headers
    );
    assert!(reply.body.starts_with("{\"version\":"), "{}", reply.body);

    let reply = get(http.local_addr(), "/healthz", "").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));

    let reply = get(http.local_addr(), "/", "").await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers.contains("content-type: text/html"));
    assert!(reply.body.contains("api/sysinfo"));
    assert!(reply.body.contains("setInterval(poll, 1000)"));
    assert!(!reply.body.contains("src=\"http"), "no external assets");

    assert_eq!(get(http.local_addr(), "/nowhere", "").await.status, 404);
    server.close().await;
}

#[tokio::test]
async fn basic_auth_guards_everything_but_healthz() {
    let config = HttpStatsConfig::default().with_basic_auth(BasicAuth::new("admin", "s3cret"));
    let (server, http, _tcp) = stats_listener(config).await;

    let reply = get(http.local_addr(), "/api/sysinfo", "").await;
    assert_eq!(reply.status, 401);
    assert!(reply.headers.contains("www-authenticate: basic"));
    // "admin:wrong"
    let wrong = get(
        http.local_addr(),
        "/metrics",
        "Authorization: Basic YWRtaW46d3Jvbmc=\r\n",
    )
    .await;
    assert_eq!(wrong.status, 401);
    // "admin:s3cret"
    let right = get(
        http.local_addr(),
        "/metrics",
        "Authorization: Basic YWRtaW46czNjcmV0\r\n",
    )
    .await;
    assert_eq!(right.status, 200);
    assert_eq!(get(http.local_addr(), "/healthz", "").await.status, 200);
    server.close().await;
}

#[tokio::test]
async fn healthz_reports_the_health_check() {
    let healthy = Arc::new(AtomicBool::new(true));
    let check = healthy.clone();
    let config =
        HttpStatsConfig::default().with_health_check(move || check.load(Ordering::Relaxed));
    let (server, http, _tcp) = stats_listener(config).await;
    assert_eq!(get(http.local_addr(), "/healthz", "").await.status, 200);
    healthy.store(false, Ordering::Relaxed);
    assert_eq!(get(http.local_addr(), "/healthz", "").await.status, 503);
    server.close().await;
}

#[tokio::test]
async fn close_ends_idle_keep_alive_connections() {
    let (server, http, _tcp) = stats_listener(HttpStatsConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(http.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    http.close();
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    support::eventually(|| http.stats().active == 0).await;
    server.close().await;
}
