//! The ledger as a hook: authentication (password checks on the blocking pool, within
//! [`VerificationLimits`]) and the ACL, with atomic replacement and reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqtt_broker::hooks::{Access, BoxFuture, ConnectRefusal, Decision, HookError, HookEvents};
use mqtt_broker::{ClientInfo, Hook};
use mqtt_packets::{Connect, ReasonCode};
use parking_lot::RwLock;
use tracing::{debug, info, warn};

use crate::ledger::{Ledger, LedgerError};
use crate::verification::{VerificationLimits, Verifier};

/// The ledger as a hook. The ledger is replaced atomically by [`LedgerHook::update`] or
/// [`LedgerHook::reload`]; checks in progress finish with the ledger they started with.
///
/// When the ledger has Argon2 or bcrypt hashes, connections are authenticated on the blocking
/// pool, a few at a time, within [`VerificationLimits`]: a flood of CONNECTs is refused with
/// 0x89 Server busy instead of queueing without limit.
#[derive(Debug)]
pub struct LedgerHook {
    ledger: RwLock<Arc<Ledger>>,
    path: Option<PathBuf>,
    /// Password checks running at once and waiting.
    verifier: Verifier,
}

impl LedgerHook {
    /// A hook with this ledger and the default [`VerificationLimits`].
    pub fn new(ledger: Ledger) -> Self {
        ledger.warn_plain_passwords();
        Self {
            ledger: RwLock::new(Arc::new(ledger)),
            path: None,
            verifier: Verifier::new(VerificationLimits::default()),
        }
    }

    /// A hook with the ledger of a file, which [`LedgerHook::reload`] reads again.
    pub async fn from_file(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        let ledger = read_file(&path).await?;
        ledger.warn_plain_passwords();
        Ok(Self {
            ledger: RwLock::new(Arc::new(ledger)),
            path: Some(path),
            verifier: Verifier::new(VerificationLimits::default()),
        })
    }

    /// Sets how many password checks run at once, how many connections may wait, and for how
    /// long (call it before adding the hook to a server).
    #[must_use]
    pub fn with_verification_limits(mut self, limits: VerificationLimits) -> Self {
        self.verifier = Verifier::new(limits);
        self
    }

    /// Replaces the ledger.
    pub fn update(&self, ledger: Ledger) {
        ledger.warn_plain_passwords();
        *self.ledger.write() = Arc::new(ledger);
    }

    /// Reads the file again and replaces the ledger; a bad file keeps the old ledger (the error
    /// says why, and is logged).
    pub async fn reload(&self) -> Result<(), LedgerError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match read_file(path).await {
            Ok(ledger) => {
                self.update(ledger);
                info!(path = %path.display(), "ledger reloaded");
                Ok(())
            }
            Err(error) => {
                warn!(path = %path.display(), %error, "ledger not reloaded; the previous one stays");
                Err(error)
            }
        }
    }

    /// The ledger in force.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.read().clone()
    }
}

async fn read_file(path: &Path) -> Result<Ledger, LedgerError> {
    let bytes = tokio_read(path).await.map_err(|source| LedgerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ledger::parse(path, &bytes)
}

async fn tokio_read(path: &Path) -> std::io::Result<Vec<u8>> {
    let path = path.to_path_buf();
    #[allow(clippy::disallowed_methods)] // Runs on the blocking pool.
    let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
    read.map_err(std::io::Error::other)?
}

impl Hook for LedgerHook {
    fn id(&self) -> &str {
        "ledger"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT | HookEvents::ON_CONNECT_AUTHENTICATE | HookEvents::ON_ACL_CHECK
    }

    fn init(&self, _: &mqtt_broker::Options) -> Result<(), HookError> {
        Ok(())
    }

    /// Refuses a CONNECT with 0x89 Server busy when its password would have to wait behind too
    /// many others (see [`VerificationLimits`]).
    fn on_connect(&self, client: &ClientInfo, connect: &Connect) -> Result<(), ConnectRefusal> {
        let by_password = connect.properties.authentication_method.is_none();
        if by_password && self.verifier.is_busy() && self.ledger.read().has_hashes() {
            debug!(client_id = %client.client_id, remote = ?client.connection.remote, "too many password checks waiting: server busy");
            return Err(ReasonCode::SERVER_BUSY.into());
        }
        Ok(())
    }

    /// Password hashes are checked on the blocking pool: Argon2 and bcrypt take milliseconds
    /// of CPU on purpose. A ledger without hashes is checked inline.
    fn on_connect_authenticate<'a>(
        &'a self,
        client: &'a ClientInfo,
        connect: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        let decision = |allowed: bool| {
            if allowed {
                Decision::Allow
            } else {
                Decision::Deny
            }
        };
        let ledger = self.ledger();
        if !ledger.has_hashes() {
            return Box::pin(std::future::ready(decision(
                ledger.authenticate(client, connect),
            )));
        }
        let client = client.clone();
        let connect = connect.clone();
        Box::pin(async move {
            let permit = match self.verifier.admit().await {
                Ok(permit) => permit,
                Err(refused) => {
                    debug!(client_id = %client.client_id, remote = ?client.connection.remote, ?refused, "password check refused");
                    return Decision::Deny;
                }
            };
            // The permit is held until the check ends, even if this connection goes away.
            let allowed = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                ledger.authenticate(&client, &connect)
            })
            .await
            .unwrap_or(false);
            decision(allowed)
        })
    }

    fn on_acl_check(&self, client: &ClientInfo, topic: &str, access: Access) -> Decision {
        if self.ledger.read().check(client, topic, access) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mqtt_packets::MqttString;

    use super::*;
    use crate::ledger::UserRule;
    use crate::ledger::tests::{client, connect};

    /// M3: when the waiting room is full, a CONNECT that needs a password check is refused at
    /// once with 0x89 Server busy, and one that got past the check in a race is denied.
    #[tokio::test(start_paused = true)]
    async fn a_flood_of_password_checks_is_refused_as_busy() {
        let mut ledger = Ledger::default();
        ledger.users.insert(
            "u".into(),
            UserRule {
                password: bcrypt::hash("pw", 4).unwrap(),
                ..UserRule::default()
            },
        );
        let hook = LedgerHook::new(ledger).with_verification_limits(VerificationLimits {
            concurrent: 1,
            max_waiting: Some(0),
            wait_timeout: Duration::from_secs(5),
        });
        let (info, packet) = (client("c", Some("u")), connect("c", Some("u"), "pw"));
        assert_eq!(hook.on_connect(&info, &packet), Ok(()));
        assert_eq!(
            hook.on_connect_authenticate(&info, &packet).await,
            Decision::Allow
        );
        let running = hook.verifier.admit().await.unwrap();
        assert_eq!(
            hook.on_connect(&info, &packet),
            Err(ConnectRefusal::from(ReasonCode::SERVER_BUSY))
        );
        assert_eq!(
            hook.on_connect_authenticate(&info, &packet).await,
            Decision::Deny
        );
        // Enhanced authentication does not wait for the ledger.
        let mut enhanced = packet.clone();
        enhanced.properties.authentication_method = Some(MqttString::from_static("SCRAM-SHA-256"));
        assert_eq!(hook.on_connect(&info, &enhanced), Ok(()));
        drop(running);
        assert_eq!(hook.on_connect(&info, &packet), Ok(()));
        // A ledger without hashes never waits.
        let plain = LedgerHook::new(Ledger::from_yaml(b"users: {u: {password: pw}}").unwrap())
            .with_verification_limits(VerificationLimits {
                concurrent: 1,
                max_waiting: Some(0),
                ..VerificationLimits::default()
            });
        let _running = plain.verifier.admit().await.unwrap();
        assert_eq!(plain.on_connect(&info, &packet), Ok(()));
        assert_eq!(
            plain.on_connect_authenticate(&info, &packet).await,
            Decision::Allow
        );
    }
}
