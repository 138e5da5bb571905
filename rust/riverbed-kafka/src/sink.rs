//! A Kafka topic as a pipeline sink: each output row becomes a record (a JSON object of all its
//! columns), keyed by the pipeline's key column and stamped with its event time. At-least-once:
//! a checkpoint flushes the producer (every record acknowledged) before the input offsets are
//! committed, so a crash can repeat output but never lose it.

use std::sync::Arc;

use arrow_array::RecordBatch;
use riverbed_log::arrow::{without_negative_zero, JsonOptions, NonFinite};
use riverbed_stream::sink::SinkEnds;
use riverbed_stream::{Result as StreamResult, Sink};

use crate::producer::{KafkaProducer, OutRecord};
use crate::provisional::FLUSH_HEADER;
use crate::read_committed::{Tagger, Txn, COMMIT_HEADER, START_HEADER, TXN_HEADER};

pub struct KafkaSink {
    pub producer: Arc<KafkaProducer>,
    pub topic: String,
    /// The key columns (several: the record key is a JSON object of them).
    pub keys: Vec<String>,
    pub timestamp: Option<String>,
    /// A repartition topic with this many partitions: the writing tasks' watermarks go to every
    /// partition as marker records, so its readers know how far every writer has got.
    pub repartition: Option<usize>,
    /// The rows written now are a task's end-of-input flush: whether its state changed since
    /// its last run's (a repartition topic marks them, see `PROVISIONAL_HEADER`).
    pub provisional: Option<bool>,
    /// A repartition topic: the writing tasks' transactions (`read_committed`).
    pub tagger: Tagger,
}

/// Headers of a watermark marker record: the watermark, and the input partition of the task
/// that wrote it.
pub const WATERMARK_HEADER: &str = "riverbed.watermark";
pub const WRITER_HEADER: &str = "riverbed.writer";
/// "1" when the writing task's input is idle (its watermark is a flush past all it has read).
pub const IDLE_HEADER: &str = "riverbed.idle";
/// On a record of a bounded run's end-of-input flush: "1" when the writing task's state changed
/// since its last run's flush, "0" when it is the same flush again (its readers take such rows
/// in after their own end-of-input checkpoint, see riverbed-stream's `Polled::Provisional`).
pub const PROVISIONAL_HEADER: &str = "riverbed.provisional";

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> StreamResult<()> {
        let ts = self
            .timestamp
            .as_deref()
            .filter(|c| batch.schema().index_of(c).is_ok());
        // A repartition topic carries every value as it was, NaN and infinities too (only
        // riverbed reads it back), and sends equal keys to one partition.
        let (batch, options) = match (self.repartition, self.keys.as_slice()) {
            (Some(_), [key]) => (
                canonical_key(batch, key),
                JsonOptions {
                    non_finite: NonFinite::Text,
                },
            ),
            _ => (batch, JsonOptions::default()),
        };
        let headers = match (self.repartition, self.provisional) {
            (None, _) => Vec::new(),
            (Some(_), Some(changed)) => self.flush_headers(changed),
            // A checkpointing task's rows wait at their readers for its next checkpoint.
            (Some(_), None) => match self.tagger.row() {
                Some((p, txn)) => vec![(TXN_HEADER.to_string(), Some(txn.header(p)))],
                None => Vec::new(),
            },
        };
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        self.producer.send_batch(
            &self.topic,
            &batch,
            &keys,
            None,
            ts,
            &options,
            &headers,
            self.repartition.is_none(),
        )?;
        Ok(())
    }

    fn relays_provisional(&self) -> bool {
        self.repartition.is_some()
    }

    fn provisional(&mut self, flush: Option<bool>) -> StreamResult<()> {
        self.provisional = flush;
        // Every partition hears that the task flushes anew (its readers drop what an earlier
        // incarnation flushed, also where this flush has no rows: `provisional`).
        match flush {
            Some(changed) if self.repartition.is_some() && self.tagger.flush().is_some() => {
                self.to_every_partition(&self.flush_headers(changed))
            }
            _ => Ok(()),
        }
    }

    fn checkpoint(&mut self) -> StreamResult<SinkEnds> {
        self.producer.flush(&self.topic)?;
        Ok((Vec::new(), Vec::new()))
    }

    fn watermark(&mut self, partition: usize, wm: i64, idle: bool) -> StreamResult<()> {
        if self.repartition.is_none() {
            return Ok(());
        }
        let mut headers = vec![
            (
                WATERMARK_HEADER.to_string(),
                Some(wm.to_string().into_bytes()),
            ),
            (
                WRITER_HEADER.to_string(),
                Some(partition.to_string().into_bytes()),
            ),
            (
                IDLE_HEADER.to_string(),
                Some(vec![if idle { b'1' } else { b'0' }]),
            ),
        ];
        if let Some(txn) = self.tagger.marker(partition) {
            headers.push((TXN_HEADER.to_string(), Some(txn.header(partition))));
        }
        self.to_every_partition(&headers)
    }

    fn task(&mut self, task: Option<usize>) {
        self.tagger.task(task);
    }

    fn commit(&mut self, task: usize, seq: u64, start: bool) -> StreamResult<()> {
        if self.repartition.is_none() {
            return Ok(());
        }
        let txn: Txn = self.tagger.commit(task, seq, start);
        let mut headers = vec![(COMMIT_HEADER.to_string(), Some(txn.header(task)))];
        if start {
            headers.push((START_HEADER.to_string(), Some(b"1".to_vec())));
        }
        self.to_every_partition(&headers)
    }

    fn close(&mut self) -> StreamResult<()> {
        Ok(self.producer.flush(&self.topic)?)
    }
}

impl KafkaSink {
    /// The headers of a row (or marker) of the current task's end-of-input flush: whether its
    /// state changed since its last run's, and (a checkpointing task) its incarnation, by which
    /// its readers keep its newest flush only (`provisional`).
    fn flush_headers(&self, changed: bool) -> Vec<(String, Option<Vec<u8>>)> {
        let mut h = vec![(
            PROVISIONAL_HEADER.to_string(),
            Some(vec![if changed { b'1' } else { b'0' }]),
        )];
        if let Some((p, txn)) = self.tagger.flush() {
            h.push((FLUSH_HEADER.to_string(), Some(txn.header(p))));
        }
        h
    }

    /// A marker record (no key, no value) with `headers` to every partition of a repartition
    /// topic.
    fn to_every_partition(&self, headers: &[(String, Option<Vec<u8>>)]) -> StreamResult<()> {
        for q in 0..self.repartition.unwrap_or(0) {
            self.producer.send(
                &self.topic,
                &OutRecord {
                    key: None,
                    value: None,
                    timestamp: None,
                    partition: Some(q as i32),
                    headers,
                },
            )?;
        }
        Ok(())
    }
}

/// `batch` with -0.0 in its float key column made 0.0 (`without_negative_zero`): the readers of
/// a repartition topic see the key as every keyed operator does.
fn canonical_key(batch: RecordBatch, key: &str) -> RecordBatch {
    let Ok(i) = batch.schema().index_of(key) else {
        return batch;
    };
    let mut cols = batch.columns().to_vec();
    cols[i] = without_negative_zero(&cols[i]);
    // Same type and length: this cannot fail.
    RecordBatch::try_new(batch.schema(), cols).unwrap_or(batch)
}
