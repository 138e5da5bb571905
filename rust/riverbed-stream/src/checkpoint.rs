//! Checkpoints of a named pipeline: what it has read (source positions and watermark
//! progress), what it has written (log-sink end offsets) and every operator's state, taken
//! together between two steps of the run so they agree.
//!
//! Each checkpoint is one file `<dir>/<seq>.ckpt`: a magic line, the body, and the body's
//! CRC32C, then a signature under the log's checkpoint key ([`crate::checkpoint_key`]: a file
//! this log did not write is refused before any of it is used). It is written to a temporary file, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either the old set of checkpoints or the new one. The newest
//! three are kept; a file that is truncated or does not match its checksum is skipped (and
//! reported) in favour of the one before it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint_key::CheckpointKey;
use crate::error::{Result, StreamError};
use crate::state::{StateReader, StateWriter};

/// Version 3: each operator's signature is its canonical definition (`signature.rs`). Version 2
/// (read still) kept its line of `explain()` in the text of that time, version 1 (read still)
/// none. The body layout of 2 and 3 is the same; the version says how to compare signatures.
pub const VERSION: u32 = 3;
const MAGIC: &[u8; 8] = b"RBCKPT03";
const MAGIC_V2: &[u8; 8] = b"RBCKPT02";
const MAGIC_V1: &[u8; 8] = b"RBCKPT01";
const KEEP: usize = 3;
/// A temporary checkpoint file this old is a crash's leftover, not a write in progress.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// One source's progress: the next offset to process per partition (a table source: batches
/// done), and the largest event time seen per partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceState {
    pub positions: Vec<i64>,
    pub max_ts: Vec<Option<i64>>,
    /// A repartition topic read by one task (group runs): how far it has taken in each writing
    /// task's committed rows (by writer; `None`: nothing known of that writer). Empty for other
    /// sources and in checkpoints written before it was kept.
    pub committed: Vec<Option<Committed>>,
}

/// What a reader of a read-committed repartition topic has taken in of one writing task (see
/// riverbed-kafka's `read_committed`): the task's incarnation (`epoch`), its checkpoint whose
/// rows are all in (`seq`), and the offset of the commit marker that said so (`at`: records of
/// that writer up to it are done, when read again after a restore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub epoch: u64,
    pub seq: u64,
    pub at: i64,
}

/// What a named run's checkpoints have cost so far (`Pipeline.checkpoint_stats()` in Python).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CheckpointStats {
    /// Checkpoints written by this run.
    pub written: u64,
    /// Size of the newest checkpoint file.
    pub last_bytes: u64,
    /// How long processing stopped for the newest periodic checkpoint (its state is copied on the
    /// run's thread, then written by another) and the longest such stop, in ms.
    pub last_pause_ms: f64,
    pub max_pause_ms: f64,
    /// How long the newest checkpoint took to write (output topics synced, file written,
    /// fsynced and renamed) and the longest, in ms.
    pub last_write_ms: f64,
    pub max_write_ms: f64,
}

impl CheckpointStats {
    pub fn paused(&mut self, d: std::time::Duration) {
        self.last_pause_ms = d.as_secs_f64() * 1e3;
        self.max_pause_ms = self.max_pause_ms.max(self.last_pause_ms);
    }

    pub fn wrote(&mut self, d: std::time::Duration, bytes: u64) {
        self.written += 1;
        self.last_bytes = bytes;
        self.last_write_ms = d.as_secs_f64() * 1e3;
        self.max_write_ms = self.max_write_ms.max(self.last_write_ms);
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// The format it was written in ([`VERSION`] for a new one).
    pub version: u32,
    pub seq: u64,
    /// The plan it was taken with (`Pipeline::explain`): a restart with another plan is refused.
    pub plan: String,
    pub sources: Vec<SourceState>,
    /// Log sinks: topic name and end offset per partition.
    pub sinks: Vec<(String, Vec<i64>)>,
    /// Each operator's state, in graph order.
    pub operators: Vec<OperatorState>,
}

/// One operator's part of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperatorState {
    /// Given with `named`, else derived from its place in the plan (`window#3`).
    pub name: String,
    /// What it is (`signature.rs`; in a version-2 checkpoint its line of `explain()`): a changed
    /// plan restores the state of an operator with the same name only if this is unchanged.
    /// Empty in a version-1 checkpoint.
    pub signature: String,
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// Hand the body to `out` piece by piece: operator states go out as they are (no copy of
    /// a large state into one body), the small fields in between.
    fn encode(&self, out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut w = StateWriter::small();
        w.u64(self.seq);
        w.bytes(self.plan.as_bytes());
        w.len(self.sources.len());
        for s in &self.sources {
            w.i64s(&s.positions);
            w.len(s.max_ts.len());
            for t in &s.max_ts {
                w.opt_i64(*t);
            }
        }
        w.len(self.sinks.len());
        for (name, ends) in &self.sinks {
            w.bytes(name.as_bytes());
            w.i64s(ends);
        }
        w.len(self.operators.len());
        for op in &self.operators {
            w.bytes(op.name.as_bytes());
            w.bytes(op.signature.as_bytes());
            // As `StateWriter::bytes`: the length, then the bytes.
            w.len(op.state.len());
            out(&w.buf)?;
            w.buf.clear();
            out(&op.state)?;
        }
        // Trailing section (older checkpoints end before it): each source's committed progress.
        if self.sources.iter().any(|s| !s.committed.is_empty()) {
            w.len(self.sources.len());
            for s in &self.sources {
                w.len(s.committed.len());
                for c in &s.committed {
                    match c {
                        Some(c) => {
                            w.u8(1);
                            w.u64(c.epoch);
                            w.u64(c.seq);
                            w.i64(c.at);
                        }
                        None => w.u8(0),
                    }
                }
            }
        }
        out(&w.buf)
    }

    fn decode(body: &[u8], version: u32) -> Result<Checkpoint> {
        let v1 = version == 1;
        let mut r = StateReader::new(body, "a checkpoint");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let seq = r.u64()?;
        let plan = text(r.bytes()?);
        let sources = (0..r.len()?)
            .map(|_| {
                let positions = r.i64s()?;
                let n = r.len()?;
                let max_ts = (0..n).map(|_| r.opt_i64()).collect::<Result<_>>()?;
                Ok(SourceState {
                    positions,
                    max_ts,
                    committed: Vec::new(),
                })
            })
            .collect::<Result<_>>()?;
        let sinks = (0..r.len()?)
            .map(|_| Ok((text(r.bytes()?), r.i64s()?)))
            .collect::<Result<_>>()?;
        let operators = (0..r.len()?)
            .map(|_| {
                Ok(OperatorState {
                    name: text(r.bytes()?),
                    signature: if v1 { String::new() } else { text(r.bytes()?) },
                    state: r.bytes()?.to_vec(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sources: Vec<SourceState> = sources;
        if !r.at_end() {
            let n = r.len()?;
            if n != sources.len() {
                return Err(StreamError::Checkpoint(format!(
                    "a checkpoint's committed progress is of {n} sources, its positions of {}",
                    sources.len()
                )));
            }
            for s in &mut sources {
                s.committed = (0..r.len()?)
                    .map(|_| {
                        Ok(match r.u8()? {
                            0 => None,
                            _ => Some(Committed {
                                epoch: r.u64()?,
                                seq: r.u64()?,
                                at: r.i64()?,
                            }),
                        })
                    })
                    .collect::<Result<_>>()?;
            }
        }
        r.done()?;
        Ok(Checkpoint {
            version,
            seq,
            plan,
            sources,
            sinks,
            operators,
        })
    }
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> StreamError {
    StreamError::io(what, path, e)
}

/// The longest pipeline name (bytes).
pub const MAX_NAME: usize = 200;

/// Where the pipeline `name`'s checkpoints live in the log at `log_dir`: `~checkpoints/<name>`
/// ('~' cannot start a topic name, so it never clashes with a topic).
pub fn checkpoint_dir(log_dir: &Path, name: &str) -> Result<PathBuf> {
    // A directory name on every filesystem: no separators, no control characters (NUL), and
    // short enough for the suffixes group and staged runs add (file names stop at 255 bytes).
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || name.chars().any(char::is_control)
        || name.len() > MAX_NAME
    {
        return Err(StreamError::plan(
            "name",
            format!(
                "name must be a non-empty name of at most {MAX_NAME} bytes without slashes or control characters, not starting with '.', got {name:?}"
            ),
        ));
    }
    // "<name>.stage<k>" holds stage k of the staged run `name` (staged.rs): a run of its own
    // under that name would share its checkpoints.
    if let Some((_, k)) = name.rsplit_once(".stage") {
        if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StreamError::plan(
                "name",
                format!("name {name:?} ends in '.stage{k}', which riverbed keeps for stage {k} of the staged run '{}'; choose another name", &name[..name.len() - k.len() - 6]),
            ));
        }
    }
    Ok(log_dir.join("~checkpoints").join(name))
}

/// The checkpoints of one pipeline, in a directory of their own.
pub struct CheckpointStore {
    dir: PathBuf,
    key: CheckpointKey,
}

impl CheckpointStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        // A temporary file is what a crash during a write leaves behind, or what another
        // process sharing the directory (a consumer group's member) is writing now: only old
        // ones are removed (a fresh one is ignored by readers either way).
        for e in fs::read_dir(&dir)
            .map_err(|e| io("list", &dir, e))?
            .flatten()
        {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_TMP);
            if stale && e.file_name().to_string_lossy().ends_with(".ckpt.tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        let key = CheckpointKey::for_dir(&dir)?;
        Ok(CheckpointStore { dir, key })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checkpoint files, newest first.
    fn files(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| io("list", &self.dir, e))? {
            let e = e.map_err(|e| io("list", &self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name
                .strip_suffix(".ckpt")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((seq, e.path()));
            }
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(out)
    }

    /// The newest checkpoint that reads back intact, and a note for each newer one skipped.
    pub fn latest(&self) -> Result<(Option<Checkpoint>, Vec<String>)> {
        let mut notes = Vec::new();
        for (_, path) in self.files()? {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Pruned meanwhile by another process writing newer ones here.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path, e)),
            };
            match self.parse_signed(&bytes) {
                Ok(c) => return Ok((Some(c), notes)),
                Err(why) => notes.push(format!(
                    "checkpoint {} is unusable ({why}); falling back to the one before it",
                    path.display()
                )),
            }
        }
        Ok((None, notes))
    }

    /// A file signed by this log's key; damage is told apart from a foreign or edited file.
    fn parse_signed(&self, bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
        use crate::checkpoint_key::{TRAILER_LEN, TRAILER_TAG};
        match self.key.verify(bytes) {
            Ok(signed) => Self::parse(signed),
            Err(why) => {
                let unsigned = match bytes.len().checked_sub(TRAILER_LEN) {
                    Some(n) if bytes.ends_with(TRAILER_TAG) => &bytes[..n],
                    _ => bytes,
                };
                // Decoding is pure data (nothing in it is restored): only to say which it is.
                Self::parse(unsigned).and_then(|_| Err(format!("refused: {why}")))
            }
        }
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
        let version = match bytes.get(..MAGIC.len()) {
            Some(h) if h == MAGIC => VERSION,
            Some(h) if h == MAGIC_V2 => 2,
            Some(h) if h == MAGIC_V1 => 1,
            _ => return Err("not a riverbed checkpoint, or truncated".into()),
        };
        if bytes.len() < MAGIC.len() + 4 {
            return Err("not a riverbed checkpoint, or truncated".into());
        }
        let (body, crc) = bytes[MAGIC.len()..].split_at(bytes.len() - MAGIC.len() - 4);
        let want = u32::from_le_bytes(crc.try_into().unwrap_or([0; 4]));
        if crc32c::crc32c(body) != want {
            return Err("checksum mismatch".into());
        }
        Checkpoint::decode(body, version).map_err(|e| e.to_string())
    }

    /// Write `c` atomically (temp file, fsync, rename, fsync the directory); keep the newest few.
    /// Returns the file's size.
    pub fn write(&self, c: &Checkpoint) -> Result<u64> {
        let path = self.dir.join(format!("{:020}.ckpt", c.seq));
        // Its own temporary name: members of a group may write the same partition's checkpoint
        // at once (the old owner of a revoked partition and its new one); the last rename wins.
        let tmp = self.dir.join(format!(
            "{:020}.{}.ckpt.tmp",
            c.seq,
            riverbed_log::fsutil::unique_name()
        ));
        let mut size = (MAGIC.len() + 4 + crate::checkpoint_key::TRAILER_LEN) as u64;
        {
            let mut f = fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
            let mut crc = 0;
            let mut mac = self.key.signer();
            hmac::Mac::update(&mut mac, MAGIC);
            f.write_all(MAGIC)
                .and_then(|_| {
                    c.encode(&mut |piece| {
                        crc = crc32c::crc32c_append(crc, piece);
                        hmac::Mac::update(&mut mac, piece);
                        size += piece.len() as u64;
                        f.write_all(piece)
                    })
                })
                .and_then(|_| {
                    hmac::Mac::update(&mut mac, &crc.to_le_bytes());
                    f.write_all(&crc.to_le_bytes())
                })
                .and_then(|_| f.write_all(&crate::checkpoint_key::trailer(mac)))
                .and_then(|_| f.sync_all())
                .map_err(|e| io("write", &tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        for (seq, old) in self.files()?.into_iter().skip(KEEP) {
            let _ = fs::remove_file(old);
            let _ = fs::remove_file(self.flushed_marker(seq));
        }
        Ok(size)
    }

    fn flushed_marker(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.flushed"))
    }

    /// Record that the end-of-input flush following checkpoint `seq` (a bounded run's last)
    /// reached the sink: a run resuming from `seq` that reads nothing new has nothing to emit.
    pub fn mark_flushed(&self, seq: u64) -> Result<()> {
        let path = self.flushed_marker(seq);
        fs::File::create(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("create", &path, e))?;
        sync_dir(&self.dir)
    }

    /// Whether checkpoint `seq`'s end-of-input flush reached the sink (`mark_flushed`).
    pub fn is_flushed(&self, seq: u64) -> bool {
        self.flushed_marker(seq).exists()
    }

    /// Forget every checkpoint (a reset).
    pub fn clear(&self) -> Result<()> {
        for (seq, p) in self.files()? {
            fs::remove_file(&p).map_err(|e| io("remove", &p, e))?;
            let _ = fs::remove_file(self.flushed_marker(seq));
        }
        sync_dir(&self.dir)
    }
}

/// Writes checkpoints on a thread of its own, so the run pauses only to copy its state: the
/// output topics are made durable first, then the file is encoded, written and renamed. One
/// checkpoint is written at a time and one more may wait; `submit` blocks beyond that, so a
/// run asks `busy()` first and takes its next periodic checkpoint once the last one is written.
/// Checkpoint writers alive: the last one to finish drops the spare state buffers.
static WRITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct CheckpointWriter {
    tx: Option<std::sync::mpsc::SyncSender<(Checkpoint, Vec<std::sync::Arc<riverbed_log::Topic>>)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    /// Checkpoints submitted and not yet written.
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CheckpointWriter {
    pub fn new(
        store: std::sync::Arc<CheckpointStore>,
        stats: std::sync::Arc<parking_lot::Mutex<CheckpointStats>>,
    ) -> CheckpointWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(
            Checkpoint,
            Vec<std::sync::Arc<riverbed_log::Topic>>,
        )>(1);
        let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = pending.clone();
        let thread = std::thread::Builder::new()
            .name("riverbed-checkpoint".into())
            .spawn(move || -> Result<()> {
                lower_priority();
                for (c, topics) in rx {
                    let t0 = std::time::Instant::now();
                    // The output up to the checkpoint's end offsets is durable before the
                    // checkpoint that points at them exists.
                    for t in &topics {
                        t.sync()?;
                    }
                    let size = store.write(&c)?;
                    stats.lock().wrote(t0.elapsed(), size);
                    for op in c.operators {
                        crate::state::recycle(op.state);
                    }
                    written.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                }
                Ok(())
            })
            .ok();
        if thread.is_some() {
            WRITERS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        CheckpointWriter {
            tx: Some(tx),
            thread,
            pending,
        }
    }

    /// A checkpoint is still being written.
    pub fn busy(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Queue a checkpoint; the error of an earlier write, if one failed.
    pub fn submit(
        &mut self,
        c: Checkpoint,
        sync: Vec<std::sync::Arc<riverbed_log::Topic>>,
    ) -> Result<()> {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let sent = self.tx.as_ref().map(|tx| tx.send((c, sync)).is_ok());
        match sent {
            Some(true) => Ok(()),
            // The writer stopped: report why.
            _ => self.finish(),
        }
    }

    /// Wait for every queued checkpoint to be written.
    pub fn finish(&mut self) -> Result<()> {
        self.tx = None;
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        let r = t
            .join()
            .unwrap_or_else(|p| Err(StreamError::panicked("the checkpoint writer", p)));
        if WRITERS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            crate::state::release_spares();
        }
        r
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Let the run's own threads go first: on a busy machine a checkpoint takes longer to write
/// rather than stalling processing while it is written.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id; a failure only leaves the priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_name_is_not_a_run_name() {
        let d = Path::new("/log");
        let e = checkpoint_dir(d, "g.stage1").unwrap_err().to_string();
        assert!(e.contains("stage 1 of the staged run 'g'"), "{e}");
        for ok in ["g.stage", "g.stagex", "g.stage1b", "stage1"] {
            checkpoint_dir(d, ok).unwrap();
        }
    }

    fn sample(seq: u64, state: usize) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            seq,
            plan: "read #0\n  window".into(),
            sources: vec![SourceState {
                positions: vec![3, -1],
                max_ts: vec![Some(7), None],
                // Odd ones with the trailing section, even ones as older checkpoints were.
                committed: if seq % 2 == 1 {
                    vec![
                        None,
                        Some(Committed {
                            epoch: u64::MAX - seq,
                            seq,
                            at: -41,
                        }),
                    ]
                } else {
                    Vec::new()
                },
            }],
            sinks: vec![("out".into(), vec![5, 6])],
            operators: [
                ("read#0", vec![]),
                ("window#1", (0..state).map(|i| (i * 7) as u8).collect()),
                ("bars", vec![1, 2, 3]),
            ]
            .into_iter()
            .map(|(name, state)| OperatorState {
                name: name.into(),
                signature: format!("{name} does this"),
                state,
            })
            .collect(),
        }
    }

    #[test]
    fn written_checkpoints_read_back_whole_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for seq in 1..=5 {
            let c = sample(seq, 100_000 + seq as usize);
            let size = store.write(&c).unwrap();
            let file = dir.path().join(format!("{seq:020}.ckpt"));
            assert_eq!(size, fs::metadata(&file).unwrap().len());
            let (got, notes) = store.latest().unwrap();
            assert_eq!(got, Some(c));
            assert!(notes.is_empty());
        }
        // only the newest few are kept
        assert_eq!(store.files().unwrap().len(), KEEP);
        // a flipped byte in the newest: the one before it is used, and that is said
        let newest = dir.path().join(format!("{:020}.ckpt", 5));
        let mut bytes = fs::read(&newest).unwrap();
        bytes[1000] ^= 1;
        fs::write(&newest, bytes).unwrap();
        let (got, notes) = store.latest().unwrap();
        assert_eq!(got, Some(sample(4, 100_004)));
        assert!(notes[0].contains("checksum mismatch"), "{notes:?}");
    }

    #[test]
    fn a_flushed_mark_belongs_to_its_checkpoint_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write(&sample(1, 10)).unwrap();
        assert!(!store.is_flushed(1));
        store.mark_flushed(1).unwrap();
        assert!(store.is_flushed(1));
        // a newer checkpoint is not flushed until marked; the old mark goes when its file does
        for seq in 2..=(KEEP as u64 + 1) {
            store.write(&sample(seq, 10)).unwrap();
            assert!(!store.is_flushed(seq));
        }
        assert!(!store.is_flushed(1));
        assert!(!dir.path().join(format!("{:020}.flushed", 1)).exists());
        store.mark_flushed(KEEP as u64 + 1).unwrap();
        store.clear().unwrap();
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".flushed") || n.ends_with(".ckpt"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Members of a consumer group share a partition's checkpoint directory: the old owner of a
    /// revoked partition may still write while the new owner opens the store and writes too.
    /// No write fails, and what is read back is always a whole checkpoint one of them wrote.
    #[test]
    fn writers_sharing_a_directory_do_not_break_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for seq in 1..=40u64 {
                        // each opens the store again, as a new task does
                        let store = CheckpointStore::open(&path).unwrap();
                        store.write(&sample(seq, 1000 + w)).unwrap();
                        let (got, _) = store.latest().unwrap();
                        let got = got.expect("a checkpoint");
                        assert!(got == sample(got.seq, 1000) || got == sample(got.seq, 1001));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        // nothing left half-written, the newest few kept
        let store = CheckpointStore::open(&path).unwrap();
        assert_eq!(store.latest().unwrap().0.map(|c| c.seq), Some(40));
        let tmps = fs::read_dir(&path)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ckpt.tmp"))
            .count();
        assert_eq!(tmps, 0);
    }

    #[test]
    fn opening_a_store_removes_only_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("00000000000000000007.123-4-5.ckpt.tmp");
        let stale = dir.path().join("00000000000000000006.ckpt.tmp");
        fs::write(&fresh, b"being written").unwrap();
        fs::write(&stale, b"left by a crash").unwrap();
        let old = std::time::SystemTime::now() - STALE_TMP - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert!(fresh.exists(), "another writer's file was removed");
        assert!(!stale.exists());
        assert_eq!(store.latest().unwrap().0, None);
    }

    #[test]
    fn the_writer_thread_writes_in_order_and_reports_its_costs() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(CheckpointStore::open(dir.path()).unwrap());
        let stats = std::sync::Arc::new(parking_lot::Mutex::new(CheckpointStats::default()));
        let mut w = CheckpointWriter::new(store.clone(), stats.clone());
        for seq in 1..=3 {
            w.submit(sample(seq, 1 << 21), Vec::new()).unwrap();
        }
        w.finish().unwrap();
        assert!(!w.busy());
        let s = stats.lock().clone();
        assert_eq!(s.written, 3);
        let file = dir.path().join(format!("{:020}.ckpt", 3));
        assert_eq!(s.last_bytes, fs::metadata(&file).unwrap().len());
        assert!(s.last_write_ms > 0.0 && s.max_write_ms >= s.last_write_ms);
        assert_eq!(store.latest().unwrap().0, Some(sample(3, 1 << 21)));
    }

    #[test]
    fn a_version_1_checkpoint_reads_back_without_signatures() {
        let c = sample(9, 1000);
        // Version 1: as version 2 without each operator's signature.
        let mut w = StateWriter::small();
        w.u64(c.seq);
        w.bytes(c.plan.as_bytes());
        w.len(1);
        w.i64s(&c.sources[0].positions);
        w.len(2);
        w.opt_i64(Some(7));
        w.opt_i64(None);
        w.len(1);
        w.bytes(b"out");
        w.i64s(&[5, 6]);
        w.len(c.operators.len());
        for op in &c.operators {
            w.bytes(op.name.as_bytes());
            w.bytes(&op.state);
        }
        let mut file = MAGIC_V1.to_vec();
        file.extend_from_slice(&w.buf);
        file.extend_from_slice(&crc32c::crc32c(&w.buf).to_le_bytes());
        let got = CheckpointStore::parse(&file).unwrap();
        let mut want = c;
        want.version = 1;
        // written before the committed progress was kept: none
        want.sources[0].committed.clear();
        for op in &mut want.operators {
            op.signature.clear();
        }
        assert_eq!(got, want);
        // and a version-2 body under the version-1 magic does not parse as one
        let mut v2 = MAGIC_V1.to_vec();
        let mut body = Vec::new();
        sample(9, 1000)
            .encode(&mut |p| {
                body.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        v2.extend_from_slice(&body);
        v2.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        assert!(CheckpointStore::parse(&v2).is_err());
    }

    #[test]
    fn a_version_2_checkpoint_reads_back_as_version_2() {
        let c = sample(4, 100);
        let mut body = Vec::new();
        c.encode(&mut |p| {
            body.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
        let mut file = MAGIC_V2.to_vec();
        file.extend_from_slice(&body);
        file.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        let got = CheckpointStore::parse(&file).unwrap();
        assert_eq!(got.version, 2);
        assert_eq!(got.operators, c.operators);
        let mut cur = MAGIC.to_vec();
        cur.extend_from_slice(&body);
        cur.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        assert_eq!(CheckpointStore::parse(&cur).unwrap(), c);
    }
}
