//! Records held per key until the watermark passes them (count and sliding windows, time-series
//! operators): where each record is (batch, row), its event time and arrival sequence, and the
//! per-batch payload its operator keeps, released once no held record needs it.

use crate::error::Result;
use crate::keys::FastMap;

/// A held record: event time, arrival sequence, and where its data is.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub ts: i64,
    pub seq: u64,
    pub batch: u32,
    pub row: u32,
}

pub struct HeldRecords<P> {
    /// Per key id (ids are dense): its held records.
    by_key: Vec<Vec<Held>>,
    /// Keys with held records (each once).
    active: Vec<u32>,
    /// Per key id: its list is out of (event time, arrival) order since the last sort.
    unsorted: Vec<bool>,
    /// Records held now.
    count: usize,
    /// Payload of each batch with held records, and how many of its records are still held.
    batches: FastMap<u32, (P, usize)>,
    next_batch: u32,
    seq: u64,
}

impl<P> Default for HeldRecords<P> {
    fn default() -> Self {
        HeldRecords {
            by_key: Vec::new(),
            active: Vec::new(),
            unsorted: Vec::new(),
            count: 0,
            batches: FastMap::default(),
            next_batch: 0,
            seq: 0,
        }
    }
}

impl<P> HeldRecords<P> {
    /// Hold every row of a batch (`keys`, `ts` per row) for which `late` is false; returns the
    /// late rows. The payload is kept while any of the batch's rows is held.
    pub fn hold(
        &mut self,
        keys: &[u32],
        ts: &[i64],
        late: impl Fn(usize, i64) -> bool,
        payload: P,
    ) -> Vec<u32> {
        let b = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        let mut live = 0;
        let mut late_rows = Vec::new();
        for (i, (&k, &t)) in keys.iter().zip(ts).enumerate() {
            if late(i, t) {
                late_rows.push(i as u32);
                continue;
            }
            let ki = k as usize;
            if ki >= self.by_key.len() {
                self.by_key.resize_with(ki + 1, Vec::new);
                self.unsorted.resize(ki + 1, false);
            }
            let list = &mut self.by_key[ki];
            if list.is_empty() {
                self.active.push(k);
            }
            let h = Held {
                ts: t,
                seq: self.seq,
                batch: b,
                row: i as u32,
            };
            // Keep the list in (ts, arrival) order as it grows: a record a little out of order
            // moves back a few places; one far out of order leaves the list to be sorted.
            let mut pos = list.len();
            while pos > 0 && list[pos - 1].ts > t && list.len() - pos < 16 {
                pos -= 1;
            }
            if pos > 0 && list[pos - 1].ts > t {
                self.unsorted[ki] = true;
                list.push(h);
            } else {
                list.insert(pos, h);
            }
            self.seq += 1;
            live += 1;
        }
        self.count += live;
        if live > 0 {
            self.batches.insert(b, (payload, live));
        }
        late_rows
    }

    fn sort_key(&mut self, k: u32) {
        let ki = k as usize;
        if self.unsorted[ki] {
            // (ts, seq) is unique: an unstable sort gives the one order, without a buffer.
            self.by_key[ki].sort_unstable_by_key(|h| (h.ts, h.seq));
            self.unsorted[ki] = false;
        }
    }

    /// Hand each key's held records to `f`, sorted by (event time, arrival); `f` returns how
    /// many leading records it is done with. Those stop being held and are returned (with their
    /// keys), grouped by key; their payloads stay until `release` is called with them.
    pub fn drain_sorted(
        &mut self,
        f: impl FnMut(u32, &[Held], &Self) -> Result<usize>,
    ) -> Result<Vec<(u32, Held)>> {
        let mut out = Vec::new();
        self.drain_sorted_into(&mut out, f)?;
        Ok(out)
    }

    /// `drain_sorted` appending to `out` (a buffer kept from step to step).
    pub fn drain_sorted_into(
        &mut self,
        out: &mut Vec<(u32, Held)>,
        mut f: impl FnMut(u32, &[Held], &Self) -> Result<usize>,
    ) -> Result<()> {
        let active = std::mem::take(&mut self.active);
        let mut still = Vec::with_capacity(active.len());
        let mut failed = None;
        for &k in &active {
            if failed.is_some() {
                still.push(k);
                continue;
            }
            self.sort_key(k);
            let list = std::mem::take(&mut self.by_key[k as usize]);
            let done = match f(k, &list, self) {
                Ok(d) => d.min(list.len()),
                Err(e) => {
                    failed = Some(e);
                    0
                }
            };
            out.extend(list[..done].iter().map(|&h| (k, h)));
            self.count -= done;
            let mut list = list;
            list.drain(..done);
            if !list.is_empty() {
                still.push(k);
            }
            self.by_key[k as usize] = list;
        }
        self.active = still;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drop the payload references of records that are no longer held.
    pub fn release<'a>(&mut self, done: impl IntoIterator<Item = &'a Held>) {
        for h in done {
            if let Some(e) = self.batches.get_mut(&h.batch) {
                e.1 -= 1;
                if e.1 == 0 {
                    self.batches.remove(&h.batch);
                }
            }
        }
    }

    /// The payloads of the batches `ids` name, each once, appended to `refs`; returns where in
    /// `refs` each batch id's payload is (for gathering rows across held batches).
    pub fn payload_slots<'a>(
        &'a self,
        ids: impl IntoIterator<Item = u32>,
        refs: &mut Vec<&'a P>,
    ) -> FastMap<u32, usize> {
        let mut slot = FastMap::default();
        let mut last = None;
        for b in ids {
            // Runs of one batch are the rule (a key's records from one batch): look up each once.
            if last == Some(b) {
                continue;
            }
            last = Some(b);
            if let std::collections::hash_map::Entry::Vacant(e) = slot.entry(b) {
                if let Some(p) = self.payload(b) {
                    e.insert(refs.len());
                    refs.push(p);
                }
            }
        }
        slot
    }

    /// The watermark an operator holding these records passes on: held at the oldest of them.
    pub fn hold_back(&self, wm: i64) -> i64 {
        self.oldest().map_or(wm, |o| o.min(wm))
    }

    pub fn payload(&self, batch: u32) -> Option<&P> {
        self.batches.get(&batch).map(|e| &e.0)
    }

    /// Everything held, with each batch's payload written by `payload` (for checkpoints).
    pub fn snapshot(
        &self,
        w: &mut crate::state::StateWriter,
        mut payload: impl FnMut(&P, &mut crate::state::StateWriter) -> Result<()>,
    ) -> Result<()> {
        w.u32(self.next_batch);
        w.u64(self.seq);
        w.len(self.batches.len());
        let mut ids: Vec<&u32> = self.batches.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let (p, live) = &self.batches[id];
            w.u32(*id);
            w.len(*live);
            payload(p, w)?;
        }
        w.len(self.active.len());
        for &k in &self.active {
            w.u32(k);
            let list = &self.by_key[k as usize];
            w.len(list.len());
            for h in list {
                w.i64(h.ts);
                w.u64(h.seq);
                w.u32(h.batch);
                w.u32(h.row);
            }
        }
        Ok(())
    }

    /// Held records from a snapshot; `payload` reads each batch's payload back.
    pub fn restore(
        r: &mut crate::state::StateReader<'_>,
        mut payload: impl FnMut(&mut crate::state::StateReader<'_>) -> Result<P>,
    ) -> Result<Self> {
        let mut h = HeldRecords::<P> {
            next_batch: r.u32()?,
            seq: r.u64()?,
            ..Default::default()
        };
        for _ in 0..r.len()? {
            let id = r.u32()?;
            let live = r.len()?;
            let p = payload(r)?;
            h.batches.insert(id, (p, live));
        }
        for _ in 0..r.len()? {
            let k = r.u32()?;
            let n = r.len()?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                list.push(Held {
                    ts: r.i64()?,
                    seq: r.u64()?,
                    batch: r.u32()?,
                    row: r.u32()?,
                });
            }
            let ki = k as usize;
            if ki >= h.by_key.len() {
                h.by_key.resize_with(ki + 1, Vec::new);
                h.unsorted.resize(ki + 1, false);
            }
            h.unsorted[ki] = list
                .windows(2)
                .any(|w| (w[0].ts, w[0].seq) > (w[1].ts, w[1].seq));
            h.count += list.len();
            h.by_key[ki] = list;
            h.active.push(k);
        }
        Ok(h)
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Put every key's list in (event time, arrival) order.
    pub fn sort(&mut self) {
        for i in 0..self.active.len() {
            let k = self.active[i];
            self.sort_key(k);
        }
    }

    /// Key `k`'s held records, in (event time, arrival) order once `sort` was called.
    pub fn list(&self, k: u32) -> &[Held] {
        self.by_key.get(k as usize).map_or(&[], Vec::as_slice)
    }

    /// Stop holding the records of every key before the index `keep_from` gives for its
    /// (sorted) list, releasing their payloads.
    pub fn prune(&mut self, mut keep_from: impl FnMut(&[Held]) -> usize) {
        let mut dropped = Vec::new();
        let by_key = &mut self.by_key;
        self.active.retain(|&k| {
            let list = &mut by_key[k as usize];
            let n = keep_from(list).min(list.len());
            dropped.extend(list.drain(..n));
            !list.is_empty()
        });
        self.count -= dropped.len();
        self.release(&dropped);
    }

    /// Every key with held records.
    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.active.iter().copied()
    }

    /// The oldest held event time.
    pub fn oldest(&self) -> Option<i64> {
        self.active
            .iter()
            .filter_map(|&k| {
                let l = &self.by_key[k as usize];
                if self.unsorted[k as usize] {
                    l.iter().map(|h| h.ts).min()
                } else {
                    l.first().map(|h| h.ts)
                }
            })
            .min()
    }
}

/// The order of `items` — (event time, key, arrival) — by event time, then key bytes, then
/// arrival: the deterministic order in which held records are emitted. A counting sort over the
/// time range when it is not much wider than the number of items (the usual watermark step),
/// else a comparison sort.
pub fn time_key_order<'a>(items: &[(i64, u32, u64)], key: impl Fn(u32) -> &'a [u8]) -> Vec<u32> {
    let n = items.len();
    // Each key's rank in byte order, so ties compare integers, not bytes.
    let top = items
        .iter()
        .map(|x| x.1)
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut rank = vec![u32::MAX; top];
    let mut distinct: Vec<u32> = Vec::new();
    for x in items {
        if rank[x.1 as usize] == u32::MAX {
            rank[x.1 as usize] = 0;
            distinct.push(x.1);
        }
    }
    distinct.sort_unstable_by(|&a, &b| key(a).cmp(key(b)));
    for (r, &k) in distinct.iter().enumerate() {
        rank[k as usize] = r as u32;
    }
    let sort_key = |i: u32| {
        let x = &items[i as usize];
        (x.0, rank[x.1 as usize], x.2)
    };
    let (Some(lo), Some(hi)) = (
        items.iter().map(|x| x.0).min(),
        items.iter().map(|x| x.0).max(),
    ) else {
        return Vec::new();
    };
    let width = (hi as i128 - lo as i128 + 1) as u128;
    if width > (4 * n + 1024) as u128 {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| sort_key(i));
        return order;
    }
    let width = width as usize;
    let mut starts = vec![0u32; width + 1];
    for x in items {
        starts[(x.0 - lo) as usize + 1] += 1;
    }
    for i in 0..width {
        starts[i + 1] += starts[i];
    }
    let mut order = vec![0u32; n];
    let mut next = starts.clone();
    for (i, x) in items.iter().enumerate() {
        let b = (x.0 - lo) as usize;
        order[next[b] as usize] = i as u32;
        next[b] += 1;
    }
    // Records of the same time: by key, then arrival.
    for b in 0..width {
        let (s, e) = (starts[b] as usize, starts[b + 1] as usize);
        if e - s > 1 {
            order[s..e].sort_unstable_by_key(|&i| sort_key(i));
        }
    }
    order
}

/// Buffers of `time_key_order_runs`, kept from one step to the next.
#[derive(Default)]
pub struct OrderScratch {
    by_key: Vec<usize>,
    starts: Vec<u32>,
    /// The order computed last.
    pub order: Vec<u32>,
}

/// `time_key_order` of items grouped in runs of one key each (`runs`: key, first, end), each run
/// in (event time, arrival) order, as `drain_sorted` hands them out: a stable counting sort by
/// time that takes the runs in key order, so records of equal time come out by key and then
/// arrival with no comparison sort. Leaves the order in `sc.order`.
pub fn time_key_order_runs<'a>(
    items: &[(i64, u32, u64)],
    runs: &[(u32, usize, usize)],
    key: impl Fn(u32) -> &'a [u8],
    sc: &mut OrderScratch,
) {
    sc.order.clear();
    let (Some(lo), Some(hi)) = (
        runs.iter().map(|r| items[r.1].0).min(),
        runs.iter().map(|r| items[r.2 - 1].0).max(),
    ) else {
        return;
    };
    let n = items.len();
    let width = (hi as i128 - lo as i128 + 1) as u128;
    if width > (4 * n + 1024) as u128 {
        sc.order.extend(time_key_order(items, key));
        return;
    }
    let width = width as usize;
    sc.by_key.clear();
    sc.by_key.extend(0..runs.len());
    sc.by_key
        .sort_unstable_by(|&a, &b| key(runs[a].0).cmp(key(runs[b].0)));
    sc.starts.clear();
    sc.starts.resize(width + 1, 0);
    for x in items {
        sc.starts[(x.0 - lo) as usize + 1] += 1;
    }
    for i in 0..width {
        sc.starts[i + 1] += sc.starts[i];
    }
    sc.order.resize(n, 0);
    for &r in &sc.by_key {
        let (_, first, end) = runs[r];
        for (i, x) in items[first..end].iter().enumerate() {
            let b = (x.0 - lo) as usize;
            sc.order[sc.starts[b] as usize] = (first + i) as u32;
            sc.starts[b] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Records held in any arrival order come out of `drain_sorted` per key in (time,
        /// arrival) order, and `time_key_order_runs` orders them as `time_key_order` does.
        #[test]
        fn held_records_and_their_order(
            recs in proptest::collection::vec((0u32..6, 0i64..40), 0..300),
            split in 0usize..300,
            wide in any::<bool>(),
        ) {
            // Far-apart times (`wide`) take the comparison sort instead of counting.
            let scale = if wide { 1_000_000 } else { 1 };
            let mut h = HeldRecords::<()>::default();
            let (a, b) = recs.split_at(split.min(recs.len()));
            for part in [a, b] {
                let keys: Vec<u32> = part.iter().map(|r| r.0).collect();
                let ts: Vec<i64> = part.iter().map(|r| r.1 * scale).collect();
                h.hold(&keys, &ts, |_, _| false, ());
            }
            let mut ready = Vec::new();
            h.drain_sorted_into(&mut ready, |_, list, _| Ok(list.len())).unwrap();
            prop_assert_eq!(ready.len(), recs.len());
            // each key's records in (ts, arrival) order, every record once
            let mut want: Vec<(u32, i64, u64)> = recs
                .iter()
                .enumerate()
                .map(|(i, r)| (r.0, r.1 * scale, i as u64))
                .collect();
            want.sort_by_key(|&(k, t, s)| (k, t, s));
            let mut got: Vec<(u32, i64, u64)> = ready.iter().map(|(k, x)| (*k, x.ts, x.seq)).collect();
            let mut runs: Vec<(u32, usize, usize)> = Vec::new();
            for (i, (k, _)) in ready.iter().enumerate() {
                match runs.last_mut() {
                    Some(r) if r.0 == *k => r.2 = i + 1,
                    _ => runs.push((*k, i, i + 1)),
                }
            }
            for r in &runs {
                let run = &got[r.1..r.2];
                prop_assert!(run.windows(2).all(|w| (w[0].1, w[0].2) < (w[1].1, w[1].2)));
            }
            got.sort_by_key(|&(k, t, s)| (k, t, s));
            prop_assert_eq!(got, want);
            // the run-wise order equals the general one; key bytes order keys in reverse
            let items: Vec<(i64, u32, u64)> = ready.iter().map(|(k, x)| (x.ts, *k, x.seq)).collect();
            let names = ["f", "e", "d", "c", "b", "a"];
            let key = |k: u32| names[k as usize].as_bytes();
            let mut sc = OrderScratch::default();
            time_key_order_runs(&items, &runs, key, &mut sc);
            prop_assert_eq!(&sc.order, &time_key_order(&items, key));
            let sorted: Vec<(i64, &[u8], u64)> = sc.order.iter().map(|&i| {
                let x = items[i as usize];
                (x.0, key(x.1), x.2)
            }).collect();
            prop_assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
