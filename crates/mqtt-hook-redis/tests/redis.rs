//! The Redis backend against a real `redis-server` that each test starts on a free loopback
//! port: the conformance suite, key-prefix isolation, and reconnection after the server went
//! away.
//!
//! Without `redis-server` on the PATH the tests fail when `CI=true` and are skipped with a
//! warning otherwise (`apt-get install redis-server`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_hook_redis::{RedisBackend, RedisOptions};
use mqtt_storage::{Backend, BackendError, Batch};
use support::{RedisServer, options};
use tokio::time::{Instant, sleep, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let options = options(&server, "conformance:");
    // "Restarting" is connecting a new backend to the same server with the same prefix.
    mqtt_storage::conformance::run(|| {
        let options = options.clone();
        async move {
            RedisBackend::connect(options)
                .await
                .expect("connect to redis-server")
        }
    })
    .await;
}

#[tokio::test]
async fn key_prefixes_isolate_stores() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let a = RedisBackend::connect(options(&server, "a:")).await.unwrap();
    let b = RedisBackend::connect(options(&server, "b:")).await.unwrap();
    // "a" and "a:" prefixes: "a:data" is not under "a:" of the other store by accident.
    let ab = RedisBackend::connect(options(&server, "a:b:"))
        .await
        .unwrap();
    assert_eq!(a.key_prefix(), "a:");

    for (backend, value) in [(&a, b"in a".as_slice()), (&b, b"in b"), (&ab, b"in ab")] {
        let mut batch = Batch::new();
        batch.put(b"shared".as_slice(), value);
        batch.put(b"data".as_slice(), value);
        backend.write(batch).await.unwrap();
    }
    a.put(b"only a", b"1").await.unwrap();

    assert_eq!(
        a.get(b"shared").await.unwrap().as_deref(),
        Some(b"in a".as_slice())
    );
    assert_eq!(
        b.get(b"shared").await.unwrap().as_deref(),
        Some(b"in b".as_slice())
    );
    assert_eq!(b.get(b"only a").await.unwrap(), None);
    assert_eq!(
        b.scan_prefix(b"").await.unwrap(),
        vec![
            (b"data".to_vec(), b"in b".to_vec()),
            (b"shared".to_vec(), b"in b".to_vec()),
        ]
    );

    // Deleting everything in one store leaves the others alone.
    let mut batch = Batch::new();
    batch.delete_prefix(b"".as_slice());
    a.write(batch).await.unwrap();
    assert!(a.scan_prefix(b"").await.unwrap().is_empty());
    assert_eq!(b.scan_prefix(b"").await.unwrap().len(), 2);
    assert_eq!(
        ab.get(b"shared").await.unwrap().as_deref(),
        Some(b"in ab".as_slice())
    );
}

#[tokio::test]
async fn reconnects_after_the_server_came_back() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let backend = RedisBackend::connect(options(&server, "reconnect:"))
        .await
        .unwrap();
    backend.put(b"before", b"1").await.unwrap();

    server.stop();
    // Every call fails fast with Unavailable while the server is down.
    for _ in 0..3 {
        let result = timeout(Duration::from_secs(10), backend.put(b"during", b"2"))
            .await
            .expect("a write to a stopped server returns instead of hanging");
        assert!(
            matches!(
                result,
                Err(BackendError::Unavailable {
                    backend: "redis",
                    ..
                })
            ),
            "{result:?}"
        );
        let result = timeout(Duration::from_secs(10), backend.get(b"before"))
            .await
            .expect("a read from a stopped server returns instead of hanging");
        assert!(
            matches!(result, Err(BackendError::Unavailable { .. })),
            "{result:?}"
        );
    }

    // The same port again (an empty server: it kept nothing). No action on the backend: it
    // reconnects by itself as the caller retries.
    assert!(server.run().await, "restart redis-server on the same port");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match timeout(Duration::from_secs(10), backend.put(b"after", b"3")).await {
            Ok(Ok(())) => break,
            Ok(Err(BackendError::Unavailable { .. })) if Instant::now() < deadline => {
                sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the write after the restart failed: {other:?}"),
        }
    }
    assert_eq!(
        backend.get(b"after").await.unwrap().as_deref(),
        Some(b"3".as_slice())
    );
    assert_eq!(
        backend.scan_prefix(b"").await.unwrap(),
        vec![(b"after".to_vec(), b"3".to_vec())]
    );
}

#[tokio::test]
async fn a_server_restart_between_calls_is_transparent() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let backend = RedisBackend::connect(options(&server, "restart:"))
        .await
        .unwrap();
    backend.put(b"k", b"1").await.unwrap();
    server.stop();
    assert!(server.run().await);
    // The connection broke while idle: the next call reconnects once and succeeds.
    let result = timeout(Duration::from_secs(10), backend.put(b"k", b"2"))
        .await
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = RedisOptions {
        url: format!("redis://127.0.0.1:{port}/"),
        connect_timeout_ms: 1_000,
        ..RedisOptions::default()
    };
    let result = timeout(Duration::from_secs(10), RedisBackend::connect(options))
        .await
        .expect("connect returns instead of hanging");
    assert!(
        matches!(result, Err(BackendError::Unavailable { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_bad_url_is_an_error() {
    let result = RedisBackend::connect(RedisOptions {
        url: "http://example.invalid/".to_owned(),
        ..RedisOptions::default()
    })
    .await;
    assert!(
        matches!(result, Err(BackendError::Failed { .. })),
        "{result:?}"
    );
}

#[test]
fn options_from_a_configuration_file() {
    let options: RedisOptions = serde_json::from_str(
        r#"{"url": "redis://redis.internal:6380/2", "key_prefix": "broker-1:"}"#,
    )
    .unwrap();
    assert_eq!(options.url, "redis://redis.internal:6380/2");
    assert_eq!(options.key_prefix, "broker-1:");
    assert_eq!(
        options.connect_timeout_ms,
        RedisOptions::default().connect_timeout_ms
    );

    let empty: RedisOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, RedisOptions::default());
    assert!(!empty.require_fsync);
    assert_eq!(empty.wait_replicas, None);

    let durable: RedisOptions = serde_json::from_str(
        r#"{"require_fsync": true, "wait_replicas": {"replicas": 2, "timeout_ms": 250}}"#,
    )
    .unwrap();
    assert!(durable.require_fsync);
    assert_eq!(
        durable.wait_replicas,
        Some(mqtt_hook_redis::WaitReplicas {
            replicas: 2,
            timeout_ms: 250
        })
    );
    let unknown = serde_json::from_str::<RedisOptions>(r#"{"wait_replicas": {"count": 1}}"#);
    assert!(unknown.is_err(), "an unknown field is an error");

    let unknown = serde_json::from_str::<RedisOptions>(r#"{"prefix": "x"}"#);
    assert!(unknown.is_err(), "an unknown field is an error");
}
