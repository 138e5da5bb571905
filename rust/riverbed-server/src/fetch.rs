//! Fetch: stored batch bytes served as they are, from the batch holding `fetch_offset`, up to
//! `partition_max_bytes` per partition and `max_bytes` per response (the first batch always
//! whole, Kafka's rule); long poll on `max_wait_ms` / `min_bytes`, woken by the log's append
//! notifier (no sleeping); quarantined ranges skipped as the log's consumer does, counted and
//! logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ResponseKind};
use kafka_protocol::ResponseError;
use riverbed_log::notify::Notifier;
use riverbed_log::LogError;

use crate::broker::Broker;
use crate::future::BoxFuture;

/// The longest a fetch waits for data, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// Resolves when something is appended to the log after `seen` (or the log closes).
struct AppendWait {
    notifier: Arc<Notifier>,
    seen: u64,
    id: Option<u64>,
}

impl Future for AppendWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (seen, id) = (self.seen, self.id);
        match self.notifier.register_waker(seen, id, cx.waker()) {
            None => {
                self.id = None;
                Poll::Ready(())
            }
            Some(id) => {
                self.id = Some(id);
                Poll::Pending
            }
        }
    }
}

impl Drop for AppendWait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.notifier.unregister_waker(id);
        }
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: FetchRequest,
    version: i16,
) -> BoxFuture<Option<ResponseKind>> {
    let broker = broker.clone();
    Box::pin(async move {
        let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
        let deadline = tokio::time::Instant::now() + wait;
        let min_bytes = req.min_bytes.max(0) as usize;
        let mut shutdown = broker.shutdown.clone();
        loop {
            let notifier = broker.log.notifier().clone();
            let seen = notifier.seq();
            let (resp, bytes, errors) = build(&broker, &req, version);
            let done = bytes >= min_bytes.max(1)
                || errors
                || min_bytes == 0
                || tokio::time::Instant::now() >= deadline
                || broker.is_shutting_down();
            if done {
                if errors {
                    broker.metrics.error(ApiKey::Fetch);
                }
                return Some(ResponseKind::Fetch(resp));
            }
            let woken = AppendWait {
                notifier,
                seen,
                id: None,
            };
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

/// The response as the log is now: (response, record bytes in it, whether a partition erred).
fn build(broker: &Broker, req: &FetchRequest, _version: i16) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut budget = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let mut total = 0usize;
    let mut errors = false;
    for ft in &req.topics {
        let name = ft.topic.0.as_str();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = ft.topic.clone();
        tr.topic_id = ft.topic_id;
        let topic = broker.log.get_topic(name);
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.aborted_transactions = Some(Vec::new());
            let part = match &topic {
                Ok(t) => u32::try_from(fp.partition)
                    .ok()
                    .and_then(|p| t.partition(p).ok().cloned()),
                Err(_) => None,
            };
            let Some(part) = part else {
                pd.error_code = ResponseError::UnknownTopicOrPartition.code();
                errors = true;
                tr.partitions.push(pd);
                continue;
            };
            let (start, end) = part.offsets();
            pd.high_watermark = end;
            pd.last_stable_offset = end;
            pd.log_start_offset = start;
            let limit = (fp.partition_max_bytes.max(0) as usize).min(budget);
            if (limit == 0 && total > 0) || fp.fetch_offset == end {
                pd.records = Some(Bytes::new());
                tr.partitions.push(pd);
                continue;
            }
            match part.read_raw(fp.fetch_offset, limit) {
                Ok(r) => {
                    for g in &r.skipped {
                        broker.metrics.gaps_skipped.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "riverbed serve: fetch of {name}/{} skipped offsets {}..{} ({}: {})",
                            fp.partition, g.from, g.to, g.kind, g.reason
                        );
                    }
                    total += r.bytes.len();
                    budget = budget.saturating_sub(r.bytes.len());
                    pd.high_watermark = r.high_watermark;
                    pd.last_stable_offset = r.high_watermark;
                    pd.log_start_offset = r.log_start_offset;
                    pd.records = Some(Bytes::from(r.bytes));
                }
                Err(e) => {
                    if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                        eprintln!(
                            "riverbed serve: fetch of {name}/{} at offset {} failed: {e}",
                            fp.partition, fp.fetch_offset
                        );
                    }
                    pd.error_code = crate::error::code_for(&e);
                    pd.records = Some(Bytes::new());
                    errors = true;
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, errors)
}
