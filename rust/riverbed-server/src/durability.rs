//! Group commit: a produce with acks=1/-1 is answered once its records are durable under the
//! log's fsync policy. Under `Batch`, appends are written without a sync and every waiter of a
//! partition shares the next fsync: the first waiter to find no sync running becomes the leader,
//! notes the partition's end, fsyncs (on the blocking pool) and wakes everyone whose records
//! that end covers; the others wait for it. A failed fsync is sticky for the partition: nothing
//! more is acknowledged there until a restart (the page cache may have dropped the data).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::by_partition::ByPartition;

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
    syncers: Mutex<ByPartition<Syncer>>,
    /// fsyncs run, and produce requests they covered (for the metrics).
    pub fsyncs: AtomicU64,
    pub waits: AtomicU64,
}

impl Durability {
    pub fn new(policy: FsyncPolicy) -> Durability {
        Durability {
            policy,
            syncers: Mutex::new(ByPartition::new()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use riverbed_log::{Log, LogOptions, TopicOptions};

    #[test]
    fn concurrent_waiters_share_one_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), LogOptions::default()).expect("log");
        let topic = log.topic("t", &TopicOptions::default()).expect("topic");
        let part = topic.partition(0).expect("p").clone();
        let d = Arc::new(Durability::new(FsyncPolicy::Batch));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        // 100 produce requests appended, then all wait: the first becomes the leader, the
        // others are polled (and wait) before its fsync completes.
        let mut ends = Vec::new();
        for i in 0..100u8 {
            let mut buf = Vec::new();
            let mut w = riverbed_log::batch::BatchWriter::new(&mut buf, 0, 1);
            w.push(0, 1, Some(&[i]), Some(b"v"), &[]);
            w.finish();
            let batches = riverbed_log::raw::validate_batches(&buf, 1 << 20, false).expect("valid");
            ends.push(part.append_raw(&buf, &batches).expect("append").1);
        }
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for end in ends {
                let (d, p) = (d.clone(), part.clone());
                set.spawn(async move { d.wait(&p, end).await });
            }
            while let Some(r) = set.join_next().await {
                r.expect("join").expect("durable");
            }
        });
        assert_eq!(d.fsyncs.load(Ordering::Relaxed), 1);
        // A later append needs (and gets) a new fsync.
        let mut buf = Vec::new();
        let mut w = riverbed_log::batch::BatchWriter::new(&mut buf, 0, 1);
        w.push(0, 1, Some(b"x"), Some(b"v"), &[]);
        w.finish();
        let batches = riverbed_log::raw::validate_batches(&buf, 1 << 20, false).expect("valid");
        let end = part.append_raw(&buf, &batches).expect("append").1;
        rt.block_on(d.wait(&part, end)).expect("durable");
        assert_eq!(d.fsyncs.load(Ordering::Relaxed), 2);
        assert_eq!(part.offsets().1, 101);
    }
}
