//! The connection actor's life: starting (socket split into its tasks, shutdown and
//! hello watches), the reads handed over by the reader task with the backpressure that
//! answers them, the blocked/unblocked notices, and stopping, when everything the
//! connection held is released.

use super::*;

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Deliveries are bounded by consumer credit, not by the mailbox.
        ctx.set_mailbox_capacity(crate::broker::MAILBOX_CAPACITY);
        self.self_addr = Some(ctx.address());
        let socket = self.socket.take().expect("socket set at creation");
        let _ = socket.set_nodelay(true);
        // Plain TCP takes stream bodies by reference (writev); TLS encrypts a copy.
        self.vectored = !socket.is_tls();
        let (read, write) = socket.into_split();
        self.writer = Some(io::spawn_writer(
            write,
            self.flow.clone(),
            ctx.address().recipient(),
            self.vectored,
        ));
        let addr = ctx.address();
        let max = self.shared.settings.server.max_frame_size as usize;
        let writer = self.writer.clone().expect("writer set above");
        let reader = io::read_loop(read, max, self.flow.clone(), writer, move |ev| {
            let addr = addr.clone();
            async move { addr.send(Inbound(ev)).await.unwrap_or(false) }
        });
        actix_rt::spawn(tracing::Instrument::instrument(reader, self.span.clone()));
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            ctx.notify(Shutdown);
        } else {
            let addr = ctx.address();
            actix_rt::spawn(async move {
                if shutdown.wait_for(|s| *s).await.is_ok() {
                    addr.do_send(Shutdown);
                }
            });
        }
        // A client that has not logged in within the handshake timeout is dropped
        // (`fatal` logs it with the peer address).
        let limit = self.shared.settings.server.handshake_timeout_ms;
        ctx.run_later(Duration::from_millis(limit), move |act, ctx| {
            if act.session.is_none() && !act.closing {
                act.fatal(
                    ErrorCode::ConnectionForced,
                    format!("not logged in within the handshake timeout ({limit} ms)"),
                    ctx,
                );
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.closing = true;
        self.flush();
        if let Some(w) = &self.writer {
            w.close();
        }
        Running::Stop
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Acks that arrived before the close count; then cancel consumers and requeue
        // every unacked delivery: nothing is lost when a client goes, cleanly or not.
        match &self.session {
            Some(s) => {
                self.channel.close_connection(&s.registry);
                tracing::info!(peer = %self.peer, user = %s.user, "connection closed");
            }
            None => {
                self.channel.release();
            }
        }
        self.shared.registry.remove(self.owner.0);
        self.shared.connection_gone();
    }
}

impl Handler<Inbound> for Connection {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) -> Self::Result {
        if self.closing {
            return Box::pin(async { false });
        }
        let span = self.span.clone();
        let _entered = span.enter();
        match msg.0 {
            ReadEvent::Frames(frames) => {
                self.frames_in_order(frames, 0, ctx);
                self.channel.flush_settles();
                self.flush();
            }
            ReadEvent::Invalid(e) => {
                let code = match e {
                    crate::protocol::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    crate::protocol::FrameError::Empty => ErrorCode::BadFrame,
                };
                self.fatal(code, e.to_string(), ctx);
                return Box::pin(async { false });
            }
            ReadEvent::Eof { partial } => {
                if partial > 0 {
                    tracing::warn!(peer = %self.peer, partial, "client disconnected mid-frame");
                } else {
                    tracing::debug!(peer = %self.peer, "client closed the socket");
                }
                self.close(ctx);
                return Box::pin(async { false });
            }
            ReadEvent::Failed(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "socket error");
                self.close(ctx);
                return Box::pin(async { false });
            }
            ReadEvent::Silent(limit) => {
                // The reader has written HEARTBEAT_TIMEOUT and closed the socket.
                tracing::debug!(peer = %self.peer, silent = ?limit, "missed heartbeats: connection closed");
                self.close(ctx);
                return Box::pin(async { false });
            }
        }
        if self.closing {
            return Box::pin(async { false });
        }
        let flow = self.flow.clone();
        let gauge = self.publisher.then(|| self.shared.broker.memory().clone());
        // The reader waits for this: backpressure reaches the socket here.
        Box::pin(async move {
            if !flow.ready().await {
                return false;
            }
            if let Some(g) = gauge {
                g.wait_unblocked().await;
            }
            true
        })
    }
}

impl StreamHandler<bool> for Connection {
    fn handle(&mut self, blocked: bool, _ctx: &mut Self::Context) {
        if blocked {
            self.frame(&ServerFrame::Blocked {
                reason: self.shared.broker.memory().blocked_reason(),
            });
        } else {
            self.frame(&ServerFrame::Unblocked);
        }
        self.flush();
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Shutdown> for Connection {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        self.fatal(
            ErrorCode::ConnectionForced,
            "the broker is shutting down".into(),
            ctx,
        );
    }
}

impl Handler<CloseConnection> for Connection {
    type Result = ();

    fn handle(&mut self, msg: CloseConnection, ctx: &mut Self::Context) {
        self.fatal(
            ErrorCode::ConnectionForced,
            format!("closed by the broker's operator: {}", msg.reason),
            ctx,
        );
    }
}

impl Handler<io::WriterGone> for Connection {
    type Result = ();

    fn handle(&mut self, _msg: io::WriterGone, ctx: &mut Self::Context) {
        if !self.closing {
            tracing::warn!(peer = %self.peer, "socket write failed or stalled: closing");
            self.closing = true;
            ctx.stop();
        }
    }
}
