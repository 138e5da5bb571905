//! `_core.Sink`: where a run's output goes, the typed counterpart of `_core.Source`. The object
//! that owns the destination hands it over (`Topic.sink`, `Kafka.sink`); `Sink.collect()` and
//! `Sink.callback(fn)` need none. The run turns it into the engine's `Sink` once it knows its
//! output's key and event-time columns.

use std::sync::Arc;

use pyo3::prelude::*;

use riverbed_stream::Sink;

use crate::error::type_error;

/// Builds the engine's sink for a topic of another system once the run knows its output's key
/// and event-time columns (the connector's handle stays with the connector: `kafka.rs`).
/// Builds a Kafka sink from (key columns, event-time column).
pub(crate) type MakeSink =
    Box<dyn Fn(Vec<String>, Option<String>) -> PyResult<Box<dyn Sink>> + Send + Sync>;

/// What a `Sink` writes to.
pub(crate) enum SinkTarget {
    /// Gather the output batches and hand them back from `run`.
    Collect,
    /// A topic of the embedded log.
    Topic {
        topic: Arc<riverbed_log::Topic>,
        key: Option<String>,
    },
    /// A Kafka topic, its sink built by `make` from (key, event-time column).
    Kafka {
        make: MakeSink,
        topic: String,
        key: Option<String>,
    },
    /// A Python callable taking each output `RecordBatch`.
    Callback(Py<PyAny>),
}

#[pyclass(module = "riverbed._core", name = "Sink", frozen)]
pub struct PySink {
    pub(crate) target: SinkTarget,
}

impl PySink {
    pub(crate) fn to_topic(topic: Arc<riverbed_log::Topic>, key: Option<String>) -> Self {
        PySink {
            target: SinkTarget::Topic { topic, key },
        }
    }

    pub(crate) fn to_kafka(make: MakeSink, topic: String, key: Option<String>) -> Self {
        PySink {
            target: SinkTarget::Kafka { make, topic, key },
        }
    }
}

#[pymethods]
impl PySink {
    /// Collect the output: `run` returns it.
    #[staticmethod]
    fn collect() -> Self {
        PySink {
            target: SinkTarget::Collect,
        }
    }

    /// Call `func` with each output `RecordBatch`.
    #[staticmethod]
    fn callback(func: Bound<'_, PyAny>) -> PyResult<Self> {
        if !func.is_callable() {
            return Err(type_error(format!(
                "Sink.callback: expected a callable taking a RecordBatch, got {}",
                func.get_type().name()?
            )));
        }
        Ok(PySink {
            target: SinkTarget::Callback(func.unbind()),
        })
    }

    /// "collect", "topic" (the embedded log), "kafka" or "callback".
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.target {
            SinkTarget::Collect => "collect",
            SinkTarget::Topic { .. } => "topic",
            SinkTarget::Kafka { .. } => "kafka",
            SinkTarget::Callback(_) => "callback",
        }
    }

    /// The output topic's name (None for collect and callback sinks).
    #[getter]
    fn topic(&self) -> Option<String> {
        match &self.target {
            SinkTarget::Topic { topic, .. } => Some(topic.name.to_string()),
            SinkTarget::Kafka { topic, .. } => Some(topic.clone()),
            SinkTarget::Collect | SinkTarget::Callback(_) => None,
        }
    }

    /// The column written as the record key, when one was named.
    #[getter]
    fn key(&self) -> Option<String> {
        match &self.target {
            SinkTarget::Topic { key, .. } | SinkTarget::Kafka { key, .. } => key.clone(),
            SinkTarget::Collect | SinkTarget::Callback(_) => None,
        }
    }

    /// The callable of a callback sink (None for the others).
    #[getter]
    fn func(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.target {
            SinkTarget::Callback(f) => Some(f.clone_ref(py)),
            _ => None,
        }
    }

    fn __repr__(&self) -> String {
        match (self.topic(), self.key()) {
            (Some(t), Some(k)) => format!("Sink.{}({t:?}, key={k:?})", self.kind()),
            (Some(t), None) => format!("Sink.{}({t:?})", self.kind()),
            _ => format!("Sink.{}()", self.kind()),
        }
    }
}
