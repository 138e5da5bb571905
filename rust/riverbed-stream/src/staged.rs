//! The driver of a staged run: a consumer-group run cut into stages (`stages.rs`) that pass
//! records through internal topics. Each stage is a group run of its own (`tasks.rs`), with
//! its own consumer group and checkpoints (`<name>.stage<k>`). Following, every stage runs at
//! once; bounded, one after the other (each reads what the one before wrote). One stage's
//! failure stops the others and is the run's error.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_schema::SchemaRef;

use crate::checkpoint::CheckpointStats;
use crate::connector::Connector;
use crate::control::{CheckpointConfig, RunControl, RunOutput};
use crate::error::{Result, StreamError};
use crate::pipeline::Pipeline;
use crate::plan::Node;
use crate::sink::Sink;
use crate::source::SourceSpec;
use crate::stages::{with_event_time, Stage};

/// How often a running stage's metrics are passed up and a stop passed down.
const WATCH: Duration = Duration::from_millis(20);

/// The longest a stage writing a repartition topic goes between checkpoints: its readers take
/// in its rows only once a checkpoint commits them (read-committed, see riverbed-kafka's
/// `read_committed`), so this bounds the delay a repartition adds in follow mode. Kafka
/// Streams' `commit.interval.ms` under exactly-once is 100 ms.
const WRITER_COMMIT: Duration = Duration::from_millis(500);

/// The checkpoint directory of stage `k` of the run checkpointed in `dir`.
fn stage_dir(dir: &Path, k: usize) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.stage{k}"))
}

/// Checkpoints of this run in the other form — with stages for a plan that has none now, or the
/// other way round — mean the plan changed into or out of a repartition. Each form's checkpoints
/// live apart and the group's offsets were committed with the old ones, so going on would skip
/// the input they cover: refused, unless `reset` (the old form's checkpoints are forgotten; a
/// staged run cannot start over yet, see `run_staged`).
pub(crate) fn check_form(control: &RunControl, staged: bool) -> Result<()> {
    let Some(cfg) = &control.checkpoint else {
        return Ok(());
    };
    let others: Vec<PathBuf> = if staged {
        vec![cfg.dir.clone()]
    } else {
        (0..)
            .map(|k| stage_dir(&cfg.dir, k))
            .take_while(|d| d.exists())
            .collect()
    };
    let held = |d: &PathBuf| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some());
    let Some(other) = others.iter().find(|d| held(d)) else {
        return Ok(());
    };
    if cfg.reset && !staged {
        for d in &others {
            std::fs::remove_dir_all(d).map_err(|e| StreamError::io("clear", d, e))?;
        }
        return Ok(());
    }
    let (was, is) = if staged {
        ("without a repartition", "repartitions its input")
    } else {
        ("with a repartition", "has none")
    };
    Err(StreamError::Checkpoint(format!(
        "the plan changed since the checkpoints in {}: they are of a plan {was}, this one {is}; pass reset=True to start over (the output topics keep what they hold)",
        other.display()
    )))
}

/// A stage's `drop` of the record columns, reduced to those its input has.
fn resolve_drop(
    plan: Node,
    spec: &SourceSpec,
    udfs: &[std::sync::Arc<dyn crate::BatchUdf>],
) -> Result<Node> {
    let Node::Drop { input, columns } = plan else {
        return Ok(plan);
    };
    let feed = Pipeline::new((*input).clone(), vec![spec.clone()], udfs.to_vec())?;
    let Some(schema) = feed.schema() else {
        return Err(StreamError::plan(
            "repartition",
            "a Python function (map/map_batches) before a keyed operator that needs a repartition decides its output columns only at run time, and a repartition topic needs them before the run; do that step with expressions (with_columns, filter, select) or after the keyed operator",
        ));
    };
    let present: Vec<String> = columns
        .into_iter()
        .filter(|c| schema.index_of(c).is_ok())
        .collect();
    Ok(if present.is_empty() {
        *input
    } else {
        Node::Drop {
            input,
            columns: present,
        }
    })
}

/// A stage ready to run, with the internal sink it writes (none for the last).
type Built = (Pipeline, Option<Box<dyn Sink>>);

/// The stages as pipelines, each with the internal sink it writes (none for the last), their
/// topics created: every plan error shows before anything runs.
fn build(pipeline: &Pipeline, stages: Vec<Stage>, connector: &dyn Connector) -> Result<Vec<Built>> {
    let partitions = pipeline.sources[0].partitions();
    let mut out = Vec::new();
    // What the stage before wrote: its schema and event-time column.
    let mut prev: Option<(SchemaRef, Option<String>)> = None;
    for st in stages {
        let (spec, plan) = match (&st.reads, &prev) {
            (Some(topic), Some((schema, ts))) => (
                connector.source(topic, &st.group, schema.clone(), partitions)?,
                with_event_time(&st.plan, ts.as_deref()),
            ),
            _ => (pipeline.sources[0].clone(), st.plan),
        };
        let plan = resolve_drop(plan, &spec, &pipeline.udfs)?;
        let p = Pipeline::new(plan, vec![spec], pipeline.udfs.clone())?;
        let sink = match &st.writes {
            Some((topic, key)) => {
                let schema = p.schema().ok_or_else(|| {
                    StreamError::Internal("a stage writing an internal topic has no schema".into())
                })?;
                let ts = p.event_time_column().map(str::to_string);
                connector.ensure_topic(topic, partitions)?;
                let sink = connector.sink(topic, key, ts.clone(), partitions)?;
                prev = Some((schema, ts));
                Some(sink)
            }
            None => None,
        };
        out.push((p, sink));
    }
    Ok(out)
}

pub(crate) fn run_staged(
    pipeline: &Pipeline,
    stages: Vec<Stage>,
    connector: &dyn Connector,
    sink: &mut dyn Sink,
    follow: bool,
    control: &RunControl,
) -> Result<RunOutput> {
    if control.checkpoint.as_ref().is_some_and(|c| c.reset) {
        return Err(StreamError::plan(
            "reset",
            "reset=True is not supported yet for a group run that repartitions: its internal topics still hold what the last run wrote, which the restarted stages would count again; start over under a new group (and name=) instead",
        ));
    }
    check_form(control, true)?;
    let built = build(pipeline, stages, connector)?;
    let n = built.len();
    let controls: Vec<RunControl> = (0..n)
        .map(|k| RunControl {
            end_watermark: control.end_watermark,
            on_error: control.on_error.clone(),
            checkpoint: control.checkpoint.as_ref().map(|c| CheckpointConfig {
                dir: stage_dir(&c.dir, k),
                // A stage's rows reach the next one when its checkpoint commits them.
                interval: if k + 1 < n {
                    c.interval.min(WRITER_COMMIT)
                } else {
                    c.interval
                },
                ..c.clone()
            }),
            workers: control.workers,
            ..Default::default()
        })
        .collect();
    let (pipelines, internal): (Vec<Pipeline>, Vec<Option<Box<dyn Sink>>>) =
        built.into_iter().unzip();
    let mut internal: Vec<Box<dyn Sink>> = internal.into_iter().flatten().collect();
    let mut sinks: Vec<Option<&mut dyn Sink>> = internal
        .iter_mut()
        .map(|b| Some(b.as_mut() as &mut dyn Sink))
        .collect();
    sinks.push(Some(sink));
    // Following, all at once; bounded, one after the other.
    let turns: Vec<Vec<usize>> = if follow {
        vec![(0..n).collect()]
    } else {
        (0..n).map(|k| vec![k]).collect()
    };
    let mut results: Vec<Option<Result<RunOutput>>> = (0..n).map(|_| None).collect();
    for turn in turns {
        if control.stop.load(Ordering::Acquire) || results.iter().flatten().any(|r| r.is_err()) {
            break;
        }
        let jobs = turn
            .into_iter()
            .map(|k| {
                (
                    k,
                    &pipelines[k],
                    sinks[k].take().expect("each stage runs once"),
                )
            })
            .collect();
        for (k, r) in together(jobs, &controls, control, follow) {
            results[k] = Some(r);
        }
    }
    let mut outputs = Vec::new();
    for r in results.into_iter().flatten() {
        outputs.push(r?);
    }
    let mut notes: Vec<String> = Vec::new();
    for n in outputs.iter().flat_map(|o| o.notes.iter()) {
        if !notes.contains(n) {
            notes.push(n.clone());
        }
    }
    Ok(RunOutput {
        notes,
        late: outputs
            .iter_mut()
            .flat_map(|o| std::mem::take(&mut o.late))
            .collect(),
        metrics: outputs
            .iter()
            .flat_map(|o| o.metrics.iter().cloned())
            .collect(),
        checkpoints: merged(
            &outputs
                .iter()
                .map(|o| o.checkpoints.clone())
                .collect::<Vec<_>>(),
        ),
    })
}

/// Run `jobs` (stage index, pipeline, sink) at once on threads of their own, passing the
/// parent's stop down and the stages' metrics up while they run; a stage that fails stops the
/// others. Their results, by stage index.
fn together(
    jobs: Vec<(usize, &Pipeline, &mut dyn Sink)>,
    controls: &[RunControl],
    parent: &RunControl,
    follow: bool,
) -> Vec<(usize, Result<RunOutput>)> {
    let stop_all = || {
        for c in controls {
            c.stop.store(true, Ordering::Release);
        }
    };
    std::thread::scope(|s| {
        let mut running: Vec<_> = jobs
            .into_iter()
            .map(|(k, p, sink)| {
                let ctl = &controls[k];
                let h = std::thread::Builder::new()
                    .name(format!("riverbed-stage{k}"))
                    .spawn_scoped(s, move || p.run(sink, follow, ctl));
                (k, h)
            })
            .collect();
        let mut done = Vec::new();
        loop {
            let mut i = 0;
            while i < running.len() {
                let finished = match &running[i].1 {
                    Ok(h) => h.is_finished(),
                    Err(_) => true,
                };
                if !finished {
                    i += 1;
                    continue;
                }
                let (k, h) = running.swap_remove(i);
                let r = match h {
                    Ok(h) => h.join().unwrap_or_else(|p| {
                        Err(StreamError::panicked(format!("the thread of stage {k}"), p))
                    }),
                    Err(e) => Err(StreamError::Internal(format!(
                        "cannot start the thread of stage {k}: {e}"
                    ))),
                };
                if r.is_err() {
                    stop_all();
                }
                done.push((k, r));
            }
            if parent.stop.load(Ordering::Acquire) {
                stop_all();
            }
            *parent.metrics.lock() = controls
                .iter()
                .flat_map(|c| c.metrics.lock().clone())
                .collect();
            *parent.checkpoint_stats.lock() = merged(
                &controls
                    .iter()
                    .map(|c| c.checkpoint_stats.lock().clone())
                    .collect::<Vec<_>>(),
            );
            if running.is_empty() {
                return done;
            }
            std::thread::sleep(WATCH);
        }
    })
}

/// The checkpoint costs of several stages as one run's: counts summed, the longest kept, the
/// newest figures of the last stage that wrote any.
fn merged(stats: &[CheckpointStats]) -> CheckpointStats {
    let mut out = stats
        .iter()
        .rev()
        .find(|s| s.written > 0)
        .cloned()
        .unwrap_or_default();
    out.written = stats.iter().map(|s| s.written).sum();
    out.max_pause_ms = stats.iter().map(|s| s.max_pause_ms).fold(0.0, f64::max);
    out.max_write_ms = stats.iter().map(|s| s.max_write_ms).fold(0.0, f64::max);
    out
}
