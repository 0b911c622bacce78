//! The smallest useful broker: MQTT over TCP on port 1883, every client allowed, in memory.
//! Ctrl-C closes it gracefully (v5 clients receive DISCONNECT 0x8B).
//!
//! Run with `cargo run -p mochi-examples --example minimal`; then, for example,
//! `mosquitto_sub -t 'hello/#' -v` and `mosquitto_pub -t hello/world -m hi`.

use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_packets::QoS;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(Options::default());
    // Development only: every client may connect, publish and subscribe.
    server.add_hook(AllowAllHook)?;

    let listener = tokio::net::TcpListener::bind("0.0.0.0:1883").await?;
    println!("listening on {}", listener.local_addr()?);
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_tcp("tcp", listener).await }
    });

    // The host program can publish too, without a network connection.
    server.publish("hello/broker", "started", true, QoS::AtMostOnce)?;

    tokio::signal::ctrl_c().await?;
    server.close().await;
    serving.await??;
    Ok(())
}
