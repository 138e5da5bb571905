//! A repartition topic's provisional rows: what its writers' end-of-input flushes emitted (the
//! windows still open when a bounded run's input ended).
//!
//! A writer flushes its whole open state at the end of every bounded run, and its readers take
//! that flush in after their own end-of-input checkpoint (riverbed-stream's
//! `Polled::Provisional`). A reader that has not checkpointed past a flush — the run was killed
//! after the writer flushed and before the reader ended — reads it again in the next run, after
//! the writer's next flush of the same state. Two flushes of one writer are never both meant:
//! one of another incarnation (`FLUSH_HEADER`, the writer task and its epoch) read after it
//! replaces what an older one flushed — an incarnation flushes once, when its input ends, and a
//! writer's records keep their order — so the reader takes in each writer's newest flush only,
//! once. (A zombie, a stopped process's task resumed after its successor flushed, would be
//! taken for the newest: flushes are not fenced as transactions are.) A flush
//! begins with a marker (no key, no value) in every partition: where it has no rows (its open
//! windows' keys now go to other partitions), it still replaces the older flush's rows.

use std::collections::{BTreeMap, HashMap};

use riverbed_stream::decode::Headers;
use riverbed_stream::RawRecords;

use crate::read_committed::Txn;

/// On a provisional row of a checkpointing task: `Txn::header` of its incarnation (`seq`: the
/// end-of-input checkpoint the flush follows).
pub const FLUSH_HEADER: &str = "riverbed.flush";

/// One writer's flush as read so far.
#[derive(Default)]
pub struct Flush {
    /// The writer's incarnation (none: an untagged flush, of an older riverbed).
    epoch: Option<u64>,
    /// The writer's state changed since its run before (of this flush or of one it replaced).
    pub changed: bool,
    pub rows: RawRecords,
    /// The rows' headers, by offset.
    pub headers: HashMap<i64, Headers>,
}

/// One partition's provisional rows, per writer (none: untagged).
#[derive(Default)]
pub struct Flushes {
    writers: BTreeMap<Option<usize>, Flush>,
}

impl Flushes {
    /// Where a provisional row of `tag`'s writer goes: its flush, started anew when the row is
    /// of another incarnation than the rows read before (whose `changed` it keeps: the reader
    /// took neither in).
    pub fn of(&mut self, tag: Option<(usize, Txn)>, changed: bool) -> &mut Flush {
        let (writer, epoch) = (tag.map(|t| t.0), tag.map(|t| t.1.epoch));
        let f = self.writers.entry(writer).or_default();
        if f.epoch != epoch && !f.rows.is_empty() {
            *f = Flush {
                changed: f.changed,
                ..Flush::default()
            };
        }
        f.epoch = epoch;
        f.changed |= changed;
        f
    }

    /// Every writer's flush, taken out.
    pub fn take(&mut self) -> Vec<Flush> {
        std::mem::take(&mut self.writers).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(f: &mut Flush, o: i64) {
        f.rows.push_parts(o, Some(o), None, Some(b"{}"));
    }

    fn tag(w: usize, epoch: u64) -> Option<(usize, Txn)> {
        Some((w, Txn { epoch, seq: 3 }))
    }

    /// How many rows, and the offset after the last.
    fn rows(f: &Flush) -> (usize, Option<i64>) {
        (f.rows.len(), f.rows.next_offset())
    }

    #[test]
    fn a_newer_incarnations_flush_replaces_an_older_ones_and_keeps_its_change() {
        let mut fl = Flushes::default();
        row(fl.of(tag(0, 7), true), 10);
        row(fl.of(tag(1, 9), false), 11);
        row(fl.of(tag(0, 7), true), 12);
        // writer 0 flushes again (the run after a crash): the same state, unchanged since
        row(fl.of(tag(0, 8), false), 20);
        let got = fl.take();
        assert_eq!(got.len(), 2);
        assert_eq!((rows(&got[0]), got[0].changed), ((1, Some(21)), true));
        assert_eq!((rows(&got[1]), got[1].changed), ((1, Some(12)), false));
        assert!(fl.take().is_empty());
    }

    #[test]
    fn a_newer_flush_with_no_rows_here_replaces_an_older_ones_rows_all_the_same() {
        let mut fl = Flushes::default();
        row(fl.of(tag(2, 7), false), 10);
        // writer 2's next flush: its marker only (its open windows' keys go elsewhere now)
        fl.of(tag(2, 8), false);
        let got = fl.take();
        assert_eq!((rows(&got[0]), got[0].changed), ((0, None), false));
    }

    #[test]
    fn untagged_flushes_are_all_kept() {
        let mut fl = Flushes::default();
        row(fl.of(None, false), 1);
        row(fl.of(None, false), 2);
        let got = fl.take();
        assert_eq!((rows(&got[0]), got[0].changed), ((2, Some(3)), false));
    }
}
