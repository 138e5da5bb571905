//! The operator interface and the stateless operators (filter, with_columns, select, drop,
//! rename, map_batches).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use serde::Serialize;

use crate::error::{ArrowContext, Result, StreamError};
use crate::errors::ErrorHandler;
use crate::expr::Expr;

/// Per-operator counters, as `metrics()` reports them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpMetrics {
    pub operator: String,
    pub records_in: u64,
    pub records_out: u64,
    pub late_records: u64,
    /// Bad records skipped or dead-lettered (see `errors.rs`).
    pub errors: u64,
    pub watermark: Option<i64>,
    pub state_entries: u64,
    /// Consumer-group runs, on the source's operator: the input partitions this process reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<usize>>,
}

pub trait Operator: Send {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;
    /// A batch from input `side` (0, 1, ...) of an operator with several inputs (joins).
    fn on_input(
        &mut self,
        _side: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.on_batch(batch, out)
    }
    /// A batch with, per record, the watermark its own source partition's earlier records left
    /// (`watermark::Judge`): operators that judge lateness override this to judge each record
    /// against `max(their watermark, stream[i])`, so results do not depend on batching.
    fn on_input_timed(
        &mut self,
        side: usize,
        batch: RecordBatch,
        _stream: Option<&[i64]>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.on_input(side, batch, out)
    }
    /// Whether every output row is an input row, in order (filters, projections): the hidden
    /// stream-time column then travels through the operator to the next.
    fn keeps_rows(&self) -> bool {
        false
    }
    /// Each input's watermark, before `on_watermark` gets their minimum.
    fn input_watermarks(&mut self, _wms: &[i64]) {}
    /// The watermark reached `wm`: emit what closes.
    fn on_watermark(&mut self, _wm: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }
    /// The watermark this operator passes downstream, given its input's: operators that hold
    /// results back (windows) hold it at their oldest open window.
    fn output_watermark(&self, wm: i64) -> i64 {
        wm
    }
    /// Records dropped as late since the last call.
    fn take_late(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }
    fn metrics(&self) -> OpMetrics;
    /// The operator's state for a checkpoint; empty for a stateless operator.
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// The state just restored is one whose end-of-input flush reached the sink (a bounded
    /// run's provisional output): what it holds open has been emitted. An operator whose later
    /// output can supersede a row under another identity (a session merging into one with an
    /// earlier start) must retract those rows, so it notes them as emitted.
    fn open_was_emitted(&mut self) {}
    /// Load the state a `snapshot` of the same operator (same plan) took.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        Err(StreamError::Checkpoint(
            "state for an operator that keeps none (the plan changed?)".into(),
        ))
    }
}

/// A Python (or other) function applied to each batch.
pub trait BatchUdf: Send + Sync {
    fn call(&self, batch: RecordBatch) -> Result<RecordBatch>;
    fn name(&self) -> String;
    /// State the function keeps itself (`stateful_map`'s per-key states), for checkpoints.
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn restore(&self, _state: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Keep rows `rows` of `batch` as late records (for the pipeline's late output) and count them.
pub fn keep_late(
    batch: &RecordBatch,
    rows: Vec<u32>,
    m: &mut OpMetrics,
    late: &mut Vec<RecordBatch>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    m.late_records += rows.len() as u64;
    let idx = arrow_array::UInt32Array::from(rows);
    late.push(arrow_select::take::take_record_batch(batch, &idx).ctx("late records")?);
    Ok(())
}

/// Put the output field a user assigned into a plan error's message.
pub(crate) fn name_field(e: StreamError, field: &str) -> StreamError {
    match e {
        StreamError::Plan { op, message } => StreamError::Plan {
            op,
            message: format!("'{field}': {message}"),
        },
        other => other,
    }
}

pub struct Filter {
    pub predicate: Expr,
    pub m: OpMetrics,
}

impl Operator for Filter {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.m.records_in += batch.num_rows() as u64;
        let mask = self.predicate.evaluate(&batch)?;
        let mask = mask
            .as_any()
            .downcast_ref::<arrow_array::BooleanArray>()
            .ok_or_else(|| {
                StreamError::Schema(format!(
                    "filter: {} is {} not bool",
                    self.predicate,
                    mask.data_type()
                ))
            })?;
        let kept = arrow_select::filter::filter_record_batch(&batch, mask).ctx("filter")?;
        if kept.num_rows() > 0 {
            self.m.records_out += kept.num_rows() as u64;
            out.push(kept);
        }
        Ok(())
    }
    fn keeps_rows(&self) -> bool {
        true
    }
    fn metrics(&self) -> OpMetrics {
        self.m.clone()
    }
}

/// Column-level projections: with_columns, select, drop, rename all compute an output schema
/// once and map each batch onto it.
pub enum Projection {
    WithColumns(Vec<(String, Expr)>),
    Select(Vec<String>),
    Drop(Vec<String>),
    Rename(Vec<(String, String)>),
}

pub struct Project {
    pub kind: Projection,
    pub m: OpMetrics,
}

impl Projection {
    /// Apply to one batch (also used on an empty batch to derive the output schema).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let (fields, cols): (Vec<Field>, Vec<ArrayRef>) = match self {
            Projection::WithColumns(exprs) => {
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
                for (name, e) in exprs {
                    let a = e.evaluate(batch)?;
                    let f = Field::new(name, a.data_type().clone(), true);
                    match fields.iter().position(|x| x.name() == name) {
                        Some(i) => {
                            fields[i] = f;
                            cols[i] = a;
                        }
                        None => {
                            fields.push(f);
                            cols.push(a);
                        }
                    }
                }
                (fields, cols)
            }
            Projection::Select(names) => names
                .iter()
                .map(|n| {
                    let i = schema
                        .index_of(n)
                        .map_err(|_| StreamError::Schema(format!("unknown column '{n}'")))?;
                    Ok((schema.field(i).clone(), batch.column(i).clone()))
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .unzip(),
            Projection::Drop(names) => schema
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| !names.contains(f.name()))
                .map(|(f, c)| (f.as_ref().clone(), c.clone()))
                .unzip(),
            Projection::Rename(mapping) => schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| {
                    let name = mapping
                        .iter()
                        .find(|(a, _)| a == f.name())
                        .map_or(f.name().clone(), |(_, b)| b.clone());
                    (f.as_ref().clone().with_name(name), c.clone())
                })
                .unzip(),
        };
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let schema = Schema::new(fields).with_metadata(schema.metadata().clone());
        RecordBatch::try_new_with_options(Arc::new(schema), cols, &opts).ctx("projection")
    }

    /// The output schema for `input`, validating names (errors name the operator and field).
    pub fn output_schema(&self, input: &SchemaRef, op: &str) -> Result<SchemaRef> {
        let known = |n: &String, field: &str| -> Result<()> {
            if input.index_of(n).is_err() {
                let cols: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(StreamError::plan(
                    op,
                    format!("{field}: unknown column '{n}'; the input has {cols:?}"),
                ));
            }
            Ok(())
        };
        match self {
            Projection::WithColumns(exprs) => {
                for (name, e) in exprs {
                    if e.has_agg() {
                        return Err(StreamError::plan(
                            op,
                            format!("'{name}': aggregates belong in agg(...)"),
                        ));
                    }
                    e.data_type(input, op)
                        .map_err(|err| name_field(err, name))?;
                }
            }
            Projection::Select(names) | Projection::Drop(names) => {
                for n in names {
                    known(n, "columns")?;
                }
            }
            Projection::Rename(mapping) => {
                for (a, _) in mapping {
                    known(a, "mapping")?;
                }
            }
        }
        let out = self
            .apply(&RecordBatch::new_empty(input.clone()))
            .map_err(|e| StreamError::plan(op, e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for f in out.schema().fields() {
            if !seen.insert(f.name().clone()) {
                return Err(StreamError::plan(
                    op,
                    format!("duplicate column '{}' in the output", f.name()),
                ));
            }
        }
        Ok(out.schema())
    }
}

impl Operator for Project {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.m.records_in += batch.num_rows() as u64;
        // The stream times travel past the projection (a `select` would drop them).
        let (batch, stream) = crate::watermark::split_stream_times(batch);
        let mut b = self.kind.apply(&batch)?;
        if let Some(st) = stream {
            b = crate::watermark::with_stream_times(b, st);
        }
        self.m.records_out += b.num_rows() as u64;
        out.push(b);
        Ok(())
    }
    fn keeps_rows(&self) -> bool {
        true
    }
    fn metrics(&self) -> OpMetrics {
        self.m.clone()
    }
}

pub struct MapBatches {
    pub udf: Arc<dyn BatchUdf>,
    pub on_error: Arc<ErrorHandler>,
    /// The log topics the records come from: dead letters name theirs and keep its headers.
    pub origins: Vec<Arc<riverbed_log::Topic>>,
    /// The operator's name in metrics (for dead letters).
    pub label: String,
    pub m: OpMetrics,
}

impl Operator for MapBatches {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.m.records_in += batch.num_rows() as u64;
        let b = match self.udf.call(batch.clone()) {
            Ok(b) => b,
            Err(e) if self.on_error.raises() || e.is_fatal() => return Err(e),
            // Find the records it fails on: call it on each alone, keep what succeeds.
            Err(_) => {
                let mut good = Vec::new();
                for row in 0..batch.num_rows() {
                    match self.udf.call(batch.slice(row, 1)) {
                        Ok(b) => good.push(b),
                        Err(e) if e.is_fatal() => return Err(e),
                        Err(e) => {
                            let origin = crate::errors::origin_of(&batch, &self.origins);
                            let bad = crate::errors::bad_row(&batch, row, origin);
                            let op = format!("{} ({})", self.label, self.udf.name());
                            self.on_error.handle(bad, &op, e)?;
                            self.m.errors += 1;
                        }
                    }
                }
                let good: Vec<RecordBatch> =
                    good.into_iter().filter(|b| b.num_columns() > 0).collect();
                match good.first() {
                    Some(f) => arrow_select::concat::concat_batches(&f.schema(), &good)
                        .ctx("map_batches output")?,
                    None => return Ok(()),
                }
            }
        };
        self.m.records_out += b.num_rows() as u64;
        if b.num_rows() > 0 {
            out.push(b);
        }
        Ok(())
    }
    fn on_input_timed(
        &mut self,
        _side: usize,
        batch: RecordBatch,
        stream: Option<&[i64]>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = batch.num_rows();
        let mut produced = Vec::new();
        self.on_batch(batch, &mut produced)?;
        for b in produced {
            let rows = b.num_rows();
            out.push(match stream {
                // A function that keeps the number of rows (adds or changes columns) keeps them
                // in order: each record keeps the stream time it met.
                Some(st) if rows == n => crate::watermark::with_stream_times(b, st.to_vec().into()),
                // Rows added, dropped or regrouped: judged by the stream time before the batch.
                Some(st) if !st.is_empty() => {
                    crate::watermark::with_stream_times(b, vec![st[0]; rows].into())
                }
                _ => b,
            });
        }
        Ok(())
    }
    fn metrics(&self) -> OpMetrics {
        self.m.clone()
    }
}
