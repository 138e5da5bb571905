//! Kafka's default partitioner: murmur2 of the key for keyed records, a sticky partition for
//! records without a key.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Kafka's murmur2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `int` length, as Kafka hashes it.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`).
#[inline]
fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// `toPositive(murmur2(key)) % partitions`, Kafka's partition for a keyed record.
/// `partitions` must be at least 1; 0 is treated as 1 (partition 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions.max(1)
}

/// Sticky partitioner for records without a key: keeps one partition until [`next_batch`] is
/// called, then moves on to the next one, round-robin from a random start (Kafka's sticky
/// partitioner spreads batches, not records, to keep batches large).
///
/// [`next_batch`]: StickyPartitioner::next_batch
#[derive(Debug)]
pub struct StickyPartitioner {
    // 64 bits so the count never wraps (a u32 wrap would break the rotation when 2^32 % n != 0).
    counter: AtomicU64,
}

impl StickyPartitioner {
    pub fn new() -> Self {
        // RandomState is seeded randomly per process (and varied per instance): a cheap random start.
        let start = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        StickyPartitioner {
            counter: AtomicU64::new(start >> 32),
        }
    }

    /// The partition to use now, in `0..partitions` (`partitions` 0 is treated as 1).
    pub fn current(&self, partitions: u32) -> u32 {
        (self.counter.load(Ordering::Relaxed) % u64::from(partitions.max(1))) as u32
    }

    /// Moves to the next partition (call when a batch is complete).
    pub fn next_batch(&self) {
        self.counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for StickyPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_vectors() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for &(s, want) in cases {
            assert_eq!(murmur2(s.as_bytes()), want, "murmur2({s:?})");
        }
    }

    #[test]
    fn partition_for_key_in_range() {
        for partitions in 1..40u32 {
            for i in 0..500u32 {
                let key = format!("key-{i}");
                let p = partition_for_key(key.as_bytes(), partitions);
                assert!(p < partitions);
                assert_eq!(p, partition_for_key(key.as_bytes(), partitions));
            }
        }
        // murmur2("21") is negative: toPositive clears the sign bit rather than negating.
        let h = murmur2(b"21");
        assert!(h < 0);
        assert_eq!(partition_for_key(b"21", 7), ((h & 0x7fff_ffff) as u32) % 7);
        assert_eq!(partition_for_key(b"x", 0), 0);
        assert_eq!(partition_for_key(b"", 1), 0);
    }

    #[test]
    fn sticky_partitioner_sticks_then_rotates() {
        let p = StickyPartitioner::new();
        let first = p.current(5);
        assert!(first < 5);
        for _ in 0..10 {
            assert_eq!(p.current(5), first);
        }
        let mut seen = vec![first];
        for _ in 0..4 {
            p.next_batch();
            let now = p.current(5);
            assert!(now < 5);
            assert_ne!(now, *seen.last().unwrap_or(&u32::MAX));
            seen.push(now);
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert!(p.current(1) == 0 && p.current(0) == 0);

        fn assert_sync<T: Sync + Send>() {}
        assert_sync::<StickyPartitioner>();
    }
}
