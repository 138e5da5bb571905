//! Errors of the Kafka connector: each names the cluster, topic or setting concerned.

use std::time::Duration;

pub type Result<T, E = KafkaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A configuration librdkafka refuses (unknown property, bad value).
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    /// No broker answered in time.
    #[error("cannot reach Kafka at '{bootstrap}' within {timeout:?}: {message}")]
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        message: String,
    },
    #[error("topic '{topic}' does not exist on Kafka at '{bootstrap}'")]
    UnknownTopic { topic: String, bootstrap: String },
    #[error(
        "Kafka at '{bootstrap}' rejected the security handshake or the credentials: {message}"
    )]
    Authentication { bootstrap: String, message: String },
    /// A call that did not complete in time.
    #[error("{what} timed out after {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// Records that could not be delivered.
    #[error("cannot write to Kafka topic '{topic}': {message}")]
    Produce { topic: String, message: String },
    /// Topics a group cannot read together (see `TopicConsumer::open_together`): a plan error.
    #[error("{0}")]
    Together(String),
    #[error("{0}")]
    Other(String),
}

impl KafkaError {
    /// Which of the engine's kinds of connector failure this is.
    pub fn kind(&self) -> riverbed_stream::ConnectorErrorKind {
        use riverbed_stream::ConnectorErrorKind as K;
        match self {
            KafkaError::Unreachable { .. } => K::Unreachable,
            KafkaError::UnknownTopic { .. } => K::UnknownTopic,
            KafkaError::Authentication { .. } => K::Authentication,
            KafkaError::Timeout { .. } => K::Timeout,
            KafkaError::Config(_) | KafkaError::Together(_) => K::Config,
            KafkaError::Produce { .. } | KafkaError::Other(_) => K::Other,
        }
    }
}

impl From<KafkaError> for riverbed_stream::StreamError {
    fn from(e: KafkaError) -> Self {
        if let KafkaError::Together(message) = e {
            return riverbed_stream::StreamError::plan("read", message);
        }
        riverbed_stream::StreamError::Connector {
            system: "Kafka",
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Whether librdkafka's error means the brokers could not be reached or authenticated.
pub(crate) fn classify(
    e: &rdkafka::error::KafkaError,
    bootstrap: &str,
    timeout: Duration,
    what: &str,
) -> KafkaError {
    // librdkafka's code, also for an admin call's (which `rdkafka_error_code` leaves out).
    let code = match e {
        rdkafka::error::KafkaError::AdminOp(c) => Some(*c),
        _ => e.rdkafka_error_code(),
    };
    classify_code(code, &e.to_string(), bootstrap, timeout, what)
}

/// The kind of a failure librdkafka reported as `code` (with its text `message`), for the call
/// `what` (also for a per-topic result of an admin call, which has a code but no error value).
pub(crate) fn classify_code(
    code: Option<rdkafka::types::RDKafkaErrorCode>,
    message: &str,
    bootstrap: &str,
    timeout: Duration,
    what: &str,
) -> KafkaError {
    use rdkafka::types::RDKafkaErrorCode as C;
    match code {
        Some(C::Authentication | C::SaslAuthenticationFailed | C::TopicAuthorizationFailed) => {
            KafkaError::Authentication {
                bootstrap: bootstrap.into(),
                message: message.into(),
            }
        }
        // A broker was reached, and did not answer this request in time.
        Some(C::RequestTimedOut) => KafkaError::Timeout {
            what: format!("{what} at '{bootstrap}' ({message})"),
            timeout,
        },
        // No broker (or no group coordinator) could be reached in time.
        Some(
            C::OperationTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::Resolve
            | C::WaitingForCoordinator
            | C::CoordinatorNotAvailable
            | C::NotCoordinator,
        ) => KafkaError::Unreachable {
            bootstrap: bootstrap.into(),
            timeout,
            message: format!("{what}: {message}"),
        },
        _ => KafkaError::Other(format!("{what}: {message}")),
    }
}
