//! A packet full of tiny User Properties cannot make the decoder allocate many times its size
//! (security audit C1). It runs without the libtest harness (`harness = false`): the counting
//! allocator sees every thread of the binary, and the harness's main thread allocates while a
//! test runs.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use bytes::{BufMut, BytesMut};
use mqtt_packets::{
    DecodeContext, DecodeError, DecodeLimits, Limit, Packet, Protocol, ReasonCode, decode,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A v5 QoS 0 PUBLISH on `t` whose properties are `count` empty User Properties (5 bytes each
/// on the wire: `26 00 00 00 00`).
fn publish_with_empty_user_properties(count: usize) -> BytesMut {
    let properties = 5 * count;
    let mut body = BytesMut::new();
    body.put_slice(&[0x00, 0x01, b't']);
    put_varint(&mut body, properties);
    for _ in 0..count {
        body.put_slice(&[0x26, 0, 0, 0, 0]);
    }
    let mut packet = BytesMut::new();
    packet.put_u8(0x30);
    put_varint(&mut packet, body.len());
    packet.put_slice(&body);
    packet
}

fn put_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

fn a_packet_of_empty_user_properties_is_refused_before_it_costs_memory() {
    // 2 MiB on the wire: 419,430 entries of 64 bytes each once decoded, about 27 MiB (and more
    // while the list doubles) without a limit.
    let count = 2 * 1024 * 1024 / 5;
    let wire = publish_with_empty_user_properties(count);
    let context = DecodeContext::new(Protocol::V5);

    let mut buf = wire.clone();
    let region = Region::new(GLOBAL);
    let error = decode(&mut buf, &context).unwrap_err();
    let stats = region.change();
    assert_eq!(
        error,
        DecodeError::LimitExceeded {
            packet: mqtt_packets::PacketType::Publish,
            limit: Limit::UserProperties,
            maximum: 64,
        }
    );
    assert_eq!(error.reason_code(), ReasonCode::QUOTA_EXCEEDED);
    // The list of 64 entries and its growth: a few KiB, not tens of MiB.
    assert!(
        stats.bytes_allocated < 64 * 1024,
        "decoding allocated {} bytes",
        stats.bytes_allocated
    );

    // The same packet without the limit shows what the limit prevents.
    let unlimited = context.with_limits(DecodeLimits::UNLIMITED);
    let mut buf = wire.clone();
    let region = Region::new(GLOBAL);
    let packet = decode(&mut buf, &unlimited).unwrap();
    let stats = region.change();
    let Some(Packet::Publish(publish)) = packet else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.properties.user_properties.len(), count);
    assert!(
        stats.bytes_allocated > 10 * wire.len(),
        "unlimited decoding allocated only {} bytes",
        stats.bytes_allocated
    );
    drop(publish);

    // Within the limits, the bytes count too: 64 properties of 1 KiB each are too many bytes.
    let mut body = BytesMut::new();
    body.put_slice(&[0x00, 0x01, b't']);
    let entry_len = 1 + 2 + 1024 + 2;
    put_varint(&mut body, 64 * entry_len);
    for _ in 0..64 {
        body.put_u8(0x26);
        body.put_u16(1024);
        body.put_slice(&[b'n'; 1024]);
        body.put_u16(0);
    }
    let mut buf = BytesMut::new();
    buf.put_u8(0x30);
    put_varint(&mut buf, body.len());
    buf.put_slice(&body);
    let error = decode(&mut buf, &context).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::LimitExceeded {
                limit: Limit::UserPropertyBytes,
                ..
            }
        ),
        "{error:?}"
    );
}

fn main() {
    a_packet_of_empty_user_properties_is_refused_before_it_costs_memory();
    println!("test a_packet_of_empty_user_properties_is_refused_before_it_costs_memory ... ok");
}
