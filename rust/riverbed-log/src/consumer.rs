//! A consumer of one topic: standalone (all partitions, positions kept locally) or a member of a
//! consumer group (partitions assigned by the group coordinator, positions committed durably).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::log::Log;
use crate::record_sink::RecordSink;
use crate::start_spec::StartSpec;
use crate::topic::Topic;

#[derive(Debug)]
pub struct Consumer {
    log: Log,
    topic: Arc<Topic>,
    group: Option<(String, u64)>,
    start: StartSpec,
    /// Standalone consumers: every partition's position.
    local: Mutex<BTreeMap<u32, Option<i64>>>,
    /// Serialises polls; also the round-robin cursor over partitions.
    poll_lock: Mutex<usize>,
    closed: std::sync::atomic::AtomicBool,
}

impl Consumer {
    pub fn new(
        log: &Log,
        topic: Arc<Topic>,
        group: Option<&str>,
        start: StartSpec,
    ) -> Result<Consumer> {
        let group = match group {
            Some(g) => {
                if g.is_empty() {
                    return Err(LogError::InvalidArgument(
                        "group name must not be empty".into(),
                    ));
                }
                let id = log.inner().groups.join(log, g, topic.clone())?;
                Some((g.to_string(), id))
            }
            None => None,
        };
        let local = (0..topic.num_partitions()).map(|p| (p, None)).collect();
        let c = Consumer {
            log: log.clone(),
            topic,
            group,
            start,
            local: Mutex::new(local),
            poll_lock: Mutex::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        if c.group.is_none() {
            // Resolve now so a bad start offset fails at creation.
            c.resolved_assignment()?;
        }
        Ok(c)
    }

    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_ref().map(|(g, _)| g.as_str())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(LogError::InvalidArgument("the consumer is closed".into()));
        }
        if self.log.is_closed() {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn start_offset(&self, partition: u32, spec: StartSpec) -> Result<i64> {
        self.topic.resolve(partition, spec)
    }

    /// Current generation and the position of every assigned partition, resolving unknown ones
    /// from the committed offset or the start spec, and moving positions that retention
    /// removed to the earliest offset.
    fn resolved_assignment(&self) -> Result<(u64, Vec<(u32, i64)>)> {
        let (generation, raw) = match &self.group {
            Some((g, id)) => {
                let a = self.log.inner().groups.assignment(g, *id)?;
                (a.generation, a.positions)
            }
            None => (0, self.local.lock().iter().map(|(&p, &o)| (p, o)).collect()),
        };
        let mut out = Vec::with_capacity(raw.len());
        for (p, pos) in raw {
            let committed = self
                .group
                .as_ref()
                .and_then(|(g, _)| self.log.inner().groups.committed(g, &self.topic.name, p));
            let (earliest, latest) = self.topic.partition(p)?.offsets();
            let pos = match pos.or(committed) {
                Some(o) if o < earliest => earliest,
                // Recovery or `truncate_to` cut the log below the position: continue at the end.
                Some(o) if o > latest => latest,
                Some(o) => o,
                None => self.start_offset(p, self.start)?,
            };
            out.push((p, pos));
        }
        Ok((generation, out))
    }

    fn store_positions(&self, generation: u64, positions: &[(u32, i64)]) -> bool {
        match &self.group {
            Some((g, id)) => self
                .log
                .inner()
                .groups
                .update_positions(g, *id, generation, positions),
            None => {
                let mut local = self.local.lock();
                for &(p, o) in positions {
                    local.insert(p, Some(o));
                }
                true
            }
        }
    }

    /// Fill `sink` with up to `max_records` records from the assigned partitions, waiting up to
    /// `timeout` for new ones if there are none. Partitions are served round-robin.
    pub fn poll(
        &self,
        max_records: usize,
        timeout: Duration,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut rr = self.poll_lock.lock();
        loop {
            self.check_open()?;
            let seen = self.log.notifier().seq();
            let (generation, positions) = self.resolved_assignment()?;
            sink.clear();
            let n = positions.len();
            let mut new_positions = Vec::with_capacity(n);
            for k in 0..n {
                let (p, pos) = positions[(*rr + k) % n];
                let remaining = max_records.saturating_sub(sink.len());
                if remaining == 0 {
                    new_positions.push((p, pos));
                    continue;
                }
                let next = match self
                    .topic
                    .partition(p)?
                    .read(pos, remaining, usize::MAX, |r| {
                        sink.push(p, r);
                        true
                    }) {
                    Ok(next) => next,
                    // Retention or a truncation moved a bound since the position was resolved;
                    // the next round resolves it again.
                    Err(LogError::OffsetOutOfRange { .. }) => pos,
                    Err(e) => return Err(e),
                };
                new_positions.push((p, next));
            }
            *rr = rr.wrapping_add(1);
            if !self.store_positions(generation, &new_positions) {
                continue; // rebalanced meanwhile: the records may belong to another member now
            }
            if !sink.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            self.log.notifier().wait_past(seen, deadline - now);
        }
    }

    /// Positions of the assigned partitions (next offset each would read).
    pub fn position(&self) -> Result<BTreeMap<u32, i64>> {
        let (generation, positions) = self.resolved_assignment()?;
        self.store_positions(generation, &positions);
        Ok(positions.into_iter().collect())
    }

    pub fn assignment(&self) -> Result<Vec<u32>> {
        Ok(self
            .resolved_assignment()?
            .1
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// Commit the current positions of the assigned partitions (group consumers only).
    pub fn commit(&self) -> Result<()> {
        let Some((g, _)) = &self.group else {
            return Err(LogError::InvalidArgument(
                "commit() needs a consumer created with a group".into(),
            ));
        };
        let positions: Vec<(u32, i64)> = self.position()?.into_iter().collect();
        self.log
            .inner()
            .groups
            .commit(&self.log, g, &self.topic.name, &positions)
    }

    /// Committed offsets of the group for every partition of the topic.
    pub fn committed(&self) -> Result<BTreeMap<u32, Option<i64>>> {
        let Some((g, _)) = &self.group else {
            return Err(LogError::InvalidArgument(
                "committed() needs a consumer created with a group".into(),
            ));
        };
        Ok((0..self.topic.num_partitions())
            .map(|p| (p, self.log.inner().groups.committed(g, &self.topic.name, p)))
            .collect())
    }

    /// Move one assigned partition to `offset` (within [earliest, latest]).
    pub fn seek(&self, partition: u32, offset: i64) -> Result<()> {
        self.check_open()?;
        let _poll = self.poll_lock.lock();
        let o = self.start_offset(partition, StartSpec::Offset(offset))?;
        self.set_position(partition, o)
    }

    /// Move every assigned partition to the earliest offset with timestamp >= `ts`.
    pub fn seek_to_time(&self, ts: i64) -> Result<()> {
        self.check_open()?;
        let _poll = self.poll_lock.lock();
        for p in self.assignment()? {
            let o = self.start_offset(p, StartSpec::Time(ts))?;
            self.set_position(p, o)?;
        }
        Ok(())
    }

    fn set_position(&self, partition: u32, offset: i64) -> Result<()> {
        loop {
            let (generation, positions) = self.resolved_assignment()?;
            if !positions.iter().any(|&(p, _)| p == partition) {
                return Err(LogError::InvalidArgument(format!(
                    "partition {partition} of '{}' is not assigned to this consumer",
                    self.topic.name
                )));
            }
            if self.store_positions(generation, &[(partition, offset)]) {
                return Ok(());
            }
        }
    }

    /// Leave the group (committing positions, as Kafka's auto-commit does on close). Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        if let Some((g, id)) = &self.group {
            self.log.inner().groups.leave(&self.log, g, *id)?;
        }
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
