//! Event-time progress: watermark per source partition = max event time seen − lateness; the
//! pipeline watermark is the minimum over active partitions. A partition idle for its source's
//! `idle_timeout` stops holding it back; when every input is idle the watermark jumps past every
//! window holding data (`horizon`), so windows close on a quiet stream. The end of a bounded input
//! moves it to +∞.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Part {
    max_ts: Option<i64>,
    /// A watermark the source reports itself (a repartition topic carries its writers'), used
    /// instead of `max_ts - lateness`.
    reported: Option<i64>,
    /// Every writer of the partition reported its input idle: the partition is idle too.
    writers_idle: bool,
    last_active: Instant,
    done: bool,
    lateness: i64,
    idle_timeout: Duration,
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
                    last_active: now,
                    done: false,
                    lateness,
                    idle_timeout,
                })
                .collect(),
        );
        self.current.push(i64::MIN);
    }

    pub fn observe(&mut self, source: usize, partition: usize, max_ts: Option<i64>) {
        if let Some(p) = self
            .parts
            .get_mut(source)
            .and_then(|s| s.get_mut(partition))
        {
            p.last_active = Instant::now();
            if let Some(t) = max_ts {
                p.max_ts = Some(p.max_ts.map_or(t, |m| m.max(t)));
            }
        }
    }

    /// The source's own watermark for a partition (it never moves back), and whether all its
    /// writers' inputs are idle.
    pub fn report(&mut self, source: usize, partition: usize, wm: i64, idle: bool) {
        if let Some(p) = self
            .parts
            .get_mut(source)
            .and_then(|s| s.get_mut(partition))
        {
            p.reported = Some(p.reported.map_or(wm, |r| r.max(wm)));
            p.writers_idle = idle;
        }
    }

    fn active(p: &Part, now: Instant, follow: bool, keep_done: bool) -> bool {
        // A partition whose source reports its watermark is idle when its writers say so.
        (!p.done || keep_done)
            && (!follow
                || match p.reported {
                    Some(_) => !p.writers_idle,
                    None => now.duration_since(p.last_active) < p.idle_timeout,
                })
    }

    /// Whether every partition is idle now (follow mode): the watermark is a flush past every
    /// record seen, which a repartition sink tells its readers.
    pub fn idle(&self, follow: bool) -> bool {
        let now = Instant::now();
        let parts: Vec<&Part> = self.parts.iter().flatten().collect();
        follow
            && !parts.is_empty()
            && parts
                .iter()
                .all(|p| !p.done && !Self::active(p, now, follow, false))
    }

    pub fn finish_partition(&mut self, source: usize, partition: usize) {
        if let Some(p) = self
            .parts
            .get_mut(source)
            .and_then(|s| s.get_mut(partition))
        {
            p.done = true;
        }
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

    pub fn all_done(&self) -> bool {
        self.parts.iter().flatten().all(|p| p.done)
    }

    /// Each source's watermark now: the minimum over its active partitions. A source whose
    /// partitions are all idle follows the active ones; when every input is idle, every
    /// watermark jumps past what holds data; a finished source is at +inf. `follow` enables
    /// idleness. Never moves backwards.
    pub fn watermarks(&mut self, follow: bool, horizon: i64) -> Vec<i64> {
        let now = Instant::now();
        // With an end watermark (a test driver's), a finished partition keeps holding the
        // watermark at its data until every partition is done: the end replaces +inf only.
        let keep_done = self.end.is_some();
        let active = |p: &Part| Self::active(p, now, follow, keep_done);
        let part_wm = |p: &Part| match p.reported {
            Some(r) => r,
            None => p.max_ts.map_or(i64::MIN, |t| t.saturating_sub(p.lateness)),
        };
        let any_active = self.parts.iter().flatten().any(active);
        let others = self
            .parts
            .iter()
            .flatten()
            .filter(|p| active(p))
            .map(part_wm)
            .min()
            .unwrap_or(i64::MIN);
        // Every input is quiet: nothing more is expected (not even within lateness), so the
        // watermark passes every record seen and every window holding data.
        let flush = || {
            self.parts
                .iter()
                .flatten()
                .filter_map(|p| p.max_ts)
                .max()
                .map_or(i64::MIN, |t| t.saturating_add(horizon))
        };
        for (s, parts) in self.parts.iter().enumerate() {
            let wm = if parts.iter().all(|p| p.done) {
                match self.end {
                    None => i64::MAX,
                    Some(e) => parts.iter().map(part_wm).min().unwrap_or(i64::MIN).max(e),
                }
            } else if parts.iter().any(active) {
                parts
                    .iter()
                    .filter(|p| active(p))
                    .map(part_wm)
                    .min()
                    .unwrap_or(i64::MIN)
            } else if any_active {
                others
            } else {
                flush()
            };
            self.current[s] = self.current[s].max(wm);
        }
        self.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(t.watermarks(true, 10), vec![1_000]);
        // Never backwards.
        t.report(0, 0, 500, false);
        assert_eq!(t.watermarks(true, 10), vec![1_000]);
        t.report(0, 0, 4_000, false);
        assert_eq!(t.watermarks(true, 10), vec![4_000]);
        assert!(!t.idle(true));
        // Every writer idle: the flush passes every record seen plus the horizon.
        t.report(0, 0, 4_000, true);
        t.report(0, 1, 8_000, true);
        assert!(t.idle(true));
        assert_eq!(t.watermarks(true, 10), vec![9_010]);
    }
}
