//! Helpers shared by the scenario tests (each test binary uses a different subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use riverbed_log::batch::RecordView;
use riverbed_log::{FsyncPolicy, Log, LogOptions, Partition, RecordSink, Topic};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A record read back from the log, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Rec {
    pub fn from_view(partition: u32, r: &RecordView<'_>) -> Rec {
        Rec {
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

/// Collects polled records.
#[derive(Debug, Default)]
pub struct VecSink {
    pub records: Vec<Rec>,
}

impl RecordSink for VecSink {
    fn push(&mut self, partition: u32, record: &RecordView<'_>) {
        self.records.push(Rec::from_view(partition, record));
    }
    fn len(&self) -> usize {
        self.records.len()
    }
    fn clear(&mut self) {
        self.records.clear();
    }
}

/// Options for fast tests: no fsync, no background cleaner.
pub fn fast_options() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        cleanup_interval: None,
    }
}

pub fn open(dir: &Path) -> Log {
    Log::open(dir, fast_options()).expect("open log")
}

pub fn now_ms() -> i64 {
    riverbed_log::fsutil::now_ms()
}

/// Every record of a partition from `from` to the end.
pub fn read_from(part: &Partition, from: i64) -> riverbed_log::Result<Vec<Rec>> {
    let mut out = Vec::new();
    let id = part.id;
    let next = part.read(from, usize::MAX, usize::MAX, |r| {
        out.push(Rec::from_view(id, r));
        true
    })?;
    assert_eq!(
        next,
        part.offsets().1,
        "a full read returns the log end offset"
    );
    Ok(out)
}

/// Every record of a partition, stepping over its gaps; returns the records and the gaps met.
#[allow(clippy::type_complexity)]
pub fn read_skipping_gaps(part: &Partition) -> riverbed_log::Result<(Vec<Rec>, Vec<(i64, i64)>)> {
    let mut out = Vec::new();
    let mut gaps = Vec::new();
    let id = part.id;
    let (mut from, end) = part.offsets();
    while from < end {
        match part.read(from, usize::MAX, usize::MAX, |r| {
            out.push(Rec::from_view(id, r));
            true
        }) {
            Ok(next) if next > from => from = next,
            Ok(_) => break,
            Err(riverbed_log::LogError::Gap(g)) => {
                let (a, to) = (g.from, g.to);
                assert_eq!(a, from, "a gap is met where the read starts");
                gaps.push((a, to));
                from = to;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, gaps))
}

pub fn read_all(part: &Partition) -> riverbed_log::Result<Vec<Rec>> {
    read_from(part, part.offsets().0)
}

pub fn partition_dir(log: &Log, topic: &Topic, p: u32) -> PathBuf {
    log.root().join(&*topic.name).join(p.to_string())
}

/// Base offsets of the segment files in a partition directory, ascending.
pub fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .expect("read partition dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

pub fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Poll until a poll returns nothing; returns everything read.
pub fn drain(c: &riverbed_log::Consumer) -> riverbed_log::Result<Vec<Rec>> {
    let mut all = Vec::new();
    loop {
        let mut sink = VecSink::default();
        c.poll(1000, Duration::ZERO, &mut sink)?;
        if sink.records.is_empty() {
            return Ok(all);
        }
        all.extend(sink.records);
    }
}

pub fn poll_n(c: &riverbed_log::Consumer, n: usize) -> riverbed_log::Result<Vec<Rec>> {
    let mut sink = VecSink::default();
    c.poll(n, Duration::ZERO, &mut sink)?;
    Ok(sink.records)
}
