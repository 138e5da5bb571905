//! The connector against librdkafka's mock cluster (real Kafka protocol on loopback).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use riverbed_kafka::consumer::{Start, TopicConsumer};
use riverbed_kafka::mock::Mock;
use riverbed_kafka::producer::KafkaProducer;
use riverbed_kafka::{Kafka, KafkaConfig, KafkaError};

fn config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap: bootstrap.to_string(),
        options: Vec::new(),
        timeout: Duration::from_secs(5),
    }
}

fn batch(n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("key-{}", i % 17)),
            )),
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| 1_700_000_000_000 + i),
            )),
        ],
    )
    .unwrap()
}

#[test]
fn produced_batches_come_back_with_keys_timestamps_and_kafkas_partitions() {
    let mock = Mock::start(1).unwrap();
    mock.create_topic("t", 5, 1).unwrap();
    let cfg = config(&mock.bootstrap_servers());
    let producer = KafkaProducer::new(&cfg).unwrap();
    let n = 500;
    assert_eq!(
        producer
            .send_batch(
                "t",
                &batch(n),
                &["k"],
                None,
                Some("ts"),
                &Default::default(),
                &[],
                true
            )
            .unwrap(),
        n
    );
    producer.flush("t").unwrap();
    assert_eq!(producer.delivered(), n as u64);

    let c = TopicConsumer::open(&cfg, "t", None, Start::Earliest, None, false).unwrap();
    assert_eq!(c.partitions, 5);
    let mut seen = Vec::new();
    while seen.len() < n {
        let b = c.poll_arrow(1000, Duration::from_secs(5)).unwrap();
        assert!(b.num_rows() > 0, "records missing after {}", seen.len());
        let parts = b
            .column_by_name("partition")
            .unwrap()
            .as_primitive::<arrow_array::types::Int32Type>();
        let keys = b.column_by_name("key").unwrap().as_binary::<i32>();
        let values = b.column_by_name("value").unwrap().as_binary::<i32>();
        let ts = b
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<arrow_array::types::TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            let key = keys.value(i);
            // the partition Java clients and the embedded log choose for the key
            assert_eq!(
                parts.value(i) as u32,
                riverbed_log::partitioner::partition_for_key(key, 5)
            );
            let v: serde_json::Value = serde_json::from_slice(values.value(i)).unwrap();
            assert_eq!(v["ts"].as_i64().unwrap(), ts.value(i));
            assert_eq!(
                format!("key-{}", v["v"].as_i64().unwrap() % 17).as_bytes(),
                key
            );
            seen.push(v["v"].as_i64().unwrap());
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..n as i64).collect::<Vec<_>>());
}

#[test]
fn metadata_errors_name_the_topic_and_the_unreachable_cluster() {
    let mock = Mock::start(1).unwrap();
    mock.create_topic("exists", 2, 1).unwrap();
    let kafka = Kafka::new(config(&mock.bootstrap_servers())).unwrap();
    assert_eq!(kafka.partitions("exists").unwrap(), 2);
    assert!(kafka.topics().unwrap().contains(&("exists".to_string(), 2)));
    match kafka.partitions("missing") {
        Err(KafkaError::UnknownTopic { topic, .. }) => assert_eq!(topic, "missing"),
        other => panic!("expected UnknownTopic, got {other:?}"),
    }
    let producer = KafkaProducer::new(&kafka.config).unwrap();
    assert!(matches!(
        producer.send_batch(
            "missing",
            &batch(1),
            &[],
            None,
            None,
            &Default::default(),
            &[],
            true
        ),
        Err(KafkaError::UnknownTopic { .. })
    ));

    let mut cfg = config("127.0.0.1:9");
    cfg.timeout = Duration::from_millis(800);
    let down = Kafka::new(cfg).unwrap();
    let t0 = std::time::Instant::now();
    match down.topics() {
        Err(KafkaError::Unreachable { bootstrap, .. }) => assert_eq!(bootstrap, "127.0.0.1:9"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_invalid_property_is_a_config_error() {
    let mut cfg = config("localhost:9092");
    cfg.options.push(("no.such.property".into(), "1".into()));
    match Kafka::new(cfg) {
        Err(KafkaError::Config(m)) => assert!(m.contains("no.such.property"), "{m}"),
        Err(e) => panic!("expected Config, got {e:?}"),
        Ok(_) => panic!("expected Config, got a client"),
    }
}
