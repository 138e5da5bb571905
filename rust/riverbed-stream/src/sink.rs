//! Sinks: collect to memory, write to a log topic (rows as JSON objects), or a callback (the
//! binding's Python function). Log sinks are written batch by batch; see the checkpoints issue
//! for exactly-once.

use std::sync::Arc;

use arrow_array::RecordBatch;
use riverbed_log::Topic;

use crate::error::Result;

pub trait Sink: Send {
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
}

#[derive(Default)]
pub struct CollectSink {
    pub batches: Vec<RecordBatch>,
}

impl Sink for CollectSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.batches.push(batch);
        Ok(())
    }
}

/// Writes each row as a JSON object of all its columns; `key` names the key column and
/// `timestamp` the column used as the record timestamp (now when absent).
pub struct TopicSink {
    pub topic: Arc<Topic>,
    pub key: Option<String>,
    pub timestamp: Option<String>,
}

impl Sink for TopicSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let ts = self
            .timestamp
            .as_deref()
            .filter(|c| batch.schema().index_of(c).is_ok());
        riverbed_log::arrow::produce_arrow(&self.topic, &[batch], self.key.as_deref(), None, ts)?;
        Ok(())
    }
}

pub struct FnSink<F: FnMut(RecordBatch) -> Result<()> + Send>(pub F);

impl<F: FnMut(RecordBatch) -> Result<()> + Send> Sink for FnSink<F> {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        (self.0)(batch)
    }
}
