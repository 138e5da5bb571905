//! Truncation (`Partition::truncate_to`, `Topic::truncate_to`): every record at or past the given
//! offset goes, appends continue there, the state survives a reopen, and a crash at any step of a
//! truncation reopens to the state before or (finished on open) after it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use riverbed_log::partition::{truncation_intent_bytes, TRUNCATION_MARKER};
use riverbed_log::{Cleanup, Log, LogError, NewRecord, Partition, TopicOptions};

const TS: i64 = 1_700_000_000_000;
const SEG: u64 = 1024;

fn options(partitions: u32) -> TopicOptions {
    TopicOptions {
        partitions: Some(partitions),
        segment_bytes: Some(SEG),
        ..Default::default()
    }
}

/// Non-monotonic timestamps with repeats, so time lookups have to use the index properly.
fn ts_of(offset: i64) -> i64 {
    TS + (offset * 7919) % 503
}

/// The record our tests write at `offset`; `tag` tells generations at the same offset apart.
fn rec(partition: u32, offset: i64, tag: &str) -> Rec {
    Rec {
        partition,
        offset,
        timestamp: ts_of(offset),
        key: Some(format!("k{}", offset % 7).into_bytes()),
        value: Some(format!("{tag}-{offset}-{}", "v".repeat((offset % 29) as usize)).into_bytes()),
        headers: vec![],
    }
}

/// Append `n` records in one call (so one batch) and add them to `model`; returns the new end.
fn append_batch(
    part: &Partition,
    model: &mut Vec<Rec>,
    n: usize,
    tag: &str,
) -> riverbed_log::Result<i64> {
    let start = part.offsets().1;
    let recs: Vec<Rec> = (0..n)
        .map(|i| rec(part.id, start + i as i64, tag))
        .collect();
    let (first, count) = part.append(recs.iter().map(|r| NewRecord {
        timestamp: r.timestamp,
        key: r.key.as_deref(),
        value: r.value.as_deref(),
        headers: &[],
    }))?;
    assert_eq!((first, count), (start, n), "appends continue at the end");
    model.extend(recs);
    Ok(part.offsets().1)
}

fn expected_offset_for_time(model: &[Rec], ts: i64) -> Option<i64> {
    model.iter().find(|r| r.timestamp >= ts).map(|r| r.offset)
}

/// The partition holds exactly `model` (which starts at `earliest`): offsets, full and partial
/// reads, and time lookups.
fn check_state(part: &Partition, earliest: i64, model: &[Rec]) -> TestResult {
    let end = model.last().map_or(earliest, |r| r.offset + 1);
    assert_eq!(part.offsets(), (earliest, end));
    assert_eq!(read_all(part)?, model);
    for (i, r) in model.iter().enumerate().step_by(11) {
        assert_eq!(read_from(part, r.offset)?, &model[i..]);
    }
    assert_eq!(read_from(part, end)?, Vec::new());
    for ts in (TS - 2..=TS + 505).step_by(7) {
        assert_eq!(
            part.offset_for_time(ts)?,
            expected_offset_for_time(model, ts),
            "offset_for_time({ts})"
        );
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                out.insert(path.clone(), std::fs::read(&path).expect("read file"));
            }
        }
    }
    out
}

/// Batch sizes (records per append) used to fill a partition: varied, 1 to 6.
fn batch_sizes(count: usize) -> Vec<usize> {
    (0..count).map(|i| 1 + (i * 5 + i / 3) % 6).collect()
}

/// A closed log with topic "t" (1 partition, 1 KiB segments) filled with `batches` appends.
/// Returns the model and the batch boundaries (0, the end of every append).
fn make_log(
    dir: &Path,
    batches: usize,
) -> Result<(Vec<Rec>, Vec<i64>), Box<dyn std::error::Error>> {
    let log = open(dir);
    let topic = log.topic("t", &options(1))?;
    let part = topic.partition(0)?;
    let mut model = Vec::new();
    let mut bounds = vec![0];
    for n in batch_sizes(batches) {
        bounds.push(append_batch(part, &mut model, n, "a")?);
    }
    assert!(
        part.segment_count() >= batches / 10,
        "the test wants many segments"
    );
    log.close()?;
    Ok((model, bounds))
}

/// (position, length, base offset, last offset) of every batch in a segment file.
fn batches_of(path: &Path) -> Vec<(u64, u64, i64, i64)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut pos = 0usize;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let h = riverbed_log::batch::parse_header(&bytes[pos..]).expect("valid batch");
        out.push((
            pos as u64,
            h.total_len() as u64,
            h.base_offset,
            h.last_offset(),
        ));
        pos += h.total_len();
    }
    out
}

/// Remove a file that may not exist (the active segment has no index files on disk).
fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn assert_no_segment_past(pdir: &Path, offset: i64) {
    for base in segment_bases(pdir) {
        assert!(
            base <= offset,
            "segment {base} outlived a truncation to {offset}"
        );
    }
    assert!(
        !pdir.join(TRUNCATION_MARKER).exists(),
        "the intent file is removed"
    );
}

#[test]
fn truncate_at_every_offset_of_a_multi_segment_partition() -> TestResult {
    let src = tempfile::tempdir()?;
    let (model, bounds) = make_log(src.path(), 60)?;
    let end = *bounds.last().expect("bounds");
    for offset in 0..=end {
        let dir = tempfile::tempdir()?;
        copy_dir(src.path(), dir.path())?;
        let log = open(dir.path());
        let topic = log.get_topic("t")?;
        let part = topic.partition(0)?;
        let pdir = partition_dir(&log, &topic, 0);
        if !bounds.contains(&offset) {
            let before = snapshot(dir.path());
            let err = part.truncate_to(offset).expect_err("mid-batch truncation");
            let msg = err.to_string();
            assert!(matches!(err, LogError::InvalidArgument(_)), "{err:?}");
            assert!(
                msg.contains("t/0") && msg.contains(&format!("offset {offset}")),
                "{msg}"
            );
            assert!(msg.contains("inside the record batch"), "{msg}");
            check_state(part, 0, &model)?;
            assert_eq!(
                snapshot(dir.path()),
                before,
                "a refused truncation changes nothing"
            );
            log.close()?;
            continue;
        }
        part.truncate_to(offset)?;
        let mut m = model[..offset as usize].to_vec();
        check_state(part, 0, &m)?;
        assert_no_segment_past(&pdir, offset);
        // appends continue at the new end, across segment rolls
        for n in [3, 1, 6, 2, 5, 4, 6, 6, 1, 3] {
            append_batch(part, &mut m, n, "b")?;
        }
        check_state(part, 0, &m)?;
        log.close()?;

        let log = open(dir.path());
        assert!(log.open_report().is_empty(), "{:?}", log.open_report());
        let part = log.get_topic("t")?.partition(0)?.clone();
        check_state(&part, 0, &m)?;
        append_batch(&part, &mut m, 2, "c")?;
        check_state(&part, 0, &m)?;
        log.close()?;
    }
    Ok(())
}

#[test]
fn truncate_then_reopen_without_appending() -> TestResult {
    let src = tempfile::tempdir()?;
    let (model, bounds) = make_log(src.path(), 40)?;
    for &offset in bounds.iter().rev() {
        let dir = tempfile::tempdir()?;
        copy_dir(src.path(), dir.path())?;
        {
            let log = open(dir.path());
            log.get_topic("t")?.partition(0)?.truncate_to(offset)?;
            log.close()?;
        }
        let log = open(dir.path());
        assert!(log.open_report().is_empty());
        let part = log.get_topic("t")?.partition(0)?.clone();
        let mut m = model[..offset as usize].to_vec();
        check_state(&part, 0, &m)?;
        append_batch(&part, &mut m, 4, "b")?;
        check_state(&part, 0, &m)?;
        log.close()?;
    }
    Ok(())
}

#[test]
fn repeated_truncations_in_one_session() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let part = log.topic("t", &options(1))?.partition(0)?.clone();
    let mut model = Vec::new();
    let mut bounds = vec![0];
    for round in 0..12 {
        for n in batch_sizes(10 + round) {
            bounds.push(append_batch(&part, &mut model, n, &format!("r{round}"))?);
        }
        // alternate between cutting deep and cutting a little
        let i = if round % 2 == 0 {
            bounds.len() / 3
        } else {
            bounds.len() - 2
        };
        let offset = bounds[i];
        part.truncate_to(offset)?;
        model.truncate(offset as usize);
        bounds.truncate(i + 1);
        check_state(&part, 0, &model)?;
    }
    log.close()?;
    let log = open(dir.path());
    check_state(log.get_topic("t")?.partition(0)?, 0, &model)?;
    Ok(())
}

#[test]
fn out_of_range_offsets_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "t",
        &TopicOptions {
            retention_bytes: Some(Some(3 * SEG)),
            ..options(2)
        },
    )?;
    let part = topic.partition(1)?;
    let mut model = Vec::new();
    for n in batch_sizes(80) {
        append_batch(part, &mut model, n, "a")?;
    }
    let end = model.len() as i64;
    for bad in [-1, end + 1, i64::MAX, i64::MIN] {
        match part.truncate_to(bad) {
            Err(LogError::OffsetOutOfRange {
                topic,
                partition,
                offset,
                earliest,
                latest,
            }) => {
                assert_eq!(
                    (topic.as_str(), partition, offset, earliest, latest),
                    ("t", 1, bad, 0, end)
                );
            }
            other => panic!("truncate_to({bad}): {other:?}"),
        }
    }
    // retention moves the start: below it is out of range, the start itself is fine
    log.cleanup()?;
    let (earliest, latest) = part.offsets();
    assert!(earliest > 0);
    assert_eq!(latest, end);
    let err = part.truncate_to(earliest - 1).expect_err("below the start");
    assert!(matches!(err, LogError::OffsetOutOfRange { .. }), "{err:?}");
    assert!(err.to_string().contains("t/1"), "{err}");
    part.truncate_to(earliest)?;
    check_state(part, earliest, &[])?;
    let mut m = Vec::new();
    append_batch(part, &mut m, 3, "b")?;
    assert_eq!(m[0].offset, earliest);
    check_state(part, earliest, &m)?;
    log.close()?;
    let log = open(dir.path());
    check_state(log.get_topic("t")?.partition(1)?, earliest, &m)?;
    Ok(())
}

#[test]
fn mid_batch_offset_is_refused_with_the_batch_bounds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let part = log.topic("t", &options(1))?.partition(0)?.clone();
    let mut model = Vec::new();
    append_batch(&part, &mut model, 3, "a")?;
    append_batch(&part, &mut model, 5, "a")?; // offsets 3..=7
    append_batch(&part, &mut model, 2, "a")?;
    let err = part.truncate_to(5).expect_err("inside 3..=7");
    let msg = err.to_string();
    assert!(matches!(err, LogError::InvalidArgument(_)), "{err:?}");
    assert!(
        msg.contains("3..=7") && msg.contains("truncate to 3 or 8"),
        "{msg}"
    );
    check_state(&part, 0, &model)?;
    part.truncate_to(8)?;
    model.truncate(8);
    check_state(&part, 0, &model)?;
    Ok(())
}

#[test]
fn truncating_to_the_end_is_a_no_op() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (model, _) = make_log(dir.path(), 30)?;
    let before = snapshot(dir.path());
    let log = open(dir.path());
    let part = log.get_topic("t")?.partition(0)?.clone();
    let end = model.len() as i64;
    part.truncate_to(end)?;
    part.truncate_to(end)?;
    check_state(&part, 0, &model)?;
    assert_eq!(snapshot(dir.path()), before, "nothing on disk changed");
    log.close()?;
    // an empty partition too
    let log = open(dir.path());
    let empty = log.topic("empty", &options(1))?.partition(0)?.clone();
    empty.truncate_to(0)?;
    check_state(&empty, 0, &[])?;
    let mut m = Vec::new();
    append_batch(&empty, &mut m, 2, "a")?;
    empty.truncate_to(0)?;
    check_state(&empty, 0, &[])?;
    Ok(())
}

#[test]
fn topic_truncates_several_partitions_or_none() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("t", &options(3))?;
    let mut models = vec![Vec::new(); 3];
    let mut bounds = vec![vec![0i64]; 3];
    for (i, n) in batch_sizes(45).into_iter().enumerate() {
        let p = i % 3;
        let b = append_batch(topic.partition(p as u32)?, &mut models[p], n, "a")?;
        bounds[p].push(b);
    }
    let ends: Vec<i64> = models.iter().map(|m| m.len() as i64).collect();

    // a bad pair anywhere truncates nothing
    let b0 = bounds[0][4];
    let mid = bounds[2]
        .windows(2)
        .find(|w| w[1] - w[0] > 1)
        .map(|w| w[0] + 1)
        .expect("a batch of several records");
    for bad in [
        vec![(0, b0), (2, mid)],
        vec![(0, b0), (1, ends[1] + 1)],
        vec![(0, b0), (7, 0)],
        vec![(0, b0), (0, b0)],
    ] {
        let err = topic.truncate_to(&bad).expect_err("refused");
        match bad[1].0 {
            7 => assert!(matches!(err, LogError::PartitionNotFound { .. }), "{err:?}"),
            1 => assert!(matches!(err, LogError::OffsetOutOfRange { .. }), "{err:?}"),
            _ => assert!(matches!(err, LogError::InvalidArgument(_)), "{err:?}"),
        }
        for p in 0..3 {
            assert_eq!(topic.partition(p)?.offsets(), (0, ends[p as usize]));
        }
    }

    let b2 = bounds[2][2];
    topic.truncate_to(&[(0, b0), (2, b2), (1, ends[1])])?;
    models[0].truncate(b0 as usize);
    models[2].truncate(b2 as usize);
    for p in 0..3u32 {
        check_state(topic.partition(p)?, 0, &models[p as usize])?;
    }
    // produce() routes by key again from the new ends
    let (p, off) = topic.produce(Some(b"x"), Some(b"y"), TS, &[], Some(2))?;
    assert_eq!((p, off), (2, b2));
    topic.truncate_to(&[])?;
    log.close()?;
    Ok(())
}

/// The states a crash can leave a truncation in, rebuilt by hand on a closed log, all reopen to
/// exactly the truncated log (finished on open and reported), or to the untouched log when the
/// intent file never made it.
#[test]
fn a_crash_at_any_step_reopens_before_or_after() -> TestResult {
    let src = tempfile::tempdir()?;
    let (model, bounds) = make_log(src.path(), 60)?;
    let pdir_of = |root: &Path| root.join("t").join("0");
    let bases = segment_bases(&pdir_of(src.path()));
    // one boundary inside a middle segment, one at a segment's base, and offset 0
    let mid_seg = bases[bases.len() / 2];
    let inside = *bounds
        .iter()
        .find(|&&b| b > mid_seg && !bases.contains(&b))
        .expect("a boundary inside a segment");
    let at_base = bases[2];

    #[derive(Debug, Clone, Copy)]
    enum Crash {
        /// The temp file of the intent was written, the rename never happened.
        TempIntentOnly,
        IntentOnly,
        /// ...and the newest later segment is gone.
        NewestSegmentDeleted,
        /// ...and the next one's offset index (it is deleted index first).
        NextIndexDeleted,
        AllLaterSegmentsDeleted,
        /// ...and the cut segment's index files are gone.
        IndexesRemoved,
        /// ...and the cut segment is cut: only removing the intent was left.
        Cut,
    }
    for target in [inside, at_base, 0] {
        for crash in [
            Crash::TempIntentOnly,
            Crash::IntentOnly,
            Crash::NewestSegmentDeleted,
            Crash::NextIndexDeleted,
            Crash::AllLaterSegmentsDeleted,
            Crash::IndexesRemoved,
            Crash::Cut,
        ] {
            let dir = tempfile::tempdir()?;
            copy_dir(src.path(), dir.path())?;
            let pdir = pdir_of(dir.path());
            let keep = *bases.iter().rfind(|&&b| b <= target).expect("segment");
            let cut_at = {
                let seg = segment_path(&pdir, keep, "log");
                batches_of(&seg)
                    .iter()
                    .find(|b| b.2 >= target)
                    .map_or(std::fs::metadata(&seg)?.len(), |b| b.0)
            };
            let intent = truncation_intent_bytes(
                dir.path(),
                "t",
                0,
                target,
                model.len() as i64,
                keep,
                cut_at,
            )?;
            let later: Vec<i64> = bases.iter().copied().filter(|&b| b > keep).collect();
            let step = crash as usize;
            if step == 0 {
                std::fs::write(pdir.join("truncation.tmp"), &intent)?;
            } else {
                std::fs::write(pdir.join(TRUNCATION_MARKER), &intent)?;
            }
            if step >= 2 {
                let newest = *later.last().expect("later segments");
                for ext in ["index", "timeindex", "log"] {
                    remove_if_exists(&segment_path(&pdir, newest, ext))?;
                }
            }
            if step >= 3 && later.len() >= 2 {
                let next = later[later.len() - 2];
                std::fs::remove_file(segment_path(&pdir, next, "index"))?;
            }
            if step >= 4 {
                for &b in &later {
                    for ext in ["index", "timeindex", "log"] {
                        remove_if_exists(&segment_path(&pdir, b, ext))?;
                    }
                }
            }
            if step >= 5 {
                for ext in ["index", "timeindex"] {
                    remove_if_exists(&segment_path(&pdir, keep, ext))?;
                }
            }
            if step >= 6 {
                let seg = segment_path(&pdir, keep, "log");
                let cut = batches_of(&seg)
                    .iter()
                    .find(|b| b.2 >= target)
                    .map_or(std::fs::metadata(&seg)?.len(), |b| b.0);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)?
                    .set_len(cut)?;
            }

            let log = open(dir.path());
            let part = log.get_topic("t")?.partition(0)?.clone();
            let mut m = if step == 0 {
                assert!(log.open_report().is_empty(), "{crash:?}");
                assert!(!pdir.join("truncation.tmp").exists());
                model.clone()
            } else {
                let report = log.open_report();
                // Index files the crash removed are rebuilt (and reported) before the
                // truncation is finished.
                let finished: Vec<_> = report
                    .iter()
                    .filter(|d| d.kind != "index_rebuilt")
                    .collect();
                assert_eq!(finished.len(), 1, "{crash:?}: {report:?}");
                assert!(
                    finished[0].reason.contains("interrupted truncation"),
                    "{report:?}"
                );
                assert_no_segment_past(&pdir, target);
                model[..target as usize].to_vec()
            };
            check_state(&part, 0, &m)?;
            append_batch(&part, &mut m, 5, "b")?;
            log.close()?;
            let log = open(dir.path());
            assert!(log.open_report().is_empty(), "{crash:?}");
            check_state(log.get_topic("t")?.partition(0)?, 0, &m)?;
            log.close()?;
        }
    }
    Ok(())
}

/// Compaction leaves offset gaps, inside batches and at the ends of segments. Any offset that is
/// not strictly inside a batch can be truncated to, and the end offset survives a reopen even when
/// no record precedes it directly.
#[test]
fn compacted_partitions_truncate_into_gaps() -> TestResult {
    let src = tempfile::tempdir()?;
    {
        let log = open(src.path());
        let topic = log.topic(
            "t",
            &TopicOptions {
                cleanup: Some(Cleanup::Compact),
                ..options(1)
            },
        )?;
        for i in 0..160i64 {
            // every third key is unique (kept), the rest repeat (mostly compacted away)
            let key = if i % 3 == 0 {
                format!("u{i}")
            } else {
                format!("r{}", i % 4)
            };
            let value = format!("value-{i}-{}", "z".repeat((i % 17) as usize));
            topic.produce(
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                ts_of(i),
                &[],
                None,
            )?;
        }
        let stats = log.cleanup()?;
        assert!(stats.records_removed > 0);
        log.close()?;
    }
    let pdir_src = src.path().join("t").join("0");
    let bases = segment_bases(&pdir_src);
    let mut batches = Vec::new();
    for &b in &bases {
        batches.extend(batches_of(&segment_path(&pdir_src, b, "log")));
    }
    let inside_batch = |o: i64| batches.iter().any(|b| b.2 < o && o <= b.3);
    let model = {
        let log = open(src.path());
        let all = read_all(log.get_topic("t")?.partition(0)?)?;
        log.close()?;
        all
    };
    let end = 160;
    // the interesting cases are there: a gap right before a segment base
    assert!(bases[1..]
        .iter()
        .any(|&b| !model.iter().any(|r| r.offset == b - 1)));

    let mut truncated = 0;
    for offset in 0..=end {
        let dir = tempfile::tempdir()?;
        copy_dir(src.path(), dir.path())?;
        let log = open(dir.path());
        let topic = log.get_topic("t")?;
        let part = topic.partition(0)?;
        let result = part.truncate_to(offset);
        if inside_batch(offset) {
            assert!(
                matches!(result, Err(LogError::InvalidArgument(_))),
                "{result:?}"
            );
            log.close()?;
            continue;
        }
        result?;
        truncated += 1;
        let mut m: Vec<Rec> = model
            .iter()
            .filter(|r| r.offset < offset)
            .cloned()
            .collect();
        assert_eq!(part.offsets(), (0, offset));
        assert_eq!(read_all(part)?, m);
        let (_, off) = topic.produce(Some(b"after"), Some(b"x"), TS, &[], None)?;
        assert_eq!(off, offset, "appends continue at the truncation offset");
        m.push(Rec {
            partition: 0,
            offset,
            timestamp: TS,
            key: Some(b"after".to_vec()),
            value: Some(b"x".to_vec()),
            headers: vec![],
        });
        for ts in (TS - 2..=TS + 505).step_by(7) {
            assert_eq!(part.offset_for_time(ts)?, expected_offset_for_time(&m, ts));
        }
        log.close()?;
        let log = open(dir.path());
        assert!(log.open_report().is_empty());
        let part = log.get_topic("t")?.partition(0)?.clone();
        assert_eq!(part.offsets(), (0, offset + 1));
        assert_eq!(read_all(&part)?, m);
        for ts in (TS - 2..=TS + 505).step_by(7) {
            assert_eq!(part.offset_for_time(ts)?, expected_offset_for_time(&m, ts));
        }
        log.close()?;

        // and a truncation whose last step was cut short ends at the same place
        let dir2 = tempfile::tempdir()?;
        copy_dir(src.path(), dir2.path())?;
        let pdir = dir2.path().join("t").join("0");
        let keep = *bases.iter().rfind(|&&b| b <= offset).expect("segment");
        for &b in bases.iter().filter(|&&b| b > keep) {
            for ext in ["index", "timeindex", "log"] {
                remove_if_exists(&segment_path(&pdir, b, ext))?;
            }
        }
        for ext in ["index", "timeindex"] {
            remove_if_exists(&segment_path(&pdir, keep, ext))?;
        }
        let seg = segment_path(&pdir, keep, "log");
        let cut = batches_of(&seg)
            .iter()
            .find(|b| b.2 >= offset)
            .map_or(std::fs::metadata(&seg)?.len(), |b| b.0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)?
            .set_len(cut)?;
        std::fs::write(
            pdir.join(TRUNCATION_MARKER),
            truncation_intent_bytes(dir2.path(), "t", 0, offset, end, keep, cut)?,
        )?;
        let log = open(dir2.path());
        assert_eq!(log.open_report().len(), 1);
        let part = log.get_topic("t")?.partition(0)?.clone();
        assert_eq!(part.offsets(), (0, offset));
        assert_eq!(read_all(&part)?, m[..m.len() - 1]);
        log.close()?;
    }
    assert!(truncated > 20, "only {truncated} offsets were boundaries");
    Ok(())
}

/// Readers running through truncations and appends never fail and never see a record that is not
/// what was written at its offset (a torn or overwritten read would).
#[test]
fn concurrent_readers_see_consistent_records() -> TestResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let part = log.topic("t", &options(1))?.partition(0)?.clone();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| -> TestResult {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| -> riverbed_log::Result<usize> {
                    let mut seen = 0usize;
                    let mut pos = 0i64;
                    while !done.load(Ordering::Relaxed) {
                        let mut expect = pos;
                        let mut bad = None;
                        let res = part.read(pos, 13, usize::MAX, |r| {
                            let v = String::from_utf8_lossy(r.value.unwrap_or_default());
                            let ok = r.offset == expect
                                && v.split('-').nth(1) == Some(r.offset.to_string().as_str());
                            if !ok {
                                bad = Some(format!("offset {} (expected {expect}): {v}", r.offset));
                            }
                            expect += 1;
                            seen += 1;
                            true
                        });
                        assert_eq!(bad, None);
                        pos = match res {
                            Ok(next) if next == part.offsets().1 => 0,
                            Ok(next) => next,
                            // truncated below our position meanwhile
                            Err(LogError::OffsetOutOfRange { .. }) => 0,
                            Err(e) => return Err(e),
                        };
                    }
                    Ok(seen)
                })
            })
            .collect();
        let mut model = Vec::new();
        let mut bounds = vec![0i64];
        for round in 0..100usize {
            for n in batch_sizes(8 + round % 5) {
                bounds.push(append_batch(&part, &mut model, n, &format!("g{round}"))?);
            }
            let i = (round * 7) % bounds.len();
            part.truncate_to(bounds[i])?;
            model.truncate(bounds[i] as usize);
            bounds.truncate(i + 1);
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            let seen = r.join().expect("reader panicked")?;
            assert!(seen > 0);
        }
        assert_eq!(read_all(&part)?, model);
        Ok(())
    })?;
    log.close()?;
    Ok(())
}

/// A truncation that fails after it may have changed something refuses appends until the log is
/// reopened; reads go on.
#[test]
fn a_failed_truncation_stops_appends_until_reopened() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (model, bounds) = make_log(dir.path(), 20)?;
    let log = open(dir.path());
    let part = log.get_topic("t")?.partition(0)?.clone();
    let pdir = dir.path().join("t").join("0");
    // a directory where the intent file goes makes writing it fail
    std::fs::create_dir(pdir.join(TRUNCATION_MARKER))?;
    std::fs::write(pdir.join(TRUNCATION_MARKER).join("x"), b"x")?;
    assert!(part.truncate_to(bounds[5]).is_err());
    let err = part
        .append([NewRecord {
            timestamp: TS,
            key: None,
            value: Some(b"v"),
            headers: &[],
        }])
        .expect_err("appends are refused");
    assert!(err.to_string().contains("reopened"), "{err}");
    assert!(part.truncate_to(bounds[5]).is_err());
    check_state(&part, 0, &model)?;
    log.close()?;
    std::fs::remove_dir_all(pdir.join(TRUNCATION_MARKER))?;
    let log = open(dir.path());
    let part = log.get_topic("t")?.partition(0)?.clone();
    check_state(&part, 0, &model)?;
    part.truncate_to(bounds[5])?;
    check_state(&part, 0, &model[..bounds[5] as usize])?;
    Ok(())
}

mod model {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Random appends, a truncation to a random batch boundary, more appends (with a reopen
        /// somewhere in between, or not): the partition equals a Vec model throughout.
        #[test]
        fn truncation_matches_a_vec_model(
            before in proptest::collection::vec(1usize..9, 0..50),
            cut in any::<prop::sample::Index>(),
            after in proptest::collection::vec(1usize..9, 0..30),
            reopen_before_cut in any::<bool>(),
            reopen_after_cut in any::<bool>(),
            second_cut in any::<Option<prop::sample::Index>>(),
        ) {
            let run = || -> TestResult {
                let dir = tempfile::tempdir()?;
                let mut log = open(dir.path());
                let mut part = log.topic("t", &options(1))?.partition(0)?.clone();
                let mut model = Vec::new();
                let mut bounds = vec![0i64];
                for &n in &before {
                    bounds.push(append_batch(&part, &mut model, n, "a")?);
                }
                let reopen = |log: &mut Log, part: &mut std::sync::Arc<Partition>| -> TestResult {
                    log.close()?;
                    *log = open(dir.path());
                    *part = log.get_topic("t")?.partition(0)?.clone();
                    Ok(())
                };
                if reopen_before_cut {
                    reopen(&mut log, &mut part)?;
                }
                let i = cut.index(bounds.len());
                part.truncate_to(bounds[i])?;
                model.truncate(bounds[i] as usize);
                bounds.truncate(i + 1);
                check_state(&part, 0, &model)?;
                if reopen_after_cut {
                    reopen(&mut log, &mut part)?;
                    check_state(&part, 0, &model)?;
                }
                for &n in &after {
                    bounds.push(append_batch(&part, &mut model, n, "b")?);
                }
                if let Some(c) = second_cut {
                    let i = c.index(bounds.len());
                    part.truncate_to(bounds[i])?;
                    model.truncate(bounds[i] as usize);
                }
                check_state(&part, 0, &model)?;
                reopen(&mut log, &mut part)?;
                check_state(&part, 0, &model)?;
                log.close()?;
                Ok(())
            };
            if let Err(e) = run() {
                return Err(TestCaseError::fail(e.to_string()));
            }
        }
    }
}

/// `truncation.json` is honoured only when this log's key signed it for this very partition:
/// a stray file, the old CRC-only format, an edited field, an intent copied from another
/// partition, one signed by another log's key, or any intent in a log without a key is
/// reported and left in place, and no record is removed.
#[test]
fn only_an_intent_signed_by_this_log_for_this_partition_is_honoured() -> TestResult {
    let src = tempfile::tempdir()?;
    let (model, bounds) = make_log(src.path(), 20)?;
    {
        let log = open(src.path());
        let u = log.topic("u", &options(1))?;
        let mut m2 = Vec::new();
        append_batch(u.partition(0)?, &mut m2, 30, "u")?;
        log.close()?;
    }
    let end = model.len() as i64;
    let target = bounds[bounds.len() / 2];
    let bases = segment_bases(&src.path().join("t").join("0"));
    let keep = *bases.iter().rfind(|&&b| b <= target).expect("segment");
    let cut = batches_of(&segment_path(&src.path().join("t").join("0"), keep, "log"))
        .iter()
        .find(|b| b.2 >= target)
        .map(|b| b.0)
        .expect("a batch at the target");
    let other = tempfile::tempdir()?;
    let foreign = truncation_intent_bytes(other.path(), "t", 0, target, end, keep, cut)?;

    type Make = Box<dyn Fn(&Path) -> Result<(PathBuf, Vec<u8>), Box<dyn std::error::Error>>>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "a stray file",
            Box::new(|_root: &Path| Ok((PathBuf::from("t/0"), br#"{"offset": 0}"#.to_vec()))),
        ),
        (
            "the CRC-only version 1 format",
            Box::new(move |_root: &Path| {
                let crc = crc32c::crc32c(format!("{target}/{end}/{keep}/{cut}").as_bytes());
                let v1 = format!(
                    r#"{{"version":1,"offset":{target},"end_before":{end},"segment":{keep},"position":{cut},"crc":{crc}}}"#
                );
                Ok((PathBuf::from("t/0"), v1.into_bytes()))
            }),
        ),
        (
            "an edited offset",
            Box::new(move |root: &Path| {
                let good = truncation_intent_bytes(root, "t", 0, target, end, keep, cut)?;
                let text = String::from_utf8(good)?
                    .replace(&format!("\"offset\":{target}"), "\"offset\":0");
                Ok((PathBuf::from("t/0"), text.into_bytes()))
            }),
        ),
        (
            "an intent signed for another topic",
            Box::new(move |root: &Path| {
                let good = truncation_intent_bytes(root, "t", 0, 0, 30, 0, 0)?;
                Ok((PathBuf::from("u/0"), good))
            }),
        ),
        (
            "another log's key",
            Box::new(move |_root: &Path| Ok((PathBuf::from("t/0"), foreign.clone()))),
        ),
        (
            "no key in this log",
            Box::new(move |root: &Path| {
                let good = truncation_intent_bytes(root, "t", 0, target, end, keep, cut)?;
                std::fs::remove_file(root.join("~checkpoints").join("checkpoint.key"))?;
                Ok((PathBuf::from("t/0"), good))
            }),
        ),
    ];
    for (what, make) in cases {
        let dir = tempfile::tempdir()?;
        copy_dir(src.path(), dir.path())?;
        let (pdir, bytes) = make(dir.path())?;
        let marker = dir.path().join(pdir).join(TRUNCATION_MARKER);
        std::fs::write(&marker, &bytes)?;
        let log = open(dir.path());
        let report = log.open_report();
        assert_eq!(report.len(), 1, "{what}: {report:?}");
        assert_eq!(report[0].kind, "truncation_ignored", "{what}: {report:?}");
        let t = log.get_topic("t")?.partition(0)?.clone();
        assert_eq!(t.offsets(), (0, end), "{what}");
        assert_eq!(read_all(&t)?, model, "{what}");
        assert_eq!(
            log.get_topic("u")?.partition(0)?.offsets(),
            (0, 30),
            "{what}"
        );
        assert_eq!(
            std::fs::read(&marker)?,
            bytes,
            "{what}: the file is left in place"
        );
        log.close()?;
    }

    // the same intent, signed by this log for t/0, is finished on open
    let dir = tempfile::tempdir()?;
    copy_dir(src.path(), dir.path())?;
    let good = truncation_intent_bytes(dir.path(), "t", 0, target, end, keep, cut)?;
    std::fs::write(dir.path().join("t/0").join(TRUNCATION_MARKER), good)?;
    let log = open(dir.path());
    let report = log.open_report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].kind, "truncation_finished");
    let t = log.get_topic("t")?.partition(0)?.clone();
    assert_eq!(t.offsets(), (0, target));
    assert_eq!(read_all(&t)?, model[..target as usize]);
    log.close()?;
    Ok(())
}
