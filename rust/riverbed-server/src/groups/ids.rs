//! Member ids as Kafka forms them: `<client id or group.instance.id>-<uuid>`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct MemberIds {
    counter: AtomicU64,
    seed: RandomState,
}

impl MemberIds {
    pub fn new() -> MemberIds {
        MemberIds {
            counter: AtomicU64::new(0),
            seed: RandomState::new(),
        }
    }

    /// A fresh id; unique within this coordinator (a counter is part of it) and unlikely to
    /// repeat across restarts (randomly keyed hash of the counter and the time).
    pub fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let mut h = self.seed.build_hasher();
        h.write_u64(n);
        h.write_u64(nanos);
        let hi = h.finish();
        h.write_u64(hi);
        let lo = h.finish();
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            (lo >> 48) & 0xffff,
            (n & 0xffff) << 32 | (lo & 0xffff_ffff)
        )
    }
}
