//! The stream engine's error type; the binding maps each variant to a Python exception.

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

// Not `non_exhaustive`: the binding maps every kind to its Python class with no catch-all, so a
// new kind does not compile until it has one.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// An invalid plan, raised when the plan is built: names the operator and the field.
    #[error("{op}: {message}")]
    Plan { op: String, message: String },
    /// Data that does not fit the schema or an operator's needs at run time (a missing column,
    /// a wrong type, a null event time). Nothing else: other failures have their own kind.
    #[error("{0}")]
    Schema(String),
    /// A record value that could not be decoded.
    #[error("cannot decode record at {topic}/{partition}@{offset}: {message}")]
    Decode {
        topic: String,
        partition: u32,
        offset: i64,
        message: String,
    },
    /// A Python UDF raised; the binding keeps the Python exception itself.
    #[error("UDF '{name}' failed: {message}")]
    Udf { name: String, message: String },
    /// A Python UDF was interrupted (KeyboardInterrupt, SystemExit): always stops the run,
    /// whatever the policy for bad records.
    #[error("UDF '{name}' was interrupted: {message}")]
    Interrupted { name: String, message: String },
    #[error(transparent)]
    Log(#[from] riverbed_log::LogError),
    /// A write the run makes on the side (to a dead-letter topic) failed: where, and the
    /// error itself (which keeps its kind).
    #[error("cannot write to {what}: {source}")]
    Writing {
        what: String,
        #[source]
        source: Box<StreamError>,
    },
    #[error("arrow error in {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A file or directory of the run's own state could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint the run cannot resume from: unusable (truncated, mangled, not signed by this
    /// log), holding state of another shape than the operator restoring it, or not fitting the
    /// plan or its input.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An external system (Kafka) failed; `kind` says how.
    #[error("{system}: {message}")]
    Connector {
        system: &'static str,
        kind: ConnectorErrorKind,
        message: String,
    },
    /// A thread of the run panicked (a bug in riverbed): its panic message, carried to the user.
    #[error("{thread} panicked (a bug in riverbed, please report it): {message}")]
    Panicked { thread: String, message: String },
    /// The run's own machinery failed: a thread could not be started, or stopped without saying
    /// why.
    #[error("{0}")]
    Internal(String),
}

/// How an external system failed, so each reaches Python as its own exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorErrorKind {
    /// No broker answered in time.
    Unreachable,
    /// The credentials or the security handshake were refused.
    Authentication,
    /// A topic that does not exist.
    UnknownTopic,
    /// A call that did not complete in time.
    Timeout,
    /// A setting the system refuses (an unknown property, a bad value).
    Config,
    /// Anything else the system reported (a refused write, a bad configuration value, ...).
    Other,
}

impl StreamError {
    /// An error no bad-record policy may swallow.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StreamError::Interrupted { .. })
    }

    /// The text of a UDF's own error (without the "UDF '...' failed" wrapping).
    pub fn udf_message(&self) -> String {
        match self {
            StreamError::Udf { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The error for a thread that panicked with `payload` (what `JoinHandle::join` or
    /// `catch_unwind` hands back): its message when it is text, as `panic!` makes it.
    pub fn panicked(thread: impl Into<String>, payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        StreamError::Panicked {
            thread: thread.into(),
            message,
        }
    }

    /// A file of the run's state that could not be `action`ed ("read", "write", "remove", ...).
    pub fn io(
        action: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StreamError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn plan(op: impl Into<String>, message: impl Into<String>) -> Self {
        StreamError::Plan {
            op: op.into(),
            message: message.into(),
        }
    }
}

/// Attach context to Arrow errors.
pub(crate) trait ArrowContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> ArrowContext<T> for std::result::Result<T, arrow_schema::ArrowError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| StreamError::Arrow {
            context: context.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_keeps_its_message() {
        let p = std::thread::spawn(|| panic!("index {} out of range", 7))
            .join()
            .unwrap_err();
        let e = StreamError::panicked("the worker", p);
        assert!(e.to_string().contains("the worker panicked"), "{e}");
        assert!(e.to_string().ends_with(": index 7 out of range"), "{e}");
        let p = std::thread::spawn(|| std::panic::panic_any(3))
            .join()
            .unwrap_err();
        assert!(StreamError::panicked("t", p)
            .to_string()
            .ends_with("(no message)"));
    }
}
