//! Windows computed from buffered records once the watermark has passed them: sliding windows
//! (Kafka Streams' definition) and count windows (every `n` records of a key in event-time
//! order). Records are held per key; their aggregate inputs are evaluated once, on arrival.

use std::collections::BTreeSet;

use arrow_array::{ArrayRef, RecordBatch};

use crate::error::Result;
use crate::keys::{event_times, FastMap};
use crate::operator::{OpMetrics, Operator};
use crate::window::{Item, WindowCore};

/// A held record: event time, arrival sequence, and where its inputs are.
#[derive(Debug, Clone, Copy)]
struct Held {
    ts: i64,
    seq: u64,
    batch: u32,
    row: u32,
}

struct HeldBatch {
    inputs: Vec<Option<ArrayRef>>,
    ts: Vec<i64>,
    live: usize,
}

pub enum BufferedKind {
    Sliding { size: i64, grace: i64 },
    Count { n: usize },
}

pub struct BufferedWindows {
    pub core: WindowCore,
    kind: BufferedKind,
    held: FastMap<u32, Vec<Held>>,
    batches: FastMap<u32, HeldBatch>,
    next_batch: u32,
    seq: u64,
    /// Sliding: windows ending before this were emitted. Count: records before this were used.
    done_before: i64,
}

impl BufferedWindows {
    pub fn new(core: WindowCore, kind: BufferedKind) -> BufferedWindows {
        BufferedWindows {
            core,
            kind,
            held: FastMap::default(),
            batches: FastMap::default(),
            next_batch: 0,
            seq: 0,
            done_before: i64::MIN,
        }
    }

    /// Aggregate the records `members` into a fresh state.
    fn aggregate(&mut self, members: &[Held]) -> Result<u32> {
        let sid = self.core.store.alloc();
        // Feed records in event-time (then arrival) order, a run of one batch at a time, so
        // first/last and float sums do not depend on anything but the data.
        let mut i = 0;
        while i < members.len() {
            let b = members[i].batch;
            let mut rows = Vec::new();
            while i < members.len() && members[i].batch == b {
                rows.push(members[i].row);
                i += 1;
            }
            if let Some(hb) = self.batches.get(&b) {
                let sids = vec![sid; rows.len()];
                self.core.store.update(&rows, &sids, &hb.inputs, &hb.ts)?;
            }
        }
        Ok(sid)
    }

    fn release(&mut self, dropped: &[Held]) {
        for h in dropped {
            if let Some(hb) = self.batches.get_mut(&h.batch) {
                hb.live -= 1;
                if hb.live == 0 {
                    self.batches.remove(&h.batch);
                }
            }
        }
    }
}

impl Operator for BufferedWindows {
    fn on_batch(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let n = batch.num_rows();
        self.core.m.records_in += n as u64;
        let ts = event_times(&batch, &self.core.ts_col)?;
        let kids = self.core.keys.ids(&batch)?;
        let inputs = self.core.aggs.inputs(&batch)?;
        let b = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        let mut live = 0;
        let mut late = Vec::new();
        for i in 0..n {
            // A record whose own window was already emitted (sliding) or that the watermark had
            // passed (count) is late.
            let too_old = match self.kind {
                BufferedKind::Sliding { .. } => ts[i] < self.done_before,
                BufferedKind::Count { .. } => ts[i] < self.core.wm,
            };
            if too_old {
                late.push(i as u32);
                continue;
            }
            self.held.entry(kids[i]).or_default().push(Held {
                ts: ts[i],
                seq: self.seq,
                batch: b,
                row: i as u32,
            });
            self.seq += 1;
            live += 1;
        }
        self.core.keep_late(&batch, late)?;
        if live > 0 {
            self.batches.insert(b, HeldBatch { inputs, ts, live });
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.core.wm = wm;
        let mut items = Vec::new();
        let mut dropped = Vec::new();
        let keys: Vec<u32> = self.held.keys().copied().collect();
        match self.kind {
            BufferedKind::Count { n } => {
                for k in keys {
                    let Some(mut list) = self.held.remove(&k) else {
                        continue;
                    };
                    list.sort_by_key(|h| (h.ts, h.seq));
                    let ready = list.partition_point(|h| h.ts < wm);
                    let full = ready / n * n;
                    for chunk in list[..full].chunks(n) {
                        let sid = self.aggregate(chunk)?;
                        items.push(Item {
                            key: k,
                            start: chunk[0].ts,
                            end: chunk[chunk.len() - 1].ts,
                            sid,
                        });
                    }
                    dropped.extend_from_slice(&list[..full]);
                    let rest = list.split_off(full);
                    if !rest.is_empty() {
                        self.held.insert(k, rest);
                    }
                }
            }
            BufferedKind::Sliding { size, grace } => {
                // Windows [s, e] (inclusive) close when wm >= e + 1 + grace.
                let bound = wm.saturating_sub(grace);
                if bound <= self.done_before {
                    return Ok(());
                }
                let from = self.done_before;
                for k in keys {
                    let Some(mut list) = self.held.remove(&k) else {
                        continue;
                    };
                    list.sort_by_key(|h| (h.ts, h.seq));
                    let times: Vec<i64> = list.iter().map(|h| h.ts).collect();
                    let mut windows: BTreeSet<(i64, i64)> = BTreeSet::new();
                    for (j, &t) in times.iter().enumerate() {
                        if t >= from && t < bound {
                            windows.insert((t.saturating_sub(size), t));
                        }
                        let right_end = t.saturating_add(1).saturating_add(size);
                        if right_end >= from && right_end < bound {
                            let after = times[j + 1..].iter().any(|&u| u > t && u <= right_end);
                            if after {
                                windows.insert((t + 1, right_end));
                            }
                        }
                    }
                    for (s, e) in windows {
                        let lo = times.partition_point(|&t| t < s);
                        let hi = times.partition_point(|&t| t <= e);
                        let members: Vec<Held> = list[lo..hi].to_vec();
                        let sid = self.aggregate(&members)?;
                        items.push(Item {
                            key: k,
                            start: s,
                            end: e,
                            sid,
                        });
                    }
                    // Later windows start at or after bound - size - 1.
                    let keep_from = bound.saturating_sub(size).saturating_sub(1);
                    let cut = list.partition_point(|h| h.ts < keep_from);
                    dropped.extend_from_slice(&list[..cut]);
                    let rest = list.split_off(cut);
                    if !rest.is_empty() {
                        self.held.insert(k, rest);
                    }
                }
                self.done_before = bound;
            }
        }
        self.release(&dropped);
        let sids: Vec<u32> = items.iter().map(|i| i.sid).collect();
        self.core.emit(&mut items, out)?;
        for s in sids {
            self.core.store.free(s);
        }
        Ok(())
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        let oldest = self
            .held
            .values()
            .filter_map(|l| l.iter().map(|h| h.ts).min())
            .min();
        let slack = match self.kind {
            BufferedKind::Sliding { size, grace } => size.saturating_add(grace).saturating_add(1),
            BufferedKind::Count { .. } => 0,
        };
        let future = wm.saturating_sub(slack);
        oldest.map_or(future, |o| o.saturating_sub(slack).min(future))
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.core.late)
    }

    fn metrics(&self) -> OpMetrics {
        self.core.metrics(self.held.values().map(Vec::len).sum())
    }
}
