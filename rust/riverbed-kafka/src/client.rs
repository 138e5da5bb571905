//! A Kafka cluster: its configuration (bootstrap servers plus any librdkafka property), its
//! metadata (topics and partition counts) and admin calls, each bounded by a timeout and
//! failing with an error that says what could not be reached or found.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientContext;

use crate::error::{classify, KafkaError, Result};

/// How to reach a cluster: bootstrap servers, librdkafka properties (`security.protocol`,
/// `sasl.*`, ...) and how long a call may take before it fails.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap: String,
    pub options: Vec<(String, String)>,
    pub timeout: Duration,
}

impl KafkaConfig {
    /// librdkafka's configuration for a client, with `defaults` unless the user set them.
    pub(crate) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        // Warnings and errors reach the client context (kept to explain failures, not printed).
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        // librdkafka's lower bounds: 10 ms and 1 s.
        let ms = self.timeout.as_millis().max(10).to_string();
        let setup_ms = self.timeout.as_millis().max(1000).to_string();
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in [
            ("socket.timeout.ms", ms.as_str()),
            ("socket.connection.setup.timeout.ms", setup_ms.as_str()),
        ] {
            c.set(k, v);
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// The error for a failed call: an authentication failure or unreachable brokers when the
    /// client reported one, else librdkafka's error.
    pub(crate) fn error(
        &self,
        e: &rdkafka::error::KafkaError,
        ctx: &ErrorLog,
        what: &str,
    ) -> KafkaError {
        let seen = ctx.last();
        if let Some(m) = seen.iter().find(|m| {
            let l = m.to_ascii_lowercase();
            // "SSL handshake failed", or a reset "in state SSL_HANDSHAKE" / "AUTH_..."
            l.contains("authentication")
                || l.contains("sasl")
                || l.contains("in state auth_")
                || l.contains("ssl handshake")
                || l.contains("ssl_handshake")
        }) {
            return KafkaError::Authentication {
                bootstrap: self.bootstrap.clone(),
                message: m.clone(),
            };
        }
        match classify(e, &self.bootstrap, self.timeout, what) {
            KafkaError::Unreachable {
                bootstrap,
                timeout,
                message,
            } => KafkaError::Unreachable {
                bootstrap,
                timeout,
                message: match seen.last() {
                    Some(last) => format!("{message} (last error: {last})"),
                    None => message,
                },
            },
            other => other,
        }
    }
}

/// A client context that keeps librdkafka's recent error reports (connection refused, SASL
/// failures, ...), to explain a failed call.
#[derive(Default, Clone)]
pub struct ErrorLog {
    errors: Arc<Mutex<Vec<String>>>,
}

impl ErrorLog {
    pub fn last(&self) -> Vec<String> {
        self.errors.lock().clone()
    }
}

impl ErrorLog {
    fn push(&self, message: String) {
        let mut e = self.errors.lock();
        if e.len() >= 8 {
            e.remove(0);
        }
        e.push(message);
    }
}

/// librdkafka's warnings and errors are kept (not printed) to explain a failed call; they come
/// as log lines (served by librdkafka's own threads) more often than as error events.
impl ClientContext for ErrorLog {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.push(format!("{error}: {reason}"));
    }
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, _fac: &str, message: &str) {
        if (level as i32) <= rdkafka::config::RDKafkaLogLevel::Warning as i32 {
            self.push(message.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorLog {}

/// A Kafka cluster.
pub struct Kafka {
    pub config: KafkaConfig,
    meta: BaseConsumer<ErrorLog>,
    meta_log: ErrorLog,
}

impl Kafka {
    /// Check the configuration (no connection is made until a call needs one).
    pub fn new(config: KafkaConfig) -> Result<Kafka> {
        let meta_log = ErrorLog::default();
        let meta = config
            .client(&[])
            .create_with_context(meta_log.clone())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(Kafka {
            config,
            meta,
            meta_log,
        })
    }

    /// Every topic (but Kafka's internal ones) with its partition count, sorted by name.
    pub fn topics(&self) -> Result<Vec<(String, usize)>> {
        let md = self
            .meta
            .fetch_metadata(None, self.config.timeout)
            .map_err(|e| {
                serve_events(&self.meta);
                self.config.error(&e, &self.meta_log, "listing topics")
            })?;
        let mut out: Vec<(String, usize)> = md
            .topics()
            .iter()
            .filter(|t| !t.name().starts_with("__") && t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The number of partitions of `topic`; `UnknownTopic` if it does not exist.
    pub fn partitions(&self, topic: &str) -> Result<usize> {
        partitions(&self.meta, &self.meta_log, &self.config, topic)
    }

    /// Create a topic through the admin API (`config`: topic configs such as
    /// `cleanup.policy`). Fails if it exists.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: usize,
        replication: usize,
        config: &[(String, String)],
    ) -> Result<()> {
        let log = ErrorLog::default();
        let admin: AdminClient<ErrorLog> = self
            .config
            .client(&[])
            .create_with_context(log.clone())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let mut t = NewTopic::new(
            name,
            partitions as i32,
            TopicReplication::Fixed(replication as i32),
        );
        for (k, v) in config {
            t = t.set(k, v);
        }
        let opts = AdminOptions::new()
            .request_timeout(Some(self.config.timeout))
            .operation_timeout(Some(self.config.timeout));
        let results =
            futures_executor::block_on(admin.create_topics([&t], &opts)).map_err(|e| {
                self.config
                    .error(&e, &log, &format!("creating topic '{name}'"))
            })?;
        for r in results {
            if let Err((topic, code)) = r {
                return Err(crate::error::classify_code(
                    Some(code),
                    &code.to_string(),
                    &self.config.bootstrap,
                    self.config.timeout,
                    &format!("cannot create topic '{topic}'"),
                ));
            }
        }
        // The metadata shows a new topic a little after the broker created it.
        let deadline = std::time::Instant::now() + self.config.timeout;
        loop {
            match self.partitions(name) {
                Ok(n) if n == partitions => return Ok(()),
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(n) => {
                    return Err(KafkaError::Other(format!(
                        "topic '{name}' was created with {n} partitions, not {partitions}"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Serve a client's queued events (its log lines and errors reach its context only when it is
/// polled), so a failed call can say what went wrong.
pub(crate) fn serve_events<C: rdkafka::consumer::ConsumerContext>(client: &BaseConsumer<C>) {
    for _ in 0..64 {
        if client.poll(Duration::ZERO).is_none() {
            break;
        }
    }
}

/// The partition count of `topic` as `client` sees it.
pub(crate) fn partitions<C: rdkafka::consumer::ConsumerContext>(
    client: &BaseConsumer<C>,
    log: &ErrorLog,
    config: &KafkaConfig,
    topic: &str,
) -> Result<usize> {
    let md = client
        .fetch_metadata(Some(topic), config.timeout)
        .map_err(|e| {
            serve_events(client);
            config.error(&e, log, &format!("reading metadata of topic '{topic}'"))
        })?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        Some(t) if t.error().is_some() => {
            let code = t.error();
            match code {
                Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                | None => Err(KafkaError::UnknownTopic {
                    topic: topic.into(),
                    bootstrap: config.bootstrap.clone(),
                }),
                Some(c) => Err(KafkaError::Other(format!(
                    "topic '{topic}': {}",
                    rdkafka::types::RDKafkaErrorCode::from(c)
                ))),
            }
        }
        _ => Err(KafkaError::UnknownTopic {
            topic: topic.into(),
            bootstrap: config.bootstrap.clone(),
        }),
    }
}
