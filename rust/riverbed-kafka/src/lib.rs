//! riverbed's Kafka connector, over librdkafka (the `rdkafka` crate): a Kafka cluster's topics
//! as sources and sinks of the stream engine, with the same columns as the embedded log.
//!
//! - [`client`]: a cluster's configuration, metadata and admin calls (create/list topics).
//! - [`producer`]: records and Arrow batches to a topic (idempotent producer; keyed records go
//!   to Kafka's murmur2 partition, as Java clients and riverbed's embedded log place them).
//! - [`consumer`]: polling a topic into Arrow batches (`topic, partition, offset, timestamp,
//!   key, value, headers`).
//! - [`source`]: a topic as a pipeline source, alone or as a member of a consumer group.
//! - [`sink`]: a topic as a pipeline sink.
//! - [`read_committed`]: repartition topics whose readers take in only what a checkpoint of
//!   the writing task covers, once (a crashed run's tail is voided).
//! - [`provisional`]: repartition topics' end-of-input flushes, the newest of each writer.
//! - [`connector`]: the cluster as home of a group run's internal (repartition) topics.
//! - [`mock`]: librdkafka's in-process mock cluster, a real Kafka-protocol broker on loopback.

pub mod client;
pub mod connector;
pub mod consumer;
pub mod error;
pub mod mock;
pub mod producer;
pub mod provisional;
pub mod read_committed;
pub mod sink;
pub mod source;

pub use client::{Kafka, KafkaConfig};
pub use error::{KafkaError, Result};
