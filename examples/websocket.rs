//! MQTT over WebSocket on port 1882 at path `/mqtt` (subprotocol `mqtt`), with the HTTP stats
//! dashboard on port 8080 tracking it: what browser clients such as MQTT.js use.
//!
//! Run with `cargo run -p mochi-examples --example websocket`; then connect a client to
//! `ws://localhost:1882/mqtt`, and open <http://localhost:8080/>.
//!
//! Browsers send an `Origin` header, and only the origins listed are admitted (a page on
//! another site must not reach the broker through a visitor's browser); clients that send none,
//! such as devices and command-line tools, are always admitted. This example admits pages
//! served from `http://localhost:8000`.

use std::sync::Arc;

use mochi_mqtt::listeners::{
    HttpStats, HttpStatsConfig, Listener, Listeners, WebSocket, WebSocketConfig,
};
use mochi_mqtt::{AllowAllHook, Options, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook)?; // development only

    let websocket: Arc<dyn Listener> = Arc::new(
        WebSocket::bind(
            "ws",
            "0.0.0.0:1882",
            WebSocketConfig::default()
                .with_path("/mqtt")
                .with_allowed_origins(vec!["http://localhost:8000".to_owned()]),
        )
        .await?,
    );
    let stats =
        Arc::new(HttpStats::bind("stats", "0.0.0.0:8080", HttpStatsConfig::default()).await?);
    stats.track(websocket.clone());

    // A `Listeners` set serves and closes them together.
    let listeners = Listeners::new();
    listeners.add(websocket.clone())?;
    listeners.add(stats.clone())?;
    listeners.serve_all(&server);
    println!(
        "MQTT over WebSocket on ws://{}/mqtt, dashboard on http://{}/",
        websocket.address(),
        stats.address()
    );

    tokio::signal::ctrl_c().await?;
    listeners.close_all().await;
    server.close().await;
    Ok(())
}
