//! Bad records: a value that does not decode or does not fit the schema, or a record a Python
//! function raises on. Per pipeline (and per source) the policy is to raise (stop, naming the
//! record's topic/partition/offset), to skip (drop and count), or to write the record to a
//! dead-letter topic with where it came from and the error — Kafka Connect's convention: the
//! original key, value and headers, plus `riverbed.*` headers for the context.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use riverbed_log::Topic;

use crate::error::{Result, StreamError};

#[derive(Clone, Default)]
pub enum ErrorPolicy {
    #[default]
    Raise,
    Skip,
    DeadLetter(Arc<dyn DeadLetterTopic>),
}

/// Where dead letters go: a log topic, or a topic of another system (Kafka).
pub trait DeadLetterTopic: Send + Sync {
    fn name(&self) -> String;
    fn write(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Result<()>;
}

impl DeadLetterTopic for Topic {
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn write(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Result<()> {
        self.produce(key, value, timestamp, headers, None)?;
        Ok(())
    }
}

impl std::fmt::Debug for ErrorPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorPolicy::Raise => write!(f, "raise"),
            ErrorPolicy::Skip => write!(f, "skip"),
            ErrorPolicy::DeadLetter(t) => write!(f, "dead_letter({})", t.name()),
        }
    }
}

/// A record that could not be processed, with everything the dead-letter topic keeps.
#[derive(Debug, Clone, Default)]
pub struct BadRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub timestamp: i64,
    pub topic: Option<String>,
    pub partition: Option<i64>,
    pub offset: Option<i64>,
}

/// Applies a policy and counts the records it dropped or dead-lettered.
#[derive(Debug, Default)]
pub struct ErrorHandler {
    pub policy: ErrorPolicy,
    count: AtomicU64,
}

impl ErrorHandler {
    pub fn new(policy: ErrorPolicy) -> Arc<ErrorHandler> {
        Arc::new(ErrorHandler {
            policy,
            count: AtomicU64::new(0),
        })
    }

    pub fn raises(&self) -> bool {
        matches!(self.policy, ErrorPolicy::Raise)
    }

    /// Records dropped or dead-lettered so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Handle one bad record that failed with `error` in `operator`: the error itself under
    /// `raise`, else Ok after counting (and writing it to the dead-letter topic).
    pub fn handle(&self, bad: BadRecord, operator: &str, error: StreamError) -> Result<()> {
        match &self.policy {
            ErrorPolicy::Raise => Err(error),
            ErrorPolicy::Skip => {
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            ErrorPolicy::DeadLetter(topic) => {
                let text = error.to_string();
                let mut extra: Vec<(&[u8], Vec<u8>)> = vec![
                    (b"riverbed.error", text.into_bytes()),
                    (b"riverbed.operator", operator.as_bytes().to_vec()),
                ];
                if let Some(t) = &bad.topic {
                    extra.push((b"riverbed.source.topic", t.as_bytes().to_vec()));
                }
                if let Some(p) = bad.partition {
                    extra.push((b"riverbed.source.partition", p.to_string().into_bytes()));
                }
                if let Some(o) = bad.offset {
                    extra.push((b"riverbed.source.offset", o.to_string().into_bytes()));
                }
                let mut headers: Vec<(&[u8], Option<&[u8]>)> = bad
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect();
                headers.extend(extra.iter().map(|(k, v)| (*k, Some(v.as_slice()))));
                topic
                    .write(
                        bad.key.as_deref(),
                        bad.value.as_deref(),
                        bad.timestamp,
                        &headers,
                    )
                    .map_err(|source| StreamError::Writing {
                        what: format!("the dead-letter topic '{}'", topic.name()),
                        source: Box::new(source),
                    })?;
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// Schema metadata naming the log topic a batch was read from.
pub const TOPIC_METADATA: &str = "riverbed.source.topic";

/// Which of `origins` a batch came from: the one its schema metadata names, else the only one.
pub fn origin_of<'a>(batch: &RecordBatch, origins: &'a [Arc<Topic>]) -> Option<&'a Topic> {
    let named = batch.schema_ref().metadata().get(TOPIC_METADATA).cloned();
    match named {
        Some(n) => origins.iter().find(|t| *t.name == *n).map(|t| t.as_ref()),
        None if origins.len() == 1 => origins.first().map(|t| t.as_ref()),
        None => None,
    }
}

const META: [&str; 4] = ["key", "timestamp", "partition", "offset"];

/// Row `row` of a batch as a bad record: its `key`, `timestamp`, `partition` and `offset`
/// columns when it has them (a log source's), the source topic if known, and the whole row as
/// a JSON object for the value.
pub fn bad_row(batch: &RecordBatch, row: usize, origin: Option<&Topic>) -> BadRecord {
    read_bad_row(batch, row, origin, false)
}

/// A source's row `row` as a bad record (`bad_row`), with its record's own value bytes when
/// they can be read again (a log topic `origin`), not the row re-encoded: a dead-letter copy
/// keeps what was sent. `name`: the source topic's name when there is no `origin` (Kafka).
pub fn bad_source_row(
    batch: &RecordBatch,
    row: usize,
    origin: Option<&Topic>,
    name: Option<&str>,
) -> BadRecord {
    let mut bad = read_bad_row(batch, row, origin, true);
    if bad.topic.is_none() {
        bad.topic = name.map(str::to_string);
    }
    bad
}

fn read_bad_row(
    batch: &RecordBatch,
    row: usize,
    origin: Option<&Topic>,
    original: bool,
) -> BadRecord {
    // The value: the row's own columns (a log source's key/timestamp/partition/offset are in the
    // record's key, timestamp and headers).
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| !META.contains(&batch.schema().field(i).name().as_str()))
        .collect();
    let one = batch
        .slice(row, 1)
        .project(&keep)
        .unwrap_or_else(|_| batch.slice(row, 1));
    let mut value = Vec::new();
    {
        let mut w = arrow_json::LineDelimitedWriter::new(&mut value);
        if w.write(&one).and_then(|_| w.finish()).is_err() {
            value.clear();
        }
    }
    while value.last() == Some(&b'\n') {
        value.pop();
    }
    let col = |name: &str| batch.column_by_name(name).filter(|c| c.is_valid(row));
    let int = |name: &str| {
        col(name).and_then(|c| {
            arrow_cast::cast(&c.slice(row, 1), &DataType::Int64)
                .ok()
                .map(|a| a.as_primitive::<arrow_array::types::Int64Type>().value(0))
        })
    };
    let key = col("key").and_then(|c| match c.data_type() {
        DataType::Binary => Some(c.as_binary::<i32>().value(row).to_vec()),
        DataType::Utf8 => Some(c.as_string::<i32>().value(row).as_bytes().to_vec()),
        _ => None,
    });
    let timestamp = col("timestamp")
        .and_then(|c| {
            arrow_cast::cast(
                &c.slice(row, 1),
                &DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None),
            )
            .ok()
            .and_then(|a| arrow_cast::cast(&a, &DataType::Int64).ok())
            .map(|a| a.as_primitive::<arrow_array::types::Int64Type>().value(0))
        })
        .unwrap_or(0);
    let (partition, offset) = (int("partition"), int("offset"));
    // The record's own headers, read again from its topic (only bad records need them); and
    // whether it is a tombstone, whose null value stays null (it decoded as a row of nulls).
    let mut headers = Vec::new();
    let mut tombstone = false;
    let mut value = Some(value);
    if let (Some(t), Some(p), Some(o)) = (origin, partition, offset) {
        if let Ok(part) = t.partition(p as u32) {
            let _ = part.read(o, 1, usize::MAX, |r| {
                if r.offset == o {
                    headers = r
                        .headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect();
                    tombstone = r.value.is_none();
                    if original {
                        value = r.value.map(<[u8]>::to_vec);
                    }
                }
                false
            });
        }
    }
    BadRecord {
        key,
        value: value.filter(|_| !tombstone),
        headers,
        timestamp,
        topic: origin.map(|t| t.name.to_string()),
        partition,
        offset,
    }
}
