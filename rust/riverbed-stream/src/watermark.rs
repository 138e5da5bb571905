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
    current: i64,
}

impl WatermarkTracker {
    pub fn new() -> Self {
        WatermarkTracker {
            parts: Vec::new(),
            current: i64::MIN,
        }
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

    pub fn all_done(&self) -> bool {
        self.parts.iter().flatten().all(|p| p.done)
    }

    /// The pipeline watermark now; never moves backwards. `follow` enables idleness.
    pub fn watermark(&mut self, follow: bool, horizon: i64) -> i64 {
        let now = Instant::now();
        let live: Vec<&Part> = self.parts.iter().flatten().filter(|p| !p.done).collect();
        let wm = if live.is_empty() {
            i64::MAX
        } else {
            let active: Vec<&&Part> = live
                .iter()
                .filter(|p| !follow || now.duration_since(p.last_active) < p.idle_timeout)
                .collect();
            if active.is_empty() {
                // Every input is quiet: close every window holding data.
                self.parts
                    .iter()
                    .flatten()
                    .filter_map(|p| p.max_ts.map(|t| t.saturating_sub(p.lateness)))
                    .max()
                    .map_or(i64::MIN, |t| t.saturating_add(horizon))
            } else {
                active
                    .iter()
                    .map(|p| p.max_ts.map_or(i64::MIN, |t| t.saturating_sub(p.lateness)))
                    .min()
                    .unwrap_or(i64::MIN)
            }
        };
        self.current = self.current.max(wm);
        self.current
    }
}
