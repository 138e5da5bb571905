//! The broker's metrics, counted where the work happens (their Prometheus text is `exposition`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kafka_protocol::messages::ApiKey;

/// API keys are small integers; one counter slot each.
const API_SLOTS: usize = 128;

pub struct Metrics {
    requests: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    /// Connections closed because of a malformed or oversized request.
    pub connections_rejected: AtomicU64,
    pub records_produced: AtomicU64,
    pub duplicate_batches: AtomicU64,
    /// Quarantined or missing offset ranges a fetch skipped.
    pub gaps_skipped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..API_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..API_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            records_produced: AtomicU64::new(0),
            duplicate_batches: AtomicU64::new(0),
            gaps_skipped: AtomicU64::new(0),
        }
    }
}

fn slot(key: ApiKey) -> usize {
    (key as i16).clamp(0, API_SLOTS as i16 - 1) as usize
}

impl Metrics {
    pub fn request(&self, key: ApiKey) {
        self.requests[slot(key)].fetch_add(1, Ordering::Relaxed);
    }

    /// A response that carried at least one error code (or a request that failed).
    pub fn error(&self, key: ApiKey) {
        self.errors[slot(key)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests_of(&self, key: ApiKey) -> u64 {
        self.requests[slot(key)].load(Ordering::Relaxed)
    }

    pub fn errors_of(&self, key: ApiKey) -> u64 {
        self.errors[slot(key)].load(Ordering::Relaxed)
    }
}
