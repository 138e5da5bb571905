//! Crash test: an idempotent acks=all producer writes while the broker (the `serve` example, a
//! child process) is killed with SIGKILL and restarted on the same port, again and again. Every
//! acknowledged record is in the log exactly once, in order per partition, and nothing is there
//! twice.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use riverbed_log::batch::RecordView;
use riverbed_log::{Log, LogOptions, RecordSink, StartSpec, TopicOptions};

const PARTITIONS: u32 = 2;
const KILLS: usize = 20;

fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let debug = exe.parent().and_then(Path::parent).expect("target dir");
    debug.join("examples").join("serve")
}

fn start(dir: &Path, port: u16) -> Child {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut child = Command::new(example_binary())
            .arg(dir)
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        let _ = BufReader::new(out).read_line(&mut line);
        if line.starts_with("bootstrap=") {
            return child;
        }
        // The previous process's lock or port may not be released yet.
        let _ = child.kill();
        let _ = child.wait();
        assert!(Instant::now() < deadline, "serve did not start: {line:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Default)]
struct Acks(Mutex<Vec<(i32, String)>>, Mutex<Vec<String>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.0.lock().expect("lock").push((m.partition(), v));
            }
            Err((e, _)) => self.1.lock().expect("lock").push(e.to_string()),
        }
    }
}

struct Values(BTreeMap<u32, Vec<String>>);

impl RecordSink for Values {
    fn push(&mut self, partition: u32, r: &RecordView<'_>) {
        let v = String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned();
        self.0.entry(partition).or_default().push(v);
    }
    fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[test]
fn acknowledged_records_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), LogOptions::default()).expect("log");
        log.topic(
            "crash",
            &TopicOptions {
                partitions: Some(PARTITIONS),
                ..Default::default()
            },
        )
        .expect("topic");
        log.close().expect("close");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = start(dir.path(), port);
    let producer: Arc<BaseProducer<Acks>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "120000")
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "100")
            .set("retry.backoff.ms", "10")
            .create_with_context(Acks::default())
            .expect("producer"),
    );
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (producer, done) = (producer.clone(), done.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                for p in 0..PARTITIONS {
                    let v = format!("{p}-{i:09}");
                    let mut rec = BaseRecord::<'_, [u8], [u8]>::to("crash")
                        .partition(p as i32)
                        .payload(v.as_bytes());
                    while let Err((_, back)) = producer.send(rec) {
                        producer.poll(Duration::from_millis(5));
                        rec = back;
                    }
                }
                i += 1;
                if i.is_multiple_of(50) {
                    producer.poll(Duration::from_millis(1));
                }
            }
            producer.flush(Duration::from_secs(120)).expect("flush");
        })
    };
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(250));
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        child = start(dir.path(), port);
    }
    std::thread::sleep(Duration::from_millis(250));
    done.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    drop(child.stdin.take()); // clean stop
    child.wait().expect("wait");

    let acked = producer.context().0.lock().expect("lock").clone();
    let failed = producer.context().1.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "deliveries failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        acked.len() > 1000,
        "too few acknowledged records: {}",
        acked.len()
    );
    eprintln!(
        "{} records acknowledged across {KILLS} kill -9 restarts",
        acked.len()
    );
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    let mut stored = Values(BTreeMap::new());
    log.get_topic("crash")
        .expect("topic")
        .read_bounded(StartSpec::Earliest, StartSpec::Latest, &mut stored)
        .expect("read");
    for p in 0..PARTITIONS {
        let vals = stored.0.get(&p).cloned().unwrap_or_default();
        // In order and never twice: strictly increasing.
        for w in vals.windows(2) {
            assert!(w[0] < w[1], "partition {p}: {} then {}", w[0], w[1]);
        }
        let set: std::collections::BTreeSet<&String> = vals.iter().collect();
        for (ap, v) in &acked {
            if *ap == p as i32 {
                assert!(
                    set.contains(v),
                    "acknowledged {v} missing from partition {p}"
                );
            }
        }
    }
}
