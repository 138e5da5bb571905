//! `Log` and `Topic` wrappers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::ffi_stream::RecordBatchStreamReader;
use arrow::pyarrow::{FromPyArrow, ToPyArrow};
use arrow_array::{Array, RecordBatch};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use riverbed_log::arrow::{produce_arrow_with, ArrowRecordSink, JsonOptions, NonFinite};
use riverbed_log::{FsyncPolicy, LogOptions, StartSpec, TopicOptions};

use crate::consumer::{parse_start, PyConsumer};
use crate::error::{to_py, type_error};

/// What to write for what JSON cannot hold (`non_finite=` of `produce_batch`).
pub fn json_options(non_finite: &str) -> PyResult<JsonOptions> {
    Ok(JsonOptions {
        non_finite: match non_finite {
            "error" => NonFinite::Error,
            "null" => NonFinite::Null,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "non_finite must be 'error' or 'null', got {other:?}"
                )))
            }
        },
    })
}

#[pyclass(module = "riverbed._core", name = "Log", frozen)]
pub struct PyLog {
    pub inner: riverbed_log::Log,
}

#[pymethods]
impl PyLog {
    #[new]
    #[pyo3(signature = (path, fsync="batch", fsync_interval_ms=1000, cleanup_interval_ms=Some(30_000)))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        fsync: &str,
        fsync_interval_ms: u64,
        cleanup_interval_ms: Option<u64>,
    ) -> PyResult<Self> {
        let fsync = match fsync {
            "batch" => FsyncPolicy::Batch,
            "interval" => FsyncPolicy::Interval(Duration::from_millis(fsync_interval_ms.max(1))),
            "never" => FsyncPolicy::Never,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "fsync must be 'batch', 'interval' or 'never', got {other:?}"
                )))
            }
        };
        let options = LogOptions {
            fsync,
            cleanup_interval: cleanup_interval_ms.map(Duration::from_millis),
        };
        let inner = py
            .detach(|| riverbed_log::Log::open(&path, options))
            .map_err(to_py)?;
        Ok(PyLog { inner })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Create or open a topic; `options` holds Kafka-named settings (partitions, retention_ms, ...).
    fn topic(&self, py: Python<'_>, name: &str, options: &Bound<'_, PyDict>) -> PyResult<PyTopic> {
        let opts: TopicOptions = pythonize::depythonize(options).map_err(|e| {
            pyo3::exceptions::PyValueError::new_err(format!("topic '{name}' config: {e}"))
        })?;
        let topic = py.detach(|| self.inner.topic(name, &opts)).map_err(to_py)?;
        Ok(PyTopic {
            log: self.inner.clone(),
            inner: topic,
        })
    }

    fn get_topic(&self, name: &str) -> PyResult<PyTopic> {
        let topic = self.inner.get_topic(name).map_err(to_py)?;
        Ok(PyTopic {
            log: self.inner.clone(),
            inner: topic,
        })
    }

    fn topics(&self) -> Vec<String> {
        self.inner.topic_names()
    }

    fn delete_topic(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        py.detach(|| self.inner.delete_topic(name)).map_err(to_py)
    }

    /// Apply retention and compaction now; returns counts of what was removed.
    fn cleanup<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.cleanup()).map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("segments_deleted", s.segments_deleted)?;
        d.set_item("segments_compacted", s.segments_compacted)?;
        d.set_item("records_removed", s.records_removed)?;
        Ok(d)
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).map_err(to_py)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).map_err(to_py)
    }

    /// What recovery found and repaired when the log was opened (and damage reads found since):
    /// one dict per finding.
    fn open_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        damage_list(py, self.inner.open_report())
    }

    /// Verify every batch, index and metadata file (of one topic, or all): one dict per damage.
    #[pyo3(signature = (topic=None))]
    fn check<'py>(&self, py: Python<'py>, topic: Option<String>) -> PyResult<Bound<'py, PyList>> {
        let found = py
            .detach(|| self.inner.check(topic.as_deref()))
            .map_err(to_py)?;
        damage_list(py, found)
    }
}

fn damage_list<'py>(
    py: Python<'py>,
    items: Vec<riverbed_log::Damage>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for d in items {
        let item = PyDict::new(py);
        item.set_item("kind", &d.kind)?;
        item.set_item("topic", &d.topic)?;
        item.set_item("partition", d.partition)?;
        item.set_item("path", &d.path)?;
        item.set_item("position", d.position)?;
        item.set_item("offsets", d.offsets)?;
        item.set_item("valid_bytes", d.valid_bytes)?;
        item.set_item("dropped_bytes", d.dropped_bytes)?;
        item.set_item("reason", &d.reason)?;
        item.set_item("message", d.describe())?;
        out.append(item)?;
    }
    Ok(out)
}

fn gap_dict<'py>(
    py: Python<'py>,
    partition: u32,
    g: &riverbed_log::Gap,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("partition", partition)?;
    d.set_item("from", g.from)?;
    d.set_item("to", g.to)?;
    d.set_item("kind", &g.kind)?;
    d.set_item("file", &g.file)?;
    d.set_item("position", g.position)?;
    d.set_item("length", g.len)?;
    d.set_item("reason", &g.reason)?;
    Ok(d)
}

#[pyclass(module = "riverbed._core", name = "Topic", frozen)]
pub struct PyTopic {
    pub log: riverbed_log::Log,
    pub inner: Arc<riverbed_log::Topic>,
}

pub(crate) fn batches_from(data: &Bound<'_, PyAny>) -> PyResult<Vec<RecordBatch>> {
    let reader = RecordBatchStreamReader::from_pyarrow_bound(data)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::error::SchemaError::new_err(e.to_string()))
}

#[pymethods]
impl PyTopic {
    /// Topic `name` of the same log, created (one partition) if missing: where a source's
    /// dead letters go by default (`<topic>.dlq`).
    /// A pipeline sink writing to this topic, `key` naming the key column.
    #[pyo3(signature = (key=None))]
    fn sink(&self, key: Option<String>) -> crate::sink::PySink {
        crate::sink::PySink::to_topic(self.inner.clone(), key)
    }

    fn sibling(&self, py: Python<'_>, name: &str) -> PyResult<PyTopic> {
        let opts = TopicOptions::default();
        let topic = py.detach(|| self.log.topic(name, &opts)).map_err(to_py)?;
        Ok(PyTopic {
            log: self.log.clone(),
            inner: topic,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name.to_string()
    }

    #[getter]
    fn partitions(&self) -> u32 {
        self.inner.num_partitions()
    }

    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pythonize::pythonize(py, self.inner.config()).map_err(|e| type_error(e.to_string()))
    }

    #[pyo3(signature = (key, value, timestamp, headers, partition=None))]
    fn produce(
        &self,
        py: Python<'_>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        headers: Vec<(String, Option<Vec<u8>>)>,
        partition: Option<u32>,
    ) -> PyResult<(u32, i64)> {
        let hs: Vec<(&[u8], Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_deref()))
            .collect();
        py.detach(|| {
            self.inner
                .produce(key.as_deref(), value.as_deref(), timestamp, &hs, partition)
        })
        .map_err(to_py)
    }

    /// Append every row of an Arrow stream; returns (partition array, offset array).
    #[pyo3(signature = (data, key=None, value=None, timestamp=None, non_finite="error"))]
    fn produce_arrow<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        key: Option<&str>,
        value: Option<&str>,
        timestamp: Option<&str>,
        non_finite: &str,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let options = json_options(non_finite)?;
        let batches = batches_from(data)?;
        let (parts, offsets) = py
            .detach(|| produce_arrow_with(&self.inner, &batches, key, value, timestamp, &options))
            .map_err(to_py)?;
        Ok((
            parts.to_data().to_pyarrow(py)?,
            offsets.to_data().to_pyarrow(py)?,
        ))
    }

    /// Records from `start` to `end` (specs as for consumers) as one pyarrow RecordBatch, and
    /// the gaps skipped (`skip_gaps`; otherwise a gap raises `DataGap`).
    #[pyo3(signature = (start, end, skip_gaps=false))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        start: &Bound<'py, PyAny>,
        end: &Bound<'py, PyAny>,
        skip_gaps: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
        let (start, end) = (parse_start(start)?, parse_start(end)?);
        let (batch, skipped) = py
            .detach(|| {
                let mut sink = ArrowRecordSink::new(self.inner.name.clone(), 1 << 16);
                let skipped = self.inner.read_range(start, end, &mut sink, skip_gaps)?;
                Ok::<_, riverbed_log::LogError>((sink.finish()?, skipped))
            })
            .map_err(to_py)?;
        let gaps = PyList::empty(py);
        for (p, g) in &skipped {
            gaps.append(gap_dict(py, *p, g)?)?;
        }
        Ok((batch.to_pyarrow(py)?, gaps))
    }

    /// Offset ranges that can't be read, per partition (damaged or missing).
    fn gaps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for p in self.inner.partitions() {
            for g in p.gaps() {
                out.append(gap_dict(py, p.id, &g)?)?;
            }
        }
        Ok(out)
    }

    fn offsets(&self) -> PyResult<Vec<(i64, i64)>> {
        self.inner.offsets().map_err(to_py)
    }

    fn offsets_for_time(&self, py: Python<'_>, ts: i64) -> PyResult<Vec<Option<i64>>> {
        py.detach(|| self.inner.offsets_for_time(ts)).map_err(to_py)
    }

    fn describe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for p in self.inner.describe().map_err(to_py)? {
            let d = PyDict::new(py);
            d.set_item("partition", p.partition)?;
            d.set_item("earliest", p.earliest)?;
            d.set_item("latest", p.latest)?;
            d.set_item("size_bytes", p.size_bytes)?;
            d.set_item("segments", p.segments)?;
            out.append(d)?;
        }
        Ok(out)
    }

    fn partition_for(&self, key: Option<Vec<u8>>) -> u32 {
        self.inner.partition_for(key.as_deref())
    }

    #[pyo3(signature = (group=None, start=None))]
    fn consumer(
        &self,
        py: Python<'_>,
        group: Option<String>,
        start: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyConsumer> {
        let start = match start {
            Some(s) => parse_start(s)?,
            None => StartSpec::Earliest,
        };
        PyConsumer::create(py, &self.log, self.inner.clone(), group, start)
    }
}

/// Kafka's murmur2 hash of `data` (signed 32-bit, as the Java client returns it).
#[pyfunction]
pub fn murmur2(data: &[u8]) -> i32 {
    riverbed_log::partitioner::murmur2(data)
}
