//! Checks on what a checkpoint says before a run resumes from it: each source position must be
//! a place in the input it names, and each log sink's end offsets must cover the output topic's
//! partitions. A position beyond a partition's end would skip input that arrives later, a
//! negative one would read input twice; both are refused, naming the topic and partition.

use crate::error::{Result, StreamError};

pub(crate) fn refuse(message: String) -> StreamError {
    StreamError::Checkpoint(format!(
        "{message}; the checkpoint does not fit its input (pass reset=True to start over)"
    ))
}

/// What a source's positions are places in (the source says: `SourceSpec::extent`).
pub enum Extent<'a> {
    /// A log topic: each partition's end offset.
    Partitions { topic: &'a str, ends: Vec<i64> },
    /// A table of so many batches.
    Batches(usize),
    /// A source whose positions cannot be checked here (a stream, an external source).
    Unchecked,
}

/// Whether `start` (a checkpoint's positions for a source) are places in it.
pub fn check_positions(extent: &Extent<'_>, start: &[i64]) -> Result<()> {
    match extent {
        Extent::Partitions { topic, ends } => {
            if start.len() != ends.len() {
                return Err(refuse(format!(
                    "it holds positions for {} partitions of topic '{topic}', which has {}",
                    start.len(),
                    ends.len()
                )));
            }
            for (p, (&pos, &end)) in start.iter().zip(ends).enumerate() {
                if pos < 0 {
                    return Err(refuse(format!(
                        "its position {pos} in {topic}/{p} is negative"
                    )));
                }
                if pos > end {
                    return Err(refuse(format!(
                        "its position {pos} in {topic}/{p} is beyond the partition's end ({end}): the topic was truncated or recreated since"
                    )));
                }
            }
        }
        &Extent::Batches(n) => {
            let ok = start.len() == 1 && (0..=n as i64).contains(&start[0]);
            if !ok {
                return Err(refuse(format!(
                    "its position {start:?} is not a batch count of a table of {n} batches"
                )));
            }
        }
        Extent::Unchecked => {}
    }
    Ok(())
}

/// Whether a checkpoint's end offsets for the output topic `name` (whose partitions end at
/// `now`) name each of its partitions once, and lie within them: an end beyond one means the
/// output topic was truncated or recreated since.
pub fn check_sink_ends(name: &str, now: &[i64], ends: &[i64]) -> Result<()> {
    let partitions = now.len();
    if ends.len() != partitions {
        return Err(refuse(format!(
            "it holds end offsets for {} partitions of output topic '{name}', which has {partitions}",
            ends.len()
        )));
    }
    if let Some((p, o)) = ends.iter().enumerate().find(|(_, &o)| o < 0) {
        return Err(refuse(format!(
            "its end offset {o} for output {name}/{p} is negative"
        )));
    }
    if let Some((p, (o, end))) = ends
        .iter()
        .zip(now)
        .enumerate()
        .find(|(_, (o, end))| o > end)
    {
        return Err(refuse(format!(
            "its end offset {o} for output {name}/{p} is beyond the partition's end ({end}): the output topic was truncated or recreated since"
        )));
    }
    Ok(())
}
