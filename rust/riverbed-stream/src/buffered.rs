//! Windows computed from buffered records once the watermark has passed them: sliding windows
//! (Kafka Streams' definition) and count windows (every `n` records of a key in event-time
//! order). Records are held per key; their aggregate inputs are evaluated once, on arrival.

use std::collections::BTreeSet;

use arrow_array::{ArrayRef, RecordBatch};

use crate::aggregate::AccStore;
use crate::error::{ArrowContext, Result};
use crate::held::{Held, HeldRecords};
use crate::keys::event_times;
use crate::operator::{OpMetrics, Operator};
use crate::state::{StateReader, StateWriter};
use crate::watermark::Judge;
use crate::window::{Item, WindowCore};

/// What a held batch keeps: its aggregate inputs and event times.
struct HeldBatch {
    inputs: Vec<Option<ArrayRef>>,
    ts: arrow_buffer::ScalarBuffer<i64>,
}

pub enum BufferedKind {
    Sliding { size: i64, grace: i64 },
    Count { n: usize },
}

pub struct BufferedWindows {
    pub core: WindowCore,
    kind: BufferedKind,
    held: HeldRecords<HeldBatch>,
    /// Sliding: windows ending before this were emitted.
    done_before: i64,
}

impl BufferedWindows {
    pub fn new(core: WindowCore, kind: BufferedKind) -> BufferedWindows {
        BufferedWindows {
            core,
            kind,
            held: HeldRecords::default(),
            done_before: i64::MIN,
        }
    }
}

/// Aggregate the records `members` into a fresh state, feeding them in event-time (then
/// arrival) order, a run of one batch at a time, so first/last and float sums depend only on
/// the data.
fn aggregate(store: &mut AccStore, held: &HeldRecords<HeldBatch>, members: &[Held]) -> Result<u32> {
    let sid = store.alloc();
    let mut i = 0;
    while i < members.len() {
        let b = members[i].batch;
        let mut rows = Vec::new();
        while i < members.len() && members[i].batch == b {
            rows.push(members[i].row);
            i += 1;
        }
        if let Some(hb) = held.payload(b) {
            let sids = vec![sid; rows.len()];
            store.update(&rows, &sids, &hb.inputs, &hb.ts)?;
        }
    }
    Ok(sid)
}

impl Operator for BufferedWindows {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.on_input_timed(0, batch, None, out)
    }

    fn on_input_timed(
        &mut self,
        _side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = batch.num_rows();
        self.core.m.records_in += n as u64;
        let ts = event_times(&batch, &self.core.ts_col)?;
        let kids = self.core.keys.ids(&batch)?;
        let inputs = self.core.aggs.inputs(&batch)?;
        // A record whose own window was already emitted (sliding: the watermark it meets passed
        // its time + grace) or that the watermark had passed (count) is late.
        let (wm, grace) = match self.kind {
            BufferedKind::Sliding { grace, .. } => (self.done_before.saturating_add(grace), grace),
            BufferedKind::Count { .. } => (self.core.wm, 0),
        };
        let judge = Judge::new(wm, stream);
        let late = self.held.hold(
            &kids,
            &ts.clone(),
            |i, t| t < judge.at(i).saturating_sub(grace),
            HeldBatch { inputs, ts },
        );
        self.core.keep_late(&batch, late)
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Never back: after a restore, the windows it had closed stay closed.
        let wm = crate::watermark::never_back(self.core.wm, wm);
        self.core.wm = wm;
        let mut items = Vec::new();
        let store = &mut self.core.store;
        let done = match self.kind {
            BufferedKind::Count { n } => self.held.drain_sorted(|k, list, held| {
                let ready = list.partition_point(|h| h.ts < wm);
                let full = ready / n * n;
                for chunk in list[..full].chunks(n) {
                    let sid = aggregate(store, held, chunk)?;
                    items.push(Item {
                        key: k,
                        start: chunk[0].ts,
                        end: chunk[chunk.len() - 1].ts,
                        sid,
                    });
                }
                Ok(full)
            })?,
            BufferedKind::Sliding { size, grace } => {
                // Windows [s, e] (inclusive) close when wm >= e + 1 + grace.
                let bound = wm.saturating_sub(grace);
                if bound <= self.done_before {
                    return Ok(());
                }
                let from = self.done_before;
                let done = self.held.drain_sorted(|k, list, held| {
                    let times: Vec<i64> = list.iter().map(|h| h.ts).collect();
                    let mut windows: BTreeSet<(i64, i64)> = BTreeSet::new();
                    for (j, &t) in times.iter().enumerate() {
                        if t >= from && t < bound {
                            windows.insert((t.saturating_sub(size), t));
                        }
                        let right_end = t.saturating_add(1).saturating_add(size);
                        if right_end >= from
                            && right_end < bound
                            && times[j + 1..].iter().any(|&u| u > t && u <= right_end)
                        {
                            windows.insert((t + 1, right_end));
                        }
                    }
                    for (s, e) in windows {
                        let lo = times.partition_point(|&t| t < s);
                        let hi = times.partition_point(|&t| t <= e);
                        let sid = aggregate(store, held, &list[lo..hi])?;
                        items.push(Item {
                            key: k,
                            start: s,
                            end: e,
                            sid,
                        });
                    }
                    // Later windows start at or after bound - size - 1.
                    let keep_from = bound.saturating_sub(size).saturating_sub(1);
                    Ok(list.partition_point(|h| h.ts < keep_from))
                })?;
                self.done_before = bound;
                done
            }
        };
        self.held.release(done.iter().map(|(_, h)| h));
        let sids: Vec<u32> = items.iter().map(|i| i.sid).collect();
        self.core.emit(&mut items, out)?;
        for s in sids {
            self.core.store.free(s);
        }
        Ok(())
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        let oldest = self.held.oldest();
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

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        self.core.snapshot(&mut w);
        w.i64(self.done_before);
        self.held.snapshot(&mut w, |hb, w| {
            w.i64s(&hb.ts);
            w.len(hb.inputs.len());
            for a in &hb.inputs {
                match a {
                    Some(a) => {
                        w.u8(1);
                        w.batch(
                            &RecordBatch::try_from_iter([("v", a.clone())]).ctx("checkpoint")?,
                        )?;
                    }
                    None => w.u8(0),
                }
            }
            Ok(())
        })?;
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader::new(state, "a window");
        self.core.restore(&mut r)?;
        self.done_before = r.i64()?;
        self.held = HeldRecords::restore(&mut r, |r| {
            let ts = r.i64s()?.into();
            let inputs = (0..r.len()?)
                .map(|_| {
                    Ok(match r.u8()? {
                        0 => None,
                        _ => Some(r.batch()?.column(0).clone()),
                    })
                })
                .collect::<Result<_>>()?;
            Ok(HeldBatch { inputs, ts })
        })?;
        r.done()
    }

    fn metrics(&self) -> OpMetrics {
        self.core.metrics(self.held.len())
    }
}
