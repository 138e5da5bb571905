//! Operator state as bytes, for checkpoints: a little-endian writer and reader of integers,
//! floats, byte strings and vectors, and Arrow record batches as Arrow IPC streams.
//!
//! Every stateful operator writes its state with [`StateWriter`] in `snapshot` and reads it
//! back in the same order with [`StateReader`] in `restore`; a short or mangled state is an
//! error, never a panic.

use arrow_array::RecordBatch;

use crate::error::{Result, StreamError};

// Columns are written with one bulk copy of their native bytes, which are little-endian here.
#[cfg(not(target_endian = "little"))]
compile_error!("riverbed checkpoints assume a little-endian target");

pub struct StateWriter {
    pub buf: Vec<u8>,
}

/// Buffers of written checkpoints, kept for the next one: a fresh buffer of a large state costs
/// more in page faults than encoding it does.
static SPARE: parking_lot::Mutex<Vec<Vec<u8>>> = parking_lot::Mutex::new(Vec::new());

/// Hand a state buffer back once its checkpoint is written (on the writer thread). A large one
/// is given room to grow by a quarter, its pages touched here: the next checkpoint's copy, on
/// the run's thread, then lands in memory that is already mapped.
pub fn recycle(mut buf: Vec<u8>) {
    let room = buf.len() + buf.len() / 4;
    if buf.len() >= 1 << 20 && buf.capacity() < room {
        buf = Vec::with_capacity(room);
        // Written (not `vec![0; room]`: a zeroed allocation maps its pages only when first used).
        buf.resize(room, 0xff);
    }
    buf.clear();
    let mut spare = SPARE.lock();
    if spare.len() < 8 && buf.capacity() > 0 {
        spare.push(buf);
    }
}

/// Drop the spare buffers (no checkpoint writer is left to use them).
pub fn release_spares() {
    SPARE.lock().clear();
}

impl Default for StateWriter {
    fn default() -> Self {
        // The largest spare buffer (states keep their size from one checkpoint to the next).
        let mut spare = SPARE.lock();
        let best = (0..spare.len()).max_by_key(|&i| spare[i].capacity());
        let buf = best.map(|i| spare.swap_remove(i)).unwrap_or_default();
        StateWriter { buf }
    }
}

impl StateWriter {
    /// A writer for a few fields (no spare buffer taken).
    pub fn small() -> StateWriter {
        StateWriter { buf: Vec::new() }
    }

    /// A writer for about `n` bytes: a spare buffer if one is that large, else a new one of that
    /// size (growing a large state by doubling would copy it several times).
    pub fn with_capacity(n: usize) -> StateWriter {
        let mut spare = SPARE.lock();
        match (0..spare.len()).find(|&i| spare[i].capacity() >= n) {
            Some(i) => StateWriter {
                buf: spare.swap_remove(i),
            },
            None => StateWriter {
                buf: Vec::with_capacity(n),
            },
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.buf.extend_from_slice(b);
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.i64(x)
            }
            None => self.u8(0),
        }
    }
    pub fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.f64(x)
            }
            None => self.u8(0),
        }
    }
    pub fn i64s(&mut self, v: &[i64]) {
        self.len(v.len());
        // One copy of the whole column (checkpoints are little-endian, as every target we build).
        self.buf
            .extend_from_slice(arrow_buffer::ToByteSlice::to_byte_slice(v));
    }
    pub fn f64s(&mut self, v: &[f64]) {
        self.len(v.len());
        // One copy of the whole column (checkpoints are little-endian, as every target we build).
        self.buf
            .extend_from_slice(arrow_buffer::ToByteSlice::to_byte_slice(v));
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.len(v.len());
        // One copy of the whole column (checkpoints are little-endian, as every target we build).
        self.buf
            .extend_from_slice(arrow_buffer::ToByteSlice::to_byte_slice(v));
    }
    /// A record batch as an Arrow IPC stream.
    pub fn batch(&mut self, b: &RecordBatch) -> Result<()> {
        let mut out = Vec::new();
        {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &b.schema())
                .map_err(|e| StreamError::Checkpoint(format!("{e}")))?;
            w.write(b)
                .and_then(|_| w.finish())
                .map_err(|e| StreamError::Checkpoint(format!("{e}")))?;
        }
        self.bytes(&out);
        Ok(())
    }
}

pub struct StateReader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> StateReader<'a> {
    pub fn new(buf: &'a [u8], what: &'a str) -> StateReader<'a> {
        StateReader { buf, pos: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(StreamError::Checkpoint(format!(
                "the state of {} is truncated (needs {n} more bytes at {})",
                self.what, self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    /// A length (an element count or byte count), checked against what is left.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&mut self) -> Result<usize> {
        let n = self.u64()? as usize;
        if n > self.buf.len().saturating_mul(8) + 1024 {
            return Err(StreamError::Checkpoint(format!(
                "the state of {} is mangled (a length of {n})",
                self.what
            )));
        }
        Ok(n)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn opt_i64(&mut self) -> Result<Option<i64>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.i64()?),
        })
    }
    pub fn opt_f64(&mut self) -> Result<Option<f64>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.f64()?),
        })
    }
    pub fn i64s(&mut self) -> Result<Vec<i64>> {
        let n = self.len()?;
        (0..n).map(|_| self.i64()).collect()
    }
    pub fn f64s(&mut self) -> Result<Vec<f64>> {
        let n = self.len()?;
        (0..n).map(|_| self.f64()).collect()
    }
    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        let n = self.len()?;
        (0..n).map(|_| self.u32()).collect()
    }
    pub fn batch(&mut self) -> Result<RecordBatch> {
        let bytes = self.bytes()?;
        let mut r = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| StreamError::Checkpoint(format!("{}: {e}", self.what)))?;
        match r.next() {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(StreamError::Checkpoint(format!("{}: {e}", self.what))),
            None => Err(StreamError::Checkpoint(format!(
                "{}: an empty batch stream",
                self.what
            ))),
        }
    }
    /// Whether everything was read (a section added in a later version may follow).
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
    pub fn done(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(StreamError::Checkpoint(format!(
                "the state of {} has {} bytes left over",
                self.what,
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}
