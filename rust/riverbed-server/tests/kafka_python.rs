//! Interop with an independent implementation of the protocol: kafka-python (pure Python, its
//! own encoder and decoder). Its idempotent producer writes (gzip, headers, timestamps, keys),
//! the log reads exactly that, and its consumer reads back records the log's own API wrote.
//! Needs `python3` with `kafka-python` installed (the README's set-up installs it).

use std::process::Command;

use riverbed_log::batch::RecordView;
use riverbed_log::{Log, LogOptions, RecordSink, StartSpec, TopicOptions};
use riverbed_server::{Server, ServerConfig};

const SCRIPT: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
b = sys.argv[1]
p = KafkaProducer(bootstrap_servers=b, acks="all", enable_idempotence=True,
                  compression_type="gzip")
fs = [p.send("frompy", key=b"k%d" % i, value=b"v%d" % i, partition=i % 2,
             headers=[("n", b"%d" % i)], timestamp_ms=1700000000000 + i) for i in range(200)]
p.flush()
for f in fs:
    f.get(timeout=10)
plain = KafkaProducer(bootstrap_servers=b, acks="all", enable_idempotence=True)
for i in range(20):
    plain.send("plain", key=b"pk%d" % i, value=b"pv%d" % i, partition=0,
               headers=[("h", b"x%d" % i)], timestamp_ms=1800000000000 + i)
plain.flush()
c = KafkaConsumer(bootstrap_servers=b, enable_auto_commit=False, consumer_timeout_ms=5000)
c.assign([TopicPartition("fromlog", 0)])
c.seek_to_beginning()
for m in c:
    print("%d %s %s %d %s" % (m.offset, m.key.decode(), m.value.decode(), m.timestamp,
                              ",".join(k + "=" + v.decode() for k, v in m.headers)))
"#;

struct Rows(Vec<(u32, String, String, i64, String)>);

impl RecordSink for Rows {
    fn push(&mut self, p: u32, r: &RecordView<'_>) {
        let s = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let h: Vec<String> = r
            .headers()
            .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), s(v)))
            .collect();
        self.0
            .push((p, s(r.key), s(r.value), r.timestamp, h.join(",")));
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[test]
fn kafka_python_produces_and_consumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("log");
    let two = TopicOptions {
        partitions: Some(2),
        ..Default::default()
    };
    let from_py = log.topic("frompy", &two).expect("topic");
    let from_log = log
        .topic("fromlog", &TopicOptions::default())
        .expect("topic");
    for i in 0..50i64 {
        let (k, v, n) = (format!("lk{i}"), format!("lv{i}"), format!("{i}"));
        from_log
            .produce(
                Some(k.as_bytes()),
                Some(v.as_bytes()),
                1_600_000_000_000 + i,
                &[(b"n".as_slice(), Some(n.as_bytes()))],
                Some(0),
            )
            .expect("produce");
    }
    let server = Server::start(
        log.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        },
    )
    .expect("start");
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &server.bootstrap().to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka-python failed (is it installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What kafka-python read back is what the log API wrote.
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..50i64)
        .map(|i| format!("{i} lk{i} lv{i} {} n={i}", 1_600_000_000_000 + i))
        .collect();
    assert_eq!(lines, want);
    // What kafka-python wrote (gzip batches, stored as sent) is what the log holds.
    let p0 = from_py.partition(0).expect("p0");
    let headers = p0.tail_batch_headers(1 << 30).expect("headers");
    // (kafka-python leaves a batch uncompressed when gzip would not make it smaller.)
    assert!(
        headers.iter().any(|h| h.compression() == 1)
            && headers
                .iter()
                .all(|h| h.compression() <= 1 && h.producer_id >= 0),
        "{headers:?}"
    );
    // Uncompressed batches from kafka-python read record by record through the log.
    let mut rows = Rows(Vec::new());
    log.get_topic("plain")
        .expect("auto-created by the producer's metadata request")
        .read_bounded(StartSpec::Earliest, StartSpec::Latest, &mut rows)
        .expect("read");
    let want: Vec<(u32, String, String, i64, String)> = (0..20i64)
        .map(|i| {
            (
                0,
                format!("pk{i}"),
                format!("pv{i}"),
                1_800_000_000_000 + i,
                format!("h=x{i}"),
            )
        })
        .collect();
    assert_eq!(rows.0, want);
    let count: i64 = from_py
        .offsets()
        .expect("offsets")
        .iter()
        .map(|(a, b)| b - a)
        .sum();
    assert_eq!(count, 200, "each record once");
    assert_eq!(from_py.partition(1).expect("p1").offsets(), (0, 100));
}
