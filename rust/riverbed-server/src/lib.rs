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
//! - `security`: checks of the security settings; `sasl` (with `sasl_users`, `scram`): SASL
//!   authentication per connection; `tls`: the TLS acceptor.

pub mod config;
pub mod groups;
pub mod sasl;
pub mod sasl_users;
pub mod scram;
pub mod security;
pub mod server;
pub mod tls;

pub use config::ServerConfig;
pub use server::Server;
