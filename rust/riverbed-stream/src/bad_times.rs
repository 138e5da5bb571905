//! Records whose event time cannot be used are bad records, handled by the source's policy
//! (`on_error`), never processed with a made-up time: a null event time, and one outside the
//! years 1 to 9999 (`riverbed_log::arrow::MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS`), whose window
//! bounds, session gaps and rolling periods could overflow i64 and wrap.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use riverbed_log::arrow::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};

use crate::error::{Result, StreamError};
use crate::errors::ErrorHandler;
use crate::source::SourceSpec;

/// Why row `row`'s event time is unusable, if it is.
fn why_bad(
    col: &dyn Array,
    ms: Option<&arrow_buffer::ScalarBuffer<i64>>,
    row: usize,
) -> Option<String> {
    if col.is_null(row) {
        return Some("is null".into());
    }
    let t = ms?[row];
    (!(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&t)).then(|| {
        format!("is {t} ms, outside the years 1 to 9999 ({MIN_TIMESTAMP_MS}..={MAX_TIMESTAMP_MS} ms) riverbed takes")
    })
}

/// `b` without the rows whose event time (column `col`) is unusable; each one goes to the
/// source's bad-record policy (else the pipeline's), naming its topic/partition/offset.
pub(crate) fn without_bad_times(
    b: RecordBatch,
    col: &str,
    spec: &SourceSpec,
    pipeline_policy: &Arc<ErrorHandler>,
) -> Result<RecordBatch> {
    let Some(c) = b.column_by_name(col).cloned() else {
        return Ok(b);
    };
    // Event times in ms where every row has one (a null makes the conversion fail: then only
    // nulls are looked for first, and the range is checked on what is left).
    let ms = if c.null_count() == 0 {
        Some(crate::keys::event_times(&b, col)?)
    } else {
        None
    };
    let bad: Vec<(usize, String)> = (0..b.num_rows())
        .filter_map(|r| why_bad(c.as_ref(), ms.as_ref(), r).map(|w| (r, w)))
        .collect();
    if bad.is_empty() {
        return Ok(b);
    }
    let (handler, topic) = match spec {
        SourceSpec::Log(l) => (
            l.on_error
                .clone()
                .unwrap_or_else(|| pipeline_policy.clone()),
            Some(l.topic.clone()),
        ),
        SourceSpec::External(e) => (
            e.on_error().unwrap_or_else(|| pipeline_policy.clone()),
            None,
        ),
        _ => (pipeline_policy.clone(), None),
    };
    for (row, why) in &bad {
        let record = crate::errors::bad_row(&b, *row, topic.as_deref());
        let message = format!("the event-time column '{col}' {why}");
        let error = match (&topic, record.partition, record.offset) {
            (Some(t), Some(p), Some(o)) => StreamError::Decode {
                topic: t.name.to_string(),
                partition: p as u32,
                offset: o,
                message,
            },
            _ => StreamError::Schema(format!("{message} at row {row} of a source batch")),
        };
        handler.handle(record, "read", error)?;
    }
    let mut keep = vec![true; b.num_rows()];
    for (row, _) in &bad {
        keep[*row] = false;
    }
    let kept =
        arrow_select::filter::filter_record_batch(&b, &BooleanArray::from(keep)).map_err(|e| {
            StreamError::Arrow {
                context: "event time".into(),
                source: e,
            }
        })?;
    if ms.is_none() {
        // Nulls are gone; what is left may still be out of range.
        return without_bad_times(kept, col, spec, pipeline_policy);
    }
    Ok(kept)
}
