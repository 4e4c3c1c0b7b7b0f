//! The AMQP side of the socket tasks, which are the native protocol's
//! ([`crate::server::io`]): the protocol header read before them, the framing they cut
//! with (`frame_max` as negotiated), and what the reader reports. Heartbeats are the
//! shared tasks' own, started through [`Flow::set_heartbeat`] once `connection.tune-ok`
//! agreed the interval; a silent peer gets no last word (RabbitMQ just closes).

use super::codec::{take_frame, CodecError, Encoder, Incoming, PROTOCOL_HEADER};
use crate::server::io::{self as shared, Flow, Framing, Read, WriterHandle};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use crate::server::io::WriterHandle as Writer;

/// Values negotiated in `connection.tune-ok`, read by the reader.
#[derive(Debug)]
pub struct Tuned {
    /// Largest frame, overhead included.
    pub frame_max: AtomicUsize,
}

impl Tuned {
    /// Before the tune: `frame_max` as offered.
    pub fn new(frame_max: usize) -> Self {
        Tuned {
            frame_max: AtomicUsize::new(frame_max),
        }
    }
}

/// AMQP 0-9-1 frames, within the negotiated `frame_max`.
pub struct AmqpFraming(pub Arc<Tuned>);

impl Framing for AmqpFraming {
    type Frame = Incoming;
    type Error = CodecError;

    fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        take_frame(buf, self.0.frame_max.load(Ordering::Relaxed))
    }

    fn heartbeat(&self) -> Bytes {
        let mut out = BytesMut::new();
        Encoder::default().heartbeat(&mut out);
        out.freeze()
    }

    fn silent(&self, _limit: Duration) -> Option<Bytes> {
        None
    }
}

/// What the reader reports to the connection actor.
pub enum AmqpRead {
    /// The 8-byte protocol header: right (true) or not.
    Header(bool),
    /// Complete frames from one read.
    Frames(Vec<Incoming>),
    /// The stream broke the framing: close with the error's code.
    Invalid(CodecError),
    /// Nothing arrived for two heartbeat intervals (the socket is being closed).
    Silent(Duration),
    /// The peer closed the socket.
    Eof,
    /// A socket error.
    Failed(std::io::Error),
}

impl From<Read<Incoming, CodecError>> for AmqpRead {
    fn from(r: Read<Incoming, CodecError>) -> Self {
        match r {
            Read::Frames(f) => AmqpRead::Frames(f),
            Read::Invalid(e) => AmqpRead::Invalid(e),
            Read::Silent(d) => AmqpRead::Silent(d),
            Read::Eof { .. } => AmqpRead::Eof,
            Read::Failed(e) => AmqpRead::Failed(e),
        }
    }
}

/// Reads the protocol header (a wrong one is refused as soon as it cannot become the
/// right one), then frames with the shared reader, handing each read to `deliver`,
/// which resolves when the connection is ready for more (false = stop).
pub async fn read_loop<R, F, Fut>(
    mut half: R,
    tuned: Arc<Tuned>,
    flow: Arc<Flow>,
    writer: WriterHandle,
    mut deliver: F,
) where
    R: AsyncRead + Unpin,
    F: FnMut(AmqpRead) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buf = BytesMut::with_capacity(shared::MIN_READ);
    while buf.len() < PROTOCOL_HEADER.len() {
        match half.read_buf(&mut buf).await {
            Ok(0) => {
                deliver(AmqpRead::Eof).await;
                return;
            }
            Ok(_) => {
                let n = buf.len().min(PROTOCOL_HEADER.len());
                if buf[..n] != PROTOCOL_HEADER[..n] {
                    deliver(AmqpRead::Header(false)).await;
                    return;
                }
            }
            Err(e) => {
                deliver(AmqpRead::Failed(e)).await;
                return;
            }
        }
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());
    if !deliver(AmqpRead::Header(true)).await {
        return;
    }
    let framing = AmqpFraming(tuned);
    shared::read_frames(half, buf, framing, flow, writer, |r| deliver(r.into())).await
}

/// Starts the writer task (AMQP heartbeats); `gone` runs when it ends.
pub fn spawn_writer(
    half: impl tokio::io::AsyncWrite + Unpin + 'static,
    flow: Arc<Flow>,
    tuned: &Arc<Tuned>,
    gone: impl FnOnce() + 'static,
) -> Writer {
    let beat = AmqpFraming(tuned.clone()).heartbeat();
    // Copy mode: AMQP connections hand the writer one encoded chunk per flush, which
    // `writev` by reference would not spare a copy of.
    shared::spawn_writer_with(half, flow, beat, false, gone)
}
