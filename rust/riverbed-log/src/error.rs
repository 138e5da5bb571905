//! The one error type of the log crate; the binding crate maps each variant to a Python exception.

use std::path::PathBuf;

pub type Result<T, E = LogError> = std::result::Result<T, E>;

// Not `non_exhaustive`: the binding maps every kind to its Python class with no catch-all.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("offset {offset} is out of range for {topic}/{partition}: valid offsets are {earliest}..{latest}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
        earliest: i64,
        latest: i64,
    },
    #[error(
        "log directory {path} is locked by another writer (pid {pid}){}",
        served.as_ref().map_or(String::new(), |a| format!(
            "; it is served over the Kafka protocol at {a}: connect a Kafka client (bootstrap \
             servers {a}) or rb.Kafka(\"{a}\") instead of opening the directory"
        ))
    )]
    Locked {
        path: PathBuf,
        pid: String,
        /// The bootstrap address, when the owner serves the log (`riverbed serve`).
        served: Option<String>,
    },
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{0}")]
    Gap(Box<GapError>),
    #[error(
        "topic '{topic}' config mismatch: {field} is {stored} on disk but {given} was asked for"
    )]
    ConfigMismatch {
        topic: String,
        field: String,
        stored: String,
        given: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("schema error: {0}")]
    Schema(String),
    #[error("'{0}' is an internal topic: it can be read, but not written to or deleted")]
    InternalTopic(String),
    #[error("the log is closed")]
    Closed,
}

/// Offsets of a partition that can't be read: damaged bytes (quarantined) or a missing segment.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{topic}/{partition}: offsets {from}..{to} can't be read ({kind}: {path} at byte {position}: \
     {reason}); seek to offset {to} to continue past them"
)]
pub struct GapError {
    pub topic: String,
    pub partition: u32,
    pub from: i64,
    pub to: i64,
    pub kind: String,
    pub path: PathBuf,
    pub position: u64,
    pub reason: String,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| LogError::io(path, e))
    }
}
