//! Compiling a plan into a graph of operators, and running it: sources are polled round-robin,
//! batches are pushed leaf-to-root through the operators, and the watermark is advanced through
//! the graph (children before parents) after every step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parking_lot::Mutex;

use crate::buffered::{BufferedKind, BufferedWindows};
use crate::checkpoint::{
    Checkpoint, CheckpointStats, CheckpointStore, CheckpointWriter, OperatorState, SourceState,
};
use crate::engine::{Engine, Local};
use crate::error::{Result, StreamError};
use crate::errors::{ErrorHandler, ErrorPolicy};
use crate::exchange::Route;
use crate::keys::{event_times, FastMap};
use crate::operator::{BatchUdf, Filter, MapBatches, OpMetrics, Operator, Project, Projection};
use crate::plan::{Node, WindowSpec};
use crate::sink::Sink;
use crate::source::{Polled, SourceSpec};
use crate::watermark::WatermarkTracker;
use crate::window::{GroupBy, SessionWindows, TimeWindows, WindowCore};

/// Counts what passes through (sources and unions).
struct Passthrough {
    m: OpMetrics,
}

impl Operator for Passthrough {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.m.records_in += batch.num_rows() as u64;
        self.m.records_out += batch.num_rows() as u64;
        out.push(batch);
        Ok(())
    }
    fn keeps_rows(&self) -> bool {
        true
    }
    fn metrics(&self) -> OpMetrics {
        self.m.clone()
    }
}

/// An operator downstream of a UDF whose output schema is only known from its first batch.
struct Lazy {
    node: Node,
    ts: Option<String>,
    udfs: Vec<Arc<dyn BatchUdf>>,
    ctx: OpCtx,
    inner: Option<Box<dyn Operator>>,
    name: String,
    /// State restored before the operator exists (it is built from the first batch).
    pending: Vec<u8>,
}

impl Lazy {
    /// Build the operator from the first batch's schema.
    fn build(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.inner.is_none() {
            let (op, _, _) = build_single(
                &self.node,
                &batch.schema(),
                self.ts.clone(),
                &self.udfs,
                &self.ctx,
            )?;
            self.inner = Some(op);
            if !self.pending.is_empty() {
                let state = std::mem::take(&mut self.pending);
                if let Some(op) = self.inner.as_mut() {
                    op.restore(&state)?;
                }
            }
        }
        Ok(())
    }
}

impl Operator for Lazy {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.on_input_timed(0, batch, None, out)
    }
    fn on_input_timed(
        &mut self,
        side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.build(&batch)?;
        match self.inner.as_mut() {
            // A filter or projection after the function: the stream times go through it.
            Some(op) if op.keeps_rows() => {
                let batch = match stream {
                    Some(st) => crate::watermark::with_stream_times(batch, st.to_vec().into()),
                    None => batch,
                };
                op.on_input(side, batch, out)
            }
            Some(op) => op.on_input_timed(side, batch, stream, out),
            None => Ok(()),
        }
    }
    fn input_watermarks(&mut self, wms: &[i64]) {
        if let Some(op) = self.inner.as_mut() {
            op.input_watermarks(wms);
        }
    }
    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self.inner.as_mut() {
            Some(op) => op.on_watermark(wm, out),
            None => Ok(()),
        }
    }
    fn output_watermark(&self, wm: i64) -> i64 {
        self.inner.as_ref().map_or(wm, |op| op.output_watermark(wm))
    }
    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.inner
            .as_mut()
            .map(|op| op.take_late())
            .unwrap_or_default()
    }
    fn snapshot(&self) -> Result<Vec<u8>> {
        match &self.inner {
            Some(op) => op.snapshot(),
            None => Ok(self.pending.clone()),
        }
    }
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        match self.inner.as_mut() {
            Some(op) => op.restore(state),
            None => {
                self.pending = state.to_vec();
                Ok(())
            }
        }
    }
    fn metrics(&self) -> OpMetrics {
        let mut m = self
            .inner
            .as_ref()
            .map(|op| op.metrics())
            .unwrap_or_default();
        m.operator = self.name.clone();
        m
    }
}

fn positive(op: &str, field: &str, v: i64) -> Result<()> {
    if v <= 0 {
        return Err(StreamError::plan(
            op,
            format!("{field} must be positive, got {v}"),
        ));
    }
    Ok(())
}

fn non_negative(op: &str, field: &str, v: i64) -> Result<()> {
    if v < 0 {
        return Err(StreamError::plan(
            op,
            format!("{field} must not be negative, got {v}"),
        ));
    }
    Ok(())
}

/// A built operator, its output schema (if known) and the output's event-time column.
type Built = (Box<dyn Operator>, Option<SchemaRef>, Option<String>);

/// Build the operator for a single-input node: (operator, output schema, event-time column).
/// What an operator is told about where it runs: the policy for bad records, the log topic its
/// records come from (when there is exactly one) and its name in metrics.
#[derive(Clone)]
struct OpCtx {
    on_error: Arc<ErrorHandler>,
    origins: Vec<Arc<riverbed_log::Topic>>,
    label: String,
}

fn build_single(
    node: &Node,
    input: &SchemaRef,
    ts: Option<String>,
    udfs: &[Arc<dyn BatchUdf>],
    ctx: &OpCtx,
) -> Result<Built> {
    let on_error = &ctx.on_error;
    let op = node.op_name();
    let m = OpMetrics::default();
    Ok(match node {
        Node::Filter { predicate, .. } => {
            if predicate.has_agg() {
                return Err(StreamError::plan(
                    op,
                    "predicate: aggregates belong in agg(...)",
                ));
            }
            let t = predicate.data_type(input, op)?;
            if t != arrow_schema::DataType::Boolean {
                return Err(StreamError::plan(
                    op,
                    format!("predicate: {predicate} is {t}, not bool"),
                ));
            }
            (
                Box::new(Filter {
                    predicate: predicate.clone(),
                    m,
                }),
                Some(input.clone()),
                ts,
            )
        }
        Node::WithColumns { columns, .. } => {
            project(Projection::WithColumns(columns.clone()), input, ts, op)?
        }
        Node::Select { columns, .. } => {
            project(Projection::Select(columns.clone()), input, ts, op)?
        }
        Node::Drop { columns, .. } => project(Projection::Drop(columns.clone()), input, ts, op)?,
        Node::Rename { mapping, .. } => {
            let ts = ts.map(|t| {
                mapping
                    .iter()
                    .find(|(a, _)| *a == t)
                    .map_or(t.clone(), |(_, b)| b.clone())
            });
            project(Projection::Rename(mapping.clone()), input, ts, op)?
        }
        Node::MapBatches { udf, .. } => {
            let f = udfs.get(*udf).cloned().ok_or_else(|| {
                StreamError::plan(op, format!("udf: no UDF #{udf} was handed over"))
            })?;
            (
                Box::new(MapBatches {
                    udf: f,
                    on_error: on_error.clone(),
                    origins: ctx.origins.clone(),
                    label: ctx.label.clone(),
                    m,
                }),
                None,
                ts,
            )
        }
        Node::KeyBy { columns, .. } => {
            if columns.is_empty() {
                return Err(StreamError::plan(
                    op,
                    "columns: name at least one key column",
                ));
            }
            for c in columns {
                if input.index_of(c).is_err() {
                    let cols: Vec<&str> =
                        input.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(StreamError::plan(
                        op,
                        format!("columns: unknown column '{c}'; the input has {cols:?}"),
                    ));
                }
            }
            (
                Box::new(Passthrough {
                    m: OpMetrics::default(),
                }),
                Some(input.clone()),
                ts,
            )
        }
        Node::Series { by, ops, .. } => {
            let Some(ts_col) = ts.clone() else {
                return Err(StreamError::plan(op, "timestamp: series operators need event time; pass timestamp= to Pipeline.read(...)"));
            };
            let s = crate::series::SeriesOperator::new(input, &ts_col, by, ops.clone(), op)?;
            let schema = s.schema();
            (Box::new(s), Some(schema), ts)
        }
        Node::StatefulMap { by, udf, .. } => {
            let Some(ts_col) = ts.clone() else {
                return Err(StreamError::plan(op, "timestamp: stateful_map needs event time; pass timestamp= to Pipeline.read(...)"));
            };
            let f = udfs.get(*udf).cloned().ok_or_else(|| {
                StreamError::plan(op, format!("udf: no UDF #{udf} was handed over"))
            })?;
            let mut s =
                crate::stateful::StatefulMap::new(input, &ts_col, by, f, on_error.clone(), op)?;
            s.origins = ctx.origins.clone();
            s.label = ctx.label.clone();
            (Box::new(s), None, ts)
        }
        Node::GroupBy { by, aggs, .. } => {
            let g = GroupBy::new(input, by, aggs, op)?;
            let schema = g.schema();
            (Box::new(g), Some(schema), None)
        }
        Node::Window {
            window,
            by,
            emit,
            aggs,
            ..
        } => {
            let Some(ts_col) = ts.clone() else {
                return Err(StreamError::plan(
                    op,
                    "timestamp: windows need event time; pass timestamp= (a column) to Pipeline.read(...)",
                ));
            };
            if input.index_of(&ts_col).is_err() {
                return Err(StreamError::plan(
                    op,
                    format!(
                        "timestamp: the event-time column '{ts_col}' is no longer in the input"
                    ),
                ));
            }
            let core = WindowCore::new(input, &ts_col, by, aggs, op)?;
            let schema = core.schema.clone();
            let w: Box<dyn Operator> = match *window {
                WindowSpec::Tumbling {
                    size_ms,
                    offset_ms,
                    grace_ms,
                } => {
                    positive(op, "size", size_ms)?;
                    non_negative(op, "grace", grace_ms)?;
                    Box::new(TimeWindows::new(
                        core, size_ms, size_ms, offset_ms, grace_ms, *emit,
                    ))
                }
                WindowSpec::Hopping {
                    size_ms,
                    every_ms,
                    offset_ms,
                    grace_ms,
                } => {
                    positive(op, "size", size_ms)?;
                    positive(op, "every", every_ms)?;
                    non_negative(op, "grace", grace_ms)?;
                    if every_ms > size_ms {
                        return Err(StreamError::plan(
                            op,
                            format!("every ({every_ms} ms) must not exceed size ({size_ms} ms)"),
                        ));
                    }
                    Box::new(TimeWindows::new(
                        core, size_ms, every_ms, offset_ms, grace_ms, *emit,
                    ))
                }
                WindowSpec::Sliding { size_ms, grace_ms } => {
                    positive(op, "size", size_ms)?;
                    non_negative(op, "grace", grace_ms)?;
                    Box::new(BufferedWindows::new(
                        core,
                        BufferedKind::Sliding {
                            size: size_ms,
                            grace: grace_ms,
                        },
                    ))
                }
                WindowSpec::Session { gap_ms, grace_ms } => {
                    positive(op, "gap", gap_ms)?;
                    non_negative(op, "grace", grace_ms)?;
                    Box::new(SessionWindows::new(core, gap_ms, grace_ms, *emit))
                }
                WindowSpec::Count { n } => {
                    positive(op, "n", n)?;
                    Box::new(BufferedWindows::new(
                        core,
                        BufferedKind::Count { n: n as usize },
                    ))
                }
            };
            (w, Some(schema), Some("window_start".to_string()))
        }
        Node::Source { .. } | Node::Union { .. } | Node::Join { .. } | Node::Named { .. } => {
            unreachable!("sources, unions and joins are built by the graph")
        }
    })
}

fn project(p: Projection, input: &SchemaRef, ts: Option<String>, op: &str) -> Result<Built> {
    let schema = p.output_schema(input, op)?;
    let ts = ts.filter(|t| schema.index_of(t).is_ok());
    Ok((
        Box::new(Project {
            kind: p,
            m: OpMetrics::default(),
        }),
        Some(schema),
        ts,
    ))
}

struct GNode {
    op: Box<dyn Operator>,
    /// Its name (given with `named`, else `<op>#<index>`; a source: its topic) and its
    /// signature (`signature.rs`): checkpoints keep both, so that a changed plan finds the state
    /// by name and knows whether it still fits. `legacy`: its signature in a version-2
    /// checkpoint (its line of `explain()` then).
    name: String,
    signature: String,
    legacy: String,
    parent: Option<usize>,
    children: Vec<usize>,
    /// Per input (as `children`): where its records go in a parallel run (`exchange.rs`).
    routes: Vec<Route>,
    out_wm: i64,
}

/// Per source (by index): its leaf node and event-time settings.
#[derive(Clone)]
pub(crate) struct SourceUse {
    pub(crate) leaf: usize,
    pub(crate) ts: Option<String>,
    pub(crate) lateness: i64,
    pub(crate) idle_timeout: i64,
}

pub(crate) struct Graph {
    nodes: Vec<GNode>,
    /// Post-order: children before parents.
    order: Vec<usize>,
    root: usize,
    pub(crate) sources: Vec<Option<SourceUse>>,
    out_schema: Option<SchemaRef>,
    out_ts: Option<String>,
    out_key: Vec<String>,
    /// The plan's `explain()` text as checkpoints before version 3 hold it.
    legacy_plan: String,
    /// A worker of a parallel run: what crosses to other workers. `None`: the graph runs whole.
    pub(crate) outbox: Option<Outbox>,
}

/// What a worker's graph hands to other workers (`workers.rs` sends it), and the watermarks of
/// its inputs fed by them.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) items: Vec<Outgoing>,
    /// (node, input side) fed through an exchange: that input's watermark (the minimum over the
    /// workers sending to it).
    pub(crate) remote_wm: FastMap<(usize, usize), i64>,
    /// Per node whose output crosses: the watermark last sent.
    sent_wm: FastMap<usize, i64>,
}

/// Records or a watermark for input `side` of operator `node`, on whichever worker owns them.
pub(crate) enum Outgoing {
    Data {
        node: usize,
        side: usize,
        batch: RecordBatch,
    },
    Watermark {
        node: usize,
        side: usize,
        wm: i64,
    },
}

struct Builder<'a> {
    specs: &'a [SourceSpec],
    udfs: &'a [Arc<dyn BatchUdf>],
    on_error: Arc<ErrorHandler>,
    nodes: Vec<GNode>,
    order: Vec<usize>,
    sources: Vec<Option<SourceUse>>,
    /// The record key of each node's output: its columns, and whether `key_by` declared it
    /// (only a declared key is the default `by` of windows; a window's own `by` only keys what
    /// a topic sink writes).
    keys_of: std::collections::HashMap<usize, (Vec<String>, bool)>,
    /// The log topics each node's records come from.
    origins: std::collections::HashMap<usize, Vec<Arc<riverbed_log::Topic>>>,
    /// Names given with `named`, to refuse one given twice.
    given: std::collections::HashSet<String>,
}

/// `node` with `by` filled in from the input's key when it names none.
fn with_key(node: &Node, key: &[String]) -> Option<Node> {
    let mut n = node.clone();
    match &mut n {
        Node::Window { by, .. } | Node::GroupBy { by, .. } | Node::Series { by, .. }
            if by.is_empty() && !key.is_empty() =>
        {
            *by = key.to_vec();
            Some(n)
        }
        _ => None,
    }
}

impl Builder<'_> {
    /// Add the operator of plan node `node`, named `name`.
    fn add(
        &mut self,
        op: Box<dyn Operator>,
        node: &Node,
        name: String,
        children: Vec<usize>,
    ) -> usize {
        let idx = self.nodes.len();
        for &c in &children {
            self.nodes[c].parent = Some(idx);
        }
        self.nodes.push(GNode {
            op,
            name,
            signature: crate::signature::signature(node, self.specs),
            legacy: crate::explain::describe(node, self.specs, true),
            parent: None,
            routes: vec![Route::Local; children.len()],
            children,
            out_wm: i64::MIN,
        });
        self.order.push(idx);
        idx
    }

    /// The name of the next operator: the one given, else `<op>#<index>`.
    fn name(&self, given: Option<&str>, op: &str) -> String {
        given.map_or_else(|| format!("{op}#{}", self.nodes.len()), str::to_string)
    }

    /// Returns (node index, output schema if known, event-time column). `given`: the name the
    /// user gave the operator this node ends in.
    fn build(
        &mut self,
        node: &Node,
        given: Option<&str>,
    ) -> Result<(usize, Option<SchemaRef>, Option<String>)> {
        match node {
            Node::Named { input, name } => {
                if name.is_empty() || name.contains('#') {
                    return Err(StreamError::plan(
                        "named",
                        format!("name: {name:?} must be non-empty and without '#' (kept for the names riverbed derives)"),
                    ));
                }
                if given.is_some() {
                    return Err(StreamError::plan(
                        "named",
                        format!(
                            "name: the operator named {name:?} is named again ({:?})",
                            given.unwrap_or_default()
                        ),
                    ));
                }
                if !self.given.insert(name.clone()) {
                    return Err(StreamError::plan(
                        "named",
                        format!("name: {name:?} names two operators; names must be unique in a pipeline"),
                    ));
                }
                self.build(input, Some(name))
            }
            Node::Source {
                source,
                timestamp,
                lateness_ms,
                idle_timeout_ms,
                name,
            } => {
                let spec = self.specs.get(*source).ok_or_else(|| {
                    StreamError::plan(
                        "read",
                        format!("source: no source #{source} was handed over"),
                    )
                })?;
                non_negative("read", "lateness", *lateness_ms)?;
                positive("read", "idle_timeout", *idle_timeout_ms)?;
                // As the run loop hands the batches on (`keys::wide_batch`).
                let schema = crate::keys::wide_schema(&spec.schema());
                let ts = match timestamp {
                    Some(t) => {
                        let f = schema.field_with_name(t).map_err(|_| {
                            let cols: Vec<&str> =
                                schema.fields().iter().map(|f| f.name().as_str()).collect();
                            StreamError::plan(
                                "read",
                                format!("timestamp: unknown column '{t}'; the source has {cols:?}"),
                            )
                        })?;
                        let ok = matches!(f.data_type(), arrow_schema::DataType::Timestamp(_, _))
                            || f.data_type().is_integer();
                        if !ok {
                            return Err(StreamError::plan(
                                "read",
                                format!("timestamp: column '{t}' has type {}; expected int64 milliseconds or a timestamp", f.data_type()),
                            ));
                        }
                        Some(t.clone())
                    }
                    None => spec.default_event_time().map(str::to_string),
                };
                let label = match given {
                    Some(g) => g.to_string(),
                    None => name.clone().unwrap_or_else(|| self.name(None, "read")),
                };
                let idx = self.add(
                    Box::new(Passthrough {
                        m: OpMetrics {
                            operator: label.clone(),
                            ..Default::default()
                        },
                    }),
                    node,
                    label,
                    vec![],
                );
                if self.sources.len() <= *source {
                    self.sources.resize(*source + 1, None);
                }
                if self.sources[*source].is_some() {
                    return Err(StreamError::plan(
                        "read",
                        format!("source #{source} is read twice in one plan"),
                    ));
                }
                let origin = match spec {
                    SourceSpec::Log(l) => vec![l.topic.clone()],
                    _ => Vec::new(),
                };
                self.origins.insert(idx, origin);
                self.sources[*source] = Some(SourceUse {
                    leaf: idx,
                    ts: ts.clone(),
                    lateness: *lateness_ms,
                    idle_timeout: *idle_timeout_ms,
                });
                Ok((idx, Some(schema), ts))
            }
            Node::Union { inputs } => {
                if inputs.is_empty() {
                    return Err(StreamError::plan("union", "inputs: nothing to union"));
                }
                let mut children = Vec::new();
                let mut first: Option<(Option<SchemaRef>, Option<String>)> = None;
                for input in inputs {
                    let (c, s, t) = self.build(input, None)?;
                    children.push(c);
                    match &first {
                        None => first = Some((s, t)),
                        Some((fs, ft)) => {
                            if let (Some(a), Some(b)) = (fs, &s) {
                                if a.fields() != b.fields() {
                                    return Err(StreamError::plan(
                                        "union",
                                        format!("schemas differ: {a:?} vs {b:?}"),
                                    ));
                                }
                            }
                            if ft != &t {
                                return Err(StreamError::plan(
                                    "union",
                                    format!("event-time columns differ: {ft:?} vs {t:?}"),
                                ));
                            }
                        }
                    }
                }
                let (schema, ts) = first.unwrap_or((None, None));
                let keys: Vec<(Vec<String>, bool)> = children
                    .iter()
                    .map(|c| self.keys_of.get(c).cloned().unwrap_or_default())
                    .collect();
                let union_key = if keys.windows(2).all(|w| w[0] == w[1]) {
                    keys.first().cloned().unwrap_or_default()
                } else {
                    (Vec::new(), false)
                };
                let label = self.name(given, "union");
                let child_ids = children.clone();
                let idx = self.add(
                    Box::new(Passthrough {
                        m: OpMetrics {
                            operator: label.clone(),
                            ..Default::default()
                        },
                    }),
                    node,
                    label,
                    children,
                );
                self.keys_of.insert(idx, union_key);
                let mut topics: Vec<Arc<riverbed_log::Topic>> = Vec::new();
                for c in &child_ids {
                    for t in self.origins.get(c).cloned().unwrap_or_default() {
                        if !topics.iter().any(|x| Arc::ptr_eq(x, &t)) {
                            topics.push(t);
                        }
                    }
                }
                self.origins.insert(idx, topics);
                Ok((idx, schema, ts))
            }
            Node::Join {
                left,
                right,
                kind,
                left_by,
                right_by,
                left_on,
                right_on,
                suffix,
                right_columns,
            } => {
                let op = kind.name();
                let (lc, ls, lt) = self.build(left, None)?;
                let (rc, rs, rt) = self.build(right, None)?;
                let (Some(ls), Some(rs)) = (ls, rs) else {
                    return Err(StreamError::plan(
                        op,
                        "an input's schema is decided by a Python function (map/map_batches); join before it, or give map(..., schema=...)",
                    ));
                };
                let Some(lt) = lt else {
                    return Err(StreamError::plan(op, "timestamp: the left input has no event time; pass timestamp= to Pipeline.read(...)"));
                };
                if let Some(on) = left_on.as_ref().filter(|on| **on != lt) {
                    return Err(StreamError::plan(op, format!("on: '{on}' is not the left input's event-time column '{lt}'; joins match on event time")));
                }
                let Some(rt) = right_on.clone().or(rt) else {
                    return Err(StreamError::plan(op, "on: the right input has no event time; pass timestamp= to its Pipeline.read(...) or name its time column"));
                };
                let spec = crate::join::JoinSpec {
                    kind: *kind,
                    left_ts: &lt,
                    right_ts: &rt,
                    left_by,
                    right_by,
                    suffix,
                    right_columns: right_columns.as_deref(),
                };
                let j = crate::join::TemporalJoin::new(&ls, &rs, &spec, op)?;
                let schema = j.schema();
                let label = self.name(given, op);
                let idx = self.add(
                    Box::new(Named {
                        inner: Box::new(j),
                        name: label.clone(),
                    }),
                    node,
                    label,
                    vec![lc, rc],
                );
                // Equal keys meet on one worker: the right keys hash as the left's type.
                self.nodes[idx].routes = vec![
                    Route::Hash(left_by.iter().map(|c| (c.clone(), None)).collect()),
                    Route::Hash(
                        right_by
                            .iter()
                            .zip(left_by)
                            .map(|(r, l)| {
                                let t = ls
                                    .field_with_name(l)
                                    .ok()
                                    .map(|f| crate::keys::held_type(f.data_type()));
                                (r.clone(), t)
                            })
                            .collect(),
                    ),
                ];
                let key = self.keys_of.get(&lc).cloned().unwrap_or_default();
                self.keys_of.insert(idx, key);
                let origin = self.origins.get(&lc).cloned().unwrap_or_default();
                self.origins.insert(idx, origin);
                Ok((idx, Some(schema), Some(lt)))
            }
            _ => {
                let input = node.inputs()[0];
                let (child, schema, ts) = self.build(input, None)?;
                let (child_key, declared) = self.keys_of.get(&child).cloned().unwrap_or_default();
                let origin = self.origins.get(&child).cloned().unwrap_or_default();
                let keyed = if declared {
                    with_key(node, &child_key)
                } else {
                    None
                };
                let planned = node;
                let node = keyed.as_ref().unwrap_or(node);
                let label = self.name(given, node.op_name());
                let (op, out_schema, out_ts): (Box<dyn Operator>, _, _) = match &schema {
                    Some(s) => {
                        let ctx = OpCtx {
                            on_error: self.on_error.clone(),
                            origins: origin.clone(),
                            label: label.clone(),
                        };
                        let (op, os, ot) = build_single(node, s, ts, self.udfs, &ctx)?;
                        (
                            Box::new(Named {
                                inner: op,
                                name: label.clone(),
                            }),
                            os,
                            ot,
                        )
                    }
                    None => {
                        let out_ts = match node {
                            Node::Window { .. } => Some("window_start".to_string()),
                            Node::GroupBy { .. } => None,
                            _ => ts.clone(),
                        };
                        (
                            Box::new(Lazy {
                                node: node.clone(),
                                ts,
                                udfs: self.udfs.to_vec(),
                                ctx: OpCtx {
                                    on_error: self.on_error.clone(),
                                    origins: origin.clone(),
                                    label: label.clone(),
                                },
                                inner: None,
                                name: label.clone(),
                                pending: Vec::new(),
                            }),
                            None,
                            out_ts,
                        )
                    }
                };
                let idx = self.add(op, planned, label, vec![child]);
                self.nodes[idx].routes = vec![match node {
                    Node::Window { by, .. }
                    | Node::GroupBy { by, .. }
                    | Node::Series { by, .. }
                    | Node::StatefulMap { by, .. } => {
                        Route::Hash(by.iter().map(|c| (c.clone(), None)).collect())
                    }
                    _ => Route::Local,
                }];
                let declared = match node {
                    Node::KeyBy { .. } => true,
                    Node::Window { .. } | Node::GroupBy { .. } => false,
                    _ => declared,
                };
                let out_key = match node {
                    Node::KeyBy { columns, .. } => columns.clone(),
                    Node::Window { by, .. } | Node::GroupBy { by, .. } => by.clone(),
                    Node::Rename { mapping, .. } => child_key
                        .iter()
                        .map(|k| {
                            mapping
                                .iter()
                                .find(|(a, _)| a == k)
                                .map_or(k.clone(), |(_, b)| b.clone())
                        })
                        .collect(),
                    _ => child_key,
                };
                let out_key = match &out_schema {
                    Some(s) if out_key.iter().any(|k| s.index_of(k).is_err()) => Vec::new(),
                    _ => out_key,
                };
                self.keys_of.insert(idx, (out_key, declared));
                self.origins.insert(idx, origin);
                Ok((idx, out_schema, out_ts))
            }
        }
    }
}

/// Gives an operator its display name in metrics.
struct Named {
    inner: Box<dyn Operator>,
    name: String,
}

impl Operator for Named {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.inner.on_batch(batch, out)
    }
    fn on_input(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.inner.on_input(side, batch, out)
    }
    fn on_input_timed(
        &mut self,
        side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.inner.on_input_timed(side, batch, stream, out)
    }
    fn keeps_rows(&self) -> bool {
        self.inner.keeps_rows()
    }
    fn input_watermarks(&mut self, wms: &[i64]) {
        self.inner.input_watermarks(wms)
    }
    fn on_watermark(&mut self, wm: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.inner.on_watermark(wm, out)
    }
    fn output_watermark(&self, wm: i64) -> i64 {
        self.inner.output_watermark(wm)
    }
    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.inner.take_late()
    }
    fn snapshot(&self) -> Result<Vec<u8>> {
        self.inner.snapshot()
    }
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.inner.restore(state)
    }
    fn metrics(&self) -> OpMetrics {
        let mut m = self.inner.metrics();
        m.operator = self.name.clone();
        m
    }
}

impl Graph {
    pub(crate) fn compile(
        plan: &Node,
        specs: &[SourceSpec],
        udfs: &[Arc<dyn BatchUdf>],
        on_error: Arc<ErrorHandler>,
    ) -> Result<Graph> {
        let mut b = Builder {
            specs,
            udfs,
            on_error,
            nodes: Vec::new(),
            order: Vec::new(),
            sources: Vec::new(),
            keys_of: Default::default(),
            origins: Default::default(),
            given: Default::default(),
        };
        let (root, out_schema, out_ts) = b.build(plan, None)?;
        let out_key = b.keys_of.get(&root).cloned().unwrap_or_default().0;
        Ok(Graph {
            nodes: b.nodes,
            order: b.order,
            root,
            sources: b.sources,
            out_schema,
            out_ts,
            out_key,
            legacy_plan: crate::explain::explain(plan, specs, true),
            outbox: None,
        })
    }

    pub(crate) fn push(
        &mut self,
        idx: usize,
        side: usize,
        batch: RecordBatch,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let mut out = Vec::new();
        let op = &mut self.nodes[idx].op;
        if op.keeps_rows() {
            op.on_input(side, batch, &mut out)?;
        } else {
            let (batch, stream) = crate::watermark::split_stream_times(batch);
            let stream = stream.as_ref().map(|a| a.values().as_ref());
            op.on_input_timed(side, batch, stream, &mut out)?;
        }
        self.forward(idx, out, sink)
    }

    fn forward(&mut self, idx: usize, out: Vec<RecordBatch>, sink: &mut dyn Sink) -> Result<()> {
        match self.nodes[idx].parent {
            Some(p) => {
                let side = self.nodes[p]
                    .children
                    .iter()
                    .position(|&c| c == idx)
                    .unwrap_or(0);
                if let Some(ob) = &mut self.outbox {
                    if self.nodes[p].routes[side] != Route::Local {
                        for batch in out.into_iter().filter(|b| b.num_rows() > 0) {
                            ob.items.push(Outgoing::Data {
                                node: p,
                                side,
                                batch,
                            });
                        }
                        return Ok(());
                    }
                }
                for b in out {
                    self.push(p, side, b, sink)?;
                }
            }
            None => {
                for b in out {
                    if b.num_rows() > 0 {
                        sink.write(crate::watermark::split_stream_times(b).0)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Advance every node's watermark: a leaf gets its source's (`leaf_wm`), any other node the
    /// minimum of its inputs' (each input's is handed to it first, for joins).
    pub(crate) fn advance(
        &mut self,
        leaf_wm: &FastMap<usize, i64>,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        for k in 0..self.order.len() {
            let idx = self.order[k];
            let input_wm = if self.nodes[idx].children.is_empty() {
                leaf_wm.get(&idx).copied().unwrap_or(i64::MAX)
            } else {
                let n = &self.nodes[idx];
                let wms: Vec<i64> = n
                    .children
                    .iter()
                    .zip(&n.routes)
                    .enumerate()
                    .map(|(side, (&c, r))| match &self.outbox {
                        Some(ob) if *r != Route::Local => {
                            ob.remote_wm.get(&(idx, side)).copied().unwrap_or(i64::MIN)
                        }
                        _ => self.nodes[c].out_wm,
                    })
                    .collect();
                self.nodes[idx].op.input_watermarks(&wms);
                wms.into_iter().min().unwrap_or(i64::MAX)
            };
            let mut out = Vec::new();
            self.nodes[idx].op.on_watermark(input_wm, &mut out)?;
            self.forward(idx, out, sink)?;
            // The end of every input is final: nothing can hold it back any more.
            self.nodes[idx].out_wm = if input_wm == i64::MAX {
                i64::MAX
            } else {
                self.nodes[idx].op.output_watermark(input_wm)
            };
            self.send_watermark(idx);
        }
        Ok(())
    }

    /// A worker: tell the workers owning node `idx`'s output that its watermark moved.
    fn send_watermark(&mut self, idx: usize) {
        let (Some(ob), Some(p)) = (&mut self.outbox, self.nodes[idx].parent) else {
            return;
        };
        let parent = &self.nodes[p];
        let side = parent.children.iter().position(|&c| c == idx).unwrap_or(0);
        let wm = self.nodes[idx].out_wm;
        if parent.routes[side] != Route::Local && ob.sent_wm.get(&idx) != Some(&wm) {
            ob.sent_wm.insert(idx, wm);
            ob.items.push(Outgoing::Watermark { node: p, side, wm });
        }
    }

    /// The inputs fed through an exchange in a parallel run: (node, side, the input's node), in
    /// graph order (an input's node before its consumer).
    pub(crate) fn cuts(&self) -> Vec<(usize, usize, usize)> {
        self.order
            .iter()
            .flat_map(|&i| {
                let n = &self.nodes[i];
                n.children
                    .iter()
                    .zip(&n.routes)
                    .enumerate()
                    .filter(|(_, (_, r))| **r != Route::Local)
                    .map(move |(side, (&c, _))| (i, side, c))
            })
            .collect()
    }

    /// The route of input `side` of node `idx`.
    pub(crate) fn route(&self, idx: usize, side: usize) -> &Route {
        &self.nodes[idx].routes[side]
    }

    /// The nodes feeding node `idx`, by input side.
    pub(crate) fn children(&self, idx: usize) -> &[usize] {
        &self.nodes[idx].children
    }

    pub(crate) fn root(&self) -> usize {
        self.root
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `idx`'s place in graph order (where `metrics()` reports it).
    pub(crate) fn position(&self, idx: usize) -> Option<usize> {
        self.order.iter().position(|&i| i == idx)
    }

    /// The watermark of the output (the root's), for a sink that passes it on.
    pub(crate) fn output_watermark(&self) -> i64 {
        self.nodes[self.root].out_wm
    }

    pub(crate) fn take_late(&mut self) -> Vec<RecordBatch> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.op.take_late())
            .collect()
    }

    /// Every operator's state, in graph order.
    pub(crate) fn snapshot(&self) -> Result<Vec<OperatorState>> {
        self.order
            .iter()
            .map(|&i| {
                let n = &self.nodes[i];
                Ok(OperatorState {
                    name: n.name.clone(),
                    signature: n.signature.clone(),
                    state: n.op.snapshot()?,
                })
            })
            .collect()
    }

    /// Where each operator (in graph order) finds its state in checkpoint `c`: an index into
    /// `c.operators`, or none (it starts empty); and notes for the caller. The same plan: place by
    /// place. A changed plan: by name (given with `named`, else derived from the place), as long
    /// as the sources are the same and every operator holding state in `c` is in this plan,
    /// unchanged; else a `PlanError` saying what no longer fits. `what`: the checkpoint, for
    /// messages ("checkpoint 7 in <dir>").
    pub(crate) fn fit(
        &self,
        c: &Checkpoint,
        plan_text: &str,
        what: &str,
    ) -> Result<(Vec<Option<usize>>, Vec<String>)> {
        let refuse = |why: String| {
            Err(StreamError::Checkpoint(format!(
                "{why}; pass reset=True to start over (the output topics keep what they hold)"
            )))
        };
        let mine: Vec<&GNode> = self.order.iter().map(|&i| &self.nodes[i]).collect();
        // A checkpoint before version 3 holds the text of that time: compare with that.
        let (plan_text, sig): (&str, fn(&GNode) -> &str) = if c.version >= 3 {
            (plan_text, |n| n.signature.as_str())
        } else {
            (self.legacy_plan.as_str(), |n| n.legacy.as_str())
        };
        let same_ops = c.operators.len() == mine.len()
            && c.operators.iter().zip(&mine).all(|(o, n)| {
                o.name == n.name && (o.signature.is_empty() || o.signature == sig(n))
            });
        if c.plan == plan_text && same_ops {
            return Ok(((0..mine.len()).map(Some).collect(), Vec::new()));
        }
        let changed = format!("the plan changed since {what}");
        if c.operators.iter().any(|o| o.signature.is_empty()) {
            if c.plan == plan_text {
                return refuse(format!("{what} does not match its own plan"));
            }
            return refuse(format!(
                "{changed} (taken by an older riverbed, which kept no operator signatures); its state does not fit.
                 checkpointed plan:
{}
this plan:
{plan_text}",
                c.plan
            ));
        }
        let is_read = |sig: &str| sig.starts_with("read ");
        let old: Vec<(&str, &str)> = c
            .operators
            .iter()
            .filter(|o| is_read(&o.signature))
            .map(|o| (o.name.as_str(), o.signature.as_str()))
            .collect();
        let new: Vec<(&str, &str)> = mine
            .iter()
            .filter(|n| is_read(sig(n)))
            .map(|n| (n.name.as_str(), sig(n)))
            .collect();
        if old != new {
            return refuse(format!(
                "{changed}: its sources changed (were {old:?}, are {new:?}), so their positions do not carry over"
            ));
        }
        let place: FastMap<&str, usize> = mine
            .iter()
            .enumerate()
            .map(|(k, n)| (n.name.as_str(), k))
            .collect();
        let mut fit = vec![None; mine.len()];
        for (j, o) in c.operators.iter().enumerate() {
            if o.state.is_empty() && !is_read(&o.signature) {
                continue; // stateless
            }
            let Some(&k) = place.get(o.name.as_str()) else {
                let hint = if o.name.contains('#') {
                    " (an operator not given a name with .named(...) is known by its place in the plan, which moves when operators are added or removed before it)"
                } else {
                    ""
                };
                return refuse(format!(
                    "{changed}: operator '{}' (`{}`) holds state in it, and this plan has no operator of that name{hint}",
                    o.name, o.signature
                ));
            };
            if sig(mine[k]) != o.signature {
                return refuse(format!(
                    "{changed}: operator '{}' changed (was `{}`, is `{}`), so its state does not fit",
                    o.name,
                    o.signature,
                    sig(mine[k])
                ));
            }
            fit[k] = Some(j);
        }
        let mut notes = vec![format!(
            "{changed}; the state of its operators carries over by name ({})",
            fit.iter()
                .flatten()
                .map(|&j| c.operators[j].name.as_str())
                .filter(|n| !c
                    .operators
                    .iter()
                    .any(|o| o.name == *n && is_read(&o.signature)))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        for (k, n) in mine.iter().enumerate() {
            let keeps_state = n.op.snapshot().map_or(true, |s| !s.is_empty());
            if fit[k].is_none() && keeps_state {
                notes.push(format!(
                    "operator '{}' (`{}`) is new since {what}: it starts with empty state",
                    n.name, n.signature
                ));
            }
        }
        Ok((fit, notes))
    }

    /// Load the states `fit` found for each operator.
    pub(crate) fn restore(
        &mut self,
        states: &[OperatorState],
        fit: &[Option<usize>],
    ) -> Result<()> {
        for (k, &i) in self.order.iter().enumerate() {
            if let Some(&Some(j)) = fit.get(k) {
                self.nodes[i].op.restore(&states[j].state)?;
            }
        }
        Ok(())
    }

    pub(crate) fn metrics(&self) -> Vec<OpMetrics> {
        self.order
            .iter()
            .map(|&i| self.nodes[i].op.metrics())
            .collect()
    }
}

/// Shared between a run and whoever watches or stops it.
#[derive(Default)]
pub struct RunControl {
    pub stop: AtomicBool,
    pub metrics: Mutex<Vec<OpMetrics>>,
    /// Where the watermark of a finished bounded source ends: `None` is +inf (everything is
    /// flushed); a test driver gives the watermark it advanced to, so a bounded run shows what a
    /// live pipeline would have emitted by then.
    pub end_watermark: Option<i64>,
    /// The pipeline's policy for bad records (sources without their own, and Python functions);
    /// `None`: raise.
    pub on_error: Option<Arc<ErrorHandler>>,
    /// Checkpointing of a named pipeline; `None`: none.
    pub checkpoint: Option<CheckpointConfig>,
    /// Things the caller should hear about (a corrupt checkpoint skipped, ...).
    pub notes: Mutex<Vec<String>>,
    /// What the checkpoints of this run have cost (a named run).
    pub checkpoint_stats: Arc<Mutex<CheckpointStats>>,
    /// Worker threads for the operators: 0 is one per core, but no more than the inputs have
    /// partitions. A named (checkpointed) run uses one.
    pub workers: usize,
}

impl RunControl {
    /// The number of worker threads this run uses (before the one-worker rule of named runs).
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Where and how often a named pipeline checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub dir: std::path::PathBuf,
    pub interval: Duration,
    /// Start over: forget the checkpoints (the output topics are not touched).
    pub reset: bool,
}

pub struct RunOutput {
    /// Things the caller should hear about (a corrupt checkpoint skipped, ...).
    pub notes: Vec<String>,
    pub late: Vec<RecordBatch>,
    pub metrics: Vec<OpMetrics>,
    /// What the run's checkpoints cost (all zero for an unnamed run).
    pub checkpoints: CheckpointStats,
}

/// A validated plan with its sources and UDFs.
pub struct Pipeline {
    pub(crate) plan: Node,
    pub(crate) sources: Vec<SourceSpec>,
    pub(crate) udfs: Vec<Arc<dyn BatchUdf>>,
    schema: Option<SchemaRef>,
    ts: Option<String>,
    key: Vec<String>,
}

impl Pipeline {
    /// Validate the plan (building its operators once); plan errors name operator and field.
    pub fn new(
        plan: Node,
        sources: Vec<SourceSpec>,
        udfs: Vec<Arc<dyn BatchUdf>>,
    ) -> Result<Pipeline> {
        let g = Graph::compile(
            &plan,
            &sources,
            &udfs,
            ErrorHandler::new(ErrorPolicy::Raise),
        )?;
        Ok(Pipeline {
            schema: g.out_schema.clone(),
            ts: g.out_ts.clone(),
            key: g.out_key.clone(),
            plan,
            sources,
            udfs,
        })
    }

    /// The output schema; `None` downstream of a UDF (known only at run time).
    pub fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    /// The event-time column of the output, if it has one.
    pub fn event_time_column(&self) -> Option<&str> {
        self.ts.as_deref()
    }

    /// The output's key columns (from `key_by` or a window's `by`), if any.
    pub fn key_columns(&self) -> &[String] {
        &self.key
    }

    /// The directory of the log the first topic source lives in, if any.
    pub fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.sources.iter().find_map(|s| match s {
            SourceSpec::Log(l) => l.topic.dir.parent().map(|p| p.to_path_buf()),
            _ => None,
        })
    }

    pub fn plan(&self) -> &Node {
        &self.plan
    }

    pub fn explain(&self) -> String {
        crate::explain::explain(&self.plan, &self.sources, false)
    }

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
            if self.sources.len() != 1 {
                return Err(StreamError::plan(
                    "read",
                    format!("group '{group}': a pipeline reading a topic with a consumer group reads only that topic (joins and unions of several sources are not supported there yet)"),
                ));
            }
            return crate::tasks::run_group(self, sink, follow, control);
        }
        let on_error = control
            .on_error
            .clone()
            .unwrap_or_else(|| ErrorHandler::new(ErrorPolicy::Raise));
        let mut g = Graph::compile(&self.plan, &self.sources, &self.udfs, on_error.clone())?;
        let mut tracker = WatermarkTracker::new();
        tracker.set_end(control.end_watermark);
        // A named pipeline resumes from its last checkpoint (its sinks rolled back to it first).
        let plan_text = self.explain();
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
                        let (fit, notes) = g.fit(c, &plan_text, &what)?;
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
            seq = c.seq;
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
                    Polled::Batch(p, b) => {
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
                checkpoint(&*engine, sink, &srcs, &tracker, true)?;
                ended = true;
            }
            let wms = tracker.watermarks(follow, |k, p| {
                srcs.get(k).is_none_or(|(_, s)| s.caught_up(p))
            });
            if wms != last_wm {
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
        if !ended {
            checkpoint(&*engine, sink, &srcs, &tracker, true)?;
        }
        sink.close()?;
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

/// Observe a source batch from partition `p` of source `k`, and give it the stream time each of
/// its records meets (the hidden column the operators judging lateness read).
pub(crate) fn stamp(
    tracker: &mut WatermarkTracker,
    k: usize,
    p: usize,
    batch: RecordBatch,
    ts: Option<&str>,
) -> Result<RecordBatch> {
    let Some(c) = ts else {
        tracker.observe(k, p, None);
        return Ok(batch);
    };
    let times = event_times(&batch, c)?;
    let stream = tracker.stream_times(k, p, &times);
    tracker.observe(k, p, times.iter().max().copied());
    Ok(match stream {
        Some(st) => crate::watermark::with_stream_times(batch, st.into()),
        None => batch,
    })
}

/// A source batch without its records whose event time is null or out of range: those are bad
/// records (under `raise`, the error names the first one's topic/partition/offset).
pub(crate) fn without_null_times(
    b: RecordBatch,
    col: &str,
    spec: &SourceSpec,
    pipeline_policy: &Arc<ErrorHandler>,
) -> Result<RecordBatch> {
    crate::bad_times::without_bad_times(b, col, spec, pipeline_policy)
}

/// The graph's metrics, with each source's bad-record count on its leaf.
pub(crate) fn metrics_with_sources(
    g: &dyn Engine,
    srcs: &[(usize, Box<dyn crate::source::Source>)],
    uses: &[SourceUse],
    null_times: &[u64],
) -> Vec<OpMetrics> {
    let mut m = g.metrics();
    for (((_, src), u), nulls) in srcs.iter().zip(uses).zip(null_times) {
        if let Some(pos) = g.position(u.leaf) {
            m[pos].errors = src.errors() + nulls;
        }
    }
    m
}
