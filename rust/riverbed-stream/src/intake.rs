//! What every driver does to a source batch before the graph sees it: records with a bad event
//! time taken out, stream time stamped; and metrics that count each source's bad records.

use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::engine::Engine;
use crate::error::Result;
use crate::errors::ErrorHandler;
use crate::graph::SourceUse;
use crate::keys::event_times;
use crate::operator::OpMetrics;
use crate::source::SourceSpec;
use crate::watermark::WatermarkTracker;

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
