//! What an attacker's packet makes the broker allocate, measured with a counting allocator
//! (security audit C1). One test per file: the allocator sees every thread of the test binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::alloc::System;

use bytes::BytesMut;
use mqtt_packets::{MqttString, Packet, Protocol, QoS, ReasonCode, UserProperty};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::*;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_full_of_empty_user_properties_costs_about_its_size() {
    let (_server, addr) = start().await;
    let mut client = Raw::v5(addr, "flood").await;
    // 2 MiB on the wire: about 420,000 entries of 5 bytes, each 64 bytes once decoded.
    let mut message = publish("a/b", b"", QoS::AtLeastOnce, false, 1);
    message.properties.user_properties = (0..2 * 1024 * 1024 / 5)
        .map(|_| UserProperty::new(MqttString::default(), MqttString::default()))
        .collect();
    let mut wire = BytesMut::new();
    Packet::from(message)
        .encode(Protocol::V5, &mut wire)
        .unwrap();
    let region = Region::new(GLOBAL);
    client.send_bytes(&wire).await;
    client.expect_disconnect(ReasonCode::QUOTA_EXCEEDED).await;
    let stats = region.change();
    // The read buffer for the packet (its size) and small change; without the limit the
    // decoded list alone was about 27 MiB, and more while it grew.
    assert!(
        stats.bytes_allocated < 3 * wire.len(),
        "the broker allocated {} bytes for a packet of {}",
        stats.bytes_allocated,
        wire.len()
    );
}
