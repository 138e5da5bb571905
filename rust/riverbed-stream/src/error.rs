//! The stream engine's error type; the binding maps each variant to a Python exception.

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// An invalid plan, raised when the plan is built: names the operator and the field.
    #[error("{op}: {message}")]
    Plan { op: String, message: String },
    /// Data that does not fit the schema or an operator's needs at run time.
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
    #[error("arrow error in {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("the run was stopped")]
    Stopped,
    /// An external system (Kafka) failed: unreachable, unknown topic, refused, timed out.
    #[error("{system}: {message}")]
    Connector {
        system: &'static str,
        message: String,
    },
    /// A thread of the run panicked (a bug in riverbed): its panic message, carried to the user.
    #[error("{thread} panicked (a bug in riverbed, please report it): {message}")]
    Panicked { thread: String, message: String },
}

impl StreamError {
    /// An error no bad-record policy may swallow.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StreamError::Interrupted { .. } | StreamError::Stopped)
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
