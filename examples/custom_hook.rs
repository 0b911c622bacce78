//! A hook of your own: refuse some client identifiers, restrict a topic, count what is
//! published. Every `Hook` method has a default, so a hook implements only what it needs and
//! says which events it handles in `provides`.
//!
//! Run with `cargo run -p mochi-examples --example custom_hook`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mochi_mqtt::broker::hooks::{Access, Decision, HookEvents};
use mochi_mqtt::listeners::{Listener, Tcp, TcpConfig};
use mochi_mqtt::packets::{Connect, Publish};
use mochi_mqtt::{AllowAllHook, ClientInfo, ConnectRefusal, Hook, Options, ReasonCode, Server};

/// Refuses client ids starting with `banned-`, keeps `admin/#` for the user `admin`, and counts
/// the messages delivered.
#[derive(Debug, Default)]
struct HouseRules {
    published: AtomicU64,
}

impl Hook for HouseRules {
    fn id(&self) -> &str {
        "house-rules"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT | HookEvents::ON_ACL_CHECK | HookEvents::ON_PUBLISHED
    }

    fn on_connect(&self, _client: &ClientInfo, connect: &Connect) -> Result<(), ConnectRefusal> {
        if connect.client_id.as_str().starts_with("banned-") {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID.into());
        }
        Ok(())
    }

    fn on_acl_check(&self, client: &ClientInfo, topic: &str, _access: Access) -> Decision {
        let is_admin = client.username.as_ref().map(|name| name.as_str()) == Some("admin");
        if topic.starts_with("admin/") && !is_admin {
            Decision::Deny
        } else {
            Decision::Defer // let the other hooks decide
        }
    }

    fn on_published(&self, client: &ClientInfo, publish: &Publish) {
        let count = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        println!(
            "#{count}: {} published to {}",
            client.client_id,
            publish.topic.as_str()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(Options::default());
    // Hooks run in the order they were added: ours first, then allow-all for what it defers.
    server.add_hook(HouseRules::default())?;
    server.add_hook(AllowAllHook)?;

    let tcp = Arc::new(Tcp::bind("tcp", "0.0.0.0:1883", TcpConfig::default()).await?);
    println!("MQTT on {}", tcp.address());
    let serving = tokio::spawn({
        let (tcp, server) = (tcp.clone(), server.clone());
        async move { tcp.serve(server).await }
    });
    tokio::signal::ctrl_c().await?;
    tcp.close();
    serving.await??;
    server.close().await;
    Ok(())
}
