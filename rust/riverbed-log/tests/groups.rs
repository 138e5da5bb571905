//! Consumer groups: range assignment, commits that survive a reopen, clean handover on rebalance,
//! and the start positions of consumers.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use riverbed_log::{Consumer, Log, LogError, StartSpec, Topic, TopicOptions};

fn four(log: &Log) -> riverbed_log::Result<Arc<Topic>> {
    log.topic(
        "g4",
        &TopicOptions {
            partitions: Some(4),
            segment_bytes: Some(4096),
            ..Default::default()
        },
    )
}

/// `n` records to each partition, explicit partition, timestamps 1000 + 10 * offset.
fn fill(topic: &Topic, n: usize) -> riverbed_log::Result<()> {
    for p in 0..topic.num_partitions() {
        for _ in 0..n {
            let latest = topic.partition(p)?.offsets().1;
            let v = format!("p{p}-o{latest}");
            let (_, off) = topic.produce(
                Some(v.as_bytes()),
                Some(v.as_bytes()),
                1000 + 10 * latest,
                &[],
                Some(p),
            )?;
            assert_eq!(off, latest);
        }
    }
    Ok(())
}

fn ids(recs: &[Rec]) -> Vec<(u32, i64)> {
    let mut v: Vec<(u32, i64)> = recs.iter().map(|r| (r.partition, r.offset)).collect();
    v.sort_unstable();
    v
}

fn all_ids(topic: &Topic) -> riverbed_log::Result<Vec<(u32, i64)>> {
    let mut v = Vec::new();
    for (p, (e, l)) in topic.offsets()?.into_iter().enumerate() {
        v.extend((e..l).map(|o| (p as u32, o)));
    }
    Ok(v)
}

#[test]
fn range_assignment_splits_partitions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = four(&log)?;
    let a = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    assert_eq!(a.assignment()?, vec![0, 1, 2, 3]);
    let b = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    assert_eq!(
        a.assignment()?,
        vec![0, 1],
        "the member that joined first gets the first range"
    );
    assert_eq!(b.assignment()?, vec![2, 3]);
    let c = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    assert_eq!(
        (a.assignment()?, b.assignment()?, c.assignment()?),
        (vec![0, 1], vec![2], vec![3])
    );
    // another group is independent
    let other = Consumer::new(&log, topic.clone(), Some("other"), StartSpec::Earliest)?;
    assert_eq!(other.assignment()?, vec![0, 1, 2, 3]);
    a.close()?;
    assert_eq!((b.assignment()?, c.assignment()?), (vec![0, 1], vec![2, 3]));
    assert!(a.assignment().is_err(), "a closed member has no assignment");
    assert!(matches!(
        a.poll(1, std::time::Duration::ZERO, &mut VecSink::default()),
        Err(LogError::InvalidArgument(_))
    ));
    log.close()?;
    Ok(())
}

#[test]
fn commits_survive_close_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = four(&log)?;
    fill(&topic, 25)?;
    let a = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    let b = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    let got_a = drain(&a)?;
    let got_b = drain(&b)?;
    assert!(got_a.iter().all(|r| r.partition < 2) && got_a.len() == 50);
    assert!(got_b.iter().all(|r| r.partition >= 2) && got_b.len() == 50);
    for r in got_a.iter().chain(&got_b) {
        let want = format!("p{}-o{}", r.partition, r.offset);
        assert_eq!(r.value.as_deref(), Some(want.as_bytes()));
        assert_eq!(r.timestamp, 1000 + 10 * r.offset);
    }
    a.commit()?;
    b.commit()?;
    let committed: BTreeMap<u32, Option<i64>> = (0..4).map(|p| (p, Some(25))).collect();
    assert_eq!(a.committed()?, committed);
    // a commit of a partially read partition
    fill(&topic, 5)?;
    assert_eq!(poll_n(&a, 3)?.len(), 3);
    a.commit()?;
    let a_pos = a.position()?;
    assert_eq!(a_pos.values().sum::<i64>(), 25 + 25 + 3);
    a.close()?;
    b.close()?;
    log.close()?;

    let log = open(dir.path());
    let topic = log.get_topic("g4")?;
    // StartSpec only applies without a commit: this consumer resumes where the group was
    let c = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Latest)?;
    let committed = c.committed()?;
    assert_eq!(committed.get(&0).copied().flatten(), a_pos.get(&0).copied());
    assert_eq!(committed.get(&1).copied().flatten(), a_pos.get(&1).copied());
    assert_eq!(
        committed.get(&2).copied().flatten(),
        Some(25),
        "b closed without reading the new records"
    );
    let rest = drain(&c)?;
    let mut want = Vec::new();
    for p in 0..4u32 {
        let from = committed.get(&p).copied().flatten().unwrap_or(0);
        want.extend((from..30).map(|o| (p, o)));
    }
    assert_eq!(ids(&rest), want);
    c.close()?;
    log.close()?;
    Ok(())
}

#[test]
fn uncommitted_progress_is_replayed_after_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = four(&log)?;
    fill(&topic, 10)?;
    let a = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    assert_eq!(drain(&a)?.len(), 40);
    a.commit()?;
    fill(&topic, 10)?;
    assert_eq!(drain(&a)?.len(), 40);
    // the log goes away before the consumer commits again (a crash, as far as the group knows)
    log.close()?;
    drop(a);
    let log = open(dir.path());
    let topic = log.get_topic("g4")?;
    let c = Consumer::new(&log, topic, Some("grp"), StartSpec::Earliest)?;
    let again = drain(&c)?;
    let want: Vec<(u32, i64)> = (0..4).flat_map(|p| (10..20).map(move |o| (p, o))).collect();
    assert_eq!(
        ids(&again),
        want,
        "at-least-once: everything after the last commit is read again"
    );
    c.close()?;
    log.close()?;
    Ok(())
}

#[test]
fn handover_reads_every_record_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = four(&log)?;
    fill(&topic, 40)?;
    let a = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    let mut seen = poll_n(&a, 30)?;
    seen.extend(poll_n(&a, 17)?);
    assert_eq!(seen.len(), 47);
    let b = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Earliest)?;
    // b takes over partitions 2 and 3 exactly where a stopped
    let pos_b = b.position()?;
    for (p, o) in &pos_b {
        let read_by_a = seen.iter().filter(|r| r.partition == *p).count() as i64;
        assert_eq!(*o, read_by_a, "b starts partition {p} after what a read");
    }
    seen.extend(drain(&a)?);
    seen.extend(drain(&b)?);
    assert_eq!(
        ids(&seen),
        all_ids(&topic)?,
        "no record twice, none skipped"
    );

    // interleaved polls while more data arrives
    fill(&topic, 10)?;
    seen.extend(poll_n(&b, 4)?);
    seen.extend(poll_n(&a, 4)?);
    fill(&topic, 3)?;
    seen.extend(drain(&a)?);
    seen.extend(drain(&b)?);
    assert_eq!(ids(&seen), all_ids(&topic)?);

    // b leaves mid-stream: its partitions return to a at b's position
    fill(&topic, 6)?;
    seen.extend(poll_n(&b, 5)?);
    b.close()?;
    assert_eq!(a.assignment()?, vec![0, 1, 2, 3]);
    seen.extend(drain(&a)?);
    assert_eq!(ids(&seen), all_ids(&topic)?);

    // a third member joining a group whose members never committed explicitly
    fill(&topic, 2)?;
    seen.extend(poll_n(&a, 3)?);
    let c = Consumer::new(&log, topic.clone(), Some("grp"), StartSpec::Latest)?;
    seen.extend(drain(&c)?);
    seen.extend(drain(&a)?);
    assert_eq!(ids(&seen), all_ids(&topic)?);
    a.close()?;
    c.close()?;
    log.close()?;
    Ok(())
}

#[test]
fn start_specs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("one", &TopicOptions::default())?;
    // timestamps are not monotonic: 1000, 1030, 1020, 1050, 1040, ...
    let stamps: Vec<i64> = (0..10)
        .map(|i| 1000 + 10 * i + if i % 2 == 1 { 20 } else { 0 })
        .collect();
    for (i, ts) in stamps.iter().enumerate() {
        topic.produce(Some(format!("k{i}").as_bytes()), Some(b"v"), *ts, &[], None)?;
    }
    let offsets = |c: &Consumer| -> riverbed_log::Result<Vec<i64>> {
        Ok(drain(c)?.iter().map(|r| r.offset).collect())
    };

    let earliest = Consumer::new(&log, topic.clone(), None, StartSpec::Earliest)?;
    assert_eq!(offsets(&earliest)?, (0..10).collect::<Vec<_>>());

    let latest = Consumer::new(&log, topic.clone(), None, StartSpec::Latest)?;
    assert_eq!(latest.position()?.get(&0).copied(), Some(10));
    topic.produce(Some(b"k10"), Some(b"v"), 2000, &[], None)?;
    assert_eq!(offsets(&latest)?, vec![10]);

    let at4 = Consumer::new(&log, topic.clone(), None, StartSpec::Offset(4))?;
    assert_eq!(offsets(&at4)?, (4..11).collect::<Vec<_>>());
    let at_end = Consumer::new(&log, topic.clone(), None, StartSpec::Offset(11))?;
    assert!(offsets(&at_end)?.is_empty());
    assert!(matches!(
        Consumer::new(&log, topic.clone(), None, StartSpec::Offset(12)),
        Err(LogError::OffsetOutOfRange {
            offset: 12,
            earliest: 0,
            latest: 11,
            ..
        })
    ));
    assert!(matches!(
        Consumer::new(&log, topic.clone(), None, StartSpec::Offset(-1)),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    // the first offset whose timestamp is >= 1045 is 3 (ts 1050), though 4 has ts 1040
    let by_time = Consumer::new(&log, topic.clone(), None, StartSpec::Time(1045))?;
    assert_eq!(offsets(&by_time)?, (3..11).collect::<Vec<_>>());
    let past_end = Consumer::new(&log, topic.clone(), None, StartSpec::Time(5000))?;
    assert_eq!(past_end.position()?.get(&0).copied(), Some(11));
    assert!(offsets(&past_end)?.is_empty());

    // seeks
    earliest.seek(0, 7)?;
    assert_eq!(offsets(&earliest)?, (7..11).collect::<Vec<_>>());
    earliest.seek_to_time(1025)?;
    assert_eq!(earliest.position()?.get(&0).copied(), Some(1));
    assert!(earliest.seek(0, 99).is_err());
    assert!(earliest.seek(1, 0).is_err(), "no partition 1");
    assert!(
        matches!(earliest.commit(), Err(LogError::InvalidArgument(_))),
        "standalone consumers cannot commit"
    );

    // a group consumer uses its start spec only for partitions without a commit
    let g = Consumer::new(&log, topic.clone(), Some("gs"), StartSpec::Time(1045))?;
    assert_eq!(g.position()?.get(&0).copied(), Some(3));
    assert_eq!(offsets(&g)?.len(), 8);
    g.seek(0, 5)?;
    g.commit()?;
    g.close()?;
    let g2 = Consumer::new(&log, topic.clone(), Some("gs"), StartSpec::Earliest)?;
    assert_eq!(g2.position()?.get(&0).copied(), Some(5));
    g2.close()?;
    log.close()?;
    Ok(())
}

#[test]
fn poll_waits_for_new_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = four(&log)?;
    let c = Consumer::new(&log, topic.clone(), None, StartSpec::Latest)?;
    c.position()?;
    let producer = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            topic.produce(None, Some(b"late"), 1, &[], Some(2))
        })
    };
    let mut sink = VecSink::default();
    let t0 = std::time::Instant::now();
    c.poll(10, std::time::Duration::from_secs(5), &mut sink)?;
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(4),
        "the append woke the poll"
    );
    assert!(producer.join().map_err(|_| "producer panicked")?.is_ok());
    assert_eq!(ids(&sink.records), vec![(2, 0)]);
    assert_eq!(sink.records[0].value.as_deref(), Some(&b"late"[..]));
    log.close()?;
    Ok(())
}

#[test]
fn polls_rotate_over_partitions_and_idle_members_are_fine() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = four(&log)?;
    fill(&topic, 30)?;
    let c = Consumer::new(&log, topic.clone(), Some("rr"), StartSpec::Earliest)?;
    // four polls of 10 from four full partitions: each partition is served once
    let mut per_partition = [0usize; 4];
    for _ in 0..4 {
        let got = poll_n(&c, 10)?;
        assert_eq!(got.len(), 10);
        for r in &got {
            per_partition[r.partition as usize] += 1;
        }
    }
    assert_eq!(per_partition, [10, 10, 10, 10]);
    // five members on four partitions: the last one gets nothing and polls nothing
    let others: Vec<Consumer> = (0..4)
        .map(|_| Consumer::new(&log, topic.clone(), Some("rr"), StartSpec::Earliest))
        .collect::<Result<_, _>>()?;
    let assignments: Vec<Vec<u32>> = std::iter::once(&c)
        .chain(&others)
        .map(|m| m.assignment())
        .collect::<Result<_, _>>()?;
    assert_eq!(
        assignments,
        vec![vec![0], vec![1], vec![2], vec![3], vec![]]
    );
    assert!(poll_n(&others[3], 10)?.is_empty());
    // members 1..3 start where c stopped in their partitions
    for (i, o) in others.iter().take(3).enumerate() {
        assert_eq!(o.position()?.get(&(i as u32 + 1)).copied(), Some(10));
    }
    for o in &others {
        o.close()?;
    }
    c.close()?;
    log.close()?;
    Ok(())
}
