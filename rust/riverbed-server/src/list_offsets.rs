//! ListOffsets: earliest (-2), latest (-1), or the earliest offset whose timestamp is at or
//! after a time (`offset_for_time`; -1 when there is none, as Kafka answers).

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use riverbed_log::Partition;

use crate::broker::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub fn handle(broker: &Arc<Broker>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    let mut any_error = false;
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        let topic = broker.log.get_topic(t.name.0.as_str());
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            if version >= 4 {
                pr.leader_epoch = 0; // a field of v4+ only
            }
            let part = topic.as_ref().ok().and_then(|topic| {
                u32::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| topic.partition(i).ok().cloned())
            });
            match part {
                None => pr.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some(part) => match lookup(&part, p.timestamp) {
                    Ok((ts, off)) => {
                        pr.timestamp = ts;
                        pr.offset = off;
                    }
                    Err(code) => pr.error_code = code,
                },
            }
            any_error |= pr.error_code != 0;
            tr.partitions.push(pr);
        }
        tr.name = t.name;
        resp.topics.push(tr);
    }
    if any_error {
        broker.metrics.error(ApiKey::ListOffsets);
    }
    resp
}

/// (timestamp, offset) for one partition.
fn lookup(part: &Partition, ts: i64) -> Result<(i64, i64), i16> {
    let (start, end) = part.offsets();
    match ts {
        LATEST => Ok((-1, end)),
        EARLIEST => Ok((-1, start)),
        t if t < 0 => Err(ResponseError::UnsupportedVersion.code()),
        t => match part.offset_for_time(t) {
            Ok(None) => Ok((-1, -1)),
            Ok(Some(off)) => {
                // Kafka answers with the found record's timestamp.
                let mut found = -1;
                let _ = part.read(off, 1, usize::MAX, |r| {
                    found = r.timestamp;
                    false
                });
                Ok((found, off))
            }
            Err(e) => Err(crate::error::code_for(&e)),
        },
    }
}
