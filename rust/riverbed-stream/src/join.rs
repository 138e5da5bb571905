//! Temporal joins of two streams by key.
//!
//! - `join_asof`: each left record with one right record of the same key — the latest at or
//!   before its time (`backward`, pandas' `merge_asof` default), the first at or after it
//!   (`forward`), or the nearer of the two (`nearest`, ties go backward) — optionally within a
//!   `tolerance`. The right record's time is its event time or another column that is never
//!   earlier than it (e.g. a window's `window_end`).
//! - `join_interval`: each left record with every right record of the same key whose time is in
//!   `[left time + lower, left time + upper]`; `how="left"` keeps unmatched left records.
//!
//! Left records are held until the left watermark has passed them and the right watermark has
//! passed every time that could still change their result; then each is emitted once, in
//! event-time order. So no right record from after a left record's time can reach a backward
//! as-of match (no leakage), and the output never depends on arrival order. Right records are
//! kept only while a future left record could match them.

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{ArrowContext, Result, StreamError};
use crate::held::{Held, HeldRecords};
use crate::keys::{event_times, KeyInterner};
use crate::operator::{OpMetrics, Operator};
use crate::watermark::Judge;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Backward,
    Forward,
    Nearest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    #[default]
    Inner,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinKind {
    Asof {
        #[serde(default)]
        direction: Direction,
        #[serde(default)]
        tolerance_ms: Option<i64>,
    },
    Interval {
        lower_ms: i64,
        upper_ms: i64,
        #[serde(default)]
        how: How,
    },
}

impl JoinKind {
    pub fn name(&self) -> &'static str {
        match self {
            JoinKind::Asof { .. } => "join_asof",
            JoinKind::Interval { .. } => "join_interval",
        }
    }
}

/// What a join is asked to do, as the plan says it.
pub struct JoinSpec<'a> {
    pub kind: JoinKind,
    /// The left event-time column (the output's event time).
    pub left_ts: &'a str,
    /// The right column holding each right record's time.
    pub right_ts: &'a str,
    pub left_by: &'a [String],
    pub right_by: &'a [String],
    /// Appended to right column names that clash with left ones.
    pub suffix: &'a str,
    /// The right columns to output; `None`: all but its key columns.
    pub right_columns: Option<&'a [String]>,
}

/// The right records a left record at `lt` matches (indices into its key's sorted right list),
/// or `None` while a right record yet to come could still change that. `rw`: right watermark
/// (right records before it can no longer arrive).
fn resolve(kind: JoinKind, lt: i64, r: &[Held], rw: i64) -> Option<std::ops::Range<usize>> {
    let end = rw == i64::MAX;
    match kind {
        JoinKind::Asof {
            direction,
            tolerance_ms,
        } => {
            let within = |d: i64| tolerance_ms.is_none_or(|t| d <= t);
            let tol_passed = tolerance_ms.is_some_and(|t| lt.saturating_add(t) < rw);
            let after = r.partition_point(|h| h.ts <= lt);
            let back = after.checked_sub(1);
            let fwd = r.partition_point(|h| h.ts < lt);
            let fwd = (fwd < r.len()).then_some(fwd);
            let pick = match direction {
                Direction::Backward => {
                    if lt >= rw {
                        return None;
                    }
                    back.filter(|&i| within(lt - r[i].ts))
                }
                Direction::Forward => {
                    let known = fwd.is_some_and(|i| r[i].ts < rw) || tol_passed || end;
                    if !known {
                        return None;
                    }
                    fwd.filter(|&i| within(r[i].ts - lt))
                }
                Direction::Nearest => {
                    // A right record still to come is at or after `rw`: farther than `rw - lt`.
                    let known = lt < rw
                        && (fwd.is_some_and(|i| r[i].ts < rw)
                            || back.is_some_and(|i| rw - lt >= lt - r[i].ts)
                            || tol_passed
                            || end);
                    if !known {
                        return None;
                    }
                    let best = match (back, fwd) {
                        (Some(b), Some(f)) => {
                            if r[f].ts - lt < lt - r[b].ts {
                                Some(f)
                            } else {
                                Some(b)
                            }
                        }
                        (b, f) => b.or(f),
                    };
                    best.filter(|&i| within((lt - r[i].ts).abs()))
                }
            };
            Some(pick.map_or(0..0, |i| i..i + 1))
        }
        JoinKind::Interval {
            lower_ms, upper_ms, ..
        } => {
            if !(end || lt.saturating_add(upper_ms) < rw) {
                return None;
            }
            let lo = r.partition_point(|h| h.ts < lt.saturating_add(lower_ms));
            let hi = r.partition_point(|h| h.ts <= lt.saturating_add(upper_ms));
            Some(lo..hi.max(lo))
        }
    }
}

pub struct TemporalJoin {
    kind: JoinKind,
    left_ts: String,
    right_ts: String,
    left_by: Vec<String>,
    /// Right key columns, and the left type each is cast to.
    right_by: Vec<(String, DataType)>,
    /// Right columns kept in the output (by name in the right input).
    right_keep: Vec<String>,
    keys: KeyInterner,
    schema: SchemaRef,
    left: HeldRecords<RecordBatch>,
    /// Right records by key; the payload is the batch of kept right columns.
    right: HeldRecords<RecordBatch>,
    /// One all-null row of the kept right columns (unmatched left records).
    null_right: RecordBatch,
    /// Watermarks of the left and right inputs.
    wms: [i64; 2],
    right_after_prune: usize,
    late: Vec<RecordBatch>,
    right_late: u64,
    m: OpMetrics,
}

fn unknown(op: &str, side: &str, field: &str, c: &str, s: &SchemaRef) -> StreamError {
    let cols: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
    StreamError::plan(
        op,
        format!("{field}: unknown column '{c}'; the {side} input has {cols:?}"),
    )
}

/// What kind of value a join key holds: keys of two kinds never match.
fn key_kind(t: &DataType) -> &'static str {
    match t {
        DataType::Dictionary(_, v) => key_kind(v),
        t if t.is_integer()
            || t.is_floating()
            || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            "number"
        }
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "text",
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "time",
        DataType::Boolean => "bool",
        _ => "other",
    }
}

impl TemporalJoin {
    pub fn new(
        left: &SchemaRef,
        right: &SchemaRef,
        spec: &JoinSpec<'_>,
        op: &str,
    ) -> Result<TemporalJoin> {
        if spec.left_by.len() != spec.right_by.len() {
            return Err(StreamError::plan(
                op,
                format!(
                    "by: {} left key column(s) {:?} but {} right {:?}",
                    spec.left_by.len(),
                    spec.left_by,
                    spec.right_by.len(),
                    spec.right_by
                ),
            ));
        }
        match spec.kind {
            JoinKind::Asof {
                tolerance_ms: Some(t),
                ..
            } if t < 0 => {
                return Err(StreamError::plan(
                    op,
                    format!("tolerance must not be negative, got {t} ms"),
                ))
            }
            JoinKind::Interval {
                lower_ms, upper_ms, ..
            } if lower_ms > upper_ms => {
                return Err(StreamError::plan(
                    op,
                    format!("lower ({lower_ms} ms) must not exceed upper ({upper_ms} ms)"),
                ))
            }
            _ => {}
        }
        let time_ok = |t: &DataType| matches!(t, DataType::Timestamp(_, _)) || t.is_integer();
        for (side, s, c) in [
            ("left", left, spec.left_ts),
            ("right", right, spec.right_ts),
        ] {
            let f = s
                .field_with_name(c)
                .map_err(|_| unknown(op, side, "on", c, s))?;
            if !time_ok(f.data_type()) {
                return Err(StreamError::plan(
                    op,
                    format!(
                        "on: the {side} time column '{c}' is {}; expected int64 milliseconds or a timestamp",
                        f.data_type()
                    ),
                ));
            }
        }
        let mut right_by = Vec::new();
        for (l, r) in spec.left_by.iter().zip(spec.right_by) {
            let lf = left
                .field_with_name(l)
                .map_err(|_| unknown(op, "left", "by", l, left))?;
            let rf = right
                .field_with_name(r)
                .map_err(|_| unknown(op, "right", "by", r, right))?;
            // Keys of one kind compare by value (int32 with int64, a string with a categorical
            // or a topic's binary key); a number never matches a string by its text.
            if lf.data_type() != rf.data_type()
                && (key_kind(lf.data_type()) != key_kind(rf.data_type())
                    || !arrow_cast::can_cast_types(rf.data_type(), lf.data_type()))
            {
                return Err(StreamError::plan(
                    op,
                    format!(
                        "by: left '{l}' is {} but right '{r}' is {}",
                        lf.data_type(),
                        rf.data_type()
                    ),
                ));
            }
            right_by.push((r.clone(), crate::keys::held_type(lf.data_type())));
        }
        let keys = KeyInterner::new(left, spec.left_by, op)?;
        // pandas drops the right time column of an as-of join on a shared name.
        let drop_ts = matches!(spec.kind, JoinKind::Asof { .. }) && spec.left_ts == spec.right_ts;
        let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut right_keep = Vec::new();
        let mut right_fields = Vec::new();
        if let Some(cols) = spec.right_columns {
            for c in cols {
                if right.index_of(c).is_err() {
                    return Err(unknown(op, "right", "right_columns", c, right));
                }
            }
        }
        for f in right.fields() {
            let skip = match spec.right_columns {
                Some(cols) => !cols.contains(f.name()),
                None => spec.right_by.contains(f.name()) || (drop_ts && f.name() == spec.right_ts),
            };
            if skip {
                continue;
            }
            let mut name = f.name().clone();
            if fields.iter().any(|x| x.name() == &name) {
                name = format!("{name}{}", spec.suffix);
                if fields.iter().any(|x| x.name() == &name) {
                    return Err(StreamError::plan(
                        op,
                        format!(
                            "suffix: right column '{}' clashes with left columns even as '{name}'",
                            f.name()
                        ),
                    ));
                }
            }
            let out = Field::new(name, f.data_type().clone(), true);
            fields.push(out.clone());
            right_fields.push(out);
            right_keep.push(f.name().clone());
        }
        let right_schema = Arc::new(Schema::new(right_fields));
        let null_right = RecordBatch::try_new_with_options(
            right_schema.clone(),
            right_schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 1))
                .collect(),
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .ctx("join")?;
        Ok(TemporalJoin {
            kind: spec.kind,
            left_ts: spec.left_ts.to_string(),
            right_ts: spec.right_ts.to_string(),
            left_by: spec.left_by.to_vec(),
            right_by,
            right_keep,
            keys,
            schema: Arc::new(Schema::new(fields)),
            left: HeldRecords::default(),
            right: HeldRecords::default(),
            null_right,
            wms: [i64::MIN, i64::MIN],
            right_after_prune: 0,
            late: Vec::new(),
            right_late: 0,
            m: OpMetrics::default(),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn on_left(&mut self, batch: RecordBatch, stream: Option<&[i64]>) -> Result<()> {
        let ts = event_times(&batch, &self.left_ts)?;
        let kids = self.keys.ids(&batch)?;
        let judge = Judge::new(self.wms[0], stream);
        let late = self
            .left
            .hold(&kids, &ts, |i, t| t < judge.at(i), batch.clone());
        crate::operator::keep_late(&batch, late, &mut self.m, &mut self.late)
    }

    fn on_right(&mut self, batch: RecordBatch, stream: Option<&[i64]>) -> Result<()> {
        let ts = event_times(&batch, &self.right_ts)?;
        // The key columns under their left names and types, so both sides intern alike.
        let mut kf = Vec::new();
        let mut kc = Vec::new();
        for ((r, t), l) in self.right_by.iter().zip(&self.left_by) {
            let c = batch
                .column_by_name(r)
                .ok_or_else(|| StreamError::Schema(format!("join: right key '{r}' is missing")))?;
            let c = if c.data_type() == t {
                c.clone()
            } else {
                arrow_cast::cast(c, t).ctx("join right key")?
            };
            kf.push(Field::new(l, t.clone(), true));
            kc.push(c);
        }
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let kb = RecordBatch::try_new_with_options(Arc::new(Schema::new(kf)), kc, &opts)
            .ctx("join right key")?;
        let kids = self.keys.ids(&kb)?;
        let kept: Vec<ArrayRef> = self
            .right_keep
            .iter()
            .map(|c| {
                batch.column_by_name(c).cloned().ok_or_else(|| {
                    StreamError::Schema(format!("join: right column '{c}' is missing"))
                })
            })
            .collect::<Result<_>>()?;
        let payload =
            RecordBatch::try_new_with_options(self.null_right.schema(), kept, &opts).ctx("join")?;
        let judge = Judge::new(self.wms[1], stream);
        let late = self.right.hold(&kids, &ts, |i, t| t < judge.at(i), payload);
        self.right_late += late.len() as u64;
        Ok(())
    }

    /// Forget right records no future left record can match.
    fn prune_right(&mut self, floor: i64) {
        let kind = self.kind;
        self.right.prune(|r| match kind {
            JoinKind::Asof {
                direction: Direction::Forward,
                ..
            } => r.partition_point(|h| h.ts < floor),
            JoinKind::Asof { .. } => r.partition_point(|h| h.ts <= floor).saturating_sub(1),
            JoinKind::Interval { lower_ms, .. } => {
                r.partition_point(|h| h.ts < floor.saturating_add(lower_ms))
            }
        });
        self.right_after_prune = self.right.len();
    }
}

impl Operator for TemporalJoin {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.on_input(0, batch, out)
    }

    fn on_input(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.on_input_timed(side, batch, None, out)
    }

    fn on_input_timed(
        &mut self,
        side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        _: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.m.records_in += batch.num_rows() as u64;
        if side == 0 {
            self.on_left(batch, stream)
        } else {
            self.on_right(batch, stream)
        }
    }

    fn input_watermarks(&mut self, wms: &[i64]) {
        for (w, &n) in self.wms.iter_mut().zip(wms) {
            *w = (*w).max(n);
        }
    }

    fn on_watermark(&mut self, _wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let [lw, rw] = self.wms;
        self.right.sort();
        let kind = self.kind;
        let right = &self.right;
        // (left key, left record, matched right records of that key)
        let mut matched: Vec<(u32, Held, std::ops::Range<usize>)> = Vec::new();
        let ready = self.left.drain_sorted(|k, list, _| {
            let r = right.list(k);
            let mut done = 0;
            for h in list {
                if h.ts >= lw {
                    break;
                }
                match resolve(kind, h.ts, r, rw) {
                    Some(range) => matched.push((k, *h, range)),
                    None => break,
                }
                done += 1;
            }
            Ok(done)
        })?;
        if !ready.is_empty() {
            let keep_unmatched = !matches!(
                kind,
                JoinKind::Interval {
                    how: How::Inner,
                    ..
                }
            );
            // Output rows: (left record, right record or None), in (time, key, arrival) order.
            let items: Vec<(i64, u32, u64)> =
                matched.iter().map(|(k, h, _)| (h.ts, *k, h.seq)).collect();
            let keys = &self.keys;
            let order = crate::held::time_key_order(&items, |k| keys.bytes(k));
            let mut rows: Vec<(Held, Option<Held>)> = Vec::with_capacity(matched.len());
            for (k, h, range) in order.iter().map(|&i| &matched[i as usize]) {
                if range.is_empty() {
                    if keep_unmatched {
                        rows.push((*h, None));
                    }
                    continue;
                }
                let r = self.right.list(*k);
                rows.extend(r[range.clone()].iter().map(|x| (*h, Some(*x))));
            }
            if !rows.is_empty() {
                let b = self.assemble(&rows)?;
                self.m.records_out += b.num_rows() as u64;
                out.push(b);
            }
            self.left.release(ready.iter().map(|(_, h)| h));
        }
        // Future left records are at or after the left watermark (earlier ones are late).
        let floor = self.left.hold_back(lw);
        if self.right.len() > 2 * self.right_after_prune + 65_536 || rw == i64::MAX {
            self.prune_right(floor);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = crate::state::StateWriter::default();
        self.keys.snapshot(&mut w);
        w.i64(self.wms[0]);
        w.i64(self.wms[1]);
        w.len(self.right_after_prune);
        self.left.snapshot(&mut w, |b, w| w.batch(b))?;
        self.right.snapshot(&mut w, |b, w| w.batch(b))?;
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = crate::state::StateReader::new(state, "a join");
        self.keys.restore(&mut r)?;
        self.wms = [r.i64()?, r.i64()?];
        self.right_after_prune = r.len()?;
        self.left = HeldRecords::restore(&mut r, |r| r.batch())?;
        self.right = HeldRecords::restore(&mut r, |r| r.batch())?;
        r.done()
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        self.left.hold_back(wm)
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn metrics(&self) -> OpMetrics {
        let mut m = self.m.clone();
        m.late_records += self.right_late;
        m.watermark = (self.wms[0] != i64::MIN).then_some(self.wms[0].min(self.wms[1]));
        m.state_entries = (self.left.len() + self.right.len()) as u64;
        m
    }
}

impl TemporalJoin {
    /// Gather the output columns: left columns from the held left batches, right columns from
    /// the held right batches (or the null row).
    fn assemble(&self, rows: &[(Held, Option<Held>)]) -> Result<RecordBatch> {
        let mut lrefs = Vec::new();
        let lslot = self
            .left
            .payload_slots(rows.iter().map(|r| r.0.batch), &mut lrefs);
        let mut rrefs = vec![&self.null_right];
        let rslot = self
            .right
            .payload_slots(rows.iter().filter_map(|r| r.1.map(|h| h.batch)), &mut rrefs);
        let lidx: Vec<(usize, usize)> = rows
            .iter()
            .map(|(l, _)| (lslot[&l.batch], l.row as usize))
            .collect();
        let ridx: Vec<(usize, usize)> = rows
            .iter()
            .map(|(_, r)| r.map_or((0, 0), |r| (rslot[&r.batch], r.row as usize)))
            .collect();
        let mut cols = Vec::with_capacity(self.schema.fields().len());
        for i in 0..lrefs.first().map_or(0, |b| b.num_columns()) {
            let arrays: Vec<&dyn Array> = lrefs.iter().map(|b| b.column(i).as_ref()).collect();
            cols.push(arrow_select::interleave::interleave(&arrays, &lidx).ctx("join output")?);
        }
        for i in 0..self.null_right.num_columns() {
            let arrays: Vec<&dyn Array> = rrefs.iter().map(|b| b.column(i).as_ref()).collect();
            cols.push(arrow_select::interleave::interleave(&arrays, &ridx).ctx("join output")?);
        }
        RecordBatch::try_new(self.schema.clone(), cols).ctx("join output")
    }
}
