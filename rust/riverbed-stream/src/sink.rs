//! Sinks: collect to memory, write to a log topic (rows as JSON objects), or a callback (the
//! binding's Python function). Log sinks are written batch by batch; see the checkpoints issue
//! for exactly-once.

use std::sync::Arc;

use arrow_array::RecordBatch;
use riverbed_log::Topic;

use crate::error::Result;

pub trait Sink: Send {
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// For a checkpoint: make what was written durable and say where it ends (log sinks: the
    /// topic and its end offset per partition). Other sinks are at-least-once: nothing.
    fn checkpoint(&mut self) -> Result<Vec<(String, Vec<i64>)>> {
        Ok(Vec::new())
    }
    /// On restart from a checkpoint: drop what was written after it (log sinks truncate back
    /// to the checkpointed end offsets, which makes a log-to-log pipeline exactly-once).
    fn rollback(&mut self, _ends: &[(String, Vec<i64>)]) -> Result<()> {
        Ok(())
    }
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

    fn checkpoint(&mut self) -> Result<Vec<(String, Vec<i64>)>> {
        self.topic.sync()?;
        let ends = self
            .topic
            .partitions()
            .iter()
            .map(|p| p.offsets().1)
            .collect();
        Ok(vec![(self.topic.name.to_string(), ends)])
    }

    fn rollback(&mut self, ends: &[(String, Vec<i64>)]) -> Result<()> {
        for (name, offsets) in ends {
            if **name != *self.topic.name {
                continue;
            }
            let cut: Vec<(u32, i64)> = offsets
                .iter()
                .enumerate()
                .map(|(p, &o)| (p as u32, o))
                .collect();
            self.topic.truncate_to(&cut)?;
        }
        Ok(())
    }
}

pub struct FnSink<F: FnMut(RecordBatch) -> Result<()> + Send>(pub F);

impl<F: FnMut(RecordBatch) -> Result<()> + Send> Sink for FnSink<F> {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        (self.0)(batch)
    }
}
