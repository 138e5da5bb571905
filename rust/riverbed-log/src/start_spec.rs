//! Where a reader starts (or ends) in a partition: the earliest or latest offset, an offset, or
//! the first record at or after a time.

/// Where a consumer starts in a partition that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSpec {
    Earliest,
    Latest,
    Offset(i64),
    /// The earliest offset whose timestamp is >= this (ms); the end if there is none.
    Time(i64),
}
