//! Sinks: collect to memory, write to a log topic (rows as JSON objects), or a callback (the
//! binding's Python function). Log sinks are written batch by batch; see the checkpoints issue
//! for exactly-once.

use std::sync::Arc;

use arrow_array::RecordBatch;
use riverbed_log::Topic;

use crate::error::Result;

/// Where a sink's output ends for a checkpoint: topic name and end offset per partition, and
/// the topics to make durable before the checkpoint is written.
pub type SinkEnds = (Vec<(String, Vec<i64>)>, Vec<Arc<Topic>>);

pub trait Sink: Send {
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// For a checkpoint: where what was written ends (log sinks: the topic and its end offset
    /// per partition), and the topics to make durable before the checkpoint is. Other sinks are
    /// at-least-once: nothing.
    fn checkpoint(&mut self) -> Result<SinkEnds> {
        Ok((Vec::new(), Vec::new()))
    }
    /// On restart from a checkpoint: drop what was written after it (log sinks truncate back
    /// to the checkpointed end offsets, which makes a log-to-log pipeline exactly-once).
    /// The log topics this sink writes (whose ends a checkpoint keeps).
    fn topic_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn rollback(&mut self, _ends: &[(String, Vec<i64>)]) -> Result<()> {
        Ok(())
    }
    /// The output watermark of the task reading input partition `partition` (group runs), and
    /// whether its input is idle: a repartition sink passes them on to its topic's readers.
    fn watermark(&mut self, _partition: usize, _wm: i64, _idle: bool) -> Result<()> {
        Ok(())
    }
    /// Whether this sink is a repartition topic that tells its readers which rows are a
    /// bounded run's provisional end-of-input flush (`provisional`).
    fn relays_provisional(&self) -> bool {
        false
    }
    /// The rows written next are a task's end-of-input flush (`Some(changed)`: whether its
    /// state changed since its last run's flush), or ordinary output again (`None`). A
    /// repartition sink tells every partition that the task's earlier flushes are replaced.
    fn provisional(&mut self, _flush: Option<bool>) -> Result<()> {
        Ok(())
    }
    /// Group runs that checkpoint: the rows and watermarks written next are task `task`'s
    /// (`None`: no such task's). A repartition sink tags them so that its readers take them in
    /// only once the task's next checkpoint commits them (`commit`).
    fn task(&mut self, _task: Option<usize>) {}
    /// Task `task`'s checkpoint `seq` is written: a repartition sink tells its readers that
    /// what the task wrote before it is committed. `start`: the task was just made from that
    /// checkpoint (`seq` 0: from none), so what an earlier run of it wrote after the checkpoint
    /// (a crashed run's tail, which this run writes again) is void.
    fn commit(&mut self, _task: usize, _seq: u64, _start: bool) -> Result<()> {
        Ok(())
    }
    /// At the end of a run: make what was written visible (an external sink waits until every
    /// record is acknowledged).
    fn close(&mut self) -> Result<()> {
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

/// Writes each row as a JSON object of all its columns; `keys` name the key columns (several:
/// the record key is a JSON object of them) and `timestamp` the column used as the record
/// timestamp (now when absent).
pub struct TopicSink {
    pub topic: Arc<Topic>,
    pub keys: Vec<String>,
    pub timestamp: Option<String>,
}

impl Sink for TopicSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let ts = self
            .timestamp
            .as_deref()
            .filter(|c| batch.schema().index_of(c).is_ok());
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        riverbed_log::arrow::produce_arrow_keys(
            &self.topic,
            &[batch],
            &keys,
            None,
            ts,
            &riverbed_log::arrow::JsonOptions::default(),
        )?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<SinkEnds> {
        let ends = self
            .topic
            .partitions()
            .iter()
            .map(|p| p.offsets().1)
            .collect();
        Ok((
            vec![(self.topic.name.to_string(), ends)],
            vec![self.topic.clone()],
        ))
    }

    fn topic_names(&self) -> Vec<String> {
        vec![self.topic.name.to_string()]
    }

    fn rollback(&mut self, ends: &[(String, Vec<i64>)]) -> Result<()> {
        for (name, offsets) in ends {
            if **name != *self.topic.name {
                continue;
            }
            let now: Vec<i64> = self
                .topic
                .partitions()
                .iter()
                .map(|p| p.offsets().1)
                .collect();
            crate::resume::check_sink_ends(name, &now, offsets)?;
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
