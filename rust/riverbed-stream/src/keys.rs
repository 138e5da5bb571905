//! Group keys: the `by` columns of each row encoded with arrow-row and interned to dense ids,
//! so keyed state lives in vectors indexed by id and keys are converted back to columns only when
//! results are emitted.

use std::collections::HashMap;

use std::hash::BuildHasher;

use hashbrown::HashTable;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{Field, SchemaRef};

use crate::error::{ArrowContext, Result, StreamError};

pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub struct KeyInterner {
    columns: Vec<String>,
    fields: Vec<Field>,
    /// Row encoding of the key columns; `None` without keys (one global key).
    conv: Option<RowConverter>,
    /// One non-null-typed Utf8 key column: intern its raw bytes (no row encoding on the hot path).
    raw_string: bool,
    /// Every key's bytes, back to back, and where each ends: one allocation for all keys.
    arena: Vec<u8>,
    ends: Vec<usize>,
    /// Raw-string mode: the id of the null key, if seen.
    null_id: Option<u32>,
    /// Key ids, and 32 bits of each key's hash by id: growing the table rehashes from these,
    /// without reading a million keys back from the arena (that stalled a step for ~100 ms).
    table: HashTable<u32>,
    hashes: Vec<u32>,
    hasher: foldhash::fast::RandomState,
}

/// The table's hash of a key with 32-bit hash `h`: bucket bits and tag bits both come from it.
fn spread(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
}

fn key_slice<'a>(arena: &'a [u8], ends: &[usize], id: u32) -> &'a [u8] {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &arena[start..ends[i]]
}

impl KeyInterner {
    pub fn new(schema: &SchemaRef, by: &[String], op: &str) -> Result<KeyInterner> {
        let mut fields = Vec::new();
        for name in by {
            let f = schema.field_with_name(name).map_err(|_| {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                StreamError::plan(
                    op,
                    format!("by: unknown column '{name}'; the input has {cols:?}"),
                )
            })?;
            fields.push(f.as_ref().clone().with_data_type(held_type(f.data_type())));
        }
        let conv = if by.is_empty() {
            None
        } else {
            Some(
                RowConverter::new(
                    fields
                        .iter()
                        .map(|f| SortField::new(f.data_type().clone()))
                        .collect(),
                )
                .map_err(|e| StreamError::plan(op, format!("by: {e}")))?,
            )
        };
        let raw_string =
            fields.len() == 1 && fields[0].data_type() == &arrow_schema::DataType::Utf8;
        Ok(KeyInterner {
            columns: by.to_vec(),
            fields,
            conv,
            raw_string,
            arena: Vec::new(),
            ends: Vec::new(),
            null_id: None,
            table: HashTable::new(),
            hashes: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
        })
    }

    /// How many bytes `snapshot` writes.
    pub fn state_bytes(&self) -> usize {
        8 + self.arena.len() + 8 + self.ends.len() * 8 + 9
    }

    /// Every key's bytes, in id order (for checkpoints).
    pub fn snapshot(&self, w: &mut crate::state::StateWriter) {
        w.bytes(&self.arena);
        w.len(self.ends.len());
        w.buf.reserve(self.ends.len() * 8);
        for &e in &self.ends {
            w.u64(e as u64);
        }
        w.opt_i64(self.null_id.map(i64::from));
    }

    /// Re-intern the keys of a snapshot: each gets its old id back.
    pub fn restore(&mut self, r: &mut crate::state::StateReader<'_>) -> Result<()> {
        let arena = r.bytes()?.to_vec();
        let n = r.len()?;
        let mut ends = Vec::with_capacity(n);
        for _ in 0..n {
            ends.push(r.u64()? as usize);
        }
        let null_id = r.opt_i64()?.map(|v| v as u32);
        if ends.iter().any(|&e| e > arena.len()) || ends.windows(2).any(|w| w[0] > w[1]) {
            return Err(StreamError::Checkpoint("mangled key table".into()));
        }
        self.arena.clear();
        self.ends.clear();
        self.table = HashTable::with_capacity(ends.len());
        self.hashes.clear();
        let mut start = 0;
        for (i, &e) in ends.iter().enumerate() {
            if null_id == Some(i as u32) {
                // Null's empty slot: not in the table, or "" would find it.
                self.ends.push(self.arena.len());
                self.hashes.push(0);
            } else {
                let id = self.intern(&arena[start..e]);
                debug_assert_eq!(id as usize + 1, self.ends.len());
            }
            start = e;
        }
        self.null_id = null_id;
        Ok(())
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Number of distinct keys seen (1 without keys).
    pub fn len(&self) -> usize {
        if self.conv.is_none() {
            1
        } else {
            self.ends.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn intern(&mut self, bytes: &[u8]) -> u32 {
        let h = (self.hasher.hash_one(bytes) >> 32) as u32;
        let (arena, ends, hashes) = (&self.arena, &self.ends, &self.hashes);
        if let Some(&id) = self.table.find(spread(h), |&id| {
            hashes[id as usize] == h && key_slice(arena, ends, id) == bytes
        }) {
            return id;
        }
        let id = self.ends.len() as u32;
        self.arena.extend_from_slice(bytes);
        self.ends.push(self.arena.len());
        self.hashes.push(h);
        let hashes = &self.hashes;
        self.table
            .insert_unique(spread(h), id, |&i| spread(hashes[i as usize]));
        id
    }

    fn column<'b>(&self, batch: &'b RecordBatch, c: &str) -> Result<&'b ArrayRef> {
        batch
            .column_by_name(c)
            .ok_or_else(|| StreamError::Schema(format!("key column '{c}' is missing from a batch")))
    }

    /// The key id of every row of `batch`.
    pub fn ids(&mut self, batch: &RecordBatch) -> Result<Vec<u32>> {
        use arrow_array::cast::AsArray;
        let n = batch.num_rows();
        let Some(conv) = &self.conv else {
            return Ok(vec![0; n]);
        };
        let mut out = Vec::with_capacity(n);
        if self.raw_string {
            let a = self.column(batch, &self.columns[0])?.clone();
            let strings = a.as_string_opt::<i32>().ok_or_else(|| {
                StreamError::Schema(format!("key column '{}' changed type", self.columns[0]))
            })?;
            let mut last: Option<(&str, u32)> = None;
            for v in strings.iter() {
                let Some(v) = v else {
                    let id = match self.null_id {
                        Some(id) => id,
                        None => {
                            // Null gets an empty arena slot; `null_id` tells it from "".
                            let id = self.ends.len() as u32;
                            self.ends.push(self.arena.len());
                            self.hashes.push(0); // never looked up: null is not in the table
                            self.null_id = Some(id);
                            id
                        }
                    };
                    out.push(id);
                    continue;
                };
                if let Some((l, id)) = last {
                    if l == v {
                        out.push(id);
                        continue;
                    }
                }
                let id = self.intern(v.as_bytes());
                last = Some((v, id));
                out.push(id);
            }
            return Ok(out);
        }
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .zip(&self.fields)
            .map(|(c, f)| {
                let a = canonical(self.column(batch, c)?);
                if a.data_type() == f.data_type() {
                    Ok(a)
                } else {
                    arrow_cast::cast(&a, f.data_type()).ctx("group keys")
                }
            })
            .collect::<Result<_>>()?;
        let rows = conv.convert_columns(&cols).ctx("group keys")?;
        let mut last: Option<(&[u8], u32)> = None;
        for row in rows.iter() {
            let bytes = row.data();
            // Runs of one key are common (keyed partitions, sorted input): skip the hash lookup.
            if let Some((b, id)) = last {
                if b == bytes {
                    out.push(id);
                    continue;
                }
            }
            let id = self.intern(bytes);
            last = Some((bytes, id));
            out.push(id);
        }
        Ok(out)
    }

    /// The key columns for key ids `ids`, in order.
    pub fn columns(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let Some(conv) = &self.conv else {
            return Ok(vec![]);
        };
        if self.raw_string {
            let mut b =
                arrow_array::builder::StringBuilder::with_capacity(ids.len(), ids.len() * 8);
            for &id in ids {
                if Some(id) == self.null_id {
                    b.append_null();
                } else {
                    let bytes = key_slice(&self.arena, &self.ends, id);
                    b.append_value(
                        std::str::from_utf8(bytes)
                            .map_err(|e| StreamError::Schema(e.to_string()))?,
                    );
                }
            }
            return Ok(vec![Arc::new(b.finish())]);
        }
        let parser = conv.parser();
        let rows = ids
            .iter()
            .map(|&i| parser.parse(key_slice(&self.arena, &self.ends, i)));
        let cols = conv.convert_rows(rows).ctx("group keys")?;
        // The row format gives a dictionary-encoded key (a pandas categorical) back as its
        // values: encode it again, so the output has the input's type.
        cols.into_iter()
            .zip(&self.fields)
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow_cast::cast(&c, f.data_type()).ctx("group keys")
                }
            })
            .collect()
    }

    /// Key bytes that order like the key values, for a deterministic output order.
    pub fn bytes(&self, id: u32) -> &[u8] {
        if self.conv.is_none() || Some(id) == self.null_id {
            return &[];
        }
        key_slice(&self.arena, &self.ends, id)
    }
}

/// The type a column is held and emitted as: a dictionary with a narrow index (a pandas
/// categorical's int8 codes) gets an int32 index, since a window's keys, a series' held records
/// or a join's gather values from many batches, each with its own dictionary, and 128 of them
/// overflow an int8. Sources hand on their batches so (`wide_batch`).
pub fn held_type(t: &arrow_schema::DataType) -> arrow_schema::DataType {
    use arrow_schema::DataType;
    match t {
        DataType::Dictionary(k, v)
            if matches!(
                k.as_ref(),
                DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16
            ) =>
        {
            DataType::Dictionary(Box::new(DataType::Int32), v.clone())
        }
        _ => t.clone(),
    }
}

/// `schema` with every column of a `held_type` other than its own retyped (the same `Arc` when
/// none is).
pub fn wide_schema(schema: &SchemaRef) -> SchemaRef {
    if schema
        .fields()
        .iter()
        .all(|f| held_type(f.data_type()) == *f.data_type())
    {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(held_type(f.data_type())))
        .collect();
    Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// A source's batch with its columns cast to their `held_type` (index widening only: cheap).
pub fn wide_batch(b: RecordBatch) -> Result<RecordBatch> {
    let schema = b.schema();
    let wide = wide_schema(&schema);
    if Arc::ptr_eq(&wide, &schema) {
        return Ok(b);
    }
    let cols = b
        .columns()
        .iter()
        .zip(wide.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow_cast::cast(c, f.data_type()).ctx("widening a dictionary index")
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
    RecordBatch::try_new_with_options(wide, cols, &opts).ctx("widening a dictionary index")
}

/// A key column as keys compare: float -0.0 is 0.0 and every NaN one NaN (as polars groups
/// them); other types as they are. The row format would otherwise tell them apart by their bits.
pub fn canonical(col: &ArrayRef) -> ArrayRef {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    use arrow_schema::DataType;
    match col.data_type() {
        DataType::Float64 => {
            let a = col.as_primitive::<Float64Type>();
            if a.values()
                .iter()
                .all(|v| !v.is_nan() && v.to_bits() != (-0.0f64).to_bits())
            {
                return col.clone();
            }
            Arc::new(a.unary::<_, Float64Type>(|v| if v.is_nan() { f64::NAN } else { v + 0.0 }))
        }
        // Through f64, which holds every f32 and f16 exactly.
        t @ (DataType::Float32 | DataType::Float16) => arrow_cast::cast(col, &DataType::Float64)
            .and_then(|c| arrow_cast::cast(&canonical(&c), t))
            .unwrap_or_else(|_| col.clone()),
        // A dictionary of floats: its values as keys compare (the row format keys it by value).
        DataType::Dictionary(_, v) if v.is_floating() => {
            let d = col.as_any_dictionary();
            d.with_values(canonical(d.values()))
        }
        _ => col.clone(),
    }
}

/// Event times in ms of `column` (int64 or a timestamp of any unit); nulls are an error. An int64
/// or ms-timestamp column is shared, not copied.
pub fn event_times(batch: &RecordBatch, column: &str) -> Result<arrow_buffer::ScalarBuffer<i64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::Array;
    use arrow_schema::{DataType, TimeUnit};
    let a = batch
        .column_by_name(column)
        .ok_or_else(|| StreamError::Schema(format!("event-time column '{column}' is missing")))?;
    let ms: ArrayRef = match a.data_type() {
        DataType::Int64 => a.clone(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            arrow_cast::cast(a, &DataType::Int64).ctx("event time")?
        }
        DataType::Timestamp(unit, _) => {
            // Floor to ms (as riverbed-log does), so pre-1970 sub-ms times fall in the right window.
            let per_ms = match unit {
                TimeUnit::Second => return event_times_scaled(a, 1000),
                TimeUnit::Microsecond => 1_000,
                _ => 1_000_000,
            };
            let raw = arrow_cast::cast(a, &DataType::Int64).ctx("event time")?;
            let v = raw.as_primitive::<Int64Type>();
            Arc::new(v.unary::<_, Int64Type>(|x| x.div_euclid(per_ms))) as ArrayRef
        }
        t if t.is_integer() => arrow_cast::cast(a, &DataType::Int64).ctx("event time")?,
        t => {
            return Err(StreamError::Schema(format!(
            "event-time column '{column}' has type {t}; expected int64 milliseconds or a timestamp"
        )))
        }
    };
    if ms.null_count() > 0 {
        let i = (0..ms.len()).find(|&i| ms.is_null(i)).unwrap_or(0);
        return Err(StreamError::Schema(format!(
            "event-time column '{column}' is null at row {i}"
        )));
    }
    Ok(ms.as_primitive::<Int64Type>().values().clone())
}

fn event_times_scaled(a: &ArrayRef, factor: i64) -> Result<arrow_buffer::ScalarBuffer<i64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::Array;
    if a.null_count() > 0 {
        return Err(StreamError::Schema(
            "the event-time column has nulls".into(),
        ));
    }
    let raw = arrow_cast::cast(a, &arrow_schema::DataType::Int64).ctx("event time")?;
    Ok(raw
        .as_primitive::<Int64Type>()
        .values()
        .iter()
        .map(|x| x.saturating_mul(factor))
        .collect::<Vec<_>>()
        .into())
}

/// The Arrow type window bounds are reported in: the event-time column's kind, in ms.
pub fn bound_type(schema: &SchemaRef, column: &str) -> arrow_schema::DataType {
    use arrow_schema::{DataType, TimeUnit};
    match schema
        .field_with_name(column)
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::Timestamp(_, tz)) => DataType::Timestamp(TimeUnit::Millisecond, tz),
        _ => DataType::Int64,
    }
}

/// An i64 ms column as `bound_type`.
pub fn bounds_array(values: Vec<i64>, t: &arrow_schema::DataType) -> Result<ArrayRef> {
    let a: ArrayRef = Arc::new(arrow_array::Int64Array::from(values));
    if t == &arrow_schema::DataType::Int64 {
        Ok(a)
    } else {
        arrow_cast::cast(&a, t).ctx("window bounds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;
    use arrow_schema::{DataType, Schema};

    fn batch(keys: Vec<Option<String>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys)) as ArrayRef]).unwrap()
    }

    /// Float keys compare as numbers: -0.0 is 0.0, every NaN is one key (also for the exchange,
    /// so both meet on one worker).
    #[test]
    fn float_keys_equal_as_numbers_are_one_key() {
        use arrow_array::{Float32Array, Float64Array};
        let other_nan = f64::from_bits(f64::NAN.to_bits() ^ 1);
        assert!(other_nan.is_nan());
        let a = Float64Array::from(vec![0.0, -0.0, f64::NAN, other_nan, -f64::NAN, 1.5]);
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Float64, false)]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(a) as ArrayRef]).unwrap();
        let mut k = KeyInterner::new(&schema, &["k".to_string()], "window").unwrap();
        assert_eq!(k.ids(&b).unwrap(), vec![0, 0, 1, 1, 1, 2]);
        let mut sp = crate::exchange::Splitter::new(vec![("k".into(), None)]);
        let w = sp.workers(&b, 7).unwrap();
        assert!(w[0] == w[1] && w[2] == w[3] && w[3] == w[4], "{w:?}");
        let a32 = Float32Array::from(vec![-0.0f32, 0.0]);
        let s32 = Arc::new(Schema::new(vec![Field::new("k", DataType::Float32, false)]));
        let b32 = RecordBatch::try_new(s32.clone(), vec![Arc::new(a32) as ArrayRef]).unwrap();
        let mut k32 = KeyInterner::new(&s32, &["k".to_string()], "window").unwrap();
        assert_eq!(k32.ids(&b32).unwrap(), vec![0, 0]);
    }

    /// A dictionary-encoded key (a pandas categorical): equal values get one id whatever their
    /// dictionary index in each batch, and come back dictionary-encoded.
    #[test]
    fn dictionary_keys_intern_by_value_and_come_back_with_their_type() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int32Type;
        use arrow_array::DictionaryArray;
        let dt = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("k", dt.clone(), true)]));
        let b1: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
        // The same values, another dictionary order: "y" is index 0 here.
        let b2: DictionaryArray<Int32Type> = vec!["y", "x", "z"].into_iter().collect();
        let mut k = KeyInterner::new(&schema, &["k".to_string()], "window").unwrap();
        let mk = |a: DictionaryArray<Int32Type>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(a) as ArrayRef]).unwrap()
        };
        let i1 = k.ids(&mk(b1)).unwrap();
        let i2 = k.ids(&mk(b2)).unwrap();
        assert_eq!(i1, vec![0, 1, 0]);
        assert_eq!(i2, vec![1, 0, 2]);
        let cols = k.columns(&[2, 0, 1]).unwrap();
        assert_eq!(cols[0].data_type(), &dt);
        let d = cols[0].as_dictionary::<Int32Type>();
        let values = d.values().as_string::<i32>();
        let got: Vec<&str> = d
            .keys()
            .iter()
            .map(|i| values.value(i.unwrap() as usize))
            .collect();
        assert_eq!(got, vec!["z", "x", "y"]);
    }

    #[test]
    fn ids_are_dense_stable_across_growth_and_restore_and_null_is_not_empty() {
        let b0 = batch(vec![None, Some(String::new())]);
        let mut k = KeyInterner::new(&b0.schema(), &["k".into()], "test").unwrap();
        assert_eq!(
            k.ids(&b0).unwrap(),
            vec![0, 1],
            "null and \"\" are two keys"
        );
        // enough keys to grow the table many times
        let many: Vec<Option<String>> = (0..50_000)
            .map(|i| Some(format!("key-{}", i % 20_000)))
            .collect();
        let ids = k.ids(&batch(many.clone())).unwrap();
        let want: Vec<u32> = (0..50_000).map(|i| 2 + (i % 20_000) as u32).collect();
        assert_eq!(ids, want);
        assert_eq!(k.len(), 20_002);

        let mut w = crate::state::StateWriter::small();
        k.snapshot(&mut w);
        let mut back = KeyInterner::new(&b0.schema(), &["k".into()], "test").unwrap();
        back.restore(&mut crate::state::StateReader::new(&w.buf, "keys"))
            .unwrap();
        assert_eq!(back.ids(&batch(many)).unwrap(), want);
        assert_eq!(back.ids(&b0).unwrap(), vec![0, 1]);
        assert_eq!(
            back.ids(&batch(vec![Some("new".into())])).unwrap(),
            vec![20_002]
        );
        assert_eq!(back.bytes(1), b"");
        assert_eq!(back.bytes(7), b"key-5");
    }
}
