//! `riverbed serve`: a single-node, Kafka-compatible broker over riverbed's log.
//!
//! Any Kafka client produces, fetches, joins consumer groups and administers topics over the
//! Kafka wire protocol, decoded and encoded by the `kafka-protocol` crate, served by tokio on
//! background threads while the process that owns the [`riverbed_log::Log`] keeps using it.
//!
//! Layout (one concept per file):
//! - `config`: [`ServerConfig`], the broker's settings under Kafka's own names.
//! - `server`: [`Server`], start / bootstrap address / stop / metrics.
//! - `broker`: the state every connection shares (log, coordinator, producers, metrics);
//!   `by_partition`: the per-partition maps some of its parts keep.
//! - `connection`: framing and the per-connection request loop (answers in order).
//! - `dispatch`: one request decoded and routed to its handler by API key; `future`: what a
//!   handler returns for the connection's writer to await.
//! - `api_versions`: the API keys and versions served (exactly what is implemented).
//! - `metadata`, `produce`, `fetch`, `list_offsets`, `coordinator_lookup`, `admin`: handlers.
//! - `durability`: group commit (one fsync per partition covers every waiting produce).
//! - `producers`: idempotent-producer ids and per-partition sequence checks.
//! - `metrics`: the counters; `exposition`: their Prometheus text, also over HTTP.
//! - `groups`: the group coordinator (classic protocol) and committed offsets.
//! - `error`: the crate's error type and Kafka error codes.
//! - `security`: checks of the security settings; `sasl` (with `sasl_users`, `scram`): SASL
//!   authentication per connection; `tls`: the TLS acceptor.

pub mod admin;
pub mod api_versions;
pub mod broker;
pub mod by_partition;
pub mod config;
pub mod connection;
pub mod coordinator_lookup;
pub mod dispatch;
pub mod durability;
pub mod error;
pub mod exposition;
pub mod fetch;
pub mod future;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod metrics;
pub mod produce;
pub mod producers;
pub mod sasl;
pub mod sasl_gate;
pub mod sasl_users;
pub mod scram;
pub mod security;
pub mod server;
pub mod settings;
pub mod tls;

pub use config::ServerConfig;
pub use error::ServerError;
pub use server::Server;
