//! A broker whose auth and ACL rules come from a ledger file, reloaded on SIGHUP.
//!
//! Run with `cargo run -p mochi-examples --example auth_ledger_file [-- LEDGER_FILE]`
//! (default `examples/ledger.yaml`); edit the file and `kill -HUP <pid>` to apply the changes.

use std::sync::Arc;

use mochi_mqtt::auth::LedgerHook;
use mochi_mqtt::listeners::{Listener, Tcp, TcpConfig};
use mochi_mqtt::{Options, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/ledger.yaml".to_owned());
    let server = Server::new(Options::default());
    // Keep a handle to the hook to reload it later.
    let ledger = Arc::new(LedgerHook::from_file(&path).await?);
    server.add_hook_arc(ledger.clone())?;

    let tcp = Arc::new(Tcp::bind("tcp", "0.0.0.0:1883", TcpConfig::default()).await?);
    println!("MQTT on {}, rules from {path}", tcp.address());
    let serving = tokio::spawn({
        let (tcp, server) = (tcp.clone(), server.clone());
        async move { tcp.serve(server).await }
    });

    wait_for_ctrl_c_reloading_on_sighup(&ledger).await?;
    tcp.close();
    serving.await??;
    server.close().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_ctrl_c_reloading_on_sighup(
    ledger: &LedgerHook,
) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => return Ok(result?),
            _ = hangup.recv() => match ledger.reload().await {
                Ok(()) => println!("ledger reloaded"),
                Err(error) => println!("ledger not reloaded (the previous one stays): {error}"),
            },
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_ctrl_c_reloading_on_sighup(
    _ledger: &LedgerHook,
) -> Result<(), Box<dyn std::error::Error>> {
    Ok(tokio::signal::ctrl_c().await?)
}
