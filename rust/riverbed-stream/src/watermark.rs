//! Event-time progress.
//!
//! - Per source partition, the watermark is max event time seen − lateness (or the watermark
//!   its source reports, for a repartition topic). The pipeline watermark is the minimum over
//!   active partitions; it never moves backwards.
//! - Lateness is judged per record, as Kafka Streams' stream time: the watermark a record meets
//!   is the one its own partition's earlier records left (`stream_times`), or the pipeline's if
//!   that is later (a window the pipeline closed stays closed). So results do not depend on how
//!   records were batched.
//! - A partition is idle when its reader has reached the partition's end and nothing new arrived
//!   for its source's `idle_timeout`; an idle partition stops holding the watermark back. When
//!   every input is idle, the watermark advances from (max event time seen − lateness) with the
//!   wall clock since the inputs went idle, so windows close on a quiet stream without closing
//!   the ones a live stream, continuing where it paused, still fills: a record after a pause is
//!   late only if the pause exceeded `idle_timeout` + lateness + the time from its event time to
//!   its window's end.
//! - The end of a bounded input moves it to +∞.

use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

/// The hidden column a source batch carries to the operators that judge lateness: per record,
/// the watermark its own partition's earlier records left. Row-preserving operators (filter,
/// projections) keep it; the graph takes it off before any other operator sees the batch.
pub const STREAM_TIME_COLUMN: &str = "__riverbed_stream_time";

/// The watermark each record of a batch meets: the operator's, or the stream time of the
/// record's own partition when that is later.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    wm: i64,
    stream: Option<&'a [i64]>,
}

impl<'a> Judge<'a> {
    pub fn new(wm: i64, stream: Option<&'a [i64]>) -> Self {
        Judge { wm, stream }
    }
    /// The watermark record `i` meets.
    #[inline]
    pub fn at(&self, i: usize) -> i64 {
        match self.stream {
            Some(s) => s.get(i).map_or(self.wm, |&t| t.max(self.wm)),
            None => self.wm,
        }
    }
}

/// An operator's next watermark: it never moves back (after a restore, what it closed stays
/// closed), except from +inf: the end-of-input flush of a bounded run is provisional, and a run
/// continuing from its checkpoint goes on from where the data was.
pub fn never_back(current: i64, next: i64) -> i64 {
    if current == i64::MAX {
        next
    } else {
        current.max(next)
    }
}

/// Append `stream` as the hidden stream-time column.
pub fn with_stream_times(batch: RecordBatch, stream: Int64Array) -> RecordBatch {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(STREAM_TIME_COLUMN, DataType::Int64, false));
    let mut cols = batch.columns().to_vec();
    cols.push(std::sync::Arc::new(stream));
    let schema = Schema::new(fields).with_metadata(schema.metadata().clone());
    // Same row count and a non-null column of the right type: this cannot fail.
    RecordBatch::try_new(std::sync::Arc::new(schema), cols).unwrap_or(batch)
}

/// Take the hidden stream-time column off a batch, if it has one.
pub fn split_stream_times(batch: RecordBatch) -> (RecordBatch, Option<Int64Array>) {
    let Ok(i) = batch.schema().index_of(STREAM_TIME_COLUMN) else {
        return (batch, None);
    };
    let mut batch = batch;
    let col = batch.remove_column(i);
    let times = col.as_any().downcast_ref::<Int64Array>().cloned();
    (batch, times)
}

#[derive(Debug, Clone)]
struct Part {
    max_ts: Option<i64>,
    /// A watermark the source reports itself (a repartition topic carries its writers'), used
    /// instead of `max_ts - lateness`.
    reported: Option<i64>,
    /// Every writer of the partition reported its input idle: the partition is idle too.
    writers_idle: bool,
    /// The source reports watermarks (see `Source::carries_watermarks`): no per-record stream
    /// time, also before its first report.
    carries_watermarks: bool,
    /// When a record last arrived.
    last_active: Instant,
    done: bool,
    lateness: i64,
    idle_timeout: Duration,
}

impl Part {
    fn own_watermark(&self) -> i64 {
        match self.reported {
            Some(r) => r,
            // Its records come from several writers, each at its own pace: their times say
            // nothing of what is still to come until every writer has said where it is.
            None if self.carries_watermarks => i64::MIN,
            None => self
                .max_ts
                .map_or(i64::MIN, |t| t.saturating_sub(self.lateness)),
        }
    }
}

#[derive(Debug, Default)]
pub struct WatermarkTracker {
    /// Per source: its partitions.
    parts: Vec<Vec<Part>>,
    /// Per source: its watermark so far (never moves backwards).
    current: Vec<i64>,
    /// Where a finished source's watermark ends (at least its data's): +inf when `None`.
    end: Option<i64>,
}

impl WatermarkTracker {
    pub fn new() -> Self {
        WatermarkTracker {
            parts: Vec::new(),
            current: Vec::new(),
            end: None,
        }
    }

    /// Make a finished source's watermark end at `end` (or its data's watermark, if later)
    /// instead of +inf.
    pub fn set_end(&mut self, end: Option<i64>) {
        self.end = end;
    }

    pub fn add_source(&mut self, partitions: usize, lateness: i64, idle_timeout: Duration) {
        let now = Instant::now();
        self.parts.push(
            (0..partitions.max(1))
                .map(|_| Part {
                    max_ts: None,
                    reported: None,
                    writers_idle: false,
                    carries_watermarks: false,
                    last_active: now,
                    done: false,
                    lateness,
                    idle_timeout,
                })
                .collect(),
        );
        self.current.push(i64::MIN);
    }

    /// Source `source` reports its partitions' watermarks (a repartition topic): its records
    /// get no per-record stream time (see `Source::carries_watermarks`).
    pub fn carries_watermarks(&mut self, source: usize) {
        if let Some(parts) = self.parts.get_mut(source) {
            for p in parts {
                p.carries_watermarks = true;
            }
        }
    }

    fn part(&self, source: usize, partition: usize) -> Option<&Part> {
        self.parts.get(source).and_then(|s| s.get(partition))
    }

    fn part_mut(&mut self, source: usize, partition: usize) -> Option<&mut Part> {
        self.parts
            .get_mut(source)
            .and_then(|s| s.get_mut(partition))
    }

    /// Per record of a batch about to be observed from `partition`: the watermark the records
    /// of its partition before it left (max event time so far − lateness). `None` where the
    /// source reports the partition's watermark itself (its records come from many writers).
    pub fn stream_times(&self, source: usize, partition: usize, ts: &[i64]) -> Option<Vec<i64>> {
        let p = self.part(source, partition)?;
        if p.reported.is_some() || p.carries_watermarks {
            return None;
        }
        let mut max = p.max_ts.unwrap_or(i64::MIN);
        Some(
            ts.iter()
                .map(|&t| {
                    let before = max.saturating_sub(p.lateness);
                    max = max.max(t);
                    before
                })
                .collect(),
        )
    }

    pub fn observe(&mut self, source: usize, partition: usize, max_ts: Option<i64>) {
        if let Some(p) = self.part_mut(source, partition) {
            p.last_active = Instant::now();
            if let Some(t) = max_ts {
                p.max_ts = Some(p.max_ts.map_or(t, |m| m.max(t)));
            }
        }
    }

    /// The source's own watermark for a partition (it never moves back), and whether all its
    /// writers' inputs are idle.
    pub fn report(&mut self, source: usize, partition: usize, wm: i64, idle: bool) {
        if let Some(p) = self.part_mut(source, partition) {
            p.reported = Some(p.reported.map_or(wm, |r| r.max(wm)));
            p.writers_idle = idle;
        }
    }

    /// Whether a partition holds the watermark back. A partition whose source reports its
    /// watermark is idle when its writers say so; any other when its reader is at its end
    /// (`caught_up`) and nothing arrived for `idle_timeout`.
    fn active(
        p: &Part,
        now: Instant,
        follow: bool,
        keep_done: bool,
        caught_up: impl FnOnce() -> bool,
    ) -> bool {
        (!p.done || keep_done)
            && (!follow
                || match p.reported {
                    Some(_) => !p.writers_idle,
                    // Its writers have not said where they are yet: it holds the watermark.
                    None if p.carries_watermarks => true,
                    None => now.duration_since(p.last_active) < p.idle_timeout || !caught_up(),
                })
    }

    /// Whether every partition is idle now (follow mode), which a repartition sink tells its
    /// readers.
    pub fn idle(&self, follow: bool, caught_up: impl Fn(usize, usize) -> bool) -> bool {
        let now = Instant::now();
        follow
            && self.parts.iter().flatten().next().is_some()
            && self.parts.iter().enumerate().all(|(s, parts)| {
                parts.iter().enumerate().all(|(i, p)| {
                    !p.done && !Self::active(p, now, follow, false, || caught_up(s, i))
                })
            })
    }

    pub fn finish_partition(&mut self, source: usize, partition: usize) {
        if let Some(p) = self.part_mut(source, partition) {
            p.done = true;
        }
    }

    /// Whether partition `partition` of `source` is all in.
    pub fn is_finished(&self, source: usize, partition: usize) -> bool {
        self.parts
            .get(source)
            .and_then(|s| s.get(partition))
            .is_some_and(|p| p.done)
    }

    pub fn finish_source(&mut self, source: usize) {
        if let Some(s) = self.parts.get_mut(source) {
            for p in s {
                p.done = true;
            }
        }
    }

    /// The largest event time seen per partition of `source` (for checkpoints).
    pub fn max_ts(&self, source: usize) -> Vec<Option<i64>> {
        self.parts
            .get(source)
            .map(|s| s.iter().map(|p| p.max_ts).collect())
            .unwrap_or_default()
    }

    /// Each source's watermark at its data, as if its input went on: where a task that read
    /// all its input stood before the end (+inf) moved it (it never moves back).
    pub fn at_data(&self) -> Vec<i64> {
        self.parts
            .iter()
            .zip(&self.current)
            .map(|(parts, &current)| {
                let w = parts
                    .iter()
                    .map(Part::own_watermark)
                    .min()
                    .unwrap_or(i64::MIN);
                if current == i64::MAX {
                    w
                } else {
                    w.max(current)
                }
            })
            .collect()
    }

    pub fn all_done(&self) -> bool {
        self.parts.iter().flatten().all(|p| p.done)
    }

    /// Where the watermark is when every input is quiet: (max event time seen − lateness)
    /// plus the wall-clock time since the inputs went idle (the last partition's `idle_timeout`
    /// after its last record). A reported watermark already advances with its writers' clocks.
    fn quiet_watermark(&self, now: Instant) -> i64 {
        let parts = || self.parts.iter().flatten();
        let quiet_since = parts()
            .map(|p| p.last_active + p.idle_timeout)
            .max()
            .unwrap_or(now)
            .min(now);
        let elapsed =
            i64::try_from(now.duration_since(quiet_since).as_millis()).unwrap_or(i64::MAX);
        parts()
            .map(|p| match p.reported {
                Some(r) => r,
                None if p.carries_watermarks => i64::MIN,
                None => p.max_ts.map_or(i64::MIN, |t| {
                    t.saturating_sub(p.lateness).saturating_add(elapsed)
                }),
            })
            .max()
            .unwrap_or(i64::MIN)
    }

    /// Each source's watermark now: the minimum over its active partitions. A source whose
    /// partitions are all idle follows the active ones; when every input is idle, every
    /// watermark advances with the wall clock (`quiet_watermark`); once every source is
    /// finished, they are all at +inf (or the end set by `set_end`).
    /// `follow` enables idleness; `caught_up(source, partition)` says whether a partition's
    /// reader is at its end. Never moves backwards.
    pub fn watermarks(
        &mut self,
        follow: bool,
        caught_up: impl Fn(usize, usize) -> bool,
    ) -> Vec<i64> {
        let now = Instant::now();
        // A finished partition keeps holding the watermark at its data until its source is
        // done: windows close as if it were still being read, so a bounded run closes nothing
        // before its end-of-input checkpoint that a rerun with more input would need open (and
        // a bounded run gives what a followed one does).
        let keep_done = true;
        let active: Vec<Vec<bool>> = self
            .parts
            .iter()
            .enumerate()
            .map(|(s, parts)| {
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Self::active(p, now, follow, keep_done, || caught_up(s, i)))
                    .collect()
            })
            .collect();
        let min_active = |s: usize| {
            self.parts[s]
                .iter()
                .zip(&active[s])
                .filter(|(_, a)| **a)
                .map(|(p, _)| p.own_watermark())
                .min()
        };
        let any_active = active.iter().flatten().any(|a| *a);
        let others = (0..self.parts.len())
            .filter_map(min_active)
            .min()
            .unwrap_or(i64::MIN);
        let quiet = (!any_active).then(|| self.quiet_watermark(now));
        // The same for a finished source: it holds the others back at its data until every
        // source is done (a union or join of a topic that got new records and one that did
        // not closes nothing the second's next records, read by a rerun, still need).
        let all_done = self.all_done();
        let mut next = Vec::with_capacity(self.parts.len());
        for (s, parts) in self.parts.iter().enumerate() {
            let wm = if all_done {
                match self.end {
                    None => i64::MAX,
                    Some(e) => parts
                        .iter()
                        .map(Part::own_watermark)
                        .min()
                        .unwrap_or(i64::MIN)
                        .max(e),
                }
            } else if let Some(w) = min_active(s) {
                w
            } else if any_active {
                others
            } else {
                quiet.unwrap_or(i64::MIN)
            };
            next.push(self.current[s].max(wm));
        }
        self.current = next;
        self.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_END: fn(usize, usize) -> bool = |_, _| true;

    #[test]
    fn a_reported_watermark_replaces_max_ts_minus_lateness_and_waits_for_idle_writers() {
        let mut t = WatermarkTracker::new();
        t.add_source(2, 100, Duration::from_millis(0));
        t.observe(0, 0, Some(5_000));
        t.observe(0, 1, Some(9_000));
        // Partition 0's writers say 1_000, whatever its records' times: it holds the watermark.
        t.report(0, 0, 1_000, false);
        t.report(0, 1, 8_000, false);
        // Reported partitions are not idle by the clock (idle_timeout 0 here).
        assert_eq!(t.watermarks(true, AT_END), vec![1_000]);
        // Never backwards.
        t.report(0, 0, 500, false);
        assert_eq!(t.watermarks(true, AT_END), vec![1_000]);
        t.report(0, 0, 4_000, false);
        assert_eq!(t.watermarks(true, AT_END), vec![4_000]);
        assert!(!t.idle(true, AT_END));
        // Every writer idle: the writers' own watermarks (which advance with their clocks) lead.
        t.report(0, 0, 4_000, true);
        t.report(0, 1, 8_000, true);
        assert!(t.idle(true, AT_END));
        assert_eq!(t.watermarks(true, AT_END), vec![8_000]);
    }

    #[test]
    fn at_data_is_where_a_finished_input_stood_before_its_end() {
        let mut t = WatermarkTracker::new();
        t.add_source(2, 10, Duration::from_millis(0));
        t.observe(0, 0, Some(500));
        t.observe(0, 1, Some(300));
        assert_eq!(t.watermarks(false, AT_END), vec![290]);
        t.finish_source(0);
        assert_eq!(t.watermarks(false, AT_END), vec![i64::MAX]);
        assert_eq!(t.at_data(), vec![290]);
        // A task restored from a checkpoint that reads nothing new: from the times it restored.
        let mut r = WatermarkTracker::new();
        r.add_source(1, 10, Duration::from_millis(0));
        r.add_source(1, 10, Duration::from_millis(0));
        r.observe(0, 0, Some(700));
        r.finish_source(0);
        r.finish_source(1);
        assert_eq!(r.watermarks(false, AT_END), vec![i64::MAX, i64::MAX]);
        // A partition that never had a record holds its source where nothing is known.
        assert_eq!(r.at_data(), vec![690, i64::MIN]);
    }

    #[test]
    fn a_source_carrying_watermarks_holds_until_its_first_report() {
        // A repartition topic's partition: records of a fast writer come first; a slow writer's
        // earlier records follow. Their times must not move the watermark (the slow writer's
        // would be late): only the writers' reports do.
        for follow in [false, true] {
            let mut t = WatermarkTracker::new();
            t.add_source(1, 0, Duration::from_millis(0));
            t.carries_watermarks(0);
            t.observe(0, 0, Some(9_000));
            assert_eq!(
                t.watermarks(follow, AT_END),
                vec![i64::MIN],
                "follow={follow}"
            );
            t.report(0, 0, 2_000, false);
            assert_eq!(t.watermarks(follow, AT_END), vec![2_000], "follow={follow}");
        }
        // Following, a partition no writer has reported to yet is not idle by the clock: it
        // holds back the partitions that have reports.
        let mut t = WatermarkTracker::new();
        t.add_source(2, 0, Duration::from_millis(0));
        t.carries_watermarks(0);
        t.report(0, 1, 5_000, false);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.watermarks(true, AT_END), vec![i64::MIN]);
    }

    #[test]
    fn stream_times_are_the_running_max_before_each_record_minus_lateness() {
        let mut t = WatermarkTracker::new();
        t.add_source(2, 10, Duration::from_secs(60));
        assert_eq!(
            t.stream_times(0, 0, &[100, 50, 130, 120]),
            Some(vec![i64::MIN, 90, 90, 120])
        );
        t.observe(0, 0, Some(130));
        // The next batch of the same partition goes on from there; the other starts afresh.
        assert_eq!(t.stream_times(0, 0, &[10, 200]), Some(vec![120, 120]));
        assert_eq!(t.stream_times(0, 1, &[10]), Some(vec![i64::MIN]));
        t.report(0, 1, 5, false);
        assert_eq!(t.stream_times(0, 1, &[10]), None);
        // a source that carries its writers' watermarks: none before its first report either
        t.add_source(1, 10, Duration::from_secs(60));
        t.carries_watermarks(1);
        assert_eq!(t.stream_times(1, 0, &[100, 50]), None);
    }

    #[test]
    fn a_finished_source_holds_the_others_until_every_source_is_done() {
        // Source 1 (nothing new since the last run) ended at 1_500; source 0 reads on to 2_500.
        let mut t = WatermarkTracker::new();
        t.add_source(1, 0, Duration::from_secs(60));
        t.add_source(1, 0, Duration::from_secs(60));
        t.observe(1, 0, Some(1_500));
        t.finish_source(1);
        t.observe(0, 0, Some(2_500));
        // Source 1 holds at its data, not +inf (a rerun's next records of it may fall after
        // 1_500): an operator joining the two stays at 1_500.
        assert_eq!(t.watermarks(false, AT_END), vec![2_500, 1_500]);
        t.finish_source(0);
        assert_eq!(t.watermarks(false, AT_END), vec![i64::MAX, i64::MAX]);
    }

    #[test]
    fn a_partition_whose_reader_is_behind_is_never_idle() {
        let mut t = WatermarkTracker::new();
        t.add_source(2, 0, Duration::from_millis(0));
        t.observe(0, 0, Some(1_000));
        t.observe(0, 1, Some(5_000));
        // Partition 0 has unread records: it holds the watermark however long it was quiet.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.watermarks(true, |_, p| p != 0), vec![1_000]);
        assert!(!t.idle(true, |_, p| p != 0));
    }

    #[test]
    fn when_every_input_is_quiet_the_watermark_advances_with_the_wall_clock() {
        let mut t = WatermarkTracker::new();
        // Idle at once (idle_timeout 0), so the quiet starts with the last record.
        t.add_source(1, 200, Duration::from_millis(0));
        let quiet = Instant::now();
        t.observe(0, 0, Some(10_000));
        std::thread::sleep(Duration::from_millis(60));
        let wm = t.watermarks(true, AT_END)[0];
        let elapsed = quiet.elapsed().as_millis() as i64;
        // From 10_000 - 200 by the time elapsed since the last record, not past every window.
        assert!((9_800 + 60..=9_800 + elapsed).contains(&wm), "{wm}");
        std::thread::sleep(Duration::from_millis(40));
        let later = t.watermarks(true, AT_END)[0];
        assert!(later >= wm + 40, "{later} after {wm}");
        // A record whose event time moved on by the pause (minus lateness) meets a watermark
        // at or before it: it is not late.
        let pause = quiet.elapsed().as_millis() as i64;
        let next = 10_000 + pause;
        assert!(later < next, "{later} vs {next}");
        t.observe(0, 0, Some(next));
        assert_eq!(t.stream_times(0, 0, &[next + 1]), Some(vec![next - 200]));
        // Not idle any more (idle_timeout 0 means idle at once, so use a long one to check).
        let mut t2 = WatermarkTracker::new();
        t2.add_source(1, 0, Duration::from_secs(60));
        t2.observe(0, 0, Some(10_000));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t2.watermarks(true, AT_END), vec![10_000]);
    }

    #[test]
    fn the_quiet_is_counted_from_when_the_inputs_went_idle() {
        let mut t = WatermarkTracker::new();
        t.add_source(1, 0, Duration::from_millis(80));
        let t0 = Instant::now();
        t.observe(0, 0, Some(5_000));
        std::thread::sleep(Duration::from_millis(50));
        // Not idle yet: the partition's own watermark.
        assert_eq!(t.watermarks(true, AT_END), vec![5_000]);
        std::thread::sleep(Duration::from_millis(60));
        // Idle since 80 ms after the record: advanced by the ~30 ms since, not by 110.
        let wm = t.watermarks(true, AT_END)[0];
        let upper = 5_000 + t0.elapsed().as_millis() as i64 - 80;
        assert!((5_030..=upper).contains(&wm), "{wm} not in 5030..={upper}");
    }
}
