//! The one place where Rust errors become Python exceptions. The classes are declared here and
//! re-exported by `riverbed/exceptions.py`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use riverbed_log::LogError as RustLogError;

create_exception!(
    riverbed._core,
    RiverbedError,
    PyException,
    "Base class of every riverbed error."
);
create_exception!(
    riverbed._core,
    LogError,
    RiverbedError,
    "An error of the embedded log (I/O, a closed log, ...)."
);
create_exception!(
    riverbed._core,
    TopicNotFound,
    LogError,
    "The topic does not exist."
);
create_exception!(
    riverbed._core,
    OffsetOutOfRange,
    LogError,
    "An offset outside a partition's [earliest, latest] range."
);
create_exception!(
    riverbed._core,
    LogLocked,
    LogError,
    "Another process has the log directory open for writing."
);
create_exception!(
    riverbed._core,
    ServerError,
    RiverbedError,
    "The Kafka-protocol server (`riverbed serve`) could not start (address in use, an exposed \
     address without authentication, unreadable TLS or users files) or failed while stopping."
);
create_exception!(
    riverbed._core,
    CorruptLog,
    LogError,
    "Log data failed a format or CRC check."
);
create_exception!(
    riverbed._core,
    DataGap,
    CorruptLog,
    "Offsets that can't be read (damaged bytes quarantined, or a missing segment); the message \
     names topic, partition, offset range, file and byte position. Seek past it, or read with \
     on_gap=\"skip\"."
);
create_exception!(
    riverbed._core,
    InternalTopicError,
    LogError,
    "An internal topic (such as __consumer_offsets) can be read but not written or deleted."
);
create_exception!(
    riverbed._core,
    TopicConfigError,
    LogError,
    "A topic config that contradicts the stored one, or is invalid."
);
create_exception!(
    riverbed._core,
    PlanError,
    RiverbedError,
    "A pipeline plan is invalid."
);
create_exception!(
    riverbed._core,
    SchemaError,
    RiverbedError,
    "Data does not have the columns or types asked for."
);
create_exception!(
    riverbed._core,
    DecodeError,
    RiverbedError,
    "A record value could not be decoded."
);
create_exception!(
    riverbed._core,
    KafkaError,
    RiverbedError,
    "An error from a Kafka cluster."
);
create_exception!(
    riverbed._core,
    KafkaUnreachable,
    KafkaError,
    "No Kafka broker answered in time: names the bootstrap servers and the timeout."
);
create_exception!(
    riverbed._core,
    KafkaAuthenticationError,
    KafkaError,
    "Kafka refused the credentials or the security (SASL/TLS) handshake."
);
create_exception!(
    riverbed._core,
    KafkaTopicNotFound,
    KafkaError,
    "The Kafka topic does not exist (and is not auto-created)."
);
create_exception!(
    riverbed._core,
    KafkaTimeout,
    KafkaError,
    "A Kafka call did not complete in time: names the call and the timeout."
);
create_exception!(
    riverbed._core,
    CheckpointError,
    PlanError,
    "A named run cannot resume from its checkpoints: they are unusable (damaged, not signed by \
     this log), hold state of another shape, or do not fit the plan or its input. A PlanError, \
     as a plan that does not fit its checkpoint always was; pass reset=True to start over."
);
create_exception!(
    riverbed._core,
    StorageError,
    RiverbedError,
    "A file or directory of a run's own state (checkpoints) could not be read or written: names \
     the path and the operating system's error."
);
create_exception!(
    riverbed._core,
    InternalError,
    RiverbedError,
    "A bug in riverbed (a thread panicked, with its message) or the run's machinery failing (a \
     thread the OS would not start). Please report it."
);
create_exception!(
    riverbed._core,
    UdfError,
    RiverbedError,
    "A Python function of the pipeline failed where its own exception could not be kept."
);

pub fn to_py(e: RustLogError) -> PyErr {
    let msg = e.to_string();
    log_to_py_as(e, msg)
}

/// The Python exception for the log error `e`'s kind, carrying `msg`.
fn log_to_py_as(e: RustLogError, msg: String) -> PyErr {
    match e {
        RustLogError::TopicNotFound(_) => TopicNotFound::new_err(msg),
        RustLogError::OffsetOutOfRange { .. } => OffsetOutOfRange::new_err(msg),
        RustLogError::Locked { .. } => LogLocked::new_err(msg),
        RustLogError::Corrupt { .. } => CorruptLog::new_err(msg),
        RustLogError::Gap(_) => DataGap::new_err(msg),
        RustLogError::InternalTopic(_) => InternalTopicError::new_err(msg),
        RustLogError::ConfigMismatch { .. } => TopicConfigError::new_err(msg),
        RustLogError::PartitionNotFound { .. } | RustLogError::InvalidArgument(_) => {
            PyValueError::new_err(msg)
        }
        RustLogError::Schema(_) => SchemaError::new_err(msg),
        RustLogError::Io { .. } | RustLogError::Closed => LogError::new_err(msg),
    }
}

pub fn stream_to_py(e: riverbed_stream::StreamError) -> PyErr {
    let msg = e.to_string();
    stream_to_py_as(e, msg)
}

/// The Python exception for `e`'s kind, carrying `msg`.
pub fn stream_to_py_as(e: riverbed_stream::StreamError, msg: String) -> PyErr {
    use riverbed_stream::ConnectorErrorKind as K;
    use riverbed_stream::StreamError as S;
    match e {
        S::Plan { .. } => PlanError::new_err(msg),
        S::Schema(_) | S::Arrow { .. } => SchemaError::new_err(msg),
        S::Decode { .. } => DecodeError::new_err(msg),
        S::Log(l) => log_to_py_as(l, msg),
        // The side write's own kind (a full log, an unreachable Kafka), with where it went.
        S::Writing { source, .. } => stream_to_py_as(*source, msg),
        S::Io { .. } => StorageError::new_err(msg),
        S::Checkpoint(_) => CheckpointError::new_err(msg),
        S::Connector { kind, .. } => match kind {
            K::Unreachable => KafkaUnreachable::new_err(msg),
            K::Authentication => KafkaAuthenticationError::new_err(msg),
            K::UnknownTopic => KafkaTopicNotFound::new_err(msg),
            K::Timeout => KafkaTimeout::new_err(msg),
            K::Config => PyValueError::new_err(msg),
            K::Other => KafkaError::new_err(msg),
        },
        S::Panicked { .. } | S::Internal(_) => InternalError::new_err(msg),
        // The binding keeps the UDF's own exception; this is for when it could not.
        S::Udf { .. } | S::Interrupted { .. } => UdfError::new_err(msg),
    }
}

pub fn type_error(msg: impl Into<String>) -> PyErr {
    PyTypeError::new_err(msg.into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RiverbedError", py.get_type::<RiverbedError>())?;
    m.add("LogError", py.get_type::<LogError>())?;
    m.add("TopicNotFound", py.get_type::<TopicNotFound>())?;
    m.add("OffsetOutOfRange", py.get_type::<OffsetOutOfRange>())?;
    m.add("LogLocked", py.get_type::<LogLocked>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("CorruptLog", py.get_type::<CorruptLog>())?;
    m.add("DataGap", py.get_type::<DataGap>())?;
    m.add("InternalTopicError", py.get_type::<InternalTopicError>())?;
    m.add("TopicConfigError", py.get_type::<TopicConfigError>())?;
    m.add("PlanError", py.get_type::<PlanError>())?;
    m.add("SchemaError", py.get_type::<SchemaError>())?;
    m.add("DecodeError", py.get_type::<DecodeError>())?;
    m.add("KafkaError", py.get_type::<KafkaError>())?;
    m.add("KafkaUnreachable", py.get_type::<KafkaUnreachable>())?;
    m.add(
        "KafkaAuthenticationError",
        py.get_type::<KafkaAuthenticationError>(),
    )?;
    m.add("KafkaTopicNotFound", py.get_type::<KafkaTopicNotFound>())?;
    m.add("KafkaTimeout", py.get_type::<KafkaTimeout>())?;
    m.add("CheckpointError", py.get_type::<CheckpointError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("UdfError", py.get_type::<UdfError>())?;
    Ok(())
}
