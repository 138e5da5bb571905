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

/// `b` without the rows whose event time (column `col`) is unusable; each one goes to the
/// source's bad-record policy (else the pipeline's), in row order, naming its
/// topic/partition/offset.
pub(crate) fn without_bad_times(
    b: RecordBatch,
    col: &str,
    spec: &SourceSpec,
    pipeline_policy: &Arc<ErrorHandler>,
) -> Result<RecordBatch> {
    let Some(c) = b.column_by_name(col).cloned() else {
        return Ok(b);
    };
    let arrow = |e| StreamError::Arrow {
        context: "event time".into(),
        source: e,
    };
    // Event times in ms of the rows that have one (in row order).
    let (valid_rows, ms): (Vec<usize>, _) = if c.null_count() == 0 {
        (
            (0..b.num_rows()).collect(),
            crate::keys::event_times(&b, col)?,
        )
    } else {
        let valid = arrow_arith::boolean::is_not_null(c.as_ref()).map_err(arrow)?;
        let some = arrow_select::filter::filter_record_batch(&b, &valid).map_err(arrow)?;
        (
            (0..b.num_rows()).filter(|&r| c.is_valid(r)).collect(),
            crate::keys::event_times(&some, col)?,
        )
    };
    let mut bad: Vec<(usize, String)> = (0..b.num_rows())
        .filter(|&r| c.is_null(r))
        .map(|r| (r, "is null".to_string()))
        .collect();
    for (j, &t) in ms.iter().enumerate() {
        if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&t) {
            bad.push((
                valid_rows[j],
                format!("is {t} ms, outside the years 1 to 9999 ({MIN_TIMESTAMP_MS}..={MAX_TIMESTAMP_MS} ms) riverbed takes"),
            ));
        }
    }
    if bad.is_empty() {
        return Ok(b);
    }
    bad.sort_by_key(|(r, _)| *r);
    let (handler, topic, name) = match spec {
        SourceSpec::Log(l) => (
            l.on_error
                .clone()
                .unwrap_or_else(|| pipeline_policy.clone()),
            Some(l.topic.clone()),
            Some(l.topic.name.to_string()),
        ),
        SourceSpec::External(e) => (
            e.on_error().unwrap_or_else(|| pipeline_policy.clone()),
            None,
            e.topic_name(),
        ),
        _ => (pipeline_policy.clone(), None, None),
    };
    for (row, why) in &bad {
        let record = crate::errors::bad_source_row(&b, *row, topic.as_deref(), name.as_deref());
        let message = format!("the event-time column '{col}' {why}");
        let error = match (&name, record.partition, record.offset) {
            (Some(t), Some(p), Some(o)) => StreamError::Decode {
                topic: t.clone(),
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
    arrow_select::filter::filter_record_batch(&b, &BooleanArray::from(keep)).map_err(arrow)
}
