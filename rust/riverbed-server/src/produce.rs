//! Produce: each partition's record batches validated (magic 2, sizes, CRC-32C, counts, the
//! size limit) and appended as sent with only the base offset rewritten; idempotent producers'
//! sequences checked under the partition's producer lock; acks=1/-1 answered once the records
//! are durable (group commit), acks=0 not answered at all (a failed acks=0 produce closes the
//! connection, as Kafka does).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use riverbed_log::raw::{validate_batches, RawBatchError};
use riverbed_log::{Cleanup, Partition};

use crate::broker::Broker;
use crate::future::BoxFuture;
use crate::producers::Decision;

/// One partition's outcome before durability.
struct Appended {
    index: i32,
    error_code: i16,
    message: Option<String>,
    base_offset: i64,
    log_start_offset: i64,
    /// Wait for these records to be durable before answering.
    wait: Option<(Arc<Partition>, i64)>,
}

impl Appended {
    fn error(index: i32, code: i16, message: impl Into<String>) -> Appended {
        Appended {
            index,
            error_code: code,
            message: Some(message.into()),
            base_offset: -1,
            log_start_offset: -1,
            wait: None,
        }
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    version: i16,
) -> BoxFuture<Option<ResponseKind>> {
    let acks = req.acks;
    let refuse_all = if req.transactional_id.is_some() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            "transactions are not supported by riverbed serve",
        ))
    } else if !(-1..=1).contains(&acks) {
        Some((
            ResponseError::InvalidRequiredAcks.code(),
            "acks must be 0, 1 or -1",
        ))
    } else {
        None
    };
    let mut topics: Vec<(StrBytes, Vec<Appended>)> = Vec::with_capacity(req.topic_data.len());
    for td in req.topic_data {
        let name = td.name.0.clone();
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let a = match refuse_all {
                Some((code, why)) => Appended::error(pd.index, code, why),
                None => append_partition(broker, name.as_str(), pd.index, pd.records),
            };
            parts.push(a);
        }
        topics.push((name, parts));
    }
    let broker = broker.clone();
    Box::pin(async move {
        // Every partition's fsync runs at once (a request usually carries many partitions), each
        // shared with the other requests waiting on the same partition.
        let mut waits = Vec::new();
        if acks != 0 && broker.durability.syncs_before_ack() {
            for a in topics.iter().flat_map(|(_, parts)| parts) {
                waits.push(a.wait.clone().map(|(part, end)| {
                    let broker = broker.clone();
                    tokio::spawn(async move { broker.durability.wait(&part, end).await })
                }));
            }
        }
        let mut waits = waits.into_iter();
        let mut resp = ProduceResponse::default();
        let mut any_error = false;
        for (name, parts) in topics {
            let mut tr = TopicProduceResponse::default();
            tr.name = name.into();
            for mut a in parts {
                if let Some(wait) = waits.next().flatten() {
                    let r = wait
                        .await
                        .unwrap_or_else(|e| Err(format!("the fsync did not run: {e}")));
                    if let Err(why) = r {
                        a.error_code = ResponseError::KafkaStorageError.code();
                        a.message = Some(why);
                        a.base_offset = -1;
                    }
                }
                any_error |= a.error_code != 0;
                let mut pr = PartitionProduceResponse::default();
                pr.index = a.index;
                pr.error_code = a.error_code;
                pr.base_offset = a.base_offset;
                pr.log_append_time_ms = -1;
                pr.log_start_offset = a.log_start_offset;
                if version >= 8 {
                    pr.error_message = a.message.map(StrBytes::from_string);
                }
                tr.partition_responses.push(pr);
            }
            resp.responses.push(tr);
        }
        if any_error {
            broker.metrics.error(ApiKey::Produce);
        }
        // acks=0: nothing to send unless it failed (then the connection is closed).
        (acks != 0 || any_error).then_some(ResponseKind::Produce(resp))
    })
}

fn append_partition(broker: &Broker, topic: &str, index: i32, records: Option<Bytes>) -> Appended {
    let t = match broker.log.get_topic(topic) {
        Ok(t) => t,
        Err(e) => return Appended::error(index, crate::error::code_for(&e), e.to_string()),
    };
    if t.is_internal() {
        return Appended::error(
            index,
            ResponseError::InvalidTopicException.code(),
            format!("topic '{topic}' is internal: written by the broker only"),
        );
    }
    let part = match u32::try_from(index)
        .map_err(|_| ())
        .and_then(|p| t.partition(p).map_err(|_| ()))
    {
        Ok(p) => p.clone(),
        Err(()) => {
            return Appended::error(
                index,
                ResponseError::UnknownTopicOrPartition.code(),
                format!("topic '{topic}' has no partition {index}"),
            )
        }
    };
    let Some(bytes) = records else {
        return Appended::error(index, ResponseError::CorruptMessage.code(), "no records");
    };
    let compacted = t.config().cleanup == Cleanup::Compact;
    let batches = match validate_batches(&bytes, broker.config.message_max_bytes, compacted) {
        Ok(b) => b,
        Err(e) => {
            let code = match e {
                RawBatchError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
                RawBatchError::Invalid { .. } => ResponseError::InvalidRecord.code(),
                _ => ResponseError::CorruptMessage.code(),
            };
            return Appended::error(index, code, format!("{topic}/{index}: {e}"));
        }
    };
    let producers = broker.producers.partition(&part);
    let mut state = producers.lock();
    let mut first_offset: Option<i64> = None;
    let mut end = None;
    // Usually one batch per partition; each is checked and appended in order.
    for b in &batches {
        match state.check(&b.header) {
            Decision::Duplicate(base) => {
                broker
                    .metrics
                    .duplicate_batches
                    .fetch_add(1, Ordering::Relaxed);
                first_offset.get_or_insert(base);
                // The original may not be durable yet: wait for the end as it is now.
                end.get_or_insert(part.offsets().1);
            }
            Decision::Reject(code) => {
                if first_offset.is_some() {
                    break; // answer for what was written; the client retries the rest
                }
                return Appended::error(
                    index,
                    code,
                    format!(
                        "{topic}/{index}: producer {} epoch {} sequence {} refused",
                        b.header.producer_id, b.header.producer_epoch, b.header.base_sequence
                    ),
                );
            }
            Decision::Append => match part.append_raw(&bytes, std::slice::from_ref(b)) {
                Ok((base, next)) => {
                    state.record(&b.header, base);
                    broker
                        .metrics
                        .records_produced
                        .fetch_add(b.header.record_count as u64, Ordering::Relaxed);
                    first_offset.get_or_insert(base);
                    end = Some(next);
                }
                Err(e) => {
                    eprintln!("riverbed serve: append to {topic}/{index} failed: {e}");
                    return Appended::error(index, crate::error::code_for(&e), e.to_string());
                }
            },
        }
    }
    drop(state);
    Appended {
        index,
        error_code: 0,
        message: None,
        base_offset: first_offset.unwrap_or(-1),
        log_start_offset: part.offsets().0,
        wait: end.map(|e| (part, e)),
    }
}
