//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as MQTT 5 enhanced authentication (§4.12).
//!
//! The exchange, with the method name `SCRAM-SHA-256`:
//!
//! 1. CONNECT carries the client-first message (`n,,n=user,r=client-nonce`) as Authentication
//!    Data.
//! 2. The server answers AUTH 0x18 with the server-first message (`r=nonce,s=salt,i=iterations`).
//! 3. The client sends AUTH 0x18 with the client-final message (`c=biws,r=nonce,p=proof`).
//! 4. The server checks the proof and answers CONNACK 0x00 with the server-final message
//!    (`v=signature`), which proves to the client that the server knows the password too; or
//!    CONNACK 0x87 Not authorized.
//!
//! A connected client re-authenticates the same way, starting with AUTH 0x19; success is then
//! AUTH 0x00. The server keeps only the salted keys (StoredKey, ServerKey), never the password.
//! When the CONNECT has a User Name, it must be the SCRAM user. A successful exchange makes the
//! SCRAM user the client's user name (the principal of [`AuthOutcome::Success`]), so that ACL
//! hooks check that user even when the CONNECT has no User Name; a re-authentication must prove
//! the same user (another one is refused with 0x87, and the connection ends). A successful
//! exchange authenticates the connection on its own: the broker does not also ask the
//! `on_connect_authenticate` hooks. An unknown user name gets a stable made-up salt and fails at
//! the proof after the same work as a wrong password.
//! Channel binding is not supported (`n,,` or `y,,` only).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use mqtt_broker::hooks::{AuthOutcome, AuthState, AuthStep, BoxFuture, HookEvents};
use mqtt_broker::{ClientInfo, Hook};
use mqtt_packets::{MqttString, ReasonCode};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::rules::constant_time_eq;

/// The Authentication Method this hook implements.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The PBKDF2 iteration count for credentials made from a password (RFC 7677 asks for at least
/// 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

/// What the server stores for one user: the salt, the iteration count, and the two keys derived
/// from the salted password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the credential of `password` with a random salt.
    pub fn from_password(password: &str, iterations: u32) -> Self {
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt);
        Self::derive(password, salt, iterations)
    }

    /// Derives the credential of `password` with the given salt.
    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        Self {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }
}

/// `SaltedPassword := Hi(password, salt, i)`, PBKDF2 with HMAC-SHA-256.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// HMAC-SHA-256.
pub fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // No OS randomness: fall back to hashing the time and an address; still unique per call.
        let seed = format!("{:?}{:p}", std::time::SystemTime::now(), buf.as_ptr());
        let digest = Sha256::digest(seed.as_bytes());
        for (byte, random) in buf.iter_mut().zip(digest.iter().cycle()) {
            *byte = *random;
        }
    }
}

/// Enhanced authentication with SCRAM-SHA-256 against a table of users.
///
/// A successful exchange makes the SCRAM user the client's user name
/// (the `principal` of [`AuthOutcome::Success`]), which the ACL hooks then see even when the CONNECT had
/// no User Name. A re-authentication must prove the same user.
pub struct ScramSha256Hook {
    users: RwLock<HashMap<String, ScramCredential>>,
    /// A random key for the made-up salt of unknown users: stable per user name, and not
    /// computable by clients (a plain hash of the name would tell which names are unknown).
    secret: [u8; 32],
}

impl std::fmt::Debug for ScramSha256Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSha256Hook")
            .field("users", &self.users.read().len())
            .finish_non_exhaustive()
    }
}

impl Default for ScramSha256Hook {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        Self {
            users: RwLock::default(),
            secret,
        }
    }
}

/// The server's state between the two steps.
struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
    /// The user's credential, or a made-up one for an unknown user (checked all the same, so
    /// that the refusal takes as long).
    credential: ScramCredential,
    known: bool,
    /// The SCRAM user, the client's user name after success.
    principal: MqttString,
}

impl ScramSha256Hook {
    /// A hook with no users.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a user, deriving the credential from the password.
    pub fn add_user(&self, username: &str, password: &str) {
        self.add_credential(
            username,
            ScramCredential::from_password(password, DEFAULT_ITERATIONS),
        );
    }

    /// Adds or replaces a user with a stored credential.
    pub fn add_credential(&self, username: &str, credential: ScramCredential) {
        self.users.write().insert(username.to_string(), credential);
    }

    /// Removes a user; returns whether it existed.
    pub fn remove_user(&self, username: &str) -> bool {
        self.users.write().remove(username).is_some()
    }

    fn first(
        &self,
        client: &ClientInfo,
        data: Option<&Bytes>,
        step: AuthStep,
        state: &mut AuthState,
    ) -> AuthOutcome {
        let Some(message) = data.and_then(|data| std::str::from_utf8(data).ok()) else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        // gs2-header: no channel binding.
        let (gs2_header, bare) = if let Some(bare) = message.strip_prefix("n,,") {
            ("n,,", bare)
        } else if let Some(bare) = message.strip_prefix("y,,") {
            ("y,,", bare)
        } else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        let mut username = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            if let Some(value) = attribute.strip_prefix("n=") {
                username = Some(value.replace("=2C", ",").replace("=3D", "="));
            } else if let Some(value) = attribute.strip_prefix("r=") {
                client_nonce = Some(value.to_string());
            }
        }
        let (Some(username), Some(client_nonce)) = (username, client_nonce) else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        // The identity the ACL hooks see is the client's user name, which a success sets to the
        // SCRAM user: a CONNECT User Name must be that user, or a client could prove one
        // identity and act as another. A re-authentication must prove the user of the
        // connection (the broker set its user name to the first exchange's user).
        let same_user = client
            .username
            .as_ref()
            .map(|name| name.as_str() == username);
        let allowed = match step {
            AuthStep::Reauthenticate => same_user == Some(true),
            _ => same_user != Some(false),
        };
        let Ok(principal) = MqttString::new(username.as_str()) else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        if !allowed || client_nonce.is_empty() {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        }
        let stored = self.users.read().get(&username).cloned();
        let known = stored.is_some();
        // An unknown user gets a plausible challenge (a salt that stays the same for the name)
        // and a made-up credential, and fails at the proof after the same work, so that the
        // exchange does not tell which user names exist.
        let credential = stored.unwrap_or_else(|| {
            let salt = hmac(&self.secret, username.as_bytes())
                .get(..16)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let mut stored_key = [0u8; 32];
            let mut server_key = [0u8; 32];
            fill_random(&mut stored_key);
            fill_random(&mut server_key);
            ScramCredential {
                salt,
                iterations: DEFAULT_ITERATIONS,
                stored_key,
                server_key,
            }
        });
        let (salt, iterations) = (credential.salt.clone(), credential.iterations);
        let mut server_nonce = [0u8; 18];
        fill_random(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(&salt));
        let exchange = Exchange {
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            gs2_header: gs2_header.to_string(),
            credential,
            known,
            principal,
        };
        *state = Some(Box::new(exchange));
        AuthOutcome::Continue(Bytes::from(server_first))
    }

    fn last(data: Option<&Bytes>, state: &mut AuthState) -> AuthOutcome {
        let Some(exchange) = state
            .take()
            .and_then(|state| state.downcast::<Exchange>().ok())
        else {
            return AuthOutcome::Fail(ReasonCode::PROTOCOL_ERROR);
        };
        let Some(message) = data.and_then(|data| std::str::from_utf8(data).ok()) else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        let expected_binding = format!("c={}", BASE64.encode(exchange.gs2_header.as_bytes()));
        let mut attributes = without_proof.split(',');
        if attributes.next() != Some(expected_binding.as_str())
            || attributes.next() != Some(format!("r={}", exchange.nonce).as_str())
        {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        }
        let Ok(proof) = BASE64.decode(proof) else {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        };
        let credential = &exchange.credential;
        let auth_message = format!(
            "{},{},{}",
            exchange.client_first_bare, exchange.server_first, without_proof
        );
        let client_signature = hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let computed: [u8; 32] = Sha256::digest(&client_key).into();
        if !constant_time_eq(&computed, &credential.stored_key) || !exchange.known {
            return AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED);
        }
        let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
        AuthOutcome::Success {
            data: Some(Bytes::from(format!(
                "v={}",
                BASE64.encode(server_signature)
            ))),
            principal: Some(exchange.principal),
        }
    }
}

impl Hook for ScramSha256Hook {
    fn id(&self) -> &str {
        "scram-sha-256"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_ENHANCED_AUTH
    }

    fn on_enhanced_auth<'a>(
        &'a self,
        client: &'a ClientInfo,
        method: &'a str,
        data: Option<&'a Bytes>,
        step: AuthStep,
        state: &'a mut AuthState,
    ) -> BoxFuture<'a, AuthOutcome> {
        let outcome = if method != SCRAM_SHA_256 {
            AuthOutcome::Unsupported
        } else {
            match step {
                AuthStep::Connect | AuthStep::Reauthenticate => {
                    self.first(client, data, step, state)
                }
                AuthStep::Continue => Self::last(data, state),
            }
        };
        Box::pin(std::future::ready(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of RFC 7677 §3 (user "user", password "pencil").
    #[test]
    fn rfc_7677_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::derive("pencil", salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let salted = salted_password(
            b"pencil",
            &BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let client_key = hmac(&salted, b"Client Key");
        let signature = hmac(&credential.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            BASE64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }
}
