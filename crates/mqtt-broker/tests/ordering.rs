//! Ordering across connections: a SUBSCRIBE that reached the server before a PUBLISH takes
//! effect before that PUBLISH is routed, even when both are read in the same readiness batch.
//!
//! Tokio runs the last task woken first (its LIFO slot): of two sockets that became readable
//! together, the second one's reader ran first, so a PUBLISH could be routed before a
//! SUBSCRIBE that arrived earlier on another connection (Paho's `test_subscribe_options` and
//! `test_request_response` failed in some runs). These tests make the batch deterministic: the
//! runtime's only worker is blocked while both packets arrive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::mpsc;
use std::time::Duration;

use mqtt_packets::{Packet, Protocol, QoS, Subscribe, Subscription, Unsubscribe};
use support::{Raw, connect, pid, publish, s, start};

/// Blocks the runtime's only worker until the returned sender is dropped or sent to; returns
/// once the worker is blocked.
async fn block_the_worker() -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let blocker = tokio::spawn(async move {
        started_tx.send(()).ok();
        // Blocks the worker on purpose: nothing else runs until the test says so.
        go_rx.recv_timeout(Duration::from_secs(30)).ok();
    });
    // The test body runs on its own thread, not on the worker.
    tokio::task::block_in_place(|| started_rx.recv_timeout(Duration::from_secs(30)))
        .expect("the worker did not start the blocker");
    (go_tx, blocker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_subscribe_read_in_the_same_batch_as_a_publish_takes_effect_first() {
    let (_server, addr) = start().await;
    let mut subscriber = Raw::accepted(addr, connect(Protocol::V5, "b")).await.0;
    let mut publisher = Raw::accepted(addr, connect(Protocol::V5, "a")).await.0;

    let (go, blocker) = block_the_worker().await;
    let subscribe = Subscribe::new(
        pid(1),
        vec![Subscription::new(s("ordered/topic"), QoS::AtMostOnce)],
    );
    subscriber.send(subscribe.into()).await;
    publisher
        .send(
            publish(
                "ordered/topic",
                b"after the SUBSCRIBE",
                QoS::AtMostOnce,
                false,
                0,
            )
            .into(),
        )
        .await;
    go.send(()).unwrap();
    blocker.await.unwrap();

    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));
    let delivered = subscriber.expect_publish().await;
    assert_eq!(&delivered.payload[..], b"after the SUBSCRIBE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_unsubscribe_read_in_the_same_batch_as_a_publish_takes_effect_first() {
    let (_server, addr) = start().await;
    let mut subscriber = Raw::accepted(addr, connect(Protocol::V5, "b")).await.0;
    subscriber.subscribe("ordered/topic", QoS::AtMostOnce).await;
    let mut publisher = Raw::accepted(addr, connect(Protocol::V5, "a")).await.0;
    let mut marker = Raw::accepted(addr, connect(Protocol::V5, "m")).await.0;

    let (go, blocker) = block_the_worker().await;
    subscriber
        .send(Unsubscribe::new(pid(2), vec![s("ordered/topic")]).into())
        .await;
    publisher
        .send(
            publish(
                "ordered/topic",
                b"after the UNSUBSCRIBE",
                QoS::AtMostOnce,
                false,
                0,
            )
            .into(),
        )
        .await;
    go.send(()).unwrap();
    blocker.await.unwrap();

    assert!(matches!(subscriber.recv().await, Some(Packet::UnsubAck(_))));
    subscriber.subscribe("marker", QoS::AtMostOnce).await;
    // A marker published after the first message: the first thing delivered is the marker, so
    // the message sent after the UNSUBSCRIBE was not.
    marker
        .send(publish("marker", b"m", QoS::AtMostOnce, false, 0).into())
        .await;
    let delivered = subscriber.expect_publish().await;
    assert_eq!(delivered.topic.as_str(), "marker");
}
