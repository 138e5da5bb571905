//! Sources: in-memory Arrow tables, Arrow streams (e.g. a Python iterator), and log topics read
//! on reader threads, their values decoded into Arrow by `decode.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::SchemaRef;
use parking_lot::Mutex;
use riverbed_log::Topic;

use crate::checkpoint::Committed;
use crate::decode::{infer_schema, Decoder, Format, RawRecords};
use crate::error::{ArrowContext, Result, StreamError};
use crate::errors::{BadRecord, ErrorHandler};

/// What a poll of a source found.
pub enum Polled {
    Batch(usize, RecordBatch),
    /// This partition has no more data (bounded runs).
    PartitionDone(usize),
    /// The watermark of a partition as its writers reported it (a repartition topic), and
    /// whether all their inputs are idle.
    Watermark(usize, i64, bool),
    /// Rows a writer of a repartition topic wrote in its bounded run's end-of-input flush
    /// (provisional: a later run emits them again), and whether they changed since its last
    /// run's. The reading task takes them in after its end-of-input checkpoint, never into it.
    Provisional(usize, RecordBatch, bool),
    /// Nothing available right now (follow mode).
    Idle,
    /// Every partition is done.
    Done,
}

pub trait Source: Send {
    fn schema(&self) -> SchemaRef;
    fn partitions(&self) -> usize;
    fn poll(&mut self) -> Result<Polled>;
    /// Whether the reader has reached the end of `partition` (nothing is waiting to be read):
    /// only then can the partition count as idle. Sources that cannot tell say yes.
    fn caught_up(&self, _partition: usize) -> bool {
        true
    }
    /// Whether the source reports its partitions' watermarks itself (`Polled::Watermark`: a
    /// repartition topic carries its writers'). Its records are then never judged by their
    /// partition's stream time: a repartition partition interleaves several writers, and a
    /// record of a slower writer is not late for being read after a faster one's.
    fn carries_watermarks(&self) -> bool {
        false
    }
    /// Block up to `timeout` for new data (follow mode).
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout.min(Duration::from_millis(20)));
    }
    fn describe(&self) -> String;
    /// Where a restarted run resumes: per partition, the next offset to process (a table: the
    /// batches done). `None`: this source cannot resume (a Python iterator).
    fn positions(&self) -> Option<Vec<i64>> {
        None
    }
    /// Bad records this source skipped or dead-lettered.
    fn errors(&self) -> u64 {
        0
    }
    /// Consumer groups: the partitions assigned to and revoked from this process since the last
    /// call (the run keeps one task per assigned partition).
    fn rebalance(&mut self) -> Option<Rebalance> {
        None
    }
    /// Consumer groups: continue partition `partition` at `offset` (a restored checkpoint's).
    fn seek(&mut self, partition: usize, _offset: i64) -> Result<()> {
        Err(StreamError::Internal(format!(
            "{} cannot seek partition {partition}",
            self.describe()
        )))
    }
    /// Consumer groups: record the next offset to process per partition (with a checkpoint,
    /// after its results were written).
    fn commit(&mut self, _offsets: &[(usize, i64)]) -> Result<()> {
        Ok(())
    }
    /// Consumer groups: start partitions without a checkpoint where a new group would (the
    /// source's start), not at the group's committed offsets: a run told to start over.
    fn ignore_commits(&mut self) {}
    /// A read-committed repartition topic: what `partition`'s reader has taken in of each
    /// writing task (a checkpoint keeps it with the partition's position). Empty for others.
    fn committed(&self, _partition: usize) -> Vec<Option<Committed>> {
        Vec::new()
    }
    /// After `seek` to a checkpoint's position: the progress that checkpoint kept.
    fn restore_committed(&mut self, _partition: usize, _committed: &[Option<Committed>]) {}
}

/// Partitions that moved to or from this process in a consumer group's rebalance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalance {
    pub assigned: Vec<usize>,
    pub revoked: Vec<usize>,
}

/// A source from another crate (Kafka): it makes its own readers.
pub trait ExternalSource: Send + Sync {
    fn schema(&self) -> SchemaRef;
    fn partitions(&self) -> usize;
    /// Whether the records' own timestamp serves as event time (`timestamp=None`).
    fn default_event_time(&self) -> Option<&'static str>;
    /// `on_error`: the policy for records that do not decode; `start`: checkpointed positions.
    fn open(
        &self,
        follow: bool,
        on_error: Arc<ErrorHandler>,
        start: Option<&[i64]>,
    ) -> Result<Box<dyn Source>>;
    fn describe(&self) -> String;
    /// The topic it reads, to name a bad record's topic/partition/offset.
    fn topic_name(&self) -> Option<String> {
        None
    }
    /// This source's own policy for bad records, if it has one.
    fn on_error(&self) -> Option<Arc<ErrorHandler>> {
        None
    }
    /// The consumer group whose members split this source's partitions, if any.
    fn group(&self) -> Option<String> {
        None
    }
    /// This source as `Any`, for `open_together` to recognise sources of its own kind.
    fn as_any(&self) -> &dyn std::any::Any;
    /// One reader of this source and `others` (sources of the same group), read together so
    /// that partition p of every one goes to the same group member (co-partitioned tasks). Its
    /// partition index `t * partitions + p` is partition p of source t (this one is t = 0).
    fn open_together(
        &self,
        others: &[Arc<dyn ExternalSource>],
        follow: bool,
        on_error: Arc<ErrorHandler>,
    ) -> Result<Box<dyn Source>> {
        let _ = (others, follow, on_error);
        Err(StreamError::plan(
            "read",
            format!(
                "{} cannot be read together with other sources by one group",
                self.describe()
            ),
        ))
    }
}

/// A description of a source, from which each run makes a fresh reader.
#[derive(Clone)]
pub enum SourceSpec {
    Table {
        schema: SchemaRef,
        batches: Arc<Vec<RecordBatch>>,
    },
    /// Single use: the reader is taken by the first run.
    Stream {
        schema: SchemaRef,
        reader: Arc<Mutex<Option<Box<dyn RecordBatchReader + Send>>>>,
    },
    Log(LogSpec),
    External(Arc<dyn ExternalSource>),
}

#[derive(Clone)]
pub struct LogSpec {
    pub topic: Arc<Topic>,
    pub decoder: Decoder,
    pub batch_size: usize,
    /// This source's policy for records that do not decode; the pipeline's when `None`.
    pub on_error: Option<Arc<ErrorHandler>>,
}

/// Rows per batch of an in-memory table source by default (larger chunks are sliced).
const TABLE_CHUNK: usize = 65_536;

impl SourceSpec {
    /// An in-memory table, re-chunked to `batch_size` rows when given, else into chunks of at
    /// most [`TABLE_CHUNK`] rows.
    pub fn table(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        batch_size: Option<usize>,
    ) -> Result<SourceSpec> {
        let batches = match batch_size {
            Some(n) if n > 0 => {
                // One batch is sliced without copying; several are joined first so every chunk
                // (but the last) has exactly `n` rows.
                let all = match batches.as_slice() {
                    [one] => one.clone(),
                    _ => arrow_select::concat::concat_batches(&schema, &batches)
                        .ctx("table source")?,
                };
                (0..all.num_rows())
                    .step_by(n)
                    .map(|o| all.slice(o, n.min(all.num_rows() - o)))
                    .collect()
            }
            // Big chunks are sliced (without copying): operators then work on cache-sized steps
            // and the watermark advances between them.
            _ => batches
                .into_iter()
                .flat_map(|b| {
                    let n = b.num_rows();
                    (0..n)
                        .step_by(TABLE_CHUNK)
                        .map(move |o| b.slice(o, TABLE_CHUNK.min(n - o)))
                })
                .collect(),
        };
        Ok(SourceSpec::Table {
            schema,
            batches: Arc::new(batches),
        })
    }

    pub fn stream(reader: Box<dyn RecordBatchReader + Send>) -> SourceSpec {
        SourceSpec::Stream {
            schema: reader.schema(),
            reader: Arc::new(Mutex::new(Some(reader))),
        }
    }

    /// A log topic. Without `value_schema`, JSON values' schema is inferred from the first
    /// 1,000 records of each partition.
    pub fn log(
        topic: Arc<Topic>,
        format: Format,
        value_schema: Option<SchemaRef>,
        batch_size: usize,
    ) -> Result<SourceSpec> {
        let value_schema = match (format, value_schema) {
            (Format::Json, None) => Some(infer_schema(&topic)?),
            (_, s) => s,
        };
        Ok(SourceSpec::Log(LogSpec {
            decoder: Decoder::new(&topic.name, format, value_schema),
            topic,
            batch_size: batch_size.max(1),
            on_error: None,
        }))
    }

    /// Give a log source its own policy for records that do not decode.
    pub fn with_on_error(mut self, handler: Arc<ErrorHandler>) -> SourceSpec {
        if let SourceSpec::Log(l) = &mut self {
            l.on_error = Some(handler);
        }
        self
    }

    pub fn schema(&self) -> SchemaRef {
        match self {
            SourceSpec::Table { schema, .. } | SourceSpec::Stream { schema, .. } => schema.clone(),
            SourceSpec::Log(l) => l.decoder.schema.clone(),
            SourceSpec::External(e) => e.schema(),
        }
    }

    /// Where the records come from, for `explain()` (and so for checkpoints: positions in one
    /// topic mean nothing in another).
    pub fn origin(&self) -> String {
        match self {
            SourceSpec::Table { .. } => "a table".into(),
            SourceSpec::Stream { .. } => "a stream".into(),
            SourceSpec::Log(l) => format!("topic '{}'", l.topic.name),
            SourceSpec::External(e) => e.describe(),
        }
    }

    pub fn partitions(&self) -> usize {
        match self {
            SourceSpec::Log(l) => l.topic.num_partitions() as usize,
            SourceSpec::External(e) => e.partitions(),
            _ => 1,
        }
    }

    /// Whether the source's own record timestamp can serve as event time (`timestamp=None`).
    pub fn default_event_time(&self) -> Option<&'static str> {
        match self {
            SourceSpec::Log(l) if l.decoder.value_schema.index_of("timestamp").is_err() => {
                Some("timestamp")
            }
            SourceSpec::External(e) => e.default_event_time(),
            _ => None,
        }
    }

    /// Open for reading; `on_error` is the pipeline's policy for bad records.
    /// What this source's positions are places in, to check a checkpoint's against.
    fn extent(&self) -> crate::resume::Extent<'_> {
        use crate::resume::Extent;
        match self {
            SourceSpec::Log(l) => Extent::Partitions {
                topic: &l.topic.name,
                ends: l.topic.partitions().iter().map(|p| p.offsets().1).collect(),
            },
            SourceSpec::Table { batches, .. } => Extent::Batches(batches.len()),
            SourceSpec::Stream { .. } | SourceSpec::External(_) => Extent::Unchecked,
        }
    }

    /// `start`: the positions of a checkpoint to resume from.
    pub fn open(
        &self,
        follow: bool,
        on_error: &Arc<ErrorHandler>,
        start: Option<&[i64]>,
    ) -> Result<Box<dyn Source>> {
        if let Some(s) = start {
            crate::resume::check_positions(&self.extent(), s)?;
        }
        Ok(match self {
            SourceSpec::Table { schema, batches } => Box::new(TableSource {
                schema: schema.clone(),
                batches: batches.clone(),
                pos: start
                    .and_then(|s| s.first())
                    .map_or(0, |&p| p.max(0) as usize),
            }),
            SourceSpec::Stream { schema, reader } => {
                let r = reader.lock().take().ok_or_else(|| {
                    StreamError::plan("read", "this pipeline reads a Python iterator or stream, which can only be run once")
                })?;
                Box::new(StreamSource {
                    schema: schema.clone(),
                    reader: Some(r),
                })
            }
            SourceSpec::Log(l) => {
                let handler = l.on_error.clone().unwrap_or_else(|| on_error.clone());
                Box::new(LogSource::new(l.clone(), follow, handler, start))
            }
            SourceSpec::External(e) => {
                let handler = e.on_error().unwrap_or_else(|| on_error.clone());
                e.open(follow, handler, start)?
            }
        })
    }
}

struct TableSource {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
    pos: usize,
}

impl Source for TableSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn partitions(&self) -> usize {
        1
    }
    fn poll(&mut self) -> Result<Polled> {
        match self.batches.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(Polled::Batch(0, b.clone()))
            }
            None => Ok(Polled::Done),
        }
    }
    fn positions(&self) -> Option<Vec<i64>> {
        Some(vec![self.pos as i64])
    }
    fn describe(&self) -> String {
        format!(
            "table ({} rows)",
            self.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        )
    }
}

struct StreamSource {
    schema: SchemaRef,
    reader: Option<Box<dyn RecordBatchReader + Send>>,
}

impl Source for StreamSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn partitions(&self) -> usize {
        1
    }
    fn poll(&mut self) -> Result<Polled> {
        let Some(r) = self.reader.as_mut() else {
            return Ok(Polled::Done);
        };
        match r.next() {
            Some(b) => Ok(Polled::Batch(
                0,
                b.map_err(|e| StreamError::Schema(format!("stream source: {e}")))?,
            )),
            None => {
                self.reader = None;
                Ok(Polled::Done)
            }
        }
    }
    fn describe(&self) -> String {
        "stream".into()
    }
}

/// Reads and decodes a topic's partitions, round by round (runs on the source's reader thread).
struct LogReader {
    spec: LogSpec,
    follow: bool,
    positions: Vec<i64>,
    ends: Vec<Option<i64>>,
    done: Vec<bool>,
    next: usize,
    /// Decoded batches waiting to be handed out, in order, with the partition's next offset.
    ready: std::collections::VecDeque<(Polled, Option<i64>)>,
    on_error: Arc<ErrorHandler>,
    /// Records that did not decode and were skipped or dead-lettered.
    errors: Arc<AtomicU64>,
}

impl LogReader {
    fn new(
        spec: LogSpec,
        follow: bool,
        on_error: Arc<ErrorHandler>,
        errors: Arc<AtomicU64>,
        start: Option<&[i64]>,
    ) -> LogReader {
        let parts = spec.topic.partitions();
        let positions = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let earliest = p.offsets().0;
                start
                    .and_then(|s| s.get(i))
                    .map_or(earliest, |&s| s.max(earliest))
            })
            .collect();
        let ends = parts
            .iter()
            .map(|p| (!follow).then(|| p.offsets().1))
            .collect();
        LogReader {
            done: vec![false; parts.len()],
            spec,
            follow,
            positions,
            ends,
            next: 0,
            ready: std::collections::VecDeque::new(),
            on_error,
            errors,
        }
    }

    fn decode(&self, partition: usize, raw: &RawRecords) -> Result<RecordBatch> {
        self.spec
            .decoder
            .decode(partition, raw, &self.on_error, &self.errors, &|o| {
                self.headers_of(partition, o)
            })
    }

    /// The headers of the record at `offset` (read again: only bad records need them).
    fn headers_of(&self, partition: usize, offset: i64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        if let Ok(part) = self.spec.topic.partition(partition as u32) {
            let _ = part.read(offset, 1, usize::MAX, |r| {
                if r.offset == offset {
                    out = r
                        .headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect();
                }
                false
            });
        }
        out
    }
}

impl LogReader {
    /// Read the next batch of raw records of partition `p`, or `None` when it is exhausted
    /// (bounded runs) or has nothing new (follow).
    fn read_raw(&mut self, p: usize) -> Result<Option<RawRecords>> {
        let part = self.spec.topic.partition(p as u32)?.clone();
        let (earliest, _) = part.offsets();
        if self.positions[p] < earliest {
            self.positions[p] = earliest;
        }
        let limit = match self.ends[p] {
            Some(end) => (end - self.positions[p]).max(0) as usize,
            None => usize::MAX,
        }
        .min(self.spec.batch_size);
        if limit == 0 {
            return Ok(None);
        }
        let mut raw = RawRecords::default();
        match part.read(self.positions[p], limit, usize::MAX, |r| {
            raw.push(r);
            true
        }) {
            Ok(next) => self.positions[p] = next,
            // Offsets that can't be read (damaged bytes quarantined, or a missing segment):
            // raised under on_error="raise" with everything that names them, otherwise
            // skipped and counted (dead-lettered as one record describing the gap).
            Err(riverbed_log::LogError::Gap(g)) => {
                let (from, to) = (g.from, g.to);
                let e = riverbed_log::LogError::Gap(g);
                let bad = BadRecord {
                    timestamp: 0,
                    topic: Some(self.spec.topic.name.to_string()),
                    partition: Some(p as i64),
                    offset: Some(from),
                    ..Default::default()
                };
                self.on_error.handle(bad, "read", StreamError::Log(e))?;
                self.errors
                    .fetch_add((to - from).max(0) as u64, Ordering::Relaxed);
                let to = match self.ends[p] {
                    Some(end) => to.min(end),
                    None => to,
                };
                self.positions[p] = to.max(self.positions[p]);
                // A gap is only reported before any record was read: go on after it.
                return self.read_raw(p);
            }
            Err(e) => return Err(e.into()),
        }
        Ok((!raw.is_empty()).then_some(raw))
    }

    /// One round over every partition: read each one's next batch, decode them in parallel
    /// (decoding dominates), and queue the results in partition order.
    fn fill(&mut self) -> Result<()> {
        let n = self.positions.len();
        let mut raws: Vec<(usize, RawRecords)> = Vec::new();
        let mut nexts: Vec<i64> = Vec::new();
        for k in 0..n {
            let p = (self.next + k) % n;
            if self.done[p] {
                continue;
            }
            match self.read_raw(p)? {
                Some(raw) => {
                    raws.push((p, raw));
                    nexts.push(self.positions[p]);
                }
                None if self.ends[p].is_some() => {
                    self.done[p] = true;
                    self.ready.push_back((Polled::PartitionDone(p), None));
                }
                None => {}
            }
        }
        self.next = (self.next + 1) % n.max(1);
        let this = &*self;
        let decoded: Vec<Result<RecordBatch>> = if raws.len() <= 1 {
            raws.iter().map(|(p, raw)| this.decode(*p, raw)).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = raws
                    .iter()
                    .map(|(p, raw)| s.spawn(move || this.decode(*p, raw)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|p| Err(StreamError::panicked("a decoder thread", p)))
                    })
                    .collect()
            })
        };
        for (((p, _), b), next) in raws.iter().zip(decoded).zip(nexts) {
            self.ready.push_back((Polled::Batch(*p, b?), Some(next)));
        }
        Ok(())
    }
}

impl LogReader {
    /// Read rounds until stopped, sending each round's batches; in follow mode wait for appends.
    fn run(mut self, tx: SyncSender<Msg>, stop: Arc<AtomicBool>) {
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if self.done.iter().all(|&d| d) {
                let _ = tx.send(Msg::Finished);
                return;
            }
            let notifier = self
                .spec
                .topic
                .partitions()
                .first()
                .map(|p| p.notifier().clone());
            let seen = notifier.as_ref().map_or(0, |n| n.seq());
            if let Err(e) = self.fill() {
                let _ = tx.send(Msg::Failed(e));
                return;
            }
            let items: Vec<(Polled, Option<i64>)> = self.ready.drain(..).collect();
            if items.is_empty() {
                if !self.follow {
                    let _ = tx.send(Msg::Finished);
                    return;
                }
                if let Some(n) = notifier {
                    n.wait_past(seen, Duration::from_millis(50));
                }
                continue;
            }
            if tx.send(Msg::Round(items)).is_err() {
                return;
            }
        }
    }
}

enum Msg {
    Round(Vec<(Polled, Option<i64>)>),
    Finished,
    Failed(StreamError),
}

/// A log topic as a source. A reader thread reads and decodes the next rounds (all partitions
/// in parallel) while the pipeline processes the current one.
pub struct LogSource {
    spec: LogSpec,
    follow: bool,
    rx: Receiver<Msg>,
    pending: VecDeque<(Polled, Option<i64>)>,
    /// Per partition: the offset after the last batch handed out.
    consumed: Vec<i64>,
    failed: Option<StreamError>,
    finished: bool,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
}

impl LogSource {
    fn new(
        spec: LogSpec,
        follow: bool,
        on_error: Arc<ErrorHandler>,
        start: Option<&[i64]>,
    ) -> LogSource {
        // Two rounds ahead at most: enough to overlap decoding with processing, bounded memory.
        let (tx, rx) = sync_channel(2);
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let reader = LogReader::new(spec.clone(), follow, on_error, errors.clone(), start);
        let consumed = reader.positions.clone();
        let s = stop.clone();
        let thread = format!("the reader thread of topic '{}'", spec.topic.name);
        let spawned = std::thread::Builder::new()
            .name(format!("riverbed-read-{}", spec.topic.name))
            .spawn(move || {
                // A panic (a bug) must not look like the end of the topic: say it instead.
                let failed = tx.clone();
                let run = std::panic::AssertUnwindSafe(|| reader.run(tx, s));
                if let Err(p) = std::panic::catch_unwind(run) {
                    let _ = failed.send(Msg::Failed(StreamError::panicked(thread, p)));
                }
            });
        let failed = spawned
            .err()
            .map(|e| StreamError::Internal(format!("cannot start the reader thread: {e}")));
        LogSource {
            spec,
            follow,
            rx,
            pending: VecDeque::new(),
            consumed,
            failed,
            finished: false,
            stop,
            errors,
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Round(items) => self.pending.extend(items),
            Msg::Finished => self.finished = true,
            Msg::Failed(e) => {
                self.failed = Some(e);
                self.finished = true;
            }
        }
    }
}

impl Drop for LogSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Source for LogSource {
    fn schema(&self) -> SchemaRef {
        self.spec.decoder.schema.clone()
    }
    fn partitions(&self) -> usize {
        self.spec.topic.num_partitions() as usize
    }
    fn poll(&mut self) -> Result<Polled> {
        loop {
            if let Some((item, next)) = self.pending.pop_front() {
                if let (Polled::Batch(p, _), Some(n)) = (&item, next) {
                    if let Some(c) = self.consumed.get_mut(*p) {
                        *c = n;
                    }
                }
                return Ok(item);
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if self.finished {
                return Ok(Polled::Done);
            }
            let msg = if self.follow {
                match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => return Ok(Polled::Idle),
                    Err(TryRecvError::Disconnected) => Msg::Finished,
                }
            } else {
                self.rx.recv().unwrap_or(Msg::Finished)
            };
            self.take(msg);
        }
    }
    fn wait(&mut self, timeout: Duration) {
        if self.pending.is_empty() && !self.finished {
            match self.rx.recv_timeout(timeout) {
                Ok(m) => self.take(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.finished = true,
            }
        }
    }
    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    fn caught_up(&self, partition: usize) -> bool {
        // Batches read ahead but not handed out yet count as unread.
        let Ok(part) = self.spec.topic.partition(partition as u32) else {
            return true;
        };
        self.consumed
            .get(partition)
            .is_none_or(|&c| c >= part.offsets().1)
    }
    fn positions(&self) -> Option<Vec<i64>> {
        Some(self.consumed.clone())
    }
    fn describe(&self) -> String {
        format!(
            "topic '{}' ({} partitions, {:?})",
            self.spec.topic.name,
            self.spec.topic.num_partitions(),
            self.spec.decoder.format
        )
    }
}
