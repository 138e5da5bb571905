//! Wakes consumers that wait for new records (tail-follow) when any partition of the log grows.

use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Notifier {
    seq: Mutex<u64>,
    cv: Condvar,
}

impl Notifier {
    /// The current append sequence number; pass it to `wait_past` to avoid missing a wake-up.
    pub fn seq(&self) -> u64 {
        *self.seq.lock()
    }

    pub fn notify(&self) {
        *self.seq.lock() += 1;
        self.cv.notify_all();
    }

    /// Wait until something was appended after `seen`, or `timeout` passes. True if woken by data.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seq = self.seq.lock();
        while *seq == seen {
            if self.cv.wait_until(&mut seq, deadline).timed_out() {
                return *seq != seen;
            }
        }
        true
    }
}
