//! Log-wide signals shared with every partition: "something was appended" (wakes consumers that
//! wait for new records) and "the log is closed" (refuses further appends).

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Notifier {
    seq: Mutex<u64>,
    cv: Condvar,
    closed: AtomicBool,
    /// Async waiters (see [`Notifier::register_waker`]), woken by the next `notify`.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_waker_id: AtomicU64,
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
        let woken: Vec<Waker> = self.wakers.lock().drain().map(|(_, w)| w).collect();
        for w in woken {
            w.wake();
        }
    }

    /// The async form of [`wait_past`](Self::wait_past), for executors (no thread blocks): if
    /// something was appended after `seen` (or the log is closed), returns `None`; otherwise
    /// stores `waker` to be woken by the next append and returns its registration id (pass the
    /// previous one back on a re-poll to replace it; remove it with
    /// [`unregister_waker`](Self::unregister_waker) when the waiter gives up).
    pub fn register_waker(&self, seen: u64, id: Option<u64>, waker: &Waker) -> Option<u64> {
        let seq = self.seq.lock();
        if *seq != seen || self.is_closed() {
            return None;
        }
        let id = id.unwrap_or_else(|| self.next_waker_id.fetch_add(1, Ordering::Relaxed));
        // Registered while `seq` is held, so a `notify` between the check and here can't be missed.
        self.wakers.lock().insert(id, waker.clone());
        drop(seq);
        Some(id)
    }

    /// Forget an async waiter registered with [`register_waker`](Self::register_waker).
    pub fn unregister_waker(&self, id: u64) {
        self.wakers.lock().remove(&id);
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
