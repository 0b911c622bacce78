//! End-to-end tests with an independent client, `rumqttc`, in both its 3.1.1 and v5 flavours.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::TIMEOUT;

async fn next_publish(eventloop: &mut rumqttc::EventLoop) -> rumqttc::Publish {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match eventloop.poll().await.expect("connection error") {
                Event::Incoming(Packet::Publish(publish)) => return publish,
                _ => continue,
            }
        }
    })
    .await
    .expect("timed out waiting for a PUBLISH")
}

async fn wait_for(eventloop: &mut rumqttc::EventLoop, want: fn(&Packet) -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event::Incoming(packet) = eventloop.poll().await.expect("connection error") {
                if want(&packet) {
                    return;
                }
            }
        }
    })
    .await
    .expect("timed out waiting for a packet");
}

fn options(id: &str, addr: std::net::SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

#[tokio::test]
async fn v311_publish_and_subscribe_at_every_qos() {
    let (server, addr) = support::start().await;
    let (subscriber, mut sub_loop) = AsyncClient::new(options("sub", addr), 100);
    subscriber
        .subscribe("sensors/+/temp", QoS::ExactlyOnce)
        .await
        .unwrap();
    wait_for(&mut sub_loop, |p| matches!(p, Packet::SubAck(_))).await;

    let (publisher, mut pub_loop) = AsyncClient::new(options("pub", addr), 100);
    let publishing = tokio::spawn(async move {
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            publisher
                .publish(format!("sensors/{i}/temp"), qos, false, vec![i as u8; 8])
                .await
                .unwrap();
        }
        // Drive the publisher's event loop until its QoS 2 flow completes.
        loop {
            if let Event::Incoming(Packet::PubComp(_)) = pub_loop.poll().await.unwrap() {
                break;
            }
        }
    });
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let publish = next_publish(&mut sub_loop).await;
        assert_eq!(publish.topic, format!("sensors/{i}/temp"));
        assert_eq!(publish.qos, qos);
        assert_eq!(&publish.payload[..], &[i as u8; 8]);
    }
    tokio::time::timeout(TIMEOUT, publishing)
        .await
        .unwrap()
        .unwrap();
    assert!(server.info().snapshot().messages_received >= 3);
}

#[tokio::test]
async fn v5_publish_and_subscribe_at_every_qos() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let (_server, addr) = support::start().await;
    let mut sub_options = Options5::new("sub5", addr.ip().to_string(), addr.port());
    sub_options.set_keep_alive(Duration::from_secs(30));
    let (subscriber, mut sub_loop) = Client5::new(sub_options, 100);
    subscriber.subscribe("a/#", Q5::ExactlyOnce).await.unwrap();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event5::Incoming(P5::SubAck(_)) = sub_loop.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .unwrap();

    let mut pub_options = Options5::new("pub5", addr.ip().to_string(), addr.port());
    pub_options.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut pub_loop) = Client5::new(pub_options, 100);
    tokio::spawn(async move {
        for qos in [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce] {
            publisher
                .publish("a/b", qos, false, vec![qos as u8])
                .await
                .unwrap();
        }
        while pub_loop.poll().await.is_ok() {}
    });
    let mut received = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while received.len() < 3 {
            if let Event5::Incoming(P5::Publish(publish)) = sub_loop.poll().await.unwrap() {
                received.push((publish.qos, publish.payload.to_vec()));
            }
        }
    })
    .await
    .expect("all three messages");
    assert_eq!(
        received,
        [
            (Q5::AtMostOnce, vec![0]),
            (Q5::AtLeastOnce, vec![1]),
            (Q5::ExactlyOnce, vec![2])
        ]
    );
}
