//! Per-key time-series operators (`lag`, `diff`, `pct_change`, `cum_sum`,
//! `time_since_previous`): records are held until the watermark passes them and then processed
//! per key in event-time order, so results never depend on arrival order. Each record comes out
//! once, with its columns and the new ones; output is ordered by event time, then key.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{ArrowContext, Result, StreamError};
use crate::held::{Held, HeldRecords};
use crate::keys::{event_times, KeyInterner};
use crate::operator::{OpMetrics, Operator};
use crate::rolling::RollingWindow;
use crate::state::{StateReader, StateWriter};
use crate::watermark::Judge;

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
    /// records. Nulls are skipped; an aggregate needs `min_periods` non-null values (std/var
    /// at least two), by default `rows` for a row window and one for a time window, as pandas.
    Rolling {
        col: String,
        func: crate::expr::AggFunc,
        #[serde(default)]
        period_ms: Option<i64>,
        #[serde(default)]
        rows: Option<usize>,
        /// Left out of the plan's serialisation when unset, so the checkpoint signature of a
        /// rolling op of an older plan stays the same.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_periods: Option<usize>,
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
            return Err(StreamError::Checkpoint("the series ops changed".into()));
        }
        for h in &mut self.history {
            let k = r.len()?;
            *h = (0..k).map(|_| r.opt_f64()).collect::<Result<_>>()?;
        }
        self.sums = r.f64s()?;
        self.last_ts = r.opt_i64()?;
        if r.len()? != self.windows.len() {
            return Err(StreamError::Checkpoint(
                "the rolling windows changed".into(),
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

/// The null buffer of a column whose row `o` is `valid[order[o]]` (none when all are valid).
fn nulls(order: &[u32], valid: &[bool]) -> Option<arrow_buffer::NullBuffer> {
    let bits = arrow_buffer::BooleanBuffer::collect_bool(order.len(), |o| valid[order[o] as usize]);
    Some(arrow_buffer::NullBuffer::new(bits)).filter(|n| n.null_count() > 0)
}

/// Steps with fewer records than this run on the operator's thread.
const PARALLEL_MIN: usize = 16_384;

/// One watermark step's records in `ready` order (grouped by key, each key's in (ts, arrival)
/// order): each op's value and whether it is non-null, and the time since the key's previous
/// record.
#[derive(Default)]
struct StepOut {
    values: Vec<Vec<f64>>,
    valid: Vec<Vec<bool>>,
    gaps: Vec<i64>,
    gap_valid: Vec<bool>,
}

impl StepOut {
    fn reset(&mut self, n_ops: usize, n: usize) {
        self.values.resize_with(n_ops, Vec::new);
        self.valid.resize_with(n_ops, Vec::new);
        for v in &mut self.values {
            v.clear();
            v.resize(n, 0.0);
        }
        for v in &mut self.valid {
            v.clear();
            v.resize(n, false);
        }
        self.gaps.clear();
        self.gaps.resize(n, 0);
        self.gap_valid.clear();
        self.gap_valid.resize(n, false);
    }

    /// Consecutive parts of `lens` rows each, one per thread.
    fn parts(&mut self, lens: &[usize]) -> Vec<OutPart<'_>> {
        let mut values: Vec<_> = self
            .values
            .iter_mut()
            .map(|c| split_parts(c, lens).into_iter())
            .collect();
        let mut valid: Vec<_> = self
            .valid
            .iter_mut()
            .map(|c| split_parts(c, lens).into_iter())
            .collect();
        split_parts(&mut self.gaps, lens)
            .into_iter()
            .zip(split_parts(&mut self.gap_valid, lens))
            .map(|(gaps, gap_valid)| OutPart {
                values: values.iter_mut().filter_map(Iterator::next).collect(),
                valid: valid.iter_mut().filter_map(Iterator::next).collect(),
                gaps,
                gap_valid,
            })
            .collect()
    }
}

/// A thread's part of a `StepOut`: the rows of its key runs.
struct OutPart<'a> {
    values: Vec<&'a mut [f64]>,
    valid: Vec<&'a mut [bool]>,
    gaps: &'a mut [i64],
    gap_valid: &'a mut [bool],
}

/// Split `s` into consecutive parts of the given lengths.
fn split_parts<'a, T>(mut s: &'a mut [T], lens: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(lens.len());
    for &n in lens {
        let (a, b) = std::mem::take(&mut s).split_at_mut(n);
        out.push(a);
        s = b;
    }
    out
}

/// Buffers kept from one watermark step to the next (a fresh allocation per step costs more in
/// page faults than the work).
#[derive(Default)]
struct Scratch {
    ready: Vec<(u32, Held)>,
    items: Vec<(i64, u32, u64)>,
    /// Per ready record: (payload slot, row); `at_out`: the same in output order.
    at: Vec<(usize, usize)>,
    at_out: Vec<(usize, usize)>,
    /// The states of the step's keys while it runs.
    taken: Vec<KeyState>,
    inputs: Vec<Vec<Option<f64>>>,
    /// (key, first, end) of each key's run of records in `ready`.
    runs: Vec<(u32, usize, usize)>,
    out: StepOut,
    order: crate::held::OrderScratch,
}

/// One watermark step's records (grouped by key) and their inputs, shared by the threads that
/// advance the per-key states.
struct Step<'a> {
    ops: &'a [SeriesOp],
    slots: &'a [(usize, Option<i64>, Option<usize>, RollingWindow)],
    ready: &'a [(u32, Held)],
    /// Per distinct input column, its value per record; `input_of[op]` picks an op's.
    inputs: &'a [Vec<Option<f64>>],
    input_of: &'a [Option<usize>],
    /// Per op: 1 / half-life in ms (time-aware EWM), else 0.
    inv_half_life: &'a [f64],
    /// Per rolling window slot: the ops reading it (op, aggregate, values needed).
    readers: &'a [Vec<(usize, crate::expr::AggFunc, usize)>],
}

impl Step<'_> {
    /// Advance the states of the keys of `runs` (`states[i]` is `runs[i]`'s key's) over their
    /// records; `out` holds the rows from `base` on. Within a key's run each op (each rolling
    /// window with the ops reading it) goes over the records in a loop of its own.
    fn run(
        &self,
        runs: &[(u32, usize, usize)],
        states: &mut [KeyState],
        base: usize,
        out: &mut OutPart<'_>,
    ) {
        let input = |j: usize| -> &[Option<f64>] {
            self.input_of[j].map_or(&[], |s| self.inputs[s].as_slice())
        };
        for (&(_, first, end), state) in runs.iter().zip(states) {
            let recs = &self.ready[first..end];
            let o = first - base;
            for (s, (reads, period, rows, _)) in self.slots.iter().enumerate() {
                let xs = &input(*reads)[first..end];
                let w = &mut state.windows[s];
                for (i, (&(_, h), &x)) in recs.iter().zip(xs).enumerate() {
                    w.advance(h.ts, x, *period, *rows);
                    for &(j, func, need) in &self.readers[s] {
                        if let Some(v) = w.value(func, need) {
                            out.values[j][o + i] = v;
                            out.valid[j][o + i] = true;
                        }
                    }
                }
            }
            for (j, op) in self.ops.iter().enumerate() {
                let xs = input(j);
                let xs = if xs.is_empty() { xs } else { &xs[first..end] };
                let (values, valid) = (&mut out.values[j][o..], &mut out.valid[j][o..]);
                let mut put = |i: usize, v: Option<f64>| {
                    if let Some(v) = v {
                        values[i] = v;
                        valid[i] = true;
                    }
                };
                match op {
                    SeriesOp::Lag { n, .. }
                    | SeriesOp::Diff { n, .. }
                    | SeriesOp::PctChange { n, .. } => {
                        let hist = &mut state.history[j];
                        for (i, &x) in xs.iter().enumerate() {
                            let prev = if hist.len() == *n {
                                hist.front().copied().flatten()
                            } else {
                                None
                            };
                            hist.push_back(x);
                            if hist.len() > *n {
                                hist.pop_front();
                            }
                            put(
                                i,
                                match op {
                                    SeriesOp::Lag { .. } => prev,
                                    SeriesOp::Diff { .. } => x.zip(prev).map(|(x, p)| x - p),
                                    _ => x.zip(prev).map(|(x, p)| x / p - 1.0),
                                },
                            );
                        }
                    }
                    SeriesOp::CumSum { .. } => {
                        for (i, &x) in xs.iter().enumerate() {
                            put(
                                i,
                                x.map(|x| {
                                    state.sums[j] += x;
                                    state.sums[j]
                                }),
                            );
                        }
                    }
                    SeriesOp::EwmMean { alpha, .. } => {
                        let (num, den, last) = &mut state.ewm[j];
                        let inv = self.inv_half_life[j];
                        for (i, (&(_, h), &x)) in recs.iter().zip(xs).enumerate() {
                            let decay = match (*last, alpha) {
                                (None, _) => 1.0,
                                // 0.5 ** (dt / half_life)
                                (Some(l), None) => (-((h.ts - l) as f64) * inv).exp2(),
                                (Some(_), Some(a)) => 1.0 - a,
                            };
                            *num *= decay;
                            *den *= decay;
                            if let Some(x) = x {
                                *num += x;
                                *den += 1.0;
                            }
                            *last = Some(h.ts);
                            put(i, (*den > 0.0).then(|| *num / *den));
                        }
                    }
                    SeriesOp::Rolling { .. } | SeriesOp::TimeSincePrevious { .. } => {}
                }
            }
            let (gaps, gap_valid) = (&mut out.gaps[o..], &mut out.gap_valid[o..]);
            for (i, &(_, h)) in recs.iter().enumerate() {
                if let Some(p) = state.last_ts {
                    gaps[i] = h.ts - p;
                    gap_valid[i] = true;
                }
                state.last_ts = Some(h.ts);
            }
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
    slots: Vec<(usize, Option<i64>, Option<usize>, RollingWindow)>,
    /// Per key id: the key's state.
    states: Vec<KeyState>,
    /// Threads a large step's keys are spread over.
    threads: usize,
    /// Per op: 1 / half-life in ms (time-aware EWM), else 0.
    inv_half_life: Vec<f64>,
    /// Per rolling window slot: the ops reading it (op, aggregate, values needed).
    readers: Vec<Vec<(usize, crate::expr::AggFunc, usize)>>,
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
                SeriesOp::Rolling {
                    period_ms,
                    rows,
                    min_periods,
                    ..
                } => {
                    match (period_ms, rows) {
                        (Some(p), None) if *p > 0 => {}
                        (None, Some(r)) if *r > 0 => {}
                        _ => {
                            return Err(StreamError::plan(
                                op,
                                format!("'{}': give exactly one of a positive period or a positive number of rows", o.alias()),
                            ))
                        }
                    }
                    match (min_periods, rows) {
                        (Some(0), _) => {
                            return Err(StreamError::plan(
                                op,
                                format!("'{}': min_periods must be at least 1", o.alias()),
                            ))
                        }
                        (Some(m), Some(r)) if m > r => {
                            return Err(StreamError::plan(
                                op,
                                format!(
                                    "'{}': min_periods ({m}) must not exceed rows ({r})",
                                    o.alias()
                                ),
                            ))
                        }
                        _ => {}
                    }
                }
                SeriesOp::EwmMean {
                    half_life_ms,
                    alpha,
                    ..
                } => match (half_life_ms, alpha) {
                    (Some(h), None) if *h > 0.0 => {}
                    (None, Some(a)) if *a > 0.0 && *a <= 1.0 => {}
                    _ => {
                        return Err(StreamError::plan(
                            op,
                            format!(
                            "'{}': give exactly one of a positive half_life or an alpha in (0, 1]",
                            o.alias()
                        ),
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
        let inv_half_life = ops
            .iter()
            .map(|o| match o {
                SeriesOp::EwmMean {
                    half_life_ms: Some(h),
                    ..
                } => 1.0 / h,
                _ => 0.0,
            })
            .collect();
        let readers = (0..slots.len())
            .map(|s| {
                ops.iter()
                    .enumerate()
                    .filter(|&(j, _)| window_of[j] == s)
                    .filter_map(|(j, op)| match op {
                        SeriesOp::Rolling {
                            func,
                            rows,
                            min_periods,
                            ..
                        } => Some((j, *func, min_periods.or(*rows).unwrap_or(1))),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Ok(SeriesOperator {
            readers,
            inv_half_life,
            input_of,
            scratch: Scratch::default(),
            slots,
            ops,
            ts_col: ts_col.to_string(),
            keys,
            schema: Arc::new(Schema::new(fields)),
            held: HeldRecords::default(),
            states: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
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
        // Ready records (the watermark passed them), grouped by key, each key's in (ts,
        // arrival) order: the order the states advance in.
        sc.ready.clear();
        self.held.drain_sorted_into(&mut sc.ready, |_, list, _| {
            Ok(list.partition_point(|h| h.ts < wm))
        })?;
        if sc.ready.is_empty() {
            return Ok(());
        }
        let n = sc.ready.len();
        // Where each record's data is (payload slot, row), and each input column's value per
        // record, gathered up front in tight loops before the per-key state updates.
        let mut payloads: Vec<&(RecordBatch, Vec<Option<Float64Array>>)> = Vec::new();
        let slot = self
            .held
            .payload_slots(sc.ready.iter().map(|(_, h)| h.batch), &mut payloads);
        sc.at.clear();
        sc.runs.clear();
        let mut last_batch = (u32::MAX, 0);
        for (i, &(k, h)) in sc.ready.iter().enumerate() {
            if h.batch != last_batch.0 {
                last_batch = (h.batch, slot[&h.batch]);
            }
            sc.at.push((last_batch.1, h.row as usize));
            match sc.runs.last_mut() {
                Some(r) if r.0 == k => r.2 = i + 1,
                _ => sc.runs.push((k, i, i + 1)),
            }
        }
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
        // The keys' runs are spread over threads in contiguous parts of about equal size; each
        // thread advances its keys' states and writes its rows of the output columns.
        let top = sc.runs.iter().map(|r| r.0 as usize + 1).max().unwrap_or(0);
        if self.states.len() < top {
            let fresh = self.fresh_state();
            self.states.resize(top, fresh);
        }
        let parts = if n < PARALLEL_MIN { 1 } else { self.threads };
        let mut cuts = vec![0usize]; // run indexes where parts start
        for (r, run) in sc.runs.iter().enumerate() {
            if run.1 >= n * cuts.len() / parts && cuts.len() < parts && r > 0 {
                cuts.push(r);
            }
        }
        cuts.push(sc.runs.len());
        let row_of = |r: usize| sc.runs.get(r).map_or(n, |run| run.1);
        let lens: Vec<usize> = cuts
            .windows(2)
            .map(|w| row_of(w[1]) - row_of(w[0]))
            .collect();
        sc.out.reset(n_ops, n);
        let mut taken = std::mem::take(&mut sc.taken);
        taken.clear();
        taken.extend(
            sc.runs
                .iter()
                .map(|r| std::mem::take(&mut self.states[r.0 as usize])),
        );
        {
            let step = Step {
                ops: &self.ops,
                slots: &self.slots,
                ready: &sc.ready,
                inputs: &sc.inputs,
                input_of: &self.input_of,
                inv_half_life: &self.inv_half_life,
                readers: &self.readers,
            };
            let states = split_parts(
                &mut taken,
                &cuts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
            );
            let work: Vec<_> = sc
                .out
                .parts(&lens)
                .into_iter()
                .zip(states)
                .enumerate()
                .map(|(p, (part, st))| (&sc.runs[cuts[p]..cuts[p + 1]], st, row_of(cuts[p]), part))
                .collect();
            if work.len() == 1 {
                for (runs, st, base, mut part) in work {
                    step.run(runs, st, base, &mut part);
                }
            } else {
                std::thread::scope(|scope| {
                    for (runs, st, base, mut part) in work {
                        let step = &step;
                        scope.spawn(move || step.run(runs, st, base, &mut part));
                    }
                });
            }
        }
        for (r, st) in sc.runs.iter().zip(taken.drain(..)) {
            self.states[r.0 as usize] = st;
        }
        sc.taken = taken;
        // The output order, (ts, key, arrival), keeps each key's records in (ts, arrival) order.
        sc.items.clear();
        sc.items
            .extend(sc.ready.iter().map(|&(k, h)| (h.ts, k, h.seq)));
        let keys = &self.keys;
        crate::held::time_key_order_runs(&sc.items, &sc.runs, |k| keys.bytes(k), &mut sc.order);
        let order = &sc.order.order;
        // Gather the original rows (across held batches) and the new columns in output order,
        // a large step in one batch per thread.
        let refs: Vec<&RecordBatch> = payloads.iter().map(|p| &p.0).collect();
        sc.at_out.clear();
        sc.at_out.extend(order.iter().map(|&i| sc.at[i as usize]));
        let build = |first: usize, rows: &[u32]| -> Result<RecordBatch> {
            let at = &sc.at_out[first..first + rows.len()];
            let base = arrow_select::interleave::interleave_record_batch(&refs, at)
                .ctx("series output")?;
            let mut cols: Vec<ArrayRef> = base.columns().to_vec();
            for (j, o) in self.ops.iter().enumerate() {
                let col: ArrayRef = match o {
                    SeriesOp::TimeSincePrevious { .. } => Arc::new(Int64Array::new(
                        rows.iter().map(|&i| sc.out.gaps[i as usize]).collect(),
                        nulls(rows, &sc.out.gap_valid),
                    )),
                    _ => Arc::new(Float64Array::new(
                        rows.iter().map(|&i| sc.out.values[j][i as usize]).collect(),
                        nulls(rows, &sc.out.valid[j]),
                    )),
                };
                cols.push(col);
            }
            RecordBatch::try_new(self.schema.clone(), cols).ctx("series output")
        };
        let chunk = if n < PARALLEL_MIN {
            n
        } else {
            n.div_ceil(self.threads)
        };
        let mut parts = order.chunks(chunk).enumerate();
        let first = parts.next().map_or(&[][..], |(_, rows)| rows);
        let batches: Vec<Result<RecordBatch>> = std::thread::scope(|scope| {
            let rest: Vec<_> = parts
                .map(|(p, rows)| scope.spawn(move || build(p * chunk, rows)))
                .collect();
            let mut all = vec![build(0, first)];
            all.extend(rest.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|p| Err(StreamError::panicked("a series thread", p)))
            }));
            all
        });
        for b in batches {
            let b = b?;
            self.m.records_out += b.num_rows() as u64;
            out.push(b);
        }
        self.held.release(sc.ready.iter().map(|(_, h)| h));
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
        self.m.records_in += n as u64;
        let ts = event_times(&batch, &self.ts_col)?;
        let kids = self.keys.ids(&batch)?;
        let inputs = series_inputs(&self.ops, &batch)?;
        // The watermark it meets already passed it: its key's later records may be processed.
        let judge = Judge::new(self.wm, stream);
        let late = self
            .held
            .hold(&kids, &ts, |i, t| t < judge.at(i), (batch.clone(), inputs));
        crate::operator::keep_late(&batch, late, &mut self.m, &mut self.late)
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Never back: a restored operator keeps the watermark it had reached.
        let wm = crate::watermark::never_back(self.wm, wm);
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
        // States by key id; a key with no record yet has none.
        w.len(self.states.len());
        for st in &self.states {
            if st.last_ts.is_some() {
                w.u8(1);
                st.snapshot(&mut w);
            } else {
                w.u8(0);
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
        let top = r.len()?;
        let fresh = self.fresh_state();
        self.states = vec![fresh; top];
        for st in &mut self.states {
            if r.u8()? == 1 {
                st.restore(&mut r)?;
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
        m.state_entries = self.held.len() as u64
            + self.states.iter().filter(|s| s.last_ts.is_some()).count() as u64;
        m
    }
}
