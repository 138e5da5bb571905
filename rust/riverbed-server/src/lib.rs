//! `riverbed serve`: a single-node, Kafka-compatible broker over riverbed's log.
//!
//! Any Kafka client produces, fetches, joins consumer groups and administers topics over the
//! Kafka wire protocol, decoded and encoded by the `kafka-protocol` crate, served by tokio on
//! background threads while the process that owns the [`riverbed_log::Log`] keeps using it.
//!
//! Layout (one concept per file):
//! - `config`: [`ServerConfig`], the broker's settings under Kafka's own names.
//! - `server`: [`Server`], start / bootstrap address / stop / metrics.
//! - `groups`: the group coordinator (classic protocol) and committed offsets.

pub mod config;
pub mod groups;
pub mod server;
pub mod settings;

pub use config::ServerConfig;
pub use server::Server;
