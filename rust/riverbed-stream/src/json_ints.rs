//! Integer fields of JSON values are decoded exactly: arrow-json parses a number with a fraction
//! (`1.5`) into an integer column by truncating it, so a float event time would silently move.
//! They are decoded as `Decimal128(38, 18)` instead and narrowed back to their type, and a value
//! that is not a whole number is a record that does not decode (handled by `on_error`).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

const SCALE: i8 = 18;
const ONE: i128 = 1_000_000_000_000_000_000;

/// The schema to decode with: `schema` with its integer fields as decimals, or None when it has
/// no integer field.
pub(crate) fn decoding_schema(schema: &SchemaRef) -> Option<SchemaRef> {
    if !schema.fields().iter().any(|f| f.data_type().is_integer()) {
        return None;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.data_type().is_integer() {
                f.as_ref()
                    .clone()
                    .with_data_type(DataType::Decimal128(38, SCALE))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Some(Arc::new(
        Schema::new(fields).with_metadata(schema.metadata().clone()),
    ))
}

fn show(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let (int, frac) = (
        v.unsigned_abs() / ONE as u128,
        v.unsigned_abs() % ONE as u128,
    );
    let frac = format!("{frac:018}");
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

/// `decoded` (decoded with `decoding_schema(schema)`) with its integer fields back in their
/// types; a value with a fraction, or too large for its type, is an error naming field and row.
pub(crate) fn narrow(decoded: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(decoded.columns()) {
        if !f.data_type().is_integer() {
            columns.push(c.clone());
            continue;
        }
        let d = c.as_primitive::<Decimal128Type>();
        if let Some(row) = (0..d.len()).find(|&i| d.is_valid(i) && d.value(i) % ONE != 0) {
            return Err(format!(
                "field '{}' is {} at row {row}, not a whole number (its type is {}; it is not truncated)",
                f.name(),
                show(d.value(row)),
                f.data_type()
            ));
        }
        let options = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        let narrowed = arrow_cast::cast_with_options(c, f.data_type(), &options)
            .map_err(|e| format!("field '{}': {e}", f.name()))?;
        columns.push(narrowed);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}
