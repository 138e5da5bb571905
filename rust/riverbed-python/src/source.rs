//! `_core.Source`: what a pipeline reads (a table, a stream of batches, a log topic; Kafka
//! topics come from `Kafka.source`), and the reading settings log and Kafka sources share: the
//! value format and the policy for bad records.

use std::sync::Arc;

use arrow::ffi_stream::RecordBatchStreamReader;
use arrow::pyarrow::{FromPyArrow, PyArrowType, ToPyArrow};
use arrow_array::RecordBatch;
use arrow_schema::Schema;
use pyo3::prelude::*;

use riverbed_stream::errors::{DeadLetterTopic, ErrorHandler, ErrorPolicy};
use riverbed_stream::{Format, SourceSpec};

use crate::error::stream_to_py;
use crate::log::PyTopic;

#[pyclass(module = "riverbed._core", name = "Source", frozen)]
pub struct PySource {
    pub(crate) spec: SourceSpec,
    /// Where a group run over it keeps internal topics (a Kafka source's cluster).
    pub(crate) connector: Option<riverbed_stream::connector::SharedConnector>,
}

fn read_all(data: &Bound<'_, PyAny>) -> PyResult<(Arc<Schema>, Vec<RecordBatch>)> {
    let reader = RecordBatchStreamReader::from_pyarrow_bound(data)?;
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::error::SchemaError::new_err(e.to_string()))?;
    Ok((schema, batches))
}

impl PySource {
    pub(crate) fn from_spec(spec: SourceSpec) -> PySource {
        PySource {
            spec,
            connector: None,
        }
    }
}

#[pymethods]
impl PySource {
    /// An in-memory Arrow table (anything with `__arrow_c_stream__`), re-chunked to `batch_size`.
    #[staticmethod]
    #[pyo3(signature = (data, batch_size=None))]
    fn table(data: &Bound<'_, PyAny>, batch_size: Option<usize>) -> PyResult<PySource> {
        let (schema, batches) = read_all(data)?;
        let spec = SourceSpec::table(schema, batches, batch_size).map_err(stream_to_py)?;
        Ok(PySource::from_spec(spec))
    }

    /// A single-use Arrow stream (e.g. a RecordBatchReader over a Python iterator).
    #[staticmethod]
    fn stream(reader: &Bound<'_, PyAny>) -> PyResult<PySource> {
        let r = RecordBatchStreamReader::from_pyarrow_bound(reader)?;
        Ok(PySource::from_spec(SourceSpec::stream(Box::new(r))))
    }

    /// A log topic; `format` is "json" (values decoded into `schema`, inferred when None) or "raw".
    #[staticmethod]
    #[pyo3(signature = (topic, format="json", schema=None, batch_size=65536, on_error=None, dead_letter=None))]
    fn log(
        py: Python<'_>,
        topic: &PyTopic,
        format: &str,
        schema: Option<PyArrowType<Schema>>,
        batch_size: usize,
        on_error: Option<&str>,
        dead_letter: Option<PyRef<'_, PyTopic>>,
    ) -> PyResult<PySource> {
        let handler = error_handler(on_error, dead_letter)?;
        let format = parse_format(format)?;
        let t = topic.inner.clone();
        let spec = py
            .detach(|| SourceSpec::log(t, format, schema.map(|s| Arc::new(s.0)), batch_size))
            .map_err(stream_to_py)?;
        let spec = match handler {
            Some(h) => spec.with_on_error(h),
            None => spec,
        };
        Ok(PySource::from_spec(spec))
    }

    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.spec.schema().as_ref().to_pyarrow(py)
    }

    #[getter]
    fn partitions(&self) -> usize {
        self.spec.partitions()
    }
}

/// A source's value format: "json" or "raw".
pub(crate) fn parse_format(format: &str) -> PyResult<Format> {
    match format {
        "json" => Ok(Format::Json),
        "raw" => Ok(Format::Raw),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "format must be 'json' or 'raw', got {other:?}"
        ))),
    }
}

/// The policy for bad records named by `on_error` ("raise", "skip" or "dead_letter", which
/// needs the `dead_letter` topic).
pub(crate) fn error_handler(
    on_error: Option<&str>,
    dead_letter: Option<PyRef<'_, PyTopic>>,
) -> PyResult<Option<Arc<ErrorHandler>>> {
    policy_handler(on_error, || {
        Ok(dead_letter.map(|t| t.inner.clone() as Arc<dyn DeadLetterTopic>))
    })
}

/// The policy named by `on_error`; `dead_letter` gives the dead-letter topic when one is needed.
pub(crate) fn policy_handler(
    on_error: Option<&str>,
    dead_letter: impl FnOnce() -> PyResult<Option<Arc<dyn DeadLetterTopic>>>,
) -> PyResult<Option<Arc<ErrorHandler>>> {
    let policy = match on_error {
        None => return Ok(None),
        Some("raise") => ErrorPolicy::Raise,
        Some("skip") => ErrorPolicy::Skip,
        Some("dead_letter") => match dead_letter()? {
            Some(t) => ErrorPolicy::DeadLetter(t),
            None => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "on_error='dead_letter' needs a dead-letter topic",
                ))
            }
        },
        Some(other) => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "on_error must be 'raise', 'skip' or 'dead_letter', got {other:?}"
            )))
        }
    };
    Ok(Some(ErrorHandler::new(policy)))
}
