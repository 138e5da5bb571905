//! Log-wide signals shared with every partition: "something was appended" (wakes consumers that
//! wait for new records) and "the log is closed" (refuses further appends).

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Notifier {
    seq: Mutex<u64>,
    cv: Condvar,
    closed: AtomicBool,
}

impl Notifier {
    /// The current append sequence number; pass it to `wait_past` to avoid missing a wake-up.
    pub fn seq(&self) -> u64 {
        *self.seq.lock()
    }

    /// Mark the log closed; returns whether it already was.
    pub fn close(&self) -> bool {
        let was = self.closed.swap(true, Ordering::AcqRel);
        self.notify();
        was
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
