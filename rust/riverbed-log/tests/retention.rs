//! Retention: whole old segments are deleted by time or size; offsets never change; consumers
//! behind the new start move to it.

mod common;

use common::*;
use riverbed_log::{Consumer, Log, StartSpec, Topic, TopicOptions};

const DAY: i64 = 86_400_000;

fn topic_with(
    log: &Log,
    name: &str,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
) -> riverbed_log::Result<std::sync::Arc<Topic>> {
    log.topic(
        name,
        &TopicOptions {
            partitions: Some(2),
            segment_bytes: Some(1024),
            retention_ms: Some(retention_ms),
            retention_bytes: Some(retention_bytes),
            ..Default::default()
        },
    )
}

/// Produce one record per call to partition `p` with the given timestamps; returns the model.
fn produce_ts(topic: &Topic, p: u32, stamps: &[i64]) -> riverbed_log::Result<Vec<Rec>> {
    let mut out = Vec::new();
    for &ts in stamps {
        let value = format!("{ts}:{}", "r".repeat(90));
        let (_, off) = topic.produce(Some(b"k"), Some(value.as_bytes()), ts, &[], Some(p))?;
        out.push(Rec {
            partition: p,
            offset: off,
            timestamp: ts,
            key: Some(b"k".to_vec()),
            value: Some(value.into_bytes()),
            headers: vec![],
        });
    }
    Ok(out)
}

/// Segment base offsets and each segment's max timestamp (from the model).
fn segments_with_max_ts(bases: &[i64], model: &[Rec]) -> Vec<(i64, i64)> {
    bases
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let max = model
                .iter()
                .filter(|r| r.offset >= b && r.offset < end)
                .map(|r| r.timestamp)
                .max();
            (b, max.unwrap_or(i64::MIN))
        })
        .collect()
}

#[test]
fn retention_ms_deletes_old_sealed_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = topic_with(&log, "r", Some(DAY), None)?;
    let now = now_ms();
    let old: Vec<i64> = (0..45).map(|i| now - 10 * DAY + i).collect();
    let new: Vec<i64> = (0..25).map(|i| now + i).collect();
    let model: Vec<Rec> = [produce_ts(&topic, 0, &old)?, produce_ts(&topic, 0, &new)?].concat();
    // partition 1 keeps only recent data: nothing there may go
    let model1 = produce_ts(&topic, 1, &new)?;
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    assert!(bases.len() >= 5, "{bases:?}");
    let segs = segments_with_max_ts(&bases, &model);
    let cutoff = now - DAY;
    let expect_deleted = segs[..segs.len() - 1]
        .iter()
        .take_while(|(_, max)| *max < cutoff)
        .count();
    assert!(expect_deleted >= 3);
    let new_start = bases[expect_deleted];
    assert!(
        new_start <= 45,
        "the segment holding the first recent record stays"
    );

    let stats = log.cleanup()?;
    assert_eq!(stats.segments_deleted, expect_deleted);
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (new_start, 70));
    assert_eq!(segment_bases(&pdir), bases[expect_deleted..].to_vec());
    for b in &bases[..expect_deleted] {
        for ext in ["log", "index", "timeindex"] {
            assert!(
                !segment_path(&pdir, *b, ext).exists(),
                "{b}.{ext} was not deleted"
            );
        }
    }
    let rest = read_all(part)?;
    assert_eq!(
        rest,
        model[new_start as usize..].to_vec(),
        "remaining records keep their offsets"
    );
    assert_eq!(part.offset_for_time(i64::MIN)?, Some(new_start));
    assert!(matches!(
        part.read(new_start - 1, 1, usize::MAX, |_| true),
        Err(riverbed_log::LogError::OffsetOutOfRange { earliest, latest: 70, .. }) if earliest == new_start
    ));
    assert_eq!(read_all(topic.partition(1)?)?, model1);
    assert_eq!(topic.partition(1)?.offsets(), (0, 25));
    // a second cleanup has nothing to do
    assert_eq!(log.cleanup()?.segments_deleted, 0);
    // the new start survives a reopen, and appends continue
    log.close()?;
    let log = open(dir.path());
    let topic = log.get_topic("r")?;
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (new_start, 70));
    assert_eq!(read_all(part)?, model[new_start as usize..].to_vec());
    assert_eq!(topic.produce(None, Some(b"x"), now, &[], Some(0))?, (0, 70));
    log.close()?;
    Ok(())
}

#[test]
fn retention_never_deletes_the_active_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = topic_with(&log, "r", Some(DAY), None)?;
    let old: Vec<i64> = (0..40).map(|i| 1_000 + i).collect();
    let model = produce_ts(&topic, 0, &old)?;
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    let last = *bases.last().unwrap_or(&0);
    assert!(bases.len() >= 3);
    assert_eq!(log.cleanup()?.segments_deleted, bases.len() - 1);
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (last, 40));
    assert_eq!(read_all(part)?, model[last as usize..].to_vec());
    let (_, off) = topic.produce(None, Some(b"next"), 2_000, &[], Some(0))?;
    assert_eq!(off, 40);
    log.close()?;
    Ok(())
}

#[test]
fn retention_stops_at_the_first_segment_to_keep() -> TestResult {
    // a recent timestamp in the second segment protects it, and so every later segment
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = topic_with(&log, "r", Some(DAY), None)?;
    let now = now_ms();
    let mut stamps: Vec<i64> = (0..50).map(|i| now - 5 * DAY + i).collect();
    let model0 = produce_ts(&topic, 0, &stamps)?;
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    assert!(bases.len() >= 4);
    // rebuild the same layout with one recent record in the second segment
    let recent_at = bases[1] as usize;
    stamps[recent_at] = now;
    let model1 = produce_ts(&topic, 1, &stamps)?;
    assert_eq!(segment_bases(&partition_dir(&log, &topic, 1)), bases);

    let stats = log.cleanup()?;
    let last = *bases.last().unwrap_or(&0);
    assert_eq!(topic.partition(0)?.offsets().0, last);
    assert_eq!(topic.partition(1)?.offsets().0, bases[1]);
    assert_eq!(stats.segments_deleted, (bases.len() - 1) + 1);
    assert_eq!(
        read_all(topic.partition(0)?)?,
        model0[last as usize..].to_vec()
    );
    assert_eq!(
        read_all(topic.partition(1)?)?,
        model1[bases[1] as usize..].to_vec()
    );
    log.close()?;
    Ok(())
}

#[test]
fn retention_bytes_keeps_at_most_limit_plus_one_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let limit = 3000u64;
    let topic = topic_with(&log, "b", None, Some(limit))?;
    let stamps: Vec<i64> = (0..120).map(|i| 5_000 + i).collect();
    let model = produce_ts(&topic, 0, &stamps)?;
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    let sizes: Vec<u64> = bases
        .iter()
        .map(|b| std::fs::metadata(segment_path(&pdir, *b, "log")).map(|m| m.len()))
        .collect::<Result<_, _>>()?;
    let total: u64 = sizes.iter().sum();
    assert!(total > 3 * limit);
    // the oldest segments go while the partition stays at or above the limit without them
    let mut expect_deleted = 0;
    let mut size = total;
    while expect_deleted + 1 < sizes.len() && size - sizes[expect_deleted] >= limit {
        size -= sizes[expect_deleted];
        expect_deleted += 1;
    }

    let stats = log.cleanup()?;
    assert_eq!(stats.segments_deleted, expect_deleted);
    let info = &topic.describe()?[0];
    assert_eq!(info.size_bytes, size);
    assert!(
        info.size_bytes >= limit && info.size_bytes < limit + 1024,
        "size {}",
        info.size_bytes
    );
    assert_eq!(info.segments, sizes.len() - expect_deleted);
    assert_eq!(info.earliest, bases[expect_deleted]);
    assert_eq!(
        read_all(topic.partition(0)?)?,
        model[bases[expect_deleted] as usize..].to_vec()
    );
    // the empty partition 1 is untouched
    assert_eq!(topic.describe()?[1].segments, 1);
    log.close()?;
    Ok(())
}

#[test]
fn consumers_behind_the_new_start_move_to_earliest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "c",
        &TopicOptions {
            segment_bytes: Some(1024),
            retention_ms: Some(Some(DAY)),
            ..Default::default()
        },
    )?;
    let old: Vec<i64> = (0..40).map(|i| 10_000 + i).collect();
    let model = produce_ts(&topic, 0, &old)?;
    let standalone = Consumer::new(&log, topic.clone(), None, StartSpec::Earliest)?;
    let first = poll_n(&standalone, 5)?;
    assert_eq!(
        first.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let grouped = Consumer::new(&log, topic.clone(), Some("g"), StartSpec::Earliest)?;
    assert_eq!(poll_n(&grouped, 3)?.len(), 3);
    grouped.commit()?;
    assert_eq!(grouped.committed()?.get(&0).copied().flatten(), Some(3));
    grouped.close()?;

    log.cleanup()?;
    let start = topic.partition(0)?.offsets().0;
    assert!(start > 5, "retention moved the start to {start}");

    assert_eq!(standalone.position()?.get(&0).copied(), Some(start));
    let rest = drain(&standalone)?;
    assert_eq!(rest, model[start as usize..].to_vec());
    // a group member resuming from a commit that retention overtook starts at the new earliest
    let again = Consumer::new(&log, topic.clone(), Some("g"), StartSpec::Earliest)?;
    assert_eq!(drain(&again)?, model[start as usize..].to_vec());
    again.close()?;
    standalone.close()?;
    log.close()?;
    Ok(())
}
