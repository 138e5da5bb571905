//! Throughput against librdkafka's in-memory mock cluster with the same client: 1M records of
//! 100 B produced (idempotent, acks=all) and consumed. Prints figures; not part of the test run:
//! `cargo test -p riverbed-server --test throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use riverbed_log::{Log, LogOptions, TopicOptions};
use riverbed_server::{Server, ServerConfig};

const N: usize = 1_000_000;
const PARTITIONS: i32 = 4;

fn produce(bootstrap: &str) -> Duration {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let value = [b'x'; 100];
    let started = Instant::now();
    for i in 0..N {
        let mut rec = BaseRecord::<'_, [u8], [u8]>::to("bench")
            .partition(i as i32 % PARTITIONS)
            .payload(&value);
        while let Err((_, back)) = producer.send(rec) {
            producer.poll(Duration::from_millis(1));
            rec = back;
        }
        if i.is_multiple_of(1000) {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    started.elapsed()
}

/// Consume what the partitions hold (the mock cluster keeps only its latest segments);
/// returns (records, time).
fn consume(bootstrap: &str, per_partition: Option<i64>) -> (usize, Duration) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut want = 0usize;
    for p in 0..PARTITIONS {
        let (lo, hi) = consumer
            .fetch_watermarks("bench", p, Duration::from_secs(10))
            .expect("watermarks");
        let from = per_partition.map_or(lo, |n| (hi - n).max(lo));
        want += (hi - from) as usize;
        tpl.add_partition_offset("bench", p, Offset::Offset(from))
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut n = 0;
    while n < want {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m.expect("message");
            n += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {n} consumed"
        );
    }
    (want, started.elapsed())
}

fn rate(d: Duration) -> f64 {
    N as f64 / d.as_secs_f64()
}

fn crate_of((n, d): (usize, Duration)) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[test]
#[ignore]
fn produce_and_consume_versus_the_mock_cluster() {
    let mock = MockCluster::new(1).expect("mock");
    mock.create_topic("bench", PARTITIONS, 1).expect("topic");
    let mock_bootstrap = mock.bootstrap_servers();
    let mock_p = produce(&mock_bootstrap);
    let mock_c = consume(&mock_bootstrap, None);

    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic(
        "bench",
        &TopicOptions {
            partitions: Some(PARTITIONS as u32),
            ..Default::default()
        },
    )
    .expect("topic");
    let server = Server::start(
        log.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        },
    )
    .expect("start");
    let rb = server.bootstrap().to_string();
    let rb_p = produce(&rb);
    // The same number of records as the mock kept (its tail), then all of them.
    let rb_c = consume(&rb, Some(mock_c.0 as i64 / i64::from(PARTITIONS)));
    let rb_all = consume(&rb, None);
    let fsyncs = server
        .metrics()
        .lines()
        .find(|l| l.starts_with("riverbed_fsyncs_total"))
        .unwrap_or_default()
        .to_string();
    println!(
        "produce {N} x 100 B: mock {:.0}/s, riverbed (fsync=batch) {:.0}/s = {:.2}x ({fsyncs})",
        rate(mock_p),
        rate(rb_p),
        rate(rb_p) / rate(mock_p)
    );
    println!(
        "consume: mock {:.0}/s ({} records kept), riverbed {:.0}/s ({} records) = {:.2}x",
        crate_of(mock_c),
        mock_c.0,
        crate_of(rb_c),
        rb_c.0,
        crate_of(rb_c) / crate_of(mock_c)
    );
    println!(
        "consume all {} records from riverbed: {:.0}/s (librdkafka's fetch.queue.backoff.ms \
         pauses fetching once its queue passes queued.min.messages; the mock never gets there)",
        rb_all.0,
        crate_of(rb_all)
    );
}
