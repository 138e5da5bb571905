//! Throughput against librdkafka's in-memory mock cluster with the same client: 1M records of
//! 100 B produced (idempotent, acks=all) and consumed. Prints figures; not part of the test run:
//! `cargo test -p riverbed-server --test throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
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

/// End-to-end latency (send -> consumer poll) at `rate` records/s for `secs` seconds, with an
/// idempotent acks=all producer (linger 0) and an assigned consumer at the end of the topic.
/// Returns (p50, p99) in milliseconds.
fn latency(bootstrap: &str, topic: &str, rate: u64, secs: u64) -> (f64, f64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "latency")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    // Let the consumer reach the end before the clock starts.
    for _ in 0..10 {
        consumer.poll(Duration::from_millis(100));
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let epoch = Instant::now();
    let n = rate * secs;
    let mut lat = Vec::with_capacity(n as usize);
    let mut sent = 0u64;
    let mut warmup = 0u64;
    while (lat.len() as u64 + warmup) < n && epoch.elapsed() < Duration::from_secs(secs + 30) {
        let due = Duration::from_nanos(sent * 1_000_000_000 / rate);
        if sent < n && epoch.elapsed() >= due {
            let stamp = (epoch.elapsed().as_nanos() as u64).to_be_bytes();
            let _ = producer.send(
                BaseRecord::<'_, [u8], [u8]>::to(topic)
                    .partition(0)
                    .payload(&stamp[..]),
            );
            sent += 1;
            producer.poll(Duration::ZERO);
            continue;
        }
        producer.poll(Duration::ZERO);
        if let Some(Ok(m)) = consumer.poll(Duration::from_micros(200)) {
            let at = epoch.elapsed().as_nanos() as u64;
            let b = m.payload().unwrap_or_default();
            if b.len() == 8 {
                let t = u64::from_be_bytes(b.try_into().unwrap_or_default());
                // The first second warms up (connections, producer id): not measured.
                if t >= 1_000_000_000 {
                    lat.push((at - t) as f64 / 1e6);
                } else {
                    warmup += 1;
                }
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)];
    (q(0.50), q(0.99))
}

#[test]
#[ignore]
fn end_to_end_latency_at_10k_records_per_second() {
    let mock = MockCluster::new(1).expect("mock");
    mock.create_topic("lat", 1, 1).expect("topic");
    let (m50, m99) = latency(&mock.bootstrap_servers(), "lat", 10_000, 5);
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    log.topic("lat", &TopicOptions::default()).expect("topic");
    let server = Server::start(
        log.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        },
    )
    .expect("start");
    let (r50, r99) = latency(&server.bootstrap().to_string(), "lat", 10_000, 5);
    println!("end-to-end at 10k/s: mock p50 {m50:.2} ms p99 {m99:.2} ms; riverbed (fsync=batch) p50 {r50:.2} ms p99 {r99:.2} ms");
}
