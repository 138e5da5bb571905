//! The unwindowed running aggregate (`GroupBy`): per key, the aggregates over every record so
//! far, emitted for the keys each batch changed.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};

use crate::aggregate::{AccStore, AggSet};
use crate::error::{ArrowContext, Result};
use crate::keys::KeyInterner;
use crate::operator::{OpMetrics, Operator};
use crate::state::{StateReader, StateWriter};

/// Unwindowed aggregation per key: after each batch, the new values of the keys it changed.
pub struct GroupBy {
    keys: KeyInterner,
    aggs: AggSet,
    store: AccStore,
    sids: Vec<u32>,
    schema: SchemaRef,
    m: OpMetrics,
}

impl GroupBy {
    pub fn new(
        input: &SchemaRef,
        by: &[String],
        aggs: &[(String, crate::Expr)],
        op: &str,
    ) -> Result<GroupBy> {
        let keys = KeyInterner::new(input, by, op)?;
        let aggs = AggSet::compile(aggs, input, op)?;
        let store = aggs.new_store()?;
        let mut fields: Vec<Field> = keys.fields().to_vec();
        fields.extend(aggs.output_fields().iter().cloned());
        Ok(GroupBy {
            keys,
            aggs,
            store,
            sids: Vec::new(),
            schema: Arc::new(Schema::new(fields)),
            m: OpMetrics::default(),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Operator for GroupBy {
    fn on_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let n = batch.num_rows();
        self.m.records_in += n as u64;
        let kids = self.keys.ids(&batch)?;
        let inputs = self.aggs.inputs(&batch)?;
        let mut sids = Vec::with_capacity(n);
        for &k in &kids {
            while self.sids.len() <= k as usize {
                self.sids.push(self.store.alloc());
            }
            sids.push(self.sids[k as usize]);
        }
        let rows: Vec<u32> = (0..n as u32).collect();
        // Event time is not needed without windows; first/last follow arrival order.
        let ts: Vec<i64> = (0..n as i64)
            .map(|i| self.m.records_in as i64 - n as i64 + i)
            .collect();
        self.store.update(&rows, &sids, &inputs, &ts)?;
        let mut changed: Vec<u32> = kids.clone();
        changed.sort_unstable();
        changed.dedup();
        changed.sort_by(|a, b| self.keys.bytes(*a).cmp(self.keys.bytes(*b)));
        let state: Vec<u32> = changed.iter().map(|&k| self.sids[k as usize]).collect();
        let mut cols = self.keys.columns(&changed)?;
        cols.extend(self.aggs.finish(&self.store, &state)?);
        let b = RecordBatch::try_new(self.schema.clone(), cols).ctx("group_by output")?;
        self.m.records_out += b.num_rows() as u64;
        if b.num_rows() > 0 {
            out.push(b);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::with_capacity(
            self.keys.state_bytes() + self.store.state_bytes() + 8 + self.sids.len() * 4,
        );
        self.keys.snapshot(&mut w);
        self.store.snapshot(&mut w);
        w.u32s(&self.sids);
        Ok(w.buf)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader::new(state, "a group_by");
        self.keys.restore(&mut r)?;
        self.store.restore(&mut r)?;
        self.sids = r.u32s()?;
        r.done()
    }

    fn metrics(&self) -> OpMetrics {
        let mut m = self.m.clone();
        m.state_entries = self.sids.len() as u64;
        m
    }
}
