//! How an AMQP connection ends: `connection.close` sent for a hard error (the socket
//! closes at the client's close-ok or after a grace period), close-ok answered to the
//! client's close (the socket is then the client's to close), and the session's end
//! reported once (exclusive queues, the registry of connections).

use super::connection::{AmqpConnection, Phase};
use super::errors::AmqpError;
use crate::broker::messages::OwnerGone;
use actix::prelude::*;
use amq_protocol::protocol::{connection, AMQPClass};
use std::time::Duration;

/// How long a client may keep its socket open after close-ok before the broker closes
/// it (RabbitMQ's closing timeout).
const CLIENT_CLOSE_GRACE: Duration = Duration::from_secs(30);

/// How long close-ok waits after the client's close. RabbitMQ answers only once every
/// channel process of the connection has stopped, never at once, and aiormq (so
/// aio-pika's robust connections) relies on that gap: its `close(exc)` races its
/// reader's own close after close-ok, and an immediate close-ok makes the reader win,
/// so the close reason is lost (aiormq's test_closing_waiter_cancellation) and aio-pika
/// restores channels on the closed connection, logging errors (aio-pika's
/// test_create_channels_during_reconnect). 1 ms was enough in those suites; 2 ms
/// leaves room on a loaded machine.
const CLOSE_OK_DELAY: Duration = Duration::from_millis(2);

impl AmqpConnection {
    /// Closes the connection with `connection.close` (a hard error or a forced close);
    /// the socket closes once the client answers close-ok, or after a grace period.
    pub(super) fn close_with(&mut self, e: AmqpError, ctx: &mut Context<Self>) {
        if self.phase == Phase::Closing {
            return;
        }
        tracing::warn!(peer = %self.peer, code = e.code, text = %e.text, "closing AMQP connection");
        let (class_id, method_id) = e.method;
        self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: e.short_text(),
                class_id,
                method_id,
            })),
        );
        self.phase = Phase::Closing;
        self.release_all();
        self.flush();
        ctx.run_later(Duration::from_secs(2), |act, ctx| act.close_socket(ctx));
    }

    /// Writes the close-ok that [`Self::await_client_close`] deferred, once.
    fn write_close_ok(&mut self) {
        if std::mem::take(&mut self.close_ok_pending) {
            self.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            );
            self.flush();
        }
    }

    /// Flushes, closes the socket and stops.
    pub(super) fn close_socket(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Closing;
        self.write_close_ok();
        self.flush();
        if let Some(w) = &self.writer {
            w.close();
        }
        ctx.stop();
    }

    /// Answers the client's `connection.close` with close-ok (after [`CLOSE_OK_DELAY`]);
    /// then the client closes the socket
    /// (the spec's order, and RabbitMQ's, which waits up to 30 s). Closing it here
    /// first races the close-ok: a client that reads the end of the stream before it
    /// has handled close-ok reports a broken connection, not a clean close (amqp091-go
    /// hands `501 EOF` to its close listeners and to a concurrent `Close`). The
    /// connection's exclusive queues and its place in the connection limits go now.
    pub(super) fn await_client_close(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Closing;
        self.client_closed = true;
        self.flush();
        self.end_session();
        self.close_ok_pending = true;
        ctx.run_later(CLOSE_OK_DELAY, |act, _| act.write_close_ok());
        ctx.run_later(CLIENT_CLOSE_GRACE, |act, ctx| {
            tracing::debug!(peer = %act.peer, "client kept the socket open after close-ok: closing it");
            act.close_socket(ctx);
        });
    }

    /// Ends the session once: the vhost drops the connection's exclusive queues and
    /// the registry its entry (which the per-vhost and per-user limits count).
    pub(super) fn end_session(&mut self) {
        if self.session_ended {
            return;
        }
        self.session_ended = true;
        if let Some(s) = &self.session {
            s.registry.do_send(OwnerGone(self.owner));
            tracing::info!(peer = %self.peer, user = %self.user, "AMQP connection closed");
        }
        self.shared.registry.remove(self.owner.0);
    }
}
