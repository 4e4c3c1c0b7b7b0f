//! An async client of the native protocol, on tokio.
//!
//! One [`Client`] is one TCP connection, driven by two tasks: a reader that dispatches
//! the broker's frames (replies, confirms, deliveries) and a writer that sends every
//! frame queued since its last write in one `write_all`. Requests are pipelined: many
//! may be in flight, and a publish returns as soon as its frame is queued, handing back
//! a [`PublishConfirm`] to await when the application wants the broker's confirm.
//!
//! Flow control reaches the application: a publish waits while the connection has
//! [`ConnectOptions::max_unconfirmed`] publishes unconfirmed, or while more than
//! [`ConnectOptions::max_write_buffer`] bytes wait for the socket. Acks never wait.
//!
//! ```no_run
//! use actormq::client::{Client, ConnectOptions, ConsumeOptions, QueueOptions};
//! use futures_util::StreamExt;
//!
//! # async fn demo() -> Result<(), actormq::client::ClientError> {
//! let client = Client::connect(ConnectOptions::new("127.0.0.1:5680")).await?;
//! client.declare_queue("jobs", &QueueOptions::durable()).await?;
//!
//! // Pipelined: queue many publishes, then await their confirms.
//! let mut confirms = Vec::new();
//! for i in 0..1000 {
//!     confirms.push(client.publish("", "jobs", format!("job {i}")).await?);
//! }
//! for c in confirms {
//!     c.await?;
//! }
//!
//! let mut consumer = client.consume("jobs", &ConsumeOptions::prefetch(100)).await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     println!("{}", String::from_utf8_lossy(&delivery.body));
//!     delivery.ack()?;
//! }
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Files: `connection.rs` (shared state, handshake, writer task), `reader.rs` (reader
//! task and frame dispatch), `ops.rs` (request operations), `publish.rs` (confirm
//! bookkeeping), `consumer.rs` (deliveries and consumers), `options.rs`, `error.rs`.

mod connection;
mod consumer;
mod error;
mod ops;
mod options;
mod publish;
mod readbuf;
mod reader;
mod tls;

/// The declaration and consumer options, shared with the embedding API ([`crate::options`]).
pub use crate::options::{ConsumeOptions, ExchangeOptions, QueueOptions};
pub use connection::ServerInfo;
pub use consumer::{Consumer, Delivery, GetOk};
pub use error::ClientError;
pub use ops::QueueInfo;
pub use options::{with_default_port, ConnectOptions, PublishOptions, DEFAULT_PORT};
pub use publish::{Confirmation, PublishConfirm, Returned};
pub use tls::{TlsOptions, DEFAULT_TLS_PORT};

use crate::protocol::{properties_or_none, ClientFrame, Op, PublishFrame};
use connection::{OnReply, Shared};
use std::sync::Arc;
use tokio::sync::watch;

/// A connection to the broker. Cheap to clone: clones share the connection, which
/// closes when the last clone (and the last [`Consumer`]) is dropped, or on
/// [`close`](Self::close).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

/// The connection's owner: dropping it shuts the socket down.
struct ClientInner {
    /// State shared with the socket tasks and with deliveries.
    shared: Arc<Shared>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.shared.server)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and opens the virtual host. Fails with the broker's code when it
    /// refuses: ACCESS_REFUSED (credentials), NOT_FOUND (virtual host),
    /// UNSUPPORTED_VERSION.
    ///
    /// Must be called within a tokio runtime (it spawns the connection's tasks).
    pub async fn connect(options: ConnectOptions) -> Result<Client, ClientError> {
        let shared = connection::open(&options).await?;
        Ok(Client {
            inner: Arc::new(ClientInner { shared }),
        })
    }

    /// What the broker said about itself when the connection opened.
    pub fn server_info(&self) -> &ServerInfo {
        &self.inner.shared.server
    }

    /// Publishes `body` to `exchange` with `routing_key`, no properties, confirmed if
    /// the connection has confirms on. See [`publish_with`](Self::publish_with).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl AsRef<[u8]>,
    ) -> Result<PublishConfirm, ClientError> {
        self.publish_with(exchange, routing_key, body, &PublishOptions::default())
            .await
    }

    /// Publishes a message. Returns once its frame is queued for the socket (waiting
    /// only while the publish window or the write buffer is full), with a
    /// [`PublishConfirm`] that resolves when the broker confirms the message, refuses
    /// it (an error with the broker's code), or returns it unrouted (a `mandatory`
    /// message: [`Confirmation::returned`]).
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl AsRef<[u8]>,
        options: &PublishOptions,
    ) -> Result<PublishConfirm, ClientError> {
        let shared = &self.inner.shared;
        let confirm = options.confirm.unwrap_or(shared.confirms);
        // A slot of the publish window. Held (so released if this future is dropped or
        // the publish fails) until the frame is queued; then it is the broker's confirm
        // that gives it back.
        let permit = if confirm {
            let window = shared.window.acquire().await;
            Some(window.map_err(|_| shared.closed_error())?)
        } else {
            None
        };
        let properties = properties_or_none(&options.properties).map(|p| Box::new(p.into_owned()));
        let body = body.as_ref();
        let queued = shared
            .with_room(|st| {
                let frame = ClientFrame::Publish(PublishFrame {
                    seq: if confirm { st.confirms.peek_seq() } else { 0 },
                    exchange,
                    routing_key,
                    mandatory: options.mandatory,
                    properties,
                    body,
                });
                st.encode(&frame, shared.max_frame)?;
                Ok(if confirm {
                    st.confirms.track().1
                } else {
                    PublishConfirm::untracked()
                })
            })
            .await?;
        if let Some(p) = permit {
            p.forget();
        }
        Ok(queued)
    }

    /// Closes the connection cleanly: the broker answers the close after the frames
    /// sent before it. Publishes still unconfirmed then fail with
    /// [`ClientError::Closed`], so await their confirms first.
    pub async fn close(&self) -> Result<(), ClientError> {
        let shared = &self.inner.shared;
        match shared.request(Op::Close, OnReply::Close).await {
            Ok(_) | Err(ClientError::Closed) => {}
            Err(e) => return Err(e),
        }
        shared.shutdown();
        Ok(())
    }

    /// Takes the errors the broker reported outside any request since the last call:
    /// a publish without confirm that could not be routed at all (NOT_FOUND for a
    /// missing exchange), a settle naming an unknown delivery tag (PRECONDITION_FAILED).
    /// The connection stays open after them. The latest 64 are kept.
    pub fn take_errors(&self) -> Vec<ClientError> {
        self.inner.shared.lock().async_errors.drain(..).collect()
    }

    /// The error the connection finished with, if it has finished.
    pub fn closed_reason(&self) -> Option<ClientError> {
        self.inner.shared.lock().closed.clone()
    }

    /// True while the broker blocks publishers (memory high watermark). Publishes are
    /// still queued meanwhile, up to the write buffer.
    pub fn is_blocked(&self) -> bool {
        self.inner.shared.blocked.borrow().is_some()
    }

    /// The broker's reason while blocked.
    pub fn blocked_reason(&self) -> Option<String> {
        self.inner.shared.blocked.borrow().clone()
    }

    /// A watch of the blocked state: `Some(reason)` while blocked.
    pub fn blocked_watch(&self) -> watch::Receiver<Option<String>> {
        self.inner.shared.blocked.subscribe()
    }

    /// Waits until the broker unblocks publishers (at once if it is not blocking).
    /// Fails if the connection finishes meanwhile.
    pub async fn wait_unblocked(&self) -> Result<(), ClientError> {
        let mut rx = self.blocked_watch();
        let result = rx.wait_for(|b| b.is_none()).await.map(|_| ());
        match self.closed_reason() {
            Some(e) => Err(e),
            None => result.map_err(|_| ClientError::Closed),
        }
    }
}
