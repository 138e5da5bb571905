//! The output of a parallel run in event-time order: each worker emits its part of an output in
//! event-time order (as a single-threaded run emits all of it), and the run loop releases the
//! workers' outputs merged by time, each row once every worker's output watermark has passed it.
//!
//! Rows are released by (time, worker, arrival): equal times from different workers come in
//! worker order, one worker's rows in the order it emitted them. When every worker's rows do come
//! in time order (the rule), the release is a k-way merge of the workers' sequences, and what is
//! not yet released stays as zero-copy slices; should a worker's rows ever not be in time order,
//! the same order is had by sorting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use arrow_array::{Array, RecordBatch};
use arrow_buffer::ScalarBuffer;

use crate::error::{ArrowContext, Result};
use crate::sink::Sink;

pub(crate) struct Ordered {
    column: String,
    /// The column turned out not to be a usable time: stop ordering.
    unusable: bool,
    /// Per worker: its output watermark.
    pub(crate) wm: Vec<i64>,
    /// (worker, batch, its rows' times), in arrival order.
    held: Vec<(usize, RecordBatch, ScalarBuffer<i64>)>,
    /// Per worker: the time of the last row it sent, while its rows have come in time order.
    last: Vec<i64>,
    /// Every worker's rows so far came in time order (the merge applies).
    in_order: bool,
}

impl Ordered {
    pub(crate) fn new(column: String, workers: usize) -> Ordered {
        Ordered {
            column,
            unusable: false,
            wm: vec![i64::MIN; workers],
            held: Vec::new(),
            last: vec![i64::MIN; workers],
            in_order: true,
        }
    }

    /// Hold worker `w`'s output `b` until its turn. An output whose time column is not usable
    /// after all (missing, null, not a time) is written as it comes, with what was held:
    /// ordering is a courtesy, never a reason to fail a run.
    pub(crate) fn hold(&mut self, w: usize, b: RecordBatch, sink: &mut dyn Sink) -> Result<()> {
        let times = b
            .column_by_name(&self.column)
            .filter(|c| c.null_count() == 0)
            .and_then(|_| crate::keys::event_times(&b, &self.column).ok());
        match times {
            Some(ts) if !self.unusable => {
                if self.in_order {
                    let mut prev = self.last[w];
                    for &t in ts.iter() {
                        if t < prev {
                            self.in_order = false;
                            break;
                        }
                        prev = t;
                    }
                    self.last[w] = prev;
                }
                if !ts.is_empty() {
                    self.held.push((w, b, ts));
                }
            }
            _ => {
                self.unusable = true;
                for (_, held, _) in std::mem::take(&mut self.held) {
                    sink.write(held)?;
                }
                sink.write(b)?;
            }
        }
        Ok(())
    }

    /// Write what every worker's watermark has passed (`all`: everything), by event time (ties:
    /// by worker, then in the order the worker emitted them); keep the rest.
    pub(crate) fn release(&mut self, sink: &mut dyn Sink, all: bool) -> Result<()> {
        let bound = if all {
            i64::MAX
        } else {
            self.wm.iter().copied().min().unwrap_or(i64::MIN)
        };
        if self.held.is_empty() || bound == i64::MIN {
            return Ok(());
        }
        let released = if self.in_order {
            self.release_merged(bound, all)?
        } else {
            self.release_sorted(bound, all)?
        };
        if let Some(out) = released {
            sink.write(out)?;
        }
        Ok(())
    }

    /// Every worker's rows are in time order: the rows before `bound` are a prefix of each
    /// worker's sequence; merge those prefixes, keep the rest as slices.
    fn release_merged(&mut self, bound: i64, all: bool) -> Result<Option<RecordBatch>> {
        let n = self.wm.len();
        // Per worker, its (held index, first row, end row) runs to release, in its order.
        let mut runs: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); n];
        let mut keep = Vec::new();
        let mut total = 0;
        for (k, (w, b, ts)) in self.held.iter().enumerate() {
            let p = if all {
                ts.len()
            } else {
                ts.partition_point(|&t| t < bound)
            };
            if p > 0 {
                runs[*w].push((k, 0, p));
                total += p;
            }
            if p < ts.len() {
                keep.push((*w, b.slice(p, ts.len() - p), ts.slice(p, ts.len() - p)));
            }
        }
        if total == 0 {
            return Ok(None);
        }
        let mut idx: Vec<(usize, usize)> = Vec::with_capacity(total);
        // Cursor per worker: (position in its runs, row).
        let mut cur: Vec<(usize, usize)> = runs
            .iter()
            .map(|r| (0, r.first().map_or(0, |x| x.1)))
            .collect();
        let time = |w: usize, c: (usize, usize)| -> Option<i64> {
            runs[w].get(c.0).map(|&(k, _, _)| self.held[k].2[c.1])
        };
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = (0..n)
            .filter_map(|w| time(w, cur[w]).map(|t| Reverse((t, w))))
            .collect();
        while let Some(Reverse((_, w))) = heap.pop() {
            // Take worker w's rows while they come before every other worker's next row.
            let next = heap.peek().map(|r| r.0);
            loop {
                let (ri, row) = cur[w];
                let (k, _, end) = runs[w][ri];
                idx.push((k, row));
                cur[w] = if row + 1 < end {
                    (ri, row + 1)
                } else {
                    (ri + 1, runs[w].get(ri + 1).map_or(0, |x| x.1))
                };
                match time(w, cur[w]) {
                    None => break,
                    Some(t) => {
                        if next.is_some_and(|o| (t, w) > o) {
                            heap.push(Reverse((t, w)));
                            break;
                        }
                    }
                }
            }
        }
        let batches: Vec<&RecordBatch> = self.held.iter().map(|(_, b, _)| b).collect();
        let out = arrow_select::interleave::interleave_record_batch(&batches, &idx)
            .ctx("ordering output")?;
        self.held = keep;
        Ok(Some(out))
    }

    /// The general case: sort the rows before `bound` by (time, worker, batch, row).
    fn release_sorted(&mut self, bound: i64, all: bool) -> Result<Option<RecordBatch>> {
        let mut rows: Vec<(i64, usize, usize, usize)> = Vec::new();
        let mut keep = Vec::new();
        for (k, (w, b, ts)) in self.held.iter().enumerate() {
            let mut kept = Vec::new();
            for (i, &t) in ts.iter().enumerate() {
                if all || t < bound {
                    rows.push((t, *w, k, i));
                } else {
                    kept.push(i as u32);
                }
            }
            if !kept.is_empty() {
                let kept_ts: ScalarBuffer<i64> = kept.iter().map(|&i| ts[i as usize]).collect();
                let idx = arrow_array::UInt32Array::from(kept);
                let rest = arrow_select::take::take_record_batch(b, &idx).ctx("ordering output")?;
                keep.push((*w, rest, kept_ts));
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_unstable();
        let batches: Vec<&RecordBatch> = self.held.iter().map(|(_, b, _)| b).collect();
        let idx: Vec<(usize, usize)> = rows.iter().map(|&(_, _, k, i)| (k, i)).collect();
        let out = arrow_select::interleave::interleave_record_batch(&batches, &idx)
            .ctx("ordering output")?;
        self.held = keep;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::CollectSink;
    use arrow_array::{Int64Array, UInt32Array};
    use std::sync::Arc;

    /// A batch of (t, tag) rows.
    fn batch(ts: &[i64], tags: &[u32]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "t",
                Arc::new(Int64Array::from(ts.to_vec())) as arrow_array::ArrayRef,
            ),
            (
                "tag",
                Arc::new(UInt32Array::from(tags.to_vec())) as arrow_array::ArrayRef,
            ),
        ])
        .expect("batch")
    }

    fn rows(sink: &CollectSink) -> Vec<(i64, u32)> {
        use arrow_array::cast::AsArray;
        let mut out = Vec::new();
        for b in &sink.batches {
            let t = b.column(0).as_primitive::<arrow_array::types::Int64Type>();
            let g = b.column(1).as_primitive::<arrow_array::types::UInt32Type>();
            out.extend(t.values().iter().copied().zip(g.values().iter().copied()));
        }
        out
    }

    /// A small deterministic generator (no rand dependency in this crate's unit tests).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, m: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % m
        }
    }

    /// Random workers' outputs (sorted per worker, or not), random batching and watermark
    /// steps: what is released, and in which order, is the reference (time, worker, arrival)
    /// sort of every row, and each row comes out once, after every watermark passed it.
    #[test]
    fn release_is_the_time_worker_arrival_order_with_and_without_the_merge() {
        for seed in 0..300u64 {
            let mut r = Lcg(seed + 1);
            let n = 1 + r.next(4) as usize;
            let sorted = seed % 3 != 0;
            // Per worker: its rows (t, tag) in emit order; tag = worker * 10000 + sequence.
            let mut seqs: Vec<Vec<(i64, u32)>> = Vec::new();
            for w in 0..n {
                let len = r.next(40) as usize;
                let mut ts: Vec<i64> = (0..len).map(|_| r.next(30) as i64).collect();
                if sorted {
                    ts.sort();
                }
                seqs.push(
                    ts.into_iter()
                        .enumerate()
                        .map(|(i, t)| (t, (w * 10000 + i) as u32))
                        .collect(),
                );
            }
            let mut o = Ordered::new("t".into(), n);
            let mut sink = CollectSink::default();
            let mut pos = vec![0usize; n];
            let mut wm_of = vec![i64::MIN; n];
            // Interleave: a worker sends a batch of its next rows, then says its watermark (a
            // time at or below its next row's, when its rows are in order).
            loop {
                let live: Vec<usize> = (0..n).filter(|&w| pos[w] < seqs[w].len()).collect();
                if live.is_empty() {
                    break;
                }
                let w = live[r.next(live.len() as u64) as usize];
                let take = 1 + r.next(6) as usize;
                let end = (pos[w] + take).min(seqs[w].len());
                let part = &seqs[w][pos[w]..end];
                let ts: Vec<i64> = part.iter().map(|x| x.0).collect();
                let tags: Vec<u32> = part.iter().map(|x| x.1).collect();
                o.hold(w, batch(&ts, &tags), &mut sink).expect("hold");
                pos[w] = end;
                if sorted {
                    let next = seqs[w].get(end).map_or(i64::MAX - 1, |x| x.0);
                    wm_of[w] = next;
                    o.wm[w] = next;
                    let before = sink.batches.len();
                    o.release(&mut sink, false).expect("release");
                    // Whatever came out now is below every worker's watermark.
                    let min = *wm_of.iter().min().expect("workers");
                    for b in &sink.batches[before..] {
                        let got = rows(&CollectSink {
                            batches: vec![b.clone()],
                        });
                        assert!(
                            got.iter().all(|x| x.0 < min),
                            "seed {seed}: released too early"
                        );
                    }
                }
            }
            o.release(&mut sink, true).expect("release all");
            let mut want: Vec<(i64, usize, usize, u32)> = Vec::new();
            for (w, s) in seqs.iter().enumerate() {
                for (i, &(t, tag)) in s.iter().enumerate() {
                    want.push((t, w, i, tag));
                }
            }
            want.sort();
            let got = rows(&sink);
            assert_eq!(got.len(), want.len(), "seed {seed}: every row once");
            // Released in steps or at once, the rows come in the (time, worker, arrival) order.
            let want: Vec<(i64, u32)> = want.iter().map(|x| (x.0, x.3)).collect();
            assert_eq!(got, want, "seed {seed}");
            if sorted {
                assert!(o.in_order, "seed {seed}: the merge was used");
            }
        }
    }
}
