//! Produce and read back: offsets, limits, range errors, time lookups, segment rolls, reopen and
//! index rebuilds.

mod common;

use common::*;
use riverbed_log::batch::RecordHeader;
use riverbed_log::{LogError, NewRecord, Partition, TopicOptions};

const TOPIC: &str = "events";
const PARTS: u32 = 3;
const BASE_TS: i64 = 1_700_000_000_000;

fn options() -> TopicOptions {
    TopicOptions {
        partitions: Some(PARTS),
        segment_bytes: Some(1024),
        ..Default::default()
    }
}

/// Non-monotonic timestamps with repeats.
fn ts_of(i: usize) -> i64 {
    BASE_TS + ((i * 7919) % 503) as i64
}

/// Produce `n` records (single produces and multi-record appends, keyed and routed) and return the
/// expected contents of every partition.
fn produce(log: &riverbed_log::Log, n: usize) -> riverbed_log::Result<Vec<Vec<Rec>>> {
    let topic = log.topic(TOPIC, &options())?;
    let mut model: Vec<Vec<Rec>> = vec![Vec::new(); PARTS as usize];
    let mut i = 0;
    while i < n {
        if i % 10 < 6 {
            // one record per produce call, to an explicit partition or routed by key
            let key = format!("key-{i}");
            let value = format!("value-{i}-{}", "x".repeat(i % 37));
            let hv = i.to_be_bytes();
            let headers: Vec<RecordHeader<'_>> = vec![(b"trace", Some(&hv[..])), (b"empty", None)];
            let explicit = (i % 2 == 0).then_some((i as u32 / 2) % PARTS);
            let value_opt = (i % 13 != 5).then_some(value.as_bytes());
            let (p, off) = topic.produce(
                Some(key.as_bytes()),
                value_opt,
                ts_of(i),
                &headers,
                explicit,
            )?;
            if let Some(e) = explicit {
                assert_eq!(p, e);
            } else {
                assert_eq!(
                    p,
                    riverbed_log::partitioner::partition_for_key(key.as_bytes(), PARTS)
                );
            }
            let m = &mut model[p as usize];
            assert_eq!(off, m.len() as i64, "offsets are dense per partition");
            m.push(Rec {
                partition: p,
                offset: off,
                timestamp: ts_of(i),
                key: Some(key.into_bytes()),
                value: value_opt.map(<[u8]>::to_vec),
                headers: vec![
                    (b"trace".to_vec(), Some(hv.to_vec())),
                    (b"empty".to_vec(), None),
                ],
            });
            i += 1;
        } else {
            // a multi-record append (one batch) without keys to one partition
            let p = (i as u32) % PARTS;
            let values: Vec<String> = (i..i + 4).map(|j| format!("batch-value-{j}")).collect();
            let recs: Vec<NewRecord<'_>> = values
                .iter()
                .enumerate()
                .map(|(k, v)| NewRecord {
                    timestamp: ts_of(i + k),
                    key: None,
                    value: Some(v.as_bytes()),
                    headers: &[],
                })
                .collect();
            let part = topic.partition(p)?;
            let (first, count) = part.append(recs)?;
            assert_eq!(count, 4);
            let m = &mut model[p as usize];
            assert_eq!(first, m.len() as i64);
            for (k, v) in values.iter().enumerate() {
                m.push(Rec {
                    partition: p,
                    offset: first + k as i64,
                    timestamp: ts_of(i + k),
                    key: None,
                    value: Some(v.clone().into_bytes()),
                    headers: vec![],
                });
            }
            i += 4;
        }
    }
    Ok(model)
}

fn brute_offset_for_time(m: &[Rec], t: i64) -> Option<i64> {
    m.iter().find(|r| r.timestamp >= t).map(|r| r.offset)
}

fn check_everything(log: &riverbed_log::Log, model: &[Vec<Rec>]) -> TestResult {
    let topic = log.get_topic(TOPIC)?;
    for (p, m) in model.iter().enumerate() {
        let part: &Partition = topic.partition(p as u32)?;
        assert_eq!(part.offsets(), (0, m.len() as i64));
        // from the start, the middle and the end
        assert_eq!(&read_from(part, 0)?, m);
        let mid = m.len() / 2;
        assert_eq!(read_from(part, mid as i64)?, m[mid..].to_vec());
        assert_eq!(
            read_from(part, m.len() as i64 - 1)?,
            m[m.len() - 1..].to_vec()
        );
        assert!(read_from(part, m.len() as i64)?.is_empty());
        // one record at a time, across every segment boundary
        for (o, want) in m.iter().enumerate() {
            let mut got = Vec::new();
            let next = part.read(o as i64, 1, usize::MAX, |r| {
                got.push(Rec::from_view(p as u32, r));
                true
            })?;
            assert_eq!(next, o as i64 + 1);
            assert_eq!(got.as_slice(), std::slice::from_ref(want));
        }
        // time lookups agree with a scan, for every interesting timestamp
        let max_ts = m.iter().map(|r| r.timestamp).max().unwrap_or(0);
        for t in (BASE_TS - 3)..=(max_ts + 3) {
            assert_eq!(
                part.offset_for_time(t)?,
                brute_offset_for_time(m, t),
                "partition {p}, ts {t}"
            );
        }
        assert_eq!(part.offset_for_time(max_ts + 1)?, None);
        assert_eq!(part.offset_for_time(i64::MIN)?, Some(0));
    }
    let by_topic = topic.offsets_for_time(BASE_TS + 250)?;
    let want: Vec<Option<i64>> = model
        .iter()
        .map(|m| brute_offset_for_time(m, BASE_TS + 250))
        .collect();
    assert_eq!(by_topic, want);
    Ok(())
}

#[test]
fn produce_and_read_back_across_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let model = produce(&log, 300)?;
    let topic = log.get_topic(TOPIC)?;
    for (p, info) in topic.describe()?.iter().enumerate() {
        assert_eq!(info.partition, p as u32);
        assert_eq!((info.earliest, info.latest), (0, model[p].len() as i64));
        assert!(
            info.segments >= 3,
            "tiny segments roll: partition {p} has {} segment(s)",
            info.segments
        );
        let dir = partition_dir(&log, &topic, p as u32);
        let bases = segment_bases(&dir);
        assert_eq!(bases.len(), info.segments);
        assert_eq!(bases[0], 0);
        // every sealed segment respects segment_bytes (each batch here is far below it)
        let mut total = 0;
        for b in &bases {
            let len = std::fs::metadata(segment_path(&dir, *b, "log"))?.len();
            total += len;
            if b != bases.last().unwrap_or(&0) {
                assert!(len <= 1024, "segment {b} is {len} bytes");
            }
        }
        assert_eq!(info.size_bytes, total);
    }
    check_everything(&log, &model)?;
    log.close()?;
    Ok(())
}

#[test]
fn read_limits_and_stop() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let model = produce(&log, 120)?;
    let part = log.get_topic(TOPIC)?.partition(1)?.clone();
    let m = &model[1];
    assert!(m.len() > 20);
    for (from, max) in [(0usize, 7usize), (3, 1), (5, 10), (m.len() - 3, 10), (0, 0)] {
        let mut got = Vec::new();
        let next = part.read(from as i64, max, usize::MAX, |r| {
            got.push(Rec::from_view(1, r));
            true
        })?;
        let end = (from + max).min(m.len());
        assert_eq!(got, m[from..end].to_vec(), "read({from}, {max})");
        assert_eq!(next, end as i64);
    }
    // the visitor can stop the read: the record it refused is the next one to read
    let mut got = Vec::new();
    let next = part.read(2, usize::MAX, usize::MAX, |r| {
        got.push(r.offset);
        r.offset < 6
    })?;
    assert_eq!(got, vec![2, 3, 4, 5, 6]);
    assert_eq!(next, 7);
    // max_bytes: at least one batch is always returned
    let mut n = 0;
    let next = part.read(0, usize::MAX, 1, |_| {
        n += 1;
        true
    })?;
    assert!(
        n >= 1 && next == n as i64,
        "read with max_bytes=1 returned {n} record(s), next {next}"
    );
    log.close()?;
    Ok(())
}

#[test]
fn out_of_range_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let model = produce(&log, 60)?;
    let topic = log.get_topic(TOPIC)?;
    let part = topic.partition(0)?;
    let latest = model[0].len() as i64;
    for bad in [-1, latest + 1, latest + 1000, i64::MIN, i64::MAX] {
        match part.read(bad, 10, usize::MAX, |_| true) {
            Err(LogError::OffsetOutOfRange {
                topic: t,
                partition,
                offset,
                earliest,
                latest: l,
            }) => {
                assert_eq!(
                    (t.as_str(), partition, offset, earliest, l),
                    (TOPIC, 0, bad, 0, latest)
                );
            }
            other => panic!("read({bad}) gave {other:?}"),
        }
    }
    assert_eq!(part.read(latest, 10, usize::MAX, |_| true)?, latest);
    assert!(matches!(
        topic.partition(PARTS),
        Err(LogError::PartitionNotFound {
            partition: 3,
            partitions: 3,
            ..
        })
    ));
    assert!(matches!(
        log.get_topic("nope"),
        Err(LogError::TopicNotFound(_))
    ));
    log.close()?;
    Ok(())
}

#[test]
fn reopen_keeps_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let mut model = produce(&log, 200)?;
    log.close()?;
    assert!(matches!(log.get_topic(TOPIC), Err(LogError::Closed)));

    let log = open(dir.path());
    assert!(
        log.open_report().is_empty(),
        "clean close: {:?}",
        log.open_report()
    );
    assert_eq!(log.topic_names(), vec![TOPIC.to_string()]);
    // the stored config is used when no options are given, and a contradiction is refused
    let topic = log.topic(TOPIC, &TopicOptions::default())?;
    assert_eq!(topic.config().segment_bytes, 1024);
    assert!(matches!(
        log.topic(
            TOPIC,
            &TopicOptions {
                partitions: Some(5),
                ..Default::default()
            }
        ),
        Err(LogError::ConfigMismatch { .. })
    ));
    check_everything(&log, &model)?;
    // appends continue at the next offsets
    for p in 0..PARTS {
        let (pp, off) =
            topic.produce(Some(b"after"), Some(b"reopen"), BASE_TS + 600, &[], Some(p))?;
        assert_eq!((pp, off), (p, model[p as usize].len() as i64));
        model[p as usize].push(Rec {
            partition: p,
            offset: off,
            timestamp: BASE_TS + 600,
            key: Some(b"after".to_vec()),
            value: Some(b"reopen".to_vec()),
            headers: vec![],
        });
    }
    check_everything(&log, &model)?;
    log.close()?;
    Ok(())
}

#[test]
fn missing_index_files_are_rebuilt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let model = produce(&log, 200)?;
    let topic = log.get_topic(TOPIC)?;
    let dirs: Vec<_> = (0..PARTS).map(|p| partition_dir(&log, &topic, p)).collect();
    log.close()?;
    drop(topic);

    let mut removed = 0;
    for d in &dirs {
        for e in std::fs::read_dir(d)? {
            let path = e?.path();
            let name = path.to_string_lossy().into_owned();
            if name.ends_with(".index") || name.ends_with(".timeindex") {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    assert!(removed > 10, "only {removed} index files");

    let log = open(dir.path());
    // one report per sealed segment that lost its index files, and nothing else
    let report = log.open_report();
    let sealed: usize = dirs.iter().map(|d| segment_bases(d).len() - 1).sum();
    assert_eq!(report.len(), sealed, "{report:?}");
    assert!(
        report.iter().all(|d| d.kind == "index_rebuilt"),
        "{report:?}"
    );
    check_everything(&log, &model)?;
    // the sealed segments got their index files back
    for d in &dirs {
        let bases = segment_bases(d);
        for b in &bases[..bases.len() - 1] {
            assert!(segment_path(d, *b, "index").is_file());
            assert!(segment_path(d, *b, "timeindex").is_file());
        }
    }
    log.close()?;
    // and a third open (trusting the rebuilt indexes) still reads the same
    let log = open(dir.path());
    check_everything(&log, &model)?;
    log.close()?;
    Ok(())
}

#[test]
fn garbage_index_files_are_ignored() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let model = produce(&log, 150)?;
    let topic = log.get_topic(TOPIC)?;
    let d = partition_dir(&log, &topic, 2);
    log.close()?;
    for b in segment_bases(&d) {
        std::fs::write(segment_path(&d, b, "index"), [0xffu8; 16])?;
        std::fs::write(segment_path(&d, b, "timeindex"), [0x7fu8; 24])?;
    }
    let log = open(dir.path());
    check_everything(&log, &model)?;
    log.close()?;
    Ok(())
}

mod time_lookup_property {
    use super::*;
    use proptest::prelude::*;

    fn run(stamps: &[i64], batch: usize, pad: usize, segment_bytes: u64) -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = open(dir.path());
        let topic = log.topic(
            "t",
            &TopicOptions {
                segment_bytes: Some(segment_bytes),
                ..Default::default()
            },
        )?;
        let value = vec![b'v'; pad];
        for chunk in stamps.chunks(batch) {
            topic
                .partition(0)?
                .append(chunk.iter().map(|&t| NewRecord {
                    timestamp: t,
                    key: None,
                    value: Some(&value),
                    headers: &[],
                }))?;
        }
        let m: Vec<Rec> = stamps
            .iter()
            .enumerate()
            .map(|(o, &t)| Rec {
                partition: 0,
                offset: o as i64,
                timestamp: t,
                key: None,
                value: Some(value.clone()),
                headers: vec![],
            })
            .collect();
        let check = |log: &riverbed_log::Log| -> TestResult {
            let topic = log.get_topic("t")?;
            let part = topic.partition(0)?;
            assert_eq!(read_all(part)?, m);
            for t in (-1..=2001)
                .step_by(7)
                .chain(stamps.iter().copied().step_by(3))
            {
                assert_eq!(
                    part.offset_for_time(t)?,
                    brute_offset_for_time(&m, t),
                    "ts {t}"
                );
            }
            Ok(())
        };
        check(&log)?;
        log.close()?;
        let log = open(dir.path());
        check(&log)?;
        log.close()?;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        /// `offset_for_time` equals a scan for random timestamps, record sizes and batch shapes,
        /// before and after a reopen.
        #[test]
        fn offset_for_time_matches_scan(
            stamps in proptest::collection::vec(0i64..2000, 1..300),
            batch in 1usize..6,
            pad in 0usize..400,
            segment_bytes in prop_oneof![Just(1024u64), Just(9000), Just(1 << 20)],
        ) {
            run(&stamps, batch, pad, segment_bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
}

/// A sealed segment whose `.timeindex` is empty (e.g. `std::fs::write` truncated it and the process
/// died before writing) is not a consistent index for a non-empty segment: it must be rebuilt,
/// or `offset_for_time` skips the segment as if it held no timestamps.
#[test]
fn empty_time_index_is_rebuilt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "t",
        &TopicOptions {
            segment_bytes: Some(1024),
            ..Default::default()
        },
    )?;
    let value = [b'v'; 100];
    // rising timestamps with a few steps back, so the time index matters
    let stamps: Vec<i64> = (0..40i64)
        .map(|i| 1000 + 3 * i - if i % 4 == 3 { 5 } else { 0 })
        .collect();
    for &ts in &stamps {
        topic.produce(None, Some(&value), ts, &[], Some(0))?;
    }
    let model: Vec<Rec> = stamps
        .iter()
        .enumerate()
        .map(|(o, &ts)| Rec {
            partition: 0,
            offset: o as i64,
            timestamp: ts,
            key: None,
            value: Some(value.to_vec()),
            headers: vec![],
        })
        .collect();
    let d = partition_dir(&log, &topic, 0);
    log.close()?;
    drop(topic);
    let bases = segment_bases(&d);
    assert!(bases.len() >= 3, "{bases:?}");
    // truncate the time index of the first sealed segment (and, separately, of a middle one)
    for b in [bases[0], bases[1]] {
        let ti = segment_path(&d, b, "timeindex");
        assert!(std::fs::metadata(&ti)?.len() > 0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&ti)?
            .set_len(0)?;
    }
    let check = |log: &riverbed_log::Log| -> TestResult {
        let part = log.get_topic("t")?.partition(0)?.clone();
        assert_eq!(read_all(&part)?, model);
        for t in 990..=1130 {
            assert_eq!(
                part.offset_for_time(t)?,
                brute_offset_for_time(&model, t),
                "ts {t}"
            );
        }
        assert_eq!(part.offset_for_time(i64::MIN)?, Some(0));
        Ok(())
    };
    let log = open(dir.path());
    check(&log)?;
    log.close()?;
    // the rebuilt time index was written back, and the next open trusts it
    for b in [bases[0], bases[1]] {
        assert!(std::fs::metadata(segment_path(&d, b, "timeindex"))?.len() > 0);
    }
    let log = open(dir.path());
    check(&log)?;
    log.close()?;
    Ok(())
}
