//! Micro-benchmarks of the codec: a 3.1.1 and a 5.0 QoS 1 PUBLISH with a 64-byte payload, and an
//! MQTT 5 CONNECT with properties. Run with `cargo bench -p mqtt-packets`.

#![allow(missing_docs, clippy::indexing_slicing, clippy::unwrap_used)]

use std::hint::black_box;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt_packets::{
    Connect, ConnectProperties, DecodeContext, MqttString, PacketId, Protocol, Publish,
    PublishProperties, QoS, UserProperty, Will, WillProperties, decode,
};

fn publish(protocol: Protocol) -> Publish {
    let mut publish = Publish::new(
        MqttString::from_static("sensors/building-7/floor-3/temp"),
        Bytes::from(vec![0xA5; 64]),
    );
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = PacketId::new(4242);
    if protocol.is_v5() {
        publish.properties = PublishProperties {
            message_expiry_interval: Some(3600),
            content_type: Some(MqttString::from_static("application/octet-stream")),
            ..PublishProperties::default()
        };
    }
    publish
}

fn connect() -> Connect {
    let mut connect = Connect::new(Protocol::V5, MqttString::from_static("device-000017"));
    connect.username = Some(MqttString::from_static("device"));
    connect.password = Some(Bytes::from_static(b"secret"));
    connect.properties = ConnectProperties {
        session_expiry_interval: Some(3600),
        receive_maximum: NonZeroU16::new(100),
        maximum_packet_size: NonZeroU32::new(1 << 20),
        topic_alias_maximum: Some(16),
        request_problem_information: Some(true),
        user_properties: vec![UserProperty::new(
            MqttString::from_static("site"),
            MqttString::from_static("plant-4"),
        )]
        .into(),
        ..ConnectProperties::default()
    };
    connect.will = Some(Will {
        topic: MqttString::from_static("devices/000017/status"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(10),
            ..WillProperties::default()
        },
    });
    connect
}

/// Decodes from a buffer holding many copies of one encoded packet; only the decode calls are
/// timed, the buffer is filled outside the measurement.
fn decode_bench(c: &mut Criterion, name: &str, protocol: Protocol, wire: &[u8]) {
    const COPIES: u64 = 1024;
    let context = DecodeContext::new(protocol).with_maximum_packet_size(1 << 20);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut remaining = iters;
            while remaining > 0 {
                let count = remaining.min(COPIES);
                let mut buf = BytesMut::with_capacity(wire.len() * count as usize);
                for _ in 0..count {
                    buf.extend_from_slice(wire);
                }
                let start = Instant::now();
                for _ in 0..count {
                    black_box(decode(black_box(&mut buf), &context)).ok();
                }
                total += start.elapsed();
                remaining -= count;
            }
            total
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    for (name, protocol) in [
        ("publish_qos1_v311", Protocol::V3_1_1),
        ("publish_qos1_v5", Protocol::V5),
    ] {
        let packet = publish(protocol);
        let mut wire = BytesMut::new();
        packet.encode(protocol, &mut wire).ok();
        decode_bench(c, name, protocol, &wire);
        let mut group = c.benchmark_group("encode");
        group.throughput(Throughput::Elements(1));
        let mut out = BytesMut::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(&packet).encode(protocol, &mut out).ok();
                black_box(&out);
            })
        });
        group.bench_function(format!("{name}_encoded_len"), |b| {
            b.iter(|| black_box(&packet).encoded_len(protocol))
        });
        group.finish();
    }

    let packet = connect();
    let mut wire = BytesMut::new();
    packet.encode(Protocol::V5, &mut wire).ok();
    decode_bench(c, "connect_v5_properties", Protocol::V5, &wire);
    let mut out = BytesMut::with_capacity(4096);
    c.benchmark_group("encode")
        .bench_function("connect_v5_properties", |b| {
            b.iter(|| {
                out.clear();
                black_box(&packet).encode(Protocol::V5, &mut out).ok();
                black_box(&out);
            })
        });
}

criterion_group!(codec, benches);
criterion_main!(codec);
