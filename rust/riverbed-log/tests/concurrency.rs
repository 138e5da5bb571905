//! Readers, the cleaner and group members running while producers append.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use riverbed_log::{Cleanup, Consumer, StartSpec, TopicOptions};

#[test]
fn readers_see_a_dense_prefix_while_the_writer_rolls_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "c",
        &TopicOptions {
            segment_bytes: Some(2048),
            ..Default::default()
        },
    )?;
    const N: i64 = 3000;
    let writer = {
        let topic = topic.clone();
        std::thread::spawn(move || -> riverbed_log::Result<()> {
            for i in 0..N {
                let v = format!("{i}:{}", "p".repeat((i % 50) as usize));
                let (_, off) = topic.produce(None, Some(v.as_bytes()), i, &[], Some(0))?;
                assert_eq!(off, i);
            }
            Ok(())
        })
    };
    let part = topic.partition(0)?.clone();
    let mut rounds = 0;
    loop {
        let end_before = part.offsets().1;
        let mut expect = 0i64;
        let next = part.read(0, usize::MAX, usize::MAX, |r| {
            assert_eq!(r.offset, expect, "dense offsets");
            let want = format!("{}:{}", r.offset, "p".repeat((r.offset % 50) as usize));
            assert_eq!(r.value, Some(want.as_bytes()));
            expect += 1;
            true
        })?;
        assert_eq!(next, expect);
        assert!(
            next >= end_before,
            "a read returns at least what was published when it started"
        );
        // time lookups stay consistent with the published prefix
        if next > 10 {
            assert_eq!(part.offset_for_time(next / 2)?, Some(next / 2));
        }
        rounds += 1;
        if next == N {
            break;
        }
    }
    writer.join().map_err(|_| "writer panicked")??;
    assert!(rounds >= 1);
    log.close()?;
    Ok(())
}

#[test]
fn compaction_while_producing_and_reading() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "kv",
        &TopicOptions {
            segment_bytes: Some(1024),
            cleanup: Some(Cleanup::Compact),
            ..Default::default()
        },
    )?;
    const N: i64 = 1500;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let topic = topic.clone();
        std::thread::spawn(move || -> riverbed_log::Result<()> {
            for i in 0..N {
                let key = format!("k{}", i % 23);
                let v = format!("{i}");
                topic.produce(Some(key.as_bytes()), Some(v.as_bytes()), i, &[], None)?;
            }
            Ok(())
        })
    };
    let cleaner = {
        let log = log.clone();
        let done = done.clone();
        std::thread::spawn(move || -> riverbed_log::Result<usize> {
            let mut removed = 0;
            while !done.load(Ordering::Acquire) {
                removed += log.cleanup()?.records_removed;
            }
            Ok(removed)
        })
    };
    let part = topic.partition(0)?.clone();
    loop {
        let mut last = -1i64;
        let mut per_key_last: std::collections::HashMap<Vec<u8>, i64> =
            std::collections::HashMap::new();
        let next = part.read(0, usize::MAX, usize::MAX, |r| {
            assert!(r.offset > last, "offsets increase");
            last = r.offset;
            // each record is the one written at its offset
            assert_eq!(r.value, Some(r.offset.to_string().as_bytes()));
            assert_eq!(r.key, Some(format!("k{}", r.offset % 23).as_bytes()));
            per_key_last.insert(r.key.unwrap_or_default().to_vec(), r.offset);
            true
        })?;
        // compaction never loses a key's latest record
        let keys_written = next.min(23);
        assert_eq!(per_key_last.len() as i64, keys_written);
        for (k, o) in &per_key_last {
            let ki: i64 = std::str::from_utf8(&k[1..])?.parse()?;
            let latest = (next - 1) - ((next - 1 - ki).rem_euclid(23));
            assert_eq!(*o, latest, "latest of {k:?} below {next}");
        }
        if next == N {
            break;
        }
    }
    writer.join().map_err(|_| "writer panicked")??;
    done.store(true, Ordering::Release);
    let removed = cleaner.join().map_err(|_| "cleaner panicked")??;
    removed_is_consistent(removed, &part)?;
    log.close()?;
    Ok(())
}

fn removed_is_consistent(removed: usize, part: &riverbed_log::Partition) -> TestResult {
    let left = read_all(part)?.len();
    let (e, l) = part.offsets();
    assert_eq!((e, l), (0, 1500));
    assert_eq!(
        left + removed,
        1500,
        "every record is either still there or counted as removed"
    );
    Ok(())
}

#[test]
fn group_members_in_threads_with_a_join_midway() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "g",
        &TopicOptions {
            partitions: Some(6),
            ..Default::default()
        },
    )?;
    const PER: i64 = 300;
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let topic = topic.clone();
        let producing = producing.clone();
        std::thread::spawn(move || -> riverbed_log::Result<()> {
            for i in 0..PER {
                for p in 0..6 {
                    topic.produce(None, Some(format!("{i}").as_bytes()), i, &[], Some(p))?;
                }
            }
            producing.store(false, Ordering::Release);
            Ok(())
        })
    };
    let member =
        |log: riverbed_log::Log, topic: Arc<riverbed_log::Topic>, producing: Arc<AtomicBool>| {
            std::thread::spawn(move || -> riverbed_log::Result<Vec<(u32, i64)>> {
                let c = Consumer::new(&log, topic, Some("grp"), StartSpec::Earliest)?;
                let mut seen = Vec::new();
                loop {
                    let still = producing.load(Ordering::Acquire);
                    let got = poll_n(&c, 37)?;
                    if got.is_empty() && !still {
                        // one more pass after the producer finished, then stop
                        let tail = drain(&c)?;
                        seen.extend(tail.iter().map(|r| (r.partition, r.offset)));
                        break;
                    }
                    seen.extend(got.iter().map(|r| (r.partition, r.offset)));
                }
                // leaving hands this member's partitions (at its positions) to the other one
                c.close()?;
                Ok(seen)
            })
        };
    let a = member(log.clone(), topic.clone(), producing.clone());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = member(log.clone(), topic.clone(), producing.clone());
    let mut all = a.join().map_err(|_| "a panicked")??;
    all.extend(b.join().map_err(|_| "b panicked")??);
    producer.join().map_err(|_| "producer panicked")??;
    let unique: BTreeSet<(u32, i64)> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "no record read twice");
    let want: BTreeSet<(u32, i64)> = (0..6).flat_map(|p| (0..PER).map(move |o| (p, o))).collect();
    assert_eq!(unique, want, "every record read");
    log.close()?;
    Ok(())
}

/// A topic's directory is built outside the topics lock: callers creating the same topic at
/// once all get the one topic (the losers' staging directories removed), and a topic that
/// exists is written to meanwhile.
#[test]
fn concurrent_creations_of_one_topic_make_one_topic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Arc::new(open(dir.path()));
    let busy = log.topic("busy", &TopicOptions::default())?;
    let opts = TopicOptions {
        partitions: Some(64),
        ..Default::default()
    };
    let creators: Vec<_> = (0..6)
        .map(|_| {
            let (log, opts) = (log.clone(), opts.clone());
            std::thread::spawn(move || log.topic("big", &opts).map(|t| t.num_partitions()))
        })
        .collect();
    for i in 0..200 {
        busy.produce(None, Some(b"v"), i, &[], Some(0))?;
    }
    for c in creators {
        assert_eq!(c.join().expect("creator")?, 64);
    }
    // One of them made it; another config for the same name is refused as before.
    let other = TopicOptions {
        partitions: Some(3),
        ..Default::default()
    };
    assert!(log.topic("big", &other).is_err());
    assert_eq!(busy.partition(0)?.offsets().1, 200);
    let staging: Vec<_> = std::fs::read_dir(dir.path().join("~staging"))?.collect();
    assert!(staging.is_empty(), "staging directories left: {staging:?}");
    let parts = std::fs::read_dir(dir.path().join("big"))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(parts, 64);
    drop(busy);
    log.close()?;
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.get_topic("big")?.num_partitions(), 64);
    Ok(())
}
