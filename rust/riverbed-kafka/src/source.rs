//! A Kafka topic as a pipeline source. Without a group, the source reads every partition
//! (from the earliest offset, the latest, or a checkpoint's positions); a bounded run stops at
//! the end offsets the partitions had when it started. With a group, the process is one
//! member: the run keeps a task per assigned partition (see riverbed-stream's `tasks`), seeks
//! each to its checkpoint and commits offsets with each checkpoint.
//!
//! Values are decoded exactly as the embedded log's (JSON with a given or inferred schema, or
//! raw bytes), with `key`, `timestamp` (the Kafka record timestamp), `partition` and `offset`
//! columns, and bad records go to the pipeline's `on_error` policy.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;
use rdkafka::message::{Headers, Message};
use riverbed_stream::decode::Headers as RecordHeaders;
use riverbed_stream::errors::ErrorHandler;
use riverbed_stream::source::Polled;
use riverbed_stream::{
    Decoder, ExternalSource, Format, RawRecords, Rebalance, Result as StreamResult, Source,
    StreamError,
};

use crate::client::KafkaConfig;
use crate::consumer::{Start, TopicConsumer};
use crate::error::{KafkaError, Result};
use crate::provisional::{Flushes, FLUSH_HEADER};
use crate::read_committed::{Admit, ReadCommitted, Txn, COMMIT_HEADER, START_HEADER, TXN_HEADER};

/// How a pipeline reads a Kafka topic.
pub struct KafkaTopicSource {
    pub config: KafkaConfig,
    pub topic: String,
    pub group: Option<String>,
    pub start: Start,
    pub decoder: Decoder,
    pub partitions: usize,
    pub batch_size: usize,
    pub on_error: Option<Arc<ErrorHandler>>,
    /// A repartition topic written by this many tasks: its watermark marker records give each
    /// partition's watermark (the lowest of its writers', see `fill`).
    pub writers: Option<usize>,
}

impl KafkaTopicSource {
    /// Check that the topic exists; without a schema, infer JSON values' schema from up to
    /// 1,000 records read from the start of each partition.
    pub fn new(
        config: &KafkaConfig,
        topic: &str,
        group: Option<&str>,
        start: Start,
        format: Format,
        value_schema: Option<SchemaRef>,
        batch_size: usize,
    ) -> Result<KafkaTopicSource> {
        let sample = TopicConsumer::open(config, topic, None, Start::Earliest, None, false)?;
        let value_schema = match (format, value_schema) {
            (Format::Json, None) => Some(infer(&sample)?),
            (_, s) => s,
        };
        Ok(KafkaTopicSource {
            config: config.clone(),
            topic: topic.to_string(),
            group: group.map(str::to_string),
            start,
            decoder: Decoder::new(topic, format, value_schema),
            partitions: sample.partitions,
            batch_size: batch_size.max(1),
            on_error: None,
            writers: None,
        })
    }
}

/// The schema of a topic's JSON values, from up to 1,000 of its first records.
fn infer(c: &TopicConsumer) -> Result<SchemaRef> {
    let mut ends = 0;
    for p in 0..c.partitions {
        let (lo, hi) = c.watermarks(p)?;
        ends += (hi - lo).min(1000 / c.partitions.max(1) as i64 + 1);
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + c.config.timeout;
    while (values.len() as i64) < ends.min(1000) && Instant::now() < deadline {
        if let Some(m) = c.next(Duration::from_millis(50))? {
            values.extend(m.payload().map(<[u8]>::to_vec));
        }
    }
    riverbed_stream::decode::infer_json_schema(&c.topic, values.iter().map(Vec::as_slice))
        .map_err(|e| KafkaError::Other(e.to_string()))
}

impl ExternalSource for KafkaTopicSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema.clone()
    }
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn default_event_time(&self) -> Option<&'static str> {
        self.decoder
            .value_schema
            .index_of("timestamp")
            .is_err()
            .then_some("timestamp")
    }
    fn open(
        &self,
        follow: bool,
        on_error: Arc<ErrorHandler>,
        start: Option<&[i64]>,
    ) -> StreamResult<Box<dyn Source>> {
        Ok(Box::new(KafkaSource::open(self, follow, on_error, start)?))
    }
    fn topic_name(&self) -> Option<String> {
        Some(self.topic.clone())
    }
    fn describe(&self) -> String {
        format!(
            "Kafka topic '{}' at {} ({} partitions{})",
            self.topic,
            self.config.bootstrap,
            self.partitions,
            self.group
                .as_ref()
                .map_or(String::new(), |g| format!(", group '{g}'"))
        )
    }
    fn on_error(&self) -> Option<Arc<ErrorHandler>> {
        self.on_error.clone()
    }
    fn group(&self) -> Option<String> {
        self.group.clone()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn open_together(
        &self,
        others: &[Arc<dyn ExternalSource>],
        follow: bool,
        on_error: Arc<ErrorHandler>,
    ) -> StreamResult<Box<dyn Source>> {
        let mut specs = vec![self];
        for o in others {
            let Some(k) = o.as_any().downcast_ref::<KafkaTopicSource>() else {
                return Err(StreamError::plan(
                    "read",
                    format!(
                        "{} cannot be read together with {} by one group",
                        o.describe(),
                        self.describe()
                    ),
                ));
            };
            if k.config.bootstrap != self.config.bootstrap {
                return Err(StreamError::plan(
                    "read",
                    format!("{} and {} are on different clusters; a group reads topics of one cluster together", k.describe(), self.describe()),
                ));
            }
            specs.push(k);
        }
        Ok(Box::new(KafkaSource::open_together(
            &specs, follow, on_error,
        )?))
    }
}

/// A running reader of a Kafka topic (or of several read together: its partitions are indexed
/// as the consumer's, `t * partitions + p`).
pub struct KafkaSource {
    consumer: TopicConsumer,
    /// One per topic.
    decoders: Vec<Decoder>,
    follow: bool,
    start: Start,
    /// Start over: the group's committed offsets are not used (`Source::ignore_commits`).
    ignore_commits: bool,
    batch_size: usize,
    /// Partitions this process reads (all of them without a group).
    assigned: BTreeSet<usize>,
    /// Per partition: the offset after the last record handed to the run (-1: none yet).
    positions: Vec<i64>,
    /// Bounded runs: where each assigned partition ends.
    ends: Vec<Option<i64>>,
    done: Vec<bool>,
    /// Read and decoded, not handed to the run yet: each fill's items of a partition, the first
    /// one saying what handing it completes (`Handed`).
    ready: VecDeque<(Polled, Option<Handed>)>,
    rebalance: Option<Rebalance>,
    finished: bool,
    /// A repartition topic: per partition, each writer's latest watermark and idleness.
    marks: Option<Vec<Vec<(i64, bool)>>>,
    /// A repartition topic: per partition, its writers' transactions (`read_committed`).
    txns: Option<Vec<ReadCommitted>>,
    /// A repartition topic: per partition, the position and writers' progress a checkpoint
    /// may keep — as of the last fill whose rows were handed to the run (a fill's commit
    /// markers release rows that are taken in only once handed).
    checkpointable: Vec<(i64, Vec<Option<riverbed_stream::Committed>>)>,
    /// A repartition topic: per partition, its writers' newest end-of-input flushes read, held
    /// (bounded runs) until the partition's end (`provisional`).
    flushes: Vec<Flushes>,
    /// An error met while waiting, for the next poll to return.
    failed: Option<StreamError>,
    /// Per topic: the policy for its bad records.
    on_error: Vec<Arc<ErrorHandler>>,
    errors: AtomicU64,
}

impl KafkaSource {
    fn open(
        spec: &KafkaTopicSource,
        follow: bool,
        on_error: Arc<ErrorHandler>,
        start: Option<&[i64]>,
    ) -> Result<KafkaSource> {
        let consumer = TopicConsumer::open(
            &spec.config,
            &spec.topic,
            spec.group.as_deref(),
            spec.start,
            start,
            false,
        )?;
        let mut s = KafkaSource::with(
            spec,
            consumer,
            vec![spec.decoder.clone()],
            follow,
            vec![on_error],
        );
        if spec.group.is_none() {
            for p in 0..s.consumer.partitions {
                s.add(p, start.and_then(|s| s.get(p)).copied().filter(|&o| o >= 0))?;
            }
        }
        Ok(s)
    }

    /// `specs` read together by their group (one consumer, partition p of each assigned to the
    /// same member).
    fn open_together(
        specs: &[&KafkaTopicSource],
        follow: bool,
        on_error: Arc<ErrorHandler>,
    ) -> Result<KafkaSource> {
        let first = specs[0];
        let group = first.group.as_deref().unwrap_or_default();
        let topics: Vec<String> = specs.iter().map(|s| s.topic.clone()).collect();
        let consumer = TopicConsumer::open_together(&first.config, &topics, group, first.start)?;
        let decoders = specs.iter().map(|s| s.decoder.clone()).collect();
        // Each topic's own policy, else the pipeline's.
        let handlers = specs
            .iter()
            .map(|s| s.on_error.clone().unwrap_or_else(|| on_error.clone()))
            .collect();
        Ok(KafkaSource::with(
            first, consumer, decoders, follow, handlers,
        ))
    }

    fn with(
        spec: &KafkaTopicSource,
        consumer: TopicConsumer,
        decoders: Vec<Decoder>,
        follow: bool,
        on_error: Vec<Arc<ErrorHandler>>,
    ) -> KafkaSource {
        let n = consumer.indexes();
        KafkaSource {
            decoders,
            follow,
            start: spec.start,
            ignore_commits: false,
            batch_size: spec.batch_size,
            assigned: BTreeSet::new(),
            positions: vec![-1; n],
            ends: vec![None; n],
            done: vec![false; n],
            ready: VecDeque::new(),
            rebalance: None,
            finished: false,
            marks: spec.writers.map(|w| vec![vec![(i64::MIN, false); w]; n]),
            txns: spec
                .writers
                .map(|w| (0..n).map(|_| ReadCommitted::new(w)).collect()),
            checkpointable: vec![(-1, Vec::new()); n],
            flushes: (0..n).map(|_| Flushes::default()).collect(),
            failed: None,
            on_error,
            errors: AtomicU64::new(0),
            consumer,
        }
    }

    /// Start reading partition `p` (from `at`, else its committed or first/last offset).
    fn add(&mut self, p: usize, at: Option<i64>) -> Result<()> {
        self.assigned.insert(p);
        self.done[p] = false;
        // What this member knew of the partition's writers is a checkpoint's to say again.
        if let Some(t) = self.txns.as_mut() {
            t[p].restore(&[]);
        }
        self.checkpointable[p] = (-1, Vec::new());
        // Writers' watermarks are learnt again from the markers after the new position: ones
        // read before (by an earlier assignment) may be ahead of records read again now.
        self.forget_read(p);
        let (lo, hi) = self.consumer.watermarks(p)?;
        let at = match at {
            Some(o) => o,
            None => match (!self.ignore_commits)
                .then(|| self.consumer.committed(p))
                .transpose()?
                .flatten()
            {
                Some(o) => o,
                None if self.start == Start::Latest => hi,
                None => lo,
            },
        };
        self.positions[p] = at.max(lo);
        self.checkpointable[p].0 = self.positions[p];
        if self.ignore_commits {
            // The consumer itself would start at the committed offset.
            self.consumer.seek(p, self.positions[p])?;
        }
        self.ends[p] = (!self.follow).then_some(hi);
        Ok(())
    }

    /// Drop what was read of partition `p` and not handed out yet, with the writers'
    /// watermarks learnt from it: reading goes on from another position.
    fn forget_read(&mut self, p: usize) {
        self.ready.retain(|(item, handed)| match item {
            Polled::Batch(q, _)
            | Polled::Provisional(q, ..)
            | Polled::PartitionDone(q)
            | Polled::Watermark(q, ..) => *q != p,
            _ => handed.as_ref().is_none_or(|h| h.p != p),
        });
        if let Some(t) = self.txns.as_mut() {
            t[p].forget_held();
        }
        self.flushes[p] = Flushes::default();
        if let Some(marks) = self.marks.as_mut() {
            for m in &mut marks[p] {
                *m = (i64::MIN, false);
            }
        }
    }

    /// Take the group's assignment changes.
    fn take_events(&mut self) -> Result<()> {
        if self.consumer.group.is_none() {
            return Ok(());
        }
        let (assigned, revoked) = self.consumer.events.take();
        if assigned.is_empty() && revoked.is_empty() {
            return Ok(());
        }
        for &p in &revoked {
            self.assigned.remove(&p);
            // Nothing read for it is handed on, its watermark included: a later owner (maybe
            // this member again, from a checkpoint) reads on from its own position.
            self.forget_read(p);
        }
        for &p in &assigned {
            self.add(p, None)?;
        }
        let rb = self.rebalance.get_or_insert_with(Rebalance::default);
        rb.revoked.retain(|p| !assigned.contains(p));
        rb.assigned.retain(|p| !revoked.contains(p));
        rb.revoked.extend(revoked);
        rb.assigned.extend(assigned);
        Ok(())
    }

    /// Read what is there (up to a batch per partition) and decode it.
    fn fill(&mut self, wait: Duration) -> StreamResult<()> {
        let mut raws: BTreeMap<usize, RawRecords> = BTreeMap::new();
        let mut headers: HashMap<(usize, i64), RecordHeaders> = HashMap::new();
        let mut n = 0;
        let mut first = true;
        // Per partition read: the offset after the last record read.
        let mut read_to: BTreeMap<usize, i64> = BTreeMap::new();
        // Partitions whose writers' watermarks moved.
        let mut marked: BTreeSet<usize> = BTreeSet::new();
        while n < self.batch_size {
            // Assignment changes arrive inside a poll: take them before the next message.
            self.take_events()?;
            let m = self
                .consumer
                .next(if first { wait } else { Duration::ZERO })?;
            first = false;
            let Some(m) = m else { break };
            let p = self.consumer.index_of(&m);
            if !self.assigned.contains(&p) {
                continue;
            }
            let o = m.offset();
            read_to.insert(p, o + 1);
            let hdrs = || -> RecordHeaders {
                m.headers().map_or_else(Vec::new, |h| {
                    h.iter()
                        .map(|h| (h.key.as_bytes().to_vec(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
            };
            // A record without a timestamp (-1) has a null one: never a made-up time.
            let ts = m.timestamp().to_millis();
            // A repartition topic's row of a writer's end-of-input flush: whether the writer
            // changed since its last run, and the flush's writer and incarnation.
            let mut flush = None;
            let mut flush_of = None;
            // A batch counts records, not markers (those take it back).
            n += 1;
            if let (Some(marks), Some(txns)) = (self.marks.as_mut(), self.txns.as_mut()) {
                let tags = Tags::of(&m);
                flush = tags.provisional;
                flush_of = tags.flush;
                let rc = &mut txns[p];
                match tags {
                    Tags {
                        commit: Some((w, txn)),
                        start,
                        ..
                    } => {
                        n -= 1;
                        for h in rc.control(w, txn, start, o) {
                            if let (Some((wm, idle)), Some(x)) = (h.mark, marks[p].get_mut(w)) {
                                *x = (x.0.max(wm), idle);
                                marked.insert(p);
                            }
                            headers.extend(h.headers.into_iter().map(|(o, x)| ((p, o), x)));
                            // With the partition's other rows of this fill: one batch, so that a
                            // checkpoint is never between two parts of what a fill read.
                            raws.entry(p).or_default().append(&h.rows);
                        }
                        continue;
                    }
                    Tags {
                        writer: Some(w),
                        watermark: Some(wm),
                        idle,
                        txn,
                        ..
                    } => {
                        let txn = txn.map(|(_, t)| t);
                        n -= 1;
                        match txn.map_or(Admit::Now, |t| rc.admit(w, t, o)) {
                            Admit::Now => {
                                if let Some(x) = marks[p].get_mut(w) {
                                    *x = (x.0.max(wm), idle);
                                    marked.insert(p);
                                }
                            }
                            Admit::Hold => {
                                let h = rc.hold(w, txn.expect("held: tagged"), o);
                                h.mark = Some((h.mark.map_or(wm, |x| x.0.max(wm)), idle));
                            }
                            Admit::Skip => {}
                        }
                        continue;
                    }
                    Tags {
                        txn: Some((w, txn)),
                        ..
                    } => match rc.admit(w, txn, o) {
                        Admit::Now => {}
                        Admit::Hold => {
                            let h = rc.hold(w, txn, o);
                            h.rows.push_parts(o, ts, m.key(), m.payload());
                            h.headers.push((o, hdrs()));
                            continue;
                        }
                        Admit::Skip => continue,
                    },
                    _ => {}
                }
            }
            if let Some(changed) = flush {
                let f = self.flushes[p].of(flush_of, changed);
                match m.payload() {
                    // The marker a writer's flush begins with, in every partition.
                    None => n -= 1,
                    Some(v) => {
                        f.rows.push_parts(o, ts, m.key(), Some(v));
                        f.headers.insert(o, hdrs());
                    }
                }
                continue;
            }
            raws.entry(p)
                .or_default()
                .push_parts(o, ts, m.key(), m.payload());
            if m.headers().is_some() {
                headers.insert((p, o), hdrs());
            }
        }
        self.take_events()?;
        // Per partition, the index in `ready` of this fill's first item of it.
        let mut first: BTreeMap<usize, usize> = BTreeMap::new();
        for (p, raw) in raws {
            if !self.assigned.contains(&p) {
                continue;
            }
            let b = self.decode(p, &raw, &|o| {
                headers.get(&(p, o)).cloned().unwrap_or_default()
            })?;
            self.ready.push_back((Polled::Batch(p, b), None));
            first.entry(p).or_insert(self.ready.len() - 1);
        }
        // Following, a writer's flush goes on at once (a following task never ends its input,
        // it only wakes); a bounded run's, at the partition's end (`check_ends`).
        if self.follow {
            for p in self.assigned.clone() {
                let at = self.ready.len();
                self.release_flushes(p)?;
                if self.ready.len() > at {
                    first.entry(p).or_insert(at);
                }
            }
        }
        // After the data read with them (records after a marker are not behind it).
        for p in marked {
            if let (true, Some(marks)) = (self.assigned.contains(&p), self.marks.as_ref()) {
                // Every writer holds the partition back, idle ones too: a live idle writer's
                // watermark moves on with the wall clock (it resends it), while a dead one's
                // stays where it was until the writer's new owner takes over, which must not
                // find its records late. A writer that never had a watermark (its input
                // partition is empty) and says it is idle does not hold anything back.
                let idle = marks[p].iter().all(|m| m.1);
                let wm = marks[p]
                    .iter()
                    .filter(|m| !m.1 || m.0 > i64::MIN)
                    .map(|m| m.0)
                    .min()
                    .unwrap_or(i64::MIN);
                self.ready.push_back((Polled::Watermark(p, wm, idle), None));
                first.entry(p).or_insert(self.ready.len() - 1);
            }
        }
        // Per partition read, on its first item (its one batch of rows, if any): what handing
        // it out completes. A checkpoint right after it keeps the position past this fill:
        // what follows of it (a writer's provisional flush, its watermarks) comes again.
        for (p, next) in read_to {
            if !self.assigned.contains(&p) {
                continue;
            }
            let committed = self.txns.as_ref().map(|t| {
                let held = t[p].first_held().unwrap_or(next);
                (next.min(held), t[p].state())
            });
            let handed = Some(Handed { p, next, committed });
            match first.get(&p) {
                Some(&i) => self.ready[i].1 = handed,
                // Only markers or held records were read: the reading moved on all the same.
                None => self.ready.push_back((Polled::Idle, handed)),
            }
        }
        Ok(())
    }

    /// Partition `p`'s raw records, decoded (`headers`: a record's, by offset).
    fn decode(
        &self,
        p: usize,
        raw: &RawRecords,
        headers: &dyn Fn(i64) -> RecordHeaders,
    ) -> StreamResult<arrow_array::RecordBatch> {
        let n = self.consumer.partitions;
        self.decoders[p / n].decode(p % n, raw, &self.on_error[p / n], &self.errors, headers)
    }

    /// Hand on partition `p`'s writers' flushes held so far, one item each (none for a flush
    /// without rows here: nothing of the reader's changes).
    fn release_flushes(&mut self, p: usize) -> StreamResult<()> {
        for f in self.flushes[p].take() {
            if f.rows.is_empty() {
                continue;
            }
            let b = self.decode(p, &f.rows, &|o| {
                f.headers.get(&o).cloned().unwrap_or_default()
            })?;
            self.ready
                .push_back((Polled::Provisional(p, b, f.changed), None));
        }
        Ok(())
    }

    /// Bounded runs: partitions that reached their end (after their writers' newest flushes).
    fn check_ends(&mut self) -> StreamResult<()> {
        let mut reached = Vec::new();
        for &p in &self.assigned {
            if self.done[p] {
                continue;
            }
            let pending = self
                .ready
                .iter()
                .any(|(_, h)| h.as_ref().is_some_and(|h| h.p == p));
            if let Some(end) = self.ends[p] {
                if !pending && self.positions[p] >= end {
                    reached.push(p);
                }
            }
        }
        for p in reached {
            self.done[p] = true;
            self.release_flushes(p)?;
            self.ready.push_back((Polled::PartitionDone(p), None));
        }
        if !self.follow
            && !self.finished
            && !self.assigned.is_empty()
            && self.assigned.iter().all(|&p| self.done[p])
        {
            self.finished = true;
            self.ready.push_back((Polled::Done, None));
        }
        Ok(())
    }
}

/// What handing a partition's first item of a fill (its one batch of rows) to the run
/// completes: the reading of the partition is past `next`; for a read-committed topic, a
/// checkpoint may keep `committed` (position, writers' progress) from then on. A fill's rows of
/// a partition are one item, so a checkpoint splits no rows from their position (following, a
/// fill may also hand on writers' provisional flushes as items of their own: a following task
/// never takes those in).
struct Handed {
    p: usize,
    next: i64,
    committed: Option<(i64, Vec<Option<riverbed_stream::Committed>>)>,
}

/// The riverbed headers of a repartition topic's record: a watermark marker has `writer` and
/// `watermark`, a commit marker `commit`, a checkpointing task's row `txn` (writer and
/// transaction, see `read_committed`), a row of an end-of-input flush `provisional` (whether it
/// changed since the writer's last run, `PROVISIONAL_HEADER`).
#[derive(Default)]
struct Tags {
    writer: Option<usize>,
    watermark: Option<i64>,
    idle: bool,
    txn: Option<(usize, Txn)>,
    commit: Option<(usize, Txn)>,
    start: bool,
    provisional: Option<bool>,
    /// On a provisional row: its writer's incarnation (`FLUSH_HEADER`).
    flush: Option<(usize, Txn)>,
}

impl Tags {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Tags {
        let mut t = Tags::default();
        let Some(h) = m.headers() else {
            return t;
        };
        for x in h.iter() {
            let text = || x.value.and_then(|v| std::str::from_utf8(v).ok());
            match x.key {
                crate::sink::WATERMARK_HEADER => t.watermark = text().and_then(|v| v.parse().ok()),
                crate::sink::WRITER_HEADER => t.writer = text().and_then(|v| v.parse().ok()),
                crate::sink::IDLE_HEADER => t.idle = text() == Some("1"),
                crate::sink::PROVISIONAL_HEADER => t.provisional = Some(text() != Some("0")),
                TXN_HEADER => t.txn = x.value.and_then(Txn::parse),
                COMMIT_HEADER => t.commit = x.value.and_then(Txn::parse),
                START_HEADER => t.start = text() == Some("1"),
                FLUSH_HEADER => t.flush = x.value.and_then(Txn::parse),
                _ => {}
            }
        }
        t
    }
}

fn stream_err(e: KafkaError) -> StreamError {
    e.into()
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.decoders[0].schema.clone()
    }
    fn partitions(&self) -> usize {
        self.consumer.indexes()
    }
    fn poll(&mut self) -> StreamResult<Polled> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // A bounded read without a group waits for its records (the engine takes Idle from a
        // bounded source as its end), but not forever: a partition that does not reach its end
        // offset within the timeout fails the run.
        let block = !self.follow && self.consumer.group.is_none();
        let stalled = Instant::now();
        while self.ready.is_empty() && !self.finished {
            self.fill(if block {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            })?;
            if !self.follow {
                self.check_ends()?;
            }
            if !block || !self.ready.is_empty() {
                break;
            }
            if stalled.elapsed() >= self.consumer.config.timeout {
                let behind: Vec<String> = self
                    .assigned
                    .iter()
                    .filter(|&&p| !self.done[p])
                    .map(|&p| {
                        let (topic, q) = self.consumer.at(p);
                        format!(
                            "{topic}/{q} at offset {} of {}",
                            self.positions[p],
                            self.ends[p].unwrap_or(-1)
                        )
                    })
                    .collect();
                return Err(KafkaError::Timeout {
                    what: format!("reading to the end offsets ({})", behind.join(", ")),
                    timeout: self.consumer.config.timeout,
                }
                .into());
            }
        }
        // A rebalance the run has not taken yet goes first: what was read of a partition just
        // assigned waits for its task, which may seek the partition to its checkpoint.
        if self.rebalance.is_some() {
            return Ok(Polled::Idle);
        }
        while let Some((item, handed)) = self.ready.pop_front() {
            let Some(h) = handed else {
                return Ok(item);
            };
            // The partition's items of a fill are all out: its position is past them.
            self.positions[h.p] = self.positions[h.p].max(h.next);
            if let Some(c) = h.committed {
                self.checkpointable[h.p] = c;
            }
            if !matches!(item, Polled::Idle) || self.ready.is_empty() {
                return Ok(item);
            }
        }
        Ok(Polled::Idle)
    }
    fn wait(&mut self, timeout: Duration) {
        if self.ready.is_empty() && !self.finished {
            if let Err(e) = self.fill(timeout) {
                self.failed = Some(e);
            }
        }
    }
    fn describe(&self) -> String {
        match self.consumer.topics.as_slice() {
            [one] => format!("Kafka topic '{one}'"),
            many => format!("Kafka topics {many:?}"),
        }
    }
    fn positions(&self) -> Option<Vec<i64>> {
        if self.txns.is_none() {
            return Some(self.positions.clone());
        }
        // Never past a record held for its writer's commit (read again after a restore), and as
        // of what the run has taken in.
        Some(self.checkpointable.iter().map(|c| c.0).collect())
    }
    fn carries_watermarks(&self) -> bool {
        self.marks.is_some()
    }
    fn caught_up(&self, partition: usize) -> bool {
        let pending = self
            .ready
            .iter()
            .any(|(_, h)| h.as_ref().is_some_and(|h| h.p == partition));
        // Nothing handed out yet, or no fetch answered yet: it cannot tell.
        let pos = self.positions.get(partition).copied().unwrap_or(-1);
        !pending
            && (pos < 0
                || self
                    .consumer
                    .cached_end(partition)
                    .is_none_or(|end| pos >= end))
    }
    fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn rebalance(&mut self) -> Option<Rebalance> {
        if let Err(e) = self.take_events() {
            self.failed = Some(e.into());
        }
        self.rebalance.take()
    }
    fn seek(&mut self, partition: usize, offset: i64) -> StreamResult<()> {
        self.consumer.seek(partition, offset).map_err(stream_err)?;
        self.positions[partition] = offset;
        self.checkpointable[partition].0 = offset;
        // Records read from the position before (a new assignment reads from the committed
        // offset until its task seeks to its checkpoint's) would be handed out twice.
        self.forget_read(partition);
        Ok(())
    }
    fn ignore_commits(&mut self) {
        self.ignore_commits = true;
    }

    fn committed(&self, partition: usize) -> Vec<Option<riverbed_stream::Committed>> {
        match &self.txns {
            Some(_) => self.checkpointable[partition].1.clone(),
            None => Vec::new(),
        }
    }

    fn restore_committed(&mut self, partition: usize, c: &[Option<riverbed_stream::Committed>]) {
        if let Some(t) = self.txns.as_mut() {
            t[partition].restore(c);
            self.checkpointable[partition].1 = c.to_vec();
        }
    }

    fn commit(&mut self, offsets: &[(usize, i64)]) -> StreamResult<()> {
        // Offsets of partitions revoked meanwhile cannot be committed by this member any more;
        // their checkpoint (written before) is what the next owner continues from.
        let mine: Vec<(usize, i64)> = offsets
            .iter()
            .copied()
            .filter(|(p, _)| self.assigned.contains(p))
            .collect();
        match self.consumer.commit(&mine) {
            Ok(()) => Ok(()),
            Err(KafkaError::Other(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
