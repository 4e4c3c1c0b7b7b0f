//! The connection's two tasks: the writer sends whatever piled up in the shared buffer
//! in one write; the reader takes frames off the socket and routes each reply, confirm
//! and delivery to its channel.

use super::*;

pub(super) async fn write_loop(mut half: OwnedWriteHalf, shared: Arc<Shared>) {
    let mut spare = BytesMut::with_capacity(64 * 1024);
    loop {
        shared.wake.notified().await;
        loop {
            {
                let mut out = shared.out.lock().expect("poisoned");
                if out.buf.is_empty() {
                    break;
                }
                std::mem::swap(&mut out.buf, &mut spare);
            }
            shared.room.notify_waiters();
            if half.write_all(&spare).await.is_err() {
                shared.fail();
                return;
            }
            spare.clear();
        }
        if shared.closed.load(Ordering::Acquire) {
            let _ = half.shutdown().await;
            return;
        }
    }
}

pub(super) async fn read_loop(mut half: OwnedReadHalf, mut buf: BytesMut, shared: Arc<Shared>) {
    loop {
        loop {
            match take_frame(&mut buf, shared.frame_max) {
                Ok(Some(f)) => {
                    if !route(&shared, f) {
                        shared.fail();
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("perf: cannot read the broker's frames: {e}");
                    shared.fail();
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match half.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                shared.fail();
                return;
            }
        }
    }
}

/// Hands a frame to its channel; false when the connection must end.
fn route(shared: &Shared, f: Incoming) -> bool {
    let mut sinks = shared.sinks.lock().expect("poisoned");
    match f {
        Incoming::Method(0, m) => match *m {
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                eprintln!(
                    "perf: the broker closed the connection: {} {}",
                    c.reply_code, c.reply_text
                );
                return false;
            }
            AMQPClass::Connection(connection::AMQPMethod::Blocked(b)) => {
                eprintln!(
                    "perf: the broker blocks the connection: {}",
                    b.reason.as_str()
                );
                shared.blocked.store(true, Ordering::Release);
            }
            AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => {
                eprintln!("perf: the broker unblocked the connection");
                shared.blocked.store(false, Ordering::Release);
            }
            _ => {}
        },
        Incoming::Method(ch, m) => {
            let Some(s) = sinks.get_mut(&ch) else {
                return true;
            };
            match *m {
                AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => {
                    s.partial = Some(Partial {
                        tag: d.delivery_tag,
                        redelivered: d.redelivered,
                        size: 0,
                        body: BytesMut::new(),
                    });
                }
                AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                    if let Some(c) = &mut s.confirms {
                        c.settle(a.delivery_tag, a.multiple, true);
                    }
                }
                AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                    if let Some(c) = &mut s.confirms {
                        c.settle(n.delivery_tag, n.multiple, false);
                    }
                }
                AMQPClass::Basic(basic::AMQPMethod::Return(_)) => {}
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    let text = format!("channel closed: {} {}", c.reply_code, c.reply_text);
                    if let Some(s) = sinks.remove(&ch) {
                        for r in s.replies {
                            let _ = r.send(Err(text.clone()));
                        }
                    }
                    drop(sinks);
                    shared.send_now(|o| {
                        o.enc.method(
                            &mut o.buf,
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        )
                    });
                }
                other => {
                    if let Some(r) = s.replies.pop_front() {
                        let _ = r.send(Ok(other));
                    }
                }
            }
        }
        Incoming::Ack(ch, tag, multiple) => {
            if let Some(c) = sinks.get_mut(&ch).and_then(|s| s.confirms.as_mut()) {
                c.settle(tag, multiple, true);
            }
        }
        // A server sends no basic.publish.
        Incoming::Publish(..) => {}
        Incoming::Header(ch, h) => {
            if let Some(s) = sinks.get_mut(&ch) {
                if let Some(p) = &mut s.partial {
                    p.size = h.body_size;
                    p.body.reserve(h.body_size as usize);
                }
                deliver_if_complete(s);
            }
        }
        Incoming::Body(ch, b) => {
            if let Some(s) = sinks.get_mut(&ch) {
                if let Some(p) = &mut s.partial {
                    if p.body.is_empty() && b.len() as u64 == p.size {
                        // The whole body in one frame: no copy.
                        let p = s.partial.take().expect("checked");
                        if let Some(tx) = &s.deliveries {
                            let _ = tx.send(Received {
                                body: b,
                                tag: p.tag,
                                redelivered: p.redelivered,
                            });
                        }
                        return true;
                    }
                    p.body.extend_from_slice(&b);
                }
                deliver_if_complete(s);
            }
        }
        Incoming::Heartbeat(_) => {}
    }
    true
}

fn deliver_if_complete(s: &mut Sink) {
    if s.partial
        .as_ref()
        .is_some_and(|p| p.body.len() as u64 >= p.size)
    {
        let p = s.partial.take().expect("checked");
        if let Some(tx) = &s.deliveries {
            let _ = tx.send(Received {
                body: Bytes::from(p.body),
                tag: p.tag,
                redelivered: p.redelivered,
            });
        }
    }
}
