//! The network front end: a TCP listener, one `connection` actor per socket speaking
//! the native protocol, authentication, and graceful shutdown.
//!
//! Protocol-specific code lives here and in [`crate::protocol`] only; the broker core
//! knows nothing of frames, so a second front end (AMQP 0-9-1) can sit beside this one
//! over the same broker messages.

pub mod auth;
mod connection;
mod io;
pub mod tracking;

use crate::broker::{Broker, BrokerHandle};
use crate::error::ErrorCode;
use crate::protocol::wire::{encode_server, ServerFrame};
use crate::settings::{Settings, SettingsError};
use auth::Users;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};

/// What every connection shares.
pub(crate) struct ServerShared {
    /// The broker core.
    pub broker: BrokerHandle,
    /// Who may log in.
    pub users: Users,
    /// All settings (limits, heartbeat).
    pub settings: Settings,
    /// Open connections.
    pub connections: AtomicUsize,
    /// Woken when a connection closes (shutdown waits on it).
    pub closed: Notify,
    /// Set to true to close every connection.
    pub shutdown: watch::Sender<bool>,
}

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The broker core did not start.
    #[error("broker: {0}")]
    Broker(#[from] crate::error::BrokerError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A running networked broker.
///
/// ```no_run
/// use actormq::{server::ServerHandle, Settings};
/// let mut settings = Settings::default();
/// settings.server.bind = "127.0.0.1:0".into();
/// let server = ServerHandle::start(settings).unwrap();
/// println!("listening on {}", server.local_addr());
/// server.shutdown();
/// ```
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    /// Starts the broker core (recovering what `settings.storage.data_dir` holds) and
    /// listens on `settings.server.bind`. Ready to accept connections when this returns.
    pub fn start(settings: Settings) -> Result<ServerHandle, ServerError> {
        let users = Users::from_settings(&settings)?;
        let listener = std::net::TcpListener::bind(&settings.server.bind).map_err(|source| {
            ServerError::Bind {
                addr: settings.server.bind.clone(),
                source,
            }
        })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: settings.server.bind.clone(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind {
                addr: settings.server.bind.clone(),
                source,
            })?;
        let broker = Broker::builder()
            .settings(settings.broker.clone())
            .storage(settings.storage.options())
            .start()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(ServerShared {
            broker,
            users,
            settings,
            connections: AtomicUsize::new(0),
            closed: Notify::new(),
            shutdown,
        });
        let s2 = shared.clone();
        shared
            .broker
            .context()
            .next_arbiter()
            .spawn(accept_loop(listener, s2));
        tracing::info!(%local_addr, "actormq listening");
        Ok(ServerHandle { shared, local_addr })
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker core, for in-process use beside the network.
    pub fn broker(&self) -> &BrokerHandle {
        &self.shared.broker
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// Shuts down without losing what the broker has taken: stops accepting, tells every
    /// client (a CONNECTION_FORCED error frame), waits until each connection has handed
    /// its last acks to the queues and closed, then stops the broker
    /// ([`BrokerHandle::stop`]: queues write what they hold before the store closes).
    /// Bounded by `broker.shutdown_timeout_secs` for the connections and again for the
    /// queues; what is cut off is logged. Safe to call twice.
    pub async fn stop(&self) {
        self.shared.shutdown.send_replace(true);
        let timeout = Duration::from_secs(self.shared.settings.broker.shutdown_timeout_secs);
        if tokio::time::timeout(timeout, self.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connections(),
                ?timeout,
                "shutdown: connections still open after broker.shutdown_timeout_secs; stopping the broker anyway"
            );
        }
        self.shared.broker.stop().await;
    }

    /// The blocking form of [`stop`](Self::stop).
    pub fn shutdown(&self) {
        let shared = self.shared.clone();
        let local_addr = self.local_addr;
        let waited = std::thread::spawn(move || {
            let me = ServerHandle { shared, local_addr };
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt.block_on(me.stop()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the shutdown runtime");
                    me.shared.broker.shutdown();
                }
            }
        })
        .join();
        if waited.is_err() {
            tracing::error!("the shutdown thread panicked");
        }
    }

    /// Resolves once no connection is open (each one's `stopped` notifies `closed`).
    async fn all_closed(&self) {
        loop {
            let closed = self.shared.closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read: a close in between still wakes us.
            closed.as_mut().enable();
            if self.connections() == 0 {
                return;
            }
            closed.await;
        }
    }
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<ServerShared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener");
            return;
        }
    };
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => {
                tracing::info!("stopped accepting connections");
                return;
            }
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: log, back off a little, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        if open > shared.settings.server.max_connections {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%peer, limit = shared.settings.server.max_connections, "connection refused: limit reached");
            actix_rt::spawn(refuse(socket, shared.settings.server.max_connections));
            continue;
        }
        let std_socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                shared.connections.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "cannot hand the socket over");
                continue;
            }
        };
        let s2 = shared.clone();
        // Each connection lives on a worker arbiter, registered with that arbiter's
        // reactor (the socket is moved as a std socket and adopted there).
        shared.broker.context().next_arbiter().spawn_fn(move || {
            match tokio::net::TcpStream::from_std(std_socket) {
                Ok(s) => {
                    connection::Connection::start(s, peer, s2);
                }
                Err(e) => {
                    s2.connections.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(error = %e, "cannot adopt the socket");
                }
            }
        });
    }
}

/// Tells a client over the connection limit why, and closes.
async fn refuse(mut socket: tokio::net::TcpStream, limit: usize) {
    let mut out = BytesMut::new();
    let _ = encode_server(
        &ServerFrame::Error {
            id: None,
            code: ErrorCode::ResourceError,
            message: format!("connection limit of {limit} reached (server.max_connections)"),
            fatal: true,
        },
        &mut out,
    );
    let _ = socket.write_all(&out).await;
    let _ = socket.shutdown().await;
}

/// Installs the `tracing` subscriber: `RUST_LOG` when set, else `level`.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Logs go to standard error, leaving standard output to the program's own output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `actormq serve`: loads settings, starts the server, runs until SIGINT or SIGTERM,
/// shuts down gracefully.
pub fn run_cli_serve(config: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load(config.as_deref())?;
    init_logging(&settings.log.level);
    let server = ServerHandle::start(settings)?;
    println!("actormq listening on {}", server.local_addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        ctrl_c.await?;
        Ok::<(), std::io::Error>(())
    })?;
    tracing::info!("shutting down");
    server.shutdown();
    Ok(())
}
