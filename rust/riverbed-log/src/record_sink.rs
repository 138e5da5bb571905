//! What a poll of the log hands its records to (the Arrow builder in `arrow.rs`, or a test's
//! list).

use crate::batch::RecordView;

/// Receives the records a poll returns.
pub trait RecordSink {
    fn push(&mut self, partition: u32, record: &RecordView<'_>);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forget what was pushed (the poll raced with a rebalance and is retried).
    fn clear(&mut self);
}
