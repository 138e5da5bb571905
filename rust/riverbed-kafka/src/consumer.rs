//! Reading from Kafka: a consumer of one topic, either assigned every partition (no group) or a
//! member of a consumer group, and polling it into Arrow batches with the embedded log's
//! columns (`topic, partition, offset, timestamp, key, value, headers`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use riverbed_log::arrow::ArrowRecordSink;

use crate::client::{partitions, ErrorLog, KafkaConfig};
use crate::error::{KafkaError, Result};

/// Where a consumer without committed offsets starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

/// Partitions assigned and revoked by the group since they were last taken.
#[derive(Default, Clone)]
pub struct GroupEvents {
    pub log: ErrorLog,
    changes: Arc<Mutex<(Vec<usize>, Vec<usize>)>>,
}

impl GroupEvents {
    /// (assigned, revoked) since the last call.
    pub fn take(&self) -> (Vec<usize>, Vec<usize>) {
        std::mem::take(&mut *self.changes.lock())
    }
}

impl ClientContext for GroupEvents {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message)
    }
}

impl ConsumerContext for GroupEvents {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut ch = self.changes.lock();
            for e in tpl.elements() {
                let p = e.partition() as usize;
                ch.0.retain(|&a| a != p);
                ch.1.push(p);
            }
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut ch = self.changes.lock();
            for e in tpl.elements() {
                ch.0.push(e.partition() as usize);
            }
        }
    }
}

/// A consumer of one topic.
pub struct TopicConsumer {
    pub config: KafkaConfig,
    pub topic: String,
    pub partitions: usize,
    pub group: Option<String>,
    pub inner: BaseConsumer<GroupEvents>,
    pub events: GroupEvents,
}

impl TopicConsumer {
    /// Open a consumer of `topic`: with a `group`, it joins the group (offsets are committed
    /// by `commit`, or automatically when `auto_commit`); without one it is assigned every
    /// partition, at `positions` (per partition; negative: use `start`) or at `start`.
    pub fn open(
        config: &KafkaConfig,
        topic: &str,
        group: Option<&str>,
        start: Start,
        positions: Option<&[i64]>,
        auto_commit: bool,
    ) -> Result<TopicConsumer> {
        let events = GroupEvents::default();
        let reset = match start {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
        };
        let mut defaults = vec![
            ("auto.offset.reset", reset),
            (
                "enable.auto.commit",
                if auto_commit { "true" } else { "false" },
            ),
            ("enable.auto.offset.store", "true"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
            ("fetch.wait.max.ms", "50"),
            ("queued.min.messages", "200000"),
            // Fetch again soon after the local queue drains (librdkafka waits 1 s by default).
            ("fetch.queue.backoff.ms", "10"),
            ("allow.auto.create.topics", "false"),
        ];
        if let Some(g) = group {
            defaults.push(("group.id", g));
        } else {
            defaults.push(("group.id", "riverbed-unused"));
        }
        let inner: BaseConsumer<GroupEvents> = config
            .client(&defaults)
            .create_with_context(events.clone())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let n = partitions(&inner, &events.log, config, topic)?;
        match group {
            Some(_) => inner
                .subscribe(&[topic])
                .map_err(|e| config.error(&e, &events.log, &format!("subscribing to '{topic}'")))?,
            None => {
                let mut tpl = TopicPartitionList::new();
                for p in 0..n {
                    let at = match positions.and_then(|s| s.get(p)).filter(|&&o| o >= 0) {
                        Some(&o) => Offset::Offset(o),
                        None if start == Start::Latest => Offset::End,
                        None => Offset::Beginning,
                    };
                    tpl.add_partition_offset(topic, p as i32, at)
                        .map_err(|e| KafkaError::Other(e.to_string()))?;
                }
                inner
                    .assign(&tpl)
                    .map_err(|e| config.error(&e, &events.log, &format!("assigning '{topic}'")))?;
            }
        }
        Ok(TopicConsumer {
            config: config.clone(),
            topic: topic.to_string(),
            partitions: n,
            group: group.map(str::to_string),
            inner,
            events,
        })
    }

    /// The next message within `timeout`, if any; a broker error fails.
    pub fn next(&self, timeout: Duration) -> Result<Option<BorrowedMessage<'_>>> {
        match self.inner.poll(timeout) {
            None => Ok(None),
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => Err(self.config.error(
                &e,
                &self.events.log,
                &format!("reading topic '{}'", self.topic),
            )),
        }
    }

    /// Up to `max_records` records, waiting up to `timeout` for the first one.
    pub fn poll_arrow(&self, max_records: usize, timeout: Duration) -> Result<RecordBatch> {
        let mut sink =
            ArrowRecordSink::new(Arc::from(self.topic.as_str()), max_records.min(65_536));
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while n < max_records {
            let wait = if n == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(m) = self.next(wait)? else {
                if n > 0 || Instant::now() >= deadline {
                    break;
                }
                continue;
            };
            push_message(&mut sink, &m);
            n += 1;
        }
        sink.finish()
            .map_err(|e| KafkaError::Other(format!("building the batch: {e}")))
    }

    /// Commit `offsets` (partition, next offset to read) for the group, synchronously.
    pub fn commit(&self, offsets: &[(usize, i64)]) -> Result<()> {
        if offsets.is_empty() || self.group.is_none() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in offsets {
            tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(o))
                .map_err(|e| KafkaError::Other(e.to_string()))?;
        }
        self.inner.commit(&tpl, CommitMode::Sync).map_err(|e| {
            self.config
                .error(&e, &self.events.log, "committing offsets")
        })
    }

    /// Commit the position of every assigned partition (what was polled so far).
    pub fn commit_consumed(&self) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing consumed since the last commit.
            Err(e)
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) =>
            {
                Ok(())
            }
            Err(e) => Err(self
                .config
                .error(&e, &self.events.log, "committing offsets")),
        }
    }

    /// The end (next) offset of partition `p` as librdkafka last heard it from the broker (each
    /// fetch response carries it), without a request; `None` when it has not heard yet.
    pub fn cached_end(&self, p: usize) -> Option<i64> {
        let topic = std::ffi::CString::new(self.topic.as_str()).ok()?;
        let (mut lo, mut hi) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while `self.inner` lives; librdkafka only reads
        // the topic name and writes the two offsets.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.inner.client().native_ptr(),
                topic.as_ptr(),
                p as i32,
                &mut lo,
                &mut hi,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
            .then_some(hi)
    }

    /// (earliest, next) offsets of partition `p`.
    pub fn watermarks(&self, p: usize) -> Result<(i64, i64)> {
        self.inner
            .fetch_watermarks(&self.topic, p as i32, self.config.timeout)
            .map_err(|e| {
                self.config.error(
                    &e,
                    &self.events.log,
                    &format!("reading offsets of {}/{p}", self.topic),
                )
            })
    }

    /// The group's committed offset of partition `p`, if any.
    pub fn committed(&self, p: usize) -> Result<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p as i32);
        let c = self
            .inner
            .committed_offsets(tpl, self.config.timeout)
            .map_err(|e| {
                self.config
                    .error(&e, &self.events.log, "reading committed offsets")
            })?;
        Ok(c.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }))
    }

    /// Continue partition `p` at `offset`.
    pub fn seek(&self, p: usize, offset: i64) -> Result<()> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            match self.inner.seek(
                &self.topic,
                p as i32,
                Offset::Offset(offset),
                self.config.timeout,
            ) {
                Ok(()) => return Ok(()),
                // A partition whose fetcher is not started yet refuses a seek for a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => {
                    return Err(self.config.error(
                        &e,
                        &self.events.log,
                        &format!("seeking {}/{p} to offset {offset}", self.topic),
                    ))
                }
            }
        }
    }
}

/// Append a message to an Arrow batch being built.
pub fn push_message(sink: &mut ArrowRecordSink, m: &BorrowedMessage<'_>) {
    let ts = m
        .timestamp()
        .to_millis()
        .unwrap_or_else(riverbed_log::fsutil::now_ms);
    let headers: Vec<(&[u8], Option<&[u8]>)> = m
        .headers()
        .map(|h| h.iter().map(|h| (h.key.as_bytes(), h.value)).collect())
        .unwrap_or_default();
    sink.push_parts(
        m.partition() as u32,
        m.offset(),
        ts,
        m.key(),
        m.payload(),
        headers.into_iter(),
    );
}

impl TopicConsumer {
    /// The partitions currently assigned to this consumer.
    pub fn assignment(&self) -> Vec<usize> {
        self.inner
            .assignment()
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| e.partition() as usize)
                    .collect()
            })
            .unwrap_or_default()
    }
}
