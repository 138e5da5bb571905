//! riverbed-log: an embedded, durable, partitioned append-only log with Kafka's semantics,
//! stored in Kafka's own on-disk record format (RecordBatch v2).
//!
//! ```no_run
//! use riverbed_log::{Log, LogOptions, TopicOptions};
//! let log = Log::open("data", LogOptions::default())?;
//! let topic = log.topic("events", &TopicOptions { partitions: Some(4), ..Default::default() })?;
//! let (partition, offset) = topic.produce(Some(b"user-1"), Some(b"{\"clicks\":1}"), 1_700_000_000_000, &[], None)?;
//! # Ok::<(), riverbed_log::LogError>(())
//! ```

pub mod arrow;
pub mod batch;
pub mod checkpoint_key;
pub mod cleaner;
pub mod compression;
pub mod config;
pub mod consumer;
pub mod error;
pub mod fsutil;
pub mod group;
pub mod index;
pub mod lock;
pub mod log;
pub mod notify;
pub mod partition;
pub mod partitioner;
pub mod quarantine;
pub mod raw;
pub mod record_sink;
pub mod segment;
pub mod start_spec;
pub mod topic;

pub use config::{Cleanup, FsyncPolicy, LogOptions, TopicConfig, TopicOptions};
pub use consumer::Consumer;
pub use error::{GapError, LogError, Result};
pub use log::Log;
pub use partition::{NewRecord, Partition};
pub use quarantine::Gap;
pub use record_sink::RecordSink;
pub use segment::Damage;
pub use start_spec::StartSpec;
pub use topic::{PartitionInfo, Topic};
