//! Compiling a plan (`plan::Node`) into a graph of operators: each node's operator built
//! against its input schema, keys and event time tracked from sources to the root, and the
//! routes a parallel run sends records by (`exchange.rs`).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::buffered::{BufferedKind, BufferedWindows};
use crate::error::{Result, StreamError};
use crate::errors::ErrorHandler;
use crate::exchange::Route;
use crate::graph::{GNode, Graph, SourceUse};
use crate::group_by::GroupBy;
use crate::operator::{BatchUdf, Filter, MapBatches, OpMetrics, Operator, Project, Projection};
use crate::plan::{Node, WindowSpec};
use crate::source::SourceSpec;
use crate::window::{SessionWindows, TimeWindows, WindowCore};

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
    /// `open_was_emitted` came before the operator existed.
    pending_emitted: bool,
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
            if std::mem::take(&mut self.pending_emitted) {
                if let Some(op) = self.inner.as_mut() {
                    op.open_was_emitted();
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
    fn open_was_emitted(&mut self) {
        match self.inner.as_mut() {
            Some(op) => op.open_was_emitted(),
            None => self.pending_emitted = true,
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

/// An operator that needs event time in a run that has none: pass `timestamp=`. When the values
/// have a `timestamp` field of their own (the record's is then `record_timestamp`), which one is
/// for the user to say.
fn needs_event_time(op: &str, what: &str, input: &SchemaRef) -> StreamError {
    let mut msg =
        format!("timestamp: {what} event time; pass timestamp= (a column) to Pipeline.read(...)");
    if input.index_of("timestamp").is_ok() && input.index_of("record_timestamp").is_ok() {
        msg.push_str(": timestamp='timestamp' for the values' own field, timestamp='record_timestamp' for the record's timestamp");
    }
    StreamError::plan(op, msg)
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
                return Err(needs_event_time(op, "series operators need", input));
            };
            let s = crate::series::SeriesOperator::new(input, &ts_col, by, ops.clone(), op)?;
            let schema = s.schema();
            (Box::new(s), Some(schema), ts)
        }
        Node::StatefulMap { by, udf, .. } => {
            let Some(ts_col) = ts.clone() else {
                return Err(needs_event_time(op, "stateful_map needs", input));
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
                return Err(needs_event_time(op, "windows need", input));
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
                partitioned_by,
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
                let cols =
                    || -> Vec<&str> { schema.fields().iter().map(|f| f.name().as_str()).collect() };
                if let Some(c) = partitioned_by
                    .iter()
                    .flatten()
                    .find(|c| schema.field_with_name(c).is_err())
                {
                    return Err(StreamError::plan(
                        "read",
                        format!(
                            "partitioned_by: unknown column '{c}'; the source has {:?}",
                            cols()
                        ),
                    ));
                }
                let ts = match timestamp {
                    Some(t) => {
                        let f = schema.field_with_name(t).map_err(|_| {
                            StreamError::plan(
                                "read",
                                format!(
                                    "timestamp: unknown column '{t}'; the source has {:?}",
                                    cols()
                                ),
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
                                pending_emitted: false,
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
    fn open_was_emitted(&mut self) {
        self.inner.open_was_emitted()
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
}
