//! Decoding a PUBLISH allocates nothing on the heap: the topic, the payload and binary properties
//! are slices of the read buffer. It runs without the libtest harness (`harness = false`): the
//! counting allocator sees every thread of the binary, and the harness's main thread allocates
//! while a test runs.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use bytes::{Bytes, BytesMut};
use mqtt_packets::{
    DecodeContext, MqttString, Packet, PacketId, Protocol, Publish, PublishProperties, QoS, decode,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn publish_decode_does_not_allocate() {
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let mut publish = Publish::new(
            MqttString::from_static("sensors/7/temp"),
            Bytes::from(vec![7u8; 64]),
        );
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(9);
        if protocol.is_v5() {
            publish.properties = PublishProperties {
                message_expiry_interval: Some(60),
                correlation_data: Some(Bytes::from_static(b"request-1")),
                content_type: Some(MqttString::from_static("text/plain")),
                ..PublishProperties::default()
            };
        }
        let mut wire = BytesMut::new();
        publish.encode(protocol, &mut wire).unwrap();

        const COUNT: usize = 1000;
        let mut buf = BytesMut::with_capacity(wire.len() * COUNT);
        for _ in 0..COUNT {
            buf.extend_from_slice(&wire);
        }
        let context = DecodeContext::new(protocol);
        // The first split of a fresh buffer turns it into a shared one (one allocation, once per
        // read buffer, not per packet); start counting after it.
        let first = decode(&mut buf, &context).unwrap();
        assert_eq!(first, Some(Packet::Publish(publish.clone())));

        let region = Region::new(GLOBAL);
        let mut decoded = 0;
        while let Some(packet) = decode(&mut buf, &context).unwrap() {
            assert!(matches!(packet, Packet::Publish(ref p) if p.packet_id == publish.packet_id));
            decoded += 1;
        }
        let stats = region.change();
        assert_eq!(decoded, COUNT - 1);
        assert_eq!(stats.allocations, 0, "{protocol}: {stats:?}");
        assert_eq!(stats.reallocations, 0, "{protocol}: {stats:?}");
    }
}

fn main() {
    publish_decode_does_not_allocate();
    println!("test publish_decode_does_not_allocate ... ok");
}
