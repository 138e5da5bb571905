//! What `produce_arrow` refuses to change silently on the way to JSON: a NaN or infinite float
//! (JSON has no such number; arrow-json would write `null`) is an error naming the column and
//! row unless the caller chose `null`; duplicate column names (two keys of one JSON object) are
//! an error; binary columns are written as base64 strings, as Kafka Connect's JSON converter
//! does (arrow-json would write hex); record timestamps must lie in [`MIN_TIMESTAMP_MS`,
//! [`MAX_TIMESTAMP_MS`]].

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::error::{LogError, Result};

/// The earliest timestamp riverbed takes: 0001-01-01T00:00:00Z, in ms since the epoch.
pub const MIN_TIMESTAMP_MS: i64 = -62_135_596_800_000;
/// The latest: 9999-12-31T23:59:59.999Z. Far enough from ±2^63 that no window bound overflows.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// What to write for a float that is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Refuse the whole call, naming the column and row (the default).
    #[default]
    Error,
    /// Write JSON `null`.
    Null,
    /// Write a float column that holds one as JSON strings (`"NaN"`, `"inf"`, `"-inf"`, the other
    /// values as their shortest round-trip text), which riverbed's JSON decoding reads back into
    /// the float column exactly: for the internal (repartition) topics only riverbed reads.
    Text,
}

/// Options of the JSON encoding of `produce_arrow`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    pub non_finite: NonFinite,
}

/// Per row of `a`: whether it holds a NaN or infinite float anywhere inside (lists, structs,
/// maps, dictionaries). None when `a` holds no floats at all.
fn non_finite_rows(a: &dyn Array) -> Option<Vec<bool>> {
    fn floats<T: arrow_array::ArrowPrimitiveType>(
        a: &dyn Array,
        bad: impl Fn(T::Native) -> bool,
    ) -> Vec<bool> {
        let p = a.as_primitive::<T>();
        (0..p.len())
            .map(|i| p.is_valid(i) && bad(p.value(i)))
            .collect()
    }
    let rows = match a.data_type() {
        DataType::Float16 => floats::<Float16Type>(a, |v| !v.is_finite()),
        DataType::Float32 => floats::<Float32Type>(a, |v| !v.is_finite()),
        DataType::Float64 => floats::<Float64Type>(a, |v| !v.is_finite()),
        DataType::Struct(_) => {
            let s = a.as_struct();
            let mut out = vec![false; a.len()];
            let mut any = false;
            for c in s.columns() {
                if let Some(m) = non_finite_rows(c.as_ref()) {
                    any = true;
                    for (o, b) in out.iter_mut().zip(m) {
                        *o |= b;
                    }
                }
            }
            if !any {
                return None;
            }
            (0..a.len()).map(|i| a.is_valid(i) && out[i]).collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) => {
            let (values, bounds): (ArrayRef, Vec<(usize, usize)>) = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    let o = l.value_offsets();
                    (
                        l.values().clone(),
                        (0..l.len())
                            .map(|i| (o[i] as usize, o[i + 1] as usize))
                            .collect(),
                    )
                }
                DataType::LargeList(_) => {
                    let l = a.as_list::<i64>();
                    let o = l.value_offsets();
                    (
                        l.values().clone(),
                        (0..l.len())
                            .map(|i| (o[i] as usize, o[i + 1] as usize))
                            .collect(),
                    )
                }
                _ => {
                    let m = a.as_map();
                    let o = m.value_offsets();
                    (
                        Arc::new(m.entries().clone()) as ArrayRef,
                        (0..m.len())
                            .map(|i| (o[i] as usize, o[i + 1] as usize))
                            .collect(),
                    )
                }
            };
            let inner = non_finite_rows(values.as_ref())?;
            bounds
                .iter()
                .enumerate()
                .map(|(i, &(s, e))| a.is_valid(i) && inner[s..e].iter().any(|&b| b))
                .collect()
        }
        DataType::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            let n = *n as usize;
            let inner = non_finite_rows(l.values().as_ref())?;
            (0..l.len())
                .map(|i| {
                    let s = l.value_offset_at(i);
                    a.is_valid(i) && inner.get(s..s + n).is_some_and(|r| r.iter().any(|&b| b))
                })
                .collect()
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let inner = non_finite_rows(d.values().as_ref())?;
            let keys = d.normalized_keys();
            (0..a.len())
                .map(|i| a.is_valid(i) && inner.get(keys[i]).copied().unwrap_or(false))
                .collect()
        }
        _ => return None,
    };
    Some(rows)
}

/// Column `name` ready for JSON as to its NaN and infinite floats: refused unless `options`
/// say what to write; as text (`NonFinite::Text`) when it is a float column holding one.
pub fn non_finite(a: &ArrayRef, name: &str, options: &JsonOptions) -> Result<ArrayRef> {
    if options.non_finite == NonFinite::Null {
        return Ok(a.clone());
    }
    let Some(row) = non_finite_rows(a.as_ref()).and_then(|m| m.iter().position(|&b| b)) else {
        return Ok(a.clone());
    };
    let float = matches!(
        a.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    );
    match options.non_finite {
        NonFinite::Text if float => arrow_cast::cast(a, &DataType::Utf8)
            .map_err(|e| LogError::Schema(format!("column '{name}': {e}"))),
        NonFinite::Text => Err(LogError::Schema(format!(
            "column '{name}' holds a NaN or infinite float inside a list, struct or map at row {row}, \
             which a repartition topic cannot carry; replace it before the keyed operator"
        ))),
        _ => Err(LogError::Schema(format!(
            "column '{name}' holds a NaN or infinite float at row {row}, which JSON cannot hold; \
             pass non_finite=\"null\" to write null for it, or replace it first"
        ))),
    }
}

/// Refuse a schema with two columns of one name (they would be two keys of one JSON object, or
/// an ambiguous key/value/timestamp column).
pub fn check_unique_names(schema: &Schema) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name().as_str()) {
            return Err(LogError::Schema(format!(
                "column name '{}' appears more than once; rename one (a JSON object cannot hold a key twice)",
                f.name()
            )));
        }
    }
    Ok(())
}

fn base64(bytes: &[u8], out: &mut String) {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ABC[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

fn holds_binary(t: &DataType) -> bool {
    match t {
        t if is_binary(t) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => holds_binary(f.data_type()),
        DataType::Struct(fs) => fs.iter().any(|f| holds_binary(f.data_type())),
        DataType::Dictionary(_, v) => holds_binary(v),
        _ => false,
    }
}

/// `a` (a binary column) as base64 strings; other columns as they are. Binary nested in a list
/// or struct is refused rather than written as hex.
pub fn binary_as_base64(a: &ArrayRef, name: &str) -> Result<ArrayRef> {
    if !is_binary(a.data_type()) {
        if holds_binary(a.data_type()) {
            return Err(LogError::Schema(format!(
                "column '{name}' ({}) holds binary values inside a list or struct, which JSON has no type for; \
                 convert them to strings (base64, as Kafka Connect does) first",
                a.data_type()
            )));
        }
        return Ok(a.clone());
    }
    let bin = arrow_cast::cast(a, &DataType::LargeBinary)
        .map_err(|e| LogError::Schema(format!("column '{name}': {e}")))?;
    let bin = bin.as_binary::<i64>();
    let mut s = String::new();
    let out: StringArray = (0..bin.len())
        .map(|i| {
            bin.is_valid(i).then(|| {
                s.clear();
                base64(bin.value(i), &mut s);
                s.clone()
            })
        })
        .collect();
    Ok(Arc::new(out))
}

/// Refuse a timestamp or date value arrow-json cannot format (outside chrono's years, about
/// ±262,000): it would write an error message into the JSON in its place.
pub fn formattable_times(a: &ArrayRef, name: &str) -> Result<()> {
    use arrow_array::temporal_conversions::{as_date, as_datetime};
    use arrow_array::types::{
        Date32Type, Date64Type, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    use arrow_schema::TimeUnit;
    fn first_bad<T: arrow_array::ArrowPrimitiveType>(
        a: &dyn Array,
        ok: impl Fn(i64) -> bool,
    ) -> Option<(usize, i64)>
    where
        T::Native: Into<i64>,
    {
        let p = a.as_primitive::<T>();
        (0..p.len())
            .filter(|&i| p.is_valid(i))
            .map(|i| (i, p.value(i).into()))
            .find(|&(_, v)| !ok(v))
    }
    let bad = match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            first_bad::<TimestampSecondType>(a, |v| as_datetime::<TimestampSecondType>(v).is_some())
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            first_bad::<TimestampMillisecondType>(a, |v| {
                as_datetime::<TimestampMillisecondType>(v).is_some()
            })
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            first_bad::<TimestampMicrosecondType>(a, |v| {
                as_datetime::<TimestampMicrosecondType>(v).is_some()
            })
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            first_bad::<TimestampNanosecondType>(a, |v| {
                as_datetime::<TimestampNanosecondType>(v).is_some()
            })
        }
        DataType::Date32 => first_bad::<Date32Type>(a, |v| as_date::<Date32Type>(v).is_some()),
        DataType::Date64 => first_bad::<Date64Type>(a, |v| as_date::<Date64Type>(v).is_some()),
        _ => None,
    };
    match bad {
        Some((row, v)) => Err(LogError::Schema(format!(
            "column '{name}' ({}) holds {v} at row {row}, a time no calendar date can show; \
             JSON cannot hold it",
            a.data_type()
        ))),
        None => Ok(()),
    }
}

/// `batch` ready for arrow-json: binary columns as base64 text, non-finite floats and
/// unformattable times refused.
pub fn for_json(batch: &RecordBatch, options: &JsonOptions) -> Result<RecordBatch> {
    check_unique_names(&batch.schema())?;
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        formattable_times(c, f.name())?;
        let c = non_finite(c, f.name(), options)?;
        let c = binary_as_base64(&c, f.name())?;
        fields.push(Field::new(f.name(), c.data_type().clone(), true));
        columns.push(c);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| LogError::Schema(e.to_string()))
}

/// Refuse a timestamp outside [`MIN_TIMESTAMP_MS`, `MAX_TIMESTAMP_MS`].
pub fn check_timestamps(ts: &[i64], name: &str) -> Result<()> {
    if let Some((row, t)) = ts
        .iter()
        .enumerate()
        .find(|(_, &t)| !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&t))
    {
        return Err(LogError::Schema(format!(
            "timestamp column '{name}' is {t} ms at row {row}, outside the years 1 to 9999 \
             ({MIN_TIMESTAMP_MS}..={MAX_TIMESTAMP_MS} ms) riverbed takes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{FixedSizeListBuilder, Float64Builder, ListBuilder};
    use arrow_array::{Float64Array, StructArray};

    fn rows(a: ArrayRef) -> Vec<bool> {
        non_finite_rows(a.as_ref()).expect("holds floats")
    }

    #[test]
    fn text_mode_writes_a_float_column_holding_nan_or_infinity_as_text() {
        let text = JsonOptions {
            non_finite: NonFinite::Text,
        };
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            1.5,
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
        ]));
        let out = non_finite(&a, "x", &text).unwrap();
        let got: Vec<&str> = out.as_string::<i32>().iter().map(|v| v.unwrap()).collect();
        assert_eq!(got, ["1.5", "NaN", "inf", "-inf"]);
        // Finite floats stay numbers; `null` leaves arrow-json to write null.
        let finite: ArrayRef = Arc::new(Float64Array::from(vec![1.5, -0.0]));
        assert_eq!(
            non_finite(&finite, "x", &text).unwrap().data_type(),
            &DataType::Float64
        );
        let null = JsonOptions {
            non_finite: NonFinite::Null,
        };
        assert_eq!(
            non_finite(&a, "x", &null).unwrap().data_type(),
            &DataType::Float64
        );
        assert!(non_finite(&a, "x", &JsonOptions::default()).is_err());
        // Inside a list it cannot be text: refused, saying so.
        let mut b = ListBuilder::new(Float64Builder::new());
        b.values().append_value(f64::NAN);
        b.append(true);
        let l: ArrayRef = Arc::new(b.finish());
        let e = non_finite(&l, "xs", &text).unwrap_err().to_string();
        assert!(e.contains("inside a list"), "{e}");
    }

    #[test]
    fn non_finite_floats_are_found_in_the_row_that_holds_them_even_in_slices() {
        let nan = f64::NAN;
        let flat: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            None,
            Some(nan),
            Some(f64::NEG_INFINITY),
        ]));
        assert_eq!(rows(flat.clone()), [false, false, true, true]);
        assert_eq!(rows(flat.slice(1, 2)), [false, true]);
        let mut lists = ListBuilder::new(Float64Builder::new());
        for row in [vec![1.0], vec![2.0, nan], vec![], vec![3.0]] {
            lists.values().append_slice(&row);
            lists.append(true);
        }
        let lists: ArrayRef = Arc::new(lists.finish());
        assert_eq!(rows(lists.clone()), [false, true, false, false]);
        assert_eq!(rows(lists.slice(1, 3)), [true, false, false]);
        assert_eq!(rows(lists.slice(2, 2)), [false, false]);
        let mut fixed = FixedSizeListBuilder::new(Float64Builder::new(), 2);
        for row in [[1.0, 2.0], [f64::INFINITY, 0.0], [3.0, 4.0]] {
            fixed.values().append_slice(&row);
            fixed.append(true);
        }
        let fixed: ArrayRef = Arc::new(fixed.finish());
        assert_eq!(rows(fixed.clone()), [false, true, false]);
        assert_eq!(rows(fixed.slice(1, 2)), [true, false]);
        assert_eq!(rows(fixed.slice(2, 1)), [false]);
        let st: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Float64, true)),
            flat.clone(),
        )]));
        assert_eq!(rows(st.slice(2, 2)), [true, true]);
        assert!(non_finite_rows(&arrow_array::Int64Array::from(vec![1])).is_none());
    }

    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\x00\xff\xfe", "AP/+"),
        ] {
            let mut s = String::new();
            base64(raw, &mut s);
            assert_eq!(s, want);
        }
    }
}
