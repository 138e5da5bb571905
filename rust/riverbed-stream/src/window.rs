//! Windowed aggregation with incremental state: tumbling and hopping windows (`TimeWindows`)
//! and merging session windows (`SessionWindows`); the unwindowed running aggregate is
//! `group_by.rs`. A record for a window that is already closed (watermark >= end + grace) is late:
//! dropped, counted, and kept for the pipeline's late output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::aggregate::{AccStore, AggSet};
use crate::error::{ArrowContext, Result};
use crate::keys::{bound_type, bounds_array, event_times, FastMap, KeyInterner};
use crate::operator::{OpMetrics, Operator};
use crate::plan::Emit;
use crate::state::{StateReader, StateWriter};
use crate::watermark::Judge;

/// What every windowed operator shares: keys, aggregates, and the output layout
/// (`by` columns, `window_start`, `window_end`, aggregates).
pub struct WindowCore {
    pub keys: KeyInterner,
    pub aggs: AggSet,
    pub store: AccStore,
    pub ts_col: String,
    pub bound_type: DataType,
    pub schema: SchemaRef,
    pub late: Vec<RecordBatch>,
    pub m: OpMetrics,
    pub wm: i64,
}

/// Rows per output batch of a window operator.
const EMIT_CHUNK: usize = 65_536;

/// One result row: key id, window bounds, state id.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub key: u32,
    pub start: i64,
    pub end: i64,
    pub sid: u32,
}

impl WindowCore {
    pub fn new(
        input: &SchemaRef,
        ts_col: &str,
        by: &[String],
        aggs: &[(String, crate::Expr)],
        op: &str,
    ) -> Result<WindowCore> {
        let keys = KeyInterner::new(input, by, op)?;
        let aggs = AggSet::compile(aggs, input, op)?;
        let store = aggs.new_store()?;
        let bt = bound_type(input, ts_col);
        let mut fields: Vec<Field> = keys.fields().to_vec();
        fields.push(Field::new("window_start", bt.clone(), false));
        fields.push(Field::new("window_end", bt.clone(), false));
        fields.extend(aggs.output_fields().iter().cloned());
        Ok(WindowCore {
            keys,
            aggs,
            store,
            ts_col: ts_col.to_string(),
            bound_type: bt,
            schema: Arc::new(Schema::new(fields)),
            late: Vec::new(),
            m: OpMetrics::default(),
            wm: i64::MIN,
        })
    }

    /// Build the output batch for `items`, ordered by window start, then key.
    pub fn emit(&mut self, items: &mut [Item], out: &mut Vec<RecordBatch>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        items.sort_by(|a, b| {
            (a.start, a.end)
                .cmp(&(b.start, b.end))
                .then_with(|| self.keys.bytes(a.key).cmp(self.keys.bytes(b.key)))
        });
        // Bounded output batches keep the peak memory of a large flush small.
        for chunk in items.chunks(EMIT_CHUNK) {
            let sids: Vec<u32> = chunk.iter().map(|i| i.sid).collect();
            let mut cols = self.keys_and_bounds(chunk)?;
            cols.extend(self.aggs.finish(&self.store, &sids)?);
            let b = RecordBatch::try_new(self.schema.clone(), cols).ctx("window output")?;
            self.m.records_out += b.num_rows() as u64;
            out.push(b);
        }
        Ok(())
    }

    /// The `by` columns, `window_start` and `window_end` of `items`.
    fn keys_and_bounds(&self, items: &[Item]) -> Result<Vec<ArrayRef>> {
        let ids: Vec<u32> = items.iter().map(|i| i.key).collect();
        let mut cols: Vec<ArrayRef> = self.keys.columns(&ids)?;
        for bound in [|i: &Item| i.start, |i: &Item| i.end] {
            cols.push(bounds_array(
                items.iter().map(bound).collect(),
                &self.bound_type,
            )?);
        }
        Ok(cols)
    }

    /// Retract rows emitted before: each item's key, `window_start` and `window_end` with every
    /// aggregate null (a tombstone: the window `(key, window_start)` no longer exists).
    pub fn retract(&mut self, items: &[Item], out: &mut Vec<RecordBatch>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut cols = self.keys_and_bounds(items)?;
        for f in self.aggs.output_fields() {
            cols.push(arrow_array::new_null_array(f.data_type(), items.len()));
        }
        let b = RecordBatch::try_new(self.schema.clone(), cols).ctx("window retractions")?;
        self.m.records_out += b.num_rows() as u64;
        out.push(b);
        Ok(())
    }

    /// Keys, aggregate states and watermark, the part of a checkpoint every window kind has.
    pub fn snapshot(&self, w: &mut StateWriter) {
        self.keys.snapshot(w);
        self.store.snapshot(w);
        w.i64(self.wm);
    }

    pub fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.keys.restore(r)?;
        self.store.restore(r)?;
        self.wm = r.i64()?;
        Ok(())
    }

    pub fn keep_late(&mut self, batch: &RecordBatch, rows: Vec<u32>) -> Result<()> {
        crate::operator::keep_late(batch, rows, &mut self.m, &mut self.late)
    }

    pub fn metrics(&self, state_entries: usize) -> OpMetrics {
        let mut m = self.m.clone();
        m.watermark = (self.wm != i64::MIN).then_some(self.wm);
        m.state_entries = state_entries as u64;
        m
    }
}

const FREE: u32 = u32::MAX;

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

/// Tumbling (`every == size`) and hopping windows.
pub struct TimeWindows {
    pub core: WindowCore,
    size: i64,
    every: i64,
    offset: i64,
    grace: i64,
    emit: Emit,
    /// Open windows of a key other than its most recent one: (key, start) -> state id.
    others: FastMap<(u32, i64), u32>,
    /// (key id, state id) of the open windows by window end, to close them in order.
    by_end: BTreeMap<i64, Vec<(u32, u32)>>,
    /// Per key id: the last window (start, state id) it touched, to skip most hash lookups.
    recent: Vec<(i64, u32)>,
}

impl TimeWindows {
    pub fn new(
        core: WindowCore,
        size: i64,
        every: i64,
        offset: i64,
        grace: i64,
        emit: Emit,
    ) -> TimeWindows {
        TimeWindows {
            core,
            size,
            every,
            offset,
            grace,
            emit,
            others: FastMap::default(),
            by_end: BTreeMap::new(),
            recent: Vec::new(),
        }
    }
}

impl TimeWindows {
    /// The state of key `k`'s window starting at `s`, created if new. The key's most recent
    /// window is found without hashing; only keys with several open windows use `others`.
    fn state_for(&mut self, k: u32, s: i64, end: i64) -> u32 {
        let (rs, rsid) = self.recent[k as usize];
        if rsid != FREE && rs == s {
            return rsid;
        }
        let sid = match self.others.remove(&(k, s)) {
            Some(sid) => sid,
            None => {
                let sid = self.core.store.alloc();
                self.by_end.entry(end).or_default().push((k, sid));
                sid
            }
        };
        if rsid != FREE {
            self.others.insert((k, rs), rsid);
        }
        self.recent[k as usize] = (s, sid);
        sid
    }
}

impl Operator for TimeWindows {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.on_input_timed(0, batch, None, out)
    }

    fn on_input_timed(
        &mut self,
        _side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = batch.num_rows();
        self.core.m.records_in += n as u64;
        let ts = event_times(&batch, &self.core.ts_col)?;
        let kids = self.core.keys.ids(&batch)?;
        let inputs = self.core.aggs.inputs(&batch)?;
        let mut rows = Vec::with_capacity(n);
        let mut sids = Vec::with_capacity(n);
        let mut late = Vec::new();
        let (size, every, offset, grace) = (self.size, self.every, self.offset, self.grace);
        let judge = Judge::new(self.core.wm, stream);
        let mut touched: Vec<Item> = Vec::new();
        if self.recent.len() < self.core.keys.len() {
            self.recent.resize(self.core.keys.len(), (i64::MIN, FREE));
        }
        for i in 0..n {
            let t = ts[i];
            let k = kids[i];
            let wm = judge.at(i);
            let mut s = floor_div(t - offset, every) * every + offset;
            // A hopping record late for some of its windows (closed already) counts as late, as
            // Kafka Streams counts it, and still goes to its open ones.
            let mut missed = false;
            while s > t - size {
                let end = s + size;
                if end.saturating_add(grace) <= wm {
                    missed = true;
                }
                if end.saturating_add(grace) > wm {
                    let sid = self.state_for(k, s, end);
                    if self.emit == Emit::Update {
                        touched.push(Item {
                            key: k,
                            start: s,
                            end,
                            sid,
                        });
                    }
                    rows.push(i as u32);
                    sids.push(sid);
                }
                s -= every;
            }
            if missed {
                late.push(i as u32);
            }
        }
        self.core.store.update(&rows, &sids, &inputs, &ts)?;
        self.core.keep_late(&batch, late)?;
        if self.emit == Emit::Update {
            let mut seen = std::collections::HashSet::new();
            touched.retain(|it| seen.insert(it.sid));
            self.core.emit(&mut touched, out)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Never back: after a restore, the windows it had closed stay closed.
        let wm = crate::watermark::never_back(self.core.wm, wm);
        self.core.wm = wm;
        while let Some((&end, _)) = self.by_end.first_key_value() {
            if end.saturating_add(self.grace) > wm {
                break;
            }
            let Some((_, mut entries)) = self.by_end.pop_first() else {
                break;
            };
            // One window end at a time, in key order, a chunk at a time: a flush of millions of
            // windows needs little memory beyond the state itself.
            let keys = &self.core.keys;
            entries.sort_by(|a, b| keys.bytes(a.0).cmp(keys.bytes(b.0)));
            let start = end - self.size;
            for chunk in entries.chunks(EMIT_CHUNK) {
                let mut items: Vec<Item> = chunk
                    .iter()
                    .map(|&(key, sid)| Item {
                        key,
                        start,
                        end,
                        sid,
                    })
                    .collect();
                if self.emit == Emit::Final {
                    self.core.emit(&mut items, out)?;
                }
                for it in items {
                    if self
                        .recent
                        .get(it.key as usize)
                        .is_some_and(|r| r.1 == it.sid)
                    {
                        self.recent[it.key as usize] = (i64::MIN, FREE);
                    } else {
                        self.others.remove(&(it.key, it.start));
                    }
                    self.core.store.free(it.sid);
                }
            }
        }
        Ok(())
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        let future = wm.saturating_sub(self.size).saturating_sub(self.grace);
        match self.by_end.first_key_value() {
            Some((&end, _)) => future.min(end - self.size),
            None => future,
        }
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.core.late)
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let listed: usize = self.by_end.values().map(|l| 16 + l.len() * 8).sum();
        let mut w = StateWriter::with_capacity(
            self.core.keys.state_bytes()
                + self.core.store.state_bytes()
                + 24
                + self.others.len() * 16
                + listed
                + self.recent.len() * 12,
        );
        self.core.snapshot(&mut w);
        w.len(self.others.len());
        let mut others: Vec<(&(u32, i64), &u32)> = self.others.iter().collect();
        others.sort_unstable();
        for ((k, s), sid) in others {
            w.u32(*k);
            w.i64(*s);
            w.u32(*sid);
        }
        w.len(self.by_end.len());
        for (end, list) in &self.by_end {
            w.i64(*end);
            w.len(list.len());
            for (k, sid) in list {
                w.u32(*k);
                w.u32(*sid);
            }
        }
        w.len(self.recent.len());
        for (s, sid) in &self.recent {
            w.i64(*s);
            w.u32(*sid);
        }
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader::new(state, "a window");
        self.core.restore(&mut r)?;
        self.others.clear();
        for _ in 0..r.len()? {
            let (k, s, sid) = (r.u32()?, r.i64()?, r.u32()?);
            self.others.insert((k, s), sid);
        }
        self.by_end.clear();
        for _ in 0..r.len()? {
            let end = r.i64()?;
            let n = r.len()?;
            let list = (0..n)
                .map(|_| Ok((r.u32()?, r.u32()?)))
                .collect::<Result<Vec<_>>>()?;
            self.by_end.insert(end, list);
        }
        let n = r.len()?;
        self.recent = (0..n)
            .map(|_| Ok((r.i64()?, r.u32()?)))
            .collect::<Result<Vec<_>>>()?;
        r.done()
    }

    fn metrics(&self) -> OpMetrics {
        self.core.metrics(self.core.store.live())
    }
}

/// A session closes when the watermark passes its last record + gap + grace.
fn close_at(end: i64, gap: i64, grace: i64) -> i64 {
    end.saturating_add(gap).saturating_add(grace)
}

#[derive(Debug, Clone, Copy)]
struct Session {
    start: i64,
    end: i64,
    sid: u32,
    /// A row `(key, start)` of this session went out (an update, or the provisional end-of-input
    /// flush of the run whose checkpoint this state came from). When the session merges into
    /// one with an earlier start, that row is retracted (`WindowCore::retract`), as Kafka
    /// Streams' session store sends a tombstone for the old session's key.
    emitted: bool,
}

/// Session windows: per key, sessions sorted by start; a record within `gap` of sessions joins
/// (and merges) them.
pub struct SessionWindows {
    pub core: WindowCore,
    gap: i64,
    grace: i64,
    emit: Emit,
    sessions: FastMap<u32, Vec<Session>>,
    /// (close time = end + gap + grace, key, start)
    closing: BTreeSet<(i64, u32, i64)>,
    /// Per key: the end of its last emitted session. A record within `gap` of it would have
    /// merged into a closed session: it is late, whether that session was emitted before the
    /// record arrived or is still open in the same batch (so batching does not matter).
    closed_end: FastMap<u32, i64>,
}

impl SessionWindows {
    pub fn new(core: WindowCore, gap: i64, grace: i64, emit: Emit) -> SessionWindows {
        SessionWindows {
            core,
            gap,
            grace,
            emit,
            sessions: FastMap::default(),
            closing: BTreeSet::new(),
            closed_end: FastMap::default(),
        }
    }
}

impl Operator for SessionWindows {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.on_input_timed(0, batch, None, out)
    }

    fn on_input_timed(
        &mut self,
        _side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = batch.num_rows();
        self.core.m.records_in += n as u64;
        let ts = event_times(&batch, &self.core.ts_col)?;
        let kids = self.core.keys.ids(&batch)?;
        let inputs = self.core.aggs.inputs(&batch)?;
        let mut late = Vec::new();
        let mut touched: Vec<(u32, u32)> = Vec::new();
        let mut retracted: Vec<Item> = Vec::new();
        let judge = Judge::new(self.core.wm, stream);
        for i in 0..n {
            let (t, k) = (ts[i], kids[i]);
            let list = self.sessions.entry(k).or_default();
            // Sessions overlapping [t - gap, t + gap] are contiguous in start order.
            let lo = list.partition_point(|s| s.end.saturating_add(self.gap) < t);
            let hi = list.partition_point(|s| s.start.saturating_sub(self.gap) <= t);
            let (mut start, mut end) = (t, t);
            let wm = judge.at(i);
            // Late: its own session would be closed, or it would merge into a closed one (the
            // watermark it meets passed that session's close). A record at the watermark is on
            // time and may still join (the gap is inclusive).
            let mut closed = close_at(t, self.gap, self.grace) < wm
                || self
                    .closed_end
                    .get(&k)
                    .is_some_and(|&e| t.saturating_sub(self.gap) <= e);
            for s in &list[lo..hi.max(lo)] {
                start = start.min(s.start);
                end = end.max(s.end);
                closed |= close_at(s.end, self.gap, self.grace) < wm;
            }
            if closed {
                late.push(i as u32);
                continue;
            }
            let mut emitted = false;
            let sid = if lo < hi {
                let keep = list[lo].sid;
                let merged: Vec<Session> = list.drain(lo..hi).collect();
                for s in &merged {
                    self.closing
                        .remove(&(close_at(s.end, self.gap, self.grace), k, s.start));
                    if s.sid != keep {
                        self.core.store.merge(keep, s.sid);
                    }
                    // A row keyed by this session's start went out: the merged session has that
                    // start (its next row supersedes it) or the row is retracted.
                    if s.emitted && s.start == start {
                        emitted = true;
                    } else if s.emitted {
                        retracted.push(Item {
                            key: k,
                            start: s.start,
                            end: s.end,
                            sid: s.sid,
                        });
                    }
                }
                keep
            } else {
                self.core.store.alloc()
            };
            list.insert(
                lo,
                Session {
                    start,
                    end,
                    sid,
                    emitted,
                },
            );
            self.closing
                .insert((close_at(end, self.gap, self.grace), k, start));
            self.core.store.update(&[i as u32], &[sid], &inputs, &ts)?;
            touched.push((k, sid));
        }
        self.core.keep_late(&batch, late)?;
        self.core.retract(&retracted, out)?;
        if self.emit == Emit::Update && !touched.is_empty() {
            let sids: std::collections::HashSet<u32> = touched.iter().map(|&(_, s)| s).collect();
            let mut items = Vec::new();
            for (&k, list) in &mut self.sessions {
                for s in list {
                    if sids.contains(&s.sid) {
                        s.emitted = true;
                        items.push(Item {
                            key: k,
                            start: s.start,
                            end: s.end,
                            sid: s.sid,
                        });
                    }
                }
            }
            self.core.emit(&mut items, out)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Never back: after a restore, the windows it had closed stay closed.
        let wm = crate::watermark::never_back(self.core.wm, wm);
        self.core.wm = wm;
        let mut closed = Vec::new();
        while let Some(&(close, k, start)) = self.closing.first() {
            if close >= wm {
                break;
            }
            self.closing.pop_first();
            if let Some(list) = self.sessions.get_mut(&k) {
                if let Some(pos) = list.iter().position(|s| s.start == start) {
                    let s = list.remove(pos);
                    let e = self.closed_end.entry(k).or_insert(s.end);
                    *e = (*e).max(s.end);
                    closed.push(Item {
                        key: k,
                        start: s.start,
                        end: s.end,
                        sid: s.sid,
                    });
                }
                if list.is_empty() {
                    self.sessions.remove(&k);
                }
            }
        }
        if self.emit == Emit::Final {
            self.core.emit(&mut closed, out)?;
        }
        for it in closed {
            self.core.store.free(it.sid);
        }
        Ok(())
    }

    fn output_watermark(&self, wm: i64) -> i64 {
        let future = wm.saturating_sub(self.gap).saturating_sub(self.grace);
        let oldest = self
            .sessions
            .values()
            .filter_map(|l| l.first().map(|s| s.start))
            .min();
        oldest.map_or(future, |o| o.min(future))
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.core.late)
    }

    fn open_was_emitted(&mut self) {
        for s in self.sessions.values_mut().flatten() {
            s.emitted = true;
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::with_capacity(
            self.core.keys.state_bytes()
                + self.core.store.state_bytes()
                + 36 * self.closing.len()
                + 12 * self.closed_end.len(),
        );
        self.core.snapshot(&mut w);
        // Sessions by key (`closing` follows from them).
        let mut keys: Vec<&u32> = self.sessions.keys().collect();
        keys.sort_unstable();
        w.len(keys.len());
        for k in keys {
            let list = &self.sessions[k];
            w.u32(*k);
            w.len(list.len());
            for s in list {
                w.i64(s.start);
                w.i64(s.end);
                w.u32(s.sid);
            }
        }
        // The ends of emitted sessions by key (absent in checkpoints before it existed).
        let mut closed: Vec<(&u32, &i64)> = self.closed_end.iter().collect();
        closed.sort_unstable();
        w.len(closed.len());
        for (k, e) in closed {
            w.u32(*k);
            w.i64(*e);
        }
        // The open sessions whose row went out, by key and start (absent in older checkpoints).
        let mut emitted: Vec<(u32, i64)> = self
            .sessions
            .iter()
            .flat_map(|(&k, l)| l.iter().filter(|s| s.emitted).map(move |s| (k, s.start)))
            .collect();
        emitted.sort_unstable();
        w.len(emitted.len());
        for (k, start) in emitted {
            w.u32(k);
            w.i64(start);
        }
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader::new(state, "a session window");
        self.core.restore(&mut r)?;
        self.sessions.clear();
        self.closing.clear();
        for _ in 0..r.len()? {
            let k = r.u32()?;
            let n = r.len()?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Session {
                    start: r.i64()?,
                    end: r.i64()?,
                    sid: r.u32()?,
                    emitted: false,
                };
                self.closing
                    .insert((close_at(s.end, self.gap, self.grace), k, s.start));
                list.push(s);
            }
            self.sessions.insert(k, list);
        }
        self.closed_end.clear();
        if !r.at_end() {
            for _ in 0..r.len()? {
                let k = r.u32()?;
                self.closed_end.insert(k, r.i64()?);
            }
        }
        if !r.at_end() {
            for _ in 0..r.len()? {
                let (k, start) = (r.u32()?, r.i64()?);
                let s = self
                    .sessions
                    .get_mut(&k)
                    .and_then(|l| l.iter_mut().find(|s| s.start == start))
                    .ok_or_else(|| {
                        crate::error::StreamError::Checkpoint(format!(
                            "a session window checkpoint names an emitted session (key #{k}, start {start}) it does not hold"
                        ))
                    })?;
                s.emitted = true;
            }
        }
        r.done()
    }

    fn metrics(&self) -> OpMetrics {
        self.core.metrics(self.closing.len())
    }
}
