//! The partition of a routing key: MurmurHash3 (x86, 32-bit) of the key's UTF-8 bytes
//! with seed 104729, modulo the partition count (unsigned). RabbitMQ's stream clients
//! (Java, .NET, Go, Rust) pick a super stream partition this way, so a key goes to the
//! same partition whether a RabbitMQ client or actormq's exchange routes it.

/// The seed RabbitMQ's stream clients use.
pub const SEED: u32 = 104_729;

/// MurmurHash3 x86 32-bit of `data` with `seed`.
///
/// ```
/// use actormq::broker::superstream::murmur3_32;
/// assert_eq!(murmur3_32(b"test", 0), 0xba6b_d213);
/// ```
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let scramble = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        h ^= scramble(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0u32, |k, byte| (k << 8) | u32::from(*byte));
        h ^= scramble(k);
    }
    // The length is mixed in as a 32-bit value (keys are far shorter than 4 GiB).
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The partition index (0-based, in `x-stream-partition-order`) of `routing_key` among
/// `partitions` partitions; `partitions` must be > 0.
///
/// ```
/// use actormq::broker::superstream::partition_of;
/// assert!(partition_of("order-42", 3) < 3);
/// ```
pub fn partition_of(routing_key: &str, partitions: usize) -> usize {
    (murmur3_32(routing_key.as_bytes(), SEED) as usize) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_murmur3_vectors() {
        // The reference vectors of MurmurHash3_x86_32 (SMHasher's), various seeds.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(&[0, 0, 0, 0], 0), 0x2362_f9de);
        assert_eq!(murmur3_32(b"test", 0), 0xba6b_d213);
        assert_eq!(murmur3_32(b"Hello, world!", 0x9747_b28c), 0x2488_4cba);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c),
            0x2fa8_26cd
        );
    }

    #[test]
    fn seed_104729_matches_an_independent_implementation() {
        // Computed with a separate (Python) implementation checked against the vectors
        // above: every tail length (0..=3 bytes past a block) is covered.
        let cases: [(&str, u32); 8] = [
            ("", 3_329_588_566),
            ("a", 1_086_686_554),
            ("ab", 398_604_456),
            ("abc", 3_409_700_625),
            ("abcd", 3_421_720_556),
            ("hello", 1_321_743_225),
            ("order-2", 1_252_507_490),
            ("invoice-42", 692_942_112),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur3_32(key.as_bytes(), SEED), hash, "{key:?}");
        }
        assert_eq!(partition_of("hello", 3), 0);
        assert_eq!(partition_of("hello", 6), 3);
        assert_eq!(partition_of("emea", 6), 4);
        assert_eq!(partition_of("order-2", 3), 2);
        // Unsigned remainder: a hash above i32::MAX is not taken as negative.
        assert_eq!(partition_of("abc", 6), 3_409_700_625 % 6);
    }
}
