//! What a run is given and gives back: its controls (stop, policy for bad records,
//! checkpointing, workers) shared with whoever watches it, and its output.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use parking_lot::Mutex;

use crate::checkpoint::CheckpointStats;
use crate::errors::ErrorHandler;
use crate::operator::OpMetrics;

/// Shared between a run and whoever watches or stops it.
#[derive(Default)]
pub struct RunControl {
    pub stop: AtomicBool,
    pub metrics: Mutex<Vec<OpMetrics>>,
    /// Where the watermark of a finished bounded source ends: `None` is +inf (everything is
    /// flushed); a test driver gives the watermark it advanced to, so a bounded run shows what a
    /// live pipeline would have emitted by then.
    pub end_watermark: Option<i64>,
    /// The pipeline's policy for bad records (sources without their own, and Python functions);
    /// `None`: raise.
    pub on_error: Option<Arc<ErrorHandler>>,
    /// Checkpointing of a named pipeline; `None`: none.
    pub checkpoint: Option<CheckpointConfig>,
    /// Things the caller should hear about (a corrupt checkpoint skipped, ...).
    pub notes: Mutex<Vec<String>>,
    /// What the checkpoints of this run have cost (a named run).
    pub checkpoint_stats: Arc<Mutex<CheckpointStats>>,
    /// Worker threads for the operators: 0 is one per core, but no more than the inputs have
    /// partitions. A named (checkpointed) run uses one.
    pub workers: usize,
}

impl RunControl {
    /// The number of worker threads this run uses (before the one-worker rule of named runs).
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Where and how often a named pipeline checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub dir: std::path::PathBuf,
    pub interval: Duration,
    /// Start over: forget the checkpoints (the output topics are not touched).
    pub reset: bool,
}

pub struct RunOutput {
    /// Things the caller should hear about (a corrupt checkpoint skipped, ...).
    pub notes: Vec<String>,
    pub late: Vec<RecordBatch>,
    pub metrics: Vec<OpMetrics>,
    /// What the run's checkpoints cost (all zero for an unnamed run).
    pub checkpoints: CheckpointStats,
}
