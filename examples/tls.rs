//! MQTT over TLS (port 8883) with rustls.
//!
//! Run with `cargo run -p mochi-examples --example tls -- CERT.pem KEY.pem`; without arguments a
//! self-signed certificate for `localhost` is generated (clients must then skip verification,
//! e.g. `mosquitto_sub --insecure --cafile ...`, or trust the printed certificate).

use std::sync::Arc;

use mochi_mqtt::listeners::{Listener, Tcp, TcpConfig, TlsConfig};
use mochi_mqtt::{AllowAllHook, Options, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let tls = match arguments.as_slice() {
        [certificate, key] => TlsConfig::builder_from_pem_files(certificate, key)
            .await?
            .build()?,
        _ => {
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
            let certificate = generated.cert.pem();
            println!("self-signed certificate:\n{certificate}");
            TlsConfig::builder_from_pem(
                certificate.as_bytes(),
                generated.signing_key.serialize_pem().as_bytes(),
            )?
            .build()?
        }
    };

    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook)?; // development only
    let config = TcpConfig::default().with_tls(tls);
    let listener = Arc::new(Tcp::bind("tls", "0.0.0.0:8883", config).await?);
    println!("MQTT over TLS on {}", listener.address());
    let serving = tokio::spawn({
        let (listener, server) = (listener.clone(), server.clone());
        async move { listener.serve(server).await }
    });
    tokio::signal::ctrl_c().await?;
    listener.close();
    serving.await??;
    server.close().await;
    Ok(())
}
