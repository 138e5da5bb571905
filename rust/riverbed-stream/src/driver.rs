//! The driver of a run in one process: sources polled round-robin into the graph (on one
//! thread, or split between worker threads), checkpoints taken and restored, and, for a Kafka
//! group member, the hand-over to the group driver (`tasks.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, SourceState};
use crate::engine::{Engine, Local};
use crate::error::{Result, StreamError};
use crate::errors::{ErrorHandler, ErrorPolicy};
use crate::keys::FastMap;

use crate::control::{RunControl, RunOutput};
use crate::graph::Graph;
use crate::intake::{metrics_with_sources, stamp, without_null_times};
use crate::pipeline::Pipeline;
use crate::sink::Sink;
use crate::source::{Polled, SourceSpec};
use crate::watermark::WatermarkTracker;

impl Pipeline {
    /// Run until the inputs end (bounded) or `control.stop` is set (follow).
    pub fn run(
        &self,
        sink: &mut dyn Sink,
        follow: bool,
        control: &RunControl,
    ) -> Result<RunOutput> {
        if let Some(group) = self.sources.iter().find_map(|s| match s {
            SourceSpec::External(e) => e.group(),
            _ => None,
        }) {
            // Several sources are read together, partition p of each in one task: all of them
            // topics of this group.
            for s in &self.sources {
                let theirs = match s {
                    SourceSpec::External(e) => e.group(),
                    _ => None,
                };
                if theirs.as_deref() != Some(group.as_str()) {
                    let what = match (s, theirs) {
                        (SourceSpec::External(e), Some(other)) => {
                            format!("{} is read by group '{other}'", e.describe())
                        }
                        (SourceSpec::External(e), None) => {
                            format!("{} is read without a group", e.describe())
                        }
                        _ => "one of its sources is not a topic".to_string(),
                    };
                    return Err(StreamError::plan(
                        "read",
                        format!("group '{group}': a group run reads topics of its group only, and {what}; read every topic of a join or union with group='{group}'"),
                    ));
                }
            }
            // Internal topics are named after the run (its checkpoints' name), else its group.
            let name = control
                .checkpoint
                .as_ref()
                .and_then(|c| c.dir.file_name())
                .map_or_else(
                    || format!("group-{group}"),
                    |n| n.to_string_lossy().into_owned(),
                );
            let stages = crate::stages::cut(&self.plan, &group, &name)?;
            if stages.len() == 1 {
                crate::staged::check_form(control, false)?;
                return crate::tasks::run_group(self, sink, follow, control);
            }
            let Some(connector) = &self.connector else {
                return Err(StreamError::plan(
                    "read",
                    format!("group '{group}': this plan needs a repartition (an operator keyed by other columns than the topic's partitioning), and this source cannot create internal topics"),
                ));
            };
            return crate::staged::run_staged(
                self,
                stages,
                connector.as_ref(),
                sink,
                follow,
                control,
            );
        }
        let on_error = control
            .on_error
            .clone()
            .unwrap_or_else(|| ErrorHandler::new(ErrorPolicy::Raise));
        let mut g = Graph::compile(&self.plan, &self.sources, &self.udfs, on_error.clone())?;
        let mut tracker = WatermarkTracker::new();
        tracker.set_end(control.end_watermark);
        // A named pipeline resumes from its last checkpoint (its sinks rolled back to it first).
        let mut plan_text = self.explain();
        let (store, resume) = match &control.checkpoint {
            None => (None, None),
            Some(cfg) => {
                let store = CheckpointStore::open(&cfg.dir)?;
                if cfg.reset {
                    store.clear()?;
                }
                let (latest, notes) = store.latest()?;
                if latest.is_none() && !notes.is_empty() {
                    // Starting over would write the whole output again after what is there.
                    return Err(StreamError::Checkpoint(format!(
                        "every checkpoint in {} is unusable ({}); pass reset=True to start over (the output topics keep what they hold)",
                        cfg.dir.display(),
                        notes.join("; ")
                    )));
                }
                control.notes.lock().extend(notes);
                let fit = match &latest {
                    Some(c) => {
                        let what = format!("checkpoint {} in {}", c.seq, cfg.dir.display());
                        let (fit, notes) =
                            self.fit(&mut g, &mut plan_text, c, &what, on_error.clone())?;
                        control.notes.lock().extend(notes);
                        fit
                    }
                    None => Vec::new(),
                };
                (Some(store), latest.map(|c| (c, fit)))
            }
        };
        let mut srcs = Vec::new();
        let mut uses = Vec::new();
        for (i, spec) in self.sources.iter().enumerate() {
            let Some(u) = g.sources.get(i).cloned().flatten() else {
                continue;
            };
            let k = srcs.len();
            let start = resume.as_ref().and_then(|(c, _)| c.sources.get(k));
            srcs.push((
                i,
                spec.open(follow, &on_error, start.map(|s| s.positions.as_slice()))?,
            ));
            tracker.add_source(
                spec.partitions(),
                u.lateness,
                Duration::from_millis(u.idle_timeout as u64),
            );
            if srcs[k].1.carries_watermarks() {
                tracker.carries_watermarks(k);
            }
            if let Some(s) = start {
                for (p, t) in s.max_ts.iter().enumerate() {
                    tracker.observe(k, p, *t);
                }
            }
            uses.push(u);
        }
        if store.is_some() {
            if let Some((i, _)) = srcs.iter().find(|(_, s)| s.positions().is_none()) {
                return Err(StreamError::plan(
                    "checkpoint",
                    format!("source #{i} cannot resume (a Python iterator or stream); a named pipeline needs topics or tables"),
                ));
            }
        }
        let mut seq = 0;
        if let Some((c, fit)) = &resume {
            // State first: a checkpoint whose state cannot be restored is refused before the
            // output topics are rolled back to it (a refused restart leaves them as they were).
            g.restore(&c.operators, fit)?;
            sink.rollback(&c.sinks)?;
            // Another output topic than the checkpoint's (a grown plan may mean it): it gets
            // only what follows the checkpoint; what came before is in the old one. Said.
            let was: Vec<&str> = c.sinks.iter().map(|(n, _)| n.as_str()).collect();
            let now = sink.topic_names();
            if !was.is_empty() && !now.is_empty() && !now.iter().any(|n| was.contains(&n.as_str()))
            {
                control.notes.lock().push(format!(
                    "checkpoint {} was taken writing to output topic {was:?}: this run writes to {now:?} only what follows it (what came before is in {was:?})",
                    c.seq
                ));
            }
            seq = c.seq;
        }
        // Resumed after a bounded run whose end-of-input flush reached the sink: until a record
        // arrives, the state is what that flush emitted, so it is not flushed (+inf) again and
        // no checkpoint is taken (`quiet`). A log topic sink was rolled back to before that flush
        // instead, so it gets the flush again.
        let mut quiet = match (&store, &resume) {
            (Some(s), Some((c, _))) => s.is_flushed(c.seq) && sink.topic_names().is_empty(),
            _ => false,
        };
        // A sink that cannot be rolled back may hold rows of what the state holds open: from
        // that flush, from one cut short by a crash, or from updates after the checkpoint. They
        // are retracted if they change identity (retracting a row never sent deletes nothing).
        if resume.is_some() && sink.topic_names().is_empty() {
            g.open_was_emitted();
        }
        // A named run checkpoints its one graph; any other run splits it between workers (by
        // default as many as the inputs have partitions, up to one per core: a partition's
        // records are read in order by one worker).
        let partitions: usize = srcs
            .iter()
            .map(|(i, _)| self.sources[*i].partitions())
            .sum();
        let workers = match control.workers {
            0 => control.workers().min(partitions.max(1)),
            n => n,
        };
        let mut engine: Box<dyn Engine> = if store.is_none() && workers > 1 {
            let mut graphs = vec![g];
            for _ in 1..workers {
                graphs.push(Graph::compile(
                    &self.plan,
                    &self.sources,
                    &self.udfs,
                    on_error.clone(),
                )?);
            }
            let order = self
                .ts
                .clone()
                .filter(|_| crate::workers::emits_in_time_order(&self.plan));
            Box::new(crate::workers::Pool::start(graphs, order)?)
        } else {
            Box::new(Local(g))
        };
        let store = store.map(Arc::new);
        let stats = control.checkpoint_stats.clone();
        let mut writer = store
            .clone()
            .map(|s| CheckpointWriter::new(s, stats.clone()));
        // Take a checkpoint: copy the state here (the run pauses only for that); `wait`: write
        // it before going on, else on the writer thread, unless that is still writing the last
        // one (one in flight at a time: a slow disk spaces checkpoints out instead of stalling
        // the run). Whether one was taken.
        let mut checkpoint = |g: &dyn Engine,
                              sink: &mut dyn Sink,
                              srcs: &[(usize, Box<dyn crate::source::Source>)],
                              tracker: &WatermarkTracker,
                              wait: bool|
         -> Result<bool> {
            let (Some(store), Some(w)) = (&store, writer.as_mut()) else {
                return Ok(false);
            };
            if !wait && w.busy() {
                return Ok(false);
            }
            seq += 1;
            let t0 = std::time::Instant::now();
            let (sinks, durable) = sink.checkpoint()?;
            let c = Checkpoint {
                version: crate::checkpoint::VERSION,
                seq,
                plan: plan_text.clone(),
                sources: srcs
                    .iter()
                    .enumerate()
                    .map(|(k, (_, s))| SourceState {
                        positions: s.positions().unwrap_or_default(),
                        max_ts: tracker.max_ts(k),
                        committed: Vec::new(),
                    })
                    .collect(),
                sinks,
                operators: g.snapshot()?,
            };
            if wait {
                w.finish()?;
                for t in &durable {
                    t.sync()?;
                }
                let size = store.write(&c)?;
                stats.lock().wrote(t0.elapsed(), size);
                *w = CheckpointWriter::new(store.clone(), stats.clone());
            } else {
                w.submit(c, durable)?;
                stats.lock().paused(t0.elapsed());
            }
            Ok(true)
        };
        // The first checkpoint records where the sinks ended before this run wrote anything.
        if resume.is_none() {
            checkpoint(&*engine, sink, &srcs, &tracker, true)?;
        }
        let interval = control.checkpoint.as_ref().map(|c| c.interval);
        let mut last_checkpoint = std::time::Instant::now();
        let mut ended = false;
        let mut late = Vec::new();
        let mut done = vec![false; srcs.len()];
        // Per source: records dropped for a null event time.
        let mut null_times = vec![0u64; srcs.len()];
        let mut last_wm: Vec<i64> = Vec::new();
        loop {
            if control.stop.load(Ordering::Acquire) {
                break;
            }
            let mut progressed = false;
            for (k, (si, src)) in srcs.iter_mut().enumerate() {
                if done[k] {
                    continue;
                }
                match src.poll()? {
                    // Provisional rows come only from a repartition topic, which group runs read.
                    Polled::Batch(p, b) | Polled::Provisional(p, b, _) => {
                        quiet = false;
                        let b = crate::keys::wide_batch(b)?;
                        let b = match &uses[k].ts {
                            Some(c) => {
                                let n = b.num_rows();
                                let b = without_null_times(b, c, &self.sources[*si], &on_error)?;
                                null_times[k] += (n - b.num_rows()) as u64;
                                b
                            }
                            None => b,
                        };
                        let b = stamp(&mut tracker, k, p, b, uses[k].ts.as_deref())?;
                        engine.push(uses[k].leaf, p, b, sink)?;
                        progressed = true;
                    }
                    Polled::PartitionDone(p) => {
                        tracker.finish_partition(k, p);
                        progressed = true;
                    }
                    Polled::Watermark(p, wm, idle) => {
                        tracker.report(k, p, wm, idle);
                        progressed = true;
                    }
                    Polled::Idle => {}
                    Polled::Done => {
                        done[k] = true;
                        tracker.finish_source(k);
                        progressed = true;
                    }
                }
            }
            // A bounded input is all in: checkpoint before the end-of-input flush, so running the
            // pipeline again by name with more input rolls the flushed output back and goes on
            // as if the stream had continued (the flush is provisional).
            if !ended && !follow && tracker.all_done() {
                if !quiet {
                    checkpoint(&*engine, sink, &srcs, &tracker, true)?;
                }
                ended = true;
            }
            let wms = tracker.watermarks(follow, |k, p| {
                srcs.get(k).is_none_or(|(_, s)| s.caught_up(p))
            });
            if wms != last_wm && !(quiet && wms.contains(&i64::MAX)) {
                let leaf_wm: FastMap<usize, i64> = uses
                    .iter()
                    .map(|u| u.leaf)
                    .zip(wms.iter().copied())
                    .collect();
                engine.advance(&leaf_wm, sink)?;
                last_wm = wms;
            }
            late.extend(engine.take_late(sink)?);
            *control.metrics.lock() = metrics_with_sources(&*engine, &srcs, &uses, &null_times);
            if !ended
                && !quiet
                && interval.is_some_and(|i| last_checkpoint.elapsed() >= i)
                && checkpoint(&*engine, sink, &srcs, &tracker, false)?
            {
                last_checkpoint = std::time::Instant::now();
            }
            if tracker.all_done() && done.iter().all(|&d| d) {
                break;
            }
            if !progressed {
                if !follow {
                    break;
                }
                if let Some((_, s)) = srcs
                    .iter_mut()
                    .zip(&done)
                    .find(|(_, d)| !**d)
                    .map(|(s, _)| s)
                {
                    s.wait(Duration::from_millis(50));
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        late.extend(engine.finish(sink)?);
        // On stop() (not after an error: the last good one stands; the end of a bounded input
        // was checkpointed before its flush).
        if !ended && !quiet {
            checkpoint(&*engine, sink, &srcs, &tracker, true)?;
        }
        sink.close()?;
        if let Some(store) = store.as_ref().filter(|_| ended && !quiet) {
            store.mark_flushed(seq)?;
        }
        let metrics = metrics_with_sources(&*engine, &srcs, &uses, &null_times);
        *control.metrics.lock() = metrics.clone();
        let notes = std::mem::take(&mut *control.notes.lock());
        Ok(RunOutput {
            notes,
            late,
            metrics,
            checkpoints: control.checkpoint_stats.lock().clone(),
        })
    }
}
