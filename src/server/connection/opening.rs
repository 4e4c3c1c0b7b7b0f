//! Opening a connection after its Hello (version, vhost, permissions, Welcome, the
//! heartbeat interval handed to the socket tasks), and the Blocked / Unblocked notices.

use super::{Connection, Session};
use crate::error::{clip, ErrorCode};
use crate::protocol::wire::*;
use crate::protocol::PROTOCOL_VERSION;
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Connection {
    /// Checks the Hello's protocol version, before anything else (PROTOCOL.md §2.2);
    /// false (and the connection closing) when it is not this server's.
    pub(super) fn version_ok(&mut self, h: &Hello, ctx: &mut Context<Self>) -> bool {
        if h.version == PROTOCOL_VERSION {
            return true;
        }
        self.fatal(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
                h.version
            ),
            ctx,
        );
        false
    }

    /// A hello asking for a login mechanism (PROTOCOL.md §5.1): EXTERNAL logs in as
    /// the user the verified client certificate names, then opens the session as
    /// [`hello`](Self::hello) does; false (and the connection closing) otherwise.
    pub(super) fn external_hello(&mut self, mut h: Hello, ctx: &mut Context<Self>) -> bool {
        let mechanism = h.mechanism.as_deref().unwrap_or_default();
        if mechanism != crate::server::auth::EXTERNAL {
            let m = format!(
                "unsupported authentication mechanism '{}'; use EXTERNAL, or none for user and password",
                clip(mechanism)
            );
            self.fatal(ErrorCode::AccessRefused, m, ctx);
            return false;
        }
        let ip = self.peer.ip();
        match self
            .shared
            .users
            .login_external(self.cert_user.as_ref(), ip)
        {
            Ok(user) => {
                h.user = user;
                self.hello(h, ctx)
            }
            Err(e) => {
                self.fatal(e.code(), e.message().to_string(), ctx);
                false
            }
        }
    }

    /// Opens the session after a successful login (the version was checked before):
    /// vhost, permissions, heartbeats, Welcome.
    pub(super) fn hello(&mut self, h: Hello, ctx: &mut Context<Self>) -> bool {
        // Authenticated (the caller checked the password): say whether the vhost exists before whether it is allowed.
        let registry = match self.shared.broker.registry(&h.vhost) {
            Ok(r) => r,
            Err(e) => {
                self.fatal(e.code(), format!("no vhost '{}'", clip(&h.vhost)), ctx);
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
        let limits = &self.shared.settings.server;
        let vhost_limit = self.shared.broker.vhost_limits(&h.vhost).max_connections;
        if let Err(m) =
            self.shared
                .registry
                .opened(self.owner.0, &h.user, &h.vhost, limits, vhost_limit)
        {
            tracing::warn!(peer = %self.peer, "connection refused: {m}");
            self.fatal(ErrorCode::NotAllowed, m, ctx);
            return false;
        }
        tracing::info!(peer = %self.peer, user = %h.user, vhost = %h.vhost, client = %clip(&h.client), "connection opened");
        let mut about = crate::message::FieldTable::new();
        about.insert(
            "connection_name".into(),
            crate::message::FieldValue::Str(h.client.clone()),
        );
        self.shared
            .registry
            .set_client_properties(self.owner.0, &about);
        self.stats.channels.store(1, Ordering::Relaxed);
        self.channel.set_access(crate::channel::Access::new(
            self.shared.broker.definitions(),
            &h.user,
            &h.vhost,
        ));
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
        // The socket tasks send and check heartbeats (see `io`): they go on while a
        // request holds this actor.
        self.flow.set_heartbeat(Duration::from_secs(hb.into()));
        self.watch_memory(ctx);
        true
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
