//! Compaction: sealed segments keep only the latest record per key, tombstones expire after
//! `delete_retention_ms`, offsets never change, the active segment is never touched.

mod common;

use std::collections::HashMap;

use common::*;
use riverbed_log::{Cleanup, LogError, Partition, Topic, TopicOptions};

const DAY: i64 = 86_400_000;

fn options() -> TopicOptions {
    TopicOptions {
        partitions: Some(1),
        segment_bytes: Some(1024),
        cleanup: Some(Cleanup::Compact),
        delete_retention_ms: Some(60_000),
        ..Default::default()
    }
}

/// What compaction must leave: in the sealed part (offsets below `active_base`) the latest record of
/// each key (latest among the sealed records) unless it is a tombstone older than `horizon`;
/// the active segment as it is.
fn model_after_compaction(current: &[Rec], active_base: i64, horizon: i64) -> Vec<Rec> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for r in current.iter().filter(|r| r.offset < active_base) {
        latest.insert(r.key.as_deref().unwrap_or_default(), r.offset);
    }
    current
        .iter()
        .filter(|r| {
            r.offset >= active_base
                || (latest.get(r.key.as_deref().unwrap_or_default()) == Some(&r.offset)
                    && !(r.value.is_none() && r.timestamp < horizon))
        })
        .cloned()
        .collect()
}

struct Writer<'a> {
    topic: &'a Topic,
    written: Vec<Rec>,
}

impl Writer<'_> {
    fn put(&mut self, key: &str, value: Option<&str>, ts: i64) -> riverbed_log::Result<()> {
        let hv = format!("h-{}", self.written.len());
        let headers: Vec<riverbed_log::batch::RecordHeader<'_>> = vec![(b"n", Some(hv.as_bytes()))];
        let padded = value.map(|v| format!("{v}|{}", ".".repeat(60)));
        let (_, off) = self.topic.produce(
            Some(key.as_bytes()),
            padded.as_deref().map(str::as_bytes),
            ts,
            &headers,
            None,
        )?;
        assert_eq!(off, self.written.len() as i64);
        self.written.push(Rec {
            partition: 0,
            offset: off,
            timestamp: ts,
            key: Some(key.as_bytes().to_vec()),
            value: padded.map(String::into_bytes),
            headers: vec![(b"n".to_vec(), Some(hv.into_bytes()))],
        });
        Ok(())
    }
}

/// Reads from every offset agree with the expected contents (records skip the removed offsets).
fn check_reads(part: &Partition, expected: &[Rec], end: i64) -> TestResult {
    assert_eq!(read_all(part)?, expected);
    for o in 0..=end {
        let want = expected.iter().find(|r| r.offset >= o);
        let mut got = Vec::new();
        let next = part.read(o, 1, usize::MAX, |r| {
            got.push(Rec::from_view(0, r));
            true
        })?;
        assert_eq!(got.first(), want, "read from {o}");
        assert_eq!(
            next,
            want.map_or(end, |r| r.offset + 1),
            "next after reading one record from {o}"
        );
    }
    let max_ts = expected.iter().map(|r| r.timestamp).max().unwrap_or(0);
    for t in [
        i64::MIN,
        max_ts - DAY - 5,
        max_ts - DAY + 40,
        max_ts - 3,
        max_ts,
        max_ts + 1,
    ] {
        let want = expected.iter().find(|r| r.timestamp >= t).map(|r| r.offset);
        assert_eq!(part.offset_for_time(t)?, want, "offset_for_time({t})");
    }
    Ok(())
}

#[test]
fn compaction_keeps_latest_per_key_at_original_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("kv", &options())?;
    assert!(matches!(
        topic.produce(None, Some(b"v"), 0, &[], None),
        Err(LogError::InvalidArgument(_))
    ));
    let now = now_ms();
    let old = now - DAY;
    let mut w = Writer {
        topic: &topic,
        written: Vec::new(),
    };
    w.put("dead-old", Some("first"), old)?;
    w.put("dead-new", Some("first"), old)?;
    w.put("dead-then-alive", Some("first"), old)?;
    for i in 0..120 {
        let key = format!("k{}", (i * 7) % 11);
        // every 9th update of a key is a tombstone, old for the first 80 writes
        let ts = if i < 80 { old + i } else { now + i };
        if i % 9 == 4 {
            w.put(&key, None, ts)?;
        } else {
            w.put(&key, Some(&format!("v{i}")), ts)?;
        }
        if i == 10 {
            w.put("dead-old", None, old + 1)?;
            w.put("dead-then-alive", None, old + 2)?;
        }
        if i == 30 {
            w.put("dead-then-alive", Some("again"), old + 3)?;
        }
        if i == 85 {
            w.put("dead-new", None, now)?;
        }
    }
    let end = w.written.len() as i64;
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    let active_base = *bases.last().unwrap_or(&0);
    assert!(bases.len() >= 8, "{bases:?}");
    assert!(
        w.written
            .iter()
            .rposition(|r| r.key.as_deref() == Some(b"dead-new"))
            .map(|i| i as i64)
            < Some(active_base)
    );

    let expected = model_after_compaction(&w.written, active_base, now - 60_000);
    let sealed = w.written.iter().filter(|r| r.offset < active_base).count();
    let kept_sealed = expected.iter().filter(|r| r.offset < active_base).count();
    let stats = log.cleanup()?;
    assert!(stats.segments_compacted >= 1);
    assert_eq!(stats.records_removed, sealed - kept_sealed);
    assert_eq!(stats.segments_deleted, 0);

    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (0, end), "compaction never changes offsets");
    assert_eq!(
        segment_bases(&pdir),
        bases,
        "segments keep their base offsets"
    );
    check_reads(part, &expected, end)?;

    // spot checks independent of the model
    let got = read_all(part)?;
    let by_key = |k: &str| {
        got.iter()
            .filter(|r| r.key.as_deref() == Some(k.as_bytes()))
            .collect::<Vec<_>>()
    };
    assert!(
        by_key("dead-old").is_empty(),
        "an expired tombstone and its key's history are gone"
    );
    let dn = by_key("dead-new");
    assert_eq!(dn.len(), 1);
    assert_eq!(dn[0].value, None, "a recent tombstone is kept");
    let da = by_key("dead-then-alive");
    assert_eq!(da.len(), 1);
    assert_eq!(
        da[0].value.as_deref().map(|v| &v[..6]),
        Some(&b"again|"[..])
    );
    // every key's newest record is present at its original offset (unless an expired tombstone)
    let mut newest: HashMap<Vec<u8>, &Rec> = HashMap::new();
    for r in &w.written {
        newest.insert(r.key.clone().unwrap_or_default(), r);
    }
    for r in newest.values() {
        let expired = r.value.is_none() && r.timestamp < now - 60_000;
        assert_eq!(
            got.iter().any(|g| g == *r),
            !expired,
            "newest record of {:?}",
            r.key
        );
    }
    // no key appears twice in the sealed part
    let mut seen = HashMap::new();
    for r in got.iter().filter(|r| r.offset < active_base) {
        assert!(
            seen.insert(r.key.clone(), r.offset).is_none(),
            "duplicate key {:?} in sealed segments",
            r.key
        );
    }
    // the active segment is untouched, byte for byte
    assert_eq!(
        got.iter()
            .filter(|r| r.offset >= active_base)
            .cloned()
            .collect::<Vec<_>>(),
        w.written[active_base as usize..].to_vec()
    );

    // compaction is idempotent
    let again = log.cleanup()?;
    assert_eq!((again.segments_compacted, again.records_removed), (0, 0));
    check_reads(topic.partition(0)?, &expected, end)?;

    // reopen: the compacted segments (and their rewritten indexes) read the same
    log.close()?;
    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    let topic = log.get_topic("kv")?;
    check_reads(topic.partition(0)?, &expected, end)?;
    assert_eq!(
        topic.produce(Some(b"k1"), Some(b"after"), now, &[], None)?,
        (0, end)
    );
    log.close()?;
    Ok(())
}

#[test]
fn compaction_after_roll_covers_the_former_active_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("kv", &options())?;
    let now = now_ms();
    let mut w = Writer {
        topic: &topic,
        written: Vec::new(),
    };
    for i in 0..60 {
        w.put(
            &format!("k{}", i % 5),
            Some(&format!("a{i}")),
            now - DAY + i,
        )?;
    }
    let pdir = partition_dir(&log, &topic, 0);
    log.cleanup()?;
    let mut current = read_all(topic.partition(0)?)?;
    // more updates: the old active segment gets sealed and compacted in the next pass
    for i in 60..140 {
        w.put(
            &format!("k{}", i % 7),
            if i % 13 == 0 { None } else { Some("b") },
            now - DAY + i,
        )?;
        current.push(w.written[i as usize].clone());
    }
    let active_base = *segment_bases(&pdir).last().unwrap_or(&0);
    let expected = model_after_compaction(&current, active_base, now - 60_000);
    log.cleanup()?;
    let part = topic.partition(0)?;
    check_reads(part, &expected, 140)?;
    // in the sealed part only one record per key remains, the newest of the sealed ones
    let sealed_keys: Vec<_> = expected
        .iter()
        .filter(|r| r.offset < active_base)
        .map(|r| r.key.clone())
        .collect();
    let mut dedup = sealed_keys.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(sealed_keys.len(), dedup.len());
    log.close()?;
    Ok(())
}

#[test]
fn compacted_topic_survives_a_segment_emptied_by_compaction() -> TestResult {
    // every record of the first segments is superseded: those segments become empty files
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("kv", &options())?;
    let now = now_ms();
    let mut w = Writer {
        topic: &topic,
        written: Vec::new(),
    };
    for i in 0..40 {
        w.put("same", Some(&format!("v{i}")), now - DAY + i)?;
    }
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    let active_base = *bases.last().unwrap_or(&0);
    let expected = model_after_compaction(&w.written, active_base, now - 60_000);
    assert_eq!(
        expected.iter().filter(|r| r.offset < active_base).count(),
        1
    );
    log.cleanup()?;
    check_reads(topic.partition(0)?, &expected, 40)?;
    assert_eq!(
        std::fs::metadata(segment_path(&pdir, bases[0], "log"))?.len(),
        0
    );
    log.close()?;
    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    let topic = log.get_topic("kv")?;
    check_reads(topic.partition(0)?, &expected, 40)?;
    assert_eq!(topic.partition(0)?.offsets(), (0, 40));
    log.close()?;
    Ok(())
}

/// `compact()` renames the rewritten `.log` over the old one and only then writes the new index
/// files. A crash between the two used to leave the old `.index` next to the new `.log`; its
/// positions still pass `read_files`' bounds checks but point into the middle of the rewritten
/// batch. Compaction now removes the old index files (and fsyncs the directory) before the
/// rename, so the state such a crash leaves is a rewritten `.log` without index files: the
/// segment must be rescanned on open and read exactly like the compacted data.
#[test]
fn crash_between_log_rename_and_index_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("kv", &options())?;
    let now = now_ms();
    let mut w = Writer {
        topic: &topic,
        written: Vec::new(),
    };
    // many updates of few keys, so compaction moves the surviving records to new positions
    for i in 0..150 {
        let key = format!("k{}", (i * 5) % 13);
        let value = if i % 17 == 3 {
            None
        } else {
            Some(format!("v{i}"))
        };
        w.put(&key, value.as_deref(), now - DAY + i)?;
    }
    let end = w.written.len() as i64;
    let pdir = partition_dir(&log, &topic, 0);
    let bases = segment_bases(&pdir);
    assert!(bases.len() >= 6, "{bases:?}");
    let active_base = *bases.last().unwrap_or(&0);
    let sizes_before: Vec<u64> = bases
        .iter()
        .map(|b| std::fs::metadata(segment_path(&pdir, *b, "log")).map(|m| m.len()))
        .collect::<Result<_, _>>()?;
    let expected = model_after_compaction(&w.written, active_base, now - 60_000);
    let stats = log.cleanup()?;
    assert!(stats.segments_compacted >= 2, "{stats:?}");
    check_reads(topic.partition(0)?, &expected, end)?;
    // the rewritten segments: same base offset, different bytes, but still holding records
    let rewritten: Vec<i64> = bases[..bases.len() - 1]
        .iter()
        .zip(&sizes_before)
        .filter_map(|(b, before)| {
            let after = std::fs::metadata(segment_path(&pdir, *b, "log"))
                .ok()?
                .len();
            (after != *before && after > 0).then_some(*b)
        })
        .collect();
    assert!(!rewritten.is_empty(), "no compacted segment kept records");
    log.close()?;
    drop(topic);

    // the crash: the new .log is in place, its index files were removed and not yet rewritten
    for b in &rewritten {
        std::fs::remove_file(segment_path(&pdir, *b, "index"))?;
        std::fs::remove_file(segment_path(&pdir, *b, "timeindex"))?;
    }
    let log = open(dir.path());
    // The lost index files are rebuilt and reported; nothing else is wrong.
    let report = log.open_report();
    assert_eq!(report.len(), rewritten.len(), "{report:?}");
    assert!(
        report.iter().all(|d| d.kind == "index_rebuilt"),
        "{report:?}"
    );
    let topic = log.get_topic("kv")?;
    let part = topic.partition(0)?;
    assert_eq!(part.offsets(), (0, end));
    check_reads(part, &expected, end)?;
    // every timestamp of the data, not just the spot checks of check_reads
    for t in (now - DAY - 2)..=(now - DAY + end + 2) {
        let want = expected.iter().find(|r| r.timestamp >= t).map(|r| r.offset);
        assert_eq!(part.offset_for_time(t)?, want, "offset_for_time({t})");
    }
    // the index was rebuilt on open and is trusted by the next one
    for b in &rewritten {
        assert!(segment_path(&pdir, *b, "index").is_file());
        assert!(segment_path(&pdir, *b, "timeindex").is_file());
    }
    log.close()?;
    let log = open(dir.path());
    assert!(log.open_report().is_empty(), "{:?}", log.open_report());
    check_reads(log.get_topic("kv")?.partition(0)?, &expected, end)?;
    // compacting again changes nothing
    let again = log.cleanup()?;
    assert_eq!((again.segments_compacted, again.records_removed), (0, 0));
    log.close()?;
    Ok(())
}
