//! Reading from Kafka: a consumer of one topic, either assigned every partition (no group) or a
//! member of a consumer group, and polling it into Arrow batches with the embedded log's
//! columns (`topic, partition, offset, timestamp, key, value, headers`).
//!
//! A group member may also read several topics of one partition count together
//! ([`TopicConsumer::open_together`]): partition `p` of every topic is assigned to the same
//! member (the range assignor gives each topic's partitions to the members in the same order),
//! as Kafka Streams' co-partitioned tasks need. Its partitions are numbered across the topics:
//! index `t * partitions + p` is partition `p` of topic `t`.

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

/// Partitions assigned and revoked by the group since they were last taken (by index).
#[derive(Default, Clone)]
pub struct GroupEvents {
    pub log: ErrorLog,
    changes: Arc<Mutex<(Vec<usize>, Vec<usize>)>>,
    /// The topics read, and the partition count of each: how an assigned partition is indexed.
    topics: Arc<std::sync::OnceLock<(Vec<String>, usize)>>,
}

impl GroupEvents {
    fn index(&self, e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> usize {
        let p = e.partition() as usize;
        match self.topics.get() {
            Some((topics, n)) => topics.iter().position(|t| t == e.topic()).unwrap_or(0) * n + p,
            None => p,
        }
    }

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
                let p = self.index(&e);
                ch.0.retain(|&a| a != p);
                ch.1.push(p);
            }
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut ch = self.changes.lock();
            for e in tpl.elements() {
                ch.0.push(self.index(&e));
            }
        }
    }
}

/// The consumer settings riverbed sets (the user's own settings override them).
fn settings(start: Start, auto_commit: bool) -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "auto.offset.reset",
            match start {
                Start::Earliest => "earliest",
                Start::Latest => "latest",
            },
        ),
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
    ]
}

/// A consumer of one topic (or of several read together, see the module's doc).
pub struct TopicConsumer {
    pub config: KafkaConfig,
    /// The first topic (the only one, unless read together with others).
    pub topic: String,
    pub topics: Vec<String>,
    /// Partitions per topic.
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
        let mut defaults = settings(start, auto_commit);
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
            topics: vec![topic.to_string()],
            partitions: n,
            group: group.map(str::to_string),
            inner,
            events,
        })
    }

    /// A member of `group` reading `topics` together: partition `p` of each is assigned to the
    /// same member. They must have one partition count, and the group must use the range
    /// assignor (the one that keeps partitions of equal numbers together).
    pub fn open_together(
        config: &KafkaConfig,
        topics: &[String],
        group: &str,
        start: Start,
    ) -> Result<TopicConsumer> {
        if let Some((_, v)) = config
            .options
            .iter()
            .find(|(k, _)| k == "partition.assignment.strategy")
            .filter(|(_, v)| v.trim() != "range")
        {
            return Err(KafkaError::Together(format!(
                "partition.assignment.strategy={v}: topics read together by group '{group}' need the range assignor, which assigns partition p of every topic to the same member"
            )));
        }
        if let Some((_, t)) = topics
            .iter()
            .enumerate()
            .find(|(i, t)| topics[..*i].contains(t))
        {
            return Err(KafkaError::Together(format!(
                "group '{group}' would read topic '{t}' twice in one run: a join or union of a topic with itself is not supported in a group run (run it without group=)"
            )));
        }
        let events = GroupEvents::default();
        let mut defaults = settings(start, false);
        defaults.extend([
            ("partition.assignment.strategy", "range"),
            ("group.id", group),
        ]);
        let inner: BaseConsumer<GroupEvents> = config
            .client(&defaults)
            .create_with_context(events.clone())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let mut counts = Vec::new();
        for t in topics {
            counts.push(partitions(&inner, &events.log, config, t)?);
        }
        let n = counts[0];
        if let Some(i) = counts.iter().position(|&c| c != n) {
            return Err(KafkaError::Together(format!(
                "group '{group}' reads topics '{}' ({n} partitions) and '{}' ({} partitions) together, which needs one partition count: partition p of each holds the same keys (co-partitioned); repartition one of them into a topic of {n} partitions first",
                topics[0], topics[i], counts[i]
            )));
        }
        let _ = events.topics.set((topics.to_vec(), n));
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        inner
            .subscribe(&names)
            .map_err(|e| config.error(&e, &events.log, &format!("subscribing to {names:?}")))?;
        Ok(TopicConsumer {
            config: config.clone(),
            topic: topics[0].clone(),
            topics: topics.to_vec(),
            partitions: n,
            group: Some(group.to_string()),
            inner,
            events,
        })
    }

    /// The (topic, partition) of partition index `i`.
    pub fn at(&self, i: usize) -> (&str, i32) {
        (
            &self.topics[i / self.partitions.max(1)],
            (i % self.partitions.max(1)) as i32,
        )
    }

    /// The partition index of a message.
    pub fn index_of(&self, m: &BorrowedMessage<'_>) -> usize {
        let t = if self.topics.len() == 1 {
            0
        } else {
            self.topics.iter().position(|t| t == m.topic()).unwrap_or(0)
        };
        t * self.partitions + m.partition() as usize
    }

    /// Partition indexes in all.
    pub fn indexes(&self) -> usize {
        self.topics.len() * self.partitions
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
        for &(i, o) in offsets {
            let (topic, p) = self.at(i);
            tpl.add_partition_offset(topic, p, Offset::Offset(o))
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
    pub fn cached_end(&self, i: usize) -> Option<i64> {
        let (topic, p) = self.at(i);
        let topic = std::ffi::CString::new(topic).ok()?;
        let (mut lo, mut hi) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while `self.inner` lives; librdkafka only reads
        // the topic name and writes the two offsets.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.inner.client().native_ptr(),
                topic.as_ptr(),
                p,
                &mut lo,
                &mut hi,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
            .then_some(hi)
    }

    /// (earliest, next) offsets of partition `p`.
    pub fn watermarks(&self, i: usize) -> Result<(i64, i64)> {
        let (topic, p) = self.at(i);
        self.inner
            .fetch_watermarks(topic, p, self.config.timeout)
            .map_err(|e| {
                self.config.error(
                    &e,
                    &self.events.log,
                    &format!("reading offsets of {topic}/{p}"),
                )
            })
    }

    /// The group's committed offset of partition `p`, if any.
    pub fn committed(&self, i: usize) -> Result<Option<i64>> {
        let (topic, p) = self.at(i);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
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
    pub fn seek(&self, i: usize, offset: i64) -> Result<()> {
        let (topic, p) = self.at(i);
        let deadline = Instant::now() + self.config.timeout;
        loop {
            match self
                .inner
                .seek(topic, p, Offset::Offset(offset), self.config.timeout)
            {
                Ok(()) => return Ok(()),
                // A partition whose fetcher is not started yet refuses a seek for a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => {
                    return Err(self.config.error(
                        &e,
                        &self.events.log,
                        &format!("seeking {topic}/{p} to offset {offset}"),
                    ))
                }
            }
        }
    }
}

/// Append a message to an Arrow batch being built.
pub fn push_message(sink: &mut ArrowRecordSink, m: &BorrowedMessage<'_>) {
    // A record without a timestamp (-1) has a null one: never a made-up time.
    let ts = m.timestamp().to_millis();
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
    /// The partitions (indexes) currently assigned to this consumer.
    pub fn assignment(&self) -> Vec<usize> {
        self.inner
            .assignment()
            .map(|t| t.elements().iter().map(|e| self.events.index(e)).collect())
            .unwrap_or_default()
    }
}
