//! Heap held per idle connection, in process: the TCP listener as the `mochi` binary runs it,
//! `N` MQTT 3.1.1 clients (Keep Alive 300) connected from a plain thread with blocking sockets
//! (so the clients allocate nothing on the counted heap), then the live heap measured by a
//! counting allocator (over the system allocator: the counts do not depend on it). It counts what the broker keeps per connection (tasks,
//! buffers, session), not allocator overhead; `cargo xtask bench` reports the process RSS.
//!
//! `cargo bench -p mochi-mqtt --bench idle_connections` (5,000 connections; `-- 8000` for another
//! count: both ends of each connection are in this process, so it needs two descriptors each).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_listeners::{Listener, Tcp, TcpConfig};
use mqtt_packets::{Connect, MqttString, Packet, Protocol};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live bytes, live blocks and allocations so far.
fn live() -> (isize, isize, usize) {
    let stats = ALLOCATOR.stats();
    (
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated,
        stats.allocations as isize - stats.deallocations as isize,
        stats.allocations + stats.reallocations,
    )
}

/// Connects `count` clients with blocking sockets and waits for each CONNACK.
fn connect_all(addr: std::net::SocketAddr, count: usize, base: usize) -> Vec<std::net::TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut out = BytesMut::new();
        let mut connect = Connect::new(
            Protocol::V3_1_1,
            MqttString::new(format!("idle-{}", base + i)).unwrap(),
        );
        connect.keep_alive = 300;
        Packet::from(connect)
            .encode(Protocol::V3_1_1, &mut out)
            .unwrap();
        stream.write_all(&out).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
        streams.push(stream);
    }
    streams
}

/// Waits until the live heap stops changing (the broker finished its work for the last
/// connections), bounded.
fn settle(runtime: &tokio::runtime::Runtime) -> (isize, isize, usize) {
    let mut last = live();
    for _ in 0..50 {
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        let now = live();
        if now.0 == last.0 {
            return now;
        }
        last = now;
    }
    last
}

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook).unwrap();
    let tcp = runtime
        .block_on(Tcp::bind("t1", "127.0.0.1:0", TcpConfig::default()))
        .unwrap();
    let addr = tcp.local_addr();
    let serving = server.clone();
    runtime.spawn(async move { tcp.serve(serving).await });
    runtime.block_on(async { server.start() });

    // Warm up: the first connections grow the registry, the runtime's slabs and the
    // allocator's thread caches; measure the step from a first batch to the full count.
    let warm = connect_all(addr, count / 10, 0);
    let before = settle(&runtime);
    let started = Instant::now();
    let rest = connect_all(addr, count - count / 10, count / 10);
    let elapsed = started.elapsed();
    let after = settle(&runtime);
    let added = (rest.len()) as f64;
    let bytes = (after.0 - before.0) as f64 / added;
    let blocks = (after.1 - before.1) as f64 / added;
    let allocations = (after.2 - before.2) as f64 / added;
    println!(
        "{count} idle connections: {bytes:.0} B live heap per connection in {blocks:.1} blocks \
         ({allocations:.1} allocations per connect; {:.0} sequential connects/s)",
        added / elapsed.as_secs_f64()
    );
    drop(warm);
    drop(rest);
    drop(runtime);
}
