//! The AMQP 0-9-1 front end: the clients people already use (pika, Celery/kombu,
//! amqplib, amqp091-go, lapin, the Java and .NET clients) over the same broker actors as
//! the native protocol.
//!
//! Layout:
//! - `codec`: frames cut and written with the `amq-protocol` crate, `frame_max`;
//! - `io`: socket reader and writer tasks, protocol header, heartbeats both ways;
//! - `connection`: the connection actor, its life and closes;
//! - `handshake`: start / tune / open, PLAIN and AMQPLAIN, server properties;
//! - `content`: content reassembly (publish, header, body frames), pure;
//! - `dispatch`: frames to channels, each channel's request pipeline;
//! - `held`: deliveries held back by `channel.flow` and a channel's shared prefetch;
//! - `publish`: batches, exchange lookups, confirms / returns, transactions;
//! - `methods`: channel, exchange, queue, confirm and tx methods onto broker messages;
//! - `basic`: qos, consume, cancel, get, acks, recover;
//! - `deliver`: deliveries, get answers, broker-side cancels;
//! - `properties`: AMQP properties and tables ↔ actormq's;
//! - `reply_to`: direct reply-to (`amq.rabbitmq.reply-to`);
//! - `errors`: reply codes and texts;
//! - `info`: the channels as the management API lists them (read-only).
//!
//! Each AMQP channel is a [`crate::channel::Channel`]; the connection actor is codec,
//! socket and routing between channels. Listeners open with
//! [`crate::server::FrontEnd::listen_amqp`].

mod authz;
mod basic;
mod closing;
pub(crate) mod codec;
mod connection;
pub(crate) mod content;
mod deliver;
mod depth;
mod dispatch;
pub mod errors;
mod handshake;
mod held;
mod info;
mod io;
mod limits;
mod methods;
pub mod properties;
mod publish;
pub(crate) mod reply_to;

pub(crate) use connection::AmqpConnection;
pub use handshake::server_properties;

/// Tells a client over the connection limit why (`connection.close` needs a
/// handshake first, so the refusal is the socket closing after a log line, as RabbitMQ
/// does before the protocol header), then closes.
pub(crate) fn refuse(
    socket: tokio::net::TcpStream,
    limit: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async move {
        use tokio::io::AsyncWriteExt;
        tracing::warn!(
            limit,
            "AMQP connection refused: server.max_connections reached"
        );
        let mut socket = socket;
        let _ = socket.shutdown().await;
    })
}
