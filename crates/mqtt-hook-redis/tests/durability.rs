//! What a write confirmed by Redis is worth: the persistence check of `sync` durability, `WAIT`
//! for replicas, a command that fails inside `EXEC`, and a Redis server killed with SIGKILL
//! right after the storage hook reported records durable. Each test starts its own
//! `redis-server` on a free loopback port (skipped with a warning when it is not installed,
//! outside CI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use mqtt_broker::Hook as _;
use mqtt_broker::storage::{StorageEvent, StoredClient, StoredMessage};
use mqtt_hook_redis::{Persistence, RedisBackend, RedisOptions, WaitReplicas};
use mqtt_packets::{MqttString, Protocol, QoS};
use mqtt_storage::{Backend, BackendError, Batch, Durability, StorageHook, StorageOptions};
use support::{FSYNC_ALWAYS, RedisServer, options};
use tokio::time::{Instant, sleep, timeout};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(options: RedisOptions) -> Result<RedisBackend, BackendError> {
    timeout(TIMEOUT, RedisBackend::connect(options))
        .await
        .expect("connect returns")
}

#[tokio::test]
async fn the_sync_check_reads_appendonly_and_appendfsync() {
    let cases: [(&[&str], &str); 4] = [
        (&[], "the test default: no append-only file"),
        (
            &["--appendonly", "yes", "--appendfsync", "everysec"],
            "everysec",
        ),
        (FSYNC_ALWAYS, "always"),
        (&["--rename-command", "CONFIG", ""], "CONFIG disabled"),
    ];
    for (args, case) in cases {
        let Some(server) = RedisServer::start_with(args).await else {
            return;
        };
        let backend = connect(options(&server, "check:")).await.unwrap();
        let found = backend.check_sync_durability().await.unwrap();
        let required = connect(RedisOptions {
            require_fsync: true,
            ..options(&server, "check:")
        })
        .await;
        match case {
            "always" => {
                assert_eq!(found, Persistence::FsyncAlways, "{case}");
                assert!(required.is_ok(), "{case}: {required:?}");
            }
            "CONFIG disabled" => {
                assert!(
                    matches!(found, Persistence::Unknown { .. }),
                    "{case}: {found:?}"
                );
                assert!(
                    matches!(&required, Err(BackendError::Failed { message, .. }) if message.contains("cannot check")),
                    "{case}: {required:?}"
                );
            }
            _ => {
                let expected = if args.is_empty() {
                    ("no", "everysec")
                } else {
                    ("yes", "everysec")
                };
                assert_eq!(
                    found,
                    Persistence::NotFsynced {
                        appendonly: expected.0.to_owned(),
                        appendfsync: expected.1.to_owned(),
                    },
                    "{case}"
                );
                assert!(
                    matches!(&required, Err(BackendError::Failed { message, .. }) if message.contains("require_fsync")),
                    "{case}: {required:?}"
                );
            }
        }
        // Writes work whatever the settings.
        backend.put(b"k", b"v").await.unwrap();
    }
}

#[tokio::test]
async fn wait_replicas_fails_a_write_too_few_replicas_have() {
    let Some(primary) = RedisServer::start().await else {
        return;
    };
    let wait = WaitReplicas {
        replicas: 1,
        timeout_ms: 100,
    };
    let backend = connect(RedisOptions {
        wait_replicas: Some(wait),
        ..options(&primary, "wait:")
    })
    .await
    .unwrap();
    let result = backend.put(b"k", b"1").await;
    assert!(
        matches!(&result, Err(BackendError::Failed { message, .. }) if message.contains("0 of 1 replicas")),
        "{result:?}"
    );

    // A replica: once it is in sync, writes succeed.
    let port = primary.port.to_string();
    let Some(_replica) = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).await else {
        return;
    };
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match backend.put(b"k", b"2").await {
            Ok(()) => break,
            Err(BackendError::Failed { .. }) if Instant::now() < deadline => {
                sleep(Duration::from_millis(50)).await;
            }
            other => panic!("a write with one replica failed: {other:?}"),
        }
    }
    assert_eq!(
        backend.get(b"k").await.unwrap().as_deref(),
        Some(b"2".as_slice())
    );

    // The WAIT must end before the reply times out.
    for timeout_ms in [0, 5_000] {
        let result = connect(RedisOptions {
            wait_replicas: Some(WaitReplicas {
                replicas: 1,
                timeout_ms,
            }),
            ..options(&primary, "wait:")
        })
        .await;
        assert!(
            matches!(result, Err(BackendError::Failed { .. })),
            "{timeout_ms}"
        );
    }
}

#[tokio::test]
async fn a_command_that_fails_inside_exec_fails_the_write() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let backend = connect(options(&server, "exec:")).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // The hash of values is a string now: HSET fails with WRONGTYPE while the transaction runs.
    redis::cmd("SET")
        .arg("exec:data")
        .arg("not a hash")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    let mut batch = Batch::new();
    batch.put(b"a".as_slice(), b"1".as_slice());
    let result = backend.write(batch.clone()).await;
    assert!(
        matches!(&result, Err(BackendError::Failed { message, .. }) if message.contains("WRONGTYPE")),
        "{result:?}"
    );
    // EXEC did not roll back: the ZADD after the failed HSET was applied.
    let keys: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg("exec:keys")
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keys, [b"a".to_vec()]);
    // Once the cause is gone, the same batch again repairs the store.
    redis::cmd("DEL")
        .arg("exec:data")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    backend.write(batch).await.unwrap();
    assert_eq!(
        backend.scan_prefix(b"").await.unwrap(),
        [(b"a".to_vec(), b"1".to_vec())]
    );
}

fn queued(client_id: &str, seq: u64) -> StoredMessage {
    let mut message = StoredMessage::retained(
        MqttString::new("crash/t").unwrap(),
        Bytes::from(format!("message {seq}")),
        QoS::AtLeastOnce,
    );
    message.client_id = Some(client_id.to_owned());
    message.retain = false;
    message.seq = seq;
    message
}

/// Writes sessions, queued and retained messages through a `sync` storage hook, round by round,
/// each round acknowledged by `durable()`; kills Redis with SIGKILL right after the last `Ok`,
/// starts it again on the same data and returns what a new hook reads back: (sessions, queued
/// sequence numbers, retained topics), and the sequence numbers acknowledged.
async fn write_kill_and_read(
    server: &mut RedisServer,
) -> ((Vec<String>, Vec<u64>, Vec<String>), Vec<u64>) {
    let options = StorageOptions {
        durability: Durability::Sync,
        ..StorageOptions::default()
    };
    let backend = connect(self::options(server, "crash:")).await.unwrap();
    let storage = StorageHook::open(backend, options.clone()).await.unwrap();
    let mut acknowledged = Vec::new();
    for round in 0..20u64 {
        let client_id = format!("sub-{}", round % 4);
        if round < 4 {
            let client = StoredClient::new(client_id.clone(), Protocol::V5, 3_600);
            storage.on_storage_event(&StorageEvent::Session(&client));
        }
        let mut seqs = Vec::new();
        for n in 0..25 {
            let seq = round * 100 + n;
            storage.on_storage_event(&StorageEvent::MessageQueued(&queued(&client_id, seq)));
            seqs.push(seq);
        }
        let retained = StoredMessage::retained(
            MqttString::new(format!("retained/{round}")).unwrap(),
            Bytes::from_static(b"kept"),
            QoS::AtLeastOnce,
        );
        storage.on_storage_event(&StorageEvent::RetainedSet(&retained));
        let wait = storage.durable().expect("something to wait for");
        timeout(TIMEOUT, wait)
            .await
            .expect("durable completes")
            .expect("the records are committed");
        acknowledged.extend(seqs);
    }
    // SIGKILL: Redis gets no chance to write anything more.
    server.stop();
    drop(storage);
    assert!(server.run().await, "restart redis-server on its data");
    let backend = connect(self::options(server, "crash:")).await.unwrap();
    let restored = StorageHook::open(backend, options).await.unwrap();
    let mut sessions: Vec<String> = restored
        .stored_clients()
        .unwrap()
        .into_iter()
        .map(|client| client.client_id)
        .collect();
    sessions.sort();
    let mut seqs: Vec<u64> = restored
        .stored_inflight_messages()
        .unwrap()
        .into_iter()
        .map(|message| message.seq)
        .collect();
    seqs.sort_unstable();
    let mut retained: Vec<String> = restored
        .stored_retained_messages()
        .unwrap()
        .into_iter()
        .map(|message| message.topic.as_str().to_owned())
        .collect();
    retained.sort();
    restored.close(TIMEOUT).await;
    ((sessions, seqs, retained), acknowledged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_always_acknowledged_records_survive_a_sigkill_of_redis() {
    let Some(mut server) = RedisServer::start_with(FSYNC_ALWAYS).await else {
        return;
    };
    let ((sessions, seqs, retained), acknowledged) = write_kill_and_read(&mut server).await;
    assert_eq!(sessions, ["sub-0", "sub-1", "sub-2", "sub-3"]);
    assert_eq!(seqs, acknowledged, "every acknowledged message is back");
    let mut expected: Vec<String> = (0..20).map(|round| format!("retained/{round}")).collect();
    expected.sort();
    assert_eq!(retained, expected);
}

/// The control: the same run against a server that does not persist loses everything, which is
/// what the warning of `check_sync_durability` is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_a_sigkill_of_redis_loses_acknowledged_records() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let backend = connect(options(&server, "crash:")).await.unwrap();
    assert!(matches!(
        backend.check_sync_durability().await.unwrap(),
        Persistence::NotFsynced { .. }
    ));
    let ((sessions, seqs, _), acknowledged) = write_kill_and_read(&mut server).await;
    assert_eq!(acknowledged.len(), 500);
    assert!(
        sessions.is_empty() && seqs.is_empty(),
        "{sessions:?} {seqs:?}"
    );
}
