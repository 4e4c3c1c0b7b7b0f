//! How much one socket read of the client's reader may take, and when its buffer
//! grows.
//!
//! Deliveries keep their bodies as slices of the read buffer (no copy), so a buffer is
//! never reused while a delivery still holds part of it: growing it means a new
//! allocation, and the start of a frame already read into the old one is copied over.
//! For small frames that copy is at most a frame per buffer. For large ones it was
//! about half a frame per read: with 64 KiB stream bodies, a user-space copy of about
//! half of every body, which the broker had sent without copying it at all. So the
//! plan keeps the largest frame seen: a read leaves room behind it for the rest of a
//! frame it may cut, and a cut frame is finished by a read of exactly its missing
//! bytes, so the next read starts on a frame boundary in a buffer of its own and no
//! byte of a frame is copied.

use crate::protocol::frame::LENGTH_PREFIX;
use bytes::BytesMut;

/// Free space below which the buffer grows before a read.
const MIN_READ_SPACE: usize = 16 * 1024;
/// What it grows by at least.
const READ_CHUNK: usize = 64 * 1024;
/// Frames of the largest size seen that a grown buffer holds ...
const FRAMES_PER_BUFFER: usize = 4;
/// ... within this much, so that frames of megabytes do not make buffers of many.
const MAX_GROW: usize = 1024 * 1024;

/// The reader's read plan: remembers the largest frame seen.
#[derive(Debug, Default)]
pub(super) struct ReadPlan {
    largest: usize,
}

impl ReadPlan {
    /// Readies `buf` for the next read, growing it when needed, and answers how many
    /// bytes that read may take (at least one, at most the free space). `buf` holds
    /// what the complete frames left: nothing, or the start of one frame.
    pub(super) fn next(&mut self, buf: &mut BytesMut) -> usize {
        let pending = pending_len(buf);
        self.largest = self.largest.max(pending);
        let missing = pending.saturating_sub(buf.len());
        let spare = buf.capacity() - buf.len();
        // Finish a cut frame in place when it fits and growing would copy what was
        // read of it: a large rest, or too little room after it for a useful read.
        if missing > 0
            && missing <= spare
            && (missing >= MIN_READ_SPACE || spare - missing < MIN_READ_SPACE)
        {
            return missing;
        }
        if spare < MIN_READ_SPACE.max(missing) {
            let mut grow = READ_CHUNK.max((FRAMES_PER_BUFFER * self.largest).min(MAX_GROW));
            if self.largest >= MIN_READ_SPACE {
                grow = grow.max(self.largest + READ_CHUNK);
            }
            buf.reserve(grow.max(missing));
        }
        let spare = buf.capacity() - buf.len();
        if self.largest >= MIN_READ_SPACE {
            // Room for the rest of a large frame this read may cut.
            spare
                .saturating_sub(self.largest)
                .max(MIN_READ_SPACE.min(spare))
        } else {
            spare
        }
    }
}

/// The whole length (prefix included) of the frame `buf` starts with, once its
/// prefix is there; 0 before.
fn pending_len(buf: &[u8]) -> usize {
    match buf.get(..LENGTH_PREFIX) {
        Some(p) => LENGTH_PREFIX + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{put_frame, take_frame};
    use bytes::{BufMut, Bytes};

    /// Frames of `sizes` (bodies numbered so that order and content show), as one
    /// byte stream.
    fn stream(sizes: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut out = BytesMut::new();
        let mut bodies = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
            put_frame::<()>(&mut out, |b| {
                b.put_slice(&body);
                Ok(())
            })
            .unwrap();
            bodies.push(body);
        }
        (out.to_vec(), bodies)
    }

    /// Reads `wire` as the reader does, the socket returning at most the next of
    /// `chunks` per read and every frame kept (as a consumer holding its deliveries
    /// keeps the buffers shared). Answers the frames and the bytes of frames copied
    /// from one buffer to another.
    fn read_all(wire: &[u8], chunks: &[usize]) -> (Vec<Bytes>, usize) {
        let mut plan = ReadPlan::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let (mut at, mut copied, mut k) = (0, 0, 0);
        loop {
            // Where the rest of the buffer lies before each step: if a step moves it,
            // its bytes were copied.
            let mut moved = |buf: &BytesMut, before: *const u8| {
                if !buf.is_empty() && buf.as_ptr() != before {
                    copied += buf.len();
                }
            };
            loop {
                let before = buf.as_ptr();
                let len = buf.len();
                match take_frame(&mut buf, 1 << 24).unwrap() {
                    Some(f) => frames.push(f),
                    None => {
                        // take_frame reserves room for a cut frame.
                        assert_eq!(buf.len(), len);
                        moved(&buf, before);
                        break;
                    }
                }
            }
            if at == wire.len() {
                assert!(buf.is_empty(), "a frame left cut");
                return (frames, copied);
            }
            let before = buf.as_ptr();
            let limit = plan.next(&mut buf);
            moved(&buf, before);
            assert!(limit >= 1 && limit <= buf.capacity() - buf.len(), "{limit}");
            let n = limit.min(chunks[k % chunks.len()]).min(wire.len() - at);
            k += 1;
            let ptr = buf.as_ptr();
            buf.put_slice(&wire[at..at + n]);
            assert_eq!(buf.as_ptr(), ptr, "a read never grows the buffer");
            at += n;
        }
    }

    #[test]
    fn large_frames_are_never_copied_after_the_first() {
        let big = 64 * 1024 + 90;
        let mut sizes = vec![big; 60];
        sizes.extend([1000; 300]);
        sizes.extend([big, 5, big, 70_000, 3, big]);
        let (wire, bodies) = stream(&sizes);
        for chunks in [
            &[usize::MAX][..],
            &[200_000, 7_000, 65_000, 300_000],
            &[1, 4096, 100_000],
        ] {
            let (frames, copied) = read_all(&wire, chunks);
            assert_eq!(frames.len(), bodies.len());
            for (f, b) in frames.iter().zip(&bodies) {
                assert!(f[..] == b[..], "a frame differs");
            }
            // The first large frame arrives in a small buffer: at most its start is
            // copied, and nothing after it (the 70,000-byte one is larger than any
            // before it, so its start may be copied too).
            assert!(
                copied <= 2 * 64 * 1024,
                "chunks {chunks:?}: {copied} bytes copied"
            );
        }
    }

    #[test]
    fn small_frames_read_in_large_reads() {
        let (wire, bodies) = stream(&[1024; 2000]);
        let (frames, copied) = read_all(&wire, &[usize::MAX]);
        assert_eq!(frames.len(), bodies.len());
        assert!(copied <= 64 * 1024, "{copied}");
        let mut plan = ReadPlan::default();
        let mut buf = BytesMut::new();
        assert!(
            plan.next(&mut buf) >= READ_CHUNK,
            "small frames: whole-buffer reads"
        );
    }
}
