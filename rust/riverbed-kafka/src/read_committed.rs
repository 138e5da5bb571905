//! Read-committed repartition topics: Kafka's transactions done in-band, so that a staged group
//! run killed between two checkpoints and run again counts nothing twice.
//!
//! A task writing a repartition topic re-reads its input from its newest checkpoint when it
//! restarts, and so writes again what it wrote after that checkpoint. Its readers must take in
//! only what a checkpoint of the writer covers, exactly once:
//!
//! - **Writer** (`Tagger`, used by `KafkaSink`): every row and watermark marker a task writes
//!   carries `riverbed.txn` = `<writer>:<epoch>:<seq>`: the task, its incarnation
//!   (random, new each time the task is made) and the checkpoint that will cover it (the newest
//!   one + 1; a watermark marker sent when nothing was written since a checkpoint has that
//!   checkpoint's). Once checkpoint `c` is written, a commit marker `<epoch>:<c>` goes to every
//!   partition. A task made from checkpoint `c0` (0: none) first sends a *start* marker
//!   `<new epoch>:<c0>`: what earlier incarnations wrote up to `c0` is committed (a commit
//!   marker lost in a crash), what they wrote after it is void (the crashed run's tail, which
//!   this one writes again), and an earlier incarnation still running (a zombie) is fenced off.
//! - **Reader** (`ReadCommitted`, one per partition, used by `KafkaSource`): holds each
//!   writer's rows and markers until a commit or start marker releases or voids them, in order.
//!   Per writer it keeps `Committed` (epoch, seq, offset of the marker): records of that writer
//!   up to that offset are done (read again after a restore, they are skipped), later ones of
//!   another epoch are a zombie's. The reader's checkpoint position is the first held record's
//!   offset, and the checkpoint keeps the `Committed` of every writer.
//!
//! Rows of runs without checkpoints carry no tag and pass at once, as before; rows of a bounded
//! run's end-of-input flush (provisional) carry no transaction: each writer's newest flush is
//! taken in, at the reader's end (`provisional`). The cost: in follow mode a row waits
//! for its writer's next checkpoint (a writing stage checkpoints at least every 0.5 s).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use riverbed_stream::decode::Headers;
use riverbed_stream::{Committed, RawRecords};

/// On a row or watermark marker of a checkpointing task: `Txn::header`.
pub const TXN_HEADER: &str = "riverbed.txn";
/// On a commit marker (no key, no value): `Txn::header` of the checkpoint now written.
pub const COMMIT_HEADER: &str = "riverbed.commit";
/// "1" on the commit marker a task sends when it is made (voids later seqs of earlier epochs).
pub const START_HEADER: &str = "riverbed.start";

/// A writing task's incarnation and checkpoint sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Txn {
    pub epoch: u64,
    pub seq: u64,
}

impl Txn {
    /// As a header value, with the writing task: `<writer>:<epoch, hex>:<seq>` (short: every
    /// row carries it).
    pub fn header(self, writer: usize) -> Vec<u8> {
        format!("{writer}:{:x}:{}", self.epoch, self.seq).into_bytes()
    }

    /// A header value's writing task and transaction.
    pub fn parse(v: &[u8]) -> Option<(usize, Txn)> {
        let mut it = std::str::from_utf8(v).ok()?.split(':');
        let (w, e, s) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        Some((
            w.parse().ok()?,
            Txn {
                epoch: u64::from_str_radix(e, 16).ok()?,
                seq: s.parse().ok()?,
            },
        ))
    }
}

/// A new incarnation's epoch: random (the process's hasher keys, the time and the process id).
fn new_epoch() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

/// One writing task's incarnation as its sink sees it.
#[derive(Debug, Clone, Copy)]
struct Writing {
    epoch: u64,
    /// Its newest checkpoint.
    seq: u64,
    /// Rows went out since that checkpoint.
    dirty: bool,
}

/// The writer's side: the epoch and checkpoint of each task writing through one sink.
#[derive(Debug, Default)]
pub struct Tagger {
    current: Option<usize>,
    tasks: HashMap<usize, Writing>,
}

impl Tagger {
    /// The rows and markers written next are task `task`'s (`Sink::task`).
    pub fn task(&mut self, task: Option<usize>) {
        self.current = task;
    }

    /// The tag of a row the current task writes now (none: it is not a checkpointing task
    /// this sink has seen start).
    pub fn row(&mut self) -> Option<(usize, Txn)> {
        let p = self.current?;
        let w = self.tasks.get_mut(&p)?;
        w.dirty = true;
        Some((
            p,
            Txn {
                epoch: w.epoch,
                seq: w.seq + 1,
            },
        ))
    }

    /// The tag of the current task's end-of-input flush (`provisional::FLUSH_HEADER`): its
    /// incarnation, and the checkpoint the flush follows.
    pub fn flush(&self) -> Option<(usize, Txn)> {
        let p = self.current?;
        let w = self.tasks.get(&p)?;
        Some((
            p,
            Txn {
                epoch: w.epoch,
                seq: w.seq,
            },
        ))
    }

    /// The tag of a watermark marker of task `p`: the checkpoint that covers the input it was
    /// computed from — the newest one if nothing was written since.
    pub fn marker(&self, p: usize) -> Option<Txn> {
        let w = self.tasks.get(&p)?;
        Some(Txn {
            epoch: w.epoch,
            seq: w.seq + u64::from(w.dirty),
        })
    }

    /// Task `p`'s checkpoint `seq` is written (`start`: it was just made from it, a new
    /// incarnation). The commit marker to send.
    pub fn commit(&mut self, p: usize, seq: u64, start: bool) -> Txn {
        let epoch = match self.tasks.get(&p) {
            Some(w) if !start => w.epoch,
            _ => new_epoch(),
        };
        self.tasks.insert(
            p,
            Writing {
                epoch,
                seq,
                dirty: false,
            },
        );
        Txn { epoch, seq }
    }
}

/// Records of one writer's transaction not committed yet.
#[derive(Default)]
pub struct Held {
    /// The offset of the first.
    pub first: i64,
    pub rows: RawRecords,
    /// The rows' headers, by offset.
    pub headers: Vec<(i64, Headers)>,
    /// Its newest watermark marker: the highest watermark, and whether the writer was idle.
    pub mark: Option<(i64, bool)>,
}

/// What to do with a tagged record now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Committed already: take it in.
    Now,
    /// Hold it until its transaction is committed or void (`ReadCommitted::hold`).
    Hold,
    /// Taken in or voided already (read again after a restore), or a superseded
    /// incarnation's: skip it.
    Skip,
}

#[derive(Default)]
struct Writer {
    state: Option<Committed>,
    /// Held transactions, in the order their first records arrived.
    held: Vec<(Txn, Held)>,
}

/// The reader's side for one partition of a repartition topic.
pub struct ReadCommitted {
    writers: Vec<Writer>,
}

impl ReadCommitted {
    pub fn new(writers: usize) -> ReadCommitted {
        ReadCommitted {
            writers: (0..writers).map(|_| Writer::default()).collect(),
        }
    }

    /// A row or watermark marker of `writer` in `txn`, at `offset`.
    pub fn admit(&self, writer: usize, txn: Txn, offset: i64) -> Admit {
        // A writer this reader does not know (the topic is of a run with more tasks): as an
        // untagged record, never dropped.
        let Some(w) = self.writers.get(writer) else {
            return Admit::Now;
        };
        match w.state {
            Some(st) if offset <= st.at || txn.epoch != st.epoch => Admit::Skip,
            Some(st) if txn.seq <= st.seq => Admit::Now,
            _ => Admit::Hold,
        }
    }

    /// Where to hold a record `admit` said to hold.
    pub fn hold(&mut self, writer: usize, txn: Txn, offset: i64) -> &mut Held {
        let held = &mut self.writers[writer].held;
        let i = match held.iter().position(|(t, _)| *t == txn) {
            Some(i) => i,
            None => {
                held.push((
                    txn,
                    Held {
                        first: offset,
                        ..Held::default()
                    },
                ));
                held.len() - 1
            }
        };
        &mut held[i].1
    }

    /// A commit (or, with `start`, start) marker of `writer` for `txn` at `offset`: the held
    /// transactions it commits, in order. Those it voids are dropped.
    pub fn control(&mut self, writer: usize, txn: Txn, start: bool, offset: i64) -> Vec<Held> {
        let Some(w) = self.writers.get_mut(writer) else {
            return Vec::new();
        };
        match w.state {
            // Read again after a restore: applied when first read.
            Some(st) if offset <= st.at => return Vec::new(),
            // A superseded incarnation's commit: its records were skipped.
            Some(st) if !start && txn.epoch != st.epoch => return Vec::new(),
            _ => {}
        }
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for (t, h) in w.held.drain(..) {
            // A start commits every earlier incarnation's records up to its checkpoint; a
            // commit, its own epoch's.
            let same = start || t.epoch == txn.epoch;
            if same && t.seq <= txn.seq {
                out.push(h);
            } else if !start && t.epoch == txn.epoch {
                keep.push((t, h));
            }
        }
        w.held = keep;
        let seq = match w.state {
            Some(st) if !start && st.epoch == txn.epoch => st.seq.max(txn.seq),
            _ => txn.seq,
        };
        w.state = Some(Committed {
            epoch: txn.epoch,
            seq,
            at: offset,
        });
        out
    }

    /// The offset of the first record held: a checkpoint of the reader must not go past it.
    pub fn first_held(&self) -> Option<i64> {
        self.writers
            .iter()
            .filter_map(|w| w.held.first().map(|(_, h)| h.first))
            .min()
    }

    /// Each writer's progress, for a checkpoint.
    pub fn state(&self) -> Vec<Option<Committed>> {
        self.writers.iter().map(|w| w.state).collect()
    }

    /// Reading goes on from another position: what is held is read again there.
    pub fn forget_held(&mut self) {
        for w in &mut self.writers {
            w.held.clear();
        }
    }

    /// After a seek to a checkpoint's position: the progress it kept (an older checkpoint kept
    /// none: every writer is unknown until its next marker).
    pub fn restore(&mut self, state: &[Option<Committed>]) {
        for (i, w) in self.writers.iter_mut().enumerate() {
            w.held.clear();
            w.state = state.get(i).copied().flatten();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer's records as a reader meets them.
    enum Rec {
        Row(usize, Txn, i64),
        Mark(usize, Txn, i64),
        Commit(usize, Txn, bool),
    }

    /// Feed `recs` (offsets 0, 1, ...) from offset `from`; the rows' values taken in, and the
    /// watermarks applied.
    fn read(rc: &mut ReadCommitted, recs: &[Rec], from: usize) -> (Vec<i64>, Vec<i64>) {
        let (mut rows, mut marks) = (Vec::new(), Vec::new());
        let take = |h: Held, rows: &mut Vec<i64>, marks: &mut Vec<i64>| {
            for i in 0..h.rows.len() {
                let v = h.rows.value(i).unwrap();
                rows.push(std::str::from_utf8(v).unwrap().parse().unwrap());
            }
            marks.extend(h.mark.map(|m| m.0));
        };
        for (o, r) in recs.iter().enumerate().skip(from) {
            let o = o as i64;
            match *r {
                Rec::Row(w, t, v) => match rc.admit(w, t, o) {
                    Admit::Now => rows.push(v),
                    Admit::Hold => {
                        let v = v.to_string();
                        rc.hold(w, t, o)
                            .rows
                            .push_parts(o, None, None, Some(v.as_bytes()));
                    }
                    Admit::Skip => {}
                },
                Rec::Mark(w, t, wm) => match rc.admit(w, t, o) {
                    Admit::Now => marks.push(wm),
                    Admit::Hold => {
                        let h = rc.hold(w, t, o);
                        h.mark = Some((h.mark.map_or(wm, |m| m.0.max(wm)), false));
                    }
                    Admit::Skip => {}
                },
                Rec::Commit(w, t, start) => {
                    for h in rc.control(w, t, start, o) {
                        take(h, &mut rows, &mut marks);
                    }
                }
            }
        }
        (rows, marks)
    }

    fn t(epoch: u64, seq: u64) -> Txn {
        Txn { epoch, seq }
    }

    #[test]
    fn a_crashed_runs_tail_is_voided_and_its_rerun_taken_once() {
        use Rec::*;
        // Writer 0: starts (epoch 1, no checkpoint), writes 1 2, checkpoint 1, writes 3 4 and
        // a marker, crashes; restarts from checkpoint 1 (epoch 2), writes 3 4 5 again, commits.
        // Writer 1 interleaves rows of its own first checkpoint.
        let recs = vec![
            Commit(0, t(1, 0), true),
            Commit(1, t(9, 0), true),
            Row(0, t(1, 1), 1),
            Row(1, t(9, 1), 100),
            Row(0, t(1, 1), 2),
            Commit(0, t(1, 1), false),
            Row(0, t(1, 2), 3),
            Row(0, t(1, 2), 4),
            Mark(0, t(1, 2), 50),
            Commit(0, t(2, 1), true),
            Row(0, t(2, 2), 3),
            Row(0, t(1, 2), 99), // the crashed incarnation still writing: fenced off
            Row(0, t(2, 2), 4),
            Mark(0, t(2, 2), 40),
            Row(0, t(2, 2), 5),
            Commit(1, t(9, 1), false),
            Commit(0, t(2, 2), false),
            Commit(0, t(1, 2), false), // the zombie's commit: ignored
        ];
        let mut rc = ReadCommitted::new(2);
        let (rows, marks) = read(&mut rc, &recs, 0);
        assert_eq!(rows, vec![1, 2, 100, 3, 4, 5]);
        assert_eq!(marks, vec![40], "the voided tail's watermark never applies");
        assert_eq!(rc.first_held(), None);

        // A reader checkpointed in the middle, while writer 0's second transaction and
        // writer 1's first were held, reads again from the first held offset: what it had
        // taken in is skipped, the rest comes once.
        let mut rc = ReadCommitted::new(2);
        let (before, _) = read(&mut rc, &recs[..12], 0);
        assert_eq!(before, vec![1, 2]);
        let pos = rc.first_held().unwrap();
        assert_eq!(pos, 3, "writer 1's row at offset 3 is still held");
        let state = rc.state();
        let mut again = ReadCommitted::new(2);
        again.restore(&state);
        let (after, _) = read(&mut again, &recs, pos as usize);
        let mut all = before;
        all.extend(after);
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3, 4, 5, 100]);
    }

    #[test]
    fn a_start_commits_what_a_lost_commit_marker_would_have() {
        use Rec::*;
        // The run crashed after writing checkpoint 1 and before its commit marker went out.
        let recs = vec![
            Commit(0, t(1, 0), true),
            Row(0, t(1, 1), 1),
            Row(0, t(1, 2), 2),
            Commit(0, t(2, 1), true),
            Row(0, t(2, 2), 2),
            Commit(0, t(2, 2), false),
        ];
        let (rows, _) = read(&mut ReadCommitted::new(1), &recs, 0);
        assert_eq!(rows, vec![1, 2]);
    }

    #[test]
    fn without_a_known_state_records_wait_for_their_commit() {
        use Rec::*;
        // A reader starting mid-topic: no start marker seen; the commit releases what it covers.
        let recs = vec![
            Row(0, t(5, 3), 1),
            Mark(0, t(5, 3), 10),
            Row(0, t(5, 4), 2),
            Commit(0, t(5, 3), false),
            Row(0, t(5, 4), 3),
        ];
        let mut rc = ReadCommitted::new(1);
        let (rows, marks) = read(&mut rc, &recs, 0);
        assert_eq!(rows, vec![1]);
        assert_eq!(marks, vec![10]);
        assert_eq!(rc.first_held(), Some(2));
    }

    #[test]
    fn tags_follow_checkpoints_and_a_new_incarnation_gets_a_new_epoch() {
        let mut tg = Tagger::default();
        tg.task(Some(3));
        assert_eq!(tg.row(), None, "a task not started is not tagged");
        let s = tg.commit(3, 0, true);
        assert_eq!(tg.marker(3), Some(t(s.epoch, 0)));
        assert_eq!(tg.row(), Some((3, t(s.epoch, 1))));
        assert_eq!(tg.marker(3), Some(t(s.epoch, 1)));
        assert_eq!(tg.commit(3, 1, false), t(s.epoch, 1));
        assert_eq!(tg.marker(3), Some(t(s.epoch, 1)));
        let again = tg.commit(3, 1, true);
        assert_ne!(again.epoch, s.epoch);
        assert_eq!(Txn::parse(&again.header(12)), Some((12, again)));
        assert_eq!(Txn::parse(b"1:x:2"), None);
        assert_eq!(Txn::parse(b"1:2"), None);
        assert_eq!(Txn::parse(b"1:2:3:4"), None);
    }
}
