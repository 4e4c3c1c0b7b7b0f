//! Length-prefixed framing: splits a byte stream into frame bodies.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the negotiated maximum.
    #[error("frame of {size} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// A zero-length frame (no body) is never valid.
    #[error("empty frame")]
    Empty,
}

/// Takes one complete frame body off the front of `buf`.
///
/// Answers `Ok(None)` when more bytes are needed (nothing is consumed), the body when a
/// whole frame is there, or an error when the stream can never become valid.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { size: len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < LENGTH_PREFIX + len {
        buf.reserve(LENGTH_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Appends a frame to `out`: reserves the prefix, lets `write` append the body, then
/// fills the prefix in.
pub fn put_frame<E>(
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.put_u32(0);
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = (out.len() - start - LENGTH_PREFIX) as u32;
    out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_waits_for_more() {
        let mut out = BytesMut::new();
        put_frame::<()>(&mut out, |b| {
            b.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        put_frame::<()>(&mut out, |b| {
            b.extend_from_slice(b"de");
            Ok(())
        })
        .unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x03abc\x00\x00\x00\x02de");
        let whole = out.clone();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            let mut got = Vec::new();
            while let Some(f) = take_frame(&mut part, 100).unwrap() {
                got.push(f);
            }
            let expected = if cut >= 13 {
                2
            } else if cut >= 7 {
                1
            } else {
                0
            };
            assert_eq!(got.len(), expected, "cut at {cut}");
        }
    }

    #[test]
    fn refuses_oversized_and_empty_frames() {
        let mut b = BytesMut::from(&b"\x00\x00\x01\x00"[..]);
        assert_eq!(
            take_frame(&mut b, 255),
            Err(FrameError::TooLarge {
                size: 256,
                max: 255
            })
        );
        let mut b = BytesMut::from(&b"\x00\x00\x00\x00"[..]);
        assert_eq!(take_frame(&mut b, 255), Err(FrameError::Empty));
    }
}
