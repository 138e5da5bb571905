//! Consumer-group runs. The partitions of a source read with a consumer group (Kafka) are split
//! between the processes of the group, so a process runs one *task* per partition assigned to
//! it, as Kafka Streams does: each task has its own operators, watermark and checkpoints, so
//! its state can move with its partition.
//!
//! On a rebalance, a revoked partition's task is checkpointed — after the output it produced so
//! far is flushed — its offset committed, and the task dropped; an assigned partition's task
//! restores the partition's newest checkpoint and continues at the checkpoint's own offset
//! (state and offset always come from the same checkpoint, so a crash anywhere means
//! re-processing, never a gap: at-least-once). Offsets are committed with every checkpoint,
//! after the results are written. Checkpoints live in `<dir>/p<partition>/`, a directory every
//! process of the group must share (one machine, or a shared filesystem).
//!
//! A pipeline that joins or unions several topics of the group reads them together: task p
//! reads partition p of every one (they are co-partitioned, see `stages::cut`), one leaf each,
//! and its checkpoint holds a position per topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checkpoint::{Checkpoint, CheckpointStore, SourceState};
use crate::control::{RunControl, RunOutput};
use crate::error::{Result, StreamError};
use crate::errors::{ErrorHandler, ErrorPolicy};
use crate::graph::Graph;
use crate::intake::{stamp, without_null_times};
use crate::keys::FastMap;
use crate::operator::OpMetrics;
use crate::pipeline::Pipeline;
use crate::sink::Sink;
use crate::source::{Polled, Source, SourceSpec};
use crate::watermark::WatermarkTracker;

/// How often output watermarks are passed on even when they did not move.
const MARK_INTERVAL: Duration = Duration::from_millis(200);

/// One assigned partition's share of the pipeline.
struct Task {
    g: Graph,
    tracker: WatermarkTracker,
    /// Per source, the watermarks last passed to the graph.
    last_wm: Option<Vec<i64>>,
    store: Option<CheckpointStore>,
    seq: u64,
    /// The text of the plan its checkpoints are of (an older form when it resumed from one).
    plan_text: String,
    /// Its input is all in (bounded runs) and it was checkpointed before the final flush.
    ended: bool,
    /// Resumed from a checkpoint whose end-of-input flush reached the sink, and nothing was
    /// read since: its state is what that flush emitted, so it is not flushed again and takes
    /// no checkpoint until a record arrives.
    quiet: bool,
    /// Its output watermark when its input ended, before the end-of-input flush.
    end_wm: Option<i64>,
    /// Per source, the provisional rows its writers flushed (`Polled::Provisional`), taken in
    /// after its end-of-input checkpoint.
    provisional: Vec<(usize, arrow_array::RecordBatch)>,
}

impl Task {
    /// Something new arrived: a quiet task is one no more (the watermarks it skipped are passed
    /// to the graph now).
    fn wake(&mut self) {
        if self.quiet {
            self.quiet = false;
            self.last_wm = None;
        }
    }

    /// Give batch `b` of source `k` (its event times stamped) to the task's operators (task
    /// `p`'s: what they write is tagged as its).
    fn take_in(
        &mut self,
        p: usize,
        k: usize,
        input: &Input,
        b: arrow_array::RecordBatch,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let b = stamp(&mut self.tracker, k, 0, b, input.ts.as_deref())?;
        sink.task(self.txn(p));
        self.g.push(input.leaf, 0, b, sink)
    }

    /// As task `p`, what its output is tagged with (`Sink::task`): `p`, if it keeps
    /// checkpoints.
    fn txn(&self, p: usize) -> Option<usize> {
        self.store.as_ref().map(|_| p)
    }
}

/// How a task takes in one of the pipeline's sources.
struct Input {
    leaf: usize,
    ts: Option<String>,
    lateness: i64,
    idle_timeout: Duration,
}

/// The group's view of one run: the pipeline, its source and its tasks.
struct GroupRun<'a> {
    pipeline: &'a Pipeline,
    control: &'a RunControl,
    on_error: std::sync::Arc<ErrorHandler>,
    /// Every source of the pipeline, read together: its partition index `t * parts + p` is
    /// partition p of source t, which task p reads.
    src: Box<dyn Source>,
    parts: usize,
    tasks: BTreeMap<usize, Task>,
    plan_text: String,
    inputs: Vec<Input>,
    follow: bool,
    null_times: u64,
    /// Records operators dropped as late.
    late: Vec<arrow_array::RecordBatch>,
}

pub(crate) fn run_group(
    pipeline: &Pipeline,
    sink: &mut dyn Sink,
    follow: bool,
    control: &RunControl,
) -> Result<RunOutput> {
    let on_error = control
        .on_error
        .clone()
        .unwrap_or_else(|| ErrorHandler::new(ErrorPolicy::Raise));
    let probe = Graph::compile(
        &pipeline.plan,
        &pipeline.sources,
        &pipeline.udfs,
        on_error.clone(),
    )?;
    let mut inputs = Vec::new();
    for (i, u) in probe.sources.iter().enumerate() {
        let Some(u) = u else {
            return Err(StreamError::plan(
                "read",
                format!("the plan does not read its source #{i}"),
            ));
        };
        inputs.push(Input {
            leaf: u.leaf,
            ts: u.ts.clone(),
            lateness: u.lateness,
            idle_timeout: Duration::from_millis(u.idle_timeout.max(0) as u64),
        });
    }
    let reset = control.checkpoint.as_ref().is_some_and(|c| c.reset);
    if let Some(cfg) = &control.checkpoint {
        if cfg.reset && cfg.dir.exists() {
            std::fs::remove_dir_all(&cfg.dir).map_err(|e| StreamError::io("clear", &cfg.dir, e))?;
        }
    }
    let mut src = match pipeline.sources.as_slice() {
        [SourceSpec::External(first), rest @ ..] if !rest.is_empty() => {
            let others: Vec<_> = rest
                .iter()
                .filter_map(|s| match s {
                    SourceSpec::External(e) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            first.open_together(&others, follow, on_error.clone())?
        }
        _ => pipeline.sources[0].open(follow, &on_error, None)?,
    };
    let parts = src.partitions() / inputs.len().max(1);
    if reset {
        // Its offsets were committed with the checkpoints just forgotten.
        src.ignore_commits();
    }
    let mut run = GroupRun {
        pipeline,
        control,
        on_error,
        src,
        parts,
        tasks: BTreeMap::new(),
        plan_text: pipeline.explain(),
        inputs,
        follow,
        null_times: 0,
        late: Vec::new(),
    };
    let result = run.run(sink);
    if result.is_ok() {
        // On stop: checkpoint every task and hand its partition back.
        let all: Vec<usize> = run.tasks.keys().copied().collect();
        run.checkpoint(&all, sink)?;
    }
    result?;
    sink.close()?;
    for t in run.tasks.values().filter(|t| t.ended && !t.quiet) {
        if let Some(store) = &t.store {
            store.mark_flushed(t.seq)?;
        }
    }
    let metrics = run.metrics();
    *control.metrics.lock() = metrics.clone();
    let notes = std::mem::take(&mut *control.notes.lock());
    Ok(RunOutput {
        notes,
        late: std::mem::take(&mut run.late),
        metrics,
        checkpoints: control.checkpoint_stats.lock().clone(),
    })
}

impl GroupRun<'_> {
    fn run(&mut self, sink: &mut dyn Sink) -> Result<()> {
        let interval = self.control.checkpoint.as_ref().map(|c| c.interval);
        let mut last_checkpoint = Instant::now();
        let mut last_marks = Instant::now();
        let mut done = false;
        loop {
            if self.control.stop.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(());
            }
            if let Some(rb) = self.src.rebalance() {
                // Partition p of every source belongs to task p: they come and go together.
                let parts = self.parts.max(1);
                let tasks = |v: &[usize]| -> Vec<usize> {
                    let mut t: Vec<usize> = v.iter().map(|i| i % parts).collect();
                    t.sort_unstable();
                    t.dedup();
                    t
                };
                let revoked = tasks(&rb.revoked);
                self.checkpoint(&revoked, sink)?;
                for p in &revoked {
                    self.tasks.remove(p);
                }
                for p in tasks(&rb.assigned) {
                    if !self.tasks.contains_key(&p) {
                        let t = self.new_task(p)?;
                        // Its readers void what an earlier run of it wrote after the checkpoint
                        // it starts from: it writes that again now.
                        if t.store.is_some() {
                            sink.commit(p, t.seq, true)?;
                        }
                        self.tasks.insert(p, t);
                    }
                }
            }
            let mut progressed = false;
            match self.src.poll()? {
                Polled::Batch(i, b) => {
                    progressed = true;
                    let (k, p) = (i / self.parts, i % self.parts);
                    let b = self.intake(k, b)?;
                    // A batch of a partition no longer ours (revoked meanwhile) is dropped: its
                    // new owner reads it again from the checkpoint.
                    if let Some(t) = self.tasks.get_mut(&p) {
                        t.wake();
                        t.take_in(p, k, &self.inputs[k], b, sink)?;
                    }
                }
                Polled::Provisional(i, b, changed) => {
                    progressed = true;
                    let (k, p) = (i / self.parts, i % self.parts);
                    let b = self.intake(k, b)?;
                    // Kept aside until the task's end-of-input checkpoint is taken: its state
                    // must not hold what the writer emits again, changed, in its next run. A
                    // following task never ends its input: the writer's real rows come later.
                    if let Some(t) = self.tasks.get_mut(&p) {
                        if changed {
                            t.wake();
                        }
                        if !self.follow {
                            t.provisional.push((k, b));
                        }
                    }
                }
                Polled::PartitionDone(i) => {
                    progressed = true;
                    let (k, p) = (i / self.parts, i % self.parts);
                    // The task's last input in: checkpoint before the end-of-input flush (as a
                    // bounded log run does), so a later run continues the stream instead of
                    // after a provisional flush.
                    let last = self.tasks.get(&p).is_some_and(|t| {
                        !t.ended
                            && (0..self.inputs.len()).all(|j| j == k || t.tracker.is_finished(j, 0))
                    });
                    if last && self.tasks.get(&p).is_some_and(|t| !t.quiet) {
                        self.checkpoint(&[p], sink)?;
                    } else if last && self.src.carries_watermarks() {
                        // A quiet reader of a repartition topic read past this run's markers
                        // and provisional rows: its state is the flushed one, at a new position
                        // (read again, those rows would count twice in its next run).
                        self.checkpoint_quiet(p, sink)?;
                    }
                    if let Some(t) = self.tasks.get_mut(&p) {
                        t.ended |= last;
                        if last && !t.quiet && !t.provisional.is_empty() {
                            let rows = std::mem::take(&mut t.provisional);
                            // The writers' provisional rows, after the checkpoint, before the
                            // end-of-input flush. What the task emits taking them in (updates,
                            // retractions) no checkpoint covers: it is part of its own flush,
                            // which its next run's replaces.
                            sink.task(t.txn(p));
                            sink.provisional(Some(true))?;
                            let taken = rows
                                .into_iter()
                                .try_for_each(|(k, b)| t.take_in(p, k, &self.inputs[k], b, sink));
                            sink.provisional(None)?;
                            taken?;
                        }
                        t.tracker.finish_partition(k, 0);
                    }
                }
                Polled::Watermark(i, wm, idle) => {
                    progressed = true;
                    let (k, p) = (i / self.parts, i % self.parts);
                    if let Some(t) = self.tasks.get_mut(&p) {
                        t.tracker.report(k, 0, wm, idle);
                    }
                }
                Polled::Idle => {}
                Polled::Done => done = true,
            }
            // Pass output watermarks on (a repartition sink) when they move, and again now and
            // then: a reader restarting from a checkpoint needs to hear them again.
            let resend = last_marks.elapsed() >= MARK_INTERVAL;
            if resend {
                last_marks = Instant::now();
            }
            let parts = self.parts;
            let inputs = &self.inputs;
            let leaves = |wms: &[i64]| -> FastMap<usize, i64> {
                inputs
                    .iter()
                    .map(|i| i.leaf)
                    .zip(wms.iter().copied())
                    .collect()
            };
            let relay = sink.relays_provisional();
            for (&p, t) in self.tasks.iter_mut() {
                sink.task(t.txn(p));
                let src = &self.src;
                let caught_up = |k: usize, _| src.caught_up(k * parts + p);
                let wms = t.tracker.watermarks(self.follow, caught_up);
                let moved = t.last_wm.as_ref() != Some(&wms);
                let at_end = wms.iter().all(|&w| w == i64::MAX);
                // The readers of a repartition topic hear a task whose input ended at its data's
                // watermark, never the end (+inf): they hold their windows open at it until
                // their own input ends, so the checkpoint they take then closes nothing a rerun
                // with more input in this task's partition still fills; and a +inf left in the
                // topic would end the next run's reading of it early.
                if at_end && t.end_wm.is_none() {
                    t.end_wm = Some(t.g.output_watermark_at(&leaves(&t.tracker.at_data())));
                }
                if moved && at_end && relay {
                    // Its readers rebuild their provisional state from this flush every run, so
                    // a quiet task flushes too, saying nothing changed.
                    sink.provisional(Some(!t.quiet))?;
                    let flushed = t.g.advance(&leaves(&wms), sink);
                    sink.provisional(None)?;
                    flushed?;
                } else if moved && !(t.quiet && at_end) {
                    // A quiet task is not flushed (+inf): that flush's output is out there already.
                    t.g.advance(&leaves(&wms), sink)?;
                }
                if moved {
                    t.last_wm = Some(wms);
                }
                if moved || resend {
                    let out_wm = t.end_wm.unwrap_or_else(|| t.g.output_watermark());
                    sink.watermark(p, out_wm, t.tracker.idle(self.follow, caught_up))?;
                }
                self.late.extend(t.g.take_late());
            }
            sink.task(None);
            *self.control.metrics.lock() = self.metrics();
            if interval.is_some_and(|i| last_checkpoint.elapsed() >= i) {
                let all: Vec<usize> = self.tasks.keys().copied().collect();
                self.checkpoint(&all, sink)?;
                last_checkpoint = Instant::now();
            }
            if done {
                return Ok(());
            }
            if !progressed {
                self.src.wait(Duration::from_millis(50));
            }
        }
    }

    /// A batch of source `k` as the tasks take it: wide key columns, rows without an event time
    /// to the error policy.
    fn intake(
        &mut self,
        k: usize,
        b: arrow_array::RecordBatch,
    ) -> Result<arrow_array::RecordBatch> {
        let b = crate::keys::wide_batch(b)?;
        let Some(c) = &self.inputs[k].ts else {
            return Ok(b);
        };
        let n = b.num_rows();
        let b = without_null_times(b, c, &self.pipeline.sources[k], &self.on_error)?;
        self.null_times += (n - b.num_rows()) as u64;
        Ok(b)
    }

    /// A task for partition `p`, from the partition's newest checkpoint if it has one (the
    /// source then continues at the checkpoint's offset).
    fn new_task(&mut self, p: usize) -> Result<Task> {
        let mut g = Graph::compile(
            &self.pipeline.plan,
            &self.pipeline.sources,
            &self.pipeline.udfs,
            self.on_error.clone(),
        )?;
        let mut tracker = WatermarkTracker::new();
        for (k, i) in self.inputs.iter().enumerate() {
            tracker.add_source(1, i.lateness, i.idle_timeout);
            if self.src.carries_watermarks() {
                tracker.carries_watermarks(k);
            }
        }
        let mut plan_text = self.plan_text.clone();
        let task = |mut g: Graph, tracker, store, seq, plan_text| {
            // Restored: the output (Kafka, never rolled back) may hold rows of what the state
            // holds open, from the end-of-input flush of the run that checkpointed it (`quiet`
            // when that flush went out), one cut short by a crash, or updates since.
            if seq > 0 {
                g.open_was_emitted();
            }
            Task {
                g,
                tracker,
                last_wm: None,
                quiet: matches!(&store, Some(s) if seq > 0 && CheckpointStore::is_flushed(s, seq)),
                store,
                seq,
                plan_text,
                ended: false,
                end_wm: None,
                provisional: Vec::new(),
            }
        };
        let Some(cfg) = &self.control.checkpoint else {
            return Ok(task(g, tracker, None, 0, plan_text));
        };
        let store = CheckpointStore::open(cfg.dir.join(format!("p{p}")))?;
        let (latest, notes) = store.latest()?;
        self.control.notes.lock().extend(notes);
        if let Some(c) = latest {
            // Every partition's checkpoints are of the same plan: say what changed once.
            let what = format!("the checkpoints in {}", cfg.dir.display());
            let (fit, notes) =
                self.pipeline
                    .fit(&mut g, &mut plan_text, &c, &what, self.on_error.clone())?;
            let mut said = self.control.notes.lock();
            for n in notes {
                if !said.contains(&n) {
                    said.push(n);
                }
            }
            drop(said);
            g.restore(&c.operators, &fit)?;
            for (k, s) in c.sources.iter().enumerate().take(self.inputs.len()) {
                if let Some(t) = s.max_ts.first() {
                    tracker.observe(k, 0, *t);
                }
                if let Some(&pos) = s.positions.first().filter(|&&o| o >= 0) {
                    self.src.seek(k * self.parts + p, pos)?;
                    self.src.restore_committed(k * self.parts + p, &s.committed);
                }
            }
            return Ok(task(g, tracker, Some(store), c.seq, plan_text));
        }
        Ok(task(g, tracker, Some(store), 0, plan_text))
    }

    /// Checkpoint the tasks of `partitions`: flush the output first (the sink's checkpoint),
    /// then write each task's state with its source offset, then commit those offsets.
    fn checkpoint(&mut self, partitions: &[usize], sink: &mut dyn Sink) -> Result<()> {
        self.write_checkpoints(partitions, false, sink)
    }

    /// Checkpoint the tasks of `partitions` whose input has not ended (and that are not quiet,
    /// unless `quiet_too`).
    fn write_checkpoints(
        &mut self,
        partitions: &[usize],
        quiet_too: bool,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        if partitions.is_empty() || self.control.checkpoint.is_none() {
            return Ok(());
        }
        let t0 = Instant::now();
        sink.checkpoint()?;
        let positions = self.src.positions().unwrap_or_default();
        let mut commits = Vec::new();
        for p in partitions {
            // A task whose input ended keeps the checkpoint taken before its end-of-input flush
            // (a later run continues from there; after the flush its watermark is +inf).
            let Some(t) = self
                .tasks
                .get_mut(p)
                .filter(|t| !t.ended && (quiet_too || !t.quiet))
            else {
                continue;
            };
            let pos: Vec<i64> = (0..self.inputs.len())
                .map(|k| positions.get(k * self.parts + p).copied().unwrap_or(-1))
                .collect();
            if let Some(store) = &t.store {
                t.seq += 1;
                let t1 = Instant::now();
                let size = store.write(&Checkpoint {
                    version: crate::checkpoint::VERSION,
                    seq: t.seq,
                    plan: t.plan_text.clone(),
                    sources: pos
                        .iter()
                        .enumerate()
                        .map(|(k, &o)| SourceState {
                            positions: vec![o],
                            max_ts: t.tracker.max_ts(k),
                            committed: self.src.committed(k * self.parts + p),
                        })
                        .collect(),
                    sinks: Vec::new(),
                    operators: t.g.snapshot()?,
                })?;
                self.control
                    .checkpoint_stats
                    .lock()
                    .wrote(t1.elapsed(), size);
                // What it wrote before this checkpoint is in it now (its input read, its state
                // taken): its readers may take it in.
                sink.commit(*p, t.seq, false)?;
            }
            for (k, &o) in pos.iter().enumerate() {
                if o >= 0 {
                    commits.push((k * self.parts + p, o));
                }
            }
        }
        // Written on this thread: processing waits for all of it.
        self.control.checkpoint_stats.lock().paused(t0.elapsed());
        self.src.commit(&commits)
    }

    /// Checkpoint quiet task `p` where its reading got to; its state is what its last flush
    /// emitted, so the checkpoint is marked flushed at once.
    fn checkpoint_quiet(&mut self, p: usize, sink: &mut dyn Sink) -> Result<()> {
        if !self
            .tasks
            .get(&p)
            .is_some_and(|t| t.quiet && t.store.is_some())
        {
            return Ok(());
        }
        self.write_checkpoints(&[p], true, sink)?;
        let t = self.tasks.get_mut(&p).expect("the task checkpointed above");
        match &t.store {
            Some(store) => store.mark_flushed(t.seq),
            None => Ok(()),
        }
    }

    /// Each operator's metrics summed over the tasks (watermark: the lowest).
    fn metrics(&self) -> Vec<OpMetrics> {
        let mut out: Vec<OpMetrics> = Vec::new();
        for t in self.tasks.values() {
            let m = t.g.metrics();
            if out.is_empty() {
                out = m;
                continue;
            }
            for (o, m) in out.iter_mut().zip(m) {
                o.records_in += m.records_in;
                o.records_out += m.records_out;
                o.late_records += m.late_records;
                o.errors += m.errors;
                o.state_entries += m.state_entries;
                o.watermark = match (o.watermark, m.watermark) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        if out.is_empty() {
            // No partition assigned: the source's operator still says so.
            out.push(OpMetrics {
                operator: "read".into(),
                ..Default::default()
            });
        }
        if let Some(first) = out.first_mut() {
            first.errors += self.src.errors() + self.null_times;
            first.partitions = Some(self.tasks.keys().copied().collect());
        }
        out
    }
}
