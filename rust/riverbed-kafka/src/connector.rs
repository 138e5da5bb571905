//! A Kafka cluster as the home of a group run's internal topics (riverbed-stream's
//! `Connector`): the repartition topics between its stages are created on the cluster the run
//! reads, written through an idempotent producer, and read with a consumer group of their own.

use std::sync::{Arc, OnceLock};

use arrow_schema::SchemaRef;
use riverbed_stream::{Connector, Format, Result as StreamResult, Sink, SourceSpec, StreamError};

use crate::client::{Kafka, KafkaConfig};
use crate::consumer::Start;
use crate::producer::KafkaProducer;
use crate::sink::KafkaSink;
use crate::source::KafkaTopicSource;

/// Internal topics hold the stages' records as JSON objects, read in batches of this many.
const BATCH: usize = 65_536;

/// Creates a topic of so many partitions some other way than the admin API (librdkafka's mock
/// cluster has none).
pub type CreateTopic = Arc<dyn Fn(&str, usize) -> crate::Result<()> + Send + Sync>;

pub struct KafkaConnector {
    config: KafkaConfig,
    producer: OnceLock<Arc<KafkaProducer>>,
    create: Option<CreateTopic>,
}

impl KafkaConnector {
    pub fn new(config: KafkaConfig) -> KafkaConnector {
        KafkaConnector {
            config,
            producer: OnceLock::new(),
            create: None,
        }
    }

    /// Topics are created by `create` rather than through the admin API.
    pub fn creating_topics_with(mut self, create: CreateTopic) -> KafkaConnector {
        self.create = Some(create);
        self
    }

    fn producer(&self) -> crate::Result<Arc<KafkaProducer>> {
        if let Some(p) = self.producer.get() {
            return Ok(p.clone());
        }
        let p = Arc::new(KafkaProducer::new(&self.config)?);
        Ok(self.producer.get_or_init(|| p).clone())
    }
}

impl Connector for KafkaConnector {
    fn ensure_topic(&self, name: &str, partitions: usize) -> StreamResult<()> {
        let kafka = Kafka::new(self.config.clone())?;
        let exists =
            |k: &Kafka| -> crate::Result<bool> { Ok(k.topics()?.iter().any(|(t, _)| t == name)) };
        if let Some((_, n)) = kafka.topics()?.into_iter().find(|(t, _)| t == name) {
            if n != partitions {
                return Err(StreamError::plan(
                    "repartition",
                    format!(
                        "the internal topic '{name}' has {n} partitions and the input {partitions}: a repartition topic has its input's partition count (the input gained partitions since it was made?); run under a new group (or name=), or delete the topic and the group's checkpoints to start over"
                    ),
                ));
            }
            return Ok(());
        }
        let created = match &self.create {
            Some(create) => create(name, partitions).and_then(|()| {
                // The metadata shows a new topic a little after it is made.
                let deadline = std::time::Instant::now() + self.config.timeout;
                while !exists(&kafka)? && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(())
            }),
            None => kafka.create_topic(name, partitions, 1, &[]),
        };
        match created {
            Ok(()) => Ok(()),
            // Another member of the group created it meanwhile.
            Err(_) if exists(&kafka)? => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn source(
        &self,
        name: &str,
        group: &str,
        schema: SchemaRef,
        writers: usize,
    ) -> StreamResult<SourceSpec> {
        let mut s = KafkaTopicSource::new(
            &self.config,
            name,
            Some(group),
            Start::Earliest,
            Format::Json,
            Some(schema),
            BATCH,
        )?;
        s.writers = Some(writers);
        Ok(SourceSpec::External(Arc::new(s)))
    }

    fn sink(
        &self,
        name: &str,
        key: &str,
        timestamp: Option<String>,
        partitions: usize,
    ) -> StreamResult<Box<dyn Sink>> {
        Ok(Box::new(KafkaSink {
            producer: self.producer()?,
            topic: name.to_string(),
            keys: vec![key.to_string()],
            timestamp,
            repartition: Some(partitions),
            provisional: None,
            tagger: Default::default(),
        }))
    }
}
