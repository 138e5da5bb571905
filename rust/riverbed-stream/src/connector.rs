//! Where a run keeps its internal topics: the repartition topics between the stages of a
//! consumer-group run (`stages.rs`). A source that a group reads comes with the connector of its
//! cluster (`Pipeline::with_connector`), so the stages' topics live beside it.

use std::sync::Arc;

use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::sink::Sink;
use crate::source::SourceSpec;

pub trait Connector: Send + Sync {
    /// Create topic `name` with `partitions` partitions unless it exists (another process of
    /// the group may create it at the same time).
    fn ensure_topic(&self, name: &str, partitions: usize) -> Result<()>;

    /// A source reading internal topic `name` as a member of consumer group `group`: JSON
    /// values of `schema`, written by `writers` tasks (whose watermark markers it reads).
    fn source(
        &self,
        name: &str,
        group: &str,
        schema: SchemaRef,
        writers: usize,
    ) -> Result<SourceSpec>;

    /// A sink writing internal topic `name` of `partitions` partitions: records keyed (so
    /// partitioned) by column `key`, stamped with event-time column `timestamp`, and every
    /// writer's watermark passed to each partition.
    fn sink(
        &self,
        name: &str,
        key: &str,
        timestamp: Option<String>,
        partitions: usize,
    ) -> Result<Box<dyn Sink>>;
}

pub type SharedConnector = Arc<dyn Connector>;
