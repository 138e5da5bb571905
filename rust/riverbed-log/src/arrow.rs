//! Arrow in and out of the log: `produce_arrow` turns columns of a `RecordBatch` into records,
//! and `ArrowRecordSink` collects polled records into a `RecordBatch` with the columns
//! `topic, partition, offset, timestamp, key, value, headers`.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::batch::RecordView;
use crate::error::{LogError, Result};
use crate::partition::NewRecord;
use crate::record_sink::RecordSink;
use crate::topic::Topic;

mod json_rules;
pub use json_rules::{JsonOptions, NonFinite, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};

/// The schema of polled records.
pub fn record_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        // Null: a Kafka record without a timestamp (never one of the log's).
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new(
            "headers",
            DataType::List(Arc::new(Field::new_struct("item", header_fields(), true))),
            false,
        ),
    ]))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// Builds the Arrow batch of a poll.
pub struct ArrowRecordSink {
    topic: Arc<str>,
    topics: StringBuilder,
    partitions: Int32Builder,
    offsets: Int64Builder,
    timestamps: Int64Builder,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    len: usize,
}

impl ArrowRecordSink {
    pub fn new(topic: Arc<str>, capacity: usize) -> Self {
        // Generous reservations cost only address space: pages are touched as they fill.
        let cap = capacity.min(1 << 21);
        ArrowRecordSink {
            topics: StringBuilder::with_capacity(cap, cap * topic.len()),
            topic,
            partitions: Int32Builder::with_capacity(cap),
            offsets: Int64Builder::with_capacity(cap),
            timestamps: Int64Builder::with_capacity(cap),
            keys: BinaryBuilder::with_capacity(cap, cap * 16),
            values: BinaryBuilder::with_capacity(cap, cap * 128),
            headers: ListBuilder::new(StructBuilder::from_fields(header_fields(), 0))
                .with_field(Arc::new(Field::new_struct("item", header_fields(), true))),
            len: 0,
        }
    }

    pub fn finish(&mut self) -> Result<RecordBatch> {
        let ts: TimestampMillisecondArray = self
            .timestamps
            .finish()
            .reinterpret_cast::<TimestampMillisecondType>()
            .with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.topics.finish()),
            Arc::new(self.partitions.finish()),
            Arc::new(self.offsets.finish()),
            Arc::new(ts),
            Arc::new(self.keys.finish()),
            Arc::new(self.values.finish()),
            Arc::new(self.headers.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(record_schema(), columns).map_err(|e| LogError::Schema(e.to_string()))
    }
}

impl ArrowRecordSink {
    /// Append one record given by its parts (a Kafka client's message, say; `timestamp` is None
    /// for a Kafka record without one).
    pub fn push_parts<'h>(
        &mut self,
        partition: u32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        self.topics.append_value(&*self.topic);
        self.partitions.append_value(partition as i32);
        self.offsets.append_value(offset);
        self.timestamps.append_option(timestamp);
        self.keys.append_option(key);
        self.values.append_option(value);
        let s = self.headers.values();
        for (k, v) in headers {
            if let Some(b) = s.field_builder::<StringBuilder>(0) {
                b.append_value(String::from_utf8_lossy(k));
            }
            if let Some(b) = s.field_builder::<BinaryBuilder>(1) {
                b.append_option(v);
            }
            s.append(true);
        }
        self.headers.append(true);
        self.len += 1;
    }
}

impl RecordSink for ArrowRecordSink {
    fn push(&mut self, partition: u32, r: &RecordView<'_>) {
        self.push_parts(
            partition,
            r.offset,
            Some(r.timestamp),
            r.key,
            r.value,
            r.headers(),
        );
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        if self.len > 0 {
            let _ = self.finish();
        }
    }
}

/// `array` with a float -0.0 made 0.0 (other arrays as they are). Every keyed operator takes
/// the two as one key, so a record key made of them is one too: one partition, one key of a
/// compacted topic (NaNs are one key already: their text is one).
pub fn without_negative_zero(array: &ArrayRef) -> ArrayRef {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type};
    match array.data_type() {
        DataType::Float64 => Arc::new(
            array
                .as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(|v| v + 0.0),
        ),
        DataType::Float32 => Arc::new(
            array
                .as_primitive::<Float32Type>()
                .unary::<_, Float32Type>(|v| v + 0.0),
        ),
        _ => array.clone(),
    }
}

/// Row-wise byte views of one column: binary/string columns as they are, anything else as the
/// JSON text of each value.
enum BytesColumn {
    Array(ArrayRef),
    Encoded {
        data: Vec<u8>,
        ends: Vec<usize>,
        valid: Vec<bool>,
    },
}

impl BytesColumn {
    fn new(array: &ArrayRef, name: &str, options: &JsonOptions) -> Result<BytesColumn> {
        if let DataType::Dictionary(_, value_type) = array.data_type() {
            // pandas categoricals and polars enums: use the dictionary's values as they are.
            let plain = arrow_cast::cast(array, value_type)
                .map_err(|e| LogError::Schema(format!("column '{name}': {e}")))?;
            return BytesColumn::new(&plain, name, options);
        }
        match array.data_type() {
            DataType::Binary
            | DataType::LargeBinary
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::BinaryView
            | DataType::Utf8View => Ok(BytesColumn::Array(array.clone())),
            DataType::FixedSizeBinary(_) => Ok(BytesColumn::Array(
                arrow_cast::cast(array, &DataType::Binary)
                    .map_err(|e| LogError::Schema(format!("column '{name}': {e}")))?,
            )),
            _ => {
                let array = json_rules::non_finite(array, name, options)?;
                let array = json_rules::binary_as_base64(&array, name)?;
                let field = Field::new(name, array.data_type().clone(), true);
                let batch =
                    RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array.clone()])
                        .map_err(|e| LogError::Schema(e.to_string()))?;
                let (data, ends) = json_lines(&batch)?;
                // Each line is {"name":<value>}; keep just the value.
                let prefix = serde_json::to_string(name)
                    .map_err(|e| LogError::Schema(e.to_string()))?
                    .len()
                    + 2;
                let mut out = Vec::with_capacity(data.len());
                let mut out_ends = Vec::with_capacity(ends.len());
                let mut valid = Vec::with_capacity(ends.len());
                let mut start = 0;
                for (i, &end) in ends.iter().enumerate() {
                    let line = &data[start..end];
                    if array.is_null(i) || line.len() < prefix + 1 {
                        valid.push(false);
                    } else {
                        out.extend_from_slice(&line[prefix..line.len() - 1]);
                        valid.push(true);
                    }
                    out_ends.push(out.len());
                    start = end;
                }
                Ok(BytesColumn::Encoded {
                    data: out,
                    ends: out_ends,
                    valid,
                })
            }
        }
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            BytesColumn::Array(a) => {
                if a.is_null(i) {
                    return None;
                }
                Some(match a.data_type() {
                    DataType::Binary => a.as_binary::<i32>().value(i),
                    DataType::LargeBinary => a.as_binary::<i64>().value(i),
                    DataType::Utf8 => a.as_string::<i32>().value(i).as_bytes(),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i).as_bytes(),
                    DataType::BinaryView => a.as_binary_view().value(i),
                    DataType::Utf8View => a.as_string_view().value(i).as_bytes(),
                    _ => return None,
                })
            }
            BytesColumn::Encoded { data, ends, valid } => {
                if !valid[i] {
                    return None;
                }
                let start = if i == 0 { 0 } else { ends[i - 1] };
                Some(&data[start..ends[i]])
            }
        }
    }
}

/// Every row of `batch` as a JSON object: one buffer and the end position of each row.
fn json_lines(batch: &RecordBatch) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
        w.write(batch)
            .map_err(|e| LogError::Schema(format!("cannot encode rows as JSON: {e}")))?;
        w.finish().map_err(|e| LogError::Schema(e.to_string()))?;
    }
    // JSON strings escape newlines, so every b'\n' ends a row.
    let mut ends = Vec::with_capacity(batch.num_rows());
    let mut data = Vec::with_capacity(buf.len());
    for line in buf.split(|&b| b == b'\n') {
        if ends.len() == batch.num_rows() {
            break;
        }
        data.extend_from_slice(line);
        ends.push(data.len());
    }
    Ok((data, ends))
}

fn column<'a>(batch: &'a RecordBatch, name: &str, role: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let cols: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        LogError::Schema(format!(
            "{role} column '{name}' is not in the data; its columns are {cols:?}"
        ))
    })
}

/// Event timestamps in ms from an int64 or timestamp column.
fn timestamps_ms(array: &ArrayRef, name: &str) -> Result<Vec<i64>> {
    let bad_null =
        |i: usize| LogError::Schema(format!("timestamp column '{name}' is null at row {i}"));
    macro_rules! convert {
        ($t:ty, $f:expr) => {{
            let a = array.as_primitive::<$t>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Err(bad_null(i))
                    } else {
                        Ok($f(a.value(i)))
                    }
                })
                .collect()
        }};
    }
    match array.data_type() {
        DataType::Int64 => convert!(Int64Type, |v: i64| v),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            convert!(TimestampMillisecondType, |v: i64| v)
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            // Seconds past ±9.2e15 do not fit in ms: refused as out of range, never wrapped.
            let ms: Result<Vec<Option<i64>>> =
                convert!(TimestampSecondType, |v: i64| v.checked_mul(1000));
            let ms = ms?;
            let a = array.as_primitive::<TimestampSecondType>();
            ms.into_iter()
                .enumerate()
                .map(|(i, m): (usize, Option<i64>)| {
                    m.ok_or_else(|| {
                        LogError::Schema(format!(
                            "timestamp column '{name}' is {} s at row {i}, outside the years 1 to 9999 riverbed takes",
                            a.value(i)
                        ))
                    })
                })
                .collect()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            convert!(TimestampMicrosecondType, |v: i64| v.div_euclid(1000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            convert!(TimestampNanosecondType, |v: i64| v.div_euclid(1_000_000))
        }
        DataType::Int32
        | DataType::UInt32
        | DataType::Int16
        | DataType::UInt16
        | DataType::Date64 => {
            let c = arrow_cast::cast(array, &DataType::Int64)
                .map_err(|e| LogError::Schema(e.to_string()))?;
            timestamps_ms(&c, name)
        }
        other => Err(LogError::Schema(format!(
            "timestamp column '{name}' has type {other}; expected int64 milliseconds or a timestamp"
        ))),
    }
}

/// The rows of a batch as records: key and value bytes and timestamps (ms). `key`, `value` and
/// `timestamp` name columns; without a value column each row is a JSON object of all its
/// columns; without a timestamp column every record is stamped now.
pub struct EncodedRows {
    keys: Option<BytesColumn>,
    values: BytesColumn,
    timestamps: Vec<i64>,
}

impl EncodedRows {
    pub fn new(
        batch: &RecordBatch,
        key: Option<&str>,
        value: Option<&str>,
        timestamp: Option<&str>,
    ) -> Result<EncodedRows> {
        Self::with_options(batch, key, value, timestamp, &JsonOptions::default())
    }

    /// As `new`, with `options` for what JSON cannot hold (NaN, infinities).
    pub fn with_options(
        batch: &RecordBatch,
        key: Option<&str>,
        value: Option<&str>,
        timestamp: Option<&str>,
        options: &JsonOptions,
    ) -> Result<EncodedRows> {
        let keys: Vec<&str> = key.into_iter().collect();
        Self::with_keys(batch, &keys, value, timestamp, options)
    }

    /// As `with_options`, keyed by the columns `keys`: none, one (its value is the record key),
    /// or several (the record key is a JSON object of them in that order, `{"a":1,"b":"x"}`,
    /// as Kafka Connect writes a struct key as JSON).
    pub fn with_keys(
        batch: &RecordBatch,
        keys: &[&str],
        value: Option<&str>,
        timestamp: Option<&str>,
        options: &JsonOptions,
    ) -> Result<EncodedRows> {
        json_rules::check_unique_names(&batch.schema())?;
        let keys = match keys {
            [] => None,
            [k] => Some(BytesColumn::new(
                &without_negative_zero(column(batch, k, "key")?),
                k,
                options,
            )?),
            many => {
                let mut fields = Vec::with_capacity(many.len());
                let mut columns = Vec::with_capacity(many.len());
                for k in many {
                    let c = without_negative_zero(column(batch, k, "key")?);
                    fields.push(Field::new(*k, c.data_type().clone(), true));
                    columns.push(c);
                }
                let key_batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                    .map_err(|e| LogError::Schema(e.to_string()))?;
                let (data, ends) = json_lines(&json_rules::for_json(&key_batch, options)?)?;
                Some(BytesColumn::Encoded {
                    data,
                    valid: vec![true; ends.len()],
                    ends,
                })
            }
        };
        let values = match value {
            Some(v) => BytesColumn::new(column(batch, v, "value")?, v, options)?,
            None => {
                let (data, ends) = json_lines(&json_rules::for_json(batch, options)?)?;
                BytesColumn::Encoded {
                    data,
                    valid: vec![true; ends.len()],
                    ends,
                }
            }
        };
        let timestamps = match timestamp {
            Some(t) => {
                let ts = timestamps_ms(column(batch, t, "timestamp")?, t)?;
                json_rules::check_timestamps(&ts, t)?;
                ts
            }
            None => vec![crate::fsutil::now_ms(); batch.num_rows()],
        };
        Ok(EncodedRows {
            keys,
            values,
            timestamps,
        })
    }
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys.as_ref().and_then(|k| k.get(i))
    }
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        self.values.get(i)
    }
    pub fn timestamp(&self, i: usize) -> i64 {
        self.timestamps[i]
    }
}

/// Append every row of `batch` to `topic`. `key`, `value` and `timestamp` name columns; without a
/// value column each row is written as a JSON object of all its columns. Returns each row's
/// partition and offset.
pub fn produce_arrow(
    topic: &Topic,
    batches: &[RecordBatch],
    key: Option<&str>,
    value: Option<&str>,
    timestamp: Option<&str>,
) -> Result<(Int32Array, Int64Array)> {
    produce_arrow_with(
        topic,
        batches,
        key,
        value,
        timestamp,
        &JsonOptions::default(),
    )
}

/// As `produce_arrow`, with `options` for what JSON cannot hold.
pub fn produce_arrow_with(
    topic: &Topic,
    batches: &[RecordBatch],
    key: Option<&str>,
    value: Option<&str>,
    timestamp: Option<&str>,
    options: &JsonOptions,
) -> Result<(Int32Array, Int64Array)> {
    let keys: Vec<&str> = key.into_iter().collect();
    produce_arrow_keys(topic, batches, &keys, value, timestamp, options)
}

/// The rows of `batches` (of one schema) as one batch (None: no batches), so that a row is
/// named by its place in all of them and every row is checked before any is written.
pub fn one_batch(batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    match batches {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [first, ..] => arrow_select::concat::concat_batches(&first.schema(), batches)
            .map(Some)
            .map_err(|e| LogError::Schema(e.to_string())),
    }
}

/// As `produce_arrow_with`, keyed by the columns `keys` (`EncodedRows::with_keys`).
pub fn produce_arrow_keys(
    topic: &Topic,
    batches: &[RecordBatch],
    keys: &[&str],
    value: Option<&str>,
    timestamp: Option<&str>,
    options: &JsonOptions,
) -> Result<(Int32Array, Int64Array)> {
    let Some(batch) = one_batch(batches)? else {
        return Ok((
            Int32Array::from(Vec::<i32>::new()),
            Int64Array::from(Vec::<i64>::new()),
        ));
    };
    let rows = EncodedRows::with_keys(&batch, keys, value, timestamp, options)?;
    let n = rows.len();
    let (keys, values, ts) = (rows.keys.as_ref(), &rows.values, &rows.timestamps);
    let parts = topic.num_partitions() as usize;
    let mut row_partition = Vec::with_capacity(n);
    let mut counts = vec![0usize; parts];
    for i in 0..n {
        let k = keys.and_then(|k| k.get(i));
        topic.check_key(k).map_err(|e| match e {
            LogError::InvalidArgument(m) => LogError::InvalidArgument(format!("row {i}: {m}")),
            e => e,
        })?;
        let p = topic.partition_for(k) as usize;
        row_partition.push(p as i32);
        counts[p] += 1;
    }
    let mut routed: Vec<Vec<NewRecord<'_>>> =
        counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    let mut index_in_partition = Vec::with_capacity(n);
    for i in 0..n {
        let p = row_partition[i] as usize;
        index_in_partition.push(routed[p].len() as i64);
        routed[p].push(NewRecord {
            timestamp: ts[i],
            key: keys.and_then(|k| k.get(i)),
            value: values.get(i),
            headers: &[],
        });
    }
    let firsts = topic.produce_routed(&routed)?;
    if keys.is_none() || (0..n).any(|i| keys.and_then(|k| k.get(i)).is_none()) {
        topic.next_sticky();
    }
    let offsets: Int64Array = (0..n)
        .map(|i| firsts[row_partition[i] as usize] + index_in_partition[i])
        .collect::<Vec<i64>>()
        .into();
    Ok((Int32Array::from(row_partition), offsets))
}
