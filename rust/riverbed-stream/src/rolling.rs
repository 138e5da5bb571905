//! One key's trailing window for `rolling(...)`, kept incrementally: each record is added once
//! and removed once, so an aggregate costs O(1) amortised per record whatever the window size.
//!
//! count/sum/mean use a compensated (Neumaier) running sum; var/std Welford's update and its
//! inverse; min/max monotonic deques; first/last a deque of the non-null values. Nulls count as
//! rows of a row window but are skipped by every aggregate, as in pandas.

use std::collections::VecDeque;

use crate::expr::AggFunc;

#[derive(Debug, Clone, Default)]
pub struct RollingWindow {
    /// Every record in the window: (event time, value), oldest first.
    window: VecDeque<(i64, Option<f64>)>,
    /// Position (number of records ever pushed) of the window's front.
    front: u64,
    n: usize,
    sum: f64,
    comp: f64,
    mean: f64,
    m2: f64,
    /// How many of the newest non-null values are equal (all of them: the variance is exactly 0).
    same: usize,
    last: Option<f64>,
    /// Keep the min/max candidates; keep the non-null values (first/last/count_distinct).
    track_extremes: bool,
    track_values: bool,
    /// (position, value) candidates for the minimum / maximum, and the non-null values.
    mins: VecDeque<(u64, f64)>,
    maxs: VecDeque<(u64, f64)>,
    values: VecDeque<(u64, f64)>,
}

impl RollingWindow {
    /// The window's state (for checkpoints); the template's tracking flags are not written.
    pub fn snapshot(&self, w: &mut crate::state::StateWriter) {
        w.len(self.window.len());
        for &(t, v) in &self.window {
            w.i64(t);
            w.opt_f64(v);
        }
        w.u64(self.front);
        w.len(self.n);
        for x in [self.sum, self.comp, self.mean, self.m2] {
            w.f64(x);
        }
        w.len(self.same);
        w.opt_f64(self.last);
        for q in [&self.mins, &self.maxs, &self.values] {
            w.len(q.len());
            for &(p, x) in q {
                w.u64(p);
                w.f64(x);
            }
        }
    }

    /// Load a snapshot into a window made from the same template.
    pub fn restore(&mut self, r: &mut crate::state::StateReader<'_>) -> crate::error::Result<()> {
        let n = r.len()?;
        self.window = (0..n)
            .map(|_| Ok((r.i64()?, r.opt_f64()?)))
            .collect::<crate::error::Result<_>>()?;
        self.front = r.u64()?;
        self.n = r.len()?;
        self.sum = r.f64()?;
        self.comp = r.f64()?;
        self.mean = r.f64()?;
        self.m2 = r.f64()?;
        self.same = r.len()?;
        self.last = r.opt_f64()?;
        for q in [&mut self.mins, &mut self.maxs, &mut self.values] {
            let n = r.len()?;
            *q = (0..n)
                .map(|_| Ok((r.u64()?, r.f64()?)))
                .collect::<crate::error::Result<_>>()?;
        }
        Ok(())
    }

    /// A window for these aggregates (count, sum, mean, std and var need no more than sums).
    pub fn for_funcs(funcs: &[AggFunc]) -> RollingWindow {
        RollingWindow {
            track_extremes: funcs
                .iter()
                .any(|f| matches!(f, AggFunc::Min | AggFunc::Max)),
            track_values: funcs
                .iter()
                .any(|f| matches!(f, AggFunc::First | AggFunc::Last | AggFunc::CountDistinct)),
            ..Default::default()
        }
    }

    fn neumaier(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    #[inline]
    fn push(&mut self, ts: i64, v: Option<f64>) {
        let pos = self.front + self.window.len() as u64;
        self.window.push_back((ts, v));
        let Some(x) = v else { return };
        self.n += 1;
        self.neumaier(x);
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.same = if self.last == Some(x) {
            self.same + 1
        } else {
            1
        };
        self.last = Some(x);
        if self.track_extremes {
            while self.mins.back().is_some_and(|&(_, m)| m >= x) {
                self.mins.pop_back();
            }
            self.mins.push_back((pos, x));
            while self.maxs.back().is_some_and(|&(_, m)| m <= x) {
                self.maxs.pop_back();
            }
            self.maxs.push_back((pos, x));
        }
        if self.track_values {
            self.values.push_back((pos, x));
        }
    }

    #[inline]
    fn pop(&mut self) {
        let Some((_, v)) = self.window.pop_front() else {
            return;
        };
        let pos = self.front;
        self.front += 1;
        let Some(x) = v else { return };
        self.n -= 1;
        self.same = self.same.min(self.n);
        if self.n == 0 {
            (self.sum, self.comp, self.mean, self.m2) = (0.0, 0.0, 0.0, 0.0);
            self.last = None;
        } else {
            self.neumaier(-x);
            let d = x - self.mean;
            self.mean -= d / self.n as f64;
            self.m2 = (self.m2 - d * (x - self.mean)).max(0.0);
        }
        if self.track_extremes || self.track_values {
            for q in [&mut self.mins, &mut self.maxs, &mut self.values] {
                if q.front().is_some_and(|&(p, _)| p == pos) {
                    q.pop_front();
                }
            }
        }
    }

    /// Add the record at `ts` and drop what falls out: records at or before `ts - period`, or
    /// beyond the last `rows`.
    #[inline]
    pub fn advance(&mut self, ts: i64, v: Option<f64>, period: Option<i64>, rows: Option<usize>) {
        self.push(ts, v);
        if let Some(p) = period {
            while self.window.front().is_some_and(|&(t, _)| t <= ts - p) {
                self.pop();
            }
        }
        if let Some(r) = rows {
            while self.window.len() > r {
                self.pop();
            }
        }
    }

    /// The aggregate over the window; `need` non-null values at least (std/var: two).
    #[inline]
    pub fn value(&self, func: AggFunc, need: usize) -> Option<f64> {
        let n = self.n;
        if func == AggFunc::Count {
            return Some(n as f64);
        }
        let need = match func {
            AggFunc::Std | AggFunc::Var => need.max(2),
            _ => need.max(1),
        };
        if n < need {
            return None;
        }
        Some(match func {
            AggFunc::Sum => self.sum + self.comp,
            AggFunc::Mean => (self.sum + self.comp) / n as f64,
            AggFunc::Min => self.mins.front()?.1,
            AggFunc::Max => self.maxs.front()?.1,
            AggFunc::First => self.values.front()?.1,
            AggFunc::Last => self.values.back()?.1,
            AggFunc::Var | AggFunc::Std if self.same >= n => 0.0,
            AggFunc::Var => self.m2 / (n - 1) as f64,
            AggFunc::Std => (self.m2 / (n - 1) as f64).sqrt(),
            AggFunc::Count | AggFunc::CountDistinct => {
                let mut d: Vec<u64> = self.values.iter().map(|v| v.1.to_bits()).collect();
                d.sort_unstable();
                d.dedup();
                d.len() as f64
            }
        })
    }
}
