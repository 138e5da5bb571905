//! `stateful_map`: records are held per key until the watermark passes them, then handed to a
//! function (a Python one, through [`BatchUdf`]) as one batch ordered by key and, within a key,
//! by (event time, arrival). The function keeps its own state per key and returns the output
//! rows. So the state a key's function sees never depends on arrival order.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::{ArrowContext, Result, StreamError};
use crate::errors::ErrorHandler;
use crate::held::{Held, HeldRecords};
use crate::keys::{event_times, FastMap, KeyInterner};
use crate::operator::{BatchUdf, OpMetrics, Operator};
use crate::watermark::Judge;

pub struct StatefulMap {
    udf: Arc<dyn BatchUdf>,
    on_error: Arc<ErrorHandler>,
    /// The log topics the records come from (for dead letters).
    pub origins: Vec<Arc<riverbed_log::Topic>>,
    /// The operator's name in metrics (for dead letters).
    pub label: String,
    ts_col: String,
    keys: KeyInterner,
    held: HeldRecords<RecordBatch>,
    wm: i64,
    late: Vec<RecordBatch>,
    m: OpMetrics,
}

impl StatefulMap {
    pub fn new(
        input: &SchemaRef,
        ts_col: &str,
        by: &[String],
        udf: Arc<dyn BatchUdf>,
        on_error: Arc<ErrorHandler>,
        op: &str,
    ) -> Result<StatefulMap> {
        Ok(StatefulMap {
            udf,
            on_error,
            origins: Vec::new(),
            label: op.to_string(),
            ts_col: ts_col.to_string(),
            keys: KeyInterner::new(input, by, op)?,
            held: HeldRecords::default(),
            wm: i64::MIN,
            late: Vec::new(),
            m: OpMetrics::default(),
        })
    }
}

impl Operator for StatefulMap {
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
        self.m.records_in += batch.num_rows() as u64;
        let ts = event_times(&batch, &self.ts_col)?;
        let kids = self.keys.ids(&batch)?;
        let judge = Judge::new(self.wm, stream);
        let late = self
            .held
            .hold(&kids, &ts, |i, t| t < judge.at(i), batch.clone());
        crate::operator::keep_late(&batch, late, &mut self.m, &mut self.late)
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Never back: a restored operator keeps the watermark it had reached.
        let wm = crate::watermark::never_back(self.wm, wm);
        self.wm = wm;
        let mut ready: Vec<(u32, Held)> = self
            .held
            .drain_sorted(|_, list, _| Ok(list.partition_point(|h| h.ts < wm)))?;
        if ready.is_empty() {
            return Ok(());
        }
        // Keys in the order of their first ready record's time, each key's records together.
        let mut first: FastMap<u32, (i64, u64)> = FastMap::default();
        for (k, h) in &ready {
            let e = first.entry(*k).or_insert((h.ts, h.seq));
            *e = (*e).min((h.ts, h.seq));
        }
        ready.sort_by(|a, b| {
            (first[&a.0], self.keys.bytes(a.0), a.1.ts, a.1.seq).cmp(&(
                first[&b.0],
                self.keys.bytes(b.0),
                b.1.ts,
                b.1.seq,
            ))
        });
        let mut refs: Vec<&RecordBatch> = Vec::new();
        let slot = self
            .held
            .payload_slots(ready.iter().map(|(_, h)| h.batch), &mut refs);
        let idx: Vec<(usize, usize)> = ready
            .iter()
            .map(|(_, h)| (slot[&h.batch], h.row as usize))
            .collect();
        let batch =
            arrow_select::interleave::interleave_record_batch(&refs, &idx).ctx("stateful_map")?;
        self.held.release(ready.iter().map(|(_, h)| h));
        // Under `raise`, one call for all keys; otherwise one call per key, so a key the function
        // fails on has its records handled as bad and no other key's state is touched twice.
        let outs = if self.on_error.raises() {
            vec![self.udf.call(batch)?]
        } else {
            {
                let mut outs = Vec::new();
                let mut start = 0;
                while start < ready.len() {
                    let k = ready[start].0;
                    let end = start + ready[start..].iter().take_while(|r| r.0 == k).count();
                    match self.udf.call(batch.slice(start, end - start)) {
                        Ok(b) => outs.push(b),
                        Err(e) if e.is_fatal() => return Err(e),
                        Err(e) => {
                            let (name, message) = (self.udf.name(), e.udf_message());
                            let op = format!("{} ({name})", self.label);
                            for row in start..end {
                                let origin = crate::errors::origin_of(&batch, &self.origins);
                                let bad = crate::errors::bad_row(&batch, row, origin);
                                let error = StreamError::Udf {
                                    name: name.clone(),
                                    message: message.clone(),
                                };
                                self.on_error.handle(bad, &op, error)?;
                                self.m.errors += 1;
                            }
                        }
                    }
                    start = end;
                }
                outs
            }
        };
        for b in outs {
            self.m.records_out += b.num_rows() as u64;
            if b.num_rows() > 0 {
                out.push(b);
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = crate::state::StateWriter::default();
        self.keys.snapshot(&mut w);
        w.i64(self.wm);
        self.held.snapshot(&mut w, |b, w| w.batch(b))?;
        w.bytes(&self.udf.snapshot()?);
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = crate::state::StateReader::new(state, "a stateful_map");
        self.keys.restore(&mut r)?;
        self.wm = r.i64()?;
        self.held = HeldRecords::restore(&mut r, |r| r.batch())?;
        self.udf.restore(r.bytes()?)?;
        r.done()
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        self.held.hold_back(wm)
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn metrics(&self) -> OpMetrics {
        let mut m = self.m.clone();
        m.watermark = (self.wm != i64::MIN).then_some(self.wm);
        m.state_entries = self.held.len() as u64 + self.keys.len() as u64;
        m
    }
}
