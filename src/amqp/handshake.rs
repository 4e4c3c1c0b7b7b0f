//! The connection handshake: start (server properties, capabilities), start-ok with
//! PLAIN or AMQPLAIN against the front end's users (or EXTERNAL, the TLS client
//! certificate's name, on a connection that has a verified one), tune / tune-ok (frame_max,
//! channel_max, heartbeat), open (vhost and permissions); and the connection-level
//! methods after it (close, close-ok, update-secret).

use super::connection::{AmqpConnection, Phase, Session};
use super::errors::AmqpError;
use actix::prelude::*;
use amq_protocol::protocol::connection as conn;
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use std::sync::atomic::Ordering;

/// The capabilities announced in `connection.start`, as RabbitMQ announces them.
const CAPABILITIES: &[&str] = &[
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The server properties of `connection.start`.
pub fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in CAPABILITIES {
        caps.insert((*c).into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    t.insert("product".into(), text("actormq"));
    t.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    t.insert("platform".into(), text("Rust"));
    t.insert(
        "information".into(),
        text("actormq, a message broker on actix actors"),
    );
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

/// Reads user and password from a start-ok response.
fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            // [authzid] NUL authcid NUL password
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = std::str::from_utf8(parts.next()?).ok()?;
            let pass = std::str::from_utf8(parts.next()?).ok()?;
            Some((user.to_string(), pass.to_string()))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix: LOGIN and PASSWORD.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, t) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| match t.inner().get(k)? {
                AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

fn has_capability(props: &FieldTable, name: &str) -> bool {
    match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(c)) => {
            matches!(c.inner().get(name), Some(AMQPValue::Boolean(true)))
        }
        _ => false,
    }
}

impl AmqpConnection {
    /// The mechanisms offered: EXTERNAL first on a connection whose client certificate
    /// was verified (as RabbitMQ's rabbitmq_auth_mechanism_ssl offers it, only there),
    /// then PLAIN and AMQPLAIN.
    fn mechanisms(&self) -> &'static str {
        if self.cert_user.is_some() {
            "EXTERNAL PLAIN AMQPLAIN"
        } else {
            "PLAIN AMQPLAIN"
        }
    }

    /// Sends `connection.start` (after a correct protocol header).
    pub(super) fn send_start(&mut self) {
        self.phase = Phase::Start;
        self.method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                mechanisms: self.mechanisms().into(),
                locales: "en_US".into(),
            })),
        );
    }

    /// A connection-class method (channel 0).
    pub(super) fn on_connection_method(&mut self, m: conn::AMQPMethod, ctx: &mut Context<Self>) {
        match (self.phase, m) {
            (Phase::Start, conn::AMQPMethod::StartOk(ok)) => self.start_ok(ok, ctx),
            (Phase::Tune, conn::AMQPMethod::TuneOk(t)) => self.tune_ok(t, ctx),
            (Phase::Open, conn::AMQPMethod::Open(o)) => self.open(o, ctx),
            (Phase::Running, conn::AMQPMethod::UpdateSecret(_)) => {
                // Password logins have no secret that expires: accepted as is.
                self.method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(
                        conn::UpdateSecretOk {},
                    )),
                );
            }
            (Phase::Closing, conn::AMQPMethod::CloseOk(_)) => self.close_socket(ctx),
            // Answered already: later closes (a client closing from several threads at
            // once) are ignored, as RabbitMQ ignores methods on a closing connection.
            (Phase::Closing, conn::AMQPMethod::Close(_)) if self.client_closed => {}
            (_, conn::AMQPMethod::Close(c)) => {
                tracing::debug!(peer = %self.peer, code = c.reply_code, text = %c.reply_text, "client closes the connection");
                self.release_all();
                self.await_client_close(ctx);
            }
            (Phase::Closing, _) => {}
            (_, other) => {
                let id = AMQPClass::Connection(other.clone());
                self.close_with(
                    AmqpError::new(
                        504,
                        format!("unexpected method {other:?} in this state of the connection"),
                    )
                    .on((id.get_amqp_class_id(), id.get_amqp_method_id())),
                    ctx,
                );
            }
        }
    }

    fn start_ok(&mut self, ok: conn::StartOk, ctx: &mut Context<Self>) {
        self.cancel_notify = has_capability(&ok.client_properties, "consumer_cancel_notify");
        self.blocked_notify = has_capability(&ok.client_properties, "connection.blocked");
        self.shared.registry.set_client_properties(
            self.owner.0,
            &crate::amqp::properties::table_in(&ok.client_properties),
        );
        let mechanism = ok.mechanism.as_str().to_string();
        if mechanism == crate::server::auth::EXTERNAL {
            // No password to hash: the certificate was checked in the TLS handshake.
            let ip = self.peer.ip();
            match self
                .shared
                .users
                .login_external(self.cert_user.as_ref(), ip)
            {
                Ok(user) => self.logged_in(user),
                Err(e) => self.close_with(AmqpError::new(403, e.message().to_string()), ctx),
            }
            return;
        }
        let Some((user, password)) = credentials(&mechanism, ok.response.as_bytes()) else {
            let e = if mechanism == "PLAIN" || mechanism == "AMQPLAIN" {
                AmqpError::new(403, format!("malformed {mechanism} response"))
            } else {
                AmqpError::new(
                    403,
                    format!(
                        "unsupported authentication mechanism '{}'; use {}",
                        crate::error::clip(&mechanism),
                        self.mechanisms()
                    ),
                )
            };
            self.close_with(e, ctx);
            return;
        };
        self.phase = Phase::Login;
        // The password hash costs about a millisecond of CPU: off the arbiter. The
        // client waits for tune, so nothing else arrives meanwhile.
        let shared = self.shared.clone();
        let ip = self.peer.ip();
        let u = user.clone();
        let check = crate::server::auth::login_slowed(shared, u, password, ip);
        ctx.spawn(actix::fut::wrap_future::<_, Self>(check).map(
            move |res, act, ctx| {
                if act.phase != Phase::Login {
                    return;
                }
                match res {
                    Err(_) => act.close_with(
                        AmqpError::new(
                            403,
                            format!("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."),
                        ),
                        ctx,
                    ),
                    Ok(()) => act.logged_in(user),
                }
                act.flush();
            },
        ));
    }

    /// Authenticated as `user`: on to tune.
    fn logged_in(&mut self, user: String) {
        self.user = user;
        self.phase = Phase::Tune;
        let amqp = &self.shared.settings.amqp;
        let tune = conn::Tune {
            channel_max: amqp.channel_max,
            frame_max: amqp.frame_max,
            heartbeat: self.shared.settings.server.heartbeat_secs,
        };
        self.method(0, AMQPClass::Connection(conn::AMQPMethod::Tune(tune)));
        self.flush();
    }

    fn tune_ok(&mut self, t: conn::TuneOk, ctx: &mut Context<Self>) {
        let amqp = &self.shared.settings.amqp;
        let frame_max = match t.frame_max {
            0 => amqp.frame_max,
            f => f.min(amqp.frame_max),
        };
        if frame_max < 4096 {
            self.close_with(
                AmqpError::new(530, format!("frame_max={frame_max} < 4096 min size")),
                ctx,
            );
            return;
        }
        self.channel_max = match t.channel_max {
            0 => amqp.channel_max,
            c => c.min(amqp.channel_max),
        };
        self.tuned
            .frame_max
            .store(frame_max as usize, Ordering::Release);
        // The client's value is the agreed one (it saw ours in tune).
        self.flow
            .set_heartbeat(std::time::Duration::from_secs(t.heartbeat.into()));
        self.phase = Phase::Open;
    }

    fn open(&mut self, o: conn::Open, ctx: &mut Context<Self>) {
        let vhost = o.virtual_host.as_str().to_string();
        let registry = match self.shared.broker.registry(&vhost) {
            Ok(r) => r,
            Err(_) => {
                self.close_with(AmqpError::new(530, format!("vhost {vhost} not found")), ctx);
                return;
            }
        };
        if self.shared.users.allowed(&self.user, &vhost).is_err() {
            self.close_with(
                AmqpError::new(
                    530,
                    format!("access to vhost '{vhost}' refused for user '{}'", self.user),
                ),
                ctx,
            );
            return;
        }
        let limits = &self.shared.settings.server;
        let vhost_limit = self.shared.broker.vhost_limits(&vhost).max_connections;
        if let Err(m) =
            self.shared
                .registry
                .opened(self.owner.0, &self.user, &vhost, limits, vhost_limit)
        {
            tracing::warn!(peer = %self.peer, "AMQP connection refused: {m}");
            self.close_with(AmqpError::new(530, m), ctx);
            return;
        }
        tracing::info!(peer = %self.peer, user = %self.user, %vhost, "AMQP connection opened");
        self.session = Some(Session { registry, vhost });
        self.phase = Phase::Running;
        self.method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})),
        );
        self.watch_memory(ctx);
    }

    /// Tells the client when publishing is blocked (memory watermark or disk alarm).
    fn watch_memory(&mut self, ctx: &mut Context<Self>) {
        let mut rx = self.shared.broker.memory().subscribe();
        let now = *rx.borrow_and_update();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let v = *rx.borrow_and_update();
            Some((v, rx))
        });
        ctx.add_stream(stream);
        if now {
            <Self as StreamHandler<bool>>::handle(self, true, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_amqplain_responses_are_read() {
        assert_eq!(
            credentials("PLAIN", b"\0guest\0secret"),
            Some(("guest".into(), "secret".into()))
        );
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), text("u"));
        t.insert("PASSWORD".into(), text("p"));
        let ctx = amq_protocol::frame::WriteContext::from(Vec::new());
        let (buf, _) = amq_protocol::types::generation::gen_field_table(&t)(ctx)
            .unwrap()
            .into_inner();
        assert_eq!(
            credentials("AMQPLAIN", &buf[4..]),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(credentials("EXTERNAL", b""), None);
    }
}
