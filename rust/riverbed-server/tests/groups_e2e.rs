//! End to end with a real Kafka client: three librdkafka consumers (the `rdkafka` crate), each
//! in its own process, form one group over a 6-partition topic served by riverbed. They split
//! it, rebalance when one leaves (LeaveGroup) and when one is killed with SIGKILL (session
//! timeout), and together read every record exactly once, each counted only once its offset
//! is committed.
//!
//! The consumer processes are this test binary again, running the ignored test
//! `e2e_child_consumer` with `RB_E2E_*` in the environment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::Offset;
use riverbed_log::{Log, LogOptions, TopicOptions};
use riverbed_server::{Server, ServerConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOPIC: &str = "orders";
const GROUP: &str = "e2e";
const PARTITIONS: i32 = 6;
const SESSION_MS: u64 = 3_000;

/// Lines the consumer processes printed: records (consumer, partition, offset) and their
/// latest assignment.
#[derive(Default)]
struct Seen {
    records: Vec<(String, i32, i64)>,
    assignment: BTreeMap<String, Vec<i32>>,
}

struct ConsumerProcess {
    name: String,
    child: Child,
    stop_file: PathBuf,
}

impl Drop for ConsumerProcess {
    /// No consumer outlives the test, also when it fails.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_consumer(
    name: &str,
    bootstrap: &str,
    dir: &std::path::Path,
    seen: &Arc<Mutex<Seen>>,
) -> Result<ConsumerProcess, Box<dyn std::error::Error>> {
    let stop_file = dir.join(format!("stop-{name}"));
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--ignored",
            "--exact",
            "e2e_child_consumer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RB_E2E_BOOTSTRAP", bootstrap)
        .env("RB_E2E_NAME", name)
        .env("RB_E2E_STOP", &stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let seen = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // libtest's "test ... " may precede our first line on the same line.
            let at = ["REC ", "ASSIGN "]
                .iter()
                .filter_map(|m| line.find(m))
                .min();
            let Some(at) = at else { continue };
            let words: Vec<&str> = line[at..].split_whitespace().collect();
            let mut seen = seen.lock().expect("lock");
            match words.as_slice() {
                ["REC", who, p, o] => {
                    if let (Ok(p), Ok(o)) = (p.parse(), o.parse()) {
                        seen.records.push((who.to_string(), p, o));
                    }
                }
                ["ASSIGN", who, rest @ ..] => {
                    let parts = rest.iter().filter_map(|p| p.parse().ok()).collect();
                    seen.assignment.insert(who.to_string(), parts);
                }
                _ => {}
            }
        }
    });
    Ok(ConsumerProcess {
        name: name.to_string(),
        child,
        stop_file,
    })
}

fn wait_for(
    seen: &Arc<Mutex<Seen>>,
    what: &str,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let ok = done(&*seen.lock().map_err(|_| "lock")?);
        if ok {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = seen.lock().map_err(|_| "lock")?;
    Err(format!(
        "timed out waiting for {what}: assignment {:?}, {} records",
        s.assignment,
        s.records.len()
    )
    .into())
}

/// The members in `names` hold disjoint partitions covering the topic, `each` apiece.
fn split_among(s: &Seen, names: &[&str], each: usize) -> bool {
    let mut all = BTreeSet::new();
    for n in names {
        match s.assignment.get(*n) {
            Some(parts) if parts.len() == each => all.extend(parts.iter().copied()),
            _ => return false,
        }
    }
    all.len() == PARTITIONS as usize
}

fn produce(
    log: &Log,
    round: usize,
    per_partition: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    let topic = log.get_topic(TOPIC)?;
    for p in 0..PARTITIONS as u32 {
        for i in 0..per_partition {
            let v = format!("r{round}-p{p}-{i}");
            topic.produce(
                Some(v.as_bytes()),
                Some(v.as_bytes()),
                1_700_000_000_000,
                &[],
                Some(p),
            )?;
        }
    }
    Ok(PARTITIONS as usize * per_partition)
}

#[test]
fn three_consumer_processes_split_rebalance_and_read_everything_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"), LogOptions::default())?;
    log.topic(
        TOPIC,
        &TopicOptions {
            partitions: Some(PARTITIONS as u32),
            ..Default::default()
        },
    )?;
    let server = Server::start(
        log.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 500,
            ..ServerConfig::default()
        },
    )?;
    let bootstrap = server.bootstrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut procs = Vec::new();
    for name in ["c0", "c1", "c2"] {
        procs.push(spawn_consumer(name, &bootstrap, dir.path(), &seen)?);
    }
    // three members: two partitions each; then each reads its own two
    wait_for(&seen, "a 3-way split", Duration::from_secs(60), |s| {
        split_among(s, &["c0", "c1", "c2"], 2)
    })?;
    let mut total = produce(&log, 0, 100)?;
    wait_for(&seen, "round 0 read", Duration::from_secs(60), |s| {
        s.records.len() >= total
    })?;
    {
        let s = seen.lock().map_err(|_| "lock")?;
        for name in ["c0", "c1", "c2"] {
            let read: BTreeSet<i32> = s
                .records
                .iter()
                .filter(|(who, _, _)| who == name)
                .map(|(_, p, _)| *p)
                .collect();
            let owned: BTreeSet<i32> = s.assignment[name].iter().copied().collect();
            assert_eq!(read, owned, "{name} read partitions it was not assigned");
        }
    }

    // c2 leaves cleanly: LeaveGroup, so the others take over well before a session timeout
    std::fs::write(&procs[2].stop_file, b"")?;
    let left = Instant::now();
    let status = procs[2].child.wait()?;
    assert!(status.success(), "{} exited with {status}", procs[2].name);
    wait_for(&seen, "a 2-way split", Duration::from_secs(60), |s| {
        split_among(s, &["c0", "c1"], 3)
    })?;
    let after_leave = left.elapsed();
    assert!(
        after_leave < Duration::from_millis(SESSION_MS - 500),
        "rebalance after a clean leave took {after_leave:?}"
    );
    total += produce(&log, 1, 100)?;
    wait_for(&seen, "round 1 read", Duration::from_secs(60), |s| {
        s.records.len() >= total
    })?;

    // c1 is killed (no LeaveGroup, no more heartbeats): evicted after its session timeout.
    // It is idle (everything so far read and committed): a consumer killed between its commit
    // and its own record of it could make "exactly once" unprovable, not wrong.
    procs[1].child.kill()?;
    let killed = Instant::now();
    procs[1].child.wait()?;
    // written while c1's partitions have no live owner: c0 must take them over from c1's commits
    total += produce(&log, 2, 50)?;
    wait_for(&seen, "c0 alone", Duration::from_secs(60), |s| {
        split_among(s, &["c0"], 6)
    })?;
    let after_kill = killed.elapsed();
    assert!(
        after_kill >= Duration::from_millis(SESSION_MS / 2),
        "c1 evicted after {after_kill:?}, before its session could end"
    );
    assert!(
        after_kill < Duration::from_millis(SESSION_MS * 4),
        "{after_kill:?}"
    );
    println!(
        "figures: 2-way split {after_leave:?} after a LeaveGroup; c0 alone {after_kill:?} after \
         SIGKILL (session timeout {SESSION_MS} ms)"
    );
    total += produce(&log, 3, 50)?;
    if let Err(e) = wait_for(&seen, "everything read", Duration::from_secs(30), |s| {
        s.records.len() >= total
    }) {
        let s = seen.lock().map_err(|_| "lock")?;
        let got: BTreeSet<(i32, i64)> = s.records.iter().map(|(_, p, o)| (*p, *o)).collect();
        let end = log.get_topic(TOPIC)?.offsets()?;
        let missing: Vec<(i32, i64)> = end
            .iter()
            .enumerate()
            .flat_map(|(p, (e, l))| (*e..*l).map(move |o| (p as i32, o)))
            .filter(|k| !got.contains(k))
            .collect();
        let near: Vec<&(String, i32, i64)> = s
            .records
            .iter()
            .filter(|(_, p, o)| {
                missing
                    .iter()
                    .any(|(mp, mo)| mp == p && (o - mo).abs() <= 2)
            })
            .collect();
        return Err(format!("{e}; missing {missing:?}; around them {near:?}").into());
    }
    // a moment for any duplicate to show up
    std::thread::sleep(Duration::from_millis(500));

    std::fs::write(&procs[0].stop_file, b"")?;
    procs[0].child.wait()?;
    let s = seen.lock().map_err(|_| "lock")?;
    let mut read: Vec<(i32, i64)> = s.records.iter().map(|(_, p, o)| (*p, *o)).collect();
    read.sort_unstable();
    let unique: BTreeSet<(i32, i64)> = read.iter().copied().collect();
    assert_eq!(read.len(), unique.len(), "some records were read twice");
    let end = log.get_topic(TOPIC)?.offsets()?;
    let expected: BTreeSet<(i32, i64)> = end
        .iter()
        .enumerate()
        .flat_map(|(p, (e, l))| (*e..*l).map(move |o| (p as i32, o)))
        .collect();
    assert_eq!(expected.len(), total);
    assert_eq!(unique, expected);
    // every consumer read something, and the group's committed offsets are the end offsets
    for name in ["c0", "c1", "c2"] {
        assert!(
            s.records.iter().any(|(who, _, _)| who == name),
            "{name} read nothing"
        );
    }
    for (p, (_, latest)) in end.iter().enumerate() {
        assert_eq!(
            log.groups().committed(GROUP, TOPIC, p as u32),
            Some(*latest)
        );
    }
    drop(s);
    server.stop()?;
    Ok(())
}

/// One consumer process of the test above (does nothing unless started by it).
#[test]
#[ignore = "run as a child process by three_consumer_processes_split_rebalance_and_read_everything_once"]
fn e2e_child_consumer() -> TestResult {
    let (Ok(bootstrap), Ok(name), Ok(stop)) = (
        std::env::var("RB_E2E_BOOTSTRAP"),
        std::env::var("RB_E2E_NAME"),
        std::env::var("RB_E2E_STOP"),
    ) else {
        return Ok(());
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", GROUP)
        .set("client.id", &name)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_MS.to_string())
        .set("heartbeat.interval.ms", "250")
        .set("partition.assignment.strategy", "range")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let mut shown: Option<Vec<i32>> = None;
    while !std::path::Path::new(&stop).exists() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (p, o) = (m.partition(), m.offset());
                // Counted only once committed; otherwise read it again (if still ours).
                match consumer.commit_message(&m, CommitMode::Sync) {
                    Ok(()) => println!("REC {name} {p} {o}"),
                    Err(e) => {
                        eprintln!("{name}: commit of {p}@{o} failed: {e}");
                        let _ = consumer.seek(TOPIC, p, Offset::Offset(o), Duration::from_secs(2));
                    }
                }
            }
            Some(Err(e)) => eprintln!("{name}: {e}"),
            None => {}
        }
        let mut parts: Vec<i32> = consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        parts.sort_unstable();
        if shown.as_ref() != Some(&parts) {
            let list: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
            println!("ASSIGN {name} {}", list.join(" "));
            shown = Some(parts);
        }
    }
    // Dropping the consumer closes it: LeaveGroup.
    drop(consumer);
    Ok(())
}

/// Poll `consumer` until `want` records were read (each committed synchronously first).
fn read_committed(
    consumer: &BaseConsumer,
    want: usize,
    limit: Duration,
) -> Result<Vec<(i32, i64)>, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < want {
        if started.elapsed() > limit {
            return Err(format!("read {} of {want} records: {got:?}", got.len()).into());
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let (p, o) = (m.partition(), m.offset());
            match consumer.commit_message(&m, CommitMode::Sync) {
                Ok(()) => got.push((p, o)),
                Err(_) => {
                    let _ = consumer.seek(m.topic(), p, Offset::Offset(o), Duration::from_secs(2));
                }
            }
        }
    }
    Ok(got)
}

/// Group membership is not durable, committed offsets are: after a broker restart the member
/// is unknown, rejoins, and continues exactly after its last commit.
#[test]
fn consumer_rejoins_after_a_broker_restart_and_continues_after_its_commits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log");
    let config = |listen: std::net::SocketAddr| ServerConfig {
        listen,
        group_initial_rebalance_delay_ms: 0,
        group_min_session_timeout_ms: 500,
        ..ServerConfig::default()
    };
    let log = Log::open(&path, LogOptions::default())?;
    log.topic(
        TOPIC,
        &TopicOptions {
            partitions: Some(2),
            ..Default::default()
        },
    )?;
    let server = Server::start(log.clone(), config("127.0.0.1:0".parse()?))?;
    let addr = server.bootstrap();
    let fill = |log: &Log, n: usize| -> Result<(), Box<dyn std::error::Error>> {
        let topic = log.get_topic(TOPIC)?;
        for p in 0..2u32 {
            for _ in 0..n {
                topic.produce(None, Some(b"v"), 1_700_000_000_000, &[], Some(p))?;
            }
        }
        Ok(())
    };
    fill(&log, 50)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "restart")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "250")
        .set("reconnect.backoff.max.ms", "200")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let mut before = read_committed(&consumer, 100, Duration::from_secs(60))?;
    before.sort_unstable();
    let first: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..50).map(move |o| (p, o))).collect();
    assert_eq!(before, first);

    server.stop()?;
    drop(server);
    log.close()?;
    drop(log);
    let log = Log::open(&path, LogOptions::default())?;
    assert_eq!(log.groups().committed("restart", TOPIC, 0), Some(50));
    let server = Server::start(log.clone(), config(addr))?;
    fill(&log, 30)?;
    let mut after = read_committed(&consumer, 60, Duration::from_secs(60))?;
    after.sort_unstable();
    let second: Vec<(i32, i64)> = (0..2).flat_map(|p| (50..80).map(move |o| (p, o))).collect();
    assert_eq!(after, second);
    // nothing more (no record read twice)
    let extra = read_committed(&consumer, 1, Duration::from_secs(2));
    assert!(extra.is_err(), "read again: {extra:?}");
    assert_eq!(log.groups().committed("restart", TOPIC, 1), Some(80));
    drop(consumer);
    server.stop()?;
    Ok(())
}

/// Static membership (`group.instance.id`): librdkafka's static member sends no LeaveGroup on
/// close; the same instance restarting takes its place at once (not after the session timeout
/// or a rebalance timeout) and continues after its commits.
#[test]
fn static_member_restart_takes_over_its_instance_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"), LogOptions::default())?;
    log.topic(
        TOPIC,
        &TopicOptions {
            partitions: Some(2),
            ..Default::default()
        },
    )?;
    let server = Server::start(
        log.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            group_initial_rebalance_delay_ms: 0,
            ..ServerConfig::default()
        },
    )?;
    let fill = |from: i64, n: i64| -> Result<(), Box<dyn std::error::Error>> {
        let topic = log.get_topic(TOPIC)?;
        for p in 0..2u32 {
            for _ in from..from + n {
                topic.produce(None, Some(b"v"), 1_700_000_000_000, &[], Some(p))?;
            }
        }
        Ok(())
    };
    let consumer = || -> Result<BaseConsumer, Box<dyn std::error::Error>> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", server.bootstrap().to_string())
            .set("group.id", "static")
            .set("group.instance.id", "instance-1")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "20000")
            .create()?;
        c.subscribe(&[TOPIC])?;
        Ok(c)
    };
    fill(0, 50)?;
    let first = consumer()?;
    let mut got = read_committed(&first, 100, Duration::from_secs(60))?;
    got.sort_unstable();
    assert_eq!(
        got,
        (0..2)
            .flat_map(|p| (0..50).map(move |o| (p, o)))
            .collect::<Vec<_>>()
    );
    drop(first);
    fill(50, 20)?;
    let started = Instant::now();
    let second = consumer()?;
    let mut got = read_committed(&second, 40, Duration::from_secs(60))?;
    let took = started.elapsed();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..2)
            .flat_map(|p| (50..70).map(move |o| (p, o)))
            .collect::<Vec<_>>()
    );
    assert!(
        took < Duration::from_secs(10),
        "the restarted static member waited {took:?}"
    );
    println!("figures: restarted static member reading after {took:?}");
    drop(second);
    server.stop()?;
    Ok(())
}
