//! `Kafka`, `KafkaConsumer` and `MockKafka` wrappers of riverbed-kafka: conversions and
//! delegation only. Every call that talks to the brokers releases the GIL.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::pyarrow::{PyArrowType, ToPyArrow};
use arrow_schema::Schema;
use pyo3::prelude::*;

use riverbed_kafka::connector::KafkaConnector;
use riverbed_kafka::consumer::{Start, TopicConsumer};
use riverbed_kafka::mock::Mock;
use riverbed_kafka::producer::{KafkaDeadLetter, KafkaProducer, OutRecord};
use riverbed_kafka::sink::KafkaSink;
use riverbed_kafka::source::KafkaTopicSource;
use riverbed_kafka::{Kafka, KafkaConfig};
use riverbed_stream::errors::{DeadLetterTopic, ErrorHandler};
use riverbed_stream::SourceSpec;

use crate::error::{stream_to_py_as, KafkaError};
use crate::log::batches_from;
use crate::source::PySource;

/// A Kafka call's error as its Python class (`KafkaUnreachable`, ..., `ValueError` for a bad
/// setting), with the connector's own message.
pub fn kafka_to_py(e: riverbed_kafka::KafkaError) -> PyErr {
    let msg = e.to_string();
    stream_to_py_as(e.into(), msg)
}

fn parse_start(start: &str) -> PyResult<Start> {
    match start {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "start must be 'earliest' or 'latest', got {other:?}"
        ))),
    }
}

#[pyclass(module = "riverbed._core", name = "Kafka", frozen)]
pub struct PyKafka {
    pub(crate) inner: Arc<Kafka>,
    producer: OnceLock<Arc<KafkaProducer>>,
    /// The mock cluster this client talks to, which creates its topics (it has no admin API).
    mock: OnceLock<Py<PyMockKafka>>,
}

impl PyKafka {
    pub(crate) fn producer(&self) -> PyResult<Arc<KafkaProducer>> {
        if let Some(p) = self.producer.get() {
            return Ok(p.clone());
        }
        let p = Arc::new(KafkaProducer::new(&self.inner.config).map_err(kafka_to_py)?);
        Ok(self.producer.get_or_init(|| p).clone())
    }

    /// The engine's sink writing to `topic`, keyed by `key`, stamped with `timestamp`.
    pub(crate) fn engine_sink(
        &self,
        topic: &str,
        keys: Vec<String>,
        timestamp: Option<String>,
        repartition: Option<usize>,
    ) -> PyResult<KafkaSink> {
        Ok(KafkaSink {
            producer: self.producer()?,
            topic: topic.to_string(),
            keys,
            timestamp,
            repartition,
            provisional: None,
            tagger: Default::default(),
        })
    }
}

#[pymethods]
impl PyKafka {
    #[new]
    #[pyo3(signature = (bootstrap_servers, config=Vec::new(), timeout_ms=10_000))]
    fn new(
        bootstrap_servers: &str,
        config: Vec<(String, String)>,
        timeout_ms: u64,
    ) -> PyResult<PyKafka> {
        let kafka = Kafka::new(KafkaConfig {
            bootstrap: bootstrap_servers.to_string(),
            options: config,
            timeout: Duration::from_millis(timeout_ms.max(1)),
        })
        .map_err(kafka_to_py)?;
        Ok(PyKafka {
            inner: Arc::new(kafka),
            producer: OnceLock::new(),
            mock: OnceLock::new(),
        })
    }

    #[getter]
    fn bootstrap_servers(&self) -> String {
        self.inner.config.bootstrap.clone()
    }

    #[getter]
    fn timeout_ms(&self) -> u64 {
        self.inner.config.timeout.as_millis() as u64
    }

    /// Create topics on this mock cluster (it has no admin API), in runs that need internal
    /// topics too.
    fn attach_mock(&self, mock: Py<PyMockKafka>) -> PyResult<()> {
        self.mock.set(mock).map_err(|_| {
            pyo3::exceptions::PyRuntimeError::new_err("this client is attached to a mock already")
        })
    }

    /// [(name, partitions)] of every topic.
    fn topics(&self, py: Python<'_>) -> PyResult<Vec<(String, usize)>> {
        py.detach(|| self.inner.topics()).map_err(kafka_to_py)
    }

    fn partitions(&self, py: Python<'_>, topic: &str) -> PyResult<usize> {
        py.detach(|| self.inner.partitions(topic))
            .map_err(kafka_to_py)
    }

    #[pyo3(signature = (name, partitions=1, replication=1, config=Vec::new()))]
    fn create_topic(
        &self,
        py: Python<'_>,
        name: &str,
        partitions: usize,
        replication: usize,
        config: Vec<(String, String)>,
    ) -> PyResult<()> {
        py.detach(|| {
            self.inner
                .create_topic(name, partitions, replication, &config)
        })
        .map_err(kafka_to_py)
    }

    /// Queue one record; `flush` waits for every queued record to be acknowledged.
    #[pyo3(signature = (topic, key, value, timestamp=None, headers=Vec::new(), partition=None))]
    #[allow(clippy::too_many_arguments)]
    fn produce(
        &self,
        py: Python<'_>,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: Option<i64>,
        headers: Vec<(String, Option<Vec<u8>>)>,
        partition: Option<i32>,
    ) -> PyResult<()> {
        let producer = self.producer()?;
        if let Some(t) = timestamp {
            riverbed_kafka::producer::check_record_timestamp(topic, t, "the record")
                .map_err(kafka_to_py)?;
        }
        py.detach(|| {
            producer.send(
                topic,
                &OutRecord {
                    key: key.as_deref(),
                    value: value.as_deref(),
                    timestamp,
                    partition,
                    headers: &headers,
                },
            )
        })
        .map_err(kafka_to_py)
    }

    /// Queue every row of an Arrow stream; returns the number of records.
    #[pyo3(signature = (topic, data, key=None, value=None, timestamp=None, non_finite="error"))]
    #[allow(clippy::too_many_arguments)]
    fn produce_arrow(
        &self,
        py: Python<'_>,
        topic: &str,
        data: &Bound<'_, PyAny>,
        key: Option<&str>,
        value: Option<&str>,
        timestamp: Option<&str>,
        non_finite: &str,
    ) -> PyResult<usize> {
        let options = crate::log::json_options(non_finite)?;
        // One batch: a bad row is named by its place in the whole input, and refused before
        // any row is sent.
        let Some(batch) =
            riverbed_log::arrow::one_batch(&batches_from(data)?).map_err(crate::error::to_py)?
        else {
            return Ok(0);
        };
        let producer = self.producer()?;
        let keys: Vec<&str> = key.into_iter().collect();
        py.detach(|| {
            producer.send_batch(topic, &batch, &keys, value, timestamp, &options, &[], true)
        })
        .map_err(kafka_to_py)
    }

    /// Wait until every queued record is acknowledged (or fail naming what was not).
    fn flush(&self, py: Python<'_>, topic: &str) -> PyResult<()> {
        let producer = self.producer()?;
        py.detach(|| producer.flush(topic)).map_err(kafka_to_py)
    }

    #[pyo3(signature = (topic, group=None, start="earliest", auto_commit=true))]
    fn consumer(
        &self,
        py: Python<'_>,
        topic: &str,
        group: Option<&str>,
        start: &str,
        auto_commit: bool,
    ) -> PyResult<PyKafkaConsumer> {
        let start = parse_start(start)?;
        let c = py
            .detach(|| {
                TopicConsumer::open(&self.inner.config, topic, group, start, None, auto_commit)
            })
            .map_err(kafka_to_py)?;
        Ok(PyKafkaConsumer {
            inner: parking_lot::Mutex::new(Some(c)),
        })
    }

    /// A pipeline sink writing to `topic`, `key` naming the key column; `partitions` for an
    /// internal repartition topic (the writer partitions by key and passes its watermark on).
    #[pyo3(signature = (topic, key=None, partitions=None))]
    fn sink(
        slf: Bound<'_, Self>,
        topic: String,
        key: Option<String>,
        partitions: Option<usize>,
    ) -> crate::sink::PySink {
        let kafka: Py<PyKafka> = slf.unbind();
        let name = topic.clone();
        let make: crate::sink::MakeSink = Box::new(move |key, timestamp| {
            let s = kafka.get().engine_sink(&name, key, timestamp, partitions)?;
            Ok(Box::new(s) as Box<dyn riverbed_stream::Sink>)
        });
        crate::sink::PySink::to_kafka(make, topic, key)
    }

    /// A pipeline source reading `topic` (with `group`: as one member of a consumer group).
    #[pyo3(signature = (topic, group=None, start="earliest", format="json", schema=None, batch_size=65536, on_error=None, dead_letter=None, writers=None))]
    #[allow(clippy::too_many_arguments)]
    fn source(
        &self,
        py: Python<'_>,
        topic: &str,
        group: Option<&str>,
        start: &str,
        format: &str,
        schema: Option<PyArrowType<Schema>>,
        batch_size: usize,
        on_error: Option<&str>,
        dead_letter: Option<&str>,
        writers: Option<usize>,
    ) -> PyResult<PySource> {
        let start = parse_start(start)?;
        let format = crate::source::parse_format(format)?;
        let mut spec = py
            .detach(|| {
                KafkaTopicSource::new(
                    &self.inner.config,
                    topic,
                    group,
                    start,
                    format,
                    schema.map(|s| Arc::new(s.0)),
                    batch_size,
                )
            })
            .map_err(kafka_to_py)?;
        spec.on_error = self.error_handler(on_error, dead_letter)?;
        spec.writers = writers;
        let mut connector = KafkaConnector::new(self.inner.config.clone());
        if let Some(m) = self.mock.get() {
            let m = Python::attach(|py| m.clone_ref(py));
            connector = connector.creating_topics_with(Arc::new(move |name, partitions| {
                m.get().create(name, partitions, 1)
            }));
        }
        let mut source = PySource::from_spec(SourceSpec::External(Arc::new(spec)));
        source.connector = Some(Arc::new(connector));
        Ok(source)
    }
}

impl PyKafka {
    /// A bad-record policy whose dead letters go to a topic of this cluster.
    pub(crate) fn error_handler(
        &self,
        on_error: Option<&str>,
        dead_letter: Option<&str>,
    ) -> PyResult<Option<Arc<ErrorHandler>>> {
        crate::source::policy_handler(on_error, || {
            Ok(match dead_letter {
                Some(t) => Some(Arc::new(KafkaDeadLetter {
                    producer: self.producer()?,
                    topic: t.to_string(),
                }) as Arc<dyn DeadLetterTopic>),
                None => None,
            })
        })
    }
}

#[pyclass(module = "riverbed._core", name = "KafkaConsumer", frozen)]
pub struct PyKafkaConsumer {
    inner: parking_lot::Mutex<Option<TopicConsumer>>,
}

#[pymethods]
impl PyKafkaConsumer {
    /// Up to `max_records` records as a pyarrow RecordBatch, waiting up to `timeout` seconds
    /// for the first (`None` or `inf`: until one comes), in slices to check for Ctrl-C between.
    #[pyo3(signature = (max_records=10_000, timeout=Some(1.0)))]
    fn poll<'py>(
        &self,
        py: Python<'py>,
        max_records: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let deadline = crate::timeout::deadline(crate::timeout::seconds("timeout", timeout, true)?);
        loop {
            let slice = crate::timeout::left(deadline, Duration::from_millis(200));
            let batch = py
                .detach(|| {
                    let g = self.inner.lock();
                    let c = g.as_ref().ok_or_else(|| {
                        riverbed_kafka::KafkaError::Other("the consumer is closed".into())
                    })?;
                    c.poll_arrow(max_records, slice)
                })
                .map_err(kafka_to_py)?;
            if batch.num_rows() > 0 || crate::timeout::passed(deadline) {
                return batch.to_pyarrow(py);
            }
            py.check_signals()?;
        }
    }

    /// Commit what was polled so far (a group consumer).
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| match self.inner.lock().as_ref() {
            Some(c) => c.commit_consumed(),
            None => Ok(()),
        })
        .map_err(kafka_to_py)
    }

    /// [(first offset, end offset)] of every partition of the topic now.
    fn offsets(&self, py: Python<'_>) -> PyResult<Vec<(i64, i64)>> {
        py.detach(|| match self.inner.lock().as_ref() {
            Some(c) => (0..c.partitions).map(|p| c.watermarks(p)).collect(),
            None => Err(riverbed_kafka::KafkaError::Other(
                "the consumer is closed".into(),
            )),
        })
        .map_err(kafka_to_py)
    }

    /// [partition] currently assigned to this consumer.
    fn assignment(&self) -> Vec<usize> {
        self.inner
            .lock()
            .as_ref()
            .map(TopicConsumer::assignment)
            .unwrap_or_default()
    }

    /// Leave the group and close (librdkafka commits what was polled when auto-commit is on,
    /// as Kafka's clients do).
    fn close(&self, py: Python<'_>) {
        let c = self.inner.lock().take();
        py.detach(|| drop(c));
    }
}

#[pyclass(module = "riverbed._core", name = "MockKafka", frozen)]
pub struct PyMockKafka {
    inner: parking_lot::Mutex<Option<Mock>>,
    bootstrap: String,
}

impl PyMockKafka {
    fn create(
        &self,
        name: &str,
        partitions: usize,
        replication: usize,
    ) -> riverbed_kafka::Result<()> {
        match self.inner.lock().as_ref() {
            Some(m) => m.create_topic(name, partitions, replication),
            None => Err(riverbed_kafka::KafkaError::Other(
                "the mock cluster is stopped".into(),
            )),
        }
    }
}

#[pymethods]
impl PyMockKafka {
    #[new]
    #[pyo3(signature = (brokers=1))]
    fn new(brokers: usize) -> PyResult<PyMockKafka> {
        let m = Mock::start(brokers).map_err(kafka_to_py)?;
        Ok(PyMockKafka {
            bootstrap: m.bootstrap_servers(),
            inner: parking_lot::Mutex::new(Some(m)),
        })
    }

    #[getter]
    fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    #[pyo3(signature = (name, partitions=1, replication=1))]
    fn create_topic(&self, name: &str, partitions: usize, replication: usize) -> PyResult<()> {
        self.create(name, partitions, replication)
            .map_err(kafka_to_py)
    }

    /// Take broker `broker` (1-based) down (`up=False`) or up.
    #[pyo3(signature = (broker, up))]
    fn set_broker_up(&self, broker: i32, up: bool) -> PyResult<()> {
        match self.inner.lock().as_ref() {
            Some(m) => m.set_broker_up(broker, up).map_err(kafka_to_py),
            None => Err(KafkaError::new_err("the mock cluster is stopped")),
        }
    }

    fn stop(&self, py: Python<'_>) {
        let m = self.inner.lock().take();
        py.detach(|| drop(m));
    }
}
