//! `Consumer` wrapper: polls with the GIL released, in slices, so Ctrl-C stays responsive.

use std::sync::Arc;
use std::time::Duration;

use arrow::pyarrow::ToPyArrow;
use pyo3::prelude::*;

use riverbed_log::arrow::ArrowRecordSink;
use riverbed_log::{Consumer, StartSpec};

use crate::error::{to_py, type_error};
use crate::timeout;

/// The slice of a blocking wait after which signals are checked.
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// A start spec from Python: "earliest", "latest", ("offset", n) or ("time", ms).
pub fn parse_start(spec: &Bound<'_, PyAny>) -> PyResult<StartSpec> {
    if let Ok(s) = spec.extract::<String>() {
        return match s.as_str() {
            "earliest" => Ok(StartSpec::Earliest),
            "latest" => Ok(StartSpec::Latest),
            other => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "start must be 'earliest', 'latest', an offset or a datetime, got {other:?}"
            ))),
        };
    }
    if let Ok((kind, v)) = spec.extract::<(String, i64)>() {
        return match kind.as_str() {
            "offset" => Ok(StartSpec::Offset(v)),
            "time" => Ok(StartSpec::Time(v)),
            _ => Err(type_error(format!("unknown start kind {kind:?}"))),
        };
    }
    Err(type_error(
        "start must be 'earliest', 'latest', ('offset', n) or ('time', ms)",
    ))
}

#[pyclass(module = "riverbed._core", name = "Consumer", frozen)]
pub struct PyConsumer {
    inner: Arc<Consumer>,
}

impl PyConsumer {
    pub fn create(
        py: Python<'_>,
        log: &riverbed_log::Log,
        topic: Arc<riverbed_log::Topic>,
        group: Option<String>,
        start: StartSpec,
    ) -> PyResult<PyConsumer> {
        let c = py
            .detach(|| Consumer::new(log, topic, group.as_deref(), start))
            .map_err(to_py)?;
        Ok(PyConsumer { inner: Arc::new(c) })
    }
}

#[pymethods]
impl PyConsumer {
    /// Up to `max_records` records as a pyarrow RecordBatch, waiting up to `timeout` seconds
    /// (`None` or `inf`: until records come).
    fn poll<'py>(
        &self,
        py: Python<'py>,
        max_records: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if max_records == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "max_records must be >= 1",
            ));
        }
        let deadline = timeout::deadline(timeout::seconds("timeout", timeout, true)?);
        let mut sink = ArrowRecordSink::new(self.inner.topic().name.clone(), max_records);
        loop {
            let slice = timeout::left(deadline, SIGNAL_CHECK);
            py.detach(|| self.inner.poll(max_records, slice, &mut sink))
                .map_err(to_py)?;
            use riverbed_log::RecordSink;
            if !sink.is_empty() || timeout::passed(deadline) {
                break;
            }
            py.check_signals()?;
        }
        sink.finish().map_err(to_py)?.to_pyarrow(py)
    }

    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.commit()).map_err(to_py)
    }

    fn committed(&self) -> PyResult<Vec<(u32, Option<i64>)>> {
        Ok(self.inner.committed().map_err(to_py)?.into_iter().collect())
    }

    fn position(&self) -> PyResult<Vec<(u32, i64)>> {
        Ok(self.inner.position().map_err(to_py)?.into_iter().collect())
    }

    fn assignment(&self) -> PyResult<Vec<u32>> {
        self.inner.assignment().map_err(to_py)
    }

    fn seek(&self, partition: u32, offset: i64) -> PyResult<()> {
        self.inner.seek(partition, offset).map_err(to_py)
    }

    fn seek_to_time(&self, py: Python<'_>, ts: i64) -> PyResult<()> {
        py.detach(|| self.inner.seek_to_time(ts)).map_err(to_py)
    }

    #[getter]
    fn group(&self) -> Option<String> {
        self.inner.group().map(str::to_string)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).map_err(to_py)
    }
}
