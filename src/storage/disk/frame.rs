//! Record framing: `[len u32 LE][crc32 u32 LE][payload]`, the CRC taken over the four
//! length bytes and the payload, so a damaged length is caught as surely as a damaged
//! payload. A zero header (`len` 0, `crc` 0) marks the end of the written part of a
//! preallocated, zero-filled segment; no real frame has a zero length.
//!
//! A pure codec over byte slices: no I/O. Reading tells a good frame from the end of the
//! data, a frame that runs past the data (torn), and a frame that fails its checksum.

/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 8;

/// The largest payload accepted (a sanity bound when resynchronising after damage).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// The checksum of a frame: CRC-32 (ISO-HDLC) of the length bytes, then the payload.
pub fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(payload);
    h.finalize()
}

/// Appends one frame to `buf`, its payload written by `write` (which appends to the
/// buffer it is given). Answers the frame's length in bytes.
pub fn encode_with<E>(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<usize, E> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    if let Err(e) = write(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let payload_len = buf.len() - start - FRAME_HEADER;
    let len_bytes = (payload_len as u32).to_le_bytes();
    let crc = checksum(len_bytes, &buf[start + FRAME_HEADER..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// What is found at an offset of a segment's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameAt<'a> {
    /// A frame whose checksum holds; the next frame starts at `next`.
    Good {
        /// The payload.
        payload: &'a [u8],
        /// Offset of the following frame.
        next: usize,
    },
    /// A zero header: the end of the written data (if only zeros follow).
    End,
    /// Fewer than a header's bytes left, or a length running past the data.
    Torn,
    /// A frame of plausible length whose checksum fails; `next` is where the following
    /// frame would start if the length is right.
    BadChecksum {
        /// Offset after the frame, by its length field.
        next: usize,
    },
}

/// Reads the frame at `off` of `data`.
pub fn read_at(data: &[u8], off: usize) -> FrameAt<'_> {
    if off >= data.len() {
        return FrameAt::End;
    }
    if data.len() - off < FRAME_HEADER {
        return if data[off..].iter().all(|b| *b == 0) {
            FrameAt::End
        } else {
            FrameAt::Torn
        };
    }
    let len_bytes: [u8; 4] = data[off..off + 4].try_into().expect("4 bytes");
    let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 && crc == 0 {
        return FrameAt::End;
    }
    let start = off + FRAME_HEADER;
    if len == 0 || len > MAX_PAYLOAD || len > data.len() - start {
        return FrameAt::Torn;
    }
    let payload = &data[start..start + len];
    if checksum(len_bytes, payload) == crc {
        FrameAt::Good {
            payload,
            next: start + len,
        }
    } else {
        FrameAt::BadChecksum { next: start + len }
    }
}

/// Reads the frame at `off` of `data` as [`read_at`] does but without computing its
/// checksum: for frames verified before and unchanged since (a stream's sealed bytes).
/// The length is still checked against the data, so a wrong length cannot read past it.
pub fn read_verified(data: &[u8], off: usize) -> FrameAt<'_> {
    if off >= data.len() || data.len() - off < FRAME_HEADER {
        return read_at(data, off);
    }
    let len_bytes: [u8; 4] = data[off..off + 4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    let start = off + FRAME_HEADER;
    if len == 0 || len > MAX_PAYLOAD || len > data.len() - start {
        return read_at(data, off);
    }
    FrameAt::Good {
        payload: &data[start..start + len],
        next: start + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_with::<()>(&mut buf, |b| {
            b.extend_from_slice(payload);
            Ok(())
        })
        .unwrap();
        buf
    }

    #[test]
    fn a_frame_has_the_exact_layout() {
        let f = frame(b"abc");
        let crc = checksum(3u32.to_le_bytes(), b"abc");
        let mut want = vec![3, 0, 0, 0];
        want.extend_from_slice(&crc.to_le_bytes());
        want.extend_from_slice(b"abc");
        assert_eq!(f, want);
    }

    #[test]
    fn a_frame_reads_back_and_zeros_mark_the_end() {
        let mut data = frame(b"hello");
        data.extend_from_slice(&[0u8; 32]);
        assert_eq!(
            read_at(&data, 0),
            FrameAt::Good {
                payload: b"hello",
                next: 13
            }
        );
        assert_eq!(read_at(&data, 13), FrameAt::End);
        assert_eq!(read_at(&data, data.len()), FrameAt::End);
    }

    #[test]
    fn a_frame_cut_at_any_byte_is_never_good() {
        let full = frame(b"some payload");
        for cut in 1..full.len() {
            let mut data = full[..cut].to_vec();
            assert!(
                !matches!(read_at(&data, 0), FrameAt::Good { .. }),
                "cut at {cut}"
            );
            // The same cut inside a zero-filled segment (a torn write).
            data.resize(full.len() + 16, 0);
            assert!(
                !matches!(read_at(&data, 0), FrameAt::Good { .. }),
                "cut at {cut} then zeros"
            );
        }
    }

    #[test]
    fn a_verified_read_skips_the_checksum_but_not_the_length() {
        let mut data = frame(b"hello");
        data.extend_from_slice(&[0u8; 8]);
        assert_eq!(read_verified(&data, 0), read_at(&data, 0));
        assert_eq!(read_verified(&data, 13), FrameAt::End);
        data[9] ^= 1;
        assert!(matches!(read_at(&data, 0), FrameAt::BadChecksum { .. }));
        assert!(matches!(read_verified(&data, 0), FrameAt::Good { .. }));
        data[0] = 200;
        assert_eq!(read_verified(&data, 0), FrameAt::Torn, "runs past the data");
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let full = frame(b"some payload");
        for i in 0..full.len() {
            let mut data = full.clone();
            data[i] ^= 0x10;
            assert!(
                !matches!(read_at(&data, 0), FrameAt::Good { .. }),
                "flip at {i}"
            );
        }
    }
}
