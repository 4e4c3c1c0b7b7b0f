//! Opening a connection after its Hello (vhost, permissions, Welcome), heartbeats, and
//! the Blocked / Unblocked notices.

use super::{Connection, Session};
use crate::error::ErrorCode;
use crate::protocol::wire::*;
use crate::protocol::PROTOCOL_VERSION;
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Connection {
    /// Opens the session after a successful login: version, vhost, permissions,
    /// heartbeats, Welcome.
    pub(super) fn hello(&mut self, h: Hello, ctx: &mut Context<Self>) -> bool {
        if h.version != PROTOCOL_VERSION {
            self.fatal(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
                    h.version
                ),
                ctx,
            );
            return false;
        }
        // Authenticated (the caller checked the password): say whether the vhost exists before whether it is allowed.
        let registry = match self.shared.broker.registry(&h.vhost) {
            Ok(r) => r,
            Err(e) => {
                self.fatal(e.code(), format!("no vhost '{}'", h.vhost), ctx);
                return false;
            }
        };
        if let Err(e) = self.shared.users.allowed(&h.user, &h.vhost) {
            self.fatal(e.code(), e.message().to_string(), ctx);
            return false;
        }
        let server_hb = self.shared.settings.server.heartbeat_secs;
        let hb = match h.heartbeat_secs {
            Some(0) => 0,
            Some(c) if server_hb == 0 => c,
            Some(c) => c.min(server_hb),
            None => server_hb,
        };
        self.heartbeat = Duration::from_secs(hb as u64);
        tracing::info!(peer = %self.peer, user = %h.user, vhost = %h.vhost, client = %h.client, "connection opened");
        self.shared.registry.opened(self.owner.0, &h.user, &h.vhost);
        self.stats.channels.store(1, Ordering::Relaxed);
        self.session = Some(Session {
            registry,
            vhost: h.vhost,
            user: h.user,
        });
        self.frame(&ServerFrame::Welcome {
            version: PROTOCOL_VERSION,
            server: format!("actormq {}", env!("CARGO_PKG_VERSION")),
            max_frame_size: self.shared.settings.server.max_frame_size,
            heartbeat_secs: hb,
        });
        if hb > 0 {
            self.start_heartbeats(ctx);
        }
        self.watch_memory(ctx);
        true
    }

    pub(super) fn start_heartbeats(&mut self, ctx: &mut Context<Self>) {
        let every = self.heartbeat / 2;
        ctx.run_interval(every.max(Duration::from_millis(50)), |act, ctx| {
            let now = Instant::now();
            if act.flow.paused.load(Ordering::Acquire) {
                // The broker is not reading this connection (backpressure): its
                // heartbeats wait unread in the socket, so silence proves nothing.
                act.last_recv = now;
            }
            if now.duration_since(act.last_recv) > act.heartbeat * 2 {
                act.fatal(
                    ErrorCode::HeartbeatTimeout,
                    format!(
                        "missed heartbeats from the client for {:?}",
                        act.heartbeat * 2
                    ),
                    ctx,
                );
                return;
            }
            if now.duration_since(act.last_sent) >= act.heartbeat / 2 {
                act.frame(&ServerFrame::Heartbeat);
                act.flush();
            }
        });
    }

    /// Tells the client when publishing is blocked (memory watermark or disk alarm).
    pub(super) fn watch_memory(&mut self, ctx: &mut Context<Self>) {
        let mut rx = self.shared.broker.memory().subscribe();
        if *rx.borrow_and_update() {
            self.frame(&ServerFrame::Blocked {
                reason: self.shared.broker.memory().blocked_reason(),
            });
        }
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let v = *rx.borrow_and_update();
            Some((v, rx))
        });
        ctx.add_stream(stream);
    }
}
