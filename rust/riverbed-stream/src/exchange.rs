//! Exchange: how the records reaching one input of an operator are split between the workers
//! of a parallel run. A keyed operator (a window, group-by, series, stateful map or join with
//! `by` columns) holds state per key, so every record of a key must reach the same worker: the
//! input is routed by a hash of the key columns. An operator without keys holds one global state
//! and runs on worker 0. Row-preserving operators (filters, projections, unions, Python
//! functions) run where their input already is.
//!
//! The hash depends only on the key's value (and type), never on the worker, the run or the
//! machine, so every worker sends a key to the same place.

use std::hash::{BuildHasher, Hasher};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;

use crate::error::{ArrowContext, Result, StreamError};

/// Where the records reaching one input of an operator go in a parallel run.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Stay on the worker that produced them.
    Local,
    /// To the worker a hash of these key columns picks; no columns: all to worker 0. Each
    /// column may be cast first (a join's right keys take the left keys' type, so equal keys
    /// meet on one worker).
    Hash(Vec<(String, Option<DataType>)>),
}

/// Splits batches between `n` workers by a route's key.
pub struct Splitter {
    keys: Vec<(String, Option<DataType>)>,
    conv: Option<RowConverter>,
    hasher: foldhash::fast::FixedState,
}

/// A fixed seed: the same key hashes the same in every worker and every run.
const SEED: u64 = 0x7269_7665_7262_6564; // "riverbed"

impl Splitter {
    pub fn new(keys: Vec<(String, Option<DataType>)>) -> Splitter {
        Splitter {
            keys,
            conv: None,
            hasher: foldhash::fast::FixedState::with_seed(SEED),
        }
    }

    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.keys
            .iter()
            .map(|(c, cast)| {
                let a = batch.column_by_name(c).ok_or_else(|| {
                    StreamError::Schema(format!("key column '{c}' is missing from a batch"))
                })?;
                let a = match cast {
                    Some(t) if a.data_type() != t => {
                        arrow_cast::cast(a, t).ctx(&format!("casting key column '{c}'"))?
                    }
                    _ => a.clone(),
                };
                // Keys equal as the operator keys them meet on one worker (-0.0 and 0.0).
                Ok(crate::keys::canonical(&a))
            })
            .collect()
    }

    /// The worker (of `n`) of every row.
    pub fn workers(&mut self, batch: &RecordBatch, n: usize) -> Result<Vec<u32>> {
        let rows = batch.num_rows();
        if self.keys.is_empty() || n == 1 {
            return Ok(vec![0; rows]);
        }
        let cols = self.key_columns(batch)?;
        let pick = |h: u64| ((h as u128 * n as u128) >> 64) as u32;
        // One string column: hash its bytes (the common case, without row encoding).
        if let [c] = cols.as_slice() {
            let strings: Option<Vec<Option<&[u8]>>> = match c.data_type() {
                DataType::Utf8 => Some(
                    c.as_string::<i32>()
                        .iter()
                        .map(|s| s.map(str::as_bytes))
                        .collect(),
                ),
                DataType::LargeUtf8 => Some(
                    c.as_string::<i64>()
                        .iter()
                        .map(|s| s.map(str::as_bytes))
                        .collect(),
                ),
                DataType::Utf8View => Some(
                    c.as_string_view()
                        .iter()
                        .map(|s| s.map(str::as_bytes))
                        .collect(),
                ),
                _ => None,
            };
            if let Some(strings) = strings {
                return Ok(strings
                    .into_iter()
                    .map(|s| match s {
                        Some(b) => {
                            let mut h = self.hasher.build_hasher();
                            h.write(b);
                            pick(h.finish())
                        }
                        None => 0,
                    })
                    .collect());
            }
        }
        if self.conv.is_none() {
            let fields = cols
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect();
            self.conv = Some(RowConverter::new(fields).ctx("exchange keys")?);
        }
        let conv = self.conv.as_ref().expect("set above");
        let encoded = conv.convert_columns(&cols).ctx("exchange keys")?;
        Ok(encoded
            .iter()
            .map(|r| {
                let mut h = self.hasher.build_hasher();
                h.write(r.data());
                pick(h.finish())
            })
            .collect())
    }

    /// `batch` split by worker: (worker, its rows, in their order), workers without rows left out.
    pub fn split(&mut self, batch: RecordBatch, n: usize) -> Result<Vec<(usize, RecordBatch)>> {
        let w = self.workers(&batch, n)?;
        if let Some(&first) = w.first() {
            if w.iter().all(|&x| x == first) {
                return Ok(vec![(first as usize, batch)]);
            }
        } else {
            return Ok(Vec::new());
        }
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, &x) in w.iter().enumerate() {
            rows[x as usize].push(i as u32);
        }
        rows.into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(k, r)| {
                let idx = UInt32Array::from(r);
                let b = arrow_select::take::take_record_batch(&batch, &idx).ctx("exchange")?;
                Ok((k, b))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(keys: Vec<Option<&str>>) -> RecordBatch {
        let n = keys.len() as i64;
        RecordBatch::try_from_iter([
            ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_key_goes_to_one_worker_and_rows_keep_their_order() {
        let keys: Vec<String> = (0..200).map(|i| format!("k{}", i % 17)).collect();
        let b = batch(keys.iter().map(|s| Some(s.as_str())).collect());
        let mut s = Splitter::new(vec![("k".into(), None)]);
        let parts = s.split(b.clone(), 4).unwrap();
        assert!(parts.len() > 1, "17 keys spread over several workers");
        let mut seen = std::collections::HashMap::new();
        let mut total = 0;
        for (w, p) in &parts {
            let k = p.column(0).as_string::<i32>();
            let v = p.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            assert!(v.values().windows(2).all(|x| x[0] < x[1]), "order kept");
            for key in k.iter().flatten() {
                assert_eq!(*seen.entry(key.to_string()).or_insert(*w), *w);
            }
            total += p.num_rows();
        }
        assert_eq!(total, 200);
        // Another splitter (another worker) sends each key to the same place.
        let mut s2 = Splitter::new(vec![("k".into(), None)]);
        let again = s2.workers(&b, 4).unwrap();
        let k = b.column(0).as_string::<i32>();
        for (i, w) in again.iter().enumerate() {
            assert_eq!(seen[k.value(i)], *w as usize);
        }
    }

    #[test]
    fn a_cast_key_meets_the_uncast_one() {
        let a = RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
        )])
        .unwrap();
        let b = RecordBatch::try_from_iter([(
            "k",
            Arc::new(arrow_array::Int32Array::from_iter_values(0..100)) as ArrayRef,
        )])
        .unwrap();
        let wa = Splitter::new(vec![("k".into(), None)])
            .workers(&a, 3)
            .unwrap();
        let wb = Splitter::new(vec![("k".into(), Some(DataType::Int64))])
            .workers(&b, 3)
            .unwrap();
        assert_eq!(wa, wb);
        assert!(wa.iter().any(|&w| w != wa[0]));
    }

    #[test]
    fn no_key_sends_everything_to_worker_zero() {
        let b = batch(vec![Some("a"), None, Some("b")]);
        let parts = Splitter::new(vec![]).split(b, 4).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, 0);
    }
}
