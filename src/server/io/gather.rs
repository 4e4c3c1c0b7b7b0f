//! What the writer task gathers between two socket writes, and how it writes it.
//!
//! Two modes, chosen per socket when the writer starts:
//!
//! - **By reference** (plain TCP): every chunk queued is kept as the [`Bytes`] it came
//!   as, and the gathered chunks go out in `writev(2)` calls of up to [`MAX_IOV`]
//!   slices. A native connection hands a stream record's body over as a slice of its
//!   segment's mapping, separate from the frame head around it, so the body's only
//!   copy is the kernel's into the socket (docs/STREAMS.md, "Read path and memory").
//! - **By copy** (TLS, whose encryption needs the plaintext in user space anyway, and
//!   in-memory pipes): small chunks are copied into one buffer, so that one write
//!   makes few TLS records; a chunk of [`DIRECT`] bytes or more is written as it is.

use bytes::{Buf, Bytes, BytesMut};
use std::io::IoSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most slices handed to one `writev(2)`: Linux's `IOV_MAX` (more fails with `EINVAL`).
pub(super) const MAX_IOV: usize = 1024;

/// In copy mode, a chunk this large is written as it is, not copied into the buffer.
const DIRECT: usize = 64 * 1024;

/// Chunks gathered for the next write.
pub(super) struct Gather {
    /// Keep chunks by reference and write them with `writev`.
    vectored: bool,
    /// Chunks in order (copy mode: the sealed buffer and large chunks).
    parts: Vec<Bytes>,
    /// Copy mode: small chunks copied together, after `parts`.
    batch: BytesMut,
    /// Bytes gathered.
    len: usize,
}

impl Gather {
    /// An empty gathering; `vectored` keeps chunks by reference.
    pub(super) fn new(vectored: bool) -> Self {
        Gather {
            vectored,
            parts: Vec::new(),
            batch: BytesMut::new(),
            len: 0,
        }
    }

    /// Bytes gathered.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds a chunk after those gathered.
    pub(super) fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if self.vectored {
            self.parts.push(bytes);
        } else if bytes.len() >= DIRECT {
            self.seal();
            self.parts.push(bytes);
        } else {
            self.batch.extend_from_slice(&bytes);
        }
    }

    /// Copy mode: the buffer of small chunks becomes a part (no copy).
    fn seal(&mut self) {
        if !self.batch.is_empty() {
            self.parts.push(self.batch.split().freeze());
        }
    }

    /// Writes everything gathered, each call within `stall`; false on error, a closed
    /// socket or a stall. Empty again afterwards, whatever the outcome.
    pub(super) async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        half: &mut W,
        stall: std::time::Duration,
    ) -> bool {
        self.seal();
        let ok = if self.vectored {
            write_vectored(half, &mut self.parts, stall).await
        } else {
            let mut ok = true;
            for p in &self.parts {
                if !matches!(
                    tokio::time::timeout(stall, half.write_all(p)).await,
                    Ok(Ok(()))
                ) {
                    ok = false;
                    break;
                }
            }
            ok
        };
        self.parts.clear();
        self.len = 0;
        ok
    }
}

/// Writes `parts` in order with `writev` calls of up to [`MAX_IOV`] slices, going on
/// after short writes. A call that makes no progress within `stall` fails.
async fn write_vectored<W: AsyncWrite + Unpin>(
    half: &mut W,
    parts: &mut [Bytes],
    stall: std::time::Duration,
) -> bool {
    let mut first = 0;
    while first < parts.len() {
        let n = {
            // One allocation per call of up to MAX_IOV slices (256 KiB or more).
            let slices: Vec<IoSlice<'_>> = parts[first..]
                .iter()
                .take(MAX_IOV)
                .map(|p| IoSlice::new(p))
                .collect();
            match tokio::time::timeout(stall, half.write_vectored(&slices)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return false,
            }
        };
        let mut left = n;
        while left > 0 {
            let p = &mut parts[first];
            if p.len() <= left {
                left -= p.len();
                first += 1;
            } else {
                p.advance(left);
                left = 0;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// A socket that takes at most `step` bytes per call, vectored or not.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        calls: usize,
        most_slices: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.calls += 1;
            self.most_slices = self.most_slices.max(bufs.len());
            let mut left = self.step;
            for b in bufs {
                let n = b.len().min(left);
                self.got.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Chunks of many sizes (empty ones too), numbered so order shows.
    fn chunks() -> (Vec<Bytes>, Vec<u8>) {
        let mut all = Vec::new();
        let mut want = Vec::new();
        for i in 0..3000usize {
            let len = [0, 1, 7, 40, 1024, 70_000][i % 6];
            let c: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            want.extend_from_slice(&c);
            all.push(Bytes::from(c));
        }
        (all, want)
    }

    #[tokio::test]
    async fn every_byte_goes_out_in_order_through_short_writes_in_both_modes() {
        for vectored in [true, false] {
            for step in [1000, 4096 + 3, 1 << 20] {
                let (all, want) = chunks();
                let mut g = Gather::new(vectored);
                for c in all {
                    g.push(c);
                }
                assert_eq!(g.len(), want.len());
                let mut sock = Trickle {
                    got: Vec::new(),
                    step,
                    calls: 0,
                    most_slices: 0,
                };
                assert!(g.write_to(&mut sock, Duration::from_secs(5)).await);
                assert_eq!(g.len(), 0, "emptied");
                assert!(
                    sock.got == want,
                    "vectored {vectored}, step {step}: bytes differ"
                );
                assert!(sock.most_slices <= MAX_IOV, "{} slices", sock.most_slices);
                if vectored {
                    assert!(sock.most_slices > 1, "slices handed together");
                } else {
                    assert_eq!(sock.most_slices, 0, "copy mode never writes vectored");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_socket_that_takes_nothing_fails_the_write() {
        let mut g = Gather::new(true);
        g.push(Bytes::from_static(b"abc"));
        let mut sock = Trickle {
            got: Vec::new(),
            step: 0,
            calls: 0,
            most_slices: 0,
        };
        assert!(!g.write_to(&mut sock, Duration::from_secs(5)).await);
        assert_eq!(g.len(), 0);
    }
}
