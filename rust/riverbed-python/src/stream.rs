//! `Pipeline` and `RunHandle` wrappers of the stream engine. Runs happen on a worker
//! thread while the calling thread waits with the GIL released, checking for Ctrl-C every 200 ms.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use arrow::pyarrow::{FromPyArrow, ToPyArrow};
use arrow_array::RecordBatch;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use riverbed_stream::checkpoint::checkpoint_dir;
use riverbed_stream::control::CheckpointConfig;
use riverbed_stream::{
    BatchUdf, Node, Pipeline, RunControl, RunOutput, Sink, SourceSpec, StreamError, TopicSink,
};

use crate::error::{stream_to_py, type_error};
use crate::log::PyTopic;
use crate::sink::{PySink, SinkTarget};
use crate::source::{error_handler, PySource};

const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// A Python callable applied per batch; its exception is kept to be re-raised as it was.
struct PyUdf {
    func: Py<PyAny>,
    name: String,
    error: Arc<Mutex<Option<PyErr>>>,
}

impl BatchUdf for PyUdf {
    fn call(&self, batch: RecordBatch) -> riverbed_stream::Result<RecordBatch> {
        Python::attach(|py| {
            let run = || -> PyResult<RecordBatch> {
                let arg = batch.to_pyarrow(py)?;
                let out = self.func.call1(py, (arg,))?;
                RecordBatch::from_pyarrow_bound(out.bind(py))
            };
            run().map_err(|e| {
                let message = e.to_string();
                // Only an Exception is a bad record a policy may skip; KeyboardInterrupt,
                // SystemExit, GeneratorExit and any other BaseException stop the run.
                let fatal = !e.is_instance_of::<pyo3::exceptions::PyException>(py);
                *self.error.lock() = Some(e);
                let name = self.name.clone();
                if fatal {
                    StreamError::Interrupted { name, message }
                } else {
                    StreamError::Udf { name, message }
                }
            })
        })
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn snapshot(&self) -> riverbed_stream::Result<Vec<u8>> {
        Python::attach(|py| {
            let f = self.func.bind(py);
            if !f.hasattr("__riverbed_snapshot__").unwrap_or(false) {
                return Ok(Vec::new());
            }
            f.call_method0("__riverbed_snapshot__")
                .and_then(|b| b.extract::<Vec<u8>>())
                .map_err(|e| {
                    let message = format!("cannot checkpoint its state: {e}");
                    // Raised as it was (a TypeError naming the type the codec does not keep).
                    *self.error.lock() = Some(e);
                    StreamError::Udf {
                        name: self.name.clone(),
                        message,
                    }
                })
        })
    }
    fn restore(&self, state: &[u8]) -> riverbed_stream::Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        Python::attach(|py| {
            self.func
                .bind(py)
                .call_method1(
                    "__riverbed_restore__",
                    (pyo3::types::PyBytes::new(py, state),),
                )
                .map(|_| ())
                .map_err(|e| {
                    let message = format!("cannot restore its state: {e}");
                    *self.error.lock() = Some(e);
                    StreamError::Udf {
                        name: self.name.clone(),
                        message,
                    }
                })
        })
    }
}

#[pyclass(module = "riverbed._core", name = "Pipeline", frozen)]
pub struct PyPipeline {
    inner: Arc<Pipeline>,
    udf_error: Arc<Mutex<Option<PyErr>>>,
}

/// Collected output shared with the worker thread.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<RecordBatch>>>);

struct CollectInto(Collected);

impl Sink for CollectInto {
    fn write(&mut self, batch: RecordBatch) -> riverbed_stream::Result<()> {
        self.0 .0.lock().push(batch);
        Ok(())
    }
}

struct CallbackSink {
    func: Py<PyAny>,
    error: Arc<Mutex<Option<PyErr>>>,
}

impl Sink for CallbackSink {
    fn write(&mut self, batch: RecordBatch) -> riverbed_stream::Result<()> {
        Python::attach(|py| {
            let r = batch.to_pyarrow(py).and_then(|b| self.func.call1(py, (b,)));
            r.map(|_| ()).map_err(|e| {
                let message = e.to_string();
                *self.error.lock() = Some(e);
                StreamError::Udf {
                    name: "sink callback".into(),
                    message,
                }
            })
        })
    }
}

type RunResult = (riverbed_stream::Result<RunOutput>, Collected);

/// Wait for the worker's result with the GIL released (the receiver moves in and back out).
fn recv(
    py: Python<'_>,
    rx: Receiver<RunResult>,
    timeout: Duration,
) -> (Result<RunResult, RecvTimeoutError>, Receiver<RunResult>) {
    py.detach(move || {
        let r = rx.recv_timeout(timeout);
        (r, rx)
    })
}

impl PyPipeline {
    /// The checkpoint settings of a named run: its checkpoints live in the log of its output
    /// topic, else of its first topic source, every `interval_ms` (default 10 s). Options
    /// that only mean something for a named run are refused without a name.
    fn checkpoint_config(
        &self,
        sink: &PySink,
        name: Option<&str>,
        interval_ms: Option<u64>,
        reset: bool,
        state_dir: Option<std::path::PathBuf>,
    ) -> PyResult<Option<CheckpointConfig>> {
        let Some(name) = name else {
            let unused = [
                (interval_ms.is_some(), "checkpoint_interval"),
                (reset, "reset=True"),
            ];
            if let Some((_, what)) = unused.iter().find(|(given, _)| *given) {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "{what} has no effect without name=: only a named run is checkpointed; pass name=\"...\" to checkpoint it"
                )));
            }
            return Ok(None);
        };
        let interval_ms = interval_ms.unwrap_or(10_000);
        let from_sink = match &sink.target {
            SinkTarget::Topic { topic, .. } => topic.dir.parent().map(|p| p.to_path_buf()),
            _ => None,
        };
        let Some(base) = state_dir.or(from_sink).or_else(|| self.inner.log_dir()) else {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "name=: checkpoints live in a log (or a Kafka cluster's state_dir); this pipeline reads and writes no log topic",
            ));
        };
        let dir = checkpoint_dir(&base, name)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        Ok(Some(CheckpointConfig {
            dir,
            interval: Duration::from_millis(interval_ms.max(1)),
            reset,
        }))
    }

    fn make_sink(&self, sink: &PySink) -> PyResult<(Box<dyn Sink>, Collected)> {
        let collected = Collected::default();
        // Without an explicit key, the key columns (key_by, a window's by) are the record key
        // (several: a JSON object of them).
        let key_or_default = |key: &Option<String>| match key {
            Some(k) => vec![k.clone()],
            None => self.inner.key_columns().to_vec(),
        };
        let timestamp = self.inner.event_time_column().map(str::to_string);
        let s: Box<dyn Sink> = match &sink.target {
            SinkTarget::Collect => Box::new(CollectInto(collected.clone())),
            SinkTarget::Topic { topic, key } => Box::new(TopicSink {
                topic: topic.clone(),
                keys: key_or_default(key),
                timestamp,
            }),
            SinkTarget::Kafka { make, key, .. } => make(key_or_default(key), timestamp)?,
            SinkTarget::Callback(func) => Box::new(CallbackSink {
                func: Python::attach(|py| func.clone_ref(py)),
                error: self.udf_error.clone(),
            }),
        };
        Ok((s, collected))
    }

    fn spawn(
        &self,
        sink: Box<dyn Sink>,
        collected: Collected,
        follow: bool,
        control: RunControl,
    ) -> (Arc<RunControl>, Receiver<RunResult>) {
        let control = Arc::new(control);
        let (tx, rx) = channel();
        let (p, c) = (self.inner.clone(), control.clone());
        let mut sink = sink;
        std::thread::spawn(move || {
            // A panic (a bug) ends the run with its message rather than a dead channel.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                p.run(&mut *sink, follow, &c)
            }))
            .unwrap_or_else(|p| Err(StreamError::panicked("the pipeline worker thread", p)));
            drop(sink);
            let _ = tx.send((r, collected));
        });
        (control, rx)
    }

    fn to_result<'py>(&self, py: Python<'py>, r: RunResult) -> PyResult<Bound<'py, PyDict>> {
        let (out, collected) = r;
        let out = out.map_err(|e| match e {
            StreamError::Udf { .. } | StreamError::Interrupted { .. } => self
                .udf_error
                .lock()
                .take()
                .unwrap_or_else(|| stream_to_py(e)),
            e => stream_to_py(e),
        })?;
        let d = PyDict::new(py);
        let output = PyList::empty(py);
        for b in collected.0.lock().drain(..) {
            output.append(b.to_pyarrow(py)?)?;
        }
        let late = PyList::empty(py);
        for b in out.late {
            late.append(b.to_pyarrow(py)?)?;
        }
        d.set_item("output", output)?;
        d.set_item("late", late)?;
        d.set_item("metrics", metrics_list(py, &out.metrics)?)?;
        d.set_item("checkpoints", checkpoint_stats(py, &out.checkpoints)?)?;
        d.set_item("notes", out.notes)?;
        Ok(d)
    }
}

fn checkpoint_stats<'py>(
    py: Python<'py>,
    s: &riverbed_stream::CheckpointStats,
) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, s).map_err(|e| type_error(e.to_string()))
}

fn metrics_list<'py>(
    py: Python<'py>,
    m: &[riverbed_stream::OpMetrics],
) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, m).map_err(|e| type_error(e.to_string()))
}

#[pymethods]
impl PyPipeline {
    #[new]
    fn new(
        py: Python<'_>,
        plan: &Bound<'_, PyDict>,
        sources: Vec<PyRef<'_, PySource>>,
        udfs: Vec<Py<PyAny>>,
    ) -> PyResult<Self> {
        let node: Node = pythonize::depythonize(plan)
            .map_err(|e| crate::error::PlanError::new_err(format!("invalid plan: {e}")))?;
        let specs: Vec<SourceSpec> = sources.iter().map(|s| s.spec.clone()).collect();
        let connector = sources.iter().find_map(|s| s.connector.clone());
        let udf_error = Arc::new(Mutex::new(None));
        let udfs: Vec<Arc<dyn BatchUdf>> = udfs
            .into_iter()
            .map(|f| {
                let name = f
                    .bind(py)
                    .getattr("__name__")
                    .and_then(|n| n.extract::<String>())
                    .unwrap_or_else(|_| "udf".to_string());
                Arc::new(PyUdf {
                    func: f,
                    name,
                    error: udf_error.clone(),
                }) as Arc<dyn BatchUdf>
            })
            .collect();
        let inner = py
            .detach(|| Pipeline::new(node, specs, udfs).map(|p| p.with_connector(connector)))
            .map_err(stream_to_py)?;
        Ok(PyPipeline {
            inner: Arc::new(inner),
            udf_error,
        })
    }

    /// The output's event-time column, if it has one.
    #[getter]
    fn event_time_column(&self) -> Option<String> {
        self.inner.event_time_column().map(str::to_string)
    }

    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .schema()
            .map(|s| s.as_ref().to_pyarrow(py))
            .transpose()
    }

    fn explain(&self) -> String {
        self.inner.explain()
    }

    /// Run to the end of the inputs (or, with `follow`, until Ctrl-C); returns
    /// {"output": [batches], "late": [batches], "metrics": [dicts]}.
    #[pyo3(signature = (sink, follow=false, end_watermark=None, on_error=None, dead_letter=None, name=None, checkpoint_interval_ms=None, reset=false, state_dir=None, workers=0))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        sink: PyRef<'py, PySink>,
        follow: bool,
        end_watermark: Option<i64>,
        on_error: Option<&str>,
        dead_letter: Option<PyRef<'_, PyTopic>>,
        name: Option<&str>,
        checkpoint_interval_ms: Option<u64>,
        reset: bool,
        state_dir: Option<std::path::PathBuf>,
        workers: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let handler = error_handler(on_error, dead_letter)?;
        let ckpt = self.checkpoint_config(&sink, name, checkpoint_interval_ms, reset, state_dir)?;
        let (s, collected) = self.make_sink(&sink)?;
        let run = RunControl {
            end_watermark,
            on_error: handler,
            checkpoint: ckpt,
            workers,
            ..Default::default()
        };
        let (control, mut rx) = self.spawn(s, collected, follow, run);
        loop {
            let (r, back) = recv(py, rx, SIGNAL_CHECK);
            rx = back;
            match r {
                Ok(r) => return self.to_result(py, r),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        control
                            .stop
                            .store(true, std::sync::atomic::Ordering::Release);
                        let _ = recv(py, rx, Duration::from_secs(3600));
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(crate::error::InternalError::new_err(
                        "the pipeline worker thread died",
                    ))
                }
            }
        }
    }

    /// Start a run on a background thread; returns a handle to watch and stop it.
    #[pyo3(signature = (sink, follow=true, on_error=None, dead_letter=None, name=None, checkpoint_interval_ms=None, reset=false, state_dir=None, workers=0))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        sink: PyRef<'_, PySink>,
        follow: bool,
        on_error: Option<&str>,
        dead_letter: Option<PyRef<'_, PyTopic>>,
        name: Option<&str>,
        checkpoint_interval_ms: Option<u64>,
        reset: bool,
        state_dir: Option<std::path::PathBuf>,
        workers: usize,
    ) -> PyResult<PyRunHandle> {
        let handler = error_handler(on_error, dead_letter)?;
        let ckpt = self.checkpoint_config(&sink, name, checkpoint_interval_ms, reset, state_dir)?;
        let (s, collected) = self.make_sink(&sink)?;
        let run = RunControl {
            on_error: handler,
            checkpoint: ckpt,
            workers,
            ..Default::default()
        };
        let (control, rx) = self.spawn(s, collected, follow, run);
        Ok(PyRunHandle {
            pipeline: PyPipeline {
                inner: self.inner.clone(),
                udf_error: self.udf_error.clone(),
            },
            control,
            rx: Mutex::new(Some(rx)),
            result: Mutex::new(None),
        })
    }
}

#[pyclass(module = "riverbed._core", name = "RunHandle", frozen)]
pub struct PyRunHandle {
    pipeline: PyPipeline,
    control: Arc<RunControl>,
    rx: Mutex<Option<Receiver<RunResult>>>,
    result: Mutex<Option<RunResult>>,
}

#[pymethods]
impl PyRunHandle {
    /// Stop the run and return its result (as `Pipeline.run` does); waits up to `timeout` s
    /// (`None` or `inf`: until it has stopped).
    #[pyo3(signature = (timeout=Some(5.0)))]
    fn stop<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyDict>> {
        // Checked before the run is told to stop: a bad timeout changes nothing.
        let limit = crate::timeout::seconds("timeout", timeout, true)?;
        self.control
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        self.wait_inner(py, limit)?;
        match self.result.lock().take() {
            Some(r) => self.pipeline.to_result(py, r),
            // Ended, and its result (or error) went to an earlier stop(): not a timeout.
            None if self.rx.lock().is_none() => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this run was already stopped: its result (or its error) went to the first stop()",
            )),
            None => Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
                "the pipeline did not stop within {} s",
                timeout.unwrap_or(f64::INFINITY)
            ))),
        }
    }

    /// Wait up to `timeout` seconds (`None` or `inf`: no limit) for the run to end by itself;
    /// True if it has.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let limit = crate::timeout::seconds("timeout", timeout, true)?;
        self.wait_inner(py, limit)?;
        Ok(self.result.lock().is_some())
    }

    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.control.metrics.lock().clone();
        metrics_list(py, &m)
    }

    fn checkpoint_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.control.checkpoint_stats.lock().clone();
        checkpoint_stats(py, &s)
    }

    #[getter]
    fn running(&self) -> bool {
        if self.result.lock().is_some() {
            return false;
        }
        let mut rx = self.rx.lock();
        let Some(r) = rx.as_ref() else { return false };
        match r.try_recv() {
            Ok(done) => {
                *self.result.lock() = Some(done);
                *rx = None;
                false
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => true,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => false,
        }
    }
}

impl PyRunHandle {
    /// Wait up to `timeout` (`None`: no limit) for the run's result. The receiver is put back
    /// whenever the result has not come (timeout, Ctrl-C), so a later `stop()` still gets it.
    fn wait_inner(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<()> {
        let deadline = crate::timeout::deadline(timeout);
        let Some(mut rx) = self.rx.lock().take() else {
            return Ok(());
        };
        loop {
            let slice = crate::timeout::left(deadline, SIGNAL_CHECK);
            let (r, back) = recv(py, rx, slice);
            rx = back;
            match r {
                Ok(r) => {
                    *self.result.lock() = Some(r);
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) if crate::timeout::passed(deadline) => {
                    *self.rx.lock() = Some(rx);
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        *self.rx.lock() = Some(rx);
                        return Err(e);
                    }
                }
                // The worker catches panics and always sends; a lost sender is a bug.
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(crate::error::InternalError::new_err(
                        "the pipeline worker thread ended without a result",
                    ))
                }
            }
        }
    }
}
