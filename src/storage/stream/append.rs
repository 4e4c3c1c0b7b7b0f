//! Appending to a stream log: a chunk's records get their offsets and timestamp, are
//! encoded once into one buffer of frames (handed to the writer thread, which writes
//! and fsyncs it), and join the tail cache as slices of that buffer. A segment that
//! fills is rolled: its sparse index goes to the writer as its index file
//! ([`super::index_file`]), so the next start need not read its frames; the active
//! segment's goes as its recovery point each time it has grown
//! [`super::RECOVERY_POINT_SPACING`] bytes, so the next start reads only what follows.

use super::index_file::SealedIndex;
use super::meta::OFFSET_HEADER;
use super::now_millis;
use super::{codec, record, writer, Segment, StreamLog, StreamRecord};
use crate::message::Message;
use crate::storage::completion::{Completer, Completion};
use std::sync::Arc;

impl StreamLog {
    /// Appends `messages` as one chunk, each with its offset in the `x-stream-offset`
    /// header; answers a completion resolved once they are on disk (at once in memory).
    ///
    /// A log with storage keeps each record in its tail cache as stored, a slice of
    /// the chunk's frames handed to the writer: a native consumer at the head gets the
    /// stored bytes copied (or referenced) into its frames, as a replay from the files
    /// does; AMQP and embedded consumers get it decoded, once, on their first read. The
    /// message itself is only read (its offset header is written into its frame, not
    /// added to a copy of it). A log without storage keeps the message, with its
    /// header, only (its whole log is in memory, once).
    pub fn append(&mut self, messages: Vec<Arc<Message>>) -> Completion {
        if messages.is_empty() {
            return Completion::ready(Ok(()));
        }
        let (done, stored) = Completion::pending();
        self.append_then(messages, done);
        stored
    }

    /// [`append`](Self::append), resolving `done` instead of answering a completion:
    /// with storage, the writer thread resolves it after the fsync of every frame of
    /// the chunk (and of everything appended before it), so a
    /// [`Completer::calling`] runs there and can answer the publisher at once. `done`
    /// is resolved in every case: at once without storage or for an empty chunk, with
    /// the error of a record that cannot be encoded, with
    /// [`StorageError::Closed`](crate::storage::StorageError::Closed) once the writer
    /// stopped.
    pub fn append_then(&mut self, messages: Vec<Arc<Message>>, done: Completer) {
        if messages.is_empty() {
            return done.complete(Ok(()));
        }
        // Timestamps never go back, so a search by time can bisect.
        let now = now_millis().max(self.last_timestamp);
        self.last_timestamp = now;
        self.last_chunk = self.next;
        let stored = self.disk.is_some();
        // Room for the chunk's frames at once: grown by doubling, the buffer copied
        // every frame again on the way (about a tenth of an append's instructions).
        let mut buf = Vec::with_capacity(chunk_capacity(&messages));
        let mut segment = self.segments.back().expect("one segment at least").first;
        let mut pending = Vec::new();
        // The records of `buf` not yet in the tail: (frame position, message).
        let mut encoded = Vec::new();
        // Index files of the segments this append seals: (first offset, bytes).
        let mut seals = Vec::new();
        for m in messages {
            if self.segments.back().expect("a segment").bytes >= self.max_segment_bytes {
                if stored {
                    let sealed = self.segments.back().expect("a segment");
                    if let Some(idx) = SealedIndex::of(sealed, self.next) {
                        seals.push((idx.first, idx.encode()));
                    }
                }
                if !buf.is_empty() {
                    let chunk = self.cache_encoded(std::mem::take(&mut buf), &mut encoded);
                    pending.push((segment, chunk, self.next));
                }
                segment = self.next;
                self.segments.push_back(Segment::new(self.next));
                self.pointed = 0;
            }
            let at = buf.len();
            // The message is only read: its frame gets the offset header on the way.
            let n = match codec::encode_appended(&mut buf, self.next, now, &m) {
                Ok(n) => n as u64,
                Err(e) => return done.complete(Err(e)),
            };
            self.segments
                .back_mut()
                .expect("a segment")
                .push(self.next, now, n);
            self.bytes += n;
            if stored {
                encoded.push((at, now, record::appended_decoded_size(&m)));
            } else {
                let m = Arc::unwrap_or_clone(m).with_header(OFFSET_HEADER, self.next as i64);
                let r = StreamRecord::new(now, Arc::new(m));
                self.tail_bytes += r.size;
                self.tail.push_back(r);
            }
            self.next += 1;
        }
        let chunk = self.cache_encoded(buf, &mut encoded);
        pending.push((segment, chunk, self.next));
        self.evict();
        let Some(disk) = self.disk.as_ref() else {
            return done.complete(Ok(())); // a stream without storage: kept in memory
        };
        let Some(tx) = disk.tx.as_ref() else {
            // The writer stopped (the log is closing): nothing will write these, so no
            // confirm may claim they are on disk.
            return done.complete(Err(crate::storage::StorageError::Closed));
        };
        // The writer handles its commands in order and fails every append after a
        // failed one: the last chunk's result stands for the whole append, so only it
        // carries `done`.
        let last = pending.len() - 1;
        let mut done = Some(done);
        for (i, (segment, bytes, end)) in pending.into_iter().enumerate() {
            // A writer gone since (it panicked) drops the command, and with it `done`,
            // which then resolves to Closed: never a confirm.
            let _ = tx.send(writer::Command::Append {
                segment,
                bytes,
                end,
                done: if i == last { done.take() } else { None },
            });
        }
        // After the appends: the writer writes an index once the segment's frames are
        // on disk (the completions do not wait for it).
        for (segment, bytes) in seals {
            let _ = tx.send(writer::Command::Seal { segment, bytes });
        }
        let active = self.segments.back().expect("a segment").bytes;
        if active >= self.pointed.saturating_add(self.point_spacing) {
            // After the appends it covers, as a seal is.
            self.send_point();
        }
    }

    /// The frames of `buf` as one shared buffer; the records `encoded` (frame position
    /// in `buf`, timestamp, decoded size) join the tail cache as slices of it.
    fn cache_encoded(
        &mut self,
        buf: Vec<u8>,
        encoded: &mut Vec<(usize, i64, u64)>,
    ) -> bytes::Bytes {
        let chunk = bytes::Bytes::from(buf);
        for (at, timestamp, decoded) in encoded.drain(..) {
            let r = StreamRecord::appended(timestamp, codec::appended(&chunk, at), decoded);
            self.tail_bytes += r.size;
            self.tail.push_back(r);
        }
        chunk
    }

    /// Sets how many bytes the active segment grows between two recovery points.
    pub fn set_point_spacing(&mut self, bytes: u64) {
        self.point_spacing = bytes.max(1);
    }

    /// Sends the writer a recovery point of the active segment as it is, unless its
    /// last one covers it all (the writer writes it once the frames are fsynced).
    pub(super) fn send_point(&mut self) {
        let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) else {
            return;
        };
        let seg = self.segments.back().expect("one segment at least");
        if seg.bytes <= self.pointed {
            return;
        }
        let Some(idx) = SealedIndex::of(seg, self.next) else {
            return;
        };
        let _ = tx.send(writer::Command::Point {
            segment: seg.first,
            bytes: idx.encode_point(),
        });
        self.pointed = seg.bytes;
    }
}

/// Bytes a chunk of `messages` takes as frames, give or take their properties: each
/// frame's length, CRC and record head, its meta's markers, exchange and routing key,
/// and its body.
fn chunk_capacity(messages: &[Arc<Message>]) -> usize {
    /// Frame header, record head, markers, the 13 properties and the offset header.
    const PER_FRAME: usize = 80;
    messages
        .iter()
        .map(|m| PER_FRAME + m.exchange.len() + m.routing_key.len() + m.body.len())
        .sum()
}
