//! Per-key time-series operators (`lag`, `diff`, `pct_change`, `cum_sum`,
//! `time_since_previous`): records are held until the watermark passes them and then processed
//! per key in event-time order, so results never depend on arrival order. Each record comes out
//! once, with its columns and the new ones; output is ordered by event time, then key.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{ArrowContext, Result, StreamError};
use crate::held::{Held, HeldRecords};
use crate::keys::{event_times, KeyInterner};
use crate::operator::{OpMetrics, Operator};
use crate::rolling::RollingWindow;
use crate::state::{StateReader, StateWriter};

/// One per-key series computation and the column it adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SeriesOp {
    /// The value `n` records earlier (pandas `shift(n)`).
    Lag {
        col: String,
        n: usize,
        alias: String,
    },
    /// `x - lag(x, n)`.
    Diff {
        col: String,
        n: usize,
        alias: String,
    },
    /// `x / lag(x, n) - 1`.
    PctChange {
        col: String,
        n: usize,
        alias: String,
    },
    /// Running sum of the non-null values (nulls stay null).
    CumSum { col: String, alias: String },
    /// Milliseconds since the key's previous record (null for its first).
    TimeSincePrevious { alias: String },
    /// An aggregate of `col` over the key's trailing window ending at (and including) each
    /// record: the records within `period_ms` before it (`(t - period, t]`), or its last `rows`
    /// records. Nulls are skipped; a row window needs `rows` values, a time window one
    /// (std/var two), as pandas' default `min_periods`.
    Rolling {
        col: String,
        func: crate::expr::AggFunc,
        #[serde(default)]
        period_ms: Option<i64>,
        #[serde(default)]
        rows: Option<usize>,
        alias: String,
    },
    /// Exponentially weighted mean (pandas `ewm(...).mean()`, adjusted): weights decay by
    /// `0.5 ** (dt / half_life_ms)` over event time, or by `1 - alpha` per record.
    EwmMean {
        col: String,
        #[serde(default)]
        half_life_ms: Option<f64>,
        #[serde(default)]
        alpha: Option<f64>,
        alias: String,
    },
}

impl SeriesOp {
    fn alias(&self) -> &str {
        match self {
            SeriesOp::Lag { alias, .. }
            | SeriesOp::Diff { alias, .. }
            | SeriesOp::PctChange { alias, .. }
            | SeriesOp::CumSum { alias, .. }
            | SeriesOp::Rolling { alias, .. }
            | SeriesOp::EwmMean { alias, .. }
            | SeriesOp::TimeSincePrevious { alias } => alias,
        }
    }
    fn col(&self) -> Option<&str> {
        match self {
            SeriesOp::Lag { col, .. }
            | SeriesOp::Diff { col, .. }
            | SeriesOp::PctChange { col, .. }
            | SeriesOp::CumSum { col, .. }
            | SeriesOp::Rolling { col, .. }
            | SeriesOp::EwmMean { col, .. } => Some(col),
            SeriesOp::TimeSincePrevious { .. } => None,
        }
    }
    fn lag_n(&self) -> usize {
        match self {
            SeriesOp::Lag { n, .. } | SeriesOp::Diff { n, .. } | SeriesOp::PctChange { n, .. } => {
                *n
            }
            _ => 0,
        }
    }
    fn out_type(&self) -> DataType {
        match self {
            SeriesOp::TimeSincePrevious { .. } => DataType::Int64,
            _ => DataType::Float64,
        }
    }
}

/// Per key and op: the last `n` values (lag family), the running sum, or the previous time.
#[derive(Debug, Default, Clone)]
struct KeyState {
    history: Vec<VecDeque<Option<f64>>>,
    sums: Vec<f64>,
    last_ts: Option<i64>,
    /// Rolling ops: the trailing window.
    windows: Vec<RollingWindow>,
    /// EWM ops: weighted sum, sum of weights, time of the last record.
    ewm: Vec<(f64, f64, Option<i64>)>,
}

impl KeyState {
    fn snapshot(&self, w: &mut StateWriter) {
        w.len(self.history.len());
        for h in &self.history {
            w.len(h.len());
            for v in h {
                w.opt_f64(*v);
            }
        }
        w.f64s(&self.sums);
        w.opt_i64(self.last_ts);
        w.len(self.windows.len());
        for win in &self.windows {
            win.snapshot(w);
        }
        w.len(self.ewm.len());
        for (a, b, t) in &self.ewm {
            w.f64(*a);
            w.f64(*b);
            w.opt_i64(*t);
        }
    }

    /// Load a snapshot into a fresh state of the same ops.
    fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        let n = r.len()?;
        if n != self.history.len() {
            return Err(StreamError::Schema(
                "checkpoint: the series ops changed".into(),
            ));
        }
        for h in &mut self.history {
            let k = r.len()?;
            *h = (0..k).map(|_| r.opt_f64()).collect::<Result<_>>()?;
        }
        self.sums = r.f64s()?;
        self.last_ts = r.opt_i64()?;
        if r.len()? != self.windows.len() {
            return Err(StreamError::Schema(
                "checkpoint: the rolling windows changed".into(),
            ));
        }
        for win in &mut self.windows {
            win.restore(r)?;
        }
        let n = r.len()?;
        self.ewm = (0..n)
            .map(|_| Ok((r.f64()?, r.f64()?, r.opt_i64()?)))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// Each op's input column of `batch` as f64 (None for ops without one).
fn series_inputs(ops: &[SeriesOp], batch: &RecordBatch) -> Result<Vec<Option<Float64Array>>> {
    ops.iter()
        .map(|o| {
            o.col()
                .map(|c| {
                    let a = batch
                        .column_by_name(c)
                        .ok_or_else(|| StreamError::Schema(format!("column '{c}' is missing")))?;
                    let f = arrow_cast::cast(a, &DataType::Float64).ctx("series input")?;
                    Ok(f.as_primitive::<Float64Type>().clone())
                })
                .transpose()
        })
        .collect()
}

/// Steps with fewer records than this run their shards on the operator's thread.
const PARALLEL_MIN: usize = 16_384;

/// What a shard computed for its records of a step, in the step's order: each op's value and
/// the time since the key's previous record.
#[derive(Default)]
struct ShardOut {
    values: Vec<Vec<Option<f64>>>,
    gaps: Vec<Option<i64>>,
}

/// Buffers kept from one watermark step to the next (a fresh allocation per step costs more in
/// page faults than the work).
#[derive(Default)]
struct Scratch {
    ready: Vec<(u32, Held)>,
    sorted: Vec<(u32, Held)>,
    items: Vec<(i64, u32, u64)>,
    at: Vec<(usize, usize)>,
    inputs: Vec<Vec<Option<f64>>>,
    outs: Vec<ShardOut>,
}

/// One watermark step's records (in (ts, key, arrival) order) and their inputs, shared by the
/// shards that advance the per-key states.
struct Step<'a> {
    ops: &'a [SeriesOp],
    slots: &'a [(usize, Option<i64>, Option<usize>, RollingWindow)],
    window_of: &'a [usize],
    ready: &'a [(u32, Held)],
    /// Per distinct input column, its value per record; `input_of[op]` picks an op's.
    inputs: &'a [Vec<Option<f64>>],
    input_of: &'a [Option<usize>],
    shards: usize,
}

impl Step<'_> {
    /// Advance the states of shard `shard`'s keys (indexed by key id / shard count).
    fn run(&self, shard: usize, states: &mut Vec<KeyState>, out: &mut ShardOut) {
        let n_ops = self.ops.len();
        out.values.resize_with(n_ops, Vec::new);
        for v in &mut out.values {
            v.clear();
        }
        out.gaps.clear();
        for (i, &(k, h)) in self.ready.iter().enumerate() {
            let k = k as usize;
            if k % self.shards != shard {
                continue;
            }
            let local = k / self.shards;
            if local >= states.len() {
                states.resize_with(local + 1, || KeyState {
                    history: vec![VecDeque::new(); n_ops],
                    sums: vec![0.0; n_ops],
                    last_ts: None,
                    windows: self.slots.iter().map(|s| s.3.clone()).collect(),
                    ewm: vec![(0.0, 0.0, None); n_ops],
                });
            }
            let state = &mut states[local];
            let value =
                |j: usize| self.input_of[j].and_then(|s| self.inputs[s].get(i).copied().flatten());
            for (s, (first, period, rows, _)) in self.slots.iter().enumerate() {
                state.windows[s].advance(h.ts, value(*first), *period, *rows);
            }
            for (j, o) in self.ops.iter().enumerate() {
                let x = value(j);
                let v = match o {
                    SeriesOp::Lag { n, .. }
                    | SeriesOp::Diff { n, .. }
                    | SeriesOp::PctChange { n, .. } => {
                        let hist = &mut state.history[j];
                        let prev = if hist.len() == *n {
                            hist.front().copied().flatten()
                        } else {
                            None
                        };
                        hist.push_back(x);
                        if hist.len() > *n {
                            hist.pop_front();
                        }
                        match o {
                            SeriesOp::Lag { .. } => prev,
                            SeriesOp::Diff { .. } => x.zip(prev).map(|(x, p)| x - p),
                            _ => x.zip(prev).map(|(x, p)| x / p - 1.0),
                        }
                    }
                    SeriesOp::CumSum { .. } => x.map(|x| {
                        state.sums[j] += x;
                        state.sums[j]
                    }),
                    SeriesOp::TimeSincePrevious { .. } => None,
                    SeriesOp::Rolling { func, rows, .. } => {
                        state.windows[self.window_of[j]].value(*func, rows.unwrap_or(1))
                    }
                    SeriesOp::EwmMean {
                        half_life_ms,
                        alpha,
                        ..
                    } => {
                        let (num, den, last) = &mut state.ewm[j];
                        let decay = match (half_life_ms, alpha) {
                            (Some(hl), _) => {
                                last.map_or(1.0, |l| 0.5f64.powf((h.ts - l) as f64 / hl))
                            }
                            (None, Some(a)) if last.is_some() => 1.0 - a,
                            _ => 1.0,
                        };
                        *num *= decay;
                        *den *= decay;
                        if let Some(x) = x {
                            *num += x;
                            *den += 1.0;
                        }
                        *last = Some(h.ts);
                        (*den > 0.0).then(|| *num / *den)
                    }
                };
                out.values[j].push(v);
            }
            out.gaps.push(state.last_ts.map(|p| h.ts - p));
            state.last_ts = Some(h.ts);
        }
    }
}

pub struct SeriesOperator {
    ops: Vec<SeriesOp>,
    ts_col: String,
    keys: KeyInterner,
    schema: SchemaRef,
    /// Held records; each batch keeps its rows and each op's input column as f64.
    held: HeldRecords<(RecordBatch, Vec<Option<Float64Array>>)>,
    /// Rolling ops over the same column and window share one window: per op its window slot;
    /// per slot the op whose input it reads, its period and rows, and the window template.
    window_of: Vec<usize>,
    slots: Vec<(usize, Option<i64>, Option<usize>, RollingWindow)>,
    /// Per shard, per key id / shard count: the key's state.
    states: Vec<Vec<KeyState>>,
    /// Per op: which distinct input column it reads (ops on the same column share it).
    input_of: Vec<Option<usize>>,
    scratch: Scratch,
    wm: i64,
    late: Vec<RecordBatch>,
    m: OpMetrics,
}

impl SeriesOperator {
    pub fn new(
        input: &SchemaRef,
        ts_col: &str,
        by: &[String],
        ops: Vec<SeriesOp>,
        op: &str,
    ) -> Result<SeriesOperator> {
        if ops.is_empty() {
            return Err(StreamError::plan(op, "ops: nothing to compute"));
        }
        let keys = KeyInterner::new(input, by, op)?;
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for o in &ops {
            if let Some(c) = o.col() {
                let f = input.field_with_name(c).map_err(|_| {
                    let cols: Vec<&str> =
                        input.fields().iter().map(|f| f.name().as_str()).collect();
                    StreamError::plan(
                        op,
                        format!(
                            "'{}': unknown column '{c}'; the input has {cols:?}",
                            o.alias()
                        ),
                    )
                })?;
                let numeric = f.data_type().is_numeric()
                    || matches!(f.data_type(), DataType::Timestamp(_, _));
                if !numeric {
                    return Err(StreamError::plan(
                        op,
                        format!(
                            "'{}': column '{c}' is {}, not numeric",
                            o.alias(),
                            f.data_type()
                        ),
                    ));
                }
            }
            if o.lag_n() == 0
                && matches!(
                    o,
                    SeriesOp::Lag { .. } | SeriesOp::Diff { .. } | SeriesOp::PctChange { .. }
                )
            {
                return Err(StreamError::plan(
                    op,
                    format!("'{}': n must be positive", o.alias()),
                ));
            }
            match o {
                SeriesOp::Rolling { period_ms, rows, .. } => match (period_ms, rows) {
                    (Some(p), None) if *p > 0 => {}
                    (None, Some(r)) if *r > 0 => {}
                    _ => {
                        return Err(StreamError::plan(
                            op,
                            format!("'{}': give exactly one of a positive period or a positive number of rows", o.alias()),
                        ))
                    }
                },
                SeriesOp::EwmMean { half_life_ms, alpha, .. } => match (half_life_ms, alpha) {
                    (Some(h), None) if *h > 0.0 => {}
                    (None, Some(a)) if *a > 0.0 && *a <= 1.0 => {}
                    _ => {
                        return Err(StreamError::plan(
                            op,
                            format!("'{}': give exactly one of a positive half_life or an alpha in (0, 1]", o.alias()),
                        ))
                    }
                },
                _ => {}
            }
            if fields.iter().any(|f| f.name() == o.alias()) {
                return Err(StreamError::plan(
                    op,
                    format!("'{}': a column of that name exists already", o.alias()),
                ));
            }
            fields.push(Field::new(o.alias(), o.out_type(), true));
        }
        let mut window_of = vec![usize::MAX; ops.len()];
        let mut slots: Vec<(usize, Option<i64>, Option<usize>, RollingWindow)> = Vec::new();
        let mut slot_funcs: Vec<Vec<crate::expr::AggFunc>> = Vec::new();
        for (j, o) in ops.iter().enumerate() {
            if let SeriesOp::Rolling {
                col,
                func,
                period_ms,
                rows,
                ..
            } = o
            {
                let same = slots.iter().position(|(first, p, r, _)| {
                    ops[*first].col() == Some(col.as_str()) && p == period_ms && r == rows
                });
                let s = same.unwrap_or_else(|| {
                    slots.push((j, *period_ms, *rows, RollingWindow::default()));
                    slot_funcs.push(Vec::new());
                    slots.len() - 1
                });
                slot_funcs[s].push(*func);
                window_of[j] = s;
            }
        }
        for (slot, funcs) in slots.iter_mut().zip(&slot_funcs) {
            slot.3 = RollingWindow::for_funcs(funcs);
        }
        let mut cols: Vec<&str> = Vec::new();
        let input_of = ops
            .iter()
            .map(|o| {
                o.col().map(|c| match cols.iter().position(|x| *x == c) {
                    Some(i) => i,
                    None => {
                        cols.push(c);
                        cols.len() - 1
                    }
                })
            })
            .collect();
        Ok(SeriesOperator {
            input_of,
            scratch: Scratch::default(),
            window_of,
            slots,
            ops,
            ts_col: ts_col.to_string(),
            keys,
            schema: Arc::new(Schema::new(fields)),
            held: HeldRecords::default(),
            states: (0..std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
                .map(|_| Vec::new())
                .collect(),
            wm: i64::MIN,
            late: Vec::new(),
            m: OpMetrics::default(),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Process the records the watermark `wm` passed.
    fn step(&mut self, wm: i64, sc: &mut Scratch, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Ready records (the watermark passed them), per key in (ts, arrival) order.
        sc.ready.clear();
        self.held.drain_sorted_into(&mut sc.ready, |_, list, _| {
            Ok(list.partition_point(|h| h.ts < wm))
        })?;
        if sc.ready.is_empty() {
            return Ok(());
        }
        // The output order, (ts, key, arrival), keeps each key's records in (ts, arrival) order.
        sc.items.clear();
        sc.items
            .extend(sc.ready.iter().map(|&(k, h)| (h.ts, k, h.seq)));
        let keys = &self.keys;
        let order = crate::held::time_key_order(&sc.items, |k| keys.bytes(k));
        sc.sorted.clear();
        sc.sorted
            .extend(order.iter().map(|&i| sc.ready[i as usize]));
        let ready = &sc.sorted;
        // Where each held batch's data is, and each input column's value per record, gathered
        // up front in tight loops (independent loads) before the per-key state updates.
        let mut payloads: Vec<&(RecordBatch, Vec<Option<Float64Array>>)> = Vec::new();
        let slot = self
            .held
            .payload_slots(ready.iter().map(|(_, h)| h.batch), &mut payloads);
        sc.at.clear();
        sc.at
            .extend(ready.iter().map(|(_, h)| (slot[&h.batch], h.row as usize)));
        let n_ops = self.ops.len();
        let n_inputs = self.input_of.iter().flatten().max().map_or(0, |m| m + 1);
        sc.inputs.resize_with(n_inputs, Vec::new);
        for (j, slot_of) in self.input_of.iter().enumerate() {
            let Some(s) = *slot_of else { continue };
            if self.input_of[..j].contains(&Some(s)) {
                continue;
            }
            let col = &mut sc.inputs[s];
            col.clear();
            col.extend(sc.at.iter().map(|&(b, r)| {
                payloads[b].1[j]
                    .as_ref()
                    .and_then(|a| a.is_valid(r).then(|| a.value(r)))
            }));
        }
        // Keys are sharded over threads (key id modulo the shard count); each shard advances its
        // keys' states over the step's records in order, and the results are merged back.
        let shards = self.states.len();
        sc.outs.resize_with(shards, ShardOut::default);
        let step = Step {
            ops: &self.ops,
            slots: &self.slots,
            window_of: &self.window_of,
            ready,
            inputs: &sc.inputs,
            input_of: &self.input_of,
            shards,
        };
        if ready.len() < PARALLEL_MIN || shards == 1 {
            for (s, (st, o)) in self.states.iter_mut().zip(sc.outs.iter_mut()).enumerate() {
                step.run(s, st, o);
            }
        } else {
            std::thread::scope(|scope| {
                for (s, (st, o)) in self.states.iter_mut().zip(sc.outs.iter_mut()).enumerate() {
                    let step = &step;
                    scope.spawn(move || step.run(s, st, o));
                }
            });
        }
        let mut values: Vec<Float64Builder> = (0..n_ops)
            .map(|_| Float64Builder::with_capacity(ready.len()))
            .collect();
        let mut gaps = Int64Builder::with_capacity(ready.len());
        let mut cursor = vec![0usize; shards];
        for &(k, _) in ready {
            let s = k as usize % shards;
            let c = cursor[s];
            cursor[s] += 1;
            for (j, v) in values.iter_mut().enumerate() {
                v.append_option(sc.outs[s].values[j].get(c).copied().flatten());
            }
            gaps.append_option(sc.outs[s].gaps.get(c).copied().flatten());
        }
        // Gather the original rows (across held batches) in output order.
        let refs: Vec<&RecordBatch> = payloads.iter().map(|p| &p.0).collect();
        let base = arrow_select::interleave::interleave_record_batch(&refs, &sc.at)
            .ctx("series output")?;
        let mut cols: Vec<ArrayRef> = base.columns().to_vec();
        for (j, o) in self.ops.iter().enumerate() {
            let col: ArrayRef = match o {
                SeriesOp::TimeSincePrevious { .. } => Arc::new(gaps.finish()),
                _ => Arc::new(values[j].finish()),
            };
            cols.push(col);
        }
        let b = RecordBatch::try_new(self.schema.clone(), cols).ctx("series output")?;
        self.m.records_out += b.num_rows() as u64;
        out.push(b);
        self.held.release(sc.sorted.iter().map(|(_, h)| h));
        Ok(())
    }

    fn fresh_state(&self) -> KeyState {
        let n_ops = self.ops.len();
        KeyState {
            history: vec![VecDeque::new(); n_ops],
            sums: vec![0.0; n_ops],
            last_ts: None,
            windows: self.slots.iter().map(|s| s.3.clone()).collect(),
            ewm: vec![(0.0, 0.0, None); n_ops],
        }
    }
}

impl Operator for SeriesOperator {
    fn on_batch(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let n = batch.num_rows();
        self.m.records_in += n as u64;
        let ts = event_times(&batch, &self.ts_col)?;
        let kids = self.keys.ids(&batch)?;
        let inputs = series_inputs(&self.ops, &batch)?;
        // The watermark already passed it: its key's later records were processed.
        let wm = self.wm;
        let late = self
            .held
            .hold(&kids, &ts, |t| t < wm, (batch.clone(), inputs));
        crate::operator::keep_late(&batch, late, &mut self.m, &mut self.late)
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.wm = wm;
        let mut sc = std::mem::take(&mut self.scratch);
        let r = self.step(wm, &mut sc, out);
        self.scratch = sc;
        r
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        self.keys.snapshot(&mut w);
        w.i64(self.wm);
        self.held.snapshot(&mut w, |(b, _), w| w.batch(b))?;
        // States by key id (the shard layout depends on the machine's cores).
        let shards = self.states.len();
        let top = (0..shards)
            .map(|s| {
                let n = self.states[s].len();
                if n == 0 {
                    0
                } else {
                    (n - 1) * shards + s + 1
                }
            })
            .max()
            .unwrap_or(0);
        w.len(top);
        for k in 0..top {
            match self.states[k % shards].get(k / shards) {
                Some(st) => {
                    w.u8(1);
                    st.snapshot(&mut w);
                }
                None => w.u8(0),
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader::new(state, "a series operator");
        self.keys.restore(&mut r)?;
        self.wm = r.i64()?;
        let ops = self.ops.clone();
        self.held = HeldRecords::restore(&mut r, |r| {
            let b = r.batch()?;
            let inputs = series_inputs(&ops, &b)?;
            Ok((b, inputs))
        })?;
        let shards = self.states.len();
        for s in &mut self.states {
            s.clear();
        }
        let top = r.len()?;
        for k in 0..top {
            let present = r.u8()? == 1;
            let (shard, local) = (k % shards, k / shards);
            let fresh = self.fresh_state();
            let v = &mut self.states[shard];
            while v.len() <= local {
                v.push(fresh.clone());
            }
            if present {
                v[local].restore(&mut r)?;
            }
        }
        r.done()
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        // Held records come out later with their own times.
        self.held.hold_back(wm)
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn metrics(&self) -> OpMetrics {
        let mut m = self.m.clone();
        m.watermark = (self.wm != i64::MIN).then_some(self.wm);
        m.state_entries =
            self.held.len() as u64 + self.states.iter().map(Vec::len).sum::<usize>() as u64;
        m
    }
}
