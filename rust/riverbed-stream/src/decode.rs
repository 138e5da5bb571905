//! Value decoding: the raw records of one read (`RawRecords`) turned into a source's Arrow
//! batches (`Decoder`): values decoded from JSON with the value schema (inferred from a sample
//! when none is given) or kept raw, then the record's key, timestamp, partition and offset as
//! columns. A new value format (Avro, Protobuf, ...) joins here as a `Format`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use riverbed_log::batch::RecordView;
use riverbed_log::Topic;

use crate::error::{ArrowContext, Result, StreamError};
use crate::errors::{BadRecord, ErrorHandler};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Raw,
}

/// The record's own columns, after the value's; one the value has a field of its own name is
/// `record_<name>` (`metadata_name`).
fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new("key", DataType::Binary, true),
        // Null for a Kafka record without a timestamp: as an event time, a bad record.
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]
}

/// The name of metadata column `name` beside the value's fields: its own, else `record_<name>`
/// (prefixed again while a field has that): never hidden by a field of the value.
fn metadata_name(value_schema: &Schema, name: &str) -> String {
    let mut n = name.to_string();
    while value_schema.index_of(&n).is_ok() {
        n = format!("record_{n}");
    }
    n
}

pub(crate) fn infer_schema(topic: &Topic) -> Result<SchemaRef> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    for p in topic.partitions() {
        let (earliest, _) = p.offsets();
        p.read(earliest, 1000, usize::MAX, |r| {
            values.extend(r.value.map(<[u8]>::to_vec));
            true
        })?;
    }
    infer_json_schema(&topic.name, values.iter().map(Vec::as_slice))
}

/// The schema of a topic's JSON objects, inferred from a sample of its values (`topic` names it
/// in errors).
pub fn infer_json_schema<'a>(
    topic: &str,
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<SchemaRef> {
    let objects: Vec<serde_json::Value> = values
        .filter_map(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    if objects.is_empty() {
        return Err(StreamError::plan(
            "read",
            format!(
                "schema: topic '{topic}' has no JSON records to infer a schema from; pass schema="
            ),
        ));
    }
    let schema = arrow_json::reader::infer_json_schema_from_iterator(objects.into_iter().map(Ok))
        .map_err(|e| {
        StreamError::plan(
            "read",
            format!("schema: cannot infer from topic '{topic}': {e}"),
        )
    })?;
    Ok(Arc::new(schema))
}

/// Raw records of one read, before decoding.
#[derive(Default)]
pub struct RawRecords {
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
    keys: Vec<Option<Vec<u8>>>,
    values: Vec<u8>,
    value_ends: Vec<usize>,
    value_null: Vec<bool>,
}

impl RawRecords {
    pub(crate) fn push(&mut self, r: &RecordView<'_>) {
        self.push_parts(r.offset, Some(r.timestamp), r.key, r.value);
    }
    /// Append one record given by its parts (a Kafka client's message, say; `timestamp` is None
    /// for a Kafka record without one).
    pub fn push_parts(
        &mut self,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
        self.keys.push(key.map(<[u8]>::to_vec));
        self.value_null.push(value.is_none());
        self.values.extend_from_slice(value.unwrap_or(b""));
        self.value_ends.push(self.values.len());
    }
    /// Copy record `i` of `other`.
    fn push_from(&mut self, other: &RawRecords, i: usize) {
        self.offsets.push(other.offsets[i]);
        self.timestamps.push(other.timestamps[i]);
        self.keys.push(other.keys[i].clone());
        let v = other.value(i);
        self.value_null.push(v.is_none());
        self.values.extend_from_slice(v.unwrap_or(b""));
        self.value_ends.push(self.values.len());
    }
    /// Append every record of `other`.
    pub fn append(&mut self, other: &RawRecords) {
        for i in 0..other.len() {
            self.push_from(other, i);
        }
    }
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        let start = if i == 0 { 0 } else { self.value_ends[i - 1] };
        (!self.value_null[i]).then(|| &self.values[start..self.value_ends[i]])
    }
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
    /// The offset after the last record, if any.
    pub fn next_offset(&self) -> Option<i64> {
        self.offsets.last().map(|o| o + 1)
    }
}

/// Turns raw records of one topic into the source's Arrow batches: the values decoded from JSON
/// with the value schema (or kept raw), then `key`, `timestamp`, `partition` and `offset`
/// columns (those the values do not have themselves).
#[derive(Clone)]
pub struct Decoder {
    pub topic: String,
    pub format: Format,
    pub value_schema: SchemaRef,
    /// The batches' schema (value columns, then the record's metadata columns).
    pub schema: SchemaRef,
}

/// A record's headers, to dead-letter it with them.
pub type Headers = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl Decoder {
    /// `value_schema`: the JSON objects' schema (required for JSON; raw values are one binary
    /// `value` column).
    pub fn new(topic: &str, format: Format, value_schema: Option<SchemaRef>) -> Decoder {
        let value_schema = match (format, value_schema) {
            (Format::Json, Some(s)) => s,
            (Format::Json, None) => Arc::new(Schema::empty()),
            (Format::Raw, _) => Arc::new(Schema::new(vec![Field::new(
                "value",
                DataType::Binary,
                true,
            )])),
        };
        let mut fields: Vec<Field> = value_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for f in metadata_fields() {
            let name = metadata_name(&value_schema, f.name());
            fields.push(f.with_name(name));
        }
        // Batches name their topic, so a bad record found downstream (in a Python function, after
        // a union) can be traced to it.
        let meta = std::collections::HashMap::from([(
            crate::errors::TOPIC_METADATA.to_string(),
            topic.to_string(),
        )]);
        Decoder {
            topic: topic.to_string(),
            format,
            value_schema,
            schema: Arc::new(Schema::new(fields).with_metadata(meta)),
        }
    }

    /// Decode one read; records that do not decode go to `on_error` (under `raise`, the first
    /// one fails the read, naming its topic/partition/offset) and are counted in `errors`.
    pub fn decode(
        &self,
        partition: usize,
        raw: &RawRecords,
        on_error: &ErrorHandler,
        errors: &AtomicU64,
        headers_of: &dyn Fn(i64) -> Headers,
    ) -> Result<RecordBatch> {
        match self.decode_all(partition, raw) {
            Err(e @ StreamError::Decode { .. }) if !on_error.raises() => {
                let _ = e;
                let mut good = RawRecords::default();
                for i in 0..raw.len() {
                    let mut one = raw.value(i).unwrap_or(b"{}").to_vec();
                    one.push(b'\n');
                    let err = match decode_json_rows(&self.value_schema, &one, 1) {
                        Ok(b) if b.num_rows() == 1 => {
                            good.push_from(raw, i);
                            continue;
                        }
                        Ok(b) => format!("expected one JSON object, found {} rows", b.num_rows()),
                        Err(e) => e,
                    };
                    let error = StreamError::Decode {
                        topic: self.topic.clone(),
                        partition: partition as u32,
                        offset: raw.offsets[i],
                        message: err,
                    };
                    let bad = BadRecord {
                        key: raw.keys[i].clone(),
                        value: raw.value(i).map(<[u8]>::to_vec),
                        headers: headers_of(raw.offsets[i]),
                        // (a record without a timestamp is dead-lettered at the time it was)
                        timestamp: raw.timestamps[i].unwrap_or_else(riverbed_log::fsutil::now_ms),
                        topic: Some(self.topic.clone()),
                        partition: Some(partition as i64),
                        offset: Some(raw.offsets[i]),
                    };
                    on_error.handle(bad, "read", error)?;
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                self.decode_all(partition, &good)
            }
            other => other,
        }
    }

    fn decode_all(&self, partition: usize, raw: &RawRecords) -> Result<RecordBatch> {
        let n = raw.len();
        let mut cols: Vec<ArrayRef> = match self.format {
            Format::Raw => {
                let mut b = BinaryBuilder::with_capacity(n, raw.values.len());
                for i in 0..n {
                    b.append_option(raw.value(i));
                }
                vec![Arc::new(b.finish())]
            }
            Format::Json => self.decode_json(partition, raw)?.columns().to_vec(),
        };
        // The record's columns, in `metadata_fields` order.
        let mut b = BinaryBuilder::with_capacity(n, 16 * n);
        for k in &raw.keys {
            b.append_option(k.as_deref());
        }
        cols.push(Arc::new(b.finish()));
        cols.push(Arc::new(
            TimestampMillisecondArray::from(raw.timestamps.clone()).with_timezone("UTC"),
        ));
        cols.push(Arc::new(Int32Array::from(vec![partition as i32; n])));
        cols.push(Arc::new(Int64Array::from(raw.offsets.clone())));
        RecordBatch::try_new(self.schema.clone(), cols).ctx("source")
    }

    fn decode_json(&self, partition: usize, raw: &RawRecords) -> Result<RecordBatch> {
        let mut buf = Vec::with_capacity(raw.values.len() + raw.len() * 3);
        for i in 0..raw.len() {
            match raw.value(i) {
                Some(v) => buf.extend_from_slice(v),
                None => buf.extend_from_slice(b"{}"),
            }
            buf.push(b'\n');
        }
        let whole = decode_json_rows(&self.value_schema, &buf, raw.len());
        match whole {
            Ok(b) if b.num_rows() == raw.len() => Ok(b),
            _ => {
                // Find the first record that does not decode to exactly one row, to name it.
                for i in 0..raw.len() {
                    let mut one = raw.value(i).unwrap_or(b"{}").to_vec();
                    one.push(b'\n');
                    let err = match decode_json_rows(&self.value_schema, &one, 1) {
                        Ok(b) if b.num_rows() == 1 => continue,
                        Ok(b) => format!("expected one JSON object, found {} rows", b.num_rows()),
                        Err(e) => e,
                    };
                    return Err(StreamError::Decode {
                        topic: self.topic.clone(),
                        partition: partition as u32,
                        offset: raw.offsets[i],
                        message: err,
                    });
                }
                Err(StreamError::Decode {
                    topic: self.topic.clone(),
                    partition: partition as u32,
                    offset: raw.offsets.first().copied().unwrap_or(-1),
                    message: "batch does not decode".into(),
                })
            }
        }
    }
}

fn decode_json_rows(
    schema: &SchemaRef,
    buf: &[u8],
    rows: usize,
) -> std::result::Result<RecordBatch, String> {
    let Some(exact) = crate::json_ints::decoding_schema(schema) else {
        return decode_json_as(schema, buf, rows);
    };
    match decode_json_as(&exact, buf, rows) {
        Ok(b) => crate::json_ints::narrow(b, schema),
        // Said as the plain decoder says it (it names the column), when it fails too.
        Err(e) => Err(decode_json_as(schema, buf, rows).err().unwrap_or(e)),
    }
}

fn decode_json_as(
    schema: &SchemaRef,
    buf: &[u8],
    rows: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut dec = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.max(1) + 1)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let mut pos = 0;
    while pos < buf.len() {
        let used = dec.decode(&buf[pos..]).map_err(|e| e.to_string())?;
        if used == 0 {
            break;
        }
        pos += used;
    }
    let b = dec.flush().map_err(|e| e.to_string())?;
    Ok(b.unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}
