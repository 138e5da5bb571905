//! Checks on what a checkpoint says before a run resumes from it: each source position must be
//! a place in the input it names, and each log sink's end offsets must cover the output topic's
//! partitions. A position beyond a partition's end would skip input that arrives later, a
//! negative one would read input twice; both are refused, naming the topic and partition.

use crate::error::{Result, StreamError};
use crate::source::SourceSpec;

fn refuse(message: String) -> StreamError {
    StreamError::Checkpoint(format!(
        "{message}; the checkpoint does not fit its input (pass reset=True to start over)"
    ))
}

/// Whether `start` (a checkpoint's positions for this source) are places in it.
pub fn check_positions(spec: &SourceSpec, start: &[i64]) -> Result<()> {
    match spec {
        SourceSpec::Log(l) => {
            let parts = l.topic.partitions();
            if start.len() != parts.len() {
                return Err(refuse(format!(
                    "it holds positions for {} partitions of topic '{}', which has {}",
                    start.len(),
                    l.topic.name,
                    parts.len()
                )));
            }
            for (p, (&pos, part)) in start.iter().zip(parts).enumerate() {
                let (_, end) = part.offsets();
                if pos < 0 {
                    return Err(refuse(format!(
                        "its position {pos} in {}/{p} is negative",
                        l.topic.name
                    )));
                }
                if pos > end {
                    return Err(refuse(format!(
                        "its position {pos} in {}/{p} is beyond the partition's end ({end}): the topic was truncated or recreated since",
                        l.topic.name
                    )));
                }
            }
        }
        SourceSpec::Table { batches, .. } => {
            let ok = start.len() == 1 && (0..=batches.len() as i64).contains(&start[0]);
            if !ok {
                return Err(refuse(format!(
                    "its position {start:?} is not a batch count of a table of {} batches",
                    batches.len()
                )));
            }
        }
        SourceSpec::Stream { .. } | SourceSpec::External(_) => {}
    }
    Ok(())
}

/// Whether a checkpoint's end offsets for the output topic `name` (of `partitions` partitions)
/// name each of its partitions once; the offsets themselves are range-checked by the truncation.
pub fn check_sink_ends(name: &str, partitions: usize, ends: &[i64]) -> Result<()> {
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
    Ok(())
}
