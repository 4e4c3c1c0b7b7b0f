//! A lean AMQP 0-9-1 client connection for the load generator: one reader and one
//! writer task, frames written into one shared buffer (the writer sends whatever piled
//! up in one write), replies routed to channels. Built like actormq's own client, so
//! that the native and AMQP front ends are measured through clients of the same cost;
//! lapin (a thread per connection, each publish awaited until its thread wrote it)
//! costs more CPU per message than either broker.
//!
//! Only what `actormq perf` needs: PLAIN login, synchronous methods one at a time per
//! channel, publishes (with confirms), consumers with acks. Frame codec: the broker's.

use crate::amqp::codec::{take_frame, Encoder, Incoming, PROTOCOL_HEADER};
use crate::perf::driver::Received;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{channel, connection, AMQPClass};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

/// Bytes buffered for the writer above which senders wait.
const MAX_BUFFERED: usize = 1 << 20;
/// frame_max this client asks for.
const FRAME_MAX: u32 = 131_072;

mod io;

use io::{read_loop, write_loop};

type Reply = Result<AMQPClass, String>;

/// Publisher confirms outstanding on a channel, by delivery tag.
#[derive(Default)]
struct Confirms {
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<bool>>,
}

impl Confirms {
    fn settle(&mut self, tag: u64, multiple: bool, ok: bool) {
        if multiple {
            let rest = self.waiting.split_off(&(tag + 1));
            for (_, tx) in std::mem::replace(&mut self.waiting, rest) {
                let _ = tx.send(ok);
            }
        } else if let Some(tx) = self.waiting.remove(&tag) {
            let _ = tx.send(ok);
        }
    }
}

/// A delivery whose content is arriving.
struct Partial {
    tag: u64,
    redelivered: bool,
    size: u64,
    body: BytesMut,
}

/// What the reader routes to one channel.
#[derive(Default)]
struct Sink {
    replies: VecDeque<oneshot::Sender<Reply>>,
    deliveries: Option<mpsc::UnboundedSender<Received>>,
    partial: Option<Partial>,
    confirms: Option<Confirms>,
}

/// Frames waiting for the writer.
struct Out {
    buf: BytesMut,
    enc: Encoder,
}

struct Shared {
    out: Mutex<Out>,
    /// Wakes the writer.
    wake: Notify,
    /// Wakes senders waiting for the buffer to drain.
    room: Notify,
    closed: AtomicBool,
    /// The broker said `connection.blocked` and not yet `connection.unblocked`.
    blocked: AtomicBool,
    sinks: Mutex<HashMap<u16, Sink>>,
    frame_max: usize,
}

impl Shared {
    fn fail(&self) {
        self.closed.store(true, Ordering::Release);
        self.sinks.lock().expect("poisoned").clear();
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    /// Encodes with `f` once the buffer has room; wakes the writer.
    async fn send(&self, f: impl FnOnce(&mut Out)) -> Result<(), String> {
        let mut f = Some(f);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return Err("connection closed".into());
            }
            {
                let mut out = self.out.lock().expect("poisoned");
                if out.buf.len() < MAX_BUFFERED {
                    (f.take().expect("called once"))(&mut out);
                    break;
                }
            }
            notified.await;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Encodes without waiting for room (acks: small, bounded by prefetch).
    fn send_now(&self, f: impl FnOnce(&mut Out)) {
        f(&mut self.out.lock().expect("poisoned"));
        self.wake.notify_one();
    }
}

/// One client connection.
pub struct RawConn {
    shared: Arc<Shared>,
    next_channel: Mutex<u16>,
}

impl Drop for RawConn {
    fn drop(&mut self) {
        // The writer ends and drops its half: the broker sees the socket close.
        self.shared.fail();
    }
}

/// What the client tells the broker of itself: that it understands
/// `connection.blocked` (a broker tells only the clients that say so).
fn client_properties() -> amq_protocol::types::FieldTable {
    use amq_protocol::types::{AMQPValue, FieldTable};
    let mut capabilities = FieldTable::default();
    capabilities.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut t = FieldTable::default();
    t.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    t
}

/// Reads one frame during the handshake.
async fn handshake_frame(sock: &mut TcpStream, buf: &mut BytesMut) -> Result<AMQPClass, String> {
    loop {
        match take_frame(buf, FRAME_MAX as usize).map_err(|e| e.to_string())? {
            Some(Incoming::Method(0, m)) => return Ok(*m),
            Some(_) => continue,
            None => {}
        }
        if sock.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the broker closed the connection during the handshake".into());
        }
    }
}

impl RawConn {
    /// Connects and logs in to `uri` (PLAIN, heartbeats off).
    pub async fn connect(uri: &amq_protocol::uri::AMQPUri) -> Result<RawConn, String> {
        let a = &uri.authority;
        let mut sock = TcpStream::connect((a.host.as_str(), a.port))
            .await
            .map_err(|e| format!("{}:{}: {e}", a.host, a.port))?;
        let _ = sock.set_nodelay(true);
        sock.write_all(PROTOCOL_HEADER)
            .await
            .map_err(|e| e.to_string())?;
        let mut enc = Encoder::default();
        let mut buf = BytesMut::with_capacity(8192);
        let mut out = BytesMut::new();
        let start = handshake_frame(&mut sock, &mut buf).await?;
        if !matches!(
            start,
            AMQPClass::Connection(connection::AMQPMethod::Start(_))
        ) {
            return Err(format!("expected connection.start, got {start:?}"));
        }
        let u = &a.userinfo;
        let response = format!("\0{}\0{}", u.username, u.password);
        enc.method(
            &mut out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(),
                mechanism: "PLAIN".into(),
                response: response.as_str().into(),
                locale: "en_US".into(),
            })),
        );
        sock.write_all(&out).await.map_err(|e| e.to_string())?;
        out.clear();
        let frame_max = match handshake_frame(&mut sock, &mut buf).await? {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => match t.frame_max {
                0 => FRAME_MAX,
                n => n.min(FRAME_MAX),
            },
            other => return Err(format!("login refused: {other:?}")),
        };
        enc.method(
            &mut out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max,
                heartbeat: 0,
            })),
        );
        enc.method(
            &mut out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        );
        sock.write_all(&out).await.map_err(|e| e.to_string())?;
        match handshake_frame(&mut sock, &mut buf).await? {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
            other => return Err(format!("connection.open refused: {other:?}")),
        }
        let shared = Arc::new(Shared {
            out: Mutex::new(Out {
                buf: BytesMut::new(),
                enc,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            sinks: Mutex::new(HashMap::new()),
            frame_max: frame_max as usize,
        });
        let (read, write) = sock.into_split();
        tokio::spawn(write_loop(write, shared.clone()));
        tokio::spawn(read_loop(read, buf, shared.clone()));
        Ok(RawConn {
            shared,
            next_channel: Mutex::new(0),
        })
    }

    /// Opens a channel.
    pub async fn channel(&self) -> Result<u16, String> {
        let ch = {
            let mut n = self.next_channel.lock().expect("poisoned");
            *n += 1;
            *n
        };
        self.shared
            .sinks
            .lock()
            .expect("poisoned")
            .insert(ch, Sink::default());
        self.call(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        Ok(ch)
    }

    /// Sends a synchronous method and waits for its answer.
    pub async fn call(&self, ch: u16, m: AMQPClass) -> Result<AMQPClass, String> {
        let (tx, rx) = oneshot::channel();
        match self.shared.sinks.lock().expect("poisoned").get_mut(&ch) {
            Some(s) => s.replies.push_back(tx),
            None => return Err(format!("channel {ch} is closed")),
        }
        self.shared
            .send(|o| o.enc.method(&mut o.buf, ch, m))
            .await?;
        rx.await.map_err(|_| "connection closed".to_string())?
    }

    /// Puts channel `ch` in confirm mode.
    pub async fn confirm_select(&self, ch: u16) -> Result<(), String> {
        use amq_protocol::protocol::confirm;
        self.call(
            ch,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
        if let Some(s) = self.shared.sinks.lock().expect("poisoned").get_mut(&ch) {
            s.confirms = Some(Confirms::default());
        }
        Ok(())
    }

    /// Publishes; with confirms on, answers the receiver of the broker's verdict.
    pub async fn publish(
        &self,
        ch: u16,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: AMQPProperties,
    ) -> Result<Option<oneshot::Receiver<bool>>, String> {
        let fm = self.shared.frame_max;
        let method = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        }));
        let mut confirm = None;
        self.shared
            .send(|o| {
                if let Some(c) = self
                    .shared
                    .sinks
                    .lock()
                    .expect("poisoned")
                    .get_mut(&ch)
                    .and_then(|s| s.confirms.as_mut())
                {
                    let (tx, rx) = oneshot::channel();
                    c.next += 1;
                    c.waiting.insert(c.next, tx);
                    confirm = Some(rx);
                }
                o.enc.method(&mut o.buf, ch, method);
                o.enc.content(&mut o.buf, ch, properties, body, fm);
            })
            .await?;
        Ok(confirm)
    }

    /// Starts consuming: deliveries arrive on the receiver.
    pub async fn consume(
        &self,
        ch: u16,
        m: basic::Consume,
    ) -> Result<mpsc::UnboundedReceiver<Received>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(s) = self.shared.sinks.lock().expect("poisoned").get_mut(&ch) {
            s.deliveries = Some(tx);
        }
        self.call(ch, AMQPClass::Basic(basic::AMQPMethod::Consume(m)))
            .await?;
        Ok(rx)
    }

    /// Acks `tag` (no waiting: acks are bounded by the prefetch).
    pub fn ack(&self, ch: u16, tag: u64, multiple: bool) {
        self.shared.send_now(|o| {
            o.enc.method(
                &mut o.buf,
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: tag,
                    multiple,
                })),
            )
        });
    }

    /// True while channel `ch` is open (the broker has not closed it).
    pub fn has_channel(&self, ch: u16) -> bool {
        self.shared
            .sinks
            .lock()
            .expect("poisoned")
            .contains_key(&ch)
    }

    /// True once the connection failed or closed.
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// True while the broker blocks the connection (a resource alarm).
    pub fn blocked(&self) -> bool {
        self.shared.blocked.load(Ordering::Acquire)
    }
}
