//! The crate's error type, and how the log's errors become Kafka error codes.

use kafka_protocol::ResponseError;
use riverbed_log::LogError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the broker's runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Other(String),
}

/// The Kafka error code for a log error met while serving a partition.
pub fn code_for(e: &LogError) -> i16 {
    match e {
        LogError::TopicNotFound(_) | LogError::PartitionNotFound { .. } => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        LogError::InternalTopic(_) => ResponseError::InvalidTopicException.code(),
        LogError::InvalidArgument(_) => ResponseError::InvalidRequest.code(),
        // Shutting down: retriable, so clients come back to the restarted broker.
        LogError::Closed => ResponseError::NotLeaderOrFollower.code(),
        _ => ResponseError::KafkaStorageError.code(),
    }
}

pub const NONE: i16 = 0;
