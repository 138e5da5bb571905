//! riverbed-stream: event-time stream processing over Arrow record batches.
//!
//! A [`plan::Node`] tree (decoded from Python) is validated into a [`pipeline::Pipeline`], which
//! runs it over [`source::SourceSpec`]s into a [`sink::Sink`].

pub mod aggregate;
mod bad_times;
pub mod buffered;
pub mod checkpoint;
mod compile;
pub mod connector;
pub mod control;
pub mod decode;
mod driver;
mod graph;
mod intake;
pub mod pipeline;
pub use riverbed_log::checkpoint_key;
mod engine;
pub mod error;
pub mod errors;
pub mod exchange;
pub mod explain;
pub mod expr;
pub mod group_by;
pub mod held;
pub mod join;
mod json_ints;
pub mod keys;
mod legacy_counts;
pub mod operator;
mod ordered;
pub mod plan;
pub mod resume;
pub mod rolling;
pub mod series;
pub mod signature;
pub mod sink;
pub mod source;
mod staged;
pub mod stages;
pub mod state;
pub mod stateful;
pub mod tasks;
pub mod watermark;
pub mod window;
mod workers;

pub use checkpoint::{CheckpointStats, Committed};
pub use connector::Connector;
pub use control::{CheckpointConfig, RunControl, RunOutput};
pub use decode::{Decoder, Format, RawRecords};
pub use error::{ConnectorErrorKind, Result, StreamError};
pub use expr::Expr;
pub use operator::{BatchUdf, OpMetrics};
pub use pipeline::Pipeline;
pub use plan::{Emit, Node, WindowSpec};
pub use sink::{CollectSink, Sink, TopicSink};
pub use source::{ExternalSource, Rebalance, Source, SourceSpec};
