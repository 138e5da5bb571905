//! Interop with a real Kafka client (librdkafka through the `rdkafka` crate): an idempotent
//! acks=all producer and an assigning consumer round-trip keys, values, headers, timestamps and
//! partitions; what a client produced is readable through the log directly and what the log's
//! API wrote is fetched by the client; every compression codec is stored as sent.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use riverbed_log::batch::RecordView;
use riverbed_log::{Log, LogOptions, RecordSink, StartSpec, TopicOptions};
use riverbed_server::{Server, ServerConfig};

#[derive(Default)]
struct Deliveries(Mutex<Vec<Result<(i32, i64), String>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let out = match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().expect("lock").push(out);
    }
}

/// One record as every side sees it: partition, key, value, headers, timestamp.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: u32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn serve(dir: &std::path::Path) -> (Log, Server) {
    let log = Log::open(dir, LogOptions::default()).expect("open log");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        group_initial_rebalance_delay_ms: 0,
        ..ServerConfig::default()
    };
    let server = Server::start(log.clone(), config).expect("start");
    (log, server)
}

fn records(n: usize, partitions: u32) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            partition: (i as u32 * 7) % partitions,
            key: (i % 5 != 0).then(|| format!("key-{i}").into_bytes()),
            value: (i % 11 != 3).then(|| format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes()),
            headers: if i % 3 == 0 {
                vec![
                    ("h1".into(), Some(format!("hv{i}").into_bytes())),
                    ("null".into(), None),
                ]
            } else {
                vec![]
            },
            timestamp: 1_700_000_000_000 + i as i64 * 13,
        })
        .collect()
}

fn produce(bootstrap: &str, topic: &str, recs: &[Rec], compression: &str) -> Vec<(i32, i64)> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .expect("producer");
    for r in recs {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(r.partition as i32)
            .timestamp(r.timestamp)
            .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(e.to_string().contains("Queue full"), "send failed: {e}");
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let got = producer.context().0.lock().expect("lock").clone();
    got.into_iter()
        .map(|r| r.expect("every record delivered"))
        .collect()
}

fn consume(bootstrap: &str, topic: &str, partitions: u32, want: usize) -> Vec<Rec> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("fetch without error");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Rec {
            partition: m.partition() as u32,
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|v| v.to_vec()),
            headers,
            timestamp: m.timestamp().to_millis().expect("timestamp"),
        });
    }
    // Nothing more than what was written arrives.
    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(300)) {
        panic!("unexpected extra record at offset {}", m.offset());
    }
    out
}

struct Collect(Vec<Rec>);

impl RecordSink for Collect {
    fn push(&mut self, partition: u32, r: &RecordView<'_>) {
        self.0.push(Rec {
            partition,
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
            headers: r
                .headers()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        v.map(|v| v.to_vec()),
                    )
                })
                .collect(),
            timestamp: r.timestamp,
        });
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

fn sorted(mut v: Vec<Rec>) -> Vec<Rec> {
    v.sort();
    v
}

#[test]
fn idempotent_producer_and_consumer_round_trip_through_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, server) = serve(dir.path());
    let bootstrap = server.bootstrap().to_string();
    let topic = log
        .topic(
            "events",
            &TopicOptions {
                partitions: Some(3),
                ..Default::default()
            },
        )
        .expect("topic");
    let recs = records(2_000, 3);
    let acks = produce(&bootstrap, "events", &recs, "none");
    assert_eq!(acks.len(), recs.len());
    // Offsets per partition are 0..n exactly once (no duplicates, no holes).
    let mut per_part: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in &acks {
        per_part.entry(*p).or_default().push(*o);
    }
    for (p, mut offs) in per_part {
        offs.sort_unstable();
        let n = offs.len() as i64;
        assert_eq!(offs, (0..n).collect::<Vec<_>>(), "partition {p}");
        assert_eq!(topic.partition(p as u32).expect("p").offsets(), (0, n));
    }
    // The log reads what the client wrote.
    let mut direct = Collect(Vec::new());
    topic
        .read_bounded(StartSpec::Earliest, StartSpec::Latest, &mut direct)
        .expect("read");
    assert_eq!(sorted(direct.0), sorted(recs.clone()));
    // The client reads it back.
    let fetched = consume(&bootstrap, "events", 3, recs.len());
    assert_eq!(sorted(fetched), sorted(recs));
    let metrics = server.metrics();
    assert!(
        metrics.contains("riverbed_records_produced_total 2000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("riverbed_partition_end_offset{topic=\"events\",partition=\"0\"}"),
        "{metrics}"
    );
    server.stop().expect("stop");
}

#[test]
fn records_written_through_the_log_api_are_fetched_by_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, server) = serve(dir.path());
    let topic = log
        .topic(
            "direct",
            &TopicOptions {
                partitions: Some(2),
                ..Default::default()
            },
        )
        .expect("topic");
    let recs = records(500, 2);
    for r in &recs {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_deref()))
            .collect();
        topic
            .produce(
                r.key.as_deref(),
                r.value.as_deref(),
                r.timestamp,
                &headers,
                Some(r.partition),
            )
            .expect("produce");
    }
    let fetched = consume(&server.bootstrap().to_string(), "direct", 2, recs.len());
    assert_eq!(sorted(fetched), sorted(recs));
}

#[test]
fn every_compression_codec_is_stored_as_sent_and_fetched_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, server) = serve(dir.path());
    let bootstrap = server.bootstrap().to_string();
    for (codec, id) in [("gzip", 1u8), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let name = format!("codec-{codec}");
        let topic = log.topic(&name, &TopicOptions::default()).expect("topic");
        let recs = records(300, 1);
        produce(&bootstrap, &name, &recs, codec);
        let headers = topic
            .partition(0)
            .expect("p")
            .tail_batch_headers(1 << 30)
            .expect("headers");
        assert!(!headers.is_empty());
        for h in &headers {
            assert_eq!(h.compression(), id, "{codec}: stored batch re-encoded");
            assert!(
                h.producer_id >= 0,
                "{codec}: idempotent batch lost its producer id"
            );
        }
        let count: i64 = headers.iter().map(|h| h.record_count as i64).sum();
        assert_eq!(count, 300);
        let fetched = consume(&bootstrap, &name, 1, recs.len());
        assert_eq!(sorted(fetched), sorted(recs), "{codec}");
    }
}
