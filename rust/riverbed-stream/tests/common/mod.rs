//! Helpers shared by the integration tests (each test binary uses a different subset).
#![allow(dead_code)]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use riverbed_stream::{
    CollectSink, Emit, Expr, Node, Pipeline, RunControl, RunOutput, SourceSpec, StreamError,
    WindowSpec,
};
use serde_json::json;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An expression from its documented JSON shape.
pub fn ex(v: serde_json::Value) -> Expr {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("bad expression {v}: {e}"))
}

pub fn col(name: &str) -> serde_json::Value {
    json!({ "col": name })
}

pub fn lit(v: serde_json::Value) -> serde_json::Value {
    json!({ "lit": v })
}

pub fn bin(op: &str, l: serde_json::Value, r: serde_json::Value) -> serde_json::Value {
    json!({"binary": {"op": op, "left": l, "right": r}})
}

/// `func(column)` or, without a column, `func()`.
pub fn agg(func: &str, column: Option<&str>) -> Expr {
    match column {
        Some(c) => ex(json!({"agg": {"func": func, "expr": {"col": c}}})),
        None => ex(json!({"agg": {"func": func}})),
    }
}

pub fn source(timestamp: Option<&str>, lateness_ms: i64) -> Node {
    Node::Source {
        source: 0,
        timestamp: timestamp.map(str::to_string),
        lateness_ms,
        idle_timeout_ms: 5_000,
        name: None,
        partitioned_by: None,
    }
}

pub fn window(
    input: Node,
    spec: WindowSpec,
    by: &[&str],
    emit: Emit,
    aggs: Vec<(&str, Expr)>,
) -> Node {
    Node::Window {
        input: Box::new(input),
        window: spec,
        by: by.iter().map(|s| s.to_string()).collect(),
        emit,
        aggs: aggs.into_iter().map(|(n, e)| (n.to_string(), e)).collect(),
    }
}

pub fn with_columns(input: Node, columns: Vec<(&str, Expr)>) -> Node {
    Node::WithColumns {
        input: Box::new(input),
        columns: columns
            .into_iter()
            .map(|(n, e)| (n.to_string(), e))
            .collect(),
    }
}

pub fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).expect("a valid batch")
}

/// What a run produced: every sink batch (in order), them concatenated, and the run output.
pub struct Ran {
    pub batches: Vec<RecordBatch>,
    pub all: RecordBatch,
    pub out: RunOutput,
}

impl Ran {
    /// Metrics of the first operator whose name starts with `prefix`.
    pub fn metrics(&self, prefix: &str) -> &riverbed_stream::OpMetrics {
        self.out
            .metrics
            .iter()
            .find(|m| m.operator.starts_with(prefix))
            .unwrap_or_else(|| panic!("no operator '{prefix}' in {:?}", self.out.metrics))
    }

    pub fn late_rows(&self) -> usize {
        self.out.late.iter().map(|b| b.num_rows()).sum()
    }
}

/// Run `plan` over one in-memory table re-chunked to `batch_size` rows.
pub fn run_table(
    plan: Node,
    input: &RecordBatch,
    batch_size: Option<usize>,
) -> Result<Ran, StreamError> {
    let spec = SourceSpec::table(input.schema(), vec![input.clone()], batch_size)?;
    run_specs(plan, vec![spec])
}

pub fn run_specs(plan: Node, specs: Vec<SourceSpec>) -> Result<Ran, StreamError> {
    let p = Pipeline::new(plan, specs, vec![])?;
    let mut sink = CollectSink::default();
    let out = p.run(&mut sink, false, &RunControl::default())?;
    let schema = match (sink.batches.first(), p.schema()) {
        (Some(b), _) => b.schema(),
        (None, Some(s)) => s,
        (None, None) => Arc::new(arrow_schema::Schema::empty()),
    };
    let all = arrow_select::concat::concat_batches(&schema, &sink.batches)
        .expect("output batches share a schema");
    Ok(Ran {
        batches: sink.batches,
        all,
        out,
    })
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column '{name}' in {:?}", b.schema()))
}

/// An integer or timestamp column as i64 values (timestamps in their own unit).
pub fn ints(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let a = column(b, name);
    let a = arrow_cast::cast(a, &DataType::Int64).expect("castable to int64");
    a.as_primitive::<Int64Type>().iter().collect()
}

/// An integer column without nulls.
pub fn ints_nn(b: &RecordBatch, name: &str) -> Vec<i64> {
    ints(b, name)
        .into_iter()
        .map(|v| v.unwrap_or_else(|| panic!("null in '{name}'")))
        .collect()
}

pub fn floats(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let a = column(b, name);
    assert_eq!(a.data_type(), &DataType::Float64, "column '{name}'");
    a.as_primitive::<Float64Type>().iter().collect()
}

pub fn bools(b: &RecordBatch, name: &str) -> Vec<Option<bool>> {
    let a = column(b, name);
    assert_eq!(a.data_type(), &DataType::Boolean, "column '{name}'");
    a.as_boolean().iter().collect()
}

pub fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = column(b, name);
    let a = arrow_cast::cast(a, &DataType::Utf8).expect("castable to utf8");
    a.as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

pub fn dtype(b: &RecordBatch, name: &str) -> DataType {
    column(b, name).data_type().clone()
}

pub fn null_count(b: &RecordBatch, name: &str) -> usize {
    column(b, name).null_count()
}
