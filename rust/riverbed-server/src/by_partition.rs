//! Per-partition state of the broker's parts (group-commit syncers, producer sequences).

use std::sync::Arc;

/// Per-partition state keyed by (topic, partition), with the partition it was built for: a
/// topic deleted and created again has new partitions, and its entries start afresh.
pub type ByPartition<T> =
    std::collections::HashMap<(Arc<str>, u32), (std::sync::Weak<riverbed_log::Partition>, Arc<T>)>;
