//! Accepting sockets for any protocol: the accept loop that every listener (native,
//! AMQP) runs on a broker that is already started. It counts connections against
//! `server.max_connections`, refuses the ones over it in the protocol's own words, and
//! hands each accepted socket to a worker arbiter, where the protocol's connection actor
//! adopts it. On a TLS listener the worker first runs the TLS handshake (bounded by
//! `tls.handshake_timeout_secs`), so the connection actor gets a stream that speaks
//! its protocol either way. It stops when the front end shuts down.

use super::stream::ServerStream;
use super::tls::Tls;
use super::ServerShared;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Starts a connection actor for an accepted socket (on the current worker arbiter).
pub(crate) type StartConnection =
    Arc<dyn Fn(ServerStream, SocketAddr, Arc<ServerShared>) + Send + Sync>;

/// Tells a client over the connection limit why, in its protocol, then closes.
pub(crate) type Refuse =
    fn(tokio::net::TcpStream, usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Closes a socket over the limit without a word: on a TLS listener nothing can be
/// said before the handshake.
pub(crate) fn refuse_silently(
    mut socket: tokio::net::TcpStream,
    _limit: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async move {
        use tokio::io::AsyncWriteExt;
        let _ = socket.shutdown().await;
    })
}

/// Runs the accept loop of `listener` on a worker arbiter until the front end stops;
/// with `tls`, every socket is a TLS one.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    shared: Arc<ServerShared>,
    protocol: &'static str,
    start: StartConnection,
    refuse: Refuse,
    tls: Option<Arc<Tls>>,
) {
    let arbiter = shared.broker.context().next_arbiter();
    arbiter.spawn(accept_loop(listener, shared, protocol, start, refuse, tls));
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<ServerShared>,
    protocol: &'static str,
    start: StartConnection,
    refuse: Refuse,
    tls: Option<Arc<Tls>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, protocol, "cannot register the listener");
            return;
        }
    };
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => {
                tracing::info!(protocol, "stopped accepting connections");
                return;
            }
        };
        let (socket, peer) = match accepted {
            // An IPv4 client of a `[::]` listener is shown, logged, throttled and
            // checked by its IPv4 address, as on an IPv4 listener.
            Ok((socket, peer)) => (
                socket,
                SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            ),
            Err(e) => {
                // Out of file descriptors and the like: log, back off a little, go on.
                tracing::warn!(error = %e, protocol, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limit = shared.settings.server.max_connections;
        let open = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        if open > limit {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%peer, limit, protocol, "connection refused: limit reached");
            actix_rt::spawn(refuse(socket, limit));
            continue;
        }
        let std_socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                shared.connection_gone();
                tracing::warn!(error = %e, "cannot hand the socket over");
                continue;
            }
        };
        let s2 = shared.clone();
        let start = start.clone();
        let tls = tls.clone();
        // Each connection lives on a worker arbiter, registered with that arbiter's
        // reactor (the socket is moved as a std socket and adopted there).
        shared.broker.context().next_arbiter().spawn_fn(move || {
            match tokio::net::TcpStream::from_std(std_socket) {
                Ok(s) => match tls {
                    None => start(ServerStream::Plain(s), peer, s2),
                    Some(tls) => {
                        actix_rt::spawn(handshake(tls, s, peer, s2, protocol, start));
                    }
                },
                Err(e) => {
                    s2.connection_gone();
                    tracing::warn!(error = %e, "cannot adopt the socket");
                }
            }
        });
    }
}

/// Runs the TLS handshake of an accepted socket, then starts its connection; a failed
/// or slow handshake (untrusted or missing client certificate, plain text on the TLS
/// port, a silent client) is logged with the peer and the socket dropped.
async fn handshake(
    tls: Arc<Tls>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerShared>,
    protocol: &'static str,
    start: StartConnection,
) {
    let accepting = tls.acceptor().accept(socket);
    match tokio::time::timeout(tls.handshake_timeout(), accepting).await {
        Ok(Ok(stream)) => start(ServerStream::Tls(Box::new(stream)), peer, shared),
        Ok(Err(e)) => {
            shared.connection_gone();
            tracing::warn!(%peer, protocol, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.connection_gone();
            tracing::warn!(%peer, protocol, timeout = ?tls.handshake_timeout(), "TLS handshake timed out");
        }
    }
}
