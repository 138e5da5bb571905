//! Writing to Kafka: single records and Arrow batches. The producer is idempotent (no
//! duplicates from its own retries) and places keyed records with Kafka's murmur2 partitioner
//! (`murmur2_random`), as Java clients and riverbed's embedded log do; delivery failures are
//! collected and raised by the next `flush`.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parking_lot::Mutex;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;
use riverbed_log::arrow::{EncodedRows, JsonOptions};

use crate::client::{ErrorLog, KafkaConfig};
use crate::error::{KafkaError, Result};

/// Collects failed deliveries for the next flush to raise.
#[derive(Default)]
pub struct Deliveries {
    log: ErrorLog,
    failed: Mutex<Vec<String>>,
    delivered: std::sync::atomic::AtomicU64,
}

impl ClientContext for Deliveries {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message)
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err((e, m)) => {
                use rdkafka::Message;
                let mut f = self.failed.lock();
                if f.len() < 16 {
                    f.push(format!("{}/{}: {e}", m.topic(), m.partition()));
                }
            }
        }
    }
}

pub struct KafkaProducer {
    config: KafkaConfig,
    inner: ThreadedProducer<Deliveries>,
    /// Topics known to exist, with their partition counts (asked before the first record).
    known: Mutex<std::collections::HashMap<String, usize>>,
}

/// One record to write.
pub struct OutRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
    pub partition: Option<i32>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

impl KafkaProducer {
    pub fn new(config: &KafkaConfig) -> Result<KafkaProducer> {
        let inner = config
            .client(&[
                ("enable.idempotence", "true"),
                ("partitioner", "murmur2_random"),
                ("linger.ms", "5"),
                ("batch.num.messages", "100000"),
                ("queue.buffering.max.messages", "1000000"),
                // Writing to a missing topic is an error, not a way to create it.
                ("allow.auto.create.topics", "false"),
            ])
            .create_with_context(Deliveries::default())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(KafkaProducer {
            config: config.clone(),
            inner,
            known: Mutex::new(Default::default()),
        })
    }

    /// The partition count of `topic`; `UnknownTopic` unless it exists (asked once per topic).
    fn check_topic(&self, topic: &str) -> Result<usize> {
        if let Some(&n) = self.known.lock().get(topic) {
            return Ok(n);
        }
        let md = self
            .inner
            .client()
            .fetch_metadata(Some(topic), self.config.timeout)
            .map_err(|e| {
                self.config.error(
                    &e,
                    &self.inner.context().log,
                    &format!("reading metadata of topic '{topic}'"),
                )
            })?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(KafkaError::UnknownTopic {
                topic: topic.into(),
                bootstrap: self.config.bootstrap.clone(),
            });
        }
        self.known.lock().insert(topic.to_string(), partitions);
        Ok(partitions)
    }

    /// Queue one record (sent in the background; `flush` waits for delivery).
    pub fn send(&self, topic: &str, r: &OutRecord<'_>) -> Result<()> {
        let n = self.check_topic(topic)?;
        self.send_checked(topic, n, r)
    }

    /// Send to a topic of `partitions` partitions. A keyed record's partition is chosen here,
    /// as Kafka's partitioner does (murmur2): left to librdkafka, a record sent before the
    /// client has the topic's metadata waits in an unassigned queue and can end up behind
    /// records sent after it to an explicit partition (the watermark markers of a repartition
    /// topic).
    fn send_checked(&self, topic: &str, partitions: usize, r: &OutRecord<'_>) -> Result<()> {
        let mut rec: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic);
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(v) = r.value {
            rec = rec.payload(v);
        }
        if let Some(t) = r.timestamp {
            rec = rec.timestamp(t);
        }
        match (r.partition, r.key) {
            (Some(p), _) => rec = rec.partition(p),
            (None, Some(k)) => {
                rec = rec
                    .partition(
                        riverbed_log::partitioner::partition_for_key(k, partitions as u32) as i32,
                    )
            }
            (None, None) => {}
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers {
                h = h.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            rec = rec.headers(h);
        }
        let deadline = Instant::now() + self.config.timeout;
        loop {
            match self.inner.send(rec) {
                Ok(()) => return Ok(()),
                Err((e, back)) => {
                    use rdkafka::types::RDKafkaErrorCode as C;
                    if e.rdkafka_error_code() == Some(C::QueueFull) && Instant::now() < deadline {
                        // The local queue is full: let the background thread send some.
                        self.inner.poll(Duration::from_millis(5));
                        rec = back;
                        continue;
                    }
                    return Err(KafkaError::Produce {
                        topic: topic.into(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Queue every row of `batch` (`keys`/`value`/`timestamp` name columns, several keys a JSON
    /// object key; without a value
    /// column each row is written as a JSON object of all its columns; `options` say what to
    /// do with what JSON cannot hold, as for the log), each with `headers`. `checked`: refuse
    /// event times a Kafka record timestamp cannot hold (`check_kafka_timestamps`; an internal
    /// topic's readers take event time from the value). Returns the count.
    #[allow(clippy::too_many_arguments)]
    pub fn send_batch(
        &self,
        topic: &str,
        batch: &RecordBatch,
        keys: &[&str],
        value: Option<&str>,
        timestamp: Option<&str>,
        options: &JsonOptions,
        headers: &[(String, Option<Vec<u8>>)],
        checked: bool,
    ) -> Result<usize> {
        let rows = EncodedRows::with_keys(batch, keys, value, timestamp, options).map_err(|e| {
            KafkaError::Produce {
                topic: topic.into(),
                message: e.to_string(),
            }
        })?;
        let partitions = self.check_topic(topic)?;
        if let Some(col) = timestamp.filter(|_| checked) {
            check_kafka_timestamps(&rows, topic, col)?;
        }
        for i in 0..rows.len() {
            self.send_checked(
                topic,
                partitions,
                &OutRecord {
                    key: rows.key(i),
                    value: rows.value(i),
                    timestamp: Some(rows.timestamp(i)),
                    partition: None,
                    headers,
                },
            )?;
        }
        Ok(rows.len())
    }

    /// Wait until every queued record is delivered; fails with the failed deliveries, or when
    /// the brokers do not acknowledge within the timeout.
    pub fn flush(&self, topic_hint: &str) -> Result<()> {
        let r = self.inner.flush(self.config.timeout);
        let failed = std::mem::take(&mut *self.inner.context().failed.lock());
        if !failed.is_empty() {
            return Err(KafkaError::Produce {
                topic: topic_hint.into(),
                message: format!(
                    "{} record(s) not delivered: {}",
                    failed.len(),
                    failed.join("; ")
                ),
            });
        }
        r.map_err(
            |e| match self.config.error(&e, &self.inner.context().log, "flushing") {
                KafkaError::Other(m) => KafkaError::Produce {
                    topic: topic_hint.into(),
                    message: m,
                },
                other => other,
            },
        )
    }

    /// Records acknowledged by the brokers so far.
    pub fn delivered(&self) -> u64 {
        self.inner
            .context()
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A Kafka topic as a dead-letter topic (written at once, flushed before the error policy
/// reports the record handled).
pub struct KafkaDeadLetter {
    pub producer: std::sync::Arc<KafkaProducer>,
    pub topic: String,
}

impl riverbed_stream::errors::DeadLetterTopic for KafkaDeadLetter {
    fn name(&self) -> String {
        self.topic.clone()
    }
    fn write(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> riverbed_stream::Result<()> {
        let headers: Vec<(String, Option<Vec<u8>>)> = headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    v.map(<[u8]>::to_vec),
                )
            })
            .collect();
        self.producer.send(
            &self.topic,
            &OutRecord {
                key,
                value,
                timestamp: Some(timestamp),
                partition: None,
                headers: &headers,
            },
        )?;
        self.producer.flush(&self.topic)?;
        Ok(())
    }
}

/// Refuse a record timestamp Kafka cannot carry as given: 0 (librdkafka sends the current time
/// for it) and -1 (every Kafka client reads it as "none"), and one outside the years 1 to 9999
/// riverbed takes. `what` names the row or record.
pub fn check_record_timestamp(topic: &str, t: i64, what: &str) -> Result<()> {
    use riverbed_log::arrow::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};
    let why = match t {
        0 | -1 => "cannot be a Kafka record timestamp (librdkafka sends the current time for 0; -1 means none)",
        t if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&t) => {
            "is outside the years 1 to 9999 riverbed takes"
        }
        _ => return Ok(()),
    };
    Err(KafkaError::Produce {
        topic: topic.into(),
        message: format!("{what}: event time {t} ms {why}"),
    })
}

/// Every row's record timestamp (`check_record_timestamp`), before any is sent.
fn check_kafka_timestamps(rows: &EncodedRows, topic: &str, col: &str) -> Result<()> {
    (0..rows.len())
        .try_for_each(|i| {
            check_record_timestamp(
                topic,
                rows.timestamp(i),
                &format!("row {i} (column '{col}')"),
            )
        })
        .map_err(|e| match e {
            KafkaError::Produce { topic, message } => KafkaError::Produce {
                topic,
                message: format!("{message}; the column itself is in the record's value"),
            },
            e => e,
        })
}
