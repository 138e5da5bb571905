//! A Kafka topic as a pipeline sink: each output row becomes a record (a JSON object of all its
//! columns), keyed by the pipeline's key column and stamped with its event time. At-least-once:
//! a checkpoint flushes the producer (every record acknowledged) before the input offsets are
//! committed, so a crash can repeat output but never lose it.

use std::sync::Arc;

use arrow_array::RecordBatch;
use riverbed_stream::sink::SinkEnds;
use riverbed_stream::{Result as StreamResult, Sink};

use crate::producer::KafkaProducer;

pub struct KafkaSink {
    pub producer: Arc<KafkaProducer>,
    pub topic: String,
    pub key: Option<String>,
    pub timestamp: Option<String>,
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> StreamResult<()> {
        let ts = self
            .timestamp
            .as_deref()
            .filter(|c| batch.schema().index_of(c).is_ok());
        self.producer
            .send_batch(&self.topic, &batch, self.key.as_deref(), None, ts)?;
        Ok(())
    }

    fn checkpoint(&mut self) -> StreamResult<SinkEnds> {
        self.producer.flush(&self.topic)?;
        Ok((Vec::new(), Vec::new()))
    }
}
