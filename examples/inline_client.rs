//! The inline client: the host program publishes and subscribes without a network connection.
//! It bypasses the ACL hooks and may publish to `$SYS` topics (network clients can do neither).
//!
//! The example publishes a retained message, reads it back and a new one from a subscription
//! used as a stream (`subscribe` and `recv`), gets another through a callback subscription
//! (`subscribe_with`), and exits.
//!
//! Run with `cargo run -p mochi-examples --example inline_client`.

use std::time::Duration;

use mochi_mqtt::{Options, QoS, Server};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long the example waits for a message before giving up.
const WAIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // No listener is needed: the inline client talks to the broker directly. (Serve listeners as
    // in the `minimal` example and network clients see the same messages.)
    let server = Server::new(Options::default());
    let inline = server.inline_client();

    // A retained message, published before anyone subscribes (`Server::publish` is the same as
    // `server.inline_client().publish`).
    server.publish("sensors/1/temp", "21.5", true, QoS::AtMostOnce)?;

    // A subscription is a stream of PUBLISH packets; retained messages that match come first.
    // Dropping it unsubscribes.
    let mut sensors = inline.subscribe("sensors/#", QoS::AtLeastOnce)?;

    // A callback subscription runs on a task of its own until its handle is dropped. Here the
    // callback also tells `main` that it ran.
    let (seen, mut alerts_seen) = mpsc::unbounded_channel();
    let alerts = inline.subscribe_with("alerts/+", QoS::AtMostOnce, move |message| {
        println!(
            "callback: {} = {}",
            message.topic.as_str(),
            String::from_utf8_lossy(&message.payload)
        );
        // `main` may have stopped listening; nothing to do then.
        seen.send(()).ok();
    })?;

    // `publish` returns how many subscriptions the message reached.
    let reached = inline.publish("sensors/2/temp", "19.0", false, QoS::AtLeastOnce)?;
    println!("sensors/2/temp reached {reached} subscription(s)");
    inline.publish("alerts/smoke", "kitchen", false, QoS::AtMostOnce)?;

    // The retained message, then the new one.
    for _ in 0..2 {
        let message = timeout(WAIT, sensors.recv())
            .await?
            .ok_or("the subscription ended")?;
        println!(
            "stream:   {} = {} (retained: {})",
            message.topic.as_str(),
            String::from_utf8_lossy(&message.payload),
            message.retain
        );
    }
    timeout(WAIT, alerts_seen.recv())
        .await?
        .ok_or("the callback ended")?;

    // Unsubscribe both, then stop the broker.
    drop(alerts);
    drop(sensors);
    server.close().await;
    Ok(())
}
