//! MQTT over a Unix domain socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqtt_broker::{ConnectionInfo, Server};
use tracing::{info, warn};

use crate::accept::{Closer, Limits, ListenerStats, accept_loop};
use crate::{Listener, ListenerError, ListenerStatsSnapshot, ServeFuture};

/// Settings of a [`UnixSocket`] listener.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct UnixConfig {
    /// Connections open at once; more are closed at once. `None` (the default): unlimited.
    pub maximum_connections: Option<usize>,
    /// The socket file's permission bits (e.g. `0o660`). The socket is bound in a private
    /// directory (mode `0o700`) next to its path, given these bits, and only then linked at its
    /// path, so it is never reachable with other permissions. `None` (the default) leaves what
    /// the process umask gives.
    pub permissions: Option<u32>,
}

impl UnixConfig {
    /// The same settings with these permission bits.
    pub fn with_permissions(self, mode: u32) -> Self {
        Self {
            permissions: Some(mode),
            ..self
        }
    }

    /// The same settings with a connection limit.
    pub fn with_maximum_connections(self, maximum: usize) -> Self {
        Self {
            maximum_connections: Some(maximum),
            ..self
        }
    }
}

/// A Unix domain socket listener (the original broker's `NewUnixSock`).
#[derive(Debug)]
pub struct UnixSocket {
    id: Arc<str>,
    listener: tokio::net::UnixListener,
    /// The socket file we created, removed on close.
    path: Option<PathBuf>,
    address: String,
    config: UnixConfig,
    closer: Closer,
    stats: Arc<ListenerStats>,
}

impl UnixSocket {
    /// Binds a socket at `path`. A stale socket file there (one nobody listens on) is removed
    /// first; a live socket, or a file that is not a socket, is an error and left alone.
    pub async fn bind(
        id: &str,
        path: impl AsRef<Path>,
        config: UnixConfig,
    ) -> Result<Self, ListenerError> {
        let path = path.as_ref();
        remove_stale_socket(id, path).await?;
        let listener = match config.permissions {
            None => tokio::net::UnixListener::bind(path)
                .map_err(|error| ListenerError::io(id, error))?,
            Some(mode) => bind_with_permissions(path, mode)
                .await
                .map_err(|error| ListenerError::io(id, error))?,
        };
        let mut socket = Self::from_listener(id, listener, config);
        socket.path = Some(path.to_path_buf());
        socket.address = path.display().to_string();
        Ok(socket)
    }

    /// Wraps a socket the host program already bound; its file is left alone on close.
    pub fn from_listener(id: &str, listener: tokio::net::UnixListener, config: UnixConfig) -> Self {
        let address = listener
            .local_addr()
            .ok()
            .and_then(|address| address.as_pathname().map(|path| path.display().to_string()))
            .unwrap_or_default();
        Self {
            id: Arc::from(id),
            listener,
            path: None,
            address,
            config,
            closer: Closer::default(),
            stats: Arc::default(),
        }
    }

    /// The live counters.
    pub fn live_stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }
}

/// Binds a socket that appears at `path` with `mode` already set: it is bound in a fresh
/// directory only its owner can enter, given `mode`, then hard-linked at `path` (which fails,
/// rather than replacing anything, if something appeared there meanwhile). Setting the mode after
/// binding at `path` would leave a window in which anyone the umask admits could connect.
async fn bind_with_permissions(
    path: &Path,
    mode: u32,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Short names: the whole socket path must fit `sun_path` (about 100 bytes).
    let mut attempts = 0;
    let private = loop {
        let candidate = parent.join(format!(
            ".mq{:x}{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match tokio::fs::DirBuilder::new()
            .mode(0o700)
            .create(&candidate)
            .await
        {
            Ok(()) => break candidate,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    };
    let temporary = private.join("s");
    let result = async {
        let listener = tokio::net::UnixListener::bind(&temporary)?;
        tokio::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode)).await?;
        tokio::fs::hard_link(&temporary, path).await?;
        Ok(listener)
    }
    .await;
    // The socket lives on under `path`; the private name and directory go, whatever happened.
    let _ = tokio::fs::remove_file(&temporary).await;
    let _ = tokio::fs::remove_dir(&private).await;
    result
}

/// Removes a socket file left by a process that is gone. Refuses to remove anything else.
async fn remove_stale_socket(id: &str, path: &Path) -> Result<(), ListenerError> {
    let metadata = match tokio::fs::symlink_metadata(path).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(ListenerError::io(id, error)),
    };
    if !metadata.file_type().is_socket() {
        return Err(ListenerError::Config(format!(
            "{} exists and is not a socket",
            path.display()
        )));
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(ListenerError::io(
            id,
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a live server", path.display()),
            ),
        )),
        // Only a refused connection proves nobody listens; any other error (a full backlog,
        // missing permission) may hide a live server, whose socket must not be deleted.
        Err(error) if error.kind() != std::io::ErrorKind::ConnectionRefused => {
            Err(ListenerError::io(id, error))
        }
        Err(_) => {
            info!(listener = %id, path = %path.display(), "removing stale socket file");
            match tokio::fs::remove_file(path).await {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(ListenerError::io(id, error))
                }
                _ => Ok(()),
            }
        }
    }
}

impl Listener for UnixSocket {
    fn id(&self) -> &str {
        &self.id
    }

    fn protocol(&self) -> &'static str {
        "unix"
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.stats.snapshot()
    }

    fn serve(&self, server: Server) -> ServeFuture<'_> {
        Box::pin(async move {
            let limits = Limits {
                maximum_connections: self.config.maximum_connections,
            };
            accept_loop(
                &self.id,
                &self.listener,
                crate::accept::until_closed(self.closer.closed(), server.clone()),
                &limits,
                &self.stats,
                |stream, remote| {
                    let connection = ConnectionInfo::new(self.id.clone(), remote);
                    server.serve_connection(stream, connection)
                },
            )
            .await;
            Ok(())
        })
    }

    fn close(&self) {
        self.closer.close();
        if let Some(path) = &self.path {
            // A small metadata operation; the file is ours.
            if let Err(error) = std::fs::remove_file(path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    warn!(listener = %self.id, %error, "could not remove the socket file");
                }
            }
        }
    }
}
