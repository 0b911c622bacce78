//! The [Redis] storage backend of the Mochi MQTT broker.
//!
//! [`RedisBackend`] implements the [`Backend`] key-value contract of `mqtt-storage` on a Redis
//! server (5.0 or later; a single server or a primary with replicas, not Redis Cluster), so
//! that the broker's state lives outside its process.
//!
//! # Layout
//!
//! With the key prefix `mochi:` (see [`RedisOptions::key_prefix`]), the store is two Redis keys:
//!
//! - `mochi:data`, a hash: field = the store's key, value = its value;
//! - `mochi:keys`, a sorted set of the same keys, all with score 0, so that Redis orders them
//!   bytewise and `ZRANGEBYLEX` finds the keys under a prefix, in order.
//!
//! A [`Batch`] is one `MULTI`/`EXEC` transaction (`HSET` + `ZADD` for a put, `HDEL` + `ZREM`
//! for a delete, a Lua script running `ZRANGEBYLEX`, `HDEL` and `ZREMRANGEBYLEX` for a
//! `DeletePrefix`): Redis runs it in order with no other client's command in between, and
//! [`Backend::write`] returns `Ok` only once Redis confirmed the `EXEC` and every command in
//! it succeeded. `EXEC` does not roll back a command that fails while it runs (a `WRONGTYPE`
//! error, a script error): the commands before it stay applied. Such a reply is a failed
//! write, which the storage writer retries whole; a batch applied twice leaves the same state,
//! so a retry that succeeds repairs a partial one.
//! A prefix scan is one Lua script, so it sees a consistent snapshot.
//!
//! # Durability
//!
//! How durable a confirmed `EXEC` is depends on the server. Only `appendonly yes` with
//! `appendfsync always` fsyncs every write before the reply; with the defaults (`appendonly
//! no`, RDB snapshots) or `appendfsync everysec`, a crash of the Redis server (not of the
//! broker) loses writes it had confirmed, and so messages the broker had acknowledged even in
//! `sync` durability. [`RedisBackend::check_sync_durability`] (which the broker runs at start
//! in `sync` durability) reads both settings with `CONFIG GET` and logs a warning when they
//! fall short or cannot be read (managed services often disable `CONFIG`);
//! [`RedisOptions::require_fsync`] refuses to start instead. [`RedisOptions::wait_replicas`]
//! adds a `WAIT` after each transaction, so that a write counts only once replicas have it
//! too (a failover then keeps it).
//!
//! # Connection loss
//!
//! The backend keeps one multiplexed connection. When it breaks, the call that noticed
//! reconnects once at once and retries (every operation is idempotent); if Redis cannot be
//! reached, the call returns [`BackendError::Unavailable`] within
//! [`RedisOptions::connect_timeout_ms`] and later calls try to reconnect with an exponential
//! back-off (from [`RedisOptions::reconnect_min_delay_ms`] to
//! [`RedisOptions::reconnect_max_delay_ms`]), failing fast in between. The storage hook's
//! writer retries a failed batch, so the broker carries on by itself when Redis comes back.
//!
//! # Example
//!
//! ```no_run
//! use mqtt_hook_redis::{RedisBackend, RedisOptions};
//! use mqtt_storage::{Backend, BackendError, Batch};
//!
//! # async fn example() -> Result<(), BackendError> {
//! let backend = RedisBackend::connect(RedisOptions {
//!     url: "redis://127.0.0.1:6379/0".into(),
//!     key_prefix: "mochi:".into(),
//!     ..RedisOptions::default()
//! })
//! .await?;
//!
//! let mut batch = Batch::new();
//! batch.put(b"greeting".as_slice(), b"hello".as_slice());
//! backend.write(batch).await?;
//! assert_eq!(backend.get(b"greeting").await?.as_deref(), Some(b"hello".as_slice()));
//! # Ok(())
//! # }
//! ```
//!
//! # Cancel safety
//!
//! The futures of [`RedisBackend::connect`] and of the [`Backend`] methods may be dropped at
//! any time. A `write` dropped after its transaction was sent may still be applied (whole,
//! never in part).
//!
//! [Redis]: https://redis.io

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mqtt_storage::{Backend, BackendError, Batch, BoxFuture, KeyValues, Op};
use redis::aio::{ConnectionLike as _, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The backend's name, in logs and errors.
const NAME: &str = "redis";

/// Removes the keys between two `ZRANGEBYLEX` bounds from the hash and the sorted set.
/// KEYS: the hash, the sorted set. ARGV: the lower bound, the upper bound.
const DELETE_PREFIX: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2])
for i = 1, #members, 1000 do
    redis.call('HDEL', KEYS[1], unpack(members, i, math.min(i + 999, #members)))
end
redis.call('ZREMRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2])
return #members
";

/// The keys between two `ZRANGEBYLEX` bounds with their values, as one flat array
/// (key, value, key, value...). KEYS and ARGV as for [`DELETE_PREFIX`].
const SCAN_PREFIX: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2])
local found = {}
for i = 1, #members, 1000 do
    local last = math.min(i + 999, #members)
    local values = redis.call('HMGET', KEYS[1], unpack(members, i, last))
    for j = i, last do
        local value = values[j - i + 1]
        if value then
            found[#found + 1] = members[j]
            found[#found + 1] = value
        end
    end
end
return found
";

/// How to reach the Redis server. Every field has a default, so a configuration file names
/// only the ones it changes; an unknown field is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisOptions {
    /// The server, as a `redis://` URL: `redis://[user:password@]host[:port][/database]`.
    /// Default: `redis://127.0.0.1:6379/`.
    pub url: String,
    /// The prefix of the two Redis keys that hold the store (`<prefix>data` and
    /// `<prefix>keys`), so that several brokers can share a server. Default: `mochi:`.
    pub key_prefix: String,
    /// How long to wait for a connection, in milliseconds. Default: 5,000.
    pub connect_timeout_ms: u64,
    /// How long to wait for a reply, in milliseconds. Default: 10,000.
    pub response_timeout_ms: u64,
    /// The wait before the second attempt to reconnect, in milliseconds; each failed attempt
    /// doubles it. Default: 100.
    pub reconnect_min_delay_ms: u64,
    /// The longest wait between two attempts to reconnect, in milliseconds. Default: 5,000.
    pub reconnect_max_delay_ms: u64,
    /// Refuse to connect unless the server fsyncs every write before it replies
    /// (`appendonly yes` and `appendfsync always`, read with `CONFIG GET`). A server where
    /// `CONFIG` is disabled is refused too, since it cannot be checked. Default: false (the
    /// broker in `sync` durability then only logs a warning, see
    /// [`RedisBackend::check_sync_durability`]).
    pub require_fsync: bool,
    /// After each transaction, `WAIT` until this many replicas acknowledged it; fewer within
    /// the timeout is a failed write (retried by the storage writer, and in `sync` durability
    /// no acknowledgement is sent meanwhile). Default: none (no `WAIT`).
    pub wait_replicas: Option<WaitReplicas>,
}

/// The `WAIT` after each transaction (see [`RedisOptions::wait_replicas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WaitReplicas {
    /// Replicas that must acknowledge each transaction. Default: 1.
    pub replicas: u32,
    /// How long to wait for them, in milliseconds: 1 or more, and below
    /// [`RedisOptions::response_timeout_ms`]. Default: 1,000.
    pub timeout_ms: u64,
}

impl Default for WaitReplicas {
    fn default() -> Self {
        Self {
            replicas: 1,
            timeout_ms: 1_000,
        }
    }
}

/// What the server's persistence settings promise for a write it confirmed (see
/// [`RedisBackend::persistence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Persistence {
    /// `appendonly yes` and `appendfsync always`: every write is fsynced before the reply, so
    /// it survives a crash of the server.
    FsyncAlways,
    /// The server confirms writes before they are fsynced: a crash of the server loses the
    /// latest ones (or, without the append-only file, everything since the last snapshot).
    NotFsynced {
        /// The server's `appendonly` setting.
        appendonly: String,
        /// The server's `appendfsync` setting.
        appendfsync: String,
    },
    /// The settings could not be read (`CONFIG` is often disabled on managed services).
    Unknown {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FsyncAlways => f.write_str("appendonly yes, appendfsync always"),
            Self::NotFsynced {
                appendonly,
                appendfsync,
            } => write!(f, "appendonly {appendonly}, appendfsync {appendfsync}"),
            Self::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            key_prefix: "mochi:".to_owned(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 10_000,
            reconnect_min_delay_ms: 100,
            reconnect_max_delay_ms: 5_000,
            require_fsync: false,
            wait_replicas: None,
        }
    }
}

/// A [`Backend`] on a Redis server. Clones share the connection.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The server's address, for logs (the URL may hold a password).
    address: String,
    key_prefix: String,
    /// `<prefix>data`: the hash of values.
    data_key: Vec<u8>,
    /// `<prefix>keys`: the sorted set of keys.
    keys_key: Vec<u8>,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    require_fsync: bool,
    wait_replicas: Option<WaitReplicas>,
    link: Mutex<Link>,
}

/// The connection, or when to try the next one.
#[derive(Default)]
struct Link {
    connection: Option<MultiplexedConnection>,
    /// Counts the connections made, so that a failure on an old one does not drop a new one.
    generation: u64,
    /// Failed attempts to connect since the last success.
    failures: u32,
    /// No attempt to connect before this instant.
    next_attempt: Option<Instant>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.inner.address)
            .field("key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the server of `options.url`.
    ///
    /// # Errors
    ///
    /// [`BackendError::Failed`] for a URL that is not a Redis URL, for a `wait_replicas`
    /// timeout that is 0 or not below `response_timeout_ms`, and with
    /// [`RedisOptions::require_fsync`] for a server that does not fsync every write (or whose
    /// settings cannot be read); [`BackendError::Unavailable`] when the server cannot be
    /// reached (refused, timed out, or the authentication failed).
    pub async fn connect(options: RedisOptions) -> Result<Self, BackendError> {
        let client = Client::open(options.url.as_str())
            .map_err(|error| BackendError::failed(NAME, format!("bad Redis URL: {error}")))?;
        if let Some(wait) = options.wait_replicas
            && (wait.timeout_ms == 0 || wait.timeout_ms >= options.response_timeout_ms)
        {
            return Err(BackendError::failed(
                NAME,
                format!(
                    "wait_replicas.timeout_ms must be 1 to {} (below response_timeout_ms), not {}",
                    options.response_timeout_ms.saturating_sub(1),
                    wait.timeout_ms
                ),
            ));
        }
        let address = client.get_connection_info().addr.to_string();
        let key = |suffix: &str| [options.key_prefix.as_bytes(), suffix.as_bytes()].concat();
        let inner = Inner {
            address,
            data_key: key("data"),
            keys_key: key("keys"),
            key_prefix: options.key_prefix,
            client,
            connect_timeout: Duration::from_millis(options.connect_timeout_ms),
            response_timeout: Duration::from_millis(options.response_timeout_ms),
            reconnect_min_delay: Duration::from_millis(options.reconnect_min_delay_ms),
            reconnect_max_delay: Duration::from_millis(options.reconnect_max_delay_ms),
            require_fsync: options.require_fsync,
            wait_replicas: options.wait_replicas,
            link: Mutex::new(Link::default()),
        };
        let backend = Self {
            inner: Arc::new(inner),
        };
        backend.inner.connection().await?;
        tracing::info!(
            address = %backend.inner.address,
            key_prefix = %backend.inner.key_prefix,
            "connected to Redis"
        );
        if backend.inner.require_fsync {
            backend.check_sync_durability().await?;
        }
        Ok(backend)
    }

    /// Reads the server's persistence settings (`CONFIG GET appendonly` and `CONFIG GET
    /// appendfsync`).
    ///
    /// # Errors
    ///
    /// [`BackendError::Unavailable`] when the server cannot be reached. A server that refuses
    /// `CONFIG` gives [`Persistence::Unknown`], not an error.
    pub async fn persistence(&self) -> Result<Persistence, BackendError> {
        let appendonly = match self.config_get("appendonly").await? {
            Ok(value) => value,
            Err(reason) => return Ok(Persistence::Unknown { reason }),
        };
        let appendfsync = match self.config_get("appendfsync").await? {
            Ok(value) => value,
            Err(reason) => return Ok(Persistence::Unknown { reason }),
        };
        if appendonly.eq_ignore_ascii_case("yes") && appendfsync.eq_ignore_ascii_case("always") {
            Ok(Persistence::FsyncAlways)
        } else {
            Ok(Persistence::NotFsynced {
                appendonly,
                appendfsync,
            })
        }
    }

    /// For `sync` durability, where an acknowledged message must survive a crash: reads the
    /// server's persistence settings ([`RedisBackend::persistence`]) and logs a warning
    /// (`tracing::warn!`) when the server does not fsync every write, or when that cannot be
    /// checked. Returns what it found.
    ///
    /// # Errors
    ///
    /// [`BackendError::Unavailable`] when the server cannot be reached; with
    /// [`RedisOptions::require_fsync`], [`BackendError::Failed`] unless the server fsyncs
    /// every write.
    pub async fn check_sync_durability(&self) -> Result<Persistence, BackendError> {
        let persistence = self.persistence().await?;
        let inner = &self.inner;
        let replicas = inner.wait_replicas.map(|wait| wait.replicas);
        match &persistence {
            Persistence::FsyncAlways => {
                tracing::debug!(address = %inner.address, %persistence, "Redis fsyncs every write");
            }
            Persistence::NotFsynced { .. } if inner.require_fsync => {
                return Err(BackendError::failed(
                    NAME,
                    format!(
                        "{} does not fsync every write ({persistence}) and require_fsync is set:                          configure appendonly yes and appendfsync always",
                        inner.address
                    ),
                ));
            }
            Persistence::Unknown { .. } if inner.require_fsync => {
                return Err(BackendError::failed(
                    NAME,
                    format!(
                        "cannot check whether {} fsyncs every write ({persistence}) and                          require_fsync is set",
                        inner.address
                    ),
                ));
            }
            Persistence::NotFsynced { .. } => tracing::warn!(
                address = %inner.address,
                %persistence,
                wait_replicas = ?replicas,
                "Redis does not fsync every write: messages acknowledged in sync durability can \
                 be lost if the Redis server crashes (set appendonly yes and appendfsync always)"
            ),
            Persistence::Unknown { .. } => tracing::warn!(
                address = %inner.address,
                %persistence,
                wait_replicas = ?replicas,
                "cannot check whether Redis fsyncs every write (CONFIG GET failed): messages \
                 acknowledged in sync durability can be lost if the Redis server crashes, \
                 unless it runs with appendonly yes and appendfsync always"
            ),
        }
        Ok(persistence)
    }

    /// `CONFIG GET name`: the value, or (inner `Err`) why the server did not give it.
    async fn config_get(&self, name: &str) -> Result<Result<String, String>, BackendError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let reply: Result<Vec<(String, String)>, BackendError> = self
            .inner
            .request(|mut connection| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut connection).await }
            })
            .await;
        match reply {
            Ok(pairs) => Ok(pairs
                .into_iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
                .ok_or_else(|| format!("CONFIG GET {name} returned nothing"))),
            Err(error @ BackendError::Unavailable { .. }) => Err(error),
            Err(error) => Ok(Err(error.to_string())),
        }
    }

    /// The prefix of the Redis keys of this store.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let inner = &self.inner;
            let mut pipe = redis::pipe();
            pipe.atomic();
            for op in batch.ops {
                match op {
                    Op::Put { key, value } => {
                        pipe.hset(&inner.data_key, &key, value);
                        pipe.zadd(&inner.keys_key, key, 0);
                    }
                    Op::Delete { key } => {
                        pipe.hdel(&inner.data_key, &key);
                        pipe.zrem(&inner.keys_key, key);
                    }
                    Op::DeletePrefix { prefix } => {
                        let (min, max) = lex_range(&prefix);
                        pipe.cmd("EVAL")
                            .arg(DELETE_PREFIX)
                            .arg(2)
                            .arg(&inner.data_key)
                            .arg(&inner.keys_key)
                            .arg(min)
                            .arg(max);
                    }
                }
            }
            let wait = inner.wait_replicas;
            inner
                .request(|mut connection| {
                    let pipe = &pipe;
                    async move {
                        // MULTI's and each QUEUED reply are skipped; EXEC's is the last one.
                        let replies = connection
                            .req_packed_commands(pipe, pipe.len() + 1, 1)
                            .await?;
                        exec_result(replies, pipe.len())?;
                        // On the same connection, after the EXEC: WAIT counts the replicas
                        // that have every write of this connection so far.
                        if let Some(wait) = wait {
                            let acknowledged: u64 = redis::cmd("WAIT")
                                .arg(wait.replicas)
                                .arg(wait.timeout_ms)
                                .query_async(&mut connection)
                                .await?;
                            if acknowledged < u64::from(wait.replicas) {
                                return Err(RedisError::from((
                                    ErrorKind::ResponseError,
                                    "too few replicas acknowledged the write",
                                    format!(
                                        "WAIT: {acknowledged} of {} replicas within {} ms",
                                        wait.replicas, wait.timeout_ms
                                    ),
                                )));
                            }
                        }
                        Ok(())
                    }
                })
                .await
        })
    }

    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        let key = key.to_vec();
        Box::pin(async move {
            let inner = &self.inner;
            let mut cmd = redis::cmd("HGET");
            cmd.arg(&inner.data_key).arg(key);
            inner
                .request(|mut connection| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut connection).await }
                })
                .await
        })
    }

    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
        let (min, max) = lex_range(prefix);
        Box::pin(async move {
            let inner = &self.inner;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SCAN_PREFIX)
                .arg(2)
                .arg(&inner.data_key)
                .arg(&inner.keys_key)
                .arg(min)
                .arg(max);
            let flat: Vec<Vec<u8>> = inner
                .request(|mut connection| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut connection).await }
                })
                .await?;
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
                pairs.push((key, value));
            }
            Ok(pairs)
        })
    }
}

impl Inner {
    /// Runs one request on the connection, reconnecting (once) if the connection was lost.
    async fn request<T, F, Fut>(&self, run: F) -> Result<T, BackendError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let (generation, connection) = self.connection().await?;
            match run(connection).await {
                Ok(value) => return Ok(value),
                Err(error) if connection_lost(&error) => {
                    self.lost(generation, &error).await;
                    if retried {
                        return Err(BackendError::unavailable(NAME, error));
                    }
                    retried = true;
                }
                Err(error) if transient(&error) => {
                    return Err(BackendError::unavailable(NAME, error));
                }
                Err(error) => return Err(BackendError::failed(NAME, error)),
            }
        }
    }

    /// The current connection, made now if there is none and the back-off allows it.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), BackendError> {
        let mut link = self.link.lock().await;
        if let Some(connection) = &link.connection {
            return Ok((link.generation, connection.clone()));
        }
        let now = Instant::now();
        if let Some(next_attempt) = link.next_attempt {
            if now < next_attempt {
                return Err(BackendError::unavailable(
                    NAME,
                    format!(
                        "not connected to {} ({} failed attempts; the next in {} ms)",
                        self.address,
                        link.failures,
                        (next_attempt - now).as_millis()
                    ),
                ));
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout);
        let attempt = tokio::time::timeout(
            self.connect_timeout + Duration::from_millis(100),
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let error = match attempt {
            Ok(Ok(connection)) => {
                if link.failures > 0 {
                    tracing::info!(
                        address = %self.address,
                        failed_attempts = link.failures,
                        "reconnected to Redis"
                    );
                }
                link.generation += 1;
                link.failures = 0;
                link.next_attempt = None;
                link.connection = Some(connection.clone());
                return Ok((link.generation, connection));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no connection within {:?}", self.connect_timeout),
        };
        link.failures = link.failures.saturating_add(1);
        let delay = self
            .reconnect_min_delay
            .saturating_mul(1 << (link.failures - 1).min(16))
            .min(self.reconnect_max_delay);
        link.next_attempt = Some(now + delay);
        tracing::warn!(
            address = %self.address,
            %error,
            failed_attempts = link.failures,
            retry_in_ms = delay.as_millis(),
            "cannot connect to Redis"
        );
        Err(BackendError::unavailable(
            NAME,
            format!("cannot connect to {}: {error}", self.address),
        ))
    }

    /// Drops connection `generation` after `error`, unless it was already replaced.
    async fn lost(&self, generation: u64, error: &RedisError) {
        let mut link = self.link.lock().await;
        if link.generation == generation && link.connection.is_some() {
            tracing::warn!(address = %self.address, %error, "connection to Redis lost");
            link.connection = None;
            // The first attempt to reconnect is immediate.
            link.next_attempt = None;
        }
    }
}

/// Checks the reply to an `EXEC` of `commands` commands: every command must have succeeded.
/// `EXEC` does not roll back, so a command that failed while the transaction ran leaves the
/// ones before it applied: that is an error too (the writer retries the whole batch, which is
/// idempotent).
fn exec_result(mut replies: Vec<Value>, commands: usize) -> RedisResult<()> {
    let items = match replies.pop() {
        Some(Value::Array(items)) => items,
        Some(Value::ServerError(error)) => return Err(error.into()),
        Some(Value::Nil) => {
            return Err(RedisError::from((
                ErrorKind::ResponseError,
                "EXEC: the transaction was aborted",
            )));
        }
        other => {
            return Err(RedisError::from((
                ErrorKind::ResponseError,
                "EXEC: unexpected reply",
                format!("{other:?}"),
            )));
        }
    };
    if items.len() != commands {
        return Err(RedisError::from((
            ErrorKind::ResponseError,
            "EXEC: wrong number of replies",
            format!("{} for {commands} commands", items.len()),
        )));
    }
    for (at, item) in items.into_iter().enumerate() {
        if let Value::ServerError(error) = item {
            let error = RedisError::from(error);
            tracing::warn!(
                command = at,
                commands,
                %error,
                "a command failed inside a Redis transaction (EXEC does not roll back): the \
                 batch is retried whole"
            );
            return Err(error);
        }
    }
    Ok(())
}

/// Whether `error` means the connection is unusable (to be replaced).
fn connection_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
}

/// Whether `error` is a server state that passes (loading its data, a failover).
fn transient(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::BusyLoadingError
            | ErrorKind::TryAgain
            | ErrorKind::MasterDown
            | ErrorKind::ClusterDown
            | ErrorKind::ReadOnly
    )
}

/// The `ZRANGEBYLEX` bounds of the keys that start with `prefix`: from `[prefix` (inclusive)
/// to `(next` (exclusive), `next` being the smallest string above every key under the prefix,
/// with `-` and `+` (the ends of the set) where there is no such bound.
fn lex_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let min = if prefix.is_empty() {
        b"-".to_vec()
    } else {
        [b"[".as_slice(), prefix].concat()
    };
    let max = match next_prefix(prefix) {
        Some(next) => [b"(".as_slice(), &next].concat(),
        None => b"+".to_vec(),
    };
    (min, max)
}

/// The smallest string greater than every string that starts with `prefix`, or `None` when
/// there is none (the prefix is empty or all `0xff`).
fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_ranges() {
        assert_eq!(lex_range(b""), (b"-".to_vec(), b"+".to_vec()));
        assert_eq!(lex_range(b"a\0"), (b"[a\0".to_vec(), b"(a\x01".to_vec()));
        assert_eq!(lex_range(b"ab"), (b"[ab".to_vec(), b"(ac".to_vec()));
        assert_eq!(lex_range(b"a\xff"), (b"[a\xff".to_vec(), b"(b".to_vec()));
        assert_eq!(
            lex_range(b"\xff\xff"),
            (b"[\xff\xff".to_vec(), b"+".to_vec())
        );
    }

    #[test]
    fn exec_replies_with_a_failed_command_are_errors() {
        let ok = Value::Okay;
        // As in an EXEC reply: a server error in place of one command's result.
        let failed = redis::parse_redis_value(b"*1\r\n-WRONGTYPE wrong kind of value\r\n")
            .unwrap()
            .into_sequence()
            .unwrap()
            .remove(0);
        assert!(matches!(failed, Value::ServerError(_)), "{failed:?}");
        assert!(exec_result(vec![Value::Array(vec![ok.clone(), ok.clone()])], 2).is_ok());
        assert!(exec_result(vec![Value::Array(vec![ok.clone(), failed.clone()])], 2).is_err());
        assert!(exec_result(vec![Value::Array(vec![ok.clone()])], 2).is_err());
        assert!(exec_result(vec![Value::Nil], 2).is_err());
        assert!(exec_result(vec![failed], 2).is_err());
        assert!(exec_result(Vec::new(), 2).is_err());
    }

    #[test]
    fn options_default() {
        let options = RedisOptions::default();
        assert_eq!(options.key_prefix, "mochi:");
        assert!(options.reconnect_min_delay_ms <= options.reconnect_max_delay_ms);
    }
}
