//! Group commit: a produce with acks=1/-1 is answered once its records are durable under the
//! log's fsync policy. Under `Batch`, appends are written without a sync and every waiter of a
//! partition shares the next fsync: the first waiter to find no sync running becomes the leader,
//! notes the partition's end, fsyncs (on the blocking pool) and wakes everyone whose records
//! that end covers; the others wait for it. A failed fsync is sticky for the partition: nothing
//! more is acknowledged there until a restart (the page cache may have dropped the data).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use riverbed_log::{FsyncPolicy, Partition};
use tokio::sync::Notify;

#[derive(Default)]
struct Syncer {
    /// Every offset below this is durable.
    durable: AtomicI64,
    syncing: AtomicBool,
    failed: Mutex<Option<String>>,
    done: Notify,
}

/// Resets `syncing` even if the leader's future is dropped (its connection closed), so other
/// waiters never wait for a sync nobody runs.
struct LeaderGuard<'a>(&'a Syncer);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.0.syncing.store(false, Ordering::Release);
        self.0.done.notify_waiters();
    }
}

pub struct Durability {
    policy: FsyncPolicy,
    syncers: Mutex<HashMap<(Arc<str>, u32), (Weak<Partition>, Arc<Syncer>)>>,
    /// fsyncs run, and produce requests they covered (for the metrics).
    pub fsyncs: AtomicU64,
    pub waits: AtomicU64,
}

impl Durability {
    pub fn new(policy: FsyncPolicy) -> Durability {
        Durability {
            policy,
            syncers: Mutex::new(HashMap::new()),
            fsyncs: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }

    /// Whether acknowledgements wait for an fsync.
    pub fn syncs_before_ack(&self) -> bool {
        self.policy == FsyncPolicy::Batch
    }

    fn syncer(&self, part: &Arc<Partition>) -> Arc<Syncer> {
        let key = (part.topic.clone(), part.id);
        let mut map = self.syncers.lock();
        if let Some((weak, s)) = map.get(&key) {
            // A topic deleted and created again has new partitions: start afresh.
            if weak.upgrade().is_some_and(|p| Arc::ptr_eq(&p, part)) {
                return s.clone();
            }
        }
        let s = Arc::new(Syncer::default());
        map.insert(key, (Arc::downgrade(part), s.clone()));
        s
    }

    /// Wait until every record of `part` below `end` is durable (at once unless the policy is
    /// `Batch`). The error names the partition and the failed fsync.
    pub async fn wait(&self, part: &Arc<Partition>, end: i64) -> Result<(), String> {
        if !self.syncs_before_ack() {
            return Ok(());
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let s = self.syncer(part);
        loop {
            if let Some(why) = s.failed.lock().clone() {
                return Err(why);
            }
            if s.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            let notified = s.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if s.syncing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _guard = LeaderGuard(&s);
                // Everything below the end published now was written before this fsync starts.
                let target = part.offsets().1;
                let p = part.clone();
                let r = tokio::task::spawn_blocking(move || p.sync_now()).await;
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(Ok(())) => {
                        s.durable.fetch_max(target, Ordering::AcqRel);
                    }
                    Ok(Err(e)) => {
                        let why = format!("fsync of {}/{} failed: {e}", part.topic, part.id);
                        eprintln!("riverbed serve: {why}; the partition acknowledges nothing more until a restart");
                        *s.failed.lock() = Some(why);
                    }
                    Err(e) => {
                        *s.failed.lock() = Some(format!(
                            "fsync of {}/{} did not run: {e}",
                            part.topic, part.id
                        ));
                    }
                }
            } else {
                notified.await;
            }
        }
    }
}
