//! Event-time progress: watermark per source partition = max event time seen − lateness; the
//! pipeline watermark is the minimum over active partitions. A partition idle for its source's
//! `idle_timeout` stops holding it back; when every input is idle the watermark jumps past every
//! window holding data (`horizon`), so windows close on a quiet stream. The end of a bounded input
//! moves it to +∞.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Part {
    max_ts: Option<i64>,
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
        let active = |p: &Part| {
            (!p.done || keep_done)
                && (!follow || now.duration_since(p.last_active) < p.idle_timeout)
        };
        let part_wm = |p: &Part| p.max_ts.map_or(i64::MIN, |t| t.saturating_sub(p.lateness));
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
