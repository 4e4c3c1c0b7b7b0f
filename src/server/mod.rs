//! The network front ends: listeners opened on a running broker ([`FrontEnd`]), one
//! `connection` actor per socket speaking the native protocol, authentication, the
//! registry of live connections, and a shutdown that loses nothing.
//!
//! Protocol-specific code lives here and in [`crate::protocol`] only; the broker core
//! knows nothing of frames, so a second front end (AMQP 0-9-1) can sit beside this one
//! over the same broker messages.

pub mod auth;
pub mod client_properties;
mod connection;
pub mod connections;
pub mod http;
pub(crate) mod io;
mod listener;
pub mod stream;
pub(crate) mod tls;
mod tls_listen;

use crate::broker::{Broker, BrokerHandle};
use crate::error::ErrorCode;
use crate::protocol::wire::{encode_server, ServerFrame};
use crate::settings::{Settings, SettingsError};
use auth::Users;
use bytes::BytesMut;
pub use connections::{CloseConnection, ConnectionInfo, Connections};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};

/// What every connection of every listener shares.
pub(crate) struct ServerShared {
    /// The broker core.
    pub broker: BrokerHandle,
    /// Who may log in.
    pub users: Users,
    /// All settings (limits, heartbeat).
    pub settings: Settings,
    /// Open connections (counted at accept, before the connection registers).
    pub connections: AtomicUsize,
    /// The live connections, for listing and closing them.
    pub registry: Connections,
    /// Woken when a connection closes (shutdown waits on it).
    pub closed: Notify,
    /// Set to true to stop every listener and close every connection.
    pub shutdown: watch::Sender<bool>,
    /// AMQP direct reply-to consumers of every AMQP connection, by token.
    pub direct_replies: crate::amqp::reply_to::DirectReplies,
    /// The HTTP (management) servers, stopped with the front end.
    pub http: std::sync::Mutex<Vec<actix_web::dev::ServerHandle>>,
    /// Every listener opened: protocol and address (shown by `/api/overview`).
    pub listeners: std::sync::Mutex<Vec<(&'static str, SocketAddr)>>,
    /// The TLS listeners' certificate (loaded when `[tls]` names one).
    pub tls: Option<Arc<tls::Tls>>,
    /// Failed logins per client address, which slow that address's next attempts.
    pub login_throttle: auth::LoginThrottle,
}

impl ServerShared {
    /// A connection ended (or never started): one less, and whoever waits is told.
    pub(crate) fn connection_gone(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.closed.notify_waiters();
    }

    /// The HTTP servers (a plain list: only pushed and drained).
    pub(crate) fn lock_http(&self) -> std::sync::MutexGuard<'_, Vec<actix_web::dev::ServerHandle>> {
        self.http.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a listener for the overview.
    pub(crate) fn record_listener(&self, protocol: &'static str, addr: SocketAddr) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((protocol, addr));
    }
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
    /// The TLS certificate, key or CA could not be loaded (or is not configured).
    #[error("tls: {0}")]
    Tls(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The front ends of one running broker: the users they authenticate, the registry of
/// their live connections, and their shutdown. Listeners are opened on it one by one
/// ([`FrontEnd::listen_native`]), so several protocols share one broker, and an
/// embedding service can open a listener on its in-process broker, with the exchange
/// types it registered in Rust.
///
/// ```no_run
/// use actormq::server::FrontEnd;
/// use actormq::{Broker, Settings};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = Broker::builder().start()?; // with .exchange_type(...) as needed
/// let front = FrontEnd::new(broker, Settings::default())?;
/// let addr = front.listen_native(std::net::TcpListener::bind("127.0.0.1:0")?)?;
/// println!("native protocol on {addr}");
/// front.stop().await; // clients told, queues written, broker stopped
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FrontEnd {
    shared: Arc<ServerShared>,
}

impl FrontEnd {
    /// Front ends for `broker`, with the users of `settings` (and its `[server]` limits).
    pub fn new(broker: BrokerHandle, settings: Settings) -> Result<FrontEnd, ServerError> {
        // The settings' users seed a broker that has none (a new data directory); after
        // that users are runtime definitions, read live at every login.
        broker.seed_users(Users::seeds(&settings)?);
        let users = Users::live(broker.definitions());
        let (shutdown, _) = watch::channel(false);
        let tls = match settings.tls.cert_file {
            Some(_) => Some(Arc::new(
                tls::Tls::load(&settings.tls).map_err(ServerError::Tls)?,
            )),
            None => None,
        };
        Ok(FrontEnd {
            shared: Arc::new(ServerShared {
                broker,
                users,
                settings,
                connections: AtomicUsize::new(0),
                registry: Connections::default(),
                closed: Notify::new(),
                shutdown,
                direct_replies: Default::default(),
                http: Default::default(),
                listeners: Default::default(),
                tls,
                login_throttle: Default::default(),
            }),
        })
    }

    /// Serves the native protocol on `listener` (already bound) until [`stop`](Self::stop);
    /// returns the address it listens on.
    pub fn listen_native(
        &self,
        listener: std::net::TcpListener,
    ) -> Result<SocketAddr, ServerError> {
        let addr = prepare(&listener)?;
        let start: listener::StartConnection = Arc::new(|socket, peer, shared| {
            connection::Connection::start(socket, peer, shared);
        });
        listener::spawn(
            listener,
            self.shared.clone(),
            "native",
            start,
            refuse_native,
            None,
        );
        self.shared.record_listener("native", addr);
        tracing::info!(%addr, "native protocol listening");
        Ok(addr)
    }

    /// Serves AMQP 0-9-1 on `listener` (already bound) until [`stop`](Self::stop);
    /// returns the address it listens on.
    pub fn listen_amqp(&self, listener: std::net::TcpListener) -> Result<SocketAddr, ServerError> {
        let addr = prepare(&listener)?;
        let start: listener::StartConnection = Arc::new(|socket, peer, shared| {
            crate::amqp::AmqpConnection::start(socket, peer, shared);
        });
        listener::spawn(
            listener,
            self.shared.clone(),
            "amqp",
            start,
            crate::amqp::refuse,
            None,
        );
        self.shared.record_listener("amqp", addr);
        tracing::info!(%addr, "AMQP 0-9-1 listening");
        Ok(addr)
    }

    /// The broker core.
    pub fn broker(&self) -> &BrokerHandle {
        &self.shared.broker
    }

    /// The live connections of every listener.
    pub fn connections(&self) -> &Connections {
        &self.shared.registry
    }

    /// Failed logins per client address (native, AMQP and HTTP basic auth alike).
    pub fn login_throttle(&self) -> &auth::LoginThrottle {
        &self.shared.login_throttle
    }

    /// Shuts down without losing what the broker has taken: stops every listener, tells
    /// every client (CONNECTION_FORCED), waits until each connection has handed its last
    /// acks to the queues and closed, then stops the broker ([`BrokerHandle::stop`]:
    /// queues write what they hold before the store closes). Bounded by
    /// `broker.shutdown_timeout_secs` for the connections and again for the queues;
    /// what is cut off is logged. Safe to call twice.
    pub async fn stop(&self) {
        self.shared.shutdown.send_replace(true);
        http::stop_all(&self.shared).await;
        let timeout = Duration::from_secs(self.shared.settings.broker.shutdown_timeout_secs);
        if tokio::time::timeout(timeout, self.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.shared.connections.load(Ordering::Acquire),
                ?timeout,
                "shutdown: connections still open after broker.shutdown_timeout_secs; stopping the broker anyway"
            );
        }
        self.shared.broker.stop().await;
    }

    /// Resolves once no connection is open (each one's `stopped` notifies `closed`).
    async fn all_closed(&self) {
        loop {
            let closed = self.shared.closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read: a close in between still wakes us.
            closed.as_mut().enable();
            if self.shared.connections.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Makes a bound listener ready for tokio; its address.
fn prepare(listener: &std::net::TcpListener) -> Result<SocketAddr, ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string()),
        source,
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    listener.local_addr().map_err(bind_error)
}

/// Binds `addr` for a listener.
fn bind(addr: &str) -> Result<std::net::TcpListener, ServerError> {
    std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Binds the AMQP listeners of `amqp.bind`. An IPv6 address that cannot be bound
/// because the machine has no IPv6 loopback (or no IPv6 at all) is logged and skipped:
/// the default lists `[::1]:5672` beside `127.0.0.1:5672`. Any other failure is fatal.
fn bind_amqp(addrs: &[String]) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let mut out = Vec::new();
    for a in addrs {
        match bind(a) {
            Ok(l) => out.push(l),
            Err(ServerError::Bind { addr, source })
                if addr.starts_with('[')
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                    )
                    || source.raw_os_error() == Some(libc::EAFNOSUPPORT)
                        && addr.starts_with('[') =>
            {
                tracing::warn!(%addr, error = %source, "no IPv6 here: AMQP listener skipped");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A running networked broker: the broker core and its native listener.
///
/// ```no_run
/// use actormq::{server::ServerHandle, Settings};
/// let mut settings = Settings::default();
/// settings.server.bind = "127.0.0.1:0".into();
/// settings.amqp.bind = vec!["127.0.0.1:0".into()];
/// let server = ServerHandle::start(settings).unwrap();
/// println!("listening on {}", server.local_addr());
/// server.shutdown();
/// ```
pub struct ServerHandle {
    front: FrontEnd,
    local_addr: SocketAddr,
    /// Where the AMQP listeners listen.
    amqp_addrs: Vec<SocketAddr>,
    /// The management HTTP listeners' addresses (`[http] bind`).
    http_addrs: Vec<SocketAddr>,
    /// The native TLS listener's address (`server.tls_bind`), when there is one.
    native_tls_addr: Option<SocketAddr>,
    /// The AMQPS listeners' addresses (`amqp.tls_bind`).
    amqps_addrs: Vec<SocketAddr>,
    /// The HTTPS management listeners' addresses (`http.tls_bind`).
    https_addrs: Vec<SocketAddr>,
}

impl ServerHandle {
    /// Starts the broker core (recovering what `settings.storage.data_dir` holds) and
    /// listens on `settings.server.bind` and on each `settings.http.bind` (management
    /// API). Ready to accept connections when this returns.
    pub fn start(settings: Settings) -> Result<ServerHandle, ServerError> {
        // Bound first: a port in use fails before the store is opened and recovered.
        let listener = bind(&settings.server.bind)?;
        let amqp = bind_amqp(&settings.amqp.bind)?;
        let http = bind_http(&settings)?;
        let broker = Broker::builder()
            .settings(settings.broker.clone())
            .storage(settings.storage.options())
            .start()?;
        Self::serve(broker, settings, listener, amqp, http)
    }

    /// Serves the native protocol on `settings.server.bind` (and AMQP on `amqp.bind`)
    /// for a broker that is already running (an embedded one, with its own exchange
    /// types).
    pub fn start_on(broker: BrokerHandle, settings: Settings) -> Result<ServerHandle, ServerError> {
        let listener = bind(&settings.server.bind)?;
        let amqp = bind_amqp(&settings.amqp.bind)?;
        let http = bind_http(&settings)?;
        Self::serve(broker, settings, listener, amqp, http)
    }

    fn serve(
        broker: BrokerHandle,
        settings: Settings,
        listener: std::net::TcpListener,
        amqp: Vec<std::net::TcpListener>,
        http: Vec<std::net::TcpListener>,
    ) -> Result<ServerHandle, ServerError> {
        let tls_binds = tls_listen::TlsBinds::of(&settings);
        let front = match FrontEnd::new(broker.clone(), settings) {
            Ok(f) => f,
            Err(e) => {
                broker.shutdown();
                return Err(e);
            }
        };
        let local_addr = front.listen_native(listener)?;
        let mut server = ServerHandle {
            front,
            local_addr,
            amqp_addrs: Vec::new(),
            http_addrs: Vec::new(),
            native_tls_addr: None,
            amqps_addrs: Vec::new(),
            https_addrs: Vec::new(),
        };
        // Nothing half-started is left behind when a listener fails.
        for l in amqp {
            match server.front.listen_amqp(l) {
                Ok(a) => server.amqp_addrs.push(a),
                Err(e) => {
                    server.shutdown();
                    return Err(e);
                }
            }
        }
        if let Err(e) = server.open_tls(tls_binds) {
            server.shutdown();
            return Err(e);
        }
        for l in http {
            match server.front.listen_http(l) {
                Ok(a) => server.http_addrs.push(a),
                Err(e) => {
                    server.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// The addresses of the AMQP listeners (`amqp.bind`; empty when off).
    pub fn amqp_addrs(&self) -> &[SocketAddr] {
        &self.amqp_addrs
    }

    /// The management HTTP API's addresses (none when `[http] bind` is empty).
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http_addrs
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker core, for in-process use beside the network.
    pub fn broker(&self) -> &BrokerHandle {
        self.front.broker()
    }

    /// The front ends: open more listeners, list or close connections.
    pub fn front_end(&self) -> &FrontEnd {
        &self.front
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.front.shared.connections.load(Ordering::Acquire)
    }

    /// See [`FrontEnd::stop`].
    pub async fn stop(&self) {
        self.front.stop().await;
    }

    /// The blocking form of [`stop`](Self::stop).
    pub fn shutdown(&self) {
        let front = self.front.clone();
        let waited =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(front.stop()),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the shutdown runtime");
                        front.broker().shutdown();
                    }
                }
            })
            .join();
        if waited.is_err() {
            tracing::error!("the shutdown thread panicked");
        }
    }
}

/// Binds every `[http] bind` address (blank entries ignored).
fn bind_http(settings: &Settings) -> Result<Vec<std::net::TcpListener>, ServerError> {
    settings
        .http
        .bind
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(bind)
        .collect()
}

/// Tells a native client over the connection limit why, and closes.
fn refuse_native(
    mut socket: tokio::net::TcpStream,
    limit: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async move {
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
    })
}

/// Installs the `tracing` subscriber: `RUST_LOG` when set, else `level`; text lines,
/// coloured only on a terminal (see [`crate::logging`]).
pub fn init_logging(level: &str) {
    crate::logging::init(&crate::settings::LogSettings {
        level: level.to_string(),
        ..Default::default()
    });
}
