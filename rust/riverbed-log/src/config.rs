//! Topic configuration, persisted as `<root>/<topic>/topic.json`, and the log-wide options.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

use crate::error::{IoContext, LogError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    Delete,
    Compact,
}

/// The persisted per-topic settings, with Kafka's names and meanings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub partitions: u32,
    /// Delete whole segments whose newest record is older than this; `None` keeps forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest whole segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    /// Roll the active segment when it is older than this.
    pub segment_ms: Option<i64>,
    pub cleanup: Cleanup,
    /// How long a tombstone (null value) of a compacted topic is kept.
    pub delete_retention_ms: i64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_ms: None,
            cleanup: Cleanup::Delete,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// The settings a caller asked for when opening a topic; `None` means "whatever is stored".
/// For the settings that may be unset (`retention_ms`, ...), `Some(None)` asks for "unset".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicOptions {
    pub partitions: Option<u32>,
    #[serde(deserialize_with = "present")]
    pub retention_ms: Option<Option<i64>>,
    #[serde(deserialize_with = "present")]
    pub retention_bytes: Option<Option<u64>>,
    pub segment_bytes: Option<u64>,
    #[serde(deserialize_with = "present")]
    pub segment_ms: Option<Option<i64>>,
    pub cleanup: Option<Cleanup>,
    pub delete_retention_ms: Option<i64>,
}

/// A field that is present (even as null) is `Some`, so "unset it" differs from "not given".
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl TopicOptions {
    /// A new topic's config: the given options over the defaults.
    pub fn to_config(&self) -> TopicConfig {
        let d = TopicConfig::default();
        TopicConfig {
            partitions: self.partitions.unwrap_or(d.partitions),
            retention_ms: self.retention_ms.unwrap_or(d.retention_ms),
            retention_bytes: self.retention_bytes.unwrap_or(d.retention_bytes),
            segment_bytes: self.segment_bytes.unwrap_or(d.segment_bytes),
            segment_ms: self.segment_ms.unwrap_or(d.segment_ms),
            cleanup: self.cleanup.unwrap_or(d.cleanup),
            delete_retention_ms: self.delete_retention_ms.unwrap_or(d.delete_retention_ms),
        }
    }

    /// Raise `ConfigMismatch` for the first option that contradicts the stored config.
    pub fn check_against(&self, topic: &str, stored: &TopicConfig) -> Result<()> {
        let wanted = TopicConfig {
            partitions: self.partitions.unwrap_or(stored.partitions),
            retention_ms: self.retention_ms.unwrap_or(stored.retention_ms),
            retention_bytes: self.retention_bytes.unwrap_or(stored.retention_bytes),
            segment_bytes: self.segment_bytes.unwrap_or(stored.segment_bytes),
            segment_ms: self.segment_ms.unwrap_or(stored.segment_ms),
            cleanup: self.cleanup.unwrap_or(stored.cleanup),
            delete_retention_ms: self
                .delete_retention_ms
                .unwrap_or(stored.delete_retention_ms),
        };
        let a = serde_json::to_value(stored).unwrap_or_default();
        let b = serde_json::to_value(&wanted).unwrap_or_default();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            for (field, stored_v) in a {
                let given_v = &b[field];
                if stored_v != given_v {
                    return Err(LogError::ConfigMismatch {
                        topic: topic.to_string(),
                        field: field.clone(),
                        stored: stored_v.to_string(),
                        given: given_v.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl TopicConfig {
    pub fn validate(&self, topic: &str) -> Result<()> {
        let bad = |what: String| {
            Err(LogError::InvalidArgument(format!(
                "topic '{topic}': {what}"
            )))
        };
        if self.partitions == 0 || self.partitions > 100_000 {
            return bad(format!(
                "partitions must be between 1 and 100000, got {}",
                self.partitions
            ));
        }
        if self.segment_bytes < 1024 || self.segment_bytes > (1 << 31) {
            return bad(format!(
                "segment_bytes must be between 1024 and 2^31, got {}",
                self.segment_bytes
            ));
        }
        if let Some(ms) = self.retention_ms {
            if ms < 0 {
                return bad(format!("retention_ms must be >= 0, got {ms}"));
            }
        }
        if let Some(ms) = self.segment_ms {
            if ms <= 0 {
                return bad(format!("segment_ms must be > 0, got {ms}"));
            }
        }
        if self.delete_retention_ms < 0 {
            return bad(format!(
                "delete_retention_ms must be >= 0, got {}",
                self.delete_retention_ms
            ));
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<TopicConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        serde_json::from_str(&text).map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason: format!("bad topic config: {e}"),
        })
    }

    /// Write atomically: temp file, fsync, rename, fsync the directory.
    pub fn store(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| LogError::InvalidArgument(e.to_string()))?;
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// How produced records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before a produce call returns.
    Batch,
    /// fsync dirty partitions every interval from a background thread.
    Interval(Duration),
    /// leave it to the page cache.
    Never,
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub fsync: FsyncPolicy,
    /// How often the background cleaner applies retention and compaction; `None` disables it.
    pub cleanup_interval: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Batch,
            cleanup_interval: Some(Duration::from_secs(30)),
        }
    }
}
