//! A parallel run: the operator graph on `n` worker threads, each holding a whole copy of it.
//!
//! The run loop (one thread) reads the sources, stamps each record with its stream time and
//! computes the sources' watermarks, exactly as a single-threaded run; it hands a source
//! partition's records always to the same worker, and every worker every watermark, in one FIFO
//! channel per worker (so a watermark never overtakes the records before it). Row-preserving
//! operators run where their input is; a keyed operator's input crosses to the worker that owns
//! its key (`exchange.rs`), followed, on the same channels, by the sending worker's watermark for
//! that input; the receiving operator's watermark is the minimum over all senders. Lateness is
//! judged per record by the stream time it was stamped with, so results do not depend on which
//! worker ran first: a parallel run gives what a single-threaded run gives (as a multiset; the
//! order between keys of one output may differ).
//!
//! The end: after the last watermark the loop sends `End`; a worker whose inputs below an
//! exchange are all complete sends `Done` on it, and a worker whose every input is complete
//! has flushed all it will and stops. Workers never block on sending (unbounded channels); the
//! loop bounds the records in flight instead.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arrow_array::{Array, RecordBatch};
use parking_lot::Mutex;

use crate::checkpoint::OperatorState;
use crate::engine::Engine;
use crate::error::{ArrowContext, Result, StreamError};
use crate::exchange::{Route, Splitter};
use crate::graph::{Graph, Outbox, Outgoing};
use crate::keys::FastMap;
use crate::operator::OpMetrics;
use crate::ordered::Ordered;
use crate::sink::{CollectSink, Sink};

/// Batches in flight (handed to a worker, not yet processed) per worker before the run loop
/// waits: bounds memory when operators are slower than the sources.
const IN_FLIGHT_PER_WORKER: usize = 8;

enum Msg {
    /// Records of a source (by leaf node).
    Source { leaf: usize, batch: RecordBatch },
    /// The sources' watermarks (by leaf node).
    LeafWm(Arc<FastMap<usize, i64>>),
    /// Records for input `side` of node `node`, from another worker.
    Data {
        node: usize,
        side: usize,
        batch: RecordBatch,
    },
    /// Worker `from`'s watermark for input `side` of `node`.
    Wm {
        node: usize,
        side: usize,
        from: usize,
        wm: i64,
    },
    /// A sender has sent all it will on input `side` of `node`.
    Done { node: usize, side: usize },
    /// No more source records or watermarks.
    End,
}

enum Out {
    Batch(usize, RecordBatch),
    /// A worker's output watermark moved: its later output is at or after it.
    Wm(usize, i64),
    Late(usize, Vec<RecordBatch>),
    Finished,
    Failed(StreamError),
}

pub(crate) struct Pool {
    to: Vec<Sender<Msg>>,
    from: Receiver<Out>,
    threads: Vec<JoinHandle<()>>,
    /// Data messages sent and not yet processed, over all workers.
    in_flight: Arc<AtomicUsize>,
    abort: Arc<AtomicBool>,
    metrics: Arc<Vec<Mutex<Vec<OpMetrics>>>>,
    /// Graph order positions, from worker 0's graph (all are alike).
    positions: FastMap<usize, usize>,
    /// Per worker, the late records it set aside, in its order: the run reports them worker by
    /// worker at the end, so their order does not depend on timing between workers.
    late: Vec<Vec<RecordBatch>>,
    finished: usize,
    ended: bool,
    /// An output a single-threaded run emits in event-time order (`emits_in_time_order`) is
    /// released in that order: held until every worker's output watermark has passed it.
    order: Option<Ordered>,
}

/// Whether a single-threaded run emits the output of `node` in event-time order: operators that
/// hold records until the watermark passes them, and what only filters or reshapes their output.
pub(crate) fn emits_in_time_order(node: &crate::plan::Node) -> bool {
    use crate::plan::{Emit, Node};
    match node {
        Node::Window { emit, .. } => *emit == Emit::Final,
        Node::Series { .. } | Node::Join { .. } | Node::StatefulMap { .. } => true,
        Node::Named { input, .. }
        | Node::Filter { input, .. }
        | Node::WithColumns { input, .. }
        | Node::Select { input, .. }
        | Node::Drop { input, .. }
        | Node::Rename { input, .. }
        | Node::KeyBy { input, .. } => emits_in_time_order(input),
        // A Python function may reorder rows or rewrite the time column.
        Node::MapBatches { .. } => false,
        Node::Source { .. } | Node::Union { .. } | Node::GroupBy { .. } => false,
    }
}

/// Everything a worker thread needs.
struct Worker {
    me: usize,
    g: Graph,
    rx: Receiver<Msg>,
    to: Vec<Sender<Msg>>,
    out: Sender<Out>,
    in_flight: Arc<AtomicUsize>,
    abort: Arc<AtomicBool>,
    metrics: Arc<Vec<Mutex<Vec<OpMetrics>>>>,
}

impl Pool {
    /// Start `graphs.len()` workers, one per graph (compiled alike from one plan). `order`: the
    /// event-time column to release the output in the order of (see `Ordered`).
    pub(crate) fn start(graphs: Vec<Graph>, order: Option<String>) -> Result<Pool> {
        let n = graphs.len();
        let positions = {
            let g = &graphs[0];
            (0..g.node_count())
                .filter_map(|i| g.position(i).map(|p| (i, p)))
                .collect()
        };
        let (out_tx, from) = channel();
        let (to, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| channel()).unzip();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let abort = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new((0..n).map(|_| Mutex::new(Vec::new())).collect::<Vec<_>>());
        let mut threads = Vec::with_capacity(n);
        for (me, (mut g, rx)) in graphs.into_iter().zip(rxs).enumerate() {
            g.outbox = Some(Outbox::default());
            *metrics[me].lock() = g.metrics();
            let w = Worker {
                me,
                g,
                rx,
                to: to.clone(),
                out: out_tx.clone(),
                in_flight: in_flight.clone(),
                abort: abort.clone(),
                metrics: metrics.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("riverbed-worker-{me}"))
                .spawn(move || w.run())
                .map_err(|e| StreamError::Internal(format!("cannot start a worker thread: {e}")))?;
            threads.push(t);
        }
        Ok(Pool {
            to,
            from,
            threads,
            in_flight,
            abort,
            metrics,
            positions,
            late: vec![Vec::new(); n],
            finished: 0,
            ended: false,
            order: order.map(|column| Ordered::new(column, n)),
        })
    }

    /// Hand `m` to worker `w`; if it has stopped, the error it stopped with.
    fn send(&mut self, w: usize, m: Msg, sink: &mut dyn Sink) -> Result<()> {
        if self.to[w].send(m).is_ok() {
            return Ok(());
        }
        // It stopped: its error is on its way (or it panicked).
        for _ in 0..100 {
            self.pump(sink, Some(Duration::from_millis(50)))?;
        }
        self.lost()
    }

    /// Take what the workers sent: output to the sink, late records kept. `wait`: block until
    /// something comes (or `timeout`).
    fn pump(&mut self, sink: &mut dyn Sink, wait: Option<Duration>) -> Result<()> {
        let mut first = match wait {
            Some(t) => match self.from.recv_timeout(t) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return self.lost(),
            },
            None => None,
        };
        loop {
            let m = match first.take() {
                Some(m) => m,
                None => match self.from.try_recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                },
            };
            match m {
                Out::Batch(w, b) => match &mut self.order {
                    Some(o) => o.hold(w, b, sink)?,
                    None => sink.write(b)?,
                },
                Out::Wm(w, wm) => {
                    if let Some(o) = &mut self.order {
                        o.wm[w] = wm;
                        o.release(sink, false)?;
                    }
                }
                Out::Late(w, l) => self.late[w].extend(l),
                Out::Finished => self.finished += 1,
                Out::Failed(e) => {
                    self.abort.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
    }

    /// Every worker is gone without saying why: a panic (its message is in the join).
    fn lost(&mut self) -> Result<()> {
        self.abort.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            if let Err(p) = t.join() {
                return Err(StreamError::panicked("a worker thread of the run", p));
            }
        }
        Err(StreamError::Internal("the run's workers stopped".into()))
    }
}

impl Engine for Pool {
    fn push(
        &mut self,
        leaf: usize,
        partition: usize,
        batch: RecordBatch,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let n = self.to.len();
        while self.in_flight.load(Ordering::Acquire) >= IN_FLIGHT_PER_WORKER * n {
            self.pump(sink, Some(Duration::from_millis(1)))?;
            if self.finished > 0 {
                return self.lost();
            }
        }
        self.pump(sink, None)?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // A partition's records always go to one worker, in order.
        self.send((leaf + partition) % n, Msg::Source { leaf, batch }, sink)
    }

    fn advance(&mut self, leaf_wm: &FastMap<usize, i64>, sink: &mut dyn Sink) -> Result<()> {
        let wm = Arc::new(leaf_wm.clone());
        for w in 0..self.to.len() {
            self.send(w, Msg::LeafWm(wm.clone()), sink)?;
        }
        self.pump(sink, None)
    }

    fn take_late(&mut self, sink: &mut dyn Sink) -> Result<Vec<RecordBatch>> {
        self.pump(sink, None)?;
        Ok(Vec::new()) // all at the end (`finish`)
    }

    fn metrics(&self) -> Vec<OpMetrics> {
        let mut all: Option<Vec<OpMetrics>> = None;
        for slot in self.metrics.iter() {
            let m = slot.lock();
            match &mut all {
                None => all = Some(m.clone()),
                Some(a) => {
                    for (x, y) in a.iter_mut().zip(m.iter()) {
                        x.records_in += y.records_in;
                        x.records_out += y.records_out;
                        x.late_records += y.late_records;
                        x.errors += y.errors;
                        x.state_entries += y.state_entries;
                        x.watermark = match (x.watermark, y.watermark) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
        }
        all.unwrap_or_default()
    }

    fn position(&self, idx: usize) -> Option<usize> {
        self.positions.get(&idx).copied()
    }

    fn snapshot(&self) -> Result<Vec<OperatorState>> {
        Err(StreamError::Internal(
            "a run on several workers takes no checkpoints (a named run uses one worker)".into(),
        ))
    }

    fn finish(&mut self, sink: &mut dyn Sink) -> Result<Vec<RecordBatch>> {
        if !self.ended {
            self.ended = true;
            for w in 0..self.to.len() {
                self.send(w, Msg::End, sink)?;
            }
        }
        while self.finished < self.to.len() {
            self.pump(sink, Some(Duration::from_millis(50)))?;
        }
        if let Some(o) = &mut self.order {
            o.release(sink, true)?;
        }
        for t in self.threads.drain(..) {
            if let Err(p) = t.join() {
                return Err(StreamError::panicked("a worker thread of the run", p));
            }
        }
        let late: Vec<RecordBatch> = std::mem::take(&mut self.late)
            .into_iter()
            .flatten()
            .collect();
        in_row_order(late)
    }
}

/// Late records in an order that does not depend on how the workers' inputs interleaved: one
/// batch sorted by its columns when they all share a schema (else as they are).
fn in_row_order(late: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(first) = late.first() else {
        return Ok(late);
    };
    let schema = first.schema();
    if late.iter().any(|b| b.schema() != schema) {
        return Ok(late);
    }
    let all = arrow_select::concat::concat_batches(&schema, &late).ctx("late records")?;
    let columns: Vec<arrow_ord::sort::SortColumn> = all
        .columns()
        .iter()
        .filter(|c| {
            c.data_type().is_primitive()
                || matches!(
                    c.data_type(),
                    arrow_schema::DataType::Utf8
                        | arrow_schema::DataType::LargeUtf8
                        | arrow_schema::DataType::Boolean
                        | arrow_schema::DataType::Binary
                )
        })
        .map(|c| arrow_ord::sort::SortColumn {
            values: c.clone(),
            options: None,
        })
        .collect();
    if columns.is_empty() {
        return Ok(vec![all]);
    }
    let idx = arrow_ord::sort::lexsort_to_indices(&columns, None).ctx("late records")?;
    Ok(vec![
        arrow_select::take::take_record_batch(&all, &idx).ctx("late records")?
    ])
}

impl Drop for Pool {
    fn drop(&mut self) {
        // An error ended the run early: stop the workers (they check `abort` while waiting).
        self.abort.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Worker {
    fn run(self) {
        let out = self.out.clone();
        let abort = self.abort.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work()));
        let msg = match r {
            Ok(Ok(())) => Out::Finished,
            Ok(Err(e)) => Out::Failed(e),
            Err(p) => Out::Failed(StreamError::panicked("a worker thread of the run", p)),
        };
        if !matches!(msg, Out::Finished) {
            abort.store(true, Ordering::Release);
        }
        let _ = out.send(msg);
    }

    fn work(mut self) -> Result<()> {
        let n = self.to.len();
        let cuts = self.g.cuts();
        // Sources' watermarks start at the very beginning (a leaf left out would count as ended).
        let mut leaf_wm: Arc<FastMap<usize, i64>> = Arc::new(
            self.g
                .sources
                .iter()
                .flatten()
                .map(|u| (u.leaf, i64::MIN))
                .collect(),
        );
        let mut sender_wm: FastMap<(usize, usize), Vec<i64>> = cuts
            .iter()
            .map(|&(node, side, _)| ((node, side), vec![i64::MIN; n]))
            .collect();
        let mut dones: FastMap<(usize, usize), usize> = FastMap::default();
        let mut sent_done: FastMap<(usize, usize), bool> = FastMap::default();
        let mut splitters: FastMap<(usize, usize), Splitter> = FastMap::default();
        let mut ended = false;
        let mut root_wm = i64::MIN;
        let mut sink = CollectSink::default();
        loop {
            if self.abort.load(Ordering::Acquire) {
                return Ok(());
            }
            let first = match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let mut advance = false;
            let mut next = Some(first);
            let mut taken = 0;
            let started = std::time::Instant::now();
            while let Some(m) = next.take() {
                match m {
                    Msg::Source { leaf, batch } => {
                        self.g.push(leaf, 0, batch, &mut sink)?;
                        self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                    Msg::Data { node, side, batch } => {
                        self.g.push(node, side, batch, &mut sink)?;
                        self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                    Msg::LeafWm(wm) => {
                        leaf_wm = wm;
                        advance = true;
                    }
                    Msg::Wm {
                        node,
                        side,
                        from,
                        wm,
                    } => {
                        if let Some(v) = sender_wm.get_mut(&(node, side)) {
                            v[from] = wm;
                            let min = v.iter().copied().min().unwrap_or(i64::MIN);
                            if let Some(ob) = &mut self.g.outbox {
                                ob.remote_wm.insert((node, side), min);
                            }
                        }
                        advance = true;
                    }
                    Msg::Done { node, side } => {
                        *dones.entry((node, side)).or_default() += 1;
                        advance = true;
                    }
                    Msg::End => {
                        ended = true;
                        advance = true;
                    }
                }
                // Take what else is waiting (one watermark step for many messages), a bounded
                // number at a time so output keeps flowing.
                taken += 1;
                if taken < 256 && started.elapsed() < Duration::from_millis(20) {
                    next = self.rx.try_recv().ok();
                }
            }
            if advance {
                self.g.advance(&leaf_wm, &mut sink)?;
            }
            self.send_outbox(&mut splitters)?;
            for b in sink.batches.drain(..) {
                let _ = self.out.send(Out::Batch(self.me, b));
            }
            let wm = self.g.output_watermark();
            if wm != root_wm {
                root_wm = wm;
                let _ = self.out.send(Out::Wm(self.me, wm));
            }
            let late = self.g.take_late();
            if !late.is_empty() {
                let _ = self.out.send(Out::Late(self.me, late));
            }
            *self.metrics[self.me].lock() = self.g.metrics();
            // Inputs complete below an exchange: say so to every worker, after the data.
            for &(node, side, child) in &cuts {
                if !sent_done.contains_key(&(node, side)) && self.complete(child, ended, &dones, n)
                {
                    sent_done.insert((node, side), true);
                    for w in 0..n {
                        let _ = self.to[w].send(Msg::Done { node, side });
                    }
                }
            }
            if self.complete(self.g.root(), ended, &dones, n) {
                return Ok(());
            }
        }
    }

    /// Whether everything node `idx` will ever receive here has been processed.
    fn complete(
        &self,
        idx: usize,
        ended: bool,
        dones: &FastMap<(usize, usize), usize>,
        n: usize,
    ) -> bool {
        let children = self.g.children(idx);
        if children.is_empty() {
            return ended;
        }
        children.iter().enumerate().all(|(side, &c)| {
            if *self.g.route(idx, side) == Route::Local {
                self.complete(c, ended, dones, n)
            } else {
                dones.get(&(idx, side)).copied().unwrap_or(0) == n
            }
        })
    }

    /// Hand what crossed to the workers owning it: records to the owner of their key,
    /// watermarks to every worker.
    fn send_outbox(&mut self, splitters: &mut FastMap<(usize, usize), Splitter>) -> Result<()> {
        let Some(ob) = &mut self.g.outbox else {
            return Ok(());
        };
        let items = std::mem::take(&mut ob.items);
        let n = self.to.len();
        for it in items {
            match it {
                Outgoing::Data { node, side, batch } => {
                    let sp = match splitters.entry((node, side)) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let Route::Hash(keys) = self.g.route(node, side).clone() else {
                                continue;
                            };
                            e.insert(Splitter::new(keys))
                        }
                    };
                    for (w, b) in sp.split(batch, n)? {
                        self.in_flight.fetch_add(1, Ordering::AcqRel);
                        let _ = self.to[w].send(Msg::Data {
                            node,
                            side,
                            batch: b,
                        });
                    }
                }
                Outgoing::Watermark { node, side, wm } => {
                    for w in 0..n {
                        let _ = self.to[w].send(Msg::Wm {
                            node,
                            side,
                            from: self.me,
                            wm,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
