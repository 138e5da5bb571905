//! The plan: what a Python `Pipeline` hands to Rust, decoded with serde (`pythonize`).
//!
//! A plan is a tree of [`Node`]s whose leaves are sources. Nodes are internally tagged by `"op"`;
//! expressions are externally tagged (`{"col": "x"}`, `{"binary": {"op": "+", ...}}`). Durations
//! are integer milliseconds. Sources and Python UDFs are not in the plan itself: a `Source` node
//! names an index into the list of sources handed over with the plan, `MapBatches` an index into
//! the list of UDFs.
//!
//! ```json
//! {"op": "window", "window": {"tumbling": {"size_ms": 60000}}, "by": ["symbol"], "emit": "final",
//!  "aggs": [["n", {"agg": {"func": "count"}}]],
//!  "input": {"op": "filter", "predicate": {"binary": {"op": ">", "left": {"col": "qty"}, "right": {"lit": 0}}},
//!            "input": {"op": "source", "source": 0, "timestamp": "ts", "lateness_ms": 2000}}}
//! ```

use serde::{Deserialize, Serialize};

use crate::expr::Expr;

fn default_idle_timeout() -> i64 {
    5_000
}

fn default_suffix() -> String {
    "_right".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Records of source `source`. `timestamp` names the event-time column (int64 ms or a
    /// timestamp type); `None` means the source's own record timestamp (log sources).
    Source {
        source: usize,
        #[serde(default)]
        timestamp: Option<String>,
        #[serde(default)]
        lateness_ms: i64,
        #[serde(default = "default_idle_timeout")]
        idle_timeout_ms: i64,
        #[serde(default)]
        name: Option<String>,
        /// The columns its records are partitioned by (the producers keyed them by these), for
        /// the stages of a consumer-group run (`stages.rs`); `None`: the record `key`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partitioned_by: Option<Vec<String>>,
    },
    Filter {
        input: Box<Node>,
        predicate: Expr,
    },
    /// Add or replace columns, evaluated against the input batch (not each other).
    WithColumns {
        input: Box<Node>,
        columns: Vec<(String, Expr)>,
    },
    Select {
        input: Box<Node>,
        columns: Vec<String>,
    },
    Drop {
        input: Box<Node>,
        columns: Vec<String>,
    },
    Rename {
        input: Box<Node>,
        mapping: Vec<(String, String)>,
    },
    /// Records of every input; the schemas must be equal.
    Union {
        inputs: Vec<Node>,
    },
    /// Declare the record key (Kafka Streams' `selectKey`): windows and group-bys without `by`
    /// group by it, and a topic sink without `key` writes it as the record key, so the output is
    /// hash-partitioned by it (Kafka's murmur2) like a Kafka Streams repartition topic. A
    /// window's or group-by's own `by` also keys what a topic sink writes, but is not a default
    /// `by` for later windows (those group globally unless told otherwise).
    KeyBy {
        input: Box<Node>,
        columns: Vec<String>,
    },
    /// A Python function per batch (UDF `udf` of the list handed over with the plan).
    MapBatches {
        input: Box<Node>,
        udf: usize,
        #[serde(default)]
        name: Option<String>,
    },
    /// Windowed aggregation per key. Output: the `by` columns, `window_start`, `window_end`, then
    /// the aggregates in order.
    Window {
        input: Box<Node>,
        window: WindowSpec,
        #[serde(default)]
        by: Vec<String>,
        #[serde(default)]
        emit: Emit,
        aggs: Vec<(String, Expr)>,
    },
    /// Per-key time-series columns (lag, diff, pct_change, cum_sum, time_since_previous),
    /// computed in event-time order once the watermark passes each record; every record comes
    /// out once, with the new columns added.
    Series {
        input: Box<Node>,
        #[serde(default)]
        by: Vec<String>,
        ops: Vec<crate::series::SeriesOp>,
    },
    /// A temporal join of two inputs by key (`join_asof`, `join_interval`; see `join.rs`).
    /// Output: the left columns, then the right ones except its key columns (and, for an as-of
    /// join on a shared time column name, that column), renamed with `suffix` on a clash. The
    /// output's event time is the left one.
    Join {
        left: Box<Node>,
        right: Box<Node>,
        kind: crate::join::JoinKind,
        #[serde(default)]
        left_by: Vec<String>,
        #[serde(default)]
        right_by: Vec<String>,
        /// Checked against the left event-time column when given (the left time is always its
        /// event time).
        #[serde(default)]
        left_on: Option<String>,
        /// The right column holding each right record's time; its event time when `None`.
        #[serde(default)]
        right_on: Option<String>,
        #[serde(default = "default_suffix")]
        suffix: String,
        /// The right columns to output (all but the key columns when `None`).
        #[serde(default)]
        right_columns: Option<Vec<String>>,
    },
    /// A Python function over each key's records in event-time order with state of its own
    /// (UDF `udf`), called once per watermark step with the ready records grouped by key.
    StatefulMap {
        input: Box<Node>,
        #[serde(default)]
        by: Vec<String>,
        udf: usize,
        #[serde(default)]
        name: Option<String>,
    },
    /// Unwindowed aggregation: a running table per key, emitted as a changelog (one row per key
    /// changed by a batch, with its new aggregates).
    GroupBy {
        input: Box<Node>,
        by: Vec<String>,
        aggs: Vec<(String, Expr)>,
    },
    /// A name given by the user to the operator `input` ends in (Flink's `uid`): its name in
    /// metrics and in checkpoints, where a changed plan finds its state by it. Not an operator.
    Named {
        input: Box<Node>,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emit {
    /// Once per window, when it closes.
    #[default]
    Final,
    /// After every batch that changed the window: a changelog whose last row per window is the final value.
    Update,
}

/// Window kinds, epoch-aligned (shifted by `offset_ms`), half-open `[start, end)` unless noted.
/// A window is closed when the watermark is >= its end + `grace_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    Tumbling {
        size_ms: i64,
        #[serde(default)]
        offset_ms: i64,
        #[serde(default)]
        grace_ms: i64,
    },
    /// Every window `[s, s + size)` with `s ≡ offset (mod every)` holding the record.
    Hopping {
        size_ms: i64,
        every_ms: i64,
        #[serde(default)]
        offset_ms: i64,
        #[serde(default)]
        grace_ms: i64,
    },
    /// Kafka Streams' sliding windows: for each record at `t`, the window `[t - size, t]` and, when
    /// a record follows within `size`, the window `[t + 1, t + 1 + size]`; both bounds inclusive;
    /// windows with the same bounds are reported once.
    Sliding {
        size_ms: i64,
        #[serde(default)]
        grace_ms: i64,
    },
    /// Records within `gap` of a session join it; sessions that come within `gap` merge.
    /// `window_start`/`window_end` are the first and last record times (inclusive); a session
    /// closes when the watermark is > its last record + gap + grace.
    Session {
        gap_ms: i64,
        #[serde(default)]
        grace_ms: i64,
    },
    /// Every `n` records of a key, in event-time order; incomplete windows are not emitted.
    Count { n: i64 },
}

impl WindowSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            WindowSpec::Tumbling { .. } => "tumbling",
            WindowSpec::Hopping { .. } => "hopping",
            WindowSpec::Sliding { .. } => "sliding",
            WindowSpec::Session { .. } => "session",
            WindowSpec::Count { .. } => "count",
        }
    }
}

impl Node {
    /// A short name for messages and `explain()`.
    pub fn op_name(&self) -> &'static str {
        match self {
            Node::Source { .. } => "read",
            Node::Filter { .. } => "filter",
            Node::WithColumns { .. } => "with_columns",
            Node::Select { .. } => "select",
            Node::Drop { .. } => "drop",
            Node::Rename { .. } => "rename",
            Node::Union { .. } => "union",
            Node::MapBatches { .. } => "map_batches",
            Node::KeyBy { .. } => "key_by",
            Node::Window { .. } => "window",
            Node::GroupBy { .. } => "group_by",
            Node::Series { .. } => "series",
            Node::Join { kind, .. } => kind.name(),
            Node::StatefulMap { .. } => "stateful_map",
            Node::Named { .. } => "named",
        }
    }

    pub fn inputs(&self) -> Vec<&Node> {
        match self {
            Node::Source { .. } => vec![],
            Node::Union { inputs } => inputs.iter().collect(),
            Node::Join { left, right, .. } => vec![left, right],
            Node::Filter { input, .. }
            | Node::WithColumns { input, .. }
            | Node::Select { input, .. }
            | Node::Drop { input, .. }
            | Node::Rename { input, .. }
            | Node::MapBatches { input, .. }
            | Node::KeyBy { input, .. }
            | Node::Window { input, .. }
            | Node::GroupBy { input, .. }
            | Node::Series { input, .. }
            | Node::StatefulMap { input, .. }
            | Node::Named { input, .. } => vec![input],
        }
    }
}
