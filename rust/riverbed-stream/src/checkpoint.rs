//! Checkpoints of a named pipeline: what it has read (source positions and watermark
//! progress), what it has written (log-sink end offsets) and every operator's state, taken
//! together between two steps of the run so they agree.
//!
//! Each checkpoint is one file `<dir>/<seq>.ckpt`: a magic line, the body, and the body's
//! CRC32C. It is written to a temporary file, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either the old set of checkpoints or the new one. The newest
//! three are kept; a file that is truncated or does not match its checksum is skipped (and
//! reported) in favour of the one before it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StreamError};
use crate::state::{StateReader, StateWriter};

const MAGIC: &[u8; 8] = b"RBCKPT01";
const KEEP: usize = 3;

/// One source's progress: the next offset to process per partition (a table source: batches
/// done), and the largest event time seen per partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceState {
    pub positions: Vec<i64>,
    pub max_ts: Vec<Option<i64>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    pub seq: u64,
    /// The plan it was taken with (`Pipeline::explain`): a restart with another plan is refused.
    pub plan: String,
    pub sources: Vec<SourceState>,
    /// Log sinks: topic name and end offset per partition.
    pub sinks: Vec<(String, Vec<i64>)>,
    /// Each operator's name and state, in graph order.
    pub operators: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        let mut w = StateWriter::default();
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
        for (name, state) in &self.operators {
            w.bytes(name.as_bytes());
            w.bytes(state);
        }
        w.buf
    }

    fn decode(body: &[u8]) -> Result<Checkpoint> {
        let mut r = StateReader::new(body, "a checkpoint");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let seq = r.u64()?;
        let plan = text(r.bytes()?);
        let sources = (0..r.len()?)
            .map(|_| {
                let positions = r.i64s()?;
                let n = r.len()?;
                let max_ts = (0..n).map(|_| r.opt_i64()).collect::<Result<_>>()?;
                Ok(SourceState { positions, max_ts })
            })
            .collect::<Result<_>>()?;
        let sinks = (0..r.len()?)
            .map(|_| Ok((text(r.bytes()?), r.i64s()?)))
            .collect::<Result<_>>()?;
        let operators = (0..r.len()?)
            .map(|_| Ok((text(r.bytes()?), r.bytes()?.to_vec())))
            .collect::<Result<_>>()?;
        r.done()?;
        Ok(Checkpoint {
            seq,
            plan,
            sources,
            sinks,
            operators,
        })
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StreamError {
    StreamError::Schema(format!("checkpoint: cannot {what} {}: {e}", path.display()))
}

/// Where the pipeline `name`'s checkpoints live in the log at `log_dir`: `~checkpoints/<name>`
/// ('~' cannot start a topic name, so it never clashes with a topic).
pub fn checkpoint_dir(log_dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(StreamError::Schema(format!(
            "name must be a non-empty name without slashes, not starting with '.', got {name:?}"
        )));
    }
    Ok(log_dir.join("~checkpoints").join(name))
}

/// The checkpoints of one pipeline, in a directory of their own.
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        // A temporary file is what a crash during a write leaves behind.
        for e in fs::read_dir(&dir)
            .map_err(|e| io("list", &dir, e))?
            .flatten()
        {
            if e.file_name().to_string_lossy().ends_with(".ckpt.tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(CheckpointStore { dir })
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
            let bytes = fs::read(&path).map_err(|e| io("read", &path, e))?;
            match Self::parse(&bytes) {
                Ok(c) => return Ok((Some(c), notes)),
                Err(why) => notes.push(format!(
                    "checkpoint {} is unusable ({why}); falling back to the one before it",
                    path.display()
                )),
            }
        }
        Ok((None, notes))
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
        if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a riverbed checkpoint, or truncated".into());
        }
        let (body, crc) = bytes[MAGIC.len()..].split_at(bytes.len() - MAGIC.len() - 4);
        let want = u32::from_le_bytes(crc.try_into().unwrap_or([0; 4]));
        if crc32c::crc32c(body) != want {
            return Err("checksum mismatch".into());
        }
        Checkpoint::decode(body).map_err(|e| e.to_string())
    }

    /// Write `c` atomically (temp file, fsync, rename, fsync the directory); keep the newest few.
    pub fn write(&self, c: &Checkpoint) -> Result<()> {
        let body = c.encode();
        let path = self.dir.join(format!("{:020}.ckpt", c.seq));
        let tmp = self.dir.join(format!("{:020}.ckpt.tmp", c.seq));
        {
            let mut f = fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
            f.write_all(MAGIC)
                .and_then(|_| f.write_all(&body))
                .and_then(|_| f.write_all(&crc32c::crc32c(&body).to_le_bytes()))
                .and_then(|_| f.sync_all())
                .map_err(|e| io("write", &tmp, e))?;
        }
        crate::state::recycle(body);
        fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        for (_, old) in self.files()?.into_iter().skip(KEEP) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    /// Forget every checkpoint (a reset).
    pub fn clear(&self) -> Result<()> {
        for (_, p) in self.files()? {
            fs::remove_file(&p).map_err(|e| io("remove", &p, e))?;
        }
        sync_dir(&self.dir)
    }
}

/// Writes checkpoints on a thread of its own, so the run pauses only to copy its state: the
/// output topics are made durable first, then the file is encoded, written and renamed. One
/// checkpoint is written at a time and one more may wait; `submit` blocks beyond that.
pub struct CheckpointWriter {
    tx: Option<std::sync::mpsc::SyncSender<(Checkpoint, Vec<std::sync::Arc<riverbed_log::Topic>>)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl CheckpointWriter {
    pub fn new(store: std::sync::Arc<CheckpointStore>) -> CheckpointWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(
            Checkpoint,
            Vec<std::sync::Arc<riverbed_log::Topic>>,
        )>(1);
        let thread = std::thread::Builder::new()
            .name("riverbed-checkpoint".into())
            .spawn(move || -> Result<()> {
                for (c, topics) in rx {
                    // The output up to the checkpoint's end offsets is durable before the
                    // checkpoint that points at them exists.
                    for t in &topics {
                        t.sync()?;
                    }
                    store.write(&c)?;
                    for (_, state) in c.operators {
                        crate::state::recycle(state);
                    }
                }
                Ok(())
            })
            .ok();
        CheckpointWriter {
            tx: Some(tx),
            thread,
        }
    }

    /// Queue a checkpoint; the error of an earlier write, if one failed.
    pub fn submit(
        &mut self,
        c: Checkpoint,
        sync: Vec<std::sync::Arc<riverbed_log::Topic>>,
    ) -> Result<()> {
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
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(StreamError::Schema("the checkpoint writer panicked".into()))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", dir, e))
}
